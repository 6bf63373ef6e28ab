/**
 * The `otlp-traces` sink: each Custom Resource's lifecycle as a trace, exported over OTLP/HTTP
 * (JSON, gzip) to Jaeger or any OpenTelemetry receiver. A span per delivered event, a span per
 * phase and a root span per lifecycle (`lifecycle.ts`), in the trace whose id the event's
 * `traceparent` names (`src/events/trace-context.ts`). One `send(batch)` is one export request:
 * 2xx ok, 408/429/5xx retryable with Retry-After, other 4xx permanent (`src/sinks/util/http.ts`),
 * so the delivery layer's retry, outbox and dead letters are the guarantee, not an SDK queue.
 *
 * The state needed to end spans later (open phase, start times, links) is kept per object in
 * `ctx.state('lifecycles')` and flushed after each export is accepted; ids are deterministic, so
 * a batch sent again re-exports identical spans. The encoder is imported lazily at `start`.
 * Header values never appear in logs or errors.
 */
import { compileCel } from '../../cel/index.ts';
import type { ComponentContext, DeliveryResult, OutboundEvent, Sink, SinkFactory } from '../../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import type { StateStore } from '../../state/store.ts';
import type { Logger } from '../../telemetry/logger.ts';
import {
  HttpClient,
  type HttpDeliveryResult,
  type HttpResponse,
  resultOfError,
  resultOfStatus,
  safeOrigin,
} from '../util/http.ts';
import {
  checkOtlpTracesConfig,
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

type Encoder = typeof import('./otlp.ts');

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
  private readonly resource: Record<string, AttributeValue>;
  private readonly lifecycle: LifecycleOptions;
  private readonly client: HttpClient;
  private readonly store: StateStore;
  private readonly logger: Logger;
  private readonly id: string;
  private ready: Promise<Encoder> | undefined;
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
    this.headers = {
      'user-agent': 'crbridge',
      ...Object.fromEntries(Object.entries(config.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
      'content-type': this.encoding === 'protobuf' ? 'application/x-protobuf' : 'application/json',
      ...(this.compression === 'gzip' && { 'content-encoding': 'gzip' }),
    };
    this.secrets = Object.values(config.headers ?? {}).filter((v) => v.length >= 4);
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
      timeoutMs: config.timeoutMs ?? D.timeoutMs,
      logger: ctx.logger,
    });
    this.store = ctx.state?.('lifecycles') ?? new MemoryStore();
    this.logger = ctx.logger;
  }

  async start(signal: AbortSignal): Promise<void> {
    this.load(signal).catch(() => {}); // a failure is reported by the first send
  }

  /** Loads the encoder (lazily: only a process with this sink pays for it) and the stored lifecycles. */
  private load(signal?: AbortSignal): Promise<Encoder> {
    this.ready ??= (async () => {
      const enc = await import('./otlp.ts');
      await this.store.load(signal);
      return enc;
    })().catch((err) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  async send(batch: readonly OutboundEvent[], signal: AbortSignal): Promise<DeliveryResult[]> {
    if (batch.length === 0) return [];
    const all = (r: DeliveryResult) => batch.map(() => r);
    let enc: Encoder;
    try {
      enc = await this.load(signal);
    } catch (err) {
      if (signal.aborted) throw err;
      const error = `cannot read the lifecycle state ${this.store.description}: ${errorMessage(err)}`;
      this.logger.once('error', `otlp-state:${this.id}`, error, { code: ErrorCode.DeliveryConfig });
      return all({ status: 'retryable', error });
    }
    // the spans of the batch from staged copies of the state; stored only once the export is accepted
    const staged = new Map<string, LifecycleState | undefined>();
    const spans: SpanRecord[] = [];
    for (const o of batch) {
      const key = lifecycleKey(o.event);
      if (key === undefined) continue;
      const prev = staged.has(key) ? staged.get(key) : this.store.get<LifecycleState>(key);
      const r = applyEvent(o.event, prev, this.lifecycle);
      spans.push(...r.spans);
      staged.set(key, r.state);
    }
    if (spans.length > 0) {
      const encoded = enc.encodeTraces(spans, this.resource, { name: 'crbridge' }, this.encoding);
      const res = await this.export(await enc.body(encoded, this.compression), signal);
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
   * One export request; its outcome per `src/sinks/util/http.ts`. A 2xx with `partialSuccess`
   * (spans the receiver rejected) is still ok: sending them again would be rejected again; it is
   * logged once with the receiver's message.
   */
  private async export(body: Buffer, signal: AbortSignal): Promise<HttpDeliveryResult> {
    let res: HttpResponse;
    try {
      res = await this.client.request({ method: 'POST', url: this.url, headers: this.headers, body, signal });
    } catch (err) {
      if (signal.aborted) throw err;
      return resultOfError(err);
    }
    const text = res.body.toString('utf8');
    const r = resultOfStatus(res.status, res.headers, text);
    if (r.status === 'ok' && text.includes('partialSuccess')) {
      try {
        const p = (JSON.parse(text) as { partialSuccess?: { rejectedSpans?: string | number; errorMessage?: string } })
          .partialSuccess;
        if (p && Number(p.rejectedSpans ?? 0) > 0)
          this.logger.once(
            'warn',
            `otlp-partial:${this.id}`,
            `the OTLP receiver ${this.origin} rejected ${p.rejectedSpans} span(s): ${this.redact(String(p.errorMessage ?? ''))}`,
            { code: ErrorCode.DeliveryPermanent },
          );
      } catch {
        // not JSON: nothing to report
      }
    }
    return r;
  }

  private redact(text: string): string {
    let out = text;
    for (const s of this.secrets) out = out.split(s).join('[redacted]');
    return out;
  }

  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      // a last try at the state of accepted exports whose flush failed, within the deadline
      const flush = this.store.flush(AbortSignal.timeout(Math.max(0, deadline - Date.now()))).catch(() => {});
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        flush,
        new Promise<void>((r) => {
          timer = setTimeout(r, Math.max(0, deadline - Date.now()));
        }),
      ]);
      clearTimeout(timer);
      this.client.close();
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
