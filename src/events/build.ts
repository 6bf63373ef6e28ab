/**
 * Delta → CloudEvent: the one place that decides what an event means. Pure and deterministic for
 * everything but `time` fallbacks: the same change of the same object always gets the same `id`,
 * `type`, `source`, `subject`, extensions and data, whether seen live, on relist or on resync.
 * See docs/events.md for the scheme.
 */
import { type CloudEvent, type EventData, isCloudEventsInteger } from './cloudevent.ts';
import { type Delta, type KubeObject, type ResourceRef, STORED, type StoredState } from './delta.ts';
import { diff, formatPointer, getAt, type PatchOp, parsePath } from './patch.ts';
import { compileRedaction, redact } from './redact.ts';

import { EVENT_DATA_SCHEMA_ID } from './schemas/event-data.ts';

export { LAST_APPLIED_POINTER, REDACTED, redact } from './redact.ts';
/** URI of the published data schema (`schemas/event-data.schema.json`). */
export { EVENT_DATA_SCHEMA_ID };
/** The defaults of the pipeline's `events:` block: its schema (`src/config/schema.ts`) reads them too. */
export const DEFAULT_TYPE_PREFIX = 'io.crbridge';
export const DEFAULT_PHASE_PATH = 'status.phase';
/** Fits Kafka's default `message.max.bytes` (1 MiB) with room for headers and key. */
export const DEFAULT_MAX_BYTES = 1_000_000;

/** The change kinds, as the last part of `type`. */
export const ChangeType = {
  created: 'created',
  specChanged: 'spec.changed',
  statusChanged: 'status.changed',
  deleted: 'deleted',
} as const;
export type ChangeType = (typeof ChangeType)[keyof typeof ChangeType];

export interface EventOptions {
  /** Cluster name, used in `source` and the `k8scluster` extension, e.g. "local". */
  clusterName: string;
  /** Prefix of `type`; default {@link DEFAULT_TYPE_PREFIX}. */
  typePrefix?: string;
  /** JSON pointer or dotted path of the phase; default {@link DEFAULT_PHASE_PATH} (fallback: the Ready condition). */
  phasePath?: string;
  /** JSON pointers into the object whose values are masked; a `*` token matches any key or index. */
  redact?: string[];
  /** Largest structured-JSON size of an event in bytes; default {@link DEFAULT_MAX_BYTES}. */
  maxBytes?: number;
  /** `dataschema` attribute; default the published schema URI. */
  dataschema?: string;
  /** W3C trace context to attach (`traceparent`/`tracestate` extensions) when tracing is on. */
  traceContext?: (delta: Delta) => { traceparent: string; tracestate?: string } | undefined;
}

/** Why part of the data was dropped (size policy). */
export interface Truncation {
  /** What was removed, in the order it was removed. */
  dropped: ('oldObject' | 'object' | 'patch')[];
  /** Structured-JSON size before dropping anything. */
  originalBytes: number;
  maxBytes: number;
}

/** A change of the phase between oldObject and object. */
export interface Transition extends NonNullable<EventData['transition']> {
  /** Where the phase was read: a JSON pointer (e.g. "/status/phase") or "condition:Ready". */
  field: string;
  from: string | null;
  to: string | null;
  /** When the old phase began, if the object tells it. */
  since?: string;
  /** How long the old phase lasted, if the object tells both ends. */
  durationSeconds?: number;
}

interface Compiled {
  prefix: string;
  phaseTokens: string[];
  phasePointer: string;
  redact: string[][];
  /** The configured pointers plus those a stored state was masked with (by the stored list). */
  withStored: WeakMap<readonly string[], string[][]>;
  configuredRedact: readonly string[];
  maxBytes: number;
  dataschema: string;
  cluster: string;
}

const compiledCache = new WeakMap<EventOptions, Compiled>();

