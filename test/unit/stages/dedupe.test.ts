/**
 * The dedupe stage in a real pipeline runner: heartbeat-only updates are dropped (and settle at
 * once), real changes pass, `paths` and `ignore` (with `*`) both work, creates and deletes always
 * pass, and without an oldObject the patch decides.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildEvent } from '../../../src/events/build.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { dedupeStage } from '../../../src/stages/dedupe/index.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger } from '../delivery/helpers.ts';
import { backup, delta } from '../events/fixtures.ts';
import { counter, stageHarness } from './harness.ts';

function beat(base: KubeObject, rv: string, at: string, over: Record<string, unknown> = {}): KubeObject {
  return {
    ...base,
    metadata: { ...base.metadata, resourceVersion: rv, managedFields: [{ manager: 'ctl', time: at }] },
    status: {
      phase: 'Running',
      lastHeartbeatTime: at,
      conditions: [{ type: 'Ready', status: 'True', lastHeartbeatTime: at }],
      ...over,
    },
  } as KubeObject;
}

const base = backup({ rv: '1' });
const b1 = beat(base, '10', '2026-11-28T10:00:00Z');
const b2 = beat(base, '11', '2026-11-28T10:00:30Z');
const b3 = beat(base, '12', '2026-11-28T10:01:00Z', { phase: 'Failed' });
const b4 = {
  ...beat(base, '13', '2026-11-28T10:01:00Z', { phase: 'Failed' }),
  spec: { ...(base.spec as Record<string, unknown>), schedule: '0 3 * * *' },
};
const rvs = (events: { data: { object: KubeObject } }[] | undefined) =>
  (events ?? []).map((e) => e.data.object.metadata.resourceVersion);

test('ignore: updates changing only ignored paths are dropped and settle; others pass', async (t) => {
  const h = await stageHarness([
    {
      factory: dedupeStage,
      config: { ignore: ['status.lastHeartbeatTime', '/status/conditions/*/lastHeartbeatTime'] },
    },
  ]);
  t.after(() => h.close());
  await h.settle(delta('added', b1));
  await h.settle(delta('modified', b2, b1)); // heartbeat only (and resourceVersion, managedFields)
  await h.settle(delta('modified', b3, b2)); // phase
  await h.settle(delta('modified', b4, b3)); // spec
  await h.settle(delta('deleted', b4));
  assert.deepEqual(rvs(h.delivered.out as never), ['10', '12', '13', '13']);
  assert.equal(counter(h.metrics, 'crbridge_component_dropped_events_total', 'p/dedupe-0'), 1);
  assert.equal(counter(h.metrics, 'crbridge_component_received_events_total', 'p/dedupe-0'), 5);
});

test('paths: only the listed paths matter', async (t) => {
  const h = await stageHarness([{ factory: dedupeStage, config: { paths: ['/spec', 'status.phase'] } }]);
  t.after(() => h.close());
  await h.settle(delta('modified', b2, b1));
  await h.settle(delta('modified', b3, b2));
  await h.settle(delta('modified', b4, b3));
  const labelled = { ...b4, metadata: { ...b4.metadata, resourceVersion: '14', labels: { app: 'x' } } };
  await h.settle(delta('modified', labelled, b4)); // a label: not a listed path
  assert.deepEqual(rvs(h.delivered.out as never), ['12', '13']);
});

test('paths and ignore together: the ignored paths inside the listed ones do not count', async (t) => {
  const h = await stageHarness([
    {
      factory: dedupeStage,
      config: { paths: ['/status'], ignore: ['/status/lastHeartbeatTime', '/status/conditions/*/lastHeartbeatTime'] },
    },
  ]);
  t.after(() => h.close());
  await h.settle(delta('modified', b2, b1));
  await h.settle(delta('modified', b3, b2));
  assert.deepEqual(rvs(h.delivered.out as never), ['12']);
});

test('without an oldObject the patch decides; with neither the update passes', () => {
  const stage = dedupeStage.create(
    { ignore: ['/status/lastHeartbeatTime', '/status/conditions/*/lastHeartbeatTime'] },
    {
      id: 'p/d',
      pipeline: 'p',
      logger: captureLogger().logger,
      metrics: new Metrics(),
      stateDir: '/x',
      clusterName: 'c',
    },
  );
  const beatOnly = buildEvent(delta('modified', b2, b1), { clusterName: 'c' });
  const phase = buildEvent(delta('modified', b3, b2), { clusterName: 'c' });
  const noOld = (e: typeof beatOnly) => ({ ...e, data: { ...e.data, oldObject: undefined } });
  assert.ok(Array.isArray(beatOnly.data.patch) && beatOnly.data.patch.length > 0);
  assert.deepEqual(stage.process(noOld(beatOnly)), []);
  assert.equal((stage.process(noOld(phase)) as unknown[]).length, 1);
  const blind = { ...noOld(beatOnly), data: { ...noOld(beatOnly).data, patch: undefined } };
  assert.equal((stage.process(blind) as unknown[]).length, 1);
  // the input is never modified
  assert.equal(beatOnly.data.object.metadata.resourceVersion, '11');
  assert.ok(beatOnly.data.oldObject);
});
