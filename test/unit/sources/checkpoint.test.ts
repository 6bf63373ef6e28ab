/**
 * Checkpoint backends: the SQLite file store (batched flush, reload, per-key isolation) and the
 * ConfigMap store (gzip buckets that split when too large, optimistic concurrency, reload, the
 * bucket-count bound, growth interrupted midway); for both: an object larger than the per-entry
 * bound stored reduced and resumed, nothing persisted unredacted; and the shared staging and
 * flush protocol of `base.ts`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { CrbridgeError } from '../../../src/errors.ts';
import { type KubeObject, STORED } from '../../../src/events/delta.ts';
import { REDACTED } from '../../../src/events/redact.ts';
import {
  type Batch,
  DEFAULT_MAX_ENTRY_BYTES,
  PARTIAL_KEY,
  StagedCheckpointStore,
} from '../../../src/sources/kubernetes/checkpoint/base.ts';
import { FileCheckpointStore } from '../../../src/sources/kubernetes/checkpoint/file.ts';
import { KubernetesCheckpointStore } from '../../../src/sources/kubernetes/checkpoint/kubernetes.ts';
import type { CheckpointState, CheckpointStore } from '../../../src/sources/kubernetes/checkpoint/types.ts';
import type { Query } from '../../../src/sources/kubernetes/client.ts';
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

/** A FakeCluster that records the text of every ConfigMap payload it was sent (gunzipped). */
class RecordingCluster extends FakeCluster {
  sent: string[] = [];
  override async request(method: string, path: string, query: Query = {}, body?: unknown): Promise<unknown> {
    if (body && path.includes('/configmaps')) {
      const cm = body as { data?: Record<string, string>; binaryData?: Record<string, string> };
      for (const v of Object.values(cm.data ?? {})) this.sent.push(v);
      for (const v of Object.values(cm.binaryData ?? {}))
        this.sent.push(gunzipSync(Buffer.from(v, 'base64')).toString());
    }
    return super.request(method, path, query, body);
  }
}

interface Backend {
  name: string;
  make(o?: { redact?: string[]; maxEntryBytes?: number }): CheckpointStore;
  /** Everything persisted so far, as text (the SQLite files' bytes / every ConfigMap payload sent). */
  persisted(): string;
  /** Bytes persisted for the entries. */
  size(): number;
}

function backends(): Backend[] {
  const dir = mkdtempSync(join(tmpdir(), 'crbridge-cp-'));
  const api = new RecordingCluster();
  const files = () => readdirSync(dir).filter((f) => f.startsWith('checkpoints.sqlite'));
  return [
    {
      name: 'file',
      make: (o) => new FileCheckpointStore(dir, 'k1', o),
      persisted: () =>
        files()
          .map((f) => readFileSync(join(dir, f), 'latin1'))
          .join('\n'),
      size: () => files().reduce((n, f) => n + readFileSync(join(dir, f)).length, 0),
    },
    {
      name: 'ConfigMap',
      make: (o) => new KubernetesCheckpointStore(api, { namespace: 'crb', name: 'cp', key: 'k1', ...o }),
      persisted: () => api.sent.join('\n'),
      size: () =>
        [...api.configMaps.values()].reduce(
          (n, cm) => n + ((cm as { binaryData?: Record<string, string> }).binaryData?.['entries.json.gz']?.length ?? 0),
          0,
        ),
    },
  ];
}

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

function huge(uid: string, rv: number, chars: number): KubeObject {
  return {
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: {
      uid,
      name: uid,
      namespace: 'a',
      resourceVersion: String(rv),
      generation: 3,
      creationTimestamp: '2024-05-01T10:00:00Z',
      labels: { team: 'db' },
      annotations: { note: 'kept', [LAST_APPLIED]: JSON.stringify({ spec: { pad: 'x'.repeat(1000) } }) },
      managedFields: [{ manager: 'kubectl' }],
    },
    spec: { pad: noise(chars) },
    status: { phase: 'Running' },
  };
}

