/**
 * The trace of a Kubernetes object's lifecycle, derived purely from its identity: the trace id from
 * the uid (and, optionally, the generation), the root span id from the trace id, and the W3C
 * `traceparent` every event carries (CloudEvents distributed-tracing extension) pointing at that
 * root. The `otlp-traces` sink derives its ids with the same functions, so what a consumer reads in
 * an event's `traceparent` is the trace Jaeger shows. Deterministic: the same object gives the same
 * ids in every process, replica and restart. Also the W3C headers the bindings add. Pure.
 */
import { createHash } from 'node:crypto';
import type { CloudEvent } from './cloudevent.ts';

/** How lifecycles map to traces; the pipeline's `events.traceContext` and the sink share it. */
export interface TraceContextOptions {
  /** A new trace per `metadata.generation` (a spec change starts a new lifecycle); default false. */
  perGeneration?: boolean;
  /** Head sampling: the share of lifecycles (by trace id) whose `sampled` flag is set; default 1. */
  sampleRatio?: number;
}

/** The annotation of KEP-5915 by which an object names the trace that caused it. */
export const TRACEPARENT_ANNOTATION = 'tracing.k8s.io/traceparent';

const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

function hex(input: string, chars: number): string {
  const h = createHash('sha256').update(input).digest('hex').slice(0, chars);
  // all zeros is invalid in W3C trace context; a hash gives it with probability 2^-64 or less
  return /^0+$/.test(h) ? `${h.slice(0, -1)}1` : h;
}

/** The lifecycle's trace id: 32 lower-case hex digits from the uid (and the generation). */
export function lifecycleTraceId(uid: string, generation?: number | string): string {
  return hex(generation === undefined ? `crbridge/lifecycle/${uid}` : `crbridge/lifecycle/${uid}/${generation}`, 32);
}

/** The root span of a lifecycle (creation → deletion or a terminal phase): 16 hex digits. */
export function rootSpanId(traceId: string): string {
  return hex(`crbridge/root/${traceId}`, 16);
}

/** A span of the lifecycle named by `key` (e.g. `event:<event id>`, `phase:<event id>`). */
export function spanIdFor(traceId: string, key: string): string {
  return hex(`crbridge/span/${traceId}/${key}`, 16);
}

/**
 * Whether a lifecycle is sampled: like OpenTelemetry's TraceIdRatioBased sampler, the lower 56 bits
 * of the trace id compared with `ratio`, so the decision is the same everywhere and a sampled
 * lifecycle keeps every one of its spans.
 */
export function isSampled(traceId: string, ratio = 1): boolean {
  if (ratio >= 1) return true;
  if (ratio <= 0) return false;
  const low = Number.parseInt(traceId.slice(18, 32), 16); // 56 bits
  return low < ratio * 2 ** 56;
}

/** `00-<trace id>-<span id>-<flags>`. */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}

/** A parsed `traceparent`, or undefined when it is not a valid version-00 value. */
export function parseTraceparent(value: unknown): { traceId: string; spanId: string; sampled: boolean } | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(value.trim());
  if (!m || m[1] === 'ff' || m[2] === ZERO_TRACE || m[3] === ZERO_SPAN) return undefined;
  return { traceId: m[2] as string, spanId: m[3] as string, sampled: (Number.parseInt(m[4] as string, 16) & 1) === 1 };
}

/** The lifecycle an object is in: its trace id, root span id and sampling decision. */
export interface Lifecycle {
  traceId: string;
  rootSpanId: string;
  sampled: boolean;
  /** The generation the trace is for, in `perGeneration` mode. */
  generation?: number | string;
}

/** The lifecycle of an object (uid and generation as in its metadata). */
export function lifecycleOf(meta: { uid: string; generation?: unknown }, opts: TraceContextOptions = {}): Lifecycle {
  const g = meta.generation;
  const generation = opts.perGeneration && (typeof g === 'number' || typeof g === 'string') ? g : undefined;
  const traceId = lifecycleTraceId(meta.uid, generation);
  return {
    traceId,
    rootSpanId: rootSpanId(traceId),
    sampled: isSampled(traceId, opts.sampleRatio),
    ...(generation !== undefined && { generation }),
  };
}

/**
 * The distributed-tracing extension of an event about `meta`: `traceparent` naming the lifecycle's
 * root span (a consumer's spans continue that trace). `tracestate` is not set.
 */
export function traceContextFor(
  meta: { uid: string; generation?: unknown },
  opts: TraceContextOptions = {},
): { traceparent: string; tracestate?: string } {
  const l = lifecycleOf(meta, opts);
  return { traceparent: formatTraceparent(l.traceId, l.rootSpanId, l.sampled) };
}

/** The event builder's `traceContext` option (`EventOptions.traceContext`) for these settings. */
export function traceContextOption(
  opts: TraceContextOptions,
): (delta: { object: { metadata: { uid: string; generation?: unknown } } }) => { traceparent: string } {
  const o: TraceContextOptions = {
    ...(opts.perGeneration !== undefined && { perGeneration: opts.perGeneration }),
    ...(opts.sampleRatio !== undefined && { sampleRatio: opts.sampleRatio }),
  };
  return (delta) => traceContextFor(delta.object.metadata, o);
}

/**
 * The distributed-tracing extension as the W3C Trace Context headers `traceparent` / `tracestate`
 * (what OpenTelemetry's propagators read from a Kafka record or an HTTP request), for the
 * bindings in every mode; in binary mode the `ce_traceparent` / `ce-traceparent` attribute header
 * is there as well.
 */
export function traceHeaders(event: CloudEvent): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof event.traceparent === 'string') out.traceparent = event.traceparent;
  if (typeof event.tracestate === 'string' && event.tracestate !== '') out.tracestate = event.tracestate;
  return out;
}
