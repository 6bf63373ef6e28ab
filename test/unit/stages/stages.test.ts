/**
 * The filter and enrich stages inside a real pipeline runner (event builder, validator, delivery
 * queue, dead letters; only the sink is a fake that records what it got): what passes, what is
 * dropped and counted, what each `onError` does with an expression that fails, and the attributes
 * enrich sets.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { StageFactory } from '../../../src/component.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { enrichStage } from '../../../src/stages/enrich/index.ts';
import { filterStage } from '../../../src/stages/filter/index.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger } from '../delivery/helpers.ts';
import { backup, delta } from '../events/fixtures.ts';
import { counter, stageHarness } from './harness.ts';

/** The shared stage harness with one sink (`out`), its pushes awaited until settled. */
async function harness(stages: { factory: StageFactory; config: Record<string, unknown> }[]) {
  const h = await stageHarness(stages);
  return { ...h, push: h.settle, delivered: h.delivered.out as CloudEvent[] };
}

const failed = backup({ phase: 'Failed', rv: '1300' });
const running = backup({ phase: 'Running', rv: '1250' });

test('filter keeps the events its expression is true for and drops and counts the others', async (t) => {
  const h = await harness([
    { factory: filterStage, config: { expression: 'change == "deleted" || object.status.phase == "Failed"' } },
  ]);
  t.after(() => h.close());
  await h.push(delta('added', running));
  await h.push(delta('modified', failed, running));
  await h.push(delta('modified', { ...running, metadata: { ...running.metadata, resourceVersion: '1400' } }, failed));
  await h.push(delta('deleted', running));
  assert.deepEqual(
    h.delivered.map((e) => e.type.split('.').slice(-2).join('.')),
    ['status.changed', 'backup.deleted'],
  );
  assert.equal(counter(h.metrics, 'crbridge_component_received_events_total', 'p/filter-0'), 4);
  assert.equal(counter(h.metrics, 'crbridge_component_sent_events_total', 'p/filter-0'), 2);
  assert.equal(counter(h.metrics, 'crbridge_component_dropped_events_total', 'p/filter-0'), 2);
  assert.equal(h.deadLetters.entries.length, 0);
});

test('filter onError: deadLetter (default) keeps the event in the dead letters with the expression and the error', async (t) => {
  const h = await harness([{ factory: filterStage, config: { expression: 'object.status.phase == "Failed"' } }]);
  t.after(() => h.close());
  const noStatus = backup({});
  await h.push(delta('added', noStatus));
  await h.push(delta('added', failed));
  assert.equal(h.delivered.length, 1);
  assert.equal(h.deadLetters.entries.length, 1);
  const dl = h.deadLetters.entries[0];
  assert.equal(dl?.code, 'CRB_EXPRESSION');
  assert.equal(dl?.event.data.object.metadata.uid, noStatus.metadata.uid);
  assert.match(
    dl?.errors[0] ?? '',
    /stage p\/filter-0: CEL expression "object\.status\.phase == \\"Failed\\"" failed: No such key: status/,
  );
  assert.equal(counter(h.metrics, 'crbridge_component_errors_total', 'p/filter-0', { code: 'CRB_EXPRESSION' }), 1);
});

test('filter onError: drop and keep go on, count and log once per kind', async (t) => {
  for (const [onError, delivered] of [
    ['drop', 1],
    ['keep', 3],
  ] as const) {
    const h = await harness([
      { factory: filterStage, config: { expression: 'object.status.phase == "Failed"', onError } },
    ]);
    t.after(() => h.close());
    await h.push(delta('added', backup({})));
    await h.push(delta('added', backup({ rv: '1500' })));
    await h.push(delta('added', failed));
    assert.equal(h.delivered.length, delivered, onError);
    assert.equal(h.deadLetters.entries.length, 0);
    assert.equal(counter(h.metrics, 'crbridge_component_errors_total', 'p/filter-0', { code: 'CRB_EXPRESSION' }), 2);
    assert.equal(
      h.logs.filter((l) => l.msg === `CEL expression failed; the event is ${onError === 'keep' ? 'kept' : 'dropped'}`)
        .length,
      1,
    );
  }
});