for (const backend of backends()) {
  test(`${backend.name} store: an object larger than the per-entry bound is stored reduced (identity and metadata) and resumed marked partial`, async () => {
    const s = backend.make();
    await s.load();
    s.put('big', huge('big', 7, 1_100_000));
    s.put('small', obj('small', 8, 'p'));
    s.markInitialized();
    await s.flush();
    await s.close();
    assert.ok(backend.size() < 200_000, `the big object was not stored whole (${backend.size()} bytes)`);
    const loaded = await backend.make().load();
    assert.equal(loaded.initialized, true);
    const big = loaded.entries.get('big') as KubeObject;
    assert.deepEqual(
      { ...big },
      {
        apiVersion: 'example.com/v1',
        kind: 'Backup',
        metadata: {
          uid: 'big',
          name: 'big',
          namespace: 'a',
          resourceVersion: '7',
          generation: 3,
          creationTimestamp: '2024-05-01T10:00:00Z',
          labels: { team: 'db' },
          annotations: { note: 'kept' },
        },
      },
      'identity and metadata, without managedFields, the last-applied copy, spec and status; no marker key',
    );
    assert.equal(big[PARTIAL_KEY], undefined);
    assert.deepEqual(big[STORED], { redacted: [], partial: true });
    const small = loaded.entries.get('small') as KubeObject;
    assert.deepEqual(small, obj('small', 8, 'p'), 'a normal object is stored whole');
    assert.deepEqual(small[STORED], { redacted: [], partial: false });
    // a reduced entry read back and put again stays reduced; a smaller new state is stored whole
    const again = backend.make();
    const state = await again.load();
    again.put('big', state.entries.get('big') as KubeObject);
    await again.flush();
    assert.equal((await backend.make().load()).entries.get('big')?.[STORED]?.partial, true);
    const shrunk = { ...huge('big', 9, 10), status: { phase: 'Done' } };
    again.put('big', shrunk);
    await again.flush();
    await again.close();
    const after = (await backend.make().load()).entries.get('big') as KubeObject;
    assert.equal(after[STORED]?.partial, false);
    assert.deepEqual(after.status, { phase: 'Done' });
  });

  test(`${backend.name} store: nothing is persisted unredacted (configured pointers, wildcards, kubectl's last-applied copy)`, async () => {
    const redact = ['/spec/password', '/spec/targets/*/key', '/metadata/annotations/example.com~1token'];
    const s = backend.make({ redact });
    await s.load();
    const secretObj = (uid: string, rv: number, pad = 0): KubeObject => ({
      metadata: {
        uid,
        name: uid,
        namespace: 'a',
        resourceVersion: String(rv),
        annotations: {
          'example.com/token': `tok-${uid}-SECRET`,
          [LAST_APPLIED]: JSON.stringify({ spec: { password: `pw-${uid}-SECRET` } }),
        },
      },
      spec: {
        password: `pw-${uid}-SECRET`,
        user: 'backup',
        targets: [{ url: 'a', key: `key-${uid}-SECRET` }, { url: 'b' }],
        pad: noise(pad),
      },
    });
    s.put('u1', secretObj('u1', 1));
    s.put('u2', secretObj('u2', 2, DEFAULT_MAX_ENTRY_BYTES)); // reduced: its annotations are kept, masked
    await s.flush();
    s.put('u1', secretObj('u1', 3));
    await s.flush();
    await s.close();
    const text = backend.persisted();
    assert.ok(text.includes('backup'), 'the persisted data is readable here');
    assert.ok(!text.includes('SECRET'), 'no secret value persisted');
    const loaded = await backend.make({ redact }).load();
    const u1 = loaded.entries.get('u1') as KubeObject & { spec: Record<string, unknown> };
    assert.equal(u1.spec.password, REDACTED);
    assert.deepEqual(u1.spec.targets, [{ url: 'a', key: REDACTED }, { url: 'b' }]);
    assert.equal(u1.metadata.annotations?.['example.com/token'], REDACTED);
    assert.equal(u1.metadata.annotations?.[LAST_APPLIED], REDACTED);
    assert.equal(u1.spec.user, 'backup');
    assert.deepEqual(u1[STORED], { redacted: redact, partial: false });
    const u2 = loaded.entries.get('u2') as KubeObject;
    assert.deepEqual(u2.metadata.annotations, { 'example.com/token': REDACTED });
    assert.deepEqual(u2[STORED], { redacted: redact, partial: true });
  });
}

