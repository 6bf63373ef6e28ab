/**
 * A small, fast client for the stack's kube-apiserver used by the benchmarks: keep-alive HTTPS with
 * the admin token and CA from the kubeconfig, bounded parallelism, and helpers for the bench-only
 * Backup CRD (`backups.bench.example.com/v1`) padded to a target size. `kubectl` per object is far
 * too slow for 10,000+ objects.
 */

import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { kubectl, loadStackEnv, repoRoot } from '../../test/support/stack.ts';

export const BENCH_GROUP = 'bench.example.com';
export const BENCH_CRD = join(repoRoot, 'bench', 'fixtures', 'backup-bench-crd.yaml');

export interface KubeResponse {
  status: number;
  body: string;
  /** performance.now() when the last byte of the response arrived (the write's acknowledgement). */
  ackAt: number;
}

export interface Kube {
  server: string;
  req(method: string, path: string, body?: unknown, contentType?: string, timeoutMs?: number): Promise<KubeResponse>;
  /** Opens a streaming GET (a WATCH) and calls `onLine(line, at)` per newline-delimited line; resolves once the headers arrived. */
  stream(path: string, onLine: (line: string, at: number) => void, onEnd?: () => void): Promise<{ close: () => void }>;
  close(): void;
}

interface KubeconfigDoc {
  clusters: { cluster: { server: string; 'certificate-authority-data': string } }[];
  users: { user: { token: string } }[];
}

/** Opens a keep-alive client with at most `maxSockets` parallel connections. */
export function kubeClient(maxSockets = 16): Kube {
  const env = loadStackEnv();
  const doc = parseYaml(readFileSync(env.KUBECONFIG, 'utf8')) as KubeconfigDoc;
  const cluster = doc.clusters[0]?.cluster;
  const token = doc.users[0]?.user.token;
  if (!cluster || !token) throw new Error(`cannot read server/token from ${env.KUBECONFIG}`);
  const ca = Buffer.from(cluster['certificate-authority-data'], 'base64');
  const agent = new Agent({ keepAlive: true, maxSockets, ca });
  const url = new URL(cluster.server);
  return {
    server: cluster.server,
    req(method, path, body, contentType = 'application/json', timeoutMs = 60_000) {
      const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      return new Promise((resolve, reject) => {
        const r = request(
          {
            agent,
            host: url.hostname,
            port: url.port,
            method,
            path,
            headers: {
              authorization: `Bearer ${token}`,
              accept: 'application/json',
              ...(payload !== undefined && {
                'content-type': contentType,
                'content-length': Buffer.byteLength(payload),
              }),
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                body: Buffer.concat(chunks).toString('utf8'),
                ackAt: performance.now(),
              }),
            );
            res.on('error', reject);
          },
        );
        r.on('error', reject);
        r.setTimeout(timeoutMs, () => r.destroy(new Error(`${method} ${path} timed out`)));
        if (payload !== undefined) r.write(payload);
        r.end();
      });
    },
    stream(path, onLine, onEnd) {
      return new Promise((resolve, reject) => {
        const r = request(
          {
            agent,
            host: url.hostname,
            port: url.port,
            method: 'GET',
            path,
            headers: { authorization: `Bearer ${token}` },
          },
          (res) => {
            if (res.statusCode !== 200) {
              reject(new Error(`GET ${path}: HTTP ${res.statusCode}`));
              res.resume();
              return;
            }
            let buf = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => {
              const at = performance.now();
              buf += d;
              let i = buf.indexOf('\n');
              while (i >= 0) {
                onLine(buf.slice(0, i), at);
                buf = buf.slice(i + 1);
                i = buf.indexOf('\n');
              }
            });
            let closed = false;
            res.on('error', () => undefined);
            res.on('close', () => {
              if (!closed) onEnd?.();
            });
            resolve({
              close: () => {
                closed = true;
                r.destroy();
              },
            });
          },
        );
        r.on('error', (e) => reject(e));
        r.end();
      });
    },
    close: () => agent.destroy(),
  };
}