/** What to mask in a delta involving a state read back from a checkpoint: ours and what it was stored with. */
function redactionFor(c: Compiled, stored: StoredState | undefined): string[][] {
  if (!stored || stored.redacted.length === 0) return c.redact;
  let r = c.withStored.get(stored.redacted);
  if (!r) {
    const extra = stored.redacted.filter((p) => !c.configuredRedact.includes(p));
    r = compileRedaction([...c.configuredRedact, ...extra]);
    c.withStored.set(stored.redacted, r);
  }
  return r;
}

function compile(opts: EventOptions): Compiled {
  let c = compiledCache.get(opts);
  if (c) return c;
  const phaseTokens = parsePath(opts.phasePath ?? DEFAULT_PHASE_PATH);
  c = {
    prefix: opts.typePrefix ?? DEFAULT_TYPE_PREFIX,
    phaseTokens,
    phasePointer: formatPointer(phaseTokens),
    redact: compileRedaction(opts.redact ?? []),
    withStored: new WeakMap(),
    configuredRedact: opts.redact ?? [],
    maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES,
    dataschema: opts.dataschema ?? EVENT_DATA_SCHEMA_ID,
    cluster: opts.clusterName,
  };
  compiledCache.set(opts, c);
  return c;
}

/** `core` for the core ("") group. */
export function groupName(group: string): string {
  return group === '' ? 'core' : group;
}

/** `/clusters/<c>/apis/<group>/<version>/<resource>`, or `/clusters/<c>/api/<version>/<resource>` for core. */
export function sourceFor(cluster: string, r: ResourceRef): string {
  const c = encodeURIComponent(cluster);
  return r.group === ''
    ? `/clusters/${c}/api/${r.version}/${r.resource}`
    : `/clusters/${c}/apis/${r.group}/${r.version}/${r.resource}`;
}

/** `<namespace>/<name>` for namespaced objects, `<name>` otherwise. */
export function subjectFor(obj: KubeObject): string {
  const ns = obj.metadata.namespace;
  return ns ? `${ns}/${obj.metadata.name}` : obj.metadata.name;
}

/**
 * Deterministic id, one per change of what the source watches (docs/events.md, "id"):
 *
 * - `added` and `modified`: `<uid>.<resourceVersion>` of the new state. A resourceVersion names one
 *   write, so every state an object enters the view in has its own id: a creation, an entry into
 *   the source's selector (also a re-entry after leaving it) and each update. A change found on a
 *   relist or the resync after a restart carries the object's current state, so it gets the id the
 *   live event of that state had (a `modified` found on catch-up and the `added` it repeats alike).
 * - `deleted`: `<uid>.deleted`. An object is deleted once per uid, and a delete found on catch-up
 *   (whose deletion resourceVersion is unknown) gets the id the live delete had.
 * - `deleted` with `selector: 'left'` (the object still exists but left the selector):
 *   `<uid>.<leftAt>.left`, `leftAt` being the resourceVersion of the write that took it out (the
 *   object as it is outside; `obj`'s own when unknown). The live DELETED event carries it, and the
 *   look-up a relist or a resume makes reads it back, so a departure repeated after a crash (the
 *   checkpoint behind delivery) keeps its id; one write takes an object out once.
 */
export function eventId(kind: Delta['kind'], obj: KubeObject, selector?: Delta['selector'], leftAt?: string): string {
  const uid = obj.metadata.uid;
  if (kind === 'deleted')
    return selector === 'left' ? `${uid}.${leftAt ?? obj.metadata.resourceVersion}.left` : `${uid}.deleted`;
  return `${uid}.${obj.metadata.resourceVersion}`;
}

/** created / spec.changed / status.changed / deleted (see docs/events.md for the rule). */
export function changeType(delta: Delta, changedPaths: string[] | undefined): ChangeType {
  if (delta.kind === 'added') return ChangeType.created;
  if (delta.kind === 'deleted') return ChangeType.deleted;
  const ng = delta.object.metadata.generation;
  const og = delta.oldObject?.metadata.generation;
  if (typeof ng === 'number' && typeof og === 'number')
    return ng !== og ? ChangeType.specChanged : ChangeType.statusChanged;
  if (!delta.oldObject || !changedPaths) return ChangeType.specChanged;
  for (const p of changedPaths) if (p !== '/metadata' && p !== '/status') return ChangeType.specChanged;
  return ChangeType.statusChanged;
}

