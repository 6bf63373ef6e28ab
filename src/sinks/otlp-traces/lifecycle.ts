/**
 * A Kubernetes object's lifecycle as spans, from its events in order: a short span per event, a
 * span per phase (from the change that entered it to the change that left it), and the root span
 * (creation → deletion or a terminal phase), all in the trace `src/events/trace-context.ts`
 * derives from the uid. Pure and deterministic: the same events from the same state give the same
 * spans with the same ids, so a batch sent again after a retry or a crash re-exports identical
 * spans (Jaeger keeps one per id) rather than new ones. The state between events is a small JSON
 * value per object, persisted by the sink (`ctx.state('lifecycles')`).
 */
import { type CelProgram, celVariables } from '../../cel/index.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import {
  lifecycleOf,
  parseTraceparent,
  spanIdFor,
  TRACEPARENT_ANNOTATION,
  type TraceContextOptions,
} from '../../events/trace-context.ts';

export type AttributeValue = string | number | boolean;

/** One finished span, ready to encode. Times in epoch milliseconds. */
export interface SpanRecord {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startMs: number;
  endMs: number;
  attributes: Record<string, AttributeValue>;
  links?: { traceId: string; spanId: string; attributes?: Record<string, AttributeValue> }[];
  /** Error status with this message. */
  error?: string;
}

/** What is kept per object between its events (JSON; no secrets: identity, times, phase names). */
export interface LifecycleState {
  traceId: string;
  rootSpanId: string;
  /** Root start: the object's creation. */
  start: number;
  phase: string | null;
  phaseStart: number;
  phaseSpanId?: string;
  /** Reason, when the current phase is failed. */
  phaseFailed?: string;
  /** Set once the root span ended (terminal phase): later events only add event spans. */
  ended?: number;
  failed?: string;
  /** Time of the newest event applied; an older one (a replay) adds only its event span. */
  lastTime: number;
  links: { traceId: string; spanId: string; kind: 'annotation' | 'previous-generation' }[];
}

export interface LifecycleOptions extends TraceContextOptions {
  phase: CelProgram;
  failed: CelProgram;
  failureReason: CelProgram;
  terminalPhases: readonly string[];
}

