/**
 * Kubernetes credentials, loaded as kubectl loads them: an explicit `--kubeconfig` path (that file
 * only), else every file of `KUBECONFIG` merged (first file wins for each named cluster, user and
 * context and for `current-context`; later files only add missing entries), else the in-cluster
 * service account (always HTTPS, its CA required, its token re-read as it rotates), else
 * `~/.kube/config`. The transport (`client.ts`) asks the loaded {@link KubeCredentials} for TLS
 * material and headers before each request.
 *
 * Memory: `@kubernetes/client-node` is not imported for the common credential kinds (client
 * certificates, bearer tokens and token files, basic auth, the in-cluster service account): its
 * entry point loads the whole generated API and undici, ~80 MB of RSS for a process that needs a
 * few headers and TLS options. Only a user with an `exec` plugin or an `auth-provider` (or a cluster
 * whose `proxy-url` is a SOCKS proxy, which Node's agents cannot tunnel through) loads it, lazily,
 * on the first request, and lets its KubeConfig apply the credentials. HTTP(S) proxies — a
 * cluster's `proxy-url` or the proxy environment — are the transport's business.
 */
import { existsSync, readFileSync } from 'node:fs';
import type https from 'node:https';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join, sep } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';

/** Where a pod's service account is mounted. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** Token, certificate and key files are re-read at most this often (rotated service-account tokens). */
export const FILE_REFRESH_MS = 60_000;

/**
 * Loaded credentials for one API server: where requests go and how they authenticate. `apply` may
 * be called concurrently and for every request; it is cheap (files are cached, see `refresh`).
 */
export interface KubeCredentials {
  /** API server URL without a trailing slash. */
  readonly server: string;
  /** Where the credentials came from (logs, errors). */
  readonly origin: string;
  /**
   * The cluster's `proxy-url` (http or https), used for every request to it regardless of the proxy
   * environment; undefined: the proxy environment applies (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`).
   */
  readonly proxyUrl?: string;
  /** Adds TLS material and authentication headers (refreshing tokens when due) to request options. */
  apply(options: https.RequestOptions): Promise<void>;
  /** Forgets cached token, certificate and key files: the next `apply` reads them again (after a 401). */
  refresh?(): void;
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
  exec?: { command?: string; [k: string]: unknown };
  'auth-provider'?: unknown;
}

interface KubeconfigContext {
  cluster?: string;
  user?: string;
}

interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name?: string; context?: KubeconfigContext }[];
  clusters?: { name?: string; cluster?: KubeconfigCluster }[];
  users?: { name?: string; user?: KubeconfigUser }[];
}

/** A file read again once `FILE_REFRESH_MS` passed since the last read, or after `invalidate`. */
interface RefreshingFile {
  (): Buffer;
  invalidate(): void;
}

function refreshingFile(path: string): RefreshingFile {
  let data: Buffer | undefined;
  let readAt = 0;
  const read = (() => {
    const now = Date.now();
    if (!data || now - readAt >= FILE_REFRESH_MS) {
      data = readFileSync(path);
      readAt = now;
    }
    return data;
  }) as RefreshingFile;
  read.invalidate = () => {
    data = undefined;
  };
  return read;
}

/** `file` (absolute; re-read when due) or base64 `data`, whichever is given. */
function material(file: string | undefined, data: string | undefined, files: RefreshingFile[]) {
  if (file) {
    const f = refreshingFile(file);
    files.push(f);
    return f;
  }
  if (data) {
    const b = Buffer.from(data, 'base64');
    return () => b;
  }
  return undefined;
}

interface Parts {
  server: string;
  origin: string;
  proxyUrl?: string;
  ca?: () => Buffer;
  cert?: () => Buffer;
  key?: () => Buffer;
  token?: () => string;
  basic?: string;
  impersonate?: string;
  insecure?: boolean;
  servername?: string;
  files: RefreshingFile[];
}

function credentials(p: Parts): KubeCredentials {
  return {
    server: p.server,
    origin: p.origin,
    ...(p.proxyUrl && { proxyUrl: p.proxyUrl }),
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
    refresh() {
      for (const f of p.files) f.invalidate();
    },
  };
}

/**
 * Credentials that client-node's KubeConfig applies (exec plugins, auth providers, SOCKS proxies):
 * the package is imported on the first request only. `doc` is a self-contained kubeconfig (one
 * context, absolute paths).
 */
function viaClientNode(doc: Kubeconfig, server: string, origin: string, proxyUrl?: string): KubeCredentials {
  let kc: Promise<{ applyToHTTPSOptions(o: https.RequestOptions): Promise<void> }> | undefined;
  return {
    server,
    origin,
    ...(proxyUrl && { proxyUrl }),
    async apply(o) {
      kc ??= import('@kubernetes/client-node').then((m) => {
        const k = new m.KubeConfig();
        k.loadFromString(JSON.stringify(doc));
        return k;
      });
      await (await kc).applyToHTTPSOptions(o);
    },
  };
}

