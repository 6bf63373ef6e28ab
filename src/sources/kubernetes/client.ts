/**
 * Kubernetes access for the source: loading credentials (explicit path, `KUBECONFIG`, in-cluster
 * service account, `~/.kube/config`), plain GET requests (LIST pages, discovery, ConfigMaps) and
 * WATCH streams. @kubernetes/client-node supplies config, auth and its `Watch`; the list/watch
 * loop itself lives in `reflector.ts`. Everything the reflector needs is behind {@link KubeApi}
 * so unit tests can use a fake API server.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';

const SA_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Loads credentials: `path` if given, else the first existing file of `KUBECONFIG`, else the
 * in-cluster service account when running in a pod, else `~/.kube/config`. Throws
 * `CrbridgeError(KubeAuth)` naming what was tried when none works.
 */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  const tried: string[] = [];
  const fromFile = (file: string, why: string): KubeConfig => {
    try {
      kc.loadFromFile(file);
    } catch (err) {
      throw new CrbridgeError(ErrorCode.KubeAuth, `cannot load kubeconfig ${file} (${why}): ${errorMessage(err)}`, {
        file,
      });
    }
    if (!kc.getCurrentCluster()) {
      throw new CrbridgeError(ErrorCode.KubeAuth, `kubeconfig ${file} (${why}) has no current context/cluster`, {
        file,
      });
    }
    return kc;
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
      kc.loadFromCluster();
      return kc;
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
   * parsed JSON; non-2xx throws KubeHttpError.
   */
  request(
    method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
    path: string,
    query?: Query,
    body?: unknown,
  ): Promise<unknown>;
  /**
   * Opens a WATCH (`watch=true` is added). `onEvent` gets each event in stream order (including
   * BOOKMARK and ERROR); `onDone` is called once when the stream ends (`null` on a clean close).
   */
  watch(
    path: string,
    query: Query,
    onEvent: (type: string, object: unknown) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle>;
}

function withQuery(server: string, path: string, query: Query = {}): URL {
  const url = new URL(server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  return url;
}

/** The real API, on top of a loaded KubeConfig. */
export function kubeApi(
  kc: KubeConfig,
  opts: { requestTimeoutMs?: number; watchIdleTimeoutMs?: number } = {},
): KubeApi {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new CrbridgeError(ErrorCode.KubeAuth, 'kubeconfig has no current cluster');
  const server = cluster.server;
  const timeoutMs = opts.requestTimeoutMs ?? 60_000;
  return {
    async request(method, path, query, body) {
      const url = withQuery(server, path, query);
      const options: https.RequestOptions = { method, headers: { accept: 'application/json' } };
      await kc.applyToHTTPSOptions(options);
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      if (payload) {
        options.headers = {
          ...options.headers,
          'content-type': method === 'PATCH' ? 'application/merge-patch+json' : 'application/json',
          'content-length': payload.length,
        };
      }
      const mod = url.protocol === 'http:' ? http : https;
      return await new Promise<unknown>((resolve, reject) => {
        const req = mod.request(url, options, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = undefined;
            }
            if (status >= 200 && status < 300) return resolve(json);
            const st = (json ?? {}) as { reason?: string; message?: string };
            reject(
              new KubeHttpError(
                status,
                st.reason ?? '',
                `${method} ${url.pathname}: HTTP ${status}${st.message ? `: ${st.message}` : ''}`,
              ),
            );
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
    async watch(path, query, onEvent, onDone) {
      const w = new Watch(kc);
      // client-node's own idle timer (30 s) would cut healthy quiet streams; our watchdog owns stalls.
      (w as unknown as { requestTimeoutMs: number }).requestTimeoutMs = opts.watchIdleTimeoutMs ?? 3_600_000;
      const params: Record<string, string | number | boolean | undefined> = {};
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params[k] = v;
      const ctl = await w.watch(path, params, (type, obj) => onEvent(type, obj), onDone);
      return { abort: () => ctl.abort() };
    },
  };
}
