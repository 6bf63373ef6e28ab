/**
 * The route stage in a real pipeline runner with three sinks: events go only to the sinks their
 * route names (first match, all matches, default, none), arrive without the routing annotation,
 * and an event routed away from a sink settles without waiting for that sink — a sink that is
 * stuck never holds back the checkpoint of the events it does not get.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DESTINATIONS, destinationsOf, withDestinations } from '../../../src/component.ts';
import { buildEvent } from '../../../src/events/build.ts';
import { routeStage } from '../../../src/stages/route/index.ts';
import { transformStage } from '../../../src/stages/transform/index.ts';
import { settlesWithin } from '../delivery/helpers.ts';
import { backup, delta } from '../events/fixtures.ts';
import { counter, stageHarness } from './harness.ts';

const failed = backup({ phase: 'Failed', rv: '1300' });
const running = backup({ phase: 'Running', rv: '1250' });
const completed = backup({ phase: 'Completed', rv: '1400' });
const phaseIs = (p: string) => `object.?status.?phase.orValue("") == "${p}"`;
const ids = (events: { data: { object: { metadata: { resourceVersion: string } } } }[]) =>
  events.map((e) => e.data.object.metadata.resourceVersion);

test('mode first: the first route met decides, else the default; a sink gets only what is routed to it', async (t) => {
  const h = await stageHarness(
    [
      {
        factory: routeStage,
        config: {
          routes: [
            { when: phaseIs('Failed'), sinks: ['kafka', 'alerts'] },
            { when: 'change == "deleted"', sinks: ['audit'] },
          ],
          default: ['kafka'],
        },
      },
    ],
    ['kafka', 'alerts', 'audit'],
  );
  t.after(() => h.close());
  await h.settle(delta('added', running));
  await h.settle(delta('modified', failed, running));
  await h.settle(delta('modified', completed, failed));
  await h.settle(delta('deleted', failed));
  assert.deepEqual(ids(h.delivered.kafka as never), ['1250', '1300', '1400', '1300']);
  assert.deepEqual(
    h.delivered.kafka?.map((e) => e.type.split('.').pop()),
    ['created', 'changed', 'changed', 'deleted'],
  );
  assert.deepEqual(ids(h.delivered.alerts as never), ['1300', '1300']);
  assert.equal(h.delivered.alerts?.[0]?.type.endsWith('status.changed'), true);
  assert.equal(h.delivered.alerts?.[1]?.type.endsWith('deleted'), true, 'first match: Failed before deleted');
  assert.deepEqual(h.delivered.audit, []);
  // nothing of the annotation reaches a sink
  for (const e of Object.values(h.delivered).flat()) {
    assert.deepEqual(Object.getOwnPropertySymbols(e), []);
    assert.equal(destinationsOf(e), undefined);
  }
  assert.equal(counter(h.metrics, 'crbridge_component_sent_events_total', 'p/route-0'), 4);
  assert.equal(counter(h.metrics, 'crbridge_component_dropped_events_total', 'p/route-0'), 0);
});

test('mode all: every route met adds its sinks; no route and no default drops the event (counted)', async (t) => {
  const h = await stageHarness(
    [
      {
        factory: routeStage,
        config: {
          mode: 'all',
          routes: [
            { when: phaseIs('Failed'), sinks: ['alerts'] },
            { when: 'change != "created"', sinks: ['kafka', 'alerts'] },
            { when: 'change == "deleted"', sinks: ['audit'] },
          ],
        },
      },
    ],
    ['kafka', 'alerts', 'audit'],
  );
  t.after(() => h.close());
  await h.settle(delta('added', running)); // no route, no default: dropped
  await h.settle(delta('modified', failed, running));
  await h.settle(delta('deleted', failed));
  assert.deepEqual(ids(h.delivered.kafka as never), ['1300', '1300']);
  assert.deepEqual(ids(h.delivered.alerts as never), ['1300', '1300'], 'named twice, delivered once');
  assert.deepEqual(
    h.delivered.audit?.map((e) => e.type.split('.').pop()),
    ['deleted'],
  );
  assert.equal(counter(h.metrics, 'crbridge_component_dropped_events_total', 'p/route-0'), 1);
});

test('an event routed away from a stuck sink settles without it; events for that sink wait for it', async (t) => {
  const h = await stageHarness(
    [{ factory: routeStage, config: { routes: [{ when: phaseIs('Failed'), sinks: ['alerts'] }], default: ['kafka'] } }],
    ['kafka', 'alerts'],
  );
  t.after(() => h.close());
  const release = h.hold('alerts');
  const { settled: toAlerts } = await h.push(delta('modified', failed, running));
  const { settled: toKafka } = await h.push(delta('modified', completed, failed));
  assert.equal(await settlesWithin(toKafka, 200), true, 'routed to kafka only: settles while alerts is stuck');
  assert.equal(await settlesWithin(toAlerts, 50), false, 'routed to alerts: waits for it');
  release();
  await toAlerts;
  assert.deepEqual(ids(h.delivered.alerts as never), ['1300']);
  assert.deepEqual(ids(h.delivered.kafka as never), ['1400']);
});

test('later stages keep the routing; the annotation is stripped before validation and delivery', async (t) => {
  const h = await stageHarness(
    [
      { factory: routeStage, config: { routes: [{ when: phaseIs('Failed'), sinks: ['alerts'] }], default: ['kafka'] } },
      {
        factory: transformStage,
        config: { set: { '/summary': '{{ object.metadata.name }} {{ object.status.phase }}' } },
      },
    ],
    ['kafka', 'alerts'],
  );
  t.after(() => h.close());
  await h.settle(delta('modified', failed, running));
  assert.equal(h.delivered.kafka?.length, 0);
  assert.equal(h.delivered.alerts?.[0]?.data.summary, 'orders-nightly Failed');
  assert.deepEqual(Object.getOwnPropertySymbols(h.delivered.alerts?.[0]), []);
  assert.equal(h.deadLetters.entries.length, 0);
});

test('withDestinations narrows an earlier routing, never widens it; the input event is unchanged', () => {
  const e = buildEvent(delta('added', running), { clusterName: 'c' });
  const a = withDestinations(e, ['kafka', 'alerts', 'kafka']);
  assert.deepEqual(destinationsOf(a), ['kafka', 'alerts']);
  assert.deepEqual(destinationsOf(withDestinations(a, ['alerts', 'audit'])), ['alerts']);
  assert.equal(DESTINATIONS in e, false);
  assert.equal(JSON.stringify(a), JSON.stringify(e));
});

test('route onError: deadLetter keeps the event there; skip treats the route as not met; drop drops', async (t) => {
  const routes = [{ when: 'object.status.phase == "Failed"', sinks: ['alerts'] }];
  for (const [onError, kafka, dead] of [
    ['deadLetter', 0, 1],
    ['skip', 1, 0],
    ['drop', 0, 0],
  ] as const) {
    const h = await stageHarness(
      [{ factory: routeStage, config: { routes, default: ['kafka'], onError } }],
      ['kafka', 'alerts'],
    );
    t.after(() => h.close());
    await h.settle(delta('added', backup({}))); // no status: the condition fails
    assert.equal(h.delivered.kafka?.length, kafka, onError);
    assert.equal(h.delivered.alerts?.length, 0, onError);
    assert.equal(h.deadLetters.entries.length, dead, onError);
    assert.equal(
      counter(h.metrics, 'crbridge_component_errors_total', 'p/route-0', { code: 'CRB_EXPRESSION' }),
      1,
      onError,
    );
  }
});