test('ConfigMap store: more buckets than maxBuckets fails the flush with a clear error at once (no spin), keeps everything staged, and succeeds once it fits', async () => {
  const api = new FakeCluster();
  const opts = { namespace: 'crb', name: 'cp', key: 'k1', maxBucketBytes: 4000, maxBuckets: 4 };
  const s = new KubernetesCheckpointStore(api, opts);
  await s.load();
  for (let i = 0; i < 40; i++) s.put(`uid-${i}`, obj(`uid-${i}`, i, noise(600)));
  const t0 = Date.now();
  for (let attempt = 0; attempt < 2; attempt++) {
    await assert.rejects(s.flush(), (e: unknown) => {
      assert.ok(e instanceof CrbridgeError && e.code === 'CRB_CHECKPOINT');
      assert.match(
        e.message,
        /does not fit in 4 ConfigMaps of 4000 bytes \(40 objects; ConfigMaps cp-[0-9a-f]{10} and cp-[0-9a-f]{10}-0 … cp-[0-9a-f]{10}-3 in namespace crb\)/,
      );
      assert.match(e.message, /checkpoint\.backend "file"/);
      return true;
    });
    assert.equal(s.pending, 40, 'nothing lost: still staged');
  }
  assert.ok(Date.now() - t0 < 2000, 'fails promptly');
  assert.equal(
    [...api.configMaps.keys()].filter((n) => /-\d+$/.test(n)).length <= 4,
    true,
    'at most maxBuckets written',
  );
  for (let i = 10; i < 40; i++) s.remove(`uid-${i}`);
  await s.flush();
  assert.equal(s.pending, 0);
  const loaded = await new KubernetesCheckpointStore(api, opts).load();
  assert.deepEqual([...loaded.entries.keys()].sort(), Array.from({ length: 10 }, (_, i) => `uid-${i}`).sort());
});

test('ConfigMap store: a growth interrupted at any write loses nothing, and the retry (same process or restarted) leaves it exact', async () => {
  const pad = (i: number) => `${i}-${noise(300)}`;
  const bucketCount = (api: FakeCluster) => [...api.configMaps.keys()].filter((n) => /-\d+$/.test(n)).length;
  for (const retry of ['same store', 'restarted'] as const) {
    for (let failAt = 0; ; failAt++) {
      const at = `${retry}, write ${failAt} fails`;
      const api = new FakeCluster();
      const opts = { namespace: 'crb', name: 'cp', key: 'k1', maxBucketBytes: 3000 };
      const s = new KubernetesCheckpointStore(api, opts);
      await s.load();
      for (let i = 0; i < 6; i++) s.put(`u${i}`, obj(`u${i}`, 1, pad(i)));
      await s.flush();
      const before = (await new KubernetesCheckpointStore(api, opts).load()).entries;
      const bucketsBefore = bucketCount(api);
      // enough new entries to grow the bucket count; deletes of entries that move to a new bucket
      const gone = new Set(['u3', 'u4', 'u5']);
      const stage = (st: KubernetesCheckpointStore) => {
        for (let i = 0; i < 30; i++) {
          if (gone.has(`u${i}`)) st.remove(`u${i}`);
          else st.put(`u${i}`, obj(`u${i}`, 2, pad(i)));
        }
      };
      stage(s);
      let writes = 0;
      const real = api.request.bind(api);
      api.request = async (method, path, query, body) => {
        if ((method === 'PUT' || method === 'POST') && writes++ === failAt) throw new Error('connection reset');
        return real(method, path, query, body);
      };
      const failed = await s.flush().then(
        () => false,
        () => true,
      );
      api.request = real;
      const reloaded = (await new KubernetesCheckpointStore(api, opts).load()).entries;
      // every entry is its state before the flush or after it
      for (let i = 0; i < 30; i++) {
        const rv = reloaded.get(`u${i}`)?.metadata.resourceVersion;
        const was = before.get(`u${i}`)?.metadata.resourceVersion;
        const now = gone.has(`u${i}`) ? undefined : '2';
        assert.ok(rv === now || rv === was, `${at}: u${i} is ${rv}, was ${was}`);
      }
      if (!failed) {
        assert.ok(bucketCount(api) >= 2 * bucketsBefore, 'the flush grew the bucket count');
        break; // no write left to fail
      }
      let w = s;
      if (retry === 'restarted') {
        // a restarted source loads what is there and hands on again only what differs from it
        w = new KubernetesCheckpointStore(api, opts);
        const known = (await w.load()).entries;
        for (let i = 0; i < 30; i++) {
          if (gone.has(`u${i}`)) {
            if (known.has(`u${i}`)) w.remove(`u${i}`);
          } else if (known.get(`u${i}`)?.metadata.resourceVersion !== '2') w.put(`u${i}`, obj(`u${i}`, 2, pad(i)));
        }
      }
      await w.flush();
      const exact = async (what: string, rv1 = '2') => {
        const done = (await new KubernetesCheckpointStore(api, opts).load()).entries;
        assert.deepEqual(
          [...done].map(([u, o]) => `${u}@${o.metadata.resourceVersion}`).sort(),
          Array.from({ length: 30 }, (_, i) => `u${i}`)
            .filter((u) => !gone.has(u))
            .map((u) => `${u}@${u === 'u1' ? rv1 : '2'}`)
            .sort(),
          `${at}: ${what}`,
        );
      };
      await exact('after the retry');
      // and no leftover comes back later: another restart changes one entry
      const again = new KubernetesCheckpointStore(api, opts);
      await again.load();
      again.put('u1', obj('u1', 3, pad(1)));
      await again.flush();
      await exact('after one more restart and flush', '3');
    }
  }
});

