/**
 * Helpers of the Kubernetes source's real-stack tests: Backup objects through the real API, a
 * recording receiver, kubeconfigs pointing elsewhere (a proxy, a private apiserver), a private
 * kube-apiserver on the shared etcd (for `--watch-cache=false` and restarts without disturbing the
 * shared one), and etcd compaction through etcd's JSON gateway.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { DeltaReceiver, SourceContext } from '../../../src/component.ts';
import type { Delta, KubeObject } from '../../../src/events/delta.ts';
import { type KubeApi, kubeApi, loadKubeConfig } from '../../../src/sources/kubernetes/client.ts';
import { KubernetesSource, type KubernetesSourceConfig } from '../../../src/sources/kubernetes/source.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { installBackupCrd, kubectl, loadStackEnv, type StackEnv, stackEnvFile, waitFor } from '../../support/stack.ts';

export const env: StackEnv = loadStackEnv();
export const group = 'example.com';
export const version = 'v1';
export const plural = 'backups';

export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
}

/** The Backup CRD is established and a fresh namespace exists. */
export function freshNamespace(prefix: string): string {
  installBackupCrd();
  const ns = uniqueName(prefix);
  kubectl(['create', 'namespace', ns]);
  return ns;
}

export function adminApi(kubeconfig = env.KUBECONFIG): KubeApi {
  return kubeApi(loadKubeConfig(kubeconfig));
}

const coll = (ns: string) => `/apis/${group}/${version}/namespaces/${ns}/${plural}`;

export async function createBackup(api: KubeApi, ns: string, name: string, db = `${name}-db`): Promise<KubeObject> {
  return (await api.request('POST', coll(ns), undefined, {
    apiVersion: `${group}/${version}`,
    kind: 'Backup',
    metadata: { name, namespace: ns },
    spec: { databaseName: db, schedule: '0 3 * * *' },
  })) as KubeObject;
}

export async function updateBackup(api: KubeApi, ns: string, name: string, db: string): Promise<KubeObject> {
  return (await api.request('PATCH', `${coll(ns)}/${name}`, undefined, { spec: { databaseName: db } })) as KubeObject;
}

export async function deleteBackup(api: KubeApi, ns: string, name: string): Promise<void> {
  await api.request('DELETE', `${coll(ns)}/${name}`);
}

/** uid → resourceVersion of every Backup in `ns`, straight from the API server. */
export async function listState(api: KubeApi, ns: string): Promise<Map<string, string>> {
  const list = (await api.request('GET', coll(ns))) as { items: KubeObject[] };
  return new Map(list.items.map((o) => [o.metadata.uid, o.metadata.resourceVersion]));
}

/** Runs `fn` over `items` with at most `n` in flight. */
export async function pool<T>(items: readonly T[], n: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) await fn(items[i++] as T);
    }),
  );
}

