/**
 * The Kubernetes source against an in-memory fake API server: initial list, live events,
 * pagination, relist after 410 without duplicates, stalled-stream recovery, waiting for a missing
 * CRD, namespace lists, gap-free resume from the file checkpoint, and objects leaving and entering
 * a label selector, with the event ids of each change seen live, on a relist and on resume.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { SourceConsumer, SourceContext } from '../../../src/component.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { Delta } from '../../../src/events/delta.ts';
import { FileCheckpointStore } from '../../../src/sources/kubernetes/checkpoint/file.ts';
import { KubernetesSource, type KubernetesSourceConfig, sourceKey } from '../../../src/sources/kubernetes/source.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { fakeClock } from './fake-clock.ts';
import { FakeCluster } from './fake-cluster.ts';
import { Recorder } from './recorder.ts';

const base: KubernetesSourceConfig = {
  group: 'example.com',
  version: 'v1',
  resource: 'backups',
  stallTimeoutSeconds: 0.3,
  backoffInitialMs: 10,
  backoffMaxMs: 50,
  checkpoint: { flushIntervalMs: 20 },
};

function makeSource(
  cluster: FakeCluster,
  stateDir: string,
  cfg: Partial<KubernetesSourceConfig> = {},
  consumers?: SourceConsumer[],
) {
  const receiver = new Recorder();
  const metrics = new Metrics();
  const ctx: SourceContext = {
    id: 'p/source',
    pipeline: 'p',
    logger: silentLogger,
    metrics,
    stateDir,
    clusterName: 'test',
    receiver,
    ...(consumers && { consumers }),
  };
  const source = new KubernetesSource({ ...base, ...cfg }, ctx, { api: cluster });
  const ac = new AbortController();
  return {
    source,
    receiver,
    metrics,
    start: () => source.start(ac.signal),
    stop: () => source.shutdown(Date.now() + 2000),
  };
}

async function until(fn: () => boolean, what: string, ms = 3000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const dir = () => mkdtempSync(join(tmpdir(), 'crbridge-src-'));

test('first start emits one resync add per object (paginated), then live changes; managedFields dropped', async () => {
  const c = new FakeCluster();
  for (let i = 0; i < 5; i++) c.create('a', `b${i}`);
  const s = makeSource(c, dir(), { pageSize: 2 });
  await s.start();
  await until(() => s.source.synced, 'synced');
  assert.equal(c.lists, 3);
  await until(() => c.watches === 1, 'watch');
  assert.equal(c.lastWatchQuery.allowWatchBookmarks, true);
  const timeout = Number(c.lastWatchQuery.timeoutSeconds);
  assert.ok(timeout >= 300 && timeout <= 600, `watch timeout ${timeout} s is spread over [300, 600] s`);
  assert.equal(c.lastWatchQuery.resourceVersion, '105', 'the watch starts at the list resourceVersion');
  assert.deepEqual(
    s.receiver.deltas.map((d) => [d.reason, d.kind, d.object.metadata.name]),
    [0, 1, 2, 3, 4].map((i) => ['resync', 'added', `b${i}`]),
  );
  assert.equal(s.receiver.deltas[0]?.resource.kind, 'Backup');
  assert.equal(s.receiver.deltas[0]?.object.metadata.managedFields, undefined);
  c.update('a', 'b1', { x: 1 });
  c.delete('a', 'b2');
  c.create('a', 'b9');
  await until(() => s.receiver.deltas.length === 8, 'live deltas');
  assert.deepEqual(
    s.receiver.deltas.slice(5).map((d) => [d.reason, d.kind, d.object.metadata.name]),
    [
      ['live', 'modified', 'b1'],
      ['live', 'deleted', 'b2'],
      ['live', 'added', 'b9'],
    ],
  );
  assert.equal(s.receiver.deltas[5]?.oldObject?.metadata.resourceVersion, '102');
  assert.equal(s.metrics.gauge('crbridge_source_objects', '').get({ component: 'p/source' }), 5);
  await s.stop();
});

test('410 Gone: relist emits only the real differences, once', async () => {
  const c = new FakeCluster();
  for (let i = 0; i < 4; i++) c.create('a', `b${i}`);
  const s = makeSource(c, dir());
  await s.start();
  await until(() => s.source.synced, 'synced');
  // the stream is cut, history is compacted, and things change meanwhile
  for (const w of c.watchers) w.stalled = true;
  c.update('a', 'b0', { x: 1 });
  c.delete('a', 'b1');
  c.create('a', 'b5');
  c.compact();
  c.closeWatches();
  await until(() => s.receiver.deltas.length >= 7, 'relist deltas');
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(s.receiver.summary(4), ['relist modified b0@105', 'relist added b5@107', 'relist deleted b1@102']);
  assert.equal(
    s.metrics.counter('crbridge_source_relists_total', '').get({ component: 'p/source', reason: 'gone' }),
    1,
  );
  // afterwards live again
  c.update('a', 'b5', { y: 1 });
  await until(() => s.receiver.deltas.length === 8, 'live after relist');
  assert.deepEqual(s.receiver.summary(7), ['live modified b5@108']);
  await s.stop();
});

test('a stalled stream (no event, no bookmark) is restarted from the last resourceVersion; changes arrive once', async (t) => {
  // the default stall watchdog (150 s) on a fake clock
  const clock = fakeClock(t, 1000);
  const c = new FakeCluster();
  c.create('a', 'b0');
  const s = makeSource(c, dir(), { stallTimeoutSeconds: 150, backoffInitialMs: 1000, backoffMaxMs: 30_000 });
  await s.start();
  await clock.until(() => s.source.synced, 'synced');
  for (const w of c.watchers) w.stalled = true; // the proxy stops forwarding, the connection stays open
  c.update('a', 'b0', { x: 1 });
  c.create('a', 'b1');
  await clock.advance(140_000);
  assert.equal(s.receiver.deltas.length, 1, 'nothing arrives through the stalled stream');
  const restarts = () =>
    s.metrics.counter('crbridge_source_watch_restarts_total', '').get({ component: 'p/source', reason: 'stall' });
  assert.equal(restarts(), 0, 'not restarted before the stall timeout');
  await clock.until(() => s.receiver.deltas.length === 3, 'deltas after stall', 30_000);
  await clock.advance(5_000);
  assert.deepEqual(s.receiver.summary(1), ['live modified b0@102', 'live added b1@103']);
  assert.equal(restarts(), 1);
  assert.equal(c.lists, 1, 'a stall reconnects without relisting');
  await s.stop();
});

test('bookmarks keep a quiet stream alive and advance the resume point; clean closes reconnect without relist', async (t) => {
  const clock = fakeClock(t, 1000);
  const c = new FakeCluster();
  c.create('a', 'b0');
  // the default stall watchdog (150 s); the API server sends a bookmark about once a minute
  const s = makeSource(c, dir(), { stallTimeoutSeconds: 150, backoffInitialMs: 1000, backoffMaxMs: 30_000 });
  await s.start();
  await clock.until(() => s.source.synced, 'synced');
  const b = setInterval(() => c.bookmark(), 60_000);
  await clock.advance(600_000, 5000);
  clearInterval(b);
  assert.equal(
    s.metrics.counter('crbridge_source_watch_restarts_total', '').get({ component: 'p/source', reason: 'stall' }),
    0,
    'ten quiet minutes with bookmarks: no stall restart',
  );
  c.closeWatches();
  c.create('a', 'b1');
  await clock.until(() => s.receiver.deltas.length === 2, 'add after reconnect');
  assert.equal(c.lists, 1);
  await s.stop();
});

test('a missing CRD is waited for; a deleted one is reported and picked up again', async (t) => {
  // the source's discovery backoff (1 s doubling up to 30 s) on a fake clock
  const clock = fakeClock(t, 100);
  const c = new FakeCluster();
  c.served = false;
  const s = makeSource(c, dir());
  await s.start();
  await clock.advance(60_000, 500);
  assert.equal(s.source.synced, false, 'a minute without the CRD: still waiting');
  c.served = true;
  c.create('a', 'b0');
  await clock.until(() => s.source.synced, 'synced after the CRD appears', 60_000);
  assert.deepEqual(s.receiver.summary(), ['resync added b0@101']);
  // CRD deleted: objects go (live deletes), the resource is gone, then comes back with a new object
  c.delete('a', 'b0');
  c.served = false;
  c.closeWatches();
  await clock.advance(30_000, 500);
  assert.equal(s.receiver.deltas.length, 2, 'the delete arrived; nothing else while the resource is gone');
  c.served = true;
  c.create('a', 'b1');
  await clock.until(() => s.receiver.deltas.length === 3, 'deltas after the CRD returns', 60_000);
  assert.deepEqual(s.receiver.summary(1), ['live deleted b0@102', 'relist added b1@103']);
  await s.stop();
});

test('a namespace list watches each namespace and ignores the others', async () => {
  const c = new FakeCluster();
  c.create('a', 'x');
  c.create('b', 'y');
  c.create('c', 'z');
  const s = makeSource(c, dir(), { namespaces: ['b', 'a'] });
  await s.start();
  await until(() => s.source.synced, 'synced');
  assert.deepEqual(s.receiver.deltas.map((d) => d.object.metadata.name).sort(), ['x', 'y']);
  c.update('c', 'z', { q: 1 });
  c.update('b', 'y', { q: 1 });
  await until(() => s.receiver.deltas.length === 3, 'live');
  assert.equal(s.receiver.deltas[2]?.object.metadata.name, 'y');
  assert.equal(c.watchers.size, 2);
  await s.stop();
});

test('shareKey covers group, version, resource, sorted namespaces and selectors', () => {
  const k = sourceKey;
  assert.equal(k({ ...base, namespaces: ['b', 'a'] }), k({ ...base, namespaces: ['a', 'b'], pageSize: 7 }));
  assert.notEqual(k(base), k({ ...base, labelSelector: 'x=y' }));
  assert.notEqual(k(base), k({ ...base, fieldSelector: 'metadata.name=x' }));
  assert.notEqual(k(base), k({ ...base, version: 'v2' }));
  assert.notEqual(k(base), k({ ...base, namespaces: ['a'] }));
});

test('resume: exactly the changes made while down, as resync, with the checkpointed old object', async () => {
  const c = new FakeCluster();
  for (let i = 0; i < 6; i++) c.create('a', `b${i}`);
  const state = dir();
  const s1 = makeSource(c, state);
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  c.update('a', 'b0', { v: 1 });
  await until(() => s1.receiver.deltas.length === 7, 'live');
  await s1.stop();
  // while down: update b0 twice (net one), update b1, delete b2, create n1, create+delete n2
  c.update('a', 'b0', { v: 2 });
  c.update('a', 'b0', { v: 3 });
  c.update('a', 'b1', { v: 1 });
  c.delete('a', 'b2');
  c.create('a', 'n1');
  c.create('a', 'n2');
  c.delete('a', 'n2');
  const s2 = makeSource(c, state);
  await s2.start();
  await until(() => s2.source.synced, 'synced');
  assert.deepEqual(s2.receiver.summary(), [
    'resync modified b0@109',
    'resync modified b1@110',
    'resync added n1@112',
    'resync deleted b2@103',
  ]);
  const b0 = s2.receiver.deltas[0];
  assert.deepEqual(b0?.oldObject?.spec, { v: 1 });
  assert.equal(b0?.oldObject?.metadata.resourceVersion, '107');
  await s2.stop();
  // a third start with nothing changed emits nothing
  const s3 = makeSource(c, state);
  await s3.start();
  await until(() => s3.source.synced, 'synced');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(s3.receiver.summary(), []);
  await s3.stop();
});

test('a LIST is handed on page by page; one failing mid-way concludes no deletions, its retry emits each change once', async () => {
  const c = new FakeCluster();
  for (let i = 0; i < 7; i++) c.create('a', `b${i}`);
  const state = dir();
  const s1 = makeSource(c, state, { pageSize: 2 });
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  assert.equal(s1.receiver.deltas.length, 7);
  await s1.stop();
  // while down: b1 changed (page 1), b6 deleted (would be the only deletion)
  c.update('a', 'b1', { v: 1 });
  c.delete('a', 'b6');
  c.failContinuePages = 1;
  const lists = c.lists;
  const s2 = makeSource(c, state, { pageSize: 2 });
  try {
    await s2.start();
    await until(() => s2.source.synced, 'synced');
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(s2.receiver.summary(), ['resync modified b1@108', 'resync deleted b6@107']);
    // page 1 and the failed page 2, then the whole list again (3 pages of 2 for 6 objects)
    assert.equal(c.lists - lists, 2 + 3);
  } finally {
    await s2.stop();
  }
});

test('the checkpoint never runs ahead of delivery: an unacknowledged change is emitted again after restart', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  c.create('a', 'b1');
  const state = dir();
  const s1 = makeSource(c, state);
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  const b1 = c.objects.get('a/b1');
  s1.receiver.hold.add(b1?.metadata.uid as string);
  c.update('a', 'b0', { v: 1 });
  c.update('a', 'b1', { v: 1 });
  await until(() => s1.receiver.deltas.length === 4, 'live');
  await s1.source.flush();
  await new Promise((r) => setTimeout(r, 60));
  await s1.stop();
  const cp = await new FileCheckpointStore(state, sourceKey(base)).load();
  assert.equal(cp.entries.get(b1?.metadata.uid as string)?.metadata.resourceVersion, '102');
  const s2 = makeSource(c, state);
  await s2.start();
  await until(() => s2.source.synced, 'synced');
  assert.deepEqual(s2.receiver.summary(), ['resync modified b1@104']);
  await s2.stop();
});

test('the checkpoint never overtakes an older unsettled change of the same object', async () => {
  // a spec change stuck behind a down sink, then a status change that settles at once (filtered,
  // dead-lettered or delivered by a faster pipeline): the entry must stay before the stuck change
  const c = new FakeCluster();
  c.create('a', 'b0');
  c.create('a', 'b1');
  const state = dir();
  const s1 = makeSource(c, state);
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  s1.receiver.holdIf = (d) => d.object.metadata.name === 'b1' && d.object.metadata.resourceVersion === '103';
  c.update('a', 'b1', { v: 1 }); // rv 103: stuck
  c.update('a', 'b1', { v: 2 }); // rv 104: settles at once
  c.update('a', 'b0', { v: 1 }); // rv 105: another object is not held back
  await until(() => s1.receiver.deltas.length === 5, 'live');
  await new Promise((r) => setTimeout(r, 60));
  await s1.source.flush();
  await s1.stop();
  const cp = await new FileCheckpointStore(state, sourceKey(base)).load();
  assert.equal(cp.entries.get(c.objects.get('a/b1')?.metadata.uid as string)?.metadata.resourceVersion, '102');
  assert.equal(cp.entries.get(c.objects.get('a/b0')?.metadata.uid as string)?.metadata.resourceVersion, '105');
  const s2 = makeSource(c, state);
  await s2.start();
  await until(() => s2.source.synced, 'synced');
  assert.deepEqual(s2.receiver.summary(), ['resync modified b1@104']);
  assert.equal(s2.receiver.deltas[0]?.oldObject?.metadata.resourceVersion, '102');
  await s2.stop();
});

test('initial: skip records existing objects without emitting; later starts diff against them', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  c.create('a', 'b1');
  const state = dir();
  const s1 = makeSource(c, state, { initial: 'skip' });
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  c.create('a', 'b2');
  await until(() => s1.receiver.deltas.length === 1, 'live');
  assert.deepEqual(s1.receiver.summary(), ['live added b2@103']);
  await s1.stop();
  c.update('a', 'b0', { v: 1 });
  const s2 = makeSource(c, state, { initial: 'skip' });
  await s2.start();
  await until(() => s2.source.synced, 'synced');
  assert.deepEqual(s2.receiver.summary(), ['resync modified b0@104']);
  await s2.stop();
});

test('shutdown is idempotent', async () => {
  const c = new FakeCluster();
  const s = makeSource(c, dir());
  await s.start();
  const a = s.source.shutdown(Date.now() + 1000);
  const b = s.source.shutdown(Date.now() + 1000);
  assert.equal(a, b);
  await a;
});

test('deltas that settle after shutdown returned (while sinks drain) still reach the checkpoint', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  const state = dir();
  const s1 = makeSource(c, state);
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  s1.receiver.push = async (d) => {
    s1.receiver.deltas.push(d);
    return { settled: gate };
  };
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  await s1.source.shutdown(Date.now() + 400);
  assert.equal((await new FileCheckpointStore(state, sourceKey(base)).load()).entries.size, 0);
  release();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal((await new FileCheckpointStore(state, sourceKey(base)).load()).entries.size, 1);
});

test('a consumer added later gets its own initial treatment; the ones the checkpoint knows get only the diff', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  c.create('a', 'b1');
  const state = dir();
  const summary = (r: Recorder) =>
    r.deltas.map((d) => `${d.kind} ${d.object.metadata.name}@${d.object.metadata.resourceVersion} ${d.targets ?? '*'}`);
  // first start: one pipeline with one sink
  const s1 = makeSource(c, state, {}, [{ id: 'p1/out', initial: 'emit' }]);
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  assert.deepEqual(summary(s1.receiver), ['added b0@101 *', 'added b1@102 *']);
  await new Promise((r) => setTimeout(r, 60));
  await s1.stop();
  // while down b1 changes; then a second pipeline (emit), a second sink of p1 and a skip pipeline join
  c.update('a', 'b1', { v: 1 });
  const consumers: SourceConsumer[] = [
    { id: 'p1/out', initial: 'emit' },
    { id: 'p1/audit', initial: 'emit' },
    { id: 'p2/out', initial: 'emit' },
    { id: 'p3/out', initial: 'skip' },
  ];
  const s2 = makeSource(c, state, {}, consumers);
  await s2.start();
  await until(() => s2.source.synced, 'synced');
  assert.deepEqual(summary(s2.receiver), [
    'added b0@101 p1/audit,p2/out',
    'modified b1@103 p1/out',
    'added b1@103 p1/audit,p2/out',
  ]);
  c.create('a', 'b2');
  await until(() => s2.receiver.deltas.length === 4, 'live');
  assert.equal(summary(s2.receiver)[3], 'added b2@104 *', 'live changes go to everyone');
  await new Promise((r) => setTimeout(r, 60));
  await s2.stop();
  // a third start: everyone is known now, nothing changed, nothing is emitted
  const s3 = makeSource(c, state, {}, consumers);
  await s3.start();
  await until(() => s3.source.synced, 'synced');
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(summary(s3.receiver), []);
  await s3.stop();
});

test('a new consumer whose initial deltas did not all settle gets its start again after a restart', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  c.create('a', 'b1');
  const state = dir();
  const s1 = makeSource(c, state, {}, [{ id: 'p1/out', initial: 'emit' }]);
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  await new Promise((r) => setTimeout(r, 60));
  await s1.stop();
  const consumers: SourceConsumer[] = [
    { id: 'p1/out', initial: 'emit' },
    { id: 'p2/out', initial: 'emit' },
  ];
  const s2 = makeSource(c, state, {}, consumers);
  s2.receiver.holdIf = (d) => d.object.metadata.name === 'b1';
  await s2.start();
  await until(() => s2.receiver.deltas.length === 2, 'initial for p2');
  await new Promise((r) => setTimeout(r, 60));
  await s2.stop();
  const s3 = makeSource(c, state, {}, consumers);
  await s3.start();
  await until(() => s3.source.synced, 'synced');
  assert.deepEqual(
    s3.receiver.deltas.map((d) => `${d.kind} ${d.object.metadata.name} ${d.targets}`),
    ['added b0 p2/out', 'added b1 p2/out'],
  );
  await s3.stop();
});

// ---------------------------------------------------------------------------------------------
// Label selectors: departures, entries, and the ids of every change however it is seen.

const PROD = { labelSelector: 'tier=prod' };
const idsOf = (ds: readonly Delta[]) => ds.map((d) => buildEvent(d, { clusterName: 'test' }).id);
const lines = (ds: readonly Delta[]) =>
  ds.map(
    (d) =>
      `${d.reason} ${d.kind}${d.selector ? ` (${d.selector})` : ''} ${d.object.metadata.name}@${d.object.metadata.resourceVersion}`,
  );

type Step = (c: FakeCluster) => void;
/** b0 labelled in (created), out, in again, then deleted: uid-1 at 101, 102, 103, 104. */
const IN_OUT_IN_DELETE: Step[] = [
  (c) => c.create('a', 'b0', {}, { tier: 'prod' }),
  (c) => c.label('a', 'b0', { tier: 'dev' }),
  (c) => c.label('a', 'b0', { tier: 'prod' }),
  (c) => c.delete('a', 'b0'),
];
/** b0 created inside, updated, relabelled out: uid-1 at 101, 102, 103 (left at 103). */
const IN_UPDATE_OUT: Step[] = [
  (c) => c.create('a', 'b0', {}, { tier: 'prod' }),
  (c) => c.update('a', 'b0', { v: 1 }),
  (c) => c.label('a', 'b0', { tier: 'dev' }),
];
/** b0 created, updated, deleted (no selector): uid-1 at 101, 102, 103. */
const CREATE_UPDATE_DELETE: Step[] = [
  (c) => c.create('a', 'b0'),
  (c) => c.update('a', 'b0', { v: 1 }),
  (c) => c.delete('a', 'b0'),
];