test('filter: a dyn expression that yields a non-bool is a failure, not a silent keep', async (t) => {
  const h = await harness([{ factory: filterStage, config: { expression: 'object.spec.databaseName' } }]);
  t.after(() => h.close());
  await h.push(delta('added', running));
  assert.equal(h.delivered.length, 0);
  assert.match(h.deadLetters.entries[0]?.errors[0] ?? '', /produced string, not a bool/);
});

test('enrich sets extension attributes from expressions; null leaves one out; data is shared, not changed', async (t) => {
  const h = await harness([
    {
      factory: enrichStage,
      config: {
        attributes: {
          team: 'object.metadata.?labels["app"].orValue("none")',
          tier: 'object.metadata.labels["example.com/tier"]',
          phase: 'has(object.status) && has(object.status.phase) ? object.status.phase : null',
          generation: 'object.metadata.generation + 1',
          deleted: 'change == "deleted"',
        },
      },
    },
  ]);
  t.after(() => h.close());
  await h.push(delta('modified', failed, running));
  await h.push(delta('added', backup({})));
  const [a, b] = h.delivered;
  assert.equal(a?.team, 'orders');
  assert.equal(a?.tier, 'gold');
  assert.equal(a?.phase, 'Failed');
  assert.equal(a?.generation, 2);
  assert.equal(a?.deleted, false);
  assert.equal('phase' in (b ?? {}), false);
  assert.equal(a?.k8sname, 'orders-nightly', 'crbridge attributes stay');
});

test('enrich copies the event shallowly: the input event is unchanged and the data is shared', () => {
  const { logger } = captureLogger();
  const stage = enrichStage.create(
    { attributes: { team: '"payments"' } },
    { id: 'p/e', pipeline: 'p', logger, metrics: new Metrics(), stateDir: '/x', clusterName: 'c' },
  );
  const event = buildEvent(delta('added', running), { clusterName: 'c' });
  const [out] = stage.process(event) as CloudEvent[];
  assert.equal(out?.team, 'payments');
  assert.equal('team' in event, false);
  assert.equal(out?.data, event.data);
});

test('enrich onError: omit leaves the failing attribute out; drop drops the event; deadLetter keeps it there', async (t) => {
  const attributes = { app: 'object.metadata.labels["app"]', owner: 'object.metadata.annotations["owner"]' };
  for (const [onError, delivered, dead] of [
    ['omit', 1, 0],
    ['drop', 0, 0],
    ['deadLetter', 0, 1],
  ] as const) {
    const h = await harness([{ factory: enrichStage, config: { attributes, onError } }]);
    t.after(() => h.close());
    await h.push(delta('added', running));
    assert.equal(h.delivered.length, delivered, onError);
    assert.equal(h.deadLetters.entries.length, dead, onError);
    if (onError === 'omit') {
      assert.equal(h.delivered[0]?.app, 'orders');
      assert.equal('owner' in (h.delivered[0] ?? {}), false);
    }
  }
});

test('filter then enrich: only kept events are enriched, in order', async (t) => {
  const h = await harness([
    { factory: filterStage, config: { expression: 'change != "created"' } },
    { factory: enrichStage, config: { attributes: { seen: 'event.k8sresourceversion' } } },
  ]);
  t.after(() => h.close());
  await h.push(delta('added', running));
  await h.push(delta('modified', failed, running));
  await h.push(delta('deleted', failed));
  assert.deepEqual(
    h.delivered.map((e) => e.seen),
    ['1300', '1300'],
  );
  assert.equal(counter(h.metrics, 'crbridge_component_received_events_total', 'p/enrich-1'), 2);
});