/** Newest RFC 3339 time among `times` (strings), or undefined. */
function newest(times: Iterable<unknown>): string | undefined {
  let best: string | undefined;
  let bestMs = -Infinity;
  for (const t of times) {
    if (typeof t !== 'string') continue;
    const ms = Date.parse(t);
    if (Number.isNaN(ms)) continue;
    if (ms > bestMs) {
      bestMs = ms;
      best = t;
    }
  }
  return best;
}

function* managedTimes(obj: KubeObject | undefined): Iterable<unknown> {
  const mf = obj?.metadata.managedFields;
  if (!Array.isArray(mf)) return;
  for (const e of mf) if (e && typeof e === 'object') yield (e as { time?: unknown }).time;
}

function conditions(obj: KubeObject | undefined): Record<string, unknown>[] {
  const c = (obj?.status as { conditions?: unknown } | undefined)?.conditions;
  return Array.isArray(c) ? (c.filter((x) => x && typeof x === 'object') as Record<string, unknown>[]) : [];
}

function* conditionTimes(obj: KubeObject | undefined): Iterable<unknown> {
  for (const c of conditions(obj)) yield c.lastTransitionTime;
}

/** Newest of `now` that is strictly newer than the newest of `before` (or any, without `before`). */
function newer(now: string | undefined, before: string | undefined): string | undefined {
  if (now === undefined) return undefined;
  if (before === undefined) return now;
  return Date.parse(now) > Date.parse(before) ? now : undefined;
}

/**
 * The best time of the change the object tells, else when crbridge observed it:
 * created → `creationTimestamp`; deleted → `deletionTimestamp`; updated → the newest
 * `managedFields[].time`, else the newest condition `lastTransitionTime` — each only when newer than
 * the same in oldObject (so a stale time is never used); else `observedAt`. Always rendered as
 * `YYYY-MM-DDTHH:mm:ss.sssZ`.
 */
export function eventTime(delta: Delta): { time: string; fromObject: boolean } {
  const m = delta.object.metadata;
  let t: string | undefined;
  if (delta.kind === 'added') t = newest([m.creationTimestamp]);
  else if (delta.kind === 'deleted') t = newest([m.deletionTimestamp]);
  else {
    t =
      newer(newest(managedTimes(delta.object)), delta.oldObject && newest(managedTimes(delta.oldObject))) ??
      newer(newest(conditionTimes(delta.object)), delta.oldObject && newest(conditionTimes(delta.oldObject)));
  }
  // Normalised to UTC with milliseconds (what Date#toISOString and the CloudEvents SDKs produce).
  if (t !== undefined) return { time: new Date(Date.parse(t)).toISOString(), fromObject: true };
  return { time: new Date(delta.observedAt).toISOString(), fromObject: false };
}

