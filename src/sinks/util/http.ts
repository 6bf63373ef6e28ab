/**
 * What every HTTP sink (webhook, Slack, OTLP) shares, written once: one request with a timeout and
 * an abort signal, TLS options (CA, client certificate, server name; verification on unless
 * explicitly disabled), the proxy from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`, and the mapping
 * of an answer or a transport failure to a delivery result:
 *
 * - 2xx: ok;
 * - 408, 429, 5xx, connection resets, refused connections and timeouts: retryable, with the
 *   `Retry-After` header (delay-seconds or an HTTP date) as the earliest retry, capped;
 * - 3xx: permanent — redirects are never followed (a webhook receiver that moved must be
 *   reconfigured; following could leak credentials to another host);
 * - 410 Gone: permanent and flagged `gone`, so a sink can stop sending to that endpoint;
 * - any other 4xx: permanent (the request itself is wrong: a dead letter, not a retry).
 *
 * After the OpenTelemetry Collector's exporterhelper/otlphttp status handling, the Standard
 * Webhooks and CloudEvents webhook specs, and Vector's sinks/util/http retry logic.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { DeliveryResult } from '../../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import type { Logger } from '../../telemetry/logger.ts';

/** TLS settings of an HTTP sink; file paths are read when the client is made. */
export interface TlsOptions {
  /** PEM file of the CA bundle that signs the server certificate (default: the system roots). */
  caFile?: string;
  /** PEM files of a client certificate and its key (mutual TLS). */
  certFile?: string;
  keyFile?: string;
  /** Server name to verify (SNI), when it differs from the URL's host. */
  serverName?: string;
  /** Accept any server certificate. Never in production; the sink logs a warning when set. */
  insecureSkipVerify?: boolean;
}

/** JSON Schema of {@link TlsOptions}, for the sinks' config schemas. */
export const tlsSchema = {
  type: 'object',
  additionalProperties: false,
  description: 'TLS options for HTTPS endpoints; verification is on unless `insecureSkipVerify` is true.',
  properties: {
    caFile: { type: 'string', description: 'PEM file of the CA certificates that sign the server certificate.' },
    certFile: { type: 'string', description: 'PEM file of the client certificate (mutual TLS).' },
    keyFile: { type: 'string', description: 'PEM file of the client certificate key.' },
    serverName: { type: 'string', description: 'Server name to verify instead of the URL host.' },
    insecureSkipVerify: {
      type: 'boolean',
      default: false,
      description: 'Accept any server certificate (logged as a warning; for tests only).',
    },
  },
} as const;

/** Longest wait a `Retry-After` may ask for; a longer one is capped (the queue's backoff continues). */
export const MAX_RETRY_AFTER_MS = 2 * 60 * 60 * 1000;

/**
 * The delay a `Retry-After` value asks for, in ms from `now`: delay-seconds or an HTTP date
 * (RFC 9110 §10.2.3). Undefined when absent or unreadable; never negative; at most `cap`.
 */
export function parseRetryAfter(
  value: string | string[] | undefined,
  now = Date.now(),
  cap = MAX_RETRY_AFTER_MS,
): number | undefined {
  const v = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!v) return undefined;
  let ms: number;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else {
    const at = Date.parse(v);
    if (Number.isNaN(at)) return undefined;
    ms = at - now;
  }
  return Math.min(cap, Math.max(0, ms));
}

/** A delivery result with what an HTTP sink may additionally act on. */
export type HttpDeliveryResult = DeliveryResult & {
  /** The HTTP status, when an answer came. */
  httpStatus?: number;
  /** 410 Gone: the endpoint asks to stop sending. */
  gone?: boolean;
};

/** Maps an HTTP answer to a delivery result (see the file header for the rules). */
export function resultOfStatus(
  status: number,
  headers: http.IncomingHttpHeaders,
  body = '',
  now = Date.now(),
): HttpDeliveryResult {
  if (status >= 200 && status < 300) return { status: 'ok' };
  const detail = body.trim().slice(0, 200);
  const error = `HTTP ${status}${detail ? `: ${detail}` : ''}`;
  if (status === 408 || status === 429 || status >= 500) {
    const retryAfterMs = parseRetryAfter(headers['retry-after'], now);
    return { status: 'retryable', error, ...(retryAfterMs !== undefined && { retryAfterMs }) };
  }
  if (status >= 300 && status < 400) {
    const to = headers.location ? ` to ${String(headers.location)}` : '';
    return { status: 'permanent', error: `${error} (a redirect${to}; redirects are not followed: fix the URL)` };
  }
  if (status === 410) return { status: 'permanent', error: `${error} (the endpoint is gone)`, gone: true };
  return { status: 'permanent', error };
}

/** Transport failures worth retrying: resets, refusals, DNS hiccups, timeouts, TLS handshakes cut short. */
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
  'CRB_HTTP_TIMEOUT',
]);

