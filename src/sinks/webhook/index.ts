/**
 * The `webhook` sink: POSTs events to an HTTP(S) endpoint with the CloudEvents HTTP binding —
 * binary (default) or structured, one event per request, or batch (`batchSize` events per
 * `application/cloudevents-batch+json` request) — signed per Standard Webhooks v1, with bearer or
 * basic auth, custom headers and TLS, through the shared {@link HttpClient} (redirects never
 * followed; status → result per `src/sinks/util/http.ts`).
 *
 * 410 Gone stops the endpoint: from then on every event is answered retryable without a request
 * (so the delivery layer keeps it), the `crbridge_webhook_endpoint_gone` gauge is 1 and an error is
 * logged once; a restart of crbridge re-enables the endpoint (docs/webhooks.md). The optional
 * CloudEvents abuse-protection handshake runs before the first delivery and its
 * `WebHook-Allowed-Rate` caps requests per minute (a token bucket). No log line, metric label or
 * result error ever holds a secret, the URL's path or query, or a custom header's value.
 */
import type { KeyObject } from 'node:crypto';
import type { ComponentContext, DeliveryResult, OutboundEvent, Sink, SinkFactory } from '../../component.ts';
import { ErrorCode } from '../../errors.ts';
import { type HttpMessage, toHttpBatch, toHttpBinary, toHttpStructured } from '../../events/bindings/http.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { Gauge } from '../../telemetry/metrics.ts';
import { HttpClient, type HttpDeliveryResult, resultOfStatus, safeOrigin } from '../util/http.ts';
import { TokenBucket } from '../util/rate.ts';
import {
  checkWebhookConfig,
  WEBHOOK_SINK_DEFAULTS,
  type WebhookMode,
  type WebhookSinkConfig,
  webhookConfigSchema,
} from './config.ts';
import { batchId, secretKey, signatureHeader } from './signing.ts';

export { WEBHOOK_SINK_DEFAULTS, type WebhookSinkConfig } from './config.ts';

const D = WEBHOOK_SINK_DEFAULTS;

/** The sink's own metric: 1 while its endpoint has answered 410 Gone (until a restart). */
export const ENDPOINT_GONE_METRIC = 'crbridge_webhook_endpoint_gone';

/** Replaces every secret-bearing string in a text by `[redacted]`. */
export class Redactor {
  private readonly needles: string[];
  constructor(values: Iterable<string | undefined>) {
    // longest first, so a secret that contains another is removed whole
    this.needles = [...new Set([...values].filter((v): v is string => typeof v === 'string' && v.length >= 4))].sort(
      (a, b) => b.length - a.length,
    );
  }
  redact(text: string): string {
    let out = text;
    for (const n of this.needles) out = out.split(n).join('[redacted]');
    return out;
  }
}

/** What the abuse-protection handshake allowed: a rate cap, or none. */
type Handshake = { ok: true; bucket: TokenBucket | undefined } | { ok: false; result: DeliveryResult };

class WebhookSink implements Sink {
  readonly maxBatch: number;
  /** HTTP: many objects in flight at once (the queue never sends two events of one object together). */
  readonly defaultConcurrency = 16;
  private readonly url: string;
  /** The URL as it may be shown: scheme, host and port only. */
  private readonly origin: string;
  private readonly mode: WebhookMode;
  private readonly keys: KeyObject[];
  private readonly fixedHeaders: Record<string, string>;
  private readonly client: HttpClient;
  private readonly redactor: Redactor;
  private readonly logger: Logger;
  private readonly goneGauge: Gauge;
  private readonly labels: { component: string };
  private readonly abuse: Required<Omit<NonNullable<WebhookSinkConfig['abuseProtection']>, 'requestRate'>> & {
    requestRate?: number;
  };
  private handshake: Promise<Handshake> | undefined;
  /** Set by a 410 Gone: the error every later event gets. */
  private gone: string | undefined;
  private shutdownPromise: Promise<void> | undefined;

