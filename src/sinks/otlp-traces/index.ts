/**
 * The `otlp-traces` sink: each Custom Resource's lifecycle as a trace, exported over OTLP/HTTP
 * (JSON or protobuf, gzip) to Jaeger or any OpenTelemetry receiver. A span per delivered event, a
 * span per phase and a root span per lifecycle (`lifecycle.ts` decides them: deterministic ids,
 * the change times), in the trace whose id the event's `traceparent` names
 * (`src/events/trace-context.ts`); the OpenTelemetry SDK makes and exports them (`otlp.ts`:
 * TracerProvider, OTLPTraceExporter), imported lazily at `start`.
 *
 * One `send(batch)` is one `exporter.export()`: success ok; an HTTP status the exporter does not
 * retry mapped like every HTTP sink (`src/sinks/util/http.ts`: other 4xx permanent, 408/5xx
 * retryable); a 429/502/503/504 or a network error still failing after the exporter's retries
 * within `timeoutMs`, retryable. No SDK queue: the delivery layer's retry, outbox and dead letters
 * are the guarantee. The state needed to end spans later (open phase, start times, links) is kept
 * per object in `ctx.state('lifecycles')` and flushed after each export is accepted; a batch sent
 * again re-exports identical spans. Header values never appear in logs or errors.
 */
import { compileCel } from '../../cel/index.ts';
import type { ComponentContext, DeliveryResult, OutboundEvent, Sink, SinkFactory } from '../../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import type { StateStore } from '../../state/store.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { HttpClient, type HttpDeliveryResult, resultOfError, resultOfStatus, safeOrigin } from '../util/http.ts';
import {
  checkOtlpTracesConfig,
  envHeaderValues,
  exportUrl,
  OTLP_TRACES_DEFAULTS,
  type OtlpTracesSinkConfig,
  otlpTracesConfigSchema,
} from './config.ts';
import {
  type AttributeValue,
  applyEvent,
  type LifecycleOptions,
  type LifecycleState,
  lifecycleKey,
  type SpanRecord,
} from './lifecycle.ts';

export { OTLP_TRACES_DEFAULTS, type OtlpTracesSinkConfig } from './config.ts';

const D = OTLP_TRACES_DEFAULTS;

type SdkExporter = import('./otlp.ts').SpanExporter;

/** A store kept in memory, for a context without `state` (a test). */
class MemoryStore implements StateStore {
  readonly description = 'memory';
  private readonly map = new Map<string, unknown>();
  async load(): Promise<void> {}
  get<T>(key: string): T | undefined {
    return this.map.get(key) as T | undefined;
  }
  entries(): IterableIterator<[string, unknown]> {
    return this.map.entries();
  }
  set(key: string, value: unknown): void {
    this.map.set(key, value);
  }
  delete(key: string): void {
    this.map.delete(key);
  }
  async flush(): Promise<void> {}
}

class OtlpTracesSink implements Sink {
  readonly maxBatch: number;
  readonly defaultConcurrency = 16;
  private readonly url: string;
  private readonly origin: string;
  private readonly headers: Record<string, string>;
  private readonly secrets: string[];
  private readonly compression: 'gzip' | 'none';
  private readonly encoding: 'json' | 'protobuf';
  private readonly timeoutMs: number;
  private readonly resource: Record<string, AttributeValue>;
  private readonly lifecycle: LifecycleOptions;
  private readonly client: HttpClient;
  private readonly store: StateStore;
  private readonly logger: Logger;
  private readonly id: string;
  private ready: Promise<SdkExporter> | undefined;
  private shutdownPromise: Promise<void> | undefined;