function phaseValue(v: unknown): string | null | undefined {
  if (v === undefined) return undefined;
  if (v === null) return null;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

function readyCondition(obj: KubeObject): Record<string, unknown> | undefined {
  return conditions(obj).find((c) => c.type === 'Ready');
}

function secondsBetween(a: string | undefined, b: string | undefined): number | undefined {
  if (a === undefined || b === undefined) return undefined;
  const d = Date.parse(b) - Date.parse(a);
  return Number.isFinite(d) && d >= 0 ? d / 1000 : undefined;
}

/** The phase transition of an update, if the phase (or, failing that, the Ready condition) moved. */
export function phaseTransition(
  old: KubeObject,
  obj: KubeObject,
  c: Pick<Compiled, 'phaseTokens' | 'phasePointer'>,
  changeTime?: string,
): Transition | undefined {
  const o = phaseValue(getAt(old, c.phaseTokens));
  const n = phaseValue(getAt(obj, c.phaseTokens));
  if (o !== undefined || n !== undefined) {
    if (o === n) return undefined;
    const t: Transition = { field: c.phasePointer, from: o ?? null, to: n ?? null };
    // PersistentVolume-style `lastPhaseTransitionTime` beside the phase tells when a phase began.
    const sib = [...c.phaseTokens.slice(0, -1), 'lastPhaseTransitionTime'];
    const since = phaseValue(getAt(old, sib)) ?? undefined;
    const until = phaseValue(getAt(obj, sib)) ?? changeTime;
    if (since) {
      t.since = since;
      const d = secondsBetween(since, until !== since ? until : undefined);
      if (d !== undefined) t.durationSeconds = d;
    }
    return t;
  }
  const or = readyCondition(old);
  const nr = readyCondition(obj);
  const os = phaseValue(or?.status);
  const ns = phaseValue(nr?.status);
  if ((os === undefined && ns === undefined) || os === ns) return undefined;
  const t: Transition = { field: 'condition:Ready', from: os ?? null, to: ns ?? null };
  const since = typeof or?.lastTransitionTime === 'string' ? or.lastTransitionTime : undefined;
  const until = typeof nr?.lastTransitionTime === 'string' ? nr.lastTransitionTime : changeTime;
  if (since) {
    t.since = since;
    const d = secondsBetween(since, until);
    if (d !== undefined) t.durationSeconds = d;
  }
  return t;
}

/**
 * UTF-8 size of each object's JSON, measured once per object. Objects that reach the builder are
 * immutable snapshots shared with the source cache (the `object` of one update is the `oldObject`
 * of the next), so each state is measured once instead of once per event it appears in. Only the
 * number is kept: reusing the text in the sinks was tried and cost +12–17 MB RSS with 10k objects
 * (bench/RESULTS.md §1), for a few µs per event.
 */
const objectBytes = new WeakMap<object, number>();

function bytesOf(o: object): number {
  let n = objectBytes.get(o);
  if (n === undefined) {
    n = Buffer.byteLength(JSON.stringify(o), 'utf8');
    objectBytes.set(o, n);
  }
  return n;
}

/**
 * Exact UTF-8 size of the structured JSON of `e`: the envelope and small data fields are
 * serialized with the objects replaced by `null`, and the objects' own sizes are added.
 */
export function eventBytes(e: CloudEvent): number {
  const d = e.data;
  if (!d || typeof d !== 'object') return Buffer.byteLength(JSON.stringify(e), 'utf8');
  let extra = 0;
  const skeleton: Record<string, unknown> = { ...d };
  for (const k of ['object', 'oldObject'] as const) {
    const o = d[k];
    if (o === null || typeof o !== 'object') continue;
    skeleton[k] = null;
    extra += bytesOf(o) - 4;
  }
  return Buffer.byteLength(JSON.stringify({ ...e, data: skeleton }), 'utf8') + extra;
}

/**
 * The structured-JSON size of each built event, keyed by its `data` (stage copies of an event share
 * it): measured by the size policy anyway, so queues bound their bytes without measuring again.
 */
const builtBytes = new WeakMap<object, number>();

/**
 * The structured-JSON size of `e` in bytes as the builder measured it (extension attributes a
 * stage added later are not counted); an event the builder did not make is measured once here.
 */
export function approxEventBytes(e: CloudEvent): number {
  const d = e.data as unknown;
  if (d === null || typeof d !== 'object') return eventBytes(e);
  let n = builtBytes.get(d);
  if (n === undefined) {
    n = eventBytes(e);
    builtBytes.set(d, n);
  }
  return n;
}

/** Changed top-level paths (e.g. `/spec`) from a patch, in first-seen order. */
export function topLevelPaths(patch: readonly PatchOp[]): string[] {
  const seen: string[] = [];
  for (const op of patch) {
    const j = op.path.indexOf('/', 1);
    const top = j === -1 ? op.path : op.path.slice(0, j);
    if (!seen.includes(top)) seen.push(top);
  }
  return seen;
}

/**
 * Builds the CloudEvent for one delta. Never modifies the delta. Throws only on a delta that lacks
 * the identity every Kubernetes object has (metadata.uid/name/resourceVersion).
 */
export function buildEvent(delta: Delta, opts: EventOptions): CloudEvent {
  const c = compile(opts);
  const r = delta.resource;
  const m0 = delta.object?.metadata;
  if (!m0 || typeof m0.uid !== 'string' || typeof m0.name !== 'string' || typeof m0.resourceVersion !== 'string')
    throw new Error('object lacks metadata.uid, metadata.name or metadata.resourceVersion');

  let object = delta.object;
  let oldObject = delta.kind === 'modified' ? delta.oldObject : undefined;
  // A state read back from a checkpoint (the old one, or the last known one of a delete found on
  // resume) was stored redacted, perhaps with more pointers, and perhaps only in part.
  const stored = (delta.kind === 'modified' ? delta.oldObject : delta.object)?.[STORED];
  if (stored?.partial) oldObject = undefined;
  const pointers = redactionFor(c, stored);
  let masked: string[] | undefined;
  if (pointers.length > 0) {
    const a = redact(object, pointers);
    object = a.object;
    masked = a.masked;
    if (oldObject) {
      const b = redact(oldObject, pointers);
      oldObject = b.object;
      for (const p of b.masked) if (!masked.includes(p)) masked.push(p);
    }
  }

  const data: EventData = { object, reason: delta.reason };
  let changedPaths: string[] | undefined;
  if (oldObject) {
    const patch = diff(oldObject, object);
    changedPaths = topLevelPaths(patch);
    data.oldObject = oldObject;
    data.patch = patch;
    data.changedPaths = changedPaths;
  }
  if (delta.selector) data.selector = delta.selector;
  const { time, fromObject } = eventTime(delta);
  if (oldObject) {
    const t = phaseTransition(oldObject, object, c, fromObject ? time : undefined);
    if (t) data.transition = t;
  }
  if (masked && masked.length > 0) data.redacted = masked;

  const m = object.metadata;
  // `data` is set last so it comes last in the JSON form (attributes first, for readers).
  const event = {
    specversion: '1.0',
    id: eventId(delta.kind, object, delta.selector, delta.leftAt),
    source: sourceFor(c.cluster, r),
    type: `${c.prefix}.${groupName(r.group)}.${r.kind.toLowerCase()}.${changeType(delta, changedPaths)}`,
    subject: subjectFor(object),
    time,
    datacontenttype: 'application/json',
    dataschema: c.dataschema,
    k8sgroup: groupName(r.group),
    k8sversion: r.version,
    k8skind: r.kind,
  } as Omit<CloudEvent, 'data'> as CloudEvent;
  if (m.namespace) event.k8snamespace = m.namespace;
  event.k8sname = m.name;
  event.k8suid = m.uid;
  event.k8sresourceversion = m.resourceVersion;
  if (typeof m.generation === 'number' && Number.isInteger(m.generation)) {
    // CloudEvents Integer is 32-bit signed; larger generations travel as strings.
    event.k8sgeneration = isCloudEventsInteger(m.generation) ? m.generation : String(m.generation);
  }
  event.k8scluster = c.cluster;
  event.partitionkey = m.uid;
  const tc = opts.traceContext?.(delta);
  if (tc?.traceparent) {
    event.traceparent = tc.traceparent;
    if (tc.tracestate) event.tracestate = tc.tracestate;
  }
  event.data = data;
  enforceSize(event, c.maxBytes);
  return event;
}

/**
 * Size policy: while the structured JSON exceeds `maxBytes`, drop `oldObject`, then `object`
 * (the patch and changed paths stay), then `patch`, and record it in `data.truncated`.
 */
function enforceSize(event: CloudEvent, maxBytes: number): void {
  const originalBytes = eventBytes(event);
  const data = event.data;
  builtBytes.set(data, originalBytes);
  if (originalBytes <= maxBytes) return;
  const tr: Truncation = { dropped: [], originalBytes, maxBytes };
  data.truncated = tr;
  for (const field of ['oldObject', 'object', 'patch'] as const) {
    if (data[field] === undefined) continue;
    delete (data as Record<string, unknown>)[field];
    tr.dropped.push(field);
    const bytes = eventBytes(event);
    builtBytes.set(data, bytes);
    if (bytes <= maxBytes) return;
  }
}