type Seen = 'live' | 'down' | 'gone';

/**
 * Runs `steps` (one change each) against a source started on an empty cluster; step i is seen as
 * `how[i]`: live, made while the source is stopped (seen on the resync at restart), or made while
 * the watch is cut and history compacted (seen on the relist after 410). Returns every delta.
 */
async function observe(steps: Step[], how: Seen[], cfg: Partial<KubernetesSourceConfig>) {
  const c = new FakeCluster();
  const state = dir();
  const deltas: Delta[] = [];
  const open = async () => {
    const s = makeSource(c, state, cfg);
    s.receiver.deltas = deltas;
    await s.start();
    await until(() => s.source.synced, 'synced');
    return s;
  };
  let s = await open();
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i] as Step;
    if (how[i] === 'down') {
      await s.stop();
      step(c);
      s = await open();
    } else if (how[i] === 'gone') {
      for (const w of c.watchers) w.stalled = true;
      step(c);
      c.compact();
      c.closeWatches();
    } else step(c);
    await until(() => deltas.length === i + 1, `the delta of step ${i} (${how[i]})`);
  }
  await new Promise((r) => setTimeout(r, 30));
  await s.stop();
  return { deltas, lookups: c.lookups };
}

test('label selector: leave, re-enter, delete live: a departure, an entry and a deletion, each with its own id', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0', {}, { tier: 'prod' });
  c.create('a', 'x', {}, { tier: 'dev' });
  const s = makeSource(c, dir(), PROD);
  await s.start();
  await until(() => s.source.synced, 'synced');
  c.label('a', 'b0', { tier: 'dev' }); // 103: leaves
  c.update('a', 'x', { v: 1 }); // never inside: nothing
  c.label('a', 'b0', { tier: 'prod' }); // 105: enters again
  c.update('a', 'b0', { v: 1 }); // 106
  c.delete('a', 'b0'); // 107
  await until(() => s.receiver.deltas.length === 5, 'live deltas');
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(lines(s.receiver.deltas), [
    'resync added b0@101',
    'live deleted (left) b0@101',
    'live added b0@105',
    'live modified b0@106',
    'live deleted b0@107',
  ]);
  assert.deepEqual(idsOf(s.receiver.deltas), [
    'uid-1.101',
    'uid-1.103.left', // the write that took it out
    'uid-1.105',
    'uid-1.106',
    'uid-1.deleted',
  ]);
  const left = buildEvent(s.receiver.deltas[1] as Delta, { clusterName: 'test' });
  assert.equal(left.type, 'io.crbridge.example.com.backup.deleted');
  assert.equal(left.data.selector, 'left');
  assert.equal(buildEvent(s.receiver.deltas[4] as Delta, { clusterName: 'test' }).data.selector, undefined);
  assert.equal(c.lookups, 2, 'one look-up per DELETED, to tell a departure from a deletion');
  await s.stop();
});