test('ConfigMap store: a leftover copy in an old bucket (growth interrupted after the index) is ignored on load and removed by the next flush', async () => {
  const api = new FakeCluster();
  const opts = { namespace: 'crb', name: 'cp', key: 'k1', maxBucketBytes: 1400 };
  const big = (uid: string, rv: number) => obj(uid, rv, noise(550)); // ~500 bytes stored: two fit in a bucket
  const s = new KubernetesCheckpointStore(api, opts);
  await s.load();
  s.put('u0', big('u0', 1));
  s.put('u1', big('u1', 1));
  await s.flush();
  const bucket0 = [...api.configMaps.keys()].find((n) => n.endsWith('-0')) as string;
  // 1 → 8 buckets: u1 moves from bucket 0 to bucket 3 (with u9); u0 stays in bucket 0, which is written last
  s.put('u1', big('u1', 2));
  s.put('u5', big('u5', 2));
  s.put('u9', big('u9', 2));
  const real = api.request.bind(api);
  api.request = async (method, path, query, body) => {
    if (method === 'PUT' && path.endsWith(`/${bucket0}`)) throw new Error('connection reset');
    return real(method, path, query, body);
  };
  await assert.rejects(s.flush());
  api.request = real;
  const index = api.configMaps.get(bucket0.replace(/-0$/, '')) as { data: { buckets: string } };
  assert.equal(index.data.buckets, '8', 'the index was written with the new count');
  // a restart: u1 is read from its own bucket, never from the leftover in bucket 0
  const r = new KubernetesCheckpointStore(api, opts);
  const known = (await r.load()).entries;
  assert.deepEqual([...known].map(([u, o]) => `${u}@${o.metadata.resourceVersion}`).sort(), [
    'u0@1',
    'u1@2',
    'u5@2',
    'u9@2',
  ]);
  // u1 is deleted: its own bucket is rewritten, and the leftover must not bring it back
  r.remove('u1');
  await r.flush();
  const after = (await new KubernetesCheckpointStore(api, opts).load()).entries;
  assert.deepEqual([...after.keys()].sort(), ['u0', 'u5', 'u9']);
  const raw = (api.configMaps.get(bucket0) as { binaryData: Record<string, string> }).binaryData['entries.json.gz'];
  assert.deepEqual(Object.keys(JSON.parse(gunzipSync(Buffer.from(raw as string, 'base64')).toString())), ['u0']);
});

/** A backend of the shared base whose writes can be made to fail or to wait. */
class MemoryStore extends StagedCheckpointStore {
  readonly description = 'memory';
  batches: Batch[] = [];
  fail = false;
  gate: Promise<void> | undefined;
  running = 0;
  maxRunning = 0;
  constructor(o: { redact?: string[]; maxEntryBytes?: number } = {}) {
    super(o);
  }
  async load(): Promise<CheckpointState> {
    return { initialized: false, entries: new Map() };
  }
  protected async write(batch: Batch): Promise<void> {
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      await this.gate;
      if (this.fail) throw new Error('disk full');
      this.batches.push(batch);
    } finally {
      this.running--;
    }
  }
  async close(): Promise<void> {}
}