  constructor(config: WebhookSinkConfig, ctx: ComponentContext) {
    this.url = config.url;
    this.origin = safeOrigin(config.url);
    this.mode = config.mode ?? D.mode;
    this.maxBatch = this.mode === 'batch' ? (config.batchSize ?? D.batchSize) : 1;
    const secrets = config.signing?.secrets ?? [];
    this.keys = secrets.map(secretKey);
    const auth = config.auth;
    const authorization =
      auth?.bearerToken !== undefined
        ? `Bearer ${auth.bearerToken}`
        : auth?.username !== undefined
          ? `Basic ${Buffer.from(`${auth.username}:${auth.password ?? ''}`).toString('base64')}`
          : undefined;
    this.fixedHeaders = {
      'user-agent': 'crbridge',
      ...Object.fromEntries(Object.entries(config.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
      ...(authorization && { authorization }),
    };
    let path: string | undefined;
    let search: string | undefined;
    try {
      const u = new URL(config.url);
      path = u.pathname.length > 1 ? u.pathname : undefined;
      search = u.search || undefined;
    } catch {
      // check() reported it; the first send fails with a clear error
    }
    this.redactor = new Redactor([
      config.url,
      path,
      search,
      ...secrets,
      ...secrets.map((s) => s.slice('whsec_'.length)),
      auth?.bearerToken,
      auth?.password,
      authorization,
      authorization?.replace(/^\S+ /, ''),
      ...Object.values(config.headers ?? {}),
    ]);
    this.logger = ctx.logger;
    this.labels = { component: ctx.id };
    this.goneGauge = ctx.metrics.gauge(
      ENDPOINT_GONE_METRIC,
      'Whether a webhook endpoint answered 410 Gone (1): nothing is sent to it until crbridge restarts; its events are kept.',
    );
    this.goneGauge.set(this.labels, 0);
    this.abuse = { ...D.abuseProtection, ...config.abuseProtection };
    this.client = new HttpClient({
      ...(config.tls && { tls: config.tls }),
      timeoutMs: config.timeoutMs ?? D.timeoutMs,
      logger: ctx.logger,
    });
  }

  async start(_signal: AbortSignal): Promise<void> {}

  async send(batch: readonly OutboundEvent[], signal: AbortSignal): Promise<DeliveryResult[]> {
    if (batch.length === 0) return [];
    const all = (r: DeliveryResult) => batch.map(() => r);
    if (this.gone !== undefined) return all({ status: 'retryable', error: this.gone });
    let bucket: TokenBucket | undefined;
    if (this.abuse.enabled) {
      const h = await this.ensureHandshake(signal);
      if (!h.ok) return all(h.result);
      bucket = h.bucket;
    }
    if (this.mode === 'batch') {
      const msg = toHttpBatch(batch.map((o) => o.event));
      return all(await this.post(msg, batchId(batch.map((o) => o.event.id)), bucket, signal));
    }
    // binary and structured: one event per request (maxBatch 1); a longer batch goes in order
    const out: DeliveryResult[] = [];
    for (const o of batch) {
      if (out.length > 0 && out[out.length - 1]?.status !== 'ok') {
        out.push({ status: 'retryable', error: 'not sent: an earlier event of the batch failed' });
        continue;
      }
      const msg = this.mode === 'structured' ? toHttpStructured(o.event) : toHttpBinary(o.event);
      out.push(await this.post(msg, o.event.id, bucket, signal));
    }
    return out;
  }

  /** One signed POST; its outcome as a delivery result with no secret in it. */
  private async post(
    msg: HttpMessage,
    id: string,
    bucket: TokenBucket | undefined,
    signal: AbortSignal,
  ): Promise<DeliveryResult> {
    await bucket?.take(signal);
    const body = Buffer.from(msg.body, 'utf8');
    const headers: Record<string, string> = { ...this.fixedHeaders, ...msg.headers };
    if (this.keys.length > 0) {
      const ts = Math.floor(Date.now() / 1000);
      headers['webhook-id'] = id;
      headers['webhook-timestamp'] = String(ts);
      headers['webhook-signature'] = signatureHeader(this.keys, id, ts, body);
    }
    const r = await this.client.deliver({ method: 'POST', url: this.url, headers, body, signal });
    return this.outcome(r);
  }

  private outcome(r: HttpDeliveryResult): DeliveryResult {
    if (r.status === 'ok') return { status: 'ok' };
    const error = `${this.origin}: ${this.redactor.redact(r.error)}`;
    if (r.gone) {
      this.gone = `${this.origin} answered 410 Gone: crbridge stopped sending to it and keeps its events; fix the receiver or the sink's url, then restart crbridge`;
      this.goneGauge.set(this.labels, 1);
      this.logger.error(`webhook endpoint is gone: ${this.gone}`, { code: ErrorCode.DeliveryConfig, error });
      return { status: 'retryable', error: this.gone };
    }
    if (r.status === 'retryable')
      return { status: 'retryable', error, ...(r.retryAfterMs !== undefined && { retryAfterMs: r.retryAfterMs }) };
    return { status: 'permanent', error };
  }

  /** Runs the abuse-protection handshake once; a failed one is retried on the next send. */
  private ensureHandshake(signal: AbortSignal): Promise<Handshake> {
    this.handshake ??= this.runHandshake(signal).then((h) => {
      if (!h.ok) this.handshake = undefined;
      return h;
    });
    return this.handshake;
  }

  private async runHandshake(signal: AbortSignal): Promise<Handshake> {
    const origin = this.abuse.origin;
    const fail = (why: string): Handshake => {
      const error = `${this.origin}: abuse-protection handshake failed: ${this.redactor.redact(why)}`;
      this.logger.once('warn', `webhook-handshake:${this.labels.component}`, error, {
        code: ErrorCode.DeliveryConfig,
      });
      return { ok: false, result: { status: 'retryable', error } };
    };
    let res: Awaited<ReturnType<HttpClient['request']>>;
    try {
      res = await this.client.request({
        method: 'OPTIONS',
        url: this.url,
        headers: {
          ...this.fixedHeaders,
          'webhook-request-origin': origin,
          ...(this.abuse.requestRate !== undefined && { 'webhook-request-rate': String(this.abuse.requestRate) }),
        },
        signal,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      return fail(String((err as Error)?.message ?? err));
    }
    if (res.status < 200 || res.status >= 300) {
      const r = resultOfStatus(res.status, res.headers, res.body.toString('utf8'));
      return fail(
        `${r.status === 'ok' ? '' : r.error} (the endpoint must answer OPTIONS with WebHook-Allowed-Origin; or set abuseProtection.enabled: false)`,
      );
    }
    const allowed = String(res.headers['webhook-allowed-origin'] ?? '').trim();
    if (allowed !== '*' && allowed !== origin)
      return fail(
        `the answer's WebHook-Allowed-Origin is ${allowed ? `"${allowed}"` : 'missing'}, not "${origin}" or "*": the receiver does not accept this sender`,
      );
    const rate = String(res.headers['webhook-allowed-rate'] ?? '').trim();
    const perMinute = /^\d+$/.test(rate) ? Number(rate) : undefined;
    return {
      ok: true,
      bucket: perMinute !== undefined && perMinute > 0 ? TokenBucket.perMinute(perMinute) : undefined,
    };
  }

  shutdown(_deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.client.close();
    })();
    return this.shutdownPromise;
  }
}

export const webhookSink: SinkFactory<WebhookSinkConfig> = {
  kind: 'sink',
  type: 'webhook',
  description: `POSTs each event (or a batch) to an HTTP endpoint with the CloudEvents HTTP binding (${D.mode} mode by default), signed per Standard Webhooks v1.`,
  configSchema: webhookConfigSchema,
  check: checkWebhookConfig,
  create(config: WebhookSinkConfig, ctx: ComponentContext): Sink {
    return new WebhookSink(config, ctx);
  },
};