test('label selector: each change has the same id live, on the resync after a restart and on the relist after 410', async () => {
  const all = await observe(IN_OUT_IN_DELETE, ['live', 'live', 'live', 'live'], PROD);
  const want = ['uid-1.101', 'uid-1.102.left', 'uid-1.103', 'uid-1.deleted'];
  assert.deepEqual(idsOf(all.deltas), want);
  const liveEvents = all.deltas.map((d) => buildEvent(d, { clusterName: 'test' }));
  for (const how of ['down', 'gone'] as const) {
    for (let k = 0; k < IN_OUT_IN_DELETE.length; k++) {
      const seen = IN_OUT_IN_DELETE.map((_, i) => (i === k ? how : 'live'));
      const run = await observe(IN_OUT_IN_DELETE, seen, PROD);
      const what = `step ${k} seen ${how}`;
      assert.deepEqual(idsOf(run.deltas), want, what);
      const d = run.deltas[k] as Delta;
      assert.equal(d.reason, how === 'down' ? 'resync' : 'relist', what);
      // the same event but for how it was seen (and the time, the observation time without one)
      const e = buildEvent(d, { clusterName: 'test' });
      const l = liveEvents[k] as (typeof liveEvents)[number];
      assert.deepEqual([e.id, e.type, e.data.selector], [l.id, l.type, l.data.selector], what);
    }
  }
  // left and entered again while stopped: one net change, the id of the entry
  const outIn: Step = (c) => {
    (IN_OUT_IN_DELETE[1] as Step)(c);
    (IN_OUT_IN_DELETE[2] as Step)(c);
  };
  const both = await observe([IN_OUT_IN_DELETE[0] as Step, outIn], ['live', 'down'], PROD);
  assert.deepEqual(lines(both.deltas), ['live added b0@101', 'resync modified b0@103']);
  assert.deepEqual(idsOf(both.deltas), ['uid-1.101', 'uid-1.103']);
});