/** Evaluates a program, `undefined` on an evaluation error (a missing field). */
function tryEval(p: CelProgram, e: CloudEvent): unknown {
  try {
    return p.evaluate(celVariables(e));
  } catch {
    return undefined;
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** The attributes every span of an object carries (semantic conventions where they exist). */
function k8sAttributes(e: CloudEvent): Record<string, AttributeValue> {
  const a: Record<string, AttributeValue> = {};
  const put = (k: string, v: unknown) => {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') a[k] = v;
  };
  put('k8s.cluster.name', e.k8scluster);
  put('k8s.namespace.name', e.k8snamespace);
  put('crbridge.k8s.group', e.k8sgroup);
  put('crbridge.k8s.version', e.k8sversion);
  put('crbridge.k8s.kind', e.k8skind);
  put('crbridge.k8s.name', e.k8sname);
  put('crbridge.k8s.uid', e.k8suid);
  return a;
}

/** The CloudEvents semantic-convention attributes of an event's span. */
function eventAttributes(e: CloudEvent): Record<string, AttributeValue> {
  const a: Record<string, AttributeValue> = {
    'cloudevents.event_id': e.id,
    'cloudevents.event_source': e.source,
    'cloudevents.event_spec_version': e.specversion,
    'cloudevents.event_type': e.type,
  };
  if (typeof e.subject === 'string') a['cloudevents.event_subject'] = e.subject;
  if (typeof e.k8sresourceversion === 'string') a['crbridge.k8s.resource_version'] = e.k8sresourceversion;
  return a;
}

function changeOfType(type: string): string {
  for (const c of ['spec.changed', 'status.changed']) if (type.endsWith(`.${c}`)) return c;
  return type.slice(type.lastIndexOf('.') + 1);
}

function timeOf(e: CloudEvent): number {
  const t = typeof e.time === 'string' ? Date.parse(e.time) : Number.NaN;
  return Number.isNaN(t) ? Date.now() : t;
}

/** The `tracing.k8s.io/traceparent` annotation of the event's object, parsed. */
function annotationLink(e: CloudEvent): { traceId: string; spanId: string } | undefined {
  const ann = (e.data?.object?.metadata as { annotations?: Record<string, unknown> } | undefined)?.annotations;
  const p = parseTraceparent(ann?.[TRACEPARENT_ANNOTATION]);
  return p && { traceId: p.traceId, spanId: p.spanId };
}

/** The state key of an event's object (its uid), or undefined for an event without one. */
export function lifecycleKey(e: CloudEvent): string | undefined {
  return typeof e.k8suid === 'string' && e.k8suid !== '' ? e.k8suid : undefined;
}

/**
 * The spans one event adds to its object's lifecycle, and the state after it (undefined: forget
 * the object — deleted). Never modifies `prev`. An event of an unsampled lifecycle adds nothing.
 */
export function applyEvent(
  e: CloudEvent,
  prev: LifecycleState | undefined,
  o: LifecycleOptions,
): { spans: SpanRecord[]; state: LifecycleState | undefined } {
  const uid = lifecycleKey(e);
  if (uid === undefined) return { spans: [], state: prev };
  const lc = lifecycleOf({ uid, generation: e.k8sgeneration }, o);
  if (!lc.sampled) return { spans: [], state: prev };
  const t = timeOf(e);
  const kind = str(e.k8skind) ?? 'Object';
  const label = typeof e.subject === 'string' ? e.subject : (str(e.k8sname) ?? uid);
  const k8s = k8sAttributes(e);
  const deleted = e.type.endsWith('.deleted');
  const spans: SpanRecord[] = [];
  let s: LifecycleState | undefined = prev && { ...prev, links: [...prev.links] };

  const phaseSpan = (st: LifecycleState, end: number): SpanRecord | undefined =>
    st.phase === null || st.phaseSpanId === undefined
      ? undefined
      : {
          traceId: st.traceId,
          spanId: st.phaseSpanId,
          parentSpanId: st.rootSpanId,
          name: `${kind} ${st.phase}`,
          startMs: st.phaseStart,
          endMs: Math.max(end, st.phaseStart),
          attributes: { ...k8s, 'crbridge.k8s.phase': st.phase },
          ...(st.phaseFailed !== undefined && { error: st.phaseFailed }),
        };
  const rootSpan = (st: LifecycleState, end: number): SpanRecord => ({
    traceId: st.traceId,
    spanId: st.rootSpanId,
    name: `${kind} ${label}`,
    startMs: st.start,
    endMs: Math.max(end, st.start),
    attributes: { ...k8s, ...(st.phase !== null && { 'crbridge.k8s.phase': st.phase }) },
    ...(st.links.length > 0 && {
      links: st.links.map((l) => ({ traceId: l.traceId, spanId: l.spanId, attributes: { 'crbridge.link': l.kind } })),
    }),
    ...(st.failed !== undefined && { error: st.failed }),
  });

  // a new generation (perGeneration): the old lifecycle ends here, the new one links back to it
  if (s && s.traceId !== lc.traceId && t >= s.lastTime) {
    const links: LifecycleState['links'] = [{ traceId: s.traceId, spanId: s.rootSpanId, kind: 'previous-generation' }];
    if (s.ended === undefined) {
      const p = phaseSpan(s, t);
      if (p) spans.push(p);
      spans.push(rootSpan(s, t));
    }
    s = { traceId: lc.traceId, rootSpanId: lc.rootSpanId, start: t, phase: null, phaseStart: t, lastTime: t, links };
  }
  const replay = s !== undefined && t < s.lastTime;
  if (!s) {
    const created = Date.parse(
      String((e.data?.object?.metadata as { creationTimestamp?: unknown })?.creationTimestamp),
    );
    const start = Number.isNaN(created) ? t : Math.min(created, t);
    s = {
      traceId: lc.traceId,
      rootSpanId: lc.rootSpanId,
      start,
      phase: null,
      phaseStart: start,
      lastTime: t,
      links: [],
    };
  }
  const ann = annotationLink(e);
  if (ann && !s.links.some((l) => l.kind === 'annotation' && l.spanId === ann.spanId && l.traceId === ann.traceId))
    s.links.push({ ...ann, kind: 'annotation' });

  spans.push({
    traceId: s.traceId,
    spanId: spanIdFor(s.traceId, `event:${e.id}`),
    parentSpanId: s.rootSpanId,
    name: `${kind} ${changeOfType(e.type)}`,
    startMs: t,
    endMs: t,
    attributes: { ...k8s, ...eventAttributes(e) },
    ...(ann && { links: [{ ...ann, attributes: { 'crbridge.link': 'annotation' } }] }),
  });
  if (replay) return { spans, state: prev };
  s.lastTime = t;

  if (s.ended === undefined) {
    const raw = deleted ? s.phase : tryEval(o.phase, e);
    const phase = raw === undefined || raw === null ? null : String(raw);
    if (phase !== s.phase) {
      const p = phaseSpan(s, t);
      if (p) spans.push(p);
      const failed = phase !== null && tryEval(o.failed, e) === true;
      const reason = failed ? (str(tryEval(o.failureReason, e)) ?? phase) : undefined;
      s.phase = phase;
      s.phaseStart = t;
      if (phase === null) delete s.phaseSpanId;
      else s.phaseSpanId = spanIdFor(s.traceId, `phase:${e.id}`);
      if (reason !== undefined) {
        s.phaseFailed = reason;
        s.failed = reason;
      } else delete s.phaseFailed;
      if (phase !== null && o.terminalPhases.includes(phase)) {
        const end = phaseSpan(s, t);
        if (end) spans.push(end);
        spans.push(rootSpan(s, t));
        s.ended = t;
      }
    }
    if (deleted && s.ended === undefined) {
      const p = phaseSpan(s, t);
      if (p) spans.push(p);
      spans.push(rootSpan(s, t));
      s.ended = t;
    }
  }
  return { spans, state: deleted ? undefined : s };
}
