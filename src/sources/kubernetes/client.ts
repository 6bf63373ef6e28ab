/**
 * The Kubernetes transport for the source: plain requests (LIST pages, discovery, ConfigMaps) and
 * WATCH streams split into lines, on Node's own `http`/`https`, with the credentials loaded by
 * `kubeconfig.ts` (re-exported here) and the proxy a cluster's `proxy-url` names or, else, the
 * proxy environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`; loopback servers are never proxied,
 * as in client-go). Everything the reflector needs is behind {@link KubeApi} so unit tests can use
 * a fake API server.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeCredentials } from './kubeconfig.ts';

export {
  FILE_REFRESH_MS,
  inClusterCredentials,
  type KubeCredentials,
  type LoadOptions,
  loadKubeConfig,
  parseKubeconfig,
  SERVICE_ACCOUNT_DIR,
} from './kubeconfig.ts';

/** A non-2xx answer of the API server, with the Status `reason` when it sent one. */
export class KubeHttpError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.name = 'KubeHttpError';
    this.status = status;
    this.reason = reason;
  }
}

export type Query = Record<string, string | number | boolean | undefined>;

/** A running watch stream. */
export interface WatchHandle {
  abort(): void;
}

/** What the reflector, discovery and the ConfigMap checkpoint need from the API server. */
export interface KubeApi {
  /**
   * Sends a request with a JSON body (or none; PATCH bodies are JSON merge patches) and returns the
   * parsed JSON; non-2xx throws KubeHttpError. `signal` aborts the request (it then rejects with
   * the signal's reason), so no request outlives a shutdown.
   */
  request(
    method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
    path: string,
    query?: Query,
    body?: unknown,
    signal?: AbortSignal,
  ): Promise<unknown>;
  /**
   * Opens a WATCH (`watch=true` is added). `onEvent` gets each event in stream order (including
   * BOOKMARK and ERROR) and the length in bytes of its JSON line (what buffering it costs; a fake
   * may omit it); `onOpen` is called once when the server accepted the watch (HTTP 200), before
   * any event; `onDone` is called once when the stream ends (`null` on a clean close), never
   * after `abort()`.
   */
  watch(
    path: string,
    query: Query,
    onEvent: (type: string, object: unknown, bytes?: number) => void,
    onDone: (err: unknown) => void,
    onOpen?: () => void,
  ): Promise<WatchHandle>;
}

function withQuery(server: string, path: string, query: Query = {}): URL {
  const url = new URL(server + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  return url;
}

/** The KubeHttpError for a non-2xx answer, with the Status object's reason and message when present. */
function httpError(method: string, url: URL, status: number, body: string): KubeHttpError {
  let st: { reason?: string; message?: string } = {};
  try {
    st = (body ? JSON.parse(body) : {}) ?? {};
  } catch {}
  return new KubeHttpError(
    status,
    st.reason ?? '',
    `${method} ${url.pathname}: HTTP ${status}${st.message ? `: ${st.message}` : ''}`,
  );
}

/**
 * Splits a byte stream into newline-terminated lines without building strings bigger than one
 * line: `push` each chunk; `onLine` gets each complete line's bytes (without the newline).
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private partsLength = 0;
  private readonly onLine: (line: Buffer) => void;
  constructor(onLine: (line: Buffer) => void) {
    this.onLine = onLine;
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      let line = chunk.subarray(start, nl);
      if (this.partsLength > 0) {
        this.parts.push(line);
        line = Buffer.concat(this.parts, this.partsLength + line.length);
        this.parts = [];
        this.partsLength = 0;
      }
      start = nl + 1;
      if (line.length > 0) this.onLine(line);
    }
    if (start < chunk.length) {
      // the rest of the chunk is kept as a view; copy it when it is a small part of a large chunk
      const rest = chunk.subarray(start);
      this.parts.push(rest.length * 4 < chunk.length ? Buffer.from(rest) : rest);
      this.partsLength += rest.length;
    }
  }

  /** Whatever followed the last newline (an unterminated last line), if anything. */
  flush(): void {
    if (this.partsLength === 0) return;
    const line = Buffer.concat(this.parts, this.partsLength);
    this.parts = [];
    this.partsLength = 0;
    this.onLine(line);
  }
}

/** The proxy settings Node's agents take (`proxyEnv`), from the usual variables in either case. */
function proxyEnvOf(env: NodeJS.ProcessEnv): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const name of ['HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY']) {
    const v = env[name] ?? env[name.toLowerCase()];
    if (v) out[name] = v;
  }
  return out.HTTPS_PROXY || out.HTTP_PROXY ? out : undefined;
}

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\./.test(h);
}

/**
 * The agent that sends a request through the proxy (HTTPS tunnelled with CONNECT), or undefined
 * for a direct connection: the cluster's `proxy-url` for every request, else the proxy environment
 * (with `NO_PROXY`; a loopback server is reached directly, as Go's ProxyFromEnvironment does).
 */