test('without selectors, or with a field selector on metadata.name only, a vanished object is deleted: no look-up', async () => {
  const plain = await observe(CREATE_UPDATE_DELETE, ['live', 'live', 'live'], {});
  assert.deepEqual(idsOf(plain.deltas), ['uid-1.101', 'uid-1.102', 'uid-1.deleted']);
  for (const how of ['down', 'gone'] as const) {
    const run = await observe(CREATE_UPDATE_DELETE, ['live', 'live', how], {});
    assert.deepEqual(idsOf(run.deltas), ['uid-1.101', 'uid-1.102', 'uid-1.deleted'], how);
    assert.equal(run.lookups, 0, how);
  }
  const named = await observe(CREATE_UPDATE_DELETE, ['live', 'live', 'down'], { fieldSelector: 'metadata.name=b0' });
  assert.deepEqual(lines(named.deltas), ['live added b0@101', 'live modified b0@102', 'resync deleted b0@102']);
  assert.equal(plain.lookups + named.lookups, 0);
});

test('a crash with the checkpoint behind delivery: the restart repeats changes with the ids they had', async () => {
  const sequences: [string, Step[], Partial<KubernetesSourceConfig>][] = [
    ['create, update, delete', CREATE_UPDATE_DELETE, {}],
    ['in, out, in, delete', IN_OUT_IN_DELETE, PROD],
    ['in, update, out', IN_UPDATE_OUT, PROD],
  ];
  for (const [name, steps, cfg] of sequences) {
    for (let from = 0; from < steps.length; from++) {
      for (let to = from; to < steps.length; to++) {
        const what = `${name}: unacknowledged from step ${from}, crash after step ${to}`;
        const c = new FakeCluster();
        const state = dir();
        const s1 = makeSource(c, state, cfg);
        await s1.start();
        await until(() => s1.source.synced, 'synced');
        for (let i = 0; i <= to; i++) {
          if (i === from) s1.receiver.hold.add('uid-1'); // its deltas are delivered, never acknowledged
          (steps[i] as Step)(c);
          await until(() => s1.receiver.deltas.length === i + 1, `${what}: step ${i}`);
        }
        const delivered = idsOf(s1.receiver.deltas);
        await s1.source.shutdown(Date.now() + 100);
        await new Promise((r) => setTimeout(r, 150)); // the store of s1 is closed at its deadline
        const s2 = makeSource(c, state, cfg);
        await s2.start();
        await until(() => s2.source.synced, `${what}: synced`);
        await new Promise((r) => setTimeout(r, 30));
        const again = idsOf(s2.receiver.deltas);
        for (const id of again) assert.ok(delivered.includes(id), `${what}: ${id} is one of ${delivered.join(' ')}`);
        // and the consumer's view is the cluster's
        const view = new Map<string, string>();
        for (const d of [...s1.receiver.deltas, ...s2.receiver.deltas]) {
          if (d.kind === 'deleted') view.delete(d.object.metadata.uid);
          else view.set(d.object.metadata.uid, d.object.metadata.resourceVersion);
        }
        const o = c.objects.get('a/b0');
        const inside = o && (cfg.labelSelector === undefined || o.metadata.labels?.tier === 'prod');
        assert.deepEqual([...view], inside ? [[o.metadata.uid, o.metadata.resourceVersion]] : [], what);
        await s2.stop();
      }
    }
  }
});