test('shared base: a failed write is staged again without overriding newer changes; flushes run one at a time; entries arrive encoded', async () => {
  const s = new MemoryStore({ redact: ['/spec/pad'], maxEntryBytes: 500 });
  s.put('a', obj('a', 1, 'secret-a'));
  s.put('b', obj('b', 1));
  s.markInitialized(['p/out']);
  assert.equal(s.pending, 3);
  s.fail = true;
  let release = () => {};
  s.gate = new Promise((r) => {
    release = r;
  });
  const first = s.flush();
  assert.equal(s.pending, 0, 'taken');
  s.put('a', obj('a', 2)); // newer than what the failing flush took
  s.remove('c');
  release();
  await assert.rejects(first, (e: unknown) => {
    assert.ok(e instanceof CrbridgeError && e.code === 'CRB_CHECKPOINT');
    assert.equal(e.message, 'cannot write checkpoint memory: disk full');
    return true;
  });
  assert.equal(s.pending, 4, 'a (newer), b, c and initialized are staged');
  s.fail = false;
  s.gate = undefined;
  // two flushes at once: the second waits for the first
  await Promise.all([s.flush(), s.flush()]);
  assert.equal(s.maxRunning, 1);
  assert.equal(s.pending, 0);
  assert.equal(s.batches.length, 1, 'the second flush found nothing left');
  const b = s.batches[0] as Batch;
  assert.deepEqual(b.initialized, ['p/out'], 'the consumers to record');
  assert.deepEqual([...b.changes.keys()].sort(), ['a', 'b', 'c']);
  assert.equal(b.changes.get('c'), null);
  assert.equal(b.changes.get('a')?.object.metadata.resourceVersion, '2', 'the newer change won');
  assert.equal(JSON.parse(b.changes.get('b')?.json as string).spec.pad, REDACTED, 'redacted before the write');
  // reduced above the bound, and the JSON handed on is that of the stored form
  s.put('big', { ...obj('big', 1), status: { log: noise(1000) } });
  await s.flush();
  const big = s.batches[1]?.changes.get('big');
  assert.equal(big?.object[PARTIAL_KEY], true);
  assert.equal(big?.json, JSON.stringify(big?.object));
  assert.ok(!big?.json.includes('spec') && !big?.json.includes('status'));
});

test('both backends record the initialized consumers; a checkpoint written before them loads without a list', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'crbridge-cp-consumers-'));
  const cluster = new FakeCluster();
  const stores: [string, () => CheckpointStore][] = [
    ['file', () => new FileCheckpointStore(dir, 'key-c')],
    ['configmaps', () => new KubernetesCheckpointStore(cluster, { namespace: 'crb', name: 'cp', key: 'key-c' })],
  ];
  for (const [name, make] of stores) {
    const s = make();
    await s.load();
    s.put('u1', obj('u1', 1));
    s.markInitialized();
    await s.flush();
    await s.close();
    const before = await make().load();
    assert.equal(before.initialized, true, name);
    assert.deepEqual(before.consumers, [], `${name}: an empty list is a list`);
    const t = make();
    await t.load();
    t.markInitialized(['p2/out', 'p1/out']);
    await t.flush();
    await t.close();
    const after = await make().load();
    assert.deepEqual(after.consumers, ['p1/out', 'p2/out'], name);
    assert.equal(after.entries.get('u1')?.metadata.resourceVersion, '1', `${name}: entries kept`);
  }
  // the file backend's table as an older crbridge wrote it: no consumers column
  const old = mkdtempSync(join(tmpdir(), 'crbridge-cp-old-'));
  const db = new DatabaseSync(join(old, 'checkpoints.sqlite'));
  db.exec(
    `CREATE TABLE checkpoint_meta (source_key TEXT PRIMARY KEY, initialized INTEGER NOT NULL, updated_at TEXT NOT NULL)`,
  );
  db.exec(`INSERT INTO checkpoint_meta VALUES ('key-o', 1, '2026-11-01T00:00:00Z')`);
  db.close();
  const loaded = await new FileCheckpointStore(old, 'key-o').load();
  assert.equal(loaded.initialized, true);
  assert.equal(loaded.consumers, undefined, 'no list: every current consumer counts as initialized');
});
