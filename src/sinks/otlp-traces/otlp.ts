/**
 * OTLP/HTTP encoding of finished spans (`ExportTraceServiceRequest`) with OpenTelemetry JS's own
 * serializers (`@opentelemetry/otlp-transformer`, what `@opentelemetry/exporter-trace-otlp-http`
 * and `-proto` encode with): JSON or protobuf, then gzip. Only the encoding is the SDK's: spans
 * are built by `lifecycle.ts` with deterministic ids and the times of the changes, and delivery,
 * retry and persistence are crbridge's (an SDK exporter would retry and drop on its own). Loaded
 * by the sink with a dynamic import at start, so a process without an `otlp-traces` sink never
 * loads it (nor protobufjs). Pure.
 */
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { AttributeValue, SpanRecord } from './lifecycle.ts';

const gzip = promisify(gzipCb);

/** `@opentelemetry/api` SpanKind.INTERNAL (the serializer writes OTLP's value, kind + 1). */
const SPAN_KIND_INTERNAL = 0;
/** `@opentelemetry/api` SpanStatusCode UNSET and ERROR (the same numbers as OTLP's). */
const STATUS_UNSET = 0;
const STATUS_ERROR = 2;
/** W3C trace flags: sampled (only sampled lifecycles make spans). */
const SAMPLED = 1;

export type OtlpEncoding = 'json' | 'protobuf';

type HrTime = [number, number];
const hrTime = (ms: number): HrTime => {
  const n = Math.round(ms);
  return [Math.floor(n / 1000), (n % 1000) * 1_000_000];
};

/**
 * The SDK's `ReadableSpan` shape the serializers read, for one finished span. `resource` and
 * `scope` are shared objects: the serializer groups spans by their identity.
 */
function readable(s: SpanRecord, resource: object, scope: { name: string; version?: string }) {
  const context = (spanId: string, traceId = s.traceId) => ({ traceId, spanId, traceFlags: SAMPLED });
  return {
    name: s.name,
    kind: SPAN_KIND_INTERNAL,
    spanContext: () => context(s.spanId),
    parentSpanContext: s.parentSpanId !== undefined ? context(s.parentSpanId) : undefined,
    startTime: hrTime(s.startMs),
    endTime: hrTime(s.endMs),
    duration: hrTime(s.endMs - s.startMs),
    ended: true,
    attributes: s.attributes,
    droppedAttributesCount: 0,
    events: [],
    droppedEventsCount: 0,
    links: (s.links ?? []).map((l) => ({ context: context(l.spanId, l.traceId), attributes: l.attributes ?? {} })),
    droppedLinksCount: 0,
    status: s.error !== undefined ? { code: STATUS_ERROR, message: s.error } : { code: STATUS_UNSET },
    resource,
    instrumentationScope: scope,
  };
}

/** The `ExportTraceServiceRequest` of `spans` under one resource and instrumentation scope, encoded. */
export function encodeTraces(
  spans: readonly SpanRecord[],
  resource: Record<string, AttributeValue>,
  scope: { name: string; version?: string },
  encoding: OtlpEncoding = 'json',
): Uint8Array {
  const res = { attributes: resource };
  const list = spans.map((s) => readable(s, res, scope));
  const serializer = encoding === 'protobuf' ? ProtobufTraceSerializer : JsonTraceSerializer;
  const out = serializer.serializeRequest(list as never);
  if (!out) throw new Error('the OTLP serializer produced no request');
  return out;
}

/** The request body: the encoded request, gzipped unless `compression` is `none`. */
export async function body(encoded: Uint8Array, compression: 'gzip' | 'none'): Promise<Buffer> {
  const raw = Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  return compression === 'gzip' ? gzip(raw) : raw;
}