  constructor(config: OtlpTracesSinkConfig, ctx: ComponentContext) {
    const url = exportUrl(config.endpoint);
    if (url === undefined)
      throw new CrbridgeError(
        ErrorCode.ConfigInvalid,
        `sink ${ctx.id}: no OTLP endpoint: set the sink's endpoint or the OTEL_EXPORTER_OTLP_ENDPOINT environment variable`,
      );
    this.url = url;
    this.origin = safeOrigin(url);
    this.id = ctx.id;
    this.maxBatch = config.batchSize ?? D.batchSize;
    this.compression = config.compression ?? D.compression;
    this.encoding = config.encoding ?? D.encoding;
    // content-type, content-encoding and user-agent (`crbridge OTel-OTLP-Exporter-JavaScript/…`) are the exporter's
    this.headers = Object.fromEntries(Object.entries(config.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    this.timeoutMs = config.timeoutMs ?? D.timeoutMs;
    this.secrets = [...Object.values(config.headers ?? {}), ...envHeaderValues(process.env)].filter(
      (v) => v.length >= 4,
    );
    this.resource = {
      'service.name': config.serviceName ?? D.serviceName,
      'k8s.cluster.name': ctx.clusterName,
      ...config.resourceAttributes,
    };
    this.lifecycle = {
      perGeneration: config.perGeneration ?? D.perGeneration,
      sampleRatio: config.sampleRatio ?? D.sampleRatio,
      phase: compileCel(config.phase ?? D.phase, 'string'),
      failed: compileCel(config.failed ?? D.failed, 'bool'),
      failureReason: compileCel(config.failureReason ?? D.failureReason, 'string'),
      terminalPhases: config.terminalPhases ?? D.terminalPhases,
    };
    this.client = new HttpClient({
      ...(config.tls && { tls: config.tls }),
      timeoutMs: this.timeoutMs,
      logger: ctx.logger,
    });
    this.store = ctx.state?.('lifecycles') ?? new MemoryStore();
    this.logger = ctx.logger;
  }

  async start(signal: AbortSignal): Promise<void> {
    this.load(signal).catch(() => {}); // a failure is reported by the first send
  }

  /** Loads the SDK and makes the exporter (lazily: only a process with this sink pays for it), and the stored lifecycles. */
  private load(signal?: AbortSignal): Promise<SdkExporter> {
    this.ready ??= (async () => {
      const { createSpanExporter } = await import('./otlp.ts');
      const exporter = await createSpanExporter({
        url: this.url,
        headers: this.headers,
        compression: this.compression,
        encoding: this.encoding,
        timeoutMs: this.timeoutMs,
        resource: this.resource,
        agent: (protocol) => this.client.agentFor(protocol),
        onPartialSuccess: (rejected, message) =>
          this.logger.once(
            'warn',
            `otlp-partial:${this.id}`,
            `the OTLP receiver ${this.origin} rejected ${rejected} span(s): ${this.redact(message)}`,
            { code: ErrorCode.DeliveryPermanent },
          ),
      });
      try {
        await this.store.load(signal);
      } catch (err) {
        await exporter.shutdown().catch(() => {});
        throw err;
      }
      return exporter;
    })().catch((err) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  async send(batch: readonly OutboundEvent[], signal: AbortSignal): Promise<DeliveryResult[]> {
    if (batch.length === 0) return [];
    const all = (r: DeliveryResult) => batch.map(() => r);
    let exporter: SdkExporter;
    try {
      exporter = await this.load(signal);
    } catch (err) {
      if (signal.aborted) throw err;
      const error = `cannot start the OpenTelemetry exporter or read the lifecycle state ${this.store.description}: ${this.redact(errorMessage(err))}`;
      this.logger.once('error', `otlp-state:${this.id}`, error, { code: ErrorCode.DeliveryConfig });
      return all({ status: 'retryable', error });
    }
    // the spans of the batch from staged copies of the state; stored only once the export is accepted
    const staged = new Map<string, LifecycleState | undefined>();
    const records: SpanRecord[] = [];
    for (const o of batch) {
      const key = lifecycleKey(o.event);
      if (key === undefined) continue;
      const prev = staged.has(key) ? staged.get(key) : this.store.get<LifecycleState>(key);
      const r = applyEvent(o.event, prev, this.lifecycle);
      records.push(...r.spans);
      staged.set(key, r.state);
    }
    if (records.length > 0) {
      const res = await this.export(exporter, records, signal);
      if (res.status !== 'ok') {
        const error = `${this.origin}: ${this.redact(res.error)}`;
        return all(
          res.status === 'retryable'
            ? { status: 'retryable', error, ...(res.retryAfterMs !== undefined && { retryAfterMs: res.retryAfterMs }) }
            : { status: 'permanent', error },
        );
      }
    }
    for (const [key, st] of staged) {
      if (st === undefined) this.store.delete(key);
      else this.store.set(key, st);
    }
    try {
      await this.store.flush(signal);
    } catch (err) {
      if (signal.aborted) throw err;
      // the spans are exported; a lost state only makes a later phase span start at the restart's first event
      this.logger.once('warn', `otlp-flush:${this.id}`, `cannot store the lifecycle state ${this.store.description}`, {
        code: ErrorCode.DeliveryConfig,
        error: errorMessage(err),
      });
    }
    return all({ status: 'ok' });
  }

  /**
   * The records as SDK spans in one `exporter.export()`, its outcome as a delivery result. An abort
   * (the shutdown deadline) rejects at once; the request still in flight is cut when the agents
   * close. A 2xx with `partialSuccess` (spans the receiver rejected) is still ok: sending them again
   * would be rejected again; it is logged once with the receiver's message.
   */
  private async export(exporter: SdkExporter, records: SpanRecord[], signal: AbortSignal): Promise<HttpDeliveryResult> {
    signal.throwIfAborted();
    const spans = exporter.spans(records);
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      const out = await Promise.race([exporter.export(spans), aborted]);
      return out.ok ? { status: 'ok' } : this.resultOf(out.error);
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * A failed export as a delivery result: an answer the exporter did not retry (`OTLPExporterError`
   * with the HTTP status and body) mapped like every HTTP sink's; its "retryable status" (429, 502,
   * 503, 504 until the exporter's retries ran out within `timeoutMs`), timeouts and transport
   * failures retryable.
   */
  private resultOf(err: unknown): HttpDeliveryResult {
    const e = err as { name?: unknown; code?: unknown; data?: unknown } | undefined;
    if (e?.name === 'OTLPExporterError' && typeof e.code === 'number')
      return resultOfStatus(e.code, {}, typeof e.data === 'string' ? e.data : '');
    if (e?.name === 'OTLPExporterError' && /retryable status/.test(errorMessage(err)))
      return {
        status: 'retryable',
        error: `the receiver answered 429, 502, 503 or 504, and the exporter's retries within timeoutMs (${this.timeoutMs} ms) did not get through`,
      };
    return err === undefined ? { status: 'retryable', error: 'the OTLP export failed' } : resultOfError(err);
  }

  private redact(text: string): string {
    let out = text;
    for (const s of this.secrets) out = out.split(s).join('[redacted]');
    return out;
  }

  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      const left = () => Math.max(0, deadline - Date.now());
      // a last try at the state of accepted exports whose flush failed, and the SDK's shutdown
      // (it waits for exports in flight), within the deadline
      const exporter = this.ready?.catch(() => undefined);
      const work = Promise.all([
        this.store.flush(AbortSignal.timeout(left())).catch(() => {}),
        exporter?.then((x) => x?.shutdown()).catch(() => {}),
      ]);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        work,
        new Promise<void>((r) => {
          timer = setTimeout(r, left());
        }),
      ]);
      clearTimeout(timer);
      this.client.close(); // cuts a request still in flight
    })();
    return this.shutdownPromise;
  }
}

export const otlpTracesSink: SinkFactory<OtlpTracesSinkConfig> = {
  kind: 'sink',
  type: 'otlp-traces',
  description:
    'Exports each object lifecycle as an OpenTelemetry trace (a span per event, per phase, and a root span) over OTLP/HTTP, e.g. to Jaeger.',
  configSchema: otlpTracesConfigSchema,
  check: checkOtlpTracesConfig,
  create(config: OtlpTracesSinkConfig, ctx: ComponentContext): Sink {
    return new OtlpTracesSink(config, ctx);
  },
};
