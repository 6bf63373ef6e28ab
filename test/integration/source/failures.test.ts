/**
 * @serial: compacts etcd (every other watch would get a 410) and times a stalled stream.
 * The reflector against real failures of the real stack: a stalled stream (a TCP proxy that stops
 * forwarding without closing), a 410 Gone after etcd compaction (through a private kube-apiserver
 * with `--watch-cache=false` on the shared etcd), and a kube-apiserver killed and restarted mid-churn.
 * In every case the changes made meanwhile arrive exactly once and nothing is lost.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { StallProxy } from '../../support/proxy.ts';
import { waitFor } from '../../support/stack.ts';
import {
  adminApi,
  compactEtcd,
  createBackup,
  deleteBackup,
  env,
  freshNamespace,
  kubeconfigFor,
  listState,
  PrivateApiserver,
  pool,
  type RunningSource,
  retrying,
  startSource,
  updateBackup,
} from './helpers.ts';

const api = adminApi();
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

const summary = (s: RunningSource, from = 0) =>
  s.receiver.deltas.slice(from).map((d) => `${d.reason} ${d.kind} ${d.object.metadata.name}`);

function counter(s: RunningSource, name: string, labels: Record<string, string>): number {
  return s.metrics.counter(name, '').get({ component: 'it/source', ...labels });
}

describe('kubernetes source: failures on the real stack', () => {
  test('a stalled watch stream is detected and resumed; changes made meanwhile arrive exactly once', async () => {
    const ns = freshNamespace('it-stall');
    for (const n of ['b0', 'b1', 'b2']) await createBackup(api, ns, n);
    const port = Number(new URL(env.KUBE_APISERVER_URL).port);
    const proxy = new StallProxy('127.0.0.1', port);
    await proxy.listen();
    cleanups.push(() => proxy.close());
    const s = await startSource(
      { namespaces: [ns], stallTimeoutSeconds: 3 },
      { kubeconfig: kubeconfigFor(`https://127.0.0.1:${proxy.port}`) },
    );
    cleanups.push(s.stop);
    await waitFor(() => s.source.synced, 20_000, 'synced');
    assert.deepEqual(summary(s), ['resync added b0', 'resync added b1', 'resync added b2']);
    await waitFor(() => proxy.open > 0, 5000, 'watch connection through the proxy');
    await new Promise((r) => setTimeout(r, 300));
    const stalled = proxy.stall();
    assert.ok(stalled >= 1);
    await updateBackup(api, ns, 'b0', 'changed-db');
    await deleteBackup(api, ns, 'b1');
    await createBackup(api, ns, 'b3');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(s.receiver.deltas.length, 3, 'nothing passes the stalled stream');
    await waitFor(() => s.receiver.deltas.length >= 6, 20_000, 'changes after the stall');
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(summary(s, 3), ['live modified b0', 'live deleted b1', 'live added b3']);
    assert.ok(counter(s, 'crbridge_source_watch_restarts_total', { reason: 'stall' }) >= 1);
    assert.equal(counter(s, 'crbridge_source_relists_total', { reason: 'gone' }), 0);
    await s.stop();
  });

  test('410 Gone after etcd compaction: relist, and the changes made meanwhile arrive exactly once', async () => {
    const ns = freshNamespace('it-gone');
    for (const n of ['b0', 'b1', 'b2', 'b3']) await createBackup(api, ns, n);
    const apiserver = new PrivateApiserver(['--watch-cache=false']);
    cleanups.push(() => apiserver.kill());
    await apiserver.start();
    const proxy = new StallProxy('127.0.0.1', apiserver.port);
    await proxy.listen();
    cleanups.push(() => proxy.close());
    const s = await startSource(
      { namespaces: [ns], stallTimeoutSeconds: 4 },
      { kubeconfig: kubeconfigFor(`https://127.0.0.1:${proxy.port}`) },
    );
    cleanups.push(s.stop);
    await waitFor(() => s.source.synced, 30_000, 'synced');
    assert.equal(s.receiver.deltas.length, 4);
    await waitFor(() => proxy.open > 0, 5000, 'watch connection through the proxy');
    await new Promise((r) => setTimeout(r, 300));
    proxy.stall();
    await updateBackup(api, ns, 'b0', 'changed-db');
    await deleteBackup(api, ns, 'b1');
    await createBackup(api, ns, 'b4');
    await compactEtcd();
    await waitFor(() => s.receiver.deltas.length >= 7, 30_000, 'changes after the 410');
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(summary(s, 4), ['relist modified b0', 'relist added b4', 'relist deleted b1']);
    assert.equal(counter(s, 'crbridge_source_relists_total', { reason: 'gone' }), 1);
    // live again afterwards
    await updateBackup(api, ns, 'b4', 'again');
    await waitFor(() => s.receiver.deltas.length >= 8, 15_000, 'live after relist');
    assert.deepEqual(summary(s, 7), ['live modified b4']);
    await s.stop();
  });

  test('kube-apiserver killed and restarted mid-churn: nothing lost, nothing repeated', async () => {
    const ns = freshNamespace('it-restart');
    const names = Array.from({ length: 20 }, (_, i) => `b${i}`);
    await pool(names, 8, (n) => createBackup(api, ns, n));
    const apiserver = new PrivateApiserver();
    cleanups.push(() => apiserver.kill());
    await apiserver.start();
    const s = await startSource({ namespaces: [ns], stallTimeoutSeconds: 10 }, { kubeconfig: apiserver.kubeconfig });
    cleanups.push(s.stop);
    await waitFor(() => s.source.synced, 30_000, 'synced');
    // churn through the shared apiserver, while the source's apiserver dies and comes back
    let churning = true;
    let writes = 0;
    let created = 0;
    const churn = (async () => {
      for (let i = 0; churning; i++) {
        const n = names[i % names.length] as string;
        await retrying(async () => {
          if (i % 7 === 3) await createBackup(api, ns, `n${created++}`);
          else await updateBackup(api, ns, n, `db-${i}`);
        });
        writes++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    await apiserver.kill();
    await new Promise((r) => setTimeout(r, 2000));
    await apiserver.start();
    await new Promise((r) => setTimeout(r, 1500));
    churning = false;
    await churn;
    await deleteBackup(api, ns, 'b0');
    const truth = await listState(api, ns);
    await waitFor(
      () => {
        const st = s.receiver.state();
        return st.size === truth.size && [...truth].every(([u, rv]) => st.get(u) === rv);
      },
      60_000,
      'the source to reach the true state',
    );
    const seen = new Set<string>();
    const known = new Set<string>();
    for (const d of s.receiver.deltas) {
      const id = `${d.object.metadata.uid}@${d.object.metadata.resourceVersion}/${d.kind}`;
      assert.ok(!seen.has(id), `delivered twice: ${id}`);
      seen.add(id);
      const uid = d.object.metadata.uid;
      if (d.kind === 'added') assert.ok(!known.has(uid), `add for a known object ${d.object.metadata.name}`);
      if (d.kind === 'deleted') known.delete(uid);
      else known.add(uid);
    }
    assert.ok(writes > 20, `churn made ${writes} writes`);
    assert.ok(counter(s, 'crbridge_source_watch_restarts_total', { reason: 'error' }) >= 1);
    await s.stop();
  });
});