test('a failed look-up is not guessed: the DELETED is handled again once the look-up succeeds', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0', {}, { tier: 'prod' });
  const s = makeSource(c, dir(), PROD);
  await s.start();
  await until(() => s.source.synced, 'synced');
  c.failLookups = 2;
  c.label('a', 'b0', { tier: 'dev' });
  await until(() => s.receiver.deltas.length === 2, 'the departure');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(lines(s.receiver.deltas), ['resync added b0@101', 'live deleted (left) b0@101']);
  assert.equal(c.lookups, 3);
  assert.ok(
    s.metrics.counter('crbridge_source_watch_restarts_total', '').get({ component: 'p/source', reason: 'error' }) >= 2,
  );
  await s.stop();
});

test('shutdown honours its deadline with the ConfigMap checkpoint wedged; what was not written is emitted again', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  const cp = { backend: 'kubernetes' as const, namespace: 'crb', flushIntervalMs: 20 };
  const s1 = makeSource(c, dir(), { checkpoint: cp });
  await s1.start();
  await until(() => s1.source.synced, 'synced');
  await new Promise((r) => setTimeout(r, 80)); // the initial state is written
  c.hangConfigMapWrites = true;
  c.update('a', 'b0', { v: 1 });
  await until(() => s1.receiver.deltas.length === 2, 'live');
  await new Promise((r) => setTimeout(r, 80)); // a flush is now hanging
  const t0 = Date.now();
  await s1.source.shutdown(Date.now() + 300);
  const took = Date.now() - t0;
  assert.ok(took < 1500, `shutdown took ${took} ms with a 300 ms deadline`);
  c.hangConfigMapWrites = false;
  const s2 = makeSource(c, dir(), { checkpoint: cp });
  await s2.start();
  await until(() => s2.source.synced, 'synced');
  const rv = c.objects.get('a/b0')?.metadata.resourceVersion;
  assert.deepEqual(s2.receiver.summary(), [`resync modified b0@${rv}`], 'the unwritten change comes again');
  await s2.stop();
});