/** Throws unless the response status is 2xx. */
export function ok(r: KubeResponse, what: string): KubeResponse {
  if (r.status < 200 || r.status >= 300) throw new Error(`${what}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  return r;
}

/** Installs the bench CRD (idempotent) and waits until it is served. */
export function ensureBenchCrd(): void {
  kubectl(['apply', '-f', BENCH_CRD]);
  kubectl(['wait', '--for=condition=Established', '--timeout=60s', `crd/backups.${BENCH_GROUP}`]);
}

/** A unique, DNS-safe suffix for namespaces and topics of one run. */
export function runId(): string {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
}

export async function createNamespace(kube: Kube, name: string): Promise<void> {
  const r = await kube.req('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  if (r.status !== 409) ok(r, `create namespace ${name}`);
}

export const backupsPath = (ns: string, name?: string) =>
  `/apis/${BENCH_GROUP}/v1/namespaces/${ns}/backups${name ? `/${name}` : ''}`;

/** A deterministic filler of `n` characters (letters and digits, compressible like real specs). */
function filler(n: number, seed: number): string {
  const base = `abcdefghijklmnopqrstuvwxyz0123456789-${seed}-`;
  return base.repeat(Math.ceil(n / base.length)).slice(0, n);
}

/**
 * A Backup whose JSON (as the apiserver stores it, with server-set metadata) is about `bytes`
 * long: realistic spec fields plus `spec.targets`, a list of padded entries.
 */
export function backupObject(ns: string, name: string, bytes: number, rev = 0): Record<string, unknown> {
  // ~550 bytes of server metadata (uid, resourceVersion, managedFields for one manager) + ~200 of fixed spec.
  const pad = Math.max(0, bytes - 750);
  const entries = Math.max(1, Math.round(pad / 200));
  const targets = Array.from({ length: entries }, (_, i) => ({
    name: `target-${i}`,
    bucket: `s3://backups-${ns}/${name}/${i}`,
    note: filler(Math.max(8, Math.floor(pad / entries) - 90), i),
  }));
  return {
    apiVersion: `${BENCH_GROUP}/v1`,
    kind: 'Backup',
    metadata: { name, namespace: ns, labels: { app: 'crbridge-bench', tier: 'db' } },
    spec: {
      databaseName: `db-${name}`,
      schedule: '0 3 * * *',
      retentionDays: 7,
      revision: rev,
      targets,
    },
    status: { phase: 'Pending' },
  };
}

/**
 * Runs `fn(i)` for i in [0, n) with at most `concurrency` in flight; resolves when all are done.
 * Rejects on the first failure.
 */
export async function parallel(n: number, concurrency: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

/** Creates `count` Backups named `${prefix}-${i}` for i in [from, from+count). Returns the time taken (ms). */
export async function createBackups(
  kube: Kube,
  ns: string,
  prefix: string,
  from: number,
  count: number,
  bytes: number,
  concurrency = 8,
): Promise<number> {
  const t0 = performance.now();
  await parallel(count, concurrency, async (i) => {
    const name = `${prefix}-${from + i}`;
    const r = await kube.req('POST', backupsPath(ns), backupObject(ns, name, bytes));
    if (r.status !== 409) ok(r, `create ${ns}/${name}`);
  });
  return performance.now() - t0;
}

/**
 * Deletes every bench Backup in `ns` with deletecollection calls until none is left or `timeoutMs`
 * passed (namespaces can't be removed: the stack has no controller-manager). Returns what is left.
 */
export async function deleteAllBackups(kube: Kube, ns: string, timeoutMs = 180_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await kube
      .req('DELETE', backupsPath(ns), undefined, undefined, Math.max(1000, end - Date.now()))
      .catch(() => undefined);
    const r = await kube.req('GET', `${backupsPath(ns)}?limit=1`).catch(() => undefined);
    if (r?.status !== 200) return -1;
    const list = JSON.parse(r.body) as { items: unknown[]; metadata: { remainingItemCount?: number } };
    const left = list.items.length + (list.metadata.remainingItemCount ?? 0);
    if (left === 0 || Date.now() >= end) return left;
  }
}

/** The apiserver's own `/metrics` text. */
export async function apiserverMetrics(kube: Kube): Promise<string> {
  return ok(await kube.req('GET', '/metrics'), 'GET /metrics').body;
}
