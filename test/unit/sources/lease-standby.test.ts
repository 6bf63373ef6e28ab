/**
 * The Kubernetes source as a warm standby (`ctx.leadership`), against the fake API server: while
 * not leading it lists and watches (one LIST, one WATCH) but hands on nothing and writes no
 * checkpoint; once elected it hands on exactly the changes since the checkpoint the old leader
 * left (net change per object, `resync`, the ids a restart gives), nothing for unchanged objects,
 * with no new LIST; then live changes as usual.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { SourceContext } from '../../../src/component.ts';
import type { Leadership } from '../../../src/election.ts';
import { KubernetesSource, type KubernetesSourceConfig } from '../../../src/sources/kubernetes/source.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { FakeCluster } from './fake-cluster.ts';
import { Recorder } from './recorder.ts';

const cfg: KubernetesSourceConfig = {
  group: 'example.com',
  version: 'v1',
  resource: 'backups',
  stallTimeoutSeconds: 5,
  backoffInitialMs: 10,
  backoffMaxMs: 50,
  checkpoint: { flushIntervalMs: 20 },
};

/** A leadership the test hands over by calling `elect`. */
function leadership(): Leadership & { elect(): void } {
  let leading = false;
  const waiters: (() => void)[] = [];
  return {
    get leading() {
      return leading;
    },
    whenLeading: (signal) =>
      leading || signal.aborted
        ? Promise.resolve()
        : new Promise<void>((r) => {
            waiters.push(r);
            signal.addEventListener('abort', () => r(), { once: true });
          }),
    elect() {
      leading = true;
      for (const w of waiters.splice(0)) w();
    },
  };
}

function source(cluster: FakeCluster, stateDir: string, lead?: Leadership) {
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
    ...(lead && { leadership: lead }),
  };
  const s = new KubernetesSource(cfg, ctx, { api: cluster });
  return { s, receiver, metrics, ac: new AbortController() };
}

async function until(fn: () => boolean, what: string, ms = 3000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a standby lists and watches, hands on nothing; elected, it hands on exactly what changed since the checkpoint', async () => {
  const c = new FakeCluster();
  for (let i = 0; i < 5; i++) c.create('a', `b${i}`);
  const dir = mkdtempSync(join(tmpdir(), 'crbridge-standby-'));
  // the old leader: hands on the five objects and checkpoints them, then dies
  const old = source(c, dir);
  await old.s.start(old.ac.signal);
  await until(() => old.s.synced, 'old leader synced');
  await old.s.shutdown(Date.now() + 2000);

  c.update('a', 'b0', { x: 1 }); // while no one watched
  const lead = leadership();
  const sb = source(c, dir, lead);
  const lists = c.lists;
  const watches = c.watches;
  await sb.s.start(sb.ac.signal);
  await until(() => c.watches === watches + 1, 'the standby watches');
  assert.equal(c.lists, lists + 1, 'one LIST');
  // changes while the standby follows: an update, a deletion, a creation, and one created and deleted
  c.update('a', 'b1', { x: 2 });
  c.delete('a', 'b2');
  c.create('a', 'b9');
  c.create('a', 'tmp');
  c.delete('a', 'tmp');
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(sb.receiver.deltas.length, 0, 'a standby hands on nothing');
  assert.equal(
    sb.metrics.counter('crbridge_source_checkpoint_flushes_total', '').get({ component: 'p/source', result: 'ok' }),
    0,
    'a standby writes no checkpoint',
  );
  assert.equal(sb.s.synced, false);

  lead.elect();
  await until(() => sb.s.synced, 'synced after the election');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    sb.receiver.summary().sort(),
    ['resync added b9@109', 'resync deleted b2@103', 'resync modified b0@106', 'resync modified b1@107'].sort(),
  );
  assert.equal(c.lists, lists + 1, 'no new LIST: the warm cache was used');
  // the ids are those a restart would give: same object states, same checkpointed old states
  const byName = new Map(sb.receiver.deltas.map((d) => [d.object.metadata.name, d]));
  assert.equal(byName.get('b0')?.oldObject?.metadata.resourceVersion, '101');
  // live from now on
  c.update('a', 'b3', { x: 3 });
  await until(() => sb.receiver.deltas.length === 5, 'a live delta');
  assert.deepEqual(sb.receiver.summary(4), ['live modified b3@112']);
  await until(
    () =>
      sb.metrics.counter('crbridge_source_checkpoint_flushes_total', '').get({ component: 'p/source', result: 'ok' }) >
      0,
    'the leader checkpoints',
  );
  await sb.s.shutdown(Date.now() + 2000);

  // a restart after the new leader: nothing left to hand on but what it had not settled
  const again = source(c, dir);
  await again.s.start(again.ac.signal);
  await until(() => again.s.synced, 'restart synced');
  assert.deepEqual(again.receiver.summary(), []);
  await again.s.shutdown(Date.now() + 2000);
});

test('elected before its first LIST: it starts like a leader (resync against the checkpoint)', async () => {
  const c = new FakeCluster();
  for (let i = 0; i < 3; i++) c.create('a', `b${i}`);
  const lead = leadership();
  lead.elect();
  const sb = source(c, mkdtempSync(join(tmpdir(), 'crbridge-standby-')), lead);
  await sb.s.start(sb.ac.signal);
  await until(() => sb.s.synced, 'synced');
  assert.deepEqual(sb.receiver.summary(), ['resync added b0@101', 'resync added b1@102', 'resync added b2@103']);
  await sb.s.shutdown(Date.now() + 2000);
});
