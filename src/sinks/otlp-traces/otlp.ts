/**
 * OTLP/HTTP JSON encoding of finished spans (opentelemetry-proto `ExportTraceServiceRequest`, its
 * JSON mapping: ids as hex, times as decimal nanosecond strings) and its gzip compression. Built by
 * hand rather than with the OpenTelemetry SDK: the sink needs only the encoding (delivery, retry
 * and persistence are crbridge's), and this costs no memory. Loaded by the sink with a dynamic
 * import at start, so a process without an `otlp-traces` sink never loads it. Pure.
 */
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import type { AttributeValue, SpanRecord } from './lifecycle.ts';

const gzip = promisify(gzipCb);

/** OTLP `Span.SpanKind` INTERNAL. */
const SPAN_KIND_INTERNAL = 1;
/** OTLP `Status.StatusCode` ERROR. */
const STATUS_ERROR = 2;

type AnyValue = { stringValue: string } | { boolValue: boolean } | { intValue: string } | { doubleValue: number };

function anyValue(v: AttributeValue): AnyValue {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}

function attributes(a: Record<string, AttributeValue>): { key: string; value: AnyValue }[] {
  return Object.entries(a).map(([key, v]) => ({ key, value: anyValue(v) }));
}

function nanos(ms: number): string {
  return (BigInt(Math.round(ms)) * 1_000_000n).toString();
}

/** The `ExportTraceServiceRequest` JSON of `spans` under one resource and instrumentation scope. */
export function encodeTraces(
  spans: readonly SpanRecord[],
  resource: Record<string, AttributeValue>,
  scope: { name: string; version?: string },
): string {
  return JSON.stringify({
    resourceSpans: [
      {
        resource: { attributes: attributes(resource) },
        scopeSpans: [
          {
            scope,
            spans: spans.map((s) => ({
              traceId: s.traceId,
              spanId: s.spanId,
              ...(s.parentSpanId !== undefined && { parentSpanId: s.parentSpanId }),
              name: s.name,
              kind: SPAN_KIND_INTERNAL,
              startTimeUnixNano: nanos(s.startMs),
              endTimeUnixNano: nanos(s.endMs),
              attributes: attributes(s.attributes),
              ...(s.links && {
                links: s.links.map((l) => ({
                  traceId: l.traceId,
                  spanId: l.spanId,
                  attributes: attributes(l.attributes ?? {}),
                })),
              }),
              status: s.error !== undefined ? { code: STATUS_ERROR, message: s.error } : {},
            })),
          },
        ],
      },
    ],
  });
}

/** The request body: the JSON, gzipped unless `compression` is `none`. */
export async function body(json: string, compression: 'gzip' | 'none'): Promise<Buffer> {
  const raw = Buffer.from(json, 'utf8');
  return compression === 'gzip' ? gzip(raw) : raw;
}