/** `p` resolved against `root` when relative (as kubectl resolves paths against their file's directory). */
function resolvePath(root: string, p: string | undefined): string | undefined {
  return p && !isAbsolute(p) ? join(root, p) : p;
}

/** Reads one kubeconfig file with its relative paths made absolute. Throws a plain Error saying what is wrong. */
function readKubeconfig(file: string): Kubeconfig {
  const doc = (parseYaml(readFileSync(file, 'utf8')) ?? {}) as Kubeconfig;
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error('not a kubeconfig (no mapping at the top level)');
  const root = dirname(file);
  for (const c of doc.clusters ?? []) {
    const cl = c?.cluster;
    if (cl?.['certificate-authority'])
      cl['certificate-authority'] = resolvePath(root, cl['certificate-authority']) as string;
  }
  for (const u of doc.users ?? []) {
    const us = u?.user;
    if (!us) continue;
    for (const k of ['client-certificate', 'client-key', 'tokenFile', 'token-file'] as const)
      if (us[k]) us[k] = resolvePath(root, us[k]) as string;
    // like kubectl: an exec command naming a path (not a bare name looked up in PATH) is relative to the file
    if (typeof us.exec?.command === 'string' && us.exec.command.includes(sep))
      us.exec.command = resolvePath(root, us.exec.command) as string;
  }
  return doc;
}

/** kubectl's merge: the first file to name a cluster, user or context, or to set `current-context`, wins. */
function mergeKubeconfigs(docs: Kubeconfig[]): Kubeconfig {
  const out: Required<Kubeconfig> = { 'current-context': '', contexts: [], clusters: [], users: [] };
  for (const doc of docs) {
    out['current-context'] ||= doc['current-context'] ?? '';
    for (const key of ['contexts', 'clusters', 'users'] as const) {
      const have = new Set(out[key].map((e) => e.name));
      for (const e of (doc[key] ?? []) as { name?: string }[]) {
        if (!e || typeof e.name !== 'string' || have.has(e.name)) continue;
        have.add(e.name);
        (out[key] as { name?: string }[]).push(e);
      }
    }
  }
  return out;
}

