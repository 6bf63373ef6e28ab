/**
 * Kubernetes access for the source: loading credentials (explicit path, `KUBECONFIG`, in-cluster
 * service account, `~/.kube/config`), plain requests (LIST pages, discovery, ConfigMaps) and WATCH
 * streams, on Node's own `https`. Everything the reflector needs is behind {@link KubeApi} so unit
 * tests can use a fake API server.
 *
 * Memory: `@kubernetes/client-node` is not imported for the common credential kinds (client
 * certificates, bearer tokens and token files, basic auth, the in-cluster service account): its
 * entry point loads the whole generated API and undici, ~80 MB of RSS for a process that needs a
 * few headers and TLS options. Only a kubeconfig whose user has an `exec` plugin or an
 * `auth-provider`, or whose cluster has a `proxy-url`, loads it (lazily, on the first request) and
 * lets its KubeConfig apply the credentials, exactly as before.
 */
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const SA_TOKEN = `${SA_DIR}/token`;
const SA_CA = `${SA_DIR}/ca.crt`;
/** Token, certificate and key files are re-read at most this often (rotated service-account tokens). */
const FILE_REFRESH_MS = 60_000;

/** Loaded credentials for one API server: where requests go and how they authenticate. */
export interface KubeCredentials {
  /** API server URL without a trailing slash. */
  readonly server: string;
  /** Where the credentials came from (logs, errors). */
  readonly origin: string;
  /** Adds TLS material and authentication headers (refreshing tokens when due) to request options. */
  apply(options: https.RequestOptions): Promise<void>;
}

interface KubeconfigCluster {
  server?: string;
  'certificate-authority'?: string;
  'certificate-authority-data'?: string;
  'insecure-skip-tls-verify'?: boolean;
  'tls-server-name'?: string;
  'proxy-url'?: string;
}

interface KubeconfigUser {
  token?: string;
  tokenFile?: string;
  'token-file'?: string;
  'client-certificate'?: string;
  'client-certificate-data'?: string;
  'client-key'?: string;
  'client-key-data'?: string;
  username?: string;
  password?: string;
  as?: string;
  exec?: unknown;
  'auth-provider'?: unknown;
}

interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name?: string; context?: { cluster?: string; user?: string } }[];
  clusters?: { name?: string; cluster?: KubeconfigCluster }[];
  users?: { name?: string; user?: KubeconfigUser }[];
}

/** A file read again once `FILE_REFRESH_MS` passed since the last read. */
function refreshingFile(path: string): () => Buffer {
  let data: Buffer | undefined;
  let readAt = 0;
  return () => {
    const now = Date.now();
    if (!data || now - readAt >= FILE_REFRESH_MS) {
      data = readFileSync(path);
      readAt = now;
    }
    return data;
  };
}

/** `file` (re-read when due) or base64 `data`, whichever is given. */
function material(root: string, file: string | undefined, data: string | undefined): (() => Buffer) | undefined {
  if (file) return refreshingFile(isAbsolute(file) ? file : join(root, file));
  if (data) {
    const b = Buffer.from(data, 'base64');
    return () => b;
  }
  return undefined;
}

interface Parts {
  server: string;
  origin: string;
  ca?: () => Buffer;
  cert?: () => Buffer;
  key?: () => Buffer;
  token?: () => string;
  basic?: string;
  impersonate?: string;
  insecure?: boolean;
  servername?: string;
}

function credentials(p: Parts): KubeCredentials {
  return {
    server: p.server,
    origin: p.origin,
    async apply(o) {
      const ca = p.ca?.();
      if (ca) o.ca = ca;
      const cert = p.cert?.();
      if (cert) o.cert = cert;
      const key = p.key?.();
      if (key) o.key = key;
      if (p.insecure) o.rejectUnauthorized = false;
      if (p.servername) o.servername = p.servername;
      const headers = { ...(o.headers as Record<string, string> | undefined) };
      if (p.impersonate) headers['Impersonate-User'] = p.impersonate;
      const token = p.token?.();
      if (token) headers.Authorization = `Bearer ${token}`;
      else if (p.basic) o.auth = p.basic;
      o.headers = headers;
    },
  };
}

/**
 * Credentials that client-node's KubeConfig applies (exec plugins, auth providers, proxies): the
 * package is imported on the first request only.
 */
function viaClientNode(file: string, server: string): KubeCredentials {
  let kc: Promise<{ applyToHTTPSOptions(o: https.RequestOptions): Promise<void> }> | undefined;
  return {
    server,
    origin: file,
    async apply(o) {
      kc ??= import('@kubernetes/client-node').then((m) => {
        const k = new m.KubeConfig();
        k.loadFromFile(file);
        return k;
      });
      await (await kc).applyToHTTPSOptions(o);
    },
  };
}