test('sources take the process’s one Kubernetes client from ctx.shared; settings.kubeconfig names the credentials', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  const keys: string[] = [];
  const memo = new Map<string, unknown>();
  const shared = <T>(key: string, _make: () => T): T => {
    keys.push(key);
    if (!memo.has(key)) memo.set(key, c); // the process's client (here: the fake cluster)
    return memo.get(key) as T;
  };
  const ctx = (id: string): SourceContext => ({
    id,
    pipeline: id,
    logger: silentLogger,
    metrics: new Metrics(),
    stateDir: dir(),
    clusterName: 'test',
    receiver: new Recorder(),
    shared,
  });
  const ac = new AbortController();
  const one = new KubernetesSource(base, ctx('one'));
  const two = new KubernetesSource({ ...base, namespaces: ['a'] }, ctx('two'));
  assert.deepEqual(keys, [], 'nothing loaded at construction');
  await one.start(ac.signal);
  await two.start(ac.signal);
  await until(() => one.synced && two.synced, 'both synced on the shared client');
  assert.deepEqual(keys, ['kubernetes:client', 'kubernetes:client']);
  await Promise.all([one.shutdown(Date.now() + 2000), two.shutdown(Date.now() + 2000)]);

  // without the memo: credentials from ctx.settings.kubeconfig (an explicit path: a missing file is named)
  const missing = join(dir(), 'no-such-kubeconfig');
  const own = new KubernetesSource(base, { ...ctx('own'), shared: undefined, settings: { kubeconfig: missing } });
  await assert.rejects(own.start(ac.signal), (err: Error) => {
    assert.match(err.message, /cannot load kubeconfig .*no-such-kubeconfig \(explicit path\)/);
    return true;
  });
  ac.abort();
});