/** The credentials of a (merged) kubeconfig's current context. Throws a plain Error saying what is wrong. */
function credentialsOf(doc: Kubeconfig, origin: string): KubeCredentials {
  const ctxName = doc['current-context'];
  if (!ctxName) throw new Error('has no current context/cluster');
  const ctx = doc.contexts?.find((c) => c?.name === ctxName)?.context;
  if (!ctx) throw new Error(`has no context named ${JSON.stringify(ctxName)} (current-context)`);
  const cluster = doc.clusters?.find((c) => c?.name === ctx.cluster)?.cluster;
  if (!cluster?.server) throw new Error(`has no current context/cluster (cluster ${JSON.stringify(ctx.cluster)})`);
  const server = cluster.server.replace(/\/+$/, '');
  const user: KubeconfigUser = doc.users?.find((u) => u?.name === ctx.user)?.user ?? {};
  const proxy = cluster['proxy-url'] || undefined;
  if (proxy && !/^https?:\/\//i.test(proxy) && !/^socks/i.test(proxy))
    throw new Error(
      `cluster ${JSON.stringify(ctx.cluster)}: proxy-url ${JSON.stringify(proxy)} is not an http(s) or socks URL`,
    );
  const socks = proxy !== undefined && /^socks/i.test(proxy);
  if (user.exec || user['auth-provider'] || socks) {
    const { 'proxy-url': _, ...rest } = cluster;
    const one: Kubeconfig = {
      'current-context': ctxName,
      contexts: [{ name: ctxName, context: ctx }],
      clusters: [{ name: ctx.cluster, cluster: socks ? cluster : rest }],
      users: ctx.user ? [{ name: ctx.user, user }] : [],
    };
    return viaClientNode(one, server, origin, socks ? undefined : proxy);
  }
  const files: RefreshingFile[] = [];
  const tokenFile = user.tokenFile ?? user['token-file'];
  const tf = tokenFile ? refreshingFile(tokenFile) : undefined;
  if (tf) files.push(tf);
  return credentials({
    server,
    origin,
    proxyUrl: proxy,
    ca: material(cluster['certificate-authority'], cluster['certificate-authority-data'], files),
    cert: material(user['client-certificate'], user['client-certificate-data'], files),
    key: material(user['client-key'], user['client-key-data'], files),
    token: user.token ? () => user.token as string : tf ? () => tf().toString('utf8').trim() : undefined,
    basic: user.username ? `${user.username}:${user.password ?? ''}` : undefined,
    impersonate: user.as,
    insecure: cluster['insecure-skip-tls-verify'] === true,
    servername: cluster['tls-server-name'],
    files,
  });
}

/** Parses a kubeconfig file's current context. Throws a plain Error saying what is wrong. */
export function parseKubeconfig(file: string): KubeCredentials {
  return credentialsOf(readKubeconfig(file), file);
}

/**
 * The pod's service account: `https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT` (HTTPS
 * whatever the port: the token is never sent in clear), verified with the service account's CA
 * (a missing CA file is an error, not a fallback to the public roots), its token re-read at least
 * every {@link FILE_REFRESH_MS} and after a 401 (kubelet rotates projected tokens). Throws
 * `CrbridgeError(KubeAuth)` naming the file that is missing or unreadable.
 */
export function inClusterCredentials(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): KubeCredentials {
  const host = env.KUBERNETES_SERVICE_HOST;
  if (!host) throw new CrbridgeError(ErrorCode.KubeAuth, 'in-cluster credentials: KUBERNETES_SERVICE_HOST is not set');
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  const tokenPath = join(dir, 'token');
  const caPath = join(dir, 'ca.crt');
  if (!existsSync(caPath))
    throw new CrbridgeError(
      ErrorCode.KubeAuth,
      `in-cluster credentials: the service-account CA file ${caPath} is missing; mount the service account ` +
        `(automountServiceAccountToken, or a projected volume with the kube-root-ca.crt ConfigMap) or pass --kubeconfig`,
      { file: caPath },
    );
  const token = refreshingFile(tokenPath);
  const ca = refreshingFile(caPath);
  for (const [f, path] of [
    [token, tokenPath],
    [ca, caPath],
  ] as const) {
    try {
      f(); // unreadable fails here, at start-up, not on the first request
    } catch (err) {
      throw new CrbridgeError(ErrorCode.KubeAuth, `in-cluster credentials: cannot read ${path}: ${errorMessage(err)}`, {
        file: path,
      });
    }
  }
  return credentials({
    server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`,
    origin: 'in-cluster service account',
    ca,
    token: () => token().toString('utf8').trim(),
    files: [token, ca],
  });
}

/** Where {@link loadKubeConfig} looks, for tests: defaults are the real environment and mount. */
export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  serviceAccountDir?: string;
}

/**
 * Loads credentials: `path` if given (that file only), else every existing file of `KUBECONFIG`
 * merged, else the in-cluster service account when running in a pod, else `~/.kube/config`.
 * Throws `CrbridgeError(KubeAuth)` naming the file (or what was tried) when none works.
 */
export function loadKubeConfig(path?: string, opts: LoadOptions = {}): KubeCredentials {
  const env = opts.env ?? process.env;
  const saDir = opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const tried: string[] = [];
  const failed = (file: string, why: string, err: unknown) =>
    new CrbridgeError(ErrorCode.KubeAuth, `cannot load kubeconfig ${file} (${why}): ${errorMessage(err)}`, { file });
  const fromFile = (file: string, why: string): KubeCredentials => {
    try {
      return parseKubeconfig(file);
    } catch (err) {
      throw failed(file, why, err);
    }
  };
  if (path) return fromFile(path, 'explicit path');
  if (env.KUBECONFIG) {
    const files: string[] = [];
    for (const f of env.KUBECONFIG.split(delimiter).filter(Boolean)) {
      if (files.includes(f)) continue;
      if (existsSync(f)) files.push(f);
      else tried.push(f);
    }
    if (files.length > 0) {
      const docs = files.map((f) => {
        try {
          return readKubeconfig(f);
        } catch (err) {
          throw failed(f, 'KUBECONFIG', err);
        }
      });
      const origin = files.join(delimiter);
      try {
        return credentialsOf(mergeKubeconfigs(docs), origin);
      } catch (err) {
        throw failed(origin, files.length > 1 ? 'KUBECONFIG, merged' : 'KUBECONFIG', err);
      }
    }
  }
  if (env.KUBERNETES_SERVICE_HOST && existsSync(join(saDir, 'token'))) {
    try {
      return inClusterCredentials(env, saDir);
    } catch (err) {
      if (err instanceof CrbridgeError) throw err;
      throw new CrbridgeError(ErrorCode.KubeAuth, `cannot load in-cluster credentials: ${errorMessage(err)}`);
    }
  }
  tried.push('in-cluster service account (not in a pod)');
  const home = join(env.HOME || homedir(), '.kube', 'config');
  if (existsSync(home)) return fromFile(home, '~/.kube/config');
  tried.push(home);
  throw new CrbridgeError(
    ErrorCode.KubeAuth,
    `no Kubernetes credentials found (tried ${tried.join(', ')}); pass --kubeconfig or set KUBECONFIG`,
    { tried },
  );
}