/** Parses a kubeconfig file's current context. Throws a plain Error saying what is wrong. */
export function parseKubeconfig(file: string): KubeCredentials {
  const doc = (parseYaml(readFileSync(file, 'utf8')) ?? {}) as Kubeconfig;
  if (typeof doc !== 'object') throw new Error('not a kubeconfig (no mapping at the top level)');
  const ctxName = doc['current-context'];
  if (!ctxName) throw new Error('has no current context/cluster');
  const ctx = doc.contexts?.find((c) => c?.name === ctxName)?.context;
  if (!ctx) throw new Error(`has no context named ${JSON.stringify(ctxName)} (current-context)`);
  const cluster = doc.clusters?.find((c) => c?.name === ctx.cluster)?.cluster;
  if (!cluster?.server) throw new Error(`has no current context/cluster (cluster ${JSON.stringify(ctx.cluster)})`);
  const server = cluster.server.replace(/\/+$/, '');
  const user: KubeconfigUser = doc.users?.find((u) => u?.name === ctx.user)?.user ?? {};
  if (user.exec || user['auth-provider'] || cluster['proxy-url']) return viaClientNode(file, server);
  const root = dirname(file);
  const tokenFile = user.tokenFile ?? user['token-file'];
  const tf = tokenFile ? refreshingFile(isAbsolute(tokenFile) ? tokenFile : join(root, tokenFile)) : undefined;
  return credentials({
    server,
    origin: file,
    ca: material(root, cluster['certificate-authority'], cluster['certificate-authority-data']),
    cert: material(root, user['client-certificate'], user['client-certificate-data']),
    key: material(root, user['client-key'], user['client-key-data']),
    token: user.token ? () => user.token as string : tf ? () => tf().toString('utf8').trim() : undefined,
    basic: user.username ? `${user.username}:${user.password ?? ''}` : undefined,
    impersonate: user.as,
    insecure: cluster['insecure-skip-tls-verify'] === true,
    servername: cluster['tls-server-name'],
  });
}

/** The pod's service account: `KUBERNETES_SERVICE_HOST/PORT`, its CA and its (rotated) token. */
function inCluster(): KubeCredentials {
  const host = process.env.KUBERNETES_SERVICE_HOST as string;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
  const token = refreshingFile(SA_TOKEN);
  token(); // an unreadable token fails here, at start-up, not on the first request
  return credentials({
    server: `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`,
    origin: 'in-cluster service account',
    ca: existsSync(SA_CA) ? refreshingFile(SA_CA) : undefined,
    token: () => token().toString('utf8').trim(),
  });
}

/**
 * Loads credentials: `path` if given, else the first existing file of `KUBECONFIG`, else the
 * in-cluster service account when running in a pod, else `~/.kube/config`. Throws
 * `CrbridgeError(KubeAuth)` naming what was tried when none works.
 */
export function loadKubeConfig(path?: string): KubeCredentials {
  const tried: string[] = [];
  const fromFile = (file: string, why: string): KubeCredentials => {
    try {
      return parseKubeconfig(file);
    } catch (err) {
      throw new CrbridgeError(ErrorCode.KubeAuth, `cannot load kubeconfig ${file} (${why}): ${errorMessage(err)}`, {
        file,
      });
    }
  };
  if (path) return fromFile(path, 'explicit path');
  const env = process.env.KUBECONFIG;
  if (env) {
    for (const f of env.split(delimiter).filter(Boolean)) {
      if (existsSync(f)) return fromFile(f, 'KUBECONFIG');
      tried.push(f);
    }
  }
  if (process.env.KUBERNETES_SERVICE_HOST && existsSync(SA_TOKEN)) {
    try {
      return inCluster();
    } catch (err) {
      throw new CrbridgeError(ErrorCode.KubeAuth, `cannot load in-cluster credentials: ${errorMessage(err)}`);
    }
  }
  tried.push('in-cluster service account (not in a pod)');
  const home = join(homedir(), '.kube', 'config');
  if (existsSync(home)) return fromFile(home, '~/.kube/config');
  tried.push(home);
  throw new CrbridgeError(
    ErrorCode.KubeAuth,
    `no Kubernetes credentials found (tried ${tried.join(', ')}); pass --kubeconfig or set KUBECONFIG`,
    { tried },
  );
}

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

/** The real API for loaded credentials. */
export function kubeApi(
  creds: KubeCredentials,
  opts: { requestTimeoutMs?: number; watchIdleTimeoutMs?: number } = {},
): KubeApi {
  const server = creds.server;
  const timeoutMs = opts.requestTimeoutMs ?? 60_000;
  const idleMs = opts.watchIdleTimeoutMs ?? 3_600_000;
  // One connection per request, as before: a kept-alive socket that a proxy silently stopped
  // forwarding would hang the next LIST until its timeout.
  const prepare = async (method: string, url: URL) => {
    const options: https.RequestOptions = { method, headers: { accept: 'application/json' }, agent: false };
    const isHttp = url.protocol === 'http:';
    await creds.apply(options);
    return { options, mod: isHttp ? http : https };
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
            if (status < 200 || status >= 300) return reject(httpError(method, url, status, text));
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