/** Retries `fn` while the API server is unreachable (restarts). */
export async function retrying<T>(fn: () => Promise<T>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Records deltas; every delta settles at once. */
export class Recorder implements DeltaReceiver {
  deltas: Delta[] = [];
  async push(delta: Delta) {
    this.deltas.push(delta);
    return { settled: Promise.resolve() };
  }
  /** The state a consumer rebuilds from the deltas: uid → resourceVersion. */
  state(initial = new Map<string, string>()): Map<string, string> {
    const s = new Map(initial);
    for (const d of this.deltas) {
      if (d.kind === 'deleted') s.delete(d.object.metadata.uid);
      else s.set(d.object.metadata.uid, d.object.metadata.resourceVersion);
    }
    return s;
  }
}

export interface RunningSource {
  source: KubernetesSource;
  receiver: Recorder;
  metrics: Metrics;
  stop(): Promise<void>;
}

/** Starts a source in this process against `kubeconfig` (default: the stack's admin). */
export async function startSource(
  config: Partial<KubernetesSourceConfig> & { namespaces: string[] },
  opts: { stateDir?: string; kubeconfig?: string } = {},
): Promise<RunningSource> {
  const receiver = new Recorder();
  const metrics = new Metrics();
  const ctx: SourceContext = {
    id: 'it/source',
    pipeline: 'it',
    logger: createLogger({ level: (process.env.CRBRIDGE_TEST_LOG as 'debug' | undefined) ?? 'error' }),
    metrics,
    stateDir: opts.stateDir ?? mkdtempSync(join(tmpdir(), 'crbridge-it-')),
    clusterName: 'it',
    receiver,
  };
  const source = new KubernetesSource(
    { group, version, resource: plural, backoffInitialMs: 200, backoffMaxMs: 2000, ...config },
    ctx,
    { kubeConfig: loadKubeConfig(opts.kubeconfig ?? env.KUBECONFIG) },
  );
  const ac = new AbortController();
  await source.start(ac.signal);
  return { source, receiver, metrics, stop: () => source.shutdown(Date.now() + 5000) };
}

/** A copy of the admin kubeconfig whose server is `server`. */
export function kubeconfigFor(server: string): string {
  const text = readFileSync(env.KUBECONFIG, 'utf8').replace(/server: .*/, `server: ${server}`);
  const file = join(mkdtempSync(join(tmpdir(), 'crbridge-kc-')), 'kubeconfig');
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/**
 * A second kube-apiserver on the shared etcd (the usual HA layout, invisible to other tests), with
 * extra flags (`--watch-cache=false`), that a test may stop and restart at will.
 */
export class PrivateApiserver {
  port = 0;
  kubeconfig = '';
  private child: ChildProcess | undefined;
  private readonly extra: string[];
  private readonly certDir = mkdtempSync(join(tmpdir(), 'crbridge-apiserver-'));
  constructor(extra: string[] = []) {
    this.extra = extra;
  }

  async start(): Promise<void> {
    if (!this.port) {
      this.port = await freePort();
      this.kubeconfig = kubeconfigFor(`https://127.0.0.1:${this.port}`);
    }
    // the stack's own PKI: `.stack/pki`, or `$CRBRIDGE_STACK_DIR/pki` for a private stack
    const pki = join(dirname(stackEnvFile), 'pki');
    const etcd = env.ETCD_ENDPOINTS;
    this.child = spawn(
      join(env.CRBRIDGE_STACK_BIN, 'kube-apiserver'),
      [
        `--etcd-servers=${etcd}`,
        `--cert-dir=${this.certDir}`,
        `--tls-cert-file=${join(pki, 'apiserver.crt')}`,
        `--tls-private-key-file=${join(pki, 'apiserver.key')}`,
        `--secure-port=${this.port}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        '--service-cluster-ip-range=10.0.0.0/24',
        '--authorization-mode=Node,RBAC',
        `--token-auth-file=${join(pki, 'tokens.csv')}`,
        '--disable-admission-plugins=ServiceAccount',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${join(pki, 'sa.pub')}`,
        `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
        '--etcd-compaction-interval=0',
        '--enable-priority-and-fairness=false',
        '--profiling=false',
        ...this.extra,
      ],
      { stdio: 'ignore' },
    );
    const child = this.child;
    process.once('exit', () => child.kill('SIGKILL'));
    const api = adminApi(this.kubeconfig);
    await waitFor(
      async () => (await api.request('GET', `/apis/${group}/${version}`)) !== undefined,
      90_000,
      'private kube-apiserver ready and serving backups',
      300,
    );
  }

  /** Kills the process (SIGKILL) and waits for it to exit. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
  }
}

/** Compacts etcd at its current revision (every older watch resourceVersion becomes 410 Gone). */
export async function compactEtcd(): Promise<number> {
  const base = env.ETCD_ENDPOINTS.split(',')[0] as string;
  const r = await fetch(`${base}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key: Buffer.from('/registry/health').toString('base64') }),
  });
  const rev = Number(((await r.json()) as { header: { revision: string } }).header.revision);
  const c = await fetch(`${base}/v3/kv/compaction`, {
    method: 'POST',
    body: JSON.stringify({ revision: String(rev), physical: true }),
  });
  if (!c.ok) throw new Error(`etcd compaction failed: HTTP ${c.status} ${await c.text()}`);
  return rev;
}
