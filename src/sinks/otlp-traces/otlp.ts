/**
 * The OpenTelemetry SDK side of the `otlp-traces` sink: the spans `lifecycle.ts` computes become
 * real SDK spans (`@opentelemetry/sdk-trace`'s TracerProvider and Tracer: the configured Resource,
 * an IdGenerator handing out the lifecycle's deterministic ids, AlwaysOnSampler, the change times as
 * start and end, the parent as a span context, links, error status) and are exported with
 * `@opentelemetry/exporter-trace-otlp-http` (JSON) or `-proto` (protobuf), gzip by the exporter.
 *
 * No SDK queue: a synchronous span processor hands the ended spans of one `export` call straight
 * to one `exporter.export()`, whose result the caller maps to a delivery result — the delivery
 * layer (outbox, retry, dead letters) stays the guarantee. The exporter's requests go through the
 * sink's HTTP agents (`src/sinks/util/http.ts`: TLS options, proxy). Every SDK package is imported
 * with `await import()` in {@link createSpanExporter}, and this module itself only by the sink's
 * start, so a process without an `otlp-traces` sink never loads the SDK.
 */
import type http from 'node:http';
import type { Context, SpanContext } from '@opentelemetry/api';
import type { IdGenerator, ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace';
import type { AttributeValue, SpanRecord } from './lifecycle.ts';

export type OtlpEncoding = 'json' | 'protobuf';

export interface SpanExporterOptions {
  /** The full export URL (`…/v1/traces`). */
  url: string;
  /** Extra request headers (values may be secrets: never logged). */
  headers: Record<string, string>;
  compression: 'gzip' | 'none';
  encoding: OtlpEncoding;
  /** Bound of one export, the exporter's own retries included. */
  timeoutMs: number;
  resource: Record<string, AttributeValue>;
  /** The HTTP agent for a protocol (`http:` / `https:`). */
  agent: (protocol: string) => http.Agent;
  /** A 2xx answer whose `partialSuccess` says the receiver rejected spans. */
  onPartialSuccess: (rejectedSpans: number, message: string) => void;
}

/** The outcome of one export: ok, or the exporter's error (an `OTLPExporterError` carries `code` and `data`). */
export type ExportOutcome = { ok: true } | { ok: false; error: unknown };

/** W3C trace flags: sampled (only sampled lifecycles make spans). */
const SAMPLED = 1;
/** `ExportResultCode.SUCCESS` of `@opentelemetry/core`. */
const EXPORT_SUCCESS = 0;
/** The instrumentation scope of every span. */
const SCOPE = 'crbridge';

/**
 * Limits set explicitly (the SDK's defaults would do today): crbridge's spans carry about fifteen
 * attributes and a few links, none of which may be cut.
 */
const SPAN_LIMITS = {
  attributeCountLimit: 128,
  attributeValueLengthLimit: Number.POSITIVE_INFINITY,
  linkCountLimit: 128,
  attributePerLinkCountLimit: 128,
};

type HrTime = [number, number];
/** Epoch ms as `[seconds, nanoseconds]`: exact, and never taken for a `performance.now()` value. */
const hrTime = (ms: number): HrTime => {
  const n = Math.round(ms);
  return [Math.floor(n / 1000), (n % 1000) * 1_000_000];
};

/** Hands the Tracer the ids of the span being started (set right before `startSpan`). */
class NextIds implements IdGenerator {
  traceId: string | undefined;
  spanId: string | undefined;
  generateTraceId(): string {
    if (this.traceId === undefined) throw new Error('otlp-traces: a span started without its trace id');
    return this.traceId;
  }
  generateSpanId(): string {
    if (this.spanId === undefined) throw new Error('otlp-traces: a span started without its span id');
    return this.spanId;
  }
}

/** Collects the spans ended while `collect` runs: no queue, no export of its own. */
class Collector implements SpanProcessor {
  private ended: ReadableSpan[] | undefined;
  collect(build: () => void): ReadableSpan[] {
    const out: ReadableSpan[] = [];
    this.ended = out;
    try {
      build();
    } finally {
      this.ended = undefined;
    }
    return out;
  }
  onStart(_span: Span, _parent: Context): void {}
  onEnd(span: ReadableSpan): void {
    this.ended?.push(span);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** One sink's tracer provider and exporter. */
export interface SpanExporter {
  /** The SDK spans of `records`, ended (synchronous: the records of one call never interleave with another's). */
  spans(records: readonly SpanRecord[]): ReadableSpan[];
  /** One export request (with the exporter's own bounded retry of 429/502/503/504 and network errors). */
  export(spans: ReadableSpan[]): Promise<ExportOutcome>;
  /** Shuts the provider and the exporter down (waits for exports in flight; none of them makes another request). */
  shutdown(): Promise<void>;
}

/** The partial-success handler the exporter's delegate calls with each decoded 2xx answer. */
interface ResponseHandler {
  handleResponse(response: { partialSuccess?: { rejectedSpans?: unknown; errorMessage?: unknown } }): void;
}

/**
 * The exporter logs a partial success with OpenTelemetry's global `diag` logger (silent unless one
 * is installed, and not the sink's); this hands it to the sink's logger instead. The delegate is
 * internal to `@opentelemetry/otlp-exporter-base` (a pinned version; test/unit/sinks/otlp-traces.test.ts
 * fails if it moves): without it the exporter's own handler stays.
 */
function routePartialSuccess(exporter: object, on: SpanExporterOptions['onPartialSuccess']): void {
  const delegate = (exporter as { _delegate?: { _responseHandler?: ResponseHandler } })._delegate;
  if (!delegate || typeof delegate._responseHandler?.handleResponse !== 'function') return;
  delegate._responseHandler = {
    handleResponse(response) {
      const p = response?.partialSuccess;
      const rejected = Number(String(p?.rejectedSpans ?? 0));
      if (rejected > 0) on(rejected, String(p?.errorMessage ?? ''));
    },
  };
}

/** Loads the SDK and the exporter of `o.encoding` and makes the sink's provider and exporter. */
export async function createSpanExporter(o: SpanExporterOptions): Promise<SpanExporter> {
  const [api, sdk, resources, exporterModule] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/resources'),
    o.encoding === 'protobuf'
      ? import('@opentelemetry/exporter-trace-otlp-proto')
      : import('@opentelemetry/exporter-trace-otlp-http'),
  ]);
  const ids = new NextIds();
  const collector = new Collector();
  const provider = new sdk.TracerProvider({
    resource: resources.resourceFromAttributes(o.resource),
    idGenerator: ids,
    sampler: new sdk.AlwaysOnSampler(),
    spanLimits: SPAN_LIMITS,
    spanProcessors: [collector],
  });
  const tracer = provider.getTracer(SCOPE);
  // once shut down, a retry the exporter still has scheduled (a request cut at the deadline) makes
  // no request: the headers are read before each attempt, and failing there ends the export
  let closed = false;
  const headers = async (): Promise<Record<string, string>> => {
    if (closed) throw new Error('the otlp-traces sink is shut down');
    return { ...o.headers };
  };
  const exporter = new exporterModule.OTLPTraceExporter({
    url: o.url,
    headers,
    compression: o.compression as never, // the exporter's CompressionAlgorithm enum: the same two strings
    timeoutMillis: o.timeoutMs,
    // the delivery queue bounds concurrency; the exporter must never refuse an export on its own count
    concurrencyLimit: 100_000,
    httpAgentOptions: (protocol: string) => o.agent(protocol),
    userAgent: 'crbridge',
  });
  routePartialSuccess(exporter, o.onPartialSuccess);
  const context = (traceId: string, spanId: string): SpanContext => ({ traceId, spanId, traceFlags: SAMPLED });

  return {
    spans(records) {
      return collector.collect(() => {
        for (const r of records) {
          ids.traceId = r.traceId;
          ids.spanId = r.spanId;
          const parent =
            r.parentSpanId === undefined
              ? api.ROOT_CONTEXT
              : api.trace.setSpanContext(api.ROOT_CONTEXT, context(r.traceId, r.parentSpanId));
          const span = tracer.startSpan(
            r.name,
            {
              kind: api.SpanKind.INTERNAL,
              startTime: hrTime(r.startMs),
              attributes: r.attributes,
              links: (r.links ?? []).map((l) => ({
                context: context(l.traceId, l.spanId),
                ...(l.attributes && { attributes: l.attributes }),
              })),
            },
            parent,
          );
          ids.traceId = undefined;
          ids.spanId = undefined;
          if (r.error !== undefined) span.setStatus({ code: api.SpanStatusCode.ERROR, message: r.error });
          span.end(hrTime(r.endMs));
        }
      });
    },
    export(spans) {
      return new Promise((resolve) => {
        exporter.export(spans, (res) =>
          resolve(res.code === EXPORT_SUCCESS ? { ok: true } : { ok: false, error: res.error }),
        );
      });
    },
    async shutdown() {
      closed = true;
      await Promise.all([provider.shutdown(), exporter.shutdown()]);
    },
  };
}