function proxyAgents(creds: KubeCredentials, env: NodeJS.ProcessEnv): (url: URL) => http.Agent | undefined {
  const fixed = creds.proxyUrl;
  const proxyEnv = fixed ? { HTTPS_PROXY: fixed, HTTP_PROXY: fixed } : proxyEnvOf(env);
  if (!proxyEnv) return () => undefined;
  let agents: { http: http.Agent; https: https.Agent } | undefined;
  return (url) => {
    if (!fixed && isLoopback(url.hostname)) return undefined;
    agents ??= {
      http: new http.Agent({ keepAlive: false, proxyEnv } as http.AgentOptions),
      https: new https.Agent({ keepAlive: false, proxyEnv } as https.AgentOptions),
    };
    return url.protocol === 'http:' ? agents.http : agents.https;
  };
}

/** The real API for loaded credentials. */
export function kubeApi(
  creds: KubeCredentials,
  opts: {
    requestTimeoutMs?: number;
    watchIdleTimeoutMs?: number;
    /** The proxy environment; default `process.env`. */
    env?: NodeJS.ProcessEnv;
  } = {},
): KubeApi {
  const server = creds.server;
  const timeoutMs = opts.requestTimeoutMs ?? 60_000;
  const idleMs = opts.watchIdleTimeoutMs ?? 3_600_000;
  const proxyAgent = proxyAgents(creds, opts.env ?? process.env);
  // One connection per request, as before: a kept-alive socket that a proxy silently stopped
  // forwarding would hang the next LIST until its timeout (the proxy agents do not keep alive either).
  const prepare = async (method: string, url: URL) => {
    const options: https.RequestOptions = { method, headers: { accept: 'application/json' }, agent: false };
    const isHttp = url.protocol === 'http:';
    await creds.apply(options);
    const agent = proxyAgent(url);
    if (agent) options.agent = agent;
    return { options, mod: isHttp ? http : https };
  };
  /** A 401 may be a rotated token or certificate: the next request reads the files again. */
  const unauthorized = (status: number) => {
    if (status === 401) creds.refresh?.();
  };
  return {
    async request(method, path, query, body, signal) {
      signal?.throwIfAborted();
      const url = withQuery(server, path, query);
      const { options, mod } = await prepare(method, url);
      if (signal) options.signal = signal;
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      if (payload) {
        options.headers = {
          ...options.headers,
          'content-type': method === 'PATCH' ? 'application/merge-patch+json' : 'application/json',
          'content-length': payload.length,
        };
      }
      return await new Promise<unknown>((resolve, reject) => {
        const req = mod.request(url, options, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            chunks.length = 0;
            const status = res.statusCode ?? 0;
            if (status < 200 || status >= 300) {
              unauthorized(status);
              return reject(httpError(method, url, status, text));
            }
            try {
              resolve(text ? JSON.parse(text) : undefined);
            } catch {
              resolve(undefined);
            }
          });
        });
        req.setTimeout(timeoutMs, () =>
          req.destroy(new Error(`${method} ${url.pathname}: timed out after ${timeoutMs} ms`)),
        );
        req.on('error', reject);
        if (payload) req.write(payload);
        req.end();
      });
    },
    async watch(path, query, onEvent, onDone, onOpen) {
      const url = withQuery(server, path, { ...query, watch: true });
      const { options, mod } = await prepare('GET', url);
      let done = false;
      let aborted = false;
      const end = (err: unknown) => {
        if (done) return;
        done = true;
        if (!aborted) onDone(err);
      };
      const lines = new LineSplitter((line) => {
        if (done) return;
        let ev: { type?: unknown; object?: unknown };
        try {
          ev = JSON.parse(line.toString('utf8'));
        } catch {
          return; // not JSON: ignored, as client-node's Watch did
        }
        if (typeof ev?.type === 'string') onEvent(ev.type, ev.object, line.length);
      });
      const req = mod.request(url, options, (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          unauthorized(status);
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => end(httpError('WATCH', url, status, Buffer.concat(chunks).toString('utf8'))));
          res.on('error', end);
          return;
        }
        // connected: from here on the timeout is an inactivity timeout
        req.setTimeout(idleMs, () => req.destroy(new Error(`WATCH ${url.pathname}: no data for ${idleMs} ms`)));
        if (!done) onOpen?.();
        res.on('data', (c: Buffer) => lines.push(c));
        res.on('end', () => {
          lines.flush();
          end(null);
        });
        res.on('error', end);
        res.on('close', () => end(new Error(`WATCH ${url.pathname}: connection closed mid-stream`)));
      });
      req.setTimeout(timeoutMs, () =>
        req.destroy(new Error(`WATCH ${url.pathname}: no response after ${timeoutMs} ms`)),
      );
      req.on('error', end);
      req.end();
      return {
        abort: () => {
          aborted = true;
          done = true;
          req.destroy();
        },
      };
    },
  };
}
