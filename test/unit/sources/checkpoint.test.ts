/**
 * Checkpoint backends: the SQLite file store (batched flush, reload, per-key isolation) and the
 * ConfigMap store (gzip buckets that split when too large, optimistic concurrency, reload).
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CrbridgeError } from '../../../src/errors.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { FileCheckpointStore } from '../../../src/sources/kubernetes/checkpoint/file.ts';
import { KubernetesCheckpointStore } from '../../../src/sources/kubernetes/checkpoint/kubernetes.ts';
import { FakeCluster } from './fake-cluster.ts';

const obj = (uid: string, rv: number, pad = ''): KubeObject => ({
  metadata: { uid, name: uid, namespace: 'a', resourceVersion: String(rv) },
  spec: { pad },
});

test('file store: staged changes are written by flush, reloaded, and isolated per source key', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'crbridge-cp-'));
  const a = new FileCheckpointStore(dir, 'key-a');
  const b = new FileCheckpointStore(dir, 'key-b');
  assert.deepEqual(await a.load(), { initialized: false, entries: new Map() });
  a.put('u1', obj('u1', 1));
  a.put('u2', obj('u2', 2));
  b.put('u9', obj('u9', 9));
  assert.equal(a.pending, 2);
  assert.equal((await new FileCheckpointStore(dir, 'key-a').load()).entries.size, 0, 'nothing written before flush');
  await a.flush();
  await b.flush();
  a.put('u1', obj('u1', 5));
  a.remove('u2');
  a.markInitialized();
  await a.flush();
  await a.close();
  await b.close();
  const again = await new FileCheckpointStore(dir, 'key-a').load();
  assert.equal(again.initialized, true);
  assert.deepEqual([...again.entries.keys()], ['u1']);
  assert.equal(again.entries.get('u1')?.metadata.resourceVersion, '5');
  const other = await new FileCheckpointStore(dir, 'key-b').load();
  assert.deepEqual([...other.entries.keys()], ['u9']);
  assert.equal(other.initialized, false);
});

test('ConfigMap store: buckets split under the size limit, only changed buckets are rewritten, reload is exact', async () => {
  const api = new FakeCluster();
  const opts = { namespace: 'crb', name: 'cp', key: 'k1', maxBucketBytes: 4000 };
  const s = new KubernetesCheckpointStore(api, opts);
  assert.equal((await s.load()).entries.size, 0);
  // incompressible padding so that the data really needs several buckets
  const pad = (i: number) =>
    Array.from({ length: 40 }, (_, j) => ((i * 7919 + j * 104729) % 65536).toString(36)).join('');
  for (let i = 0; i < 60; i++) s.put(`uid-${i}`, obj(`uid-${i}`, i, pad(i)));
  s.markInitialized();
  await s.flush();
  const names = [...api.configMaps.keys()].sort();
  assert.ok(names.length > 3, `expected several buckets, got ${names.join(',')}`);
  for (const cm of api.configMaps.values()) {
    const b = (cm as { binaryData?: Record<string, string> }).binaryData?.['entries.json.gz'];
    if (b) assert.ok(b.length <= 4000);
  }
  const versions = new Map(
    [...api.configMaps].map(([n, cm]) => [
      n,
      (cm as { metadata: { resourceVersion: string } }).metadata.resourceVersion,
    ]),
  );
  s.put('uid-3', obj('uid-3', 1000, pad(3)));
  s.remove('uid-4');
  await s.flush();
  const changed = [...api.configMaps].filter(
    ([n, cm]) => versions.get(n) !== (cm as { metadata: { resourceVersion: string } }).metadata.resourceVersion,
  );
  assert.ok(changed.length >= 1 && changed.length <= 2, `rewrote ${changed.length} ConfigMaps`);
  const loaded = await new KubernetesCheckpointStore(api, opts).load();
  assert.equal(loaded.initialized, true);
  assert.equal(loaded.entries.size, 59);
  assert.equal(loaded.entries.get('uid-3')?.metadata.resourceVersion, '1000');
  assert.equal(loaded.entries.has('uid-4'), false);
  // another key gets its own ConfigMaps
  assert.equal((await new KubernetesCheckpointStore(api, { ...opts, key: 'k2' }).load()).entries.size, 0);
});

test('ConfigMap store: a concurrent writer is detected (409) and the staged change is kept for the next flush', async () => {
  const api = new FakeCluster();
  const opts = { namespace: 'crb', name: 'cp', key: 'k1' };
  const s = new KubernetesCheckpointStore(api, opts);
  await s.load();
  s.put('u1', obj('u1', 1));
  await s.flush();
  const other = new KubernetesCheckpointStore(api, opts);
  await other.load();
  other.put('u2', obj('u2', 2));
  await other.flush();
  s.put('u3', obj('u3', 3));
  await assert.rejects(s.flush(), (e: unknown) => e instanceof CrbridgeError && e.code === 'CRB_CHECKPOINT');
  assert.equal(s.pending, 1);
  await s.flush(); // re-read the version; last writer wins after the conflict was reported
  const loaded = await new KubernetesCheckpointStore(api, opts).load();
  assert.deepEqual([...loaded.entries.keys()].sort(), ['u1', 'u3']);
});
