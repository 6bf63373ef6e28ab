/**
 * Checkpoint backends: the SQLite file store (batched flush, reload, per-key isolation) and the
 * ConfigMap store (gzip buckets that split when too large, optimistic concurrency, reload).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
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

/** Incompressible text of `n` characters (base-36 digits of random bytes). */
function noise(n: number): string {
  let s = '';
  while (s.length < n) s += Math.random().toString(36).slice(2);
  return s.slice(0, n);
}

const here = (f: string) => pathToFileURL(join(import.meta.dirname, f)).href;

test('ConfigMap store: one object larger than a bucket is flushed (in a child process, so a spin fails the test instead of hanging it)', () => {
  // the bucket-doubling loop is synchronous: only a separate process with a timeout can catch it
  const code = `
    import { KubernetesCheckpointStore } from ${JSON.stringify(here('../../../src/sources/kubernetes/checkpoint/kubernetes.ts'))};
    import { FakeCluster } from ${JSON.stringify(here('fake-cluster.ts'))};
    const api = new FakeCluster();
    const s = new KubernetesCheckpointStore(api, { namespace: 'crb', name: 'cp', key: 'k1' });
    await s.load();
    let pad = '';
    while (pad.length < 1_100_000) pad += Math.random().toString(36).slice(2);
    const big = { metadata: { uid: 'big', name: 'big', namespace: 'a', resourceVersion: '7' }, spec: { pad } };
    s.put('big', big);
    s.put('small', { metadata: { uid: 'small', name: 'small', namespace: 'a', resourceVersion: '8' }, spec: {} });
    await s.flush();
    const loaded = await new KubernetesCheckpointStore(api, { namespace: 'crb', name: 'cp', key: 'k1' }).load();
    process.stdout.write(JSON.stringify([...loaded.entries].map(([u, o]) => [u, o.metadata.resourceVersion])));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { timeout: 20_000, encoding: 'utf8' });
  assert.equal(
    (r.error as NodeJS.ErrnoException | undefined)?.code,
    undefined,
    'the flush did not end within 20 s: it spins',
  );
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).sort(), [
    ['big', '7'],
    ['small', '8'],
  ]);
});
