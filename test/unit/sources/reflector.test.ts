/**
 * Reflector details: backoff bounds, bounded buffering (overflow closes and resumes the stream
 * without loss), bookmarks applied only after the events before them, and a refused push being
 * retried rather than lost.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { backoffDelay } from '../../../src/backoff.ts';
import type { SourceContext } from '../../../src/component.ts';
import type { Delta, KubeObject } from '../../../src/events/delta.ts';
import { Reflector } from '../../../src/sources/kubernetes/reflector.ts';
import { KubernetesSource } from '../../../src/sources/kubernetes/source.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { FakeCluster } from './fake-cluster.ts';

test('backoff doubles from the initial delay up to the maximum, with 50-100 % jitter', () => {
  assert.equal(
    backoffDelay(1, 1000, 30000, () => 0),
    500,
  );
  assert.equal(
    backoffDelay(1, 1000, 30000, () => 1),
    1000,
  );
  assert.equal(
    backoffDelay(3, 1000, 30000, () => 1),
    4000,
  );
  assert.equal(
    backoffDelay(20, 1000, 30000, () => 1),
    30000,
  );
  for (let a = 1; a < 10; a++) {
    const d = backoffDelay(a, 100, 5000);
    const base = Math.min(5000, 100 * 2 ** (a - 1));
    assert.ok(d >= base / 2 && d <= base);
  }
});

test('a slow handler with a burst beyond maxQueued loses nothing: the stream is closed and resumed', async () => {
  const c = new FakeCluster();
  const seen: string[] = [];
  const restarts: string[] = [];
  const ac = new AbortController();
  let listed = false;
  const r = new Reflector({
    api: c,
    path: '/apis/example.com/v1/namespaces/a/backups',
    pageSize: 100,
    watchTimeoutSeconds: 60,
    stallTimeoutMs: 5000,
    backoffInitialMs: 1,
    backoffMaxMs: 5,
    maxQueued: 5,
    logger: silentLogger,
    onRestart: (why) => restarts.push(why),
    handler: {
      onList: async () => {
        listed = true;
      },
      onEvent: async (_type, obj: KubeObject) => {
        await new Promise((res) => setTimeout(res, 1));
        seen.push(obj.metadata.name);
      },
      waitForResource: async () => {},
    },
  });
  const run = r.run(ac.signal);
  while (!listed) await new Promise((res) => setTimeout(res, 1));
  await new Promise((res) => setTimeout(res, 10));
  for (let i = 0; i < 40; i++) c.create('a', `o${i}`);
  const end = Date.now() + 5000;
  while (seen.length < 40 && Date.now() < end) await new Promise((res) => setTimeout(res, 5));
  ac.abort();
  await run;
  assert.deepEqual(
    seen,
    Array.from({ length: 40 }, (_, i) => `o${i}`),
  );
  assert.ok(restarts.includes('overflow'));
  assert.equal(c.lists, 1);
});

test('a push that fails is retried from the last accepted resourceVersion, not lost and not repeated', async () => {
  const c = new FakeCluster();
  const got: Delta[] = [];
  let failNext = false;
  const ctx: SourceContext = {
    id: 's',
    pipeline: 'p',
    logger: silentLogger,
    metrics: new Metrics(),
    stateDir: mkdtempSync(join(tmpdir(), 'crbridge-refl-')),
    clusterName: 't',
    receiver: {
      async push(d) {
        if (failNext) {
          failNext = false;
          throw new Error('queue closed');
        }
        got.push(d);
        return { settled: Promise.resolve() };
      },
    },
  };
  const s = new KubernetesSource(
    { group: 'example.com', version: 'v1', resource: 'backups', backoffInitialMs: 1, backoffMaxMs: 5 },
    ctx,
    { api: c },
  );
  await s.start(new AbortController().signal);
  while (!s.synced) await new Promise((res) => setTimeout(res, 2));
  failNext = true;
  c.create('a', 'x');
  c.create('a', 'y');
  const end = Date.now() + 3000;
  while (got.length < 2 && Date.now() < end) await new Promise((res) => setTimeout(res, 5));
  await new Promise((res) => setTimeout(res, 50));
  assert.deepEqual(
    got.map((d) => `${d.kind} ${d.object.metadata.name}`),
    ['added x', 'added y'],
  );
  await s.shutdown(Date.now() + 1000);
});