/** Maps an error thrown by {@link HttpClient.request} to a delivery result. */
export function resultOfError(err: unknown): HttpDeliveryResult {
  const code = (err as { code?: string } | null)?.code;
  const error = errorMessage(err);
  if (code && RETRYABLE_CODES.has(code)) return { status: 'retryable', error };
  // certificate problems are configuration: retried (they affect every event) with a clear error
  if (code?.startsWith('ERR_TLS') || code?.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT')
    return { status: 'retryable', error: `TLS: ${error} (check tls.caFile / tls.serverName)` };
  return { status: 'retryable', error };
}

export interface HttpRequest {
  method?: 'GET' | 'POST' | 'PUT' | 'OPTIONS';
  url: string;
  headers?: Record<string, string | number>;
  body?: Buffer | string;
  /** Per request; default the client's. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface HttpClientOptions {
  tls?: TlsOptions;
  /** Default request timeout; 15 s. */
  timeoutMs?: number;
  /** The proxy environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, lower case too); default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Largest response body kept (the rest is read and discarded); 64 KiB. */
  maxBodyBytes?: number;
  /** Told (a warning, once per client) when certificate verification is turned off. */
  logger?: Logger;
}

export const DEFAULT_HTTP_TIMEOUT_MS = 15_000;

/** Reads a PEM file for a TLS option, naming the option in the error. */
function pem(path: string | undefined, option: string): Buffer | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CrbridgeError(ErrorCode.ConfigInvalid, `cannot read tls.${option} ${path}: ${errorMessage(err)}`);
  }
}

/** The proxy settings Node's agents take (`proxyEnv`), from the usual variables in either case. */
function proxyEnvOf(env: NodeJS.ProcessEnv): Record<string, string> | undefined {
  const pick = (name: string) => env[name] ?? env[name.toLowerCase()];
  const out: Record<string, string> = {};
  for (const name of ['HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY']) {
    const v = pick(name);
    if (v) out[name] = v;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * One HTTP(S) client per sink: kept-alive connections, the sink's TLS options, the proxy from the
 * environment. Never follows redirects. `request` rejects only for transport failures (a code
 * {@link resultOfError} knows, `CRB_HTTP_TIMEOUT` for the timeout) or an abort.
 */
export class HttpClient {
  private readonly https: https.Agent;
  private readonly http: http.Agent;
  private readonly timeoutMs: number;
  private readonly maxBody: number;
  private readonly servername: string | undefined;

  constructor(opts: HttpClientOptions = {}) {
    const tls = opts.tls ?? {};
    if (tls.insecureSkipVerify === true)
      opts.logger?.warn(
        'TLS certificate verification is off (tls.insecureSkipVerify); anyone on the path can read and change what is sent',
        {
          code: ErrorCode.ConfigInvalid,
        },
      );
    const proxyEnv = proxyEnvOf(opts.env ?? process.env);
    const common = { keepAlive: true, ...(proxyEnv && { proxyEnv }) };
    this.https = new https.Agent({
      ...common,
      ca: pem(tls.caFile, 'caFile'),
      cert: pem(tls.certFile, 'certFile'),
      key: pem(tls.keyFile, 'keyFile'),
      rejectUnauthorized: tls.insecureSkipVerify !== true,
      ...(tls.serverName && { servername: tls.serverName }),
    } as https.AgentOptions);
    this.http = new http.Agent(common as http.AgentOptions);
    this.servername = tls.serverName;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS;
    this.maxBody = opts.maxBodyBytes ?? 64 * 1024;
  }

  request(req: HttpRequest): Promise<HttpResponse> {
    const url = new URL(req.url);
    const secure = url.protocol === 'https:';
    const mod = secure ? https : http;
    const timeoutMs = req.timeoutMs ?? this.timeoutMs;
    const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body);
    return new Promise<HttpResponse>((resolve, reject) => {
      if (req.signal?.aborted) return reject(req.signal.reason);
      const headers: Record<string, string | number> = { ...req.headers };
      if (body) headers['content-length'] = body.length;
      const r = mod.request(
        url,
        {
          method: req.method ?? 'POST',
          headers,
          agent: secure ? this.https : this.http,
          ...(secure && this.servername && { servername: this.servername }),
          ...(req.signal && { signal: req.signal }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let kept = 0;
          res.on('data', (c: Buffer) => {
            if (kept < this.maxBody) {
              chunks.push(c);
              kept += c.length;
            }
          });
          res.on('error', reject);
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).subarray(0, this.maxBody),
            }),
          );
        },
      );
      r.setTimeout(timeoutMs, () => {
        const err = new Error(`${req.method ?? 'POST'} ${url.origin}${url.pathname}: no answer within ${timeoutMs} ms`);
        (err as { code?: string }).code = 'CRB_HTTP_TIMEOUT';
        r.destroy(err);
      });
      r.on('error', reject);
      r.end(body);
    });
  }

  /** Sends and maps the outcome to a delivery result (never rejects, except for an abort). */
  async deliver(req: HttpRequest): Promise<HttpDeliveryResult> {
    try {
      const res = await this.request(req);
      return { ...resultOfStatus(res.status, res.headers, res.body.toString('utf8')), httpStatus: res.status };
    } catch (err) {
      if (req.signal?.aborted) throw err;
      return resultOfError(err);
    }
  }

  /**
   * The agent for `https:` or `http:` (TLS options, proxy and server name included), for a library
   * that makes its own requests (the OTLP exporter); closed by {@link close} like the client's own.
   */
  agentFor(protocol: string): http.Agent {
    return protocol === 'https:' ? this.https : this.http;
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.https.destroy();
    this.http.destroy();
  }
}

/** scheme://host:port of a URL, or a placeholder when it cannot be parsed: the part that may be shown (never the path or query, which can hold a secret). */
export function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid url)';
  }
}
