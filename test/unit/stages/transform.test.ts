/**
 * The transform stage in a real pipeline runner: keep, drop, rename and set (templates) shape the
 * data each sink receives, what the event contract requires always stays, the result passes the
 * validation after the stages, and the input event (shared with other sinks) is never modified.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildEvent } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { createEventValidator } from '../../../src/events/validate.ts';
import { transformStage } from '../../../src/stages/transform/index.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger } from '../delivery/helpers.ts';
import { backup, delta } from '../events/fixtures.ts';
import { counter, stageHarness } from './harness.ts';

const failed = backup({ phase: 'Failed', rv: '1300' });
const running = backup({ phase: 'Running', rv: '1250' });

test('keep only some paths: the contract fields stay, the rest goes; the event stays valid', async (t) => {
  const h = await stageHarness([{ factory: transformStage, config: { keep: ['/object/status', 'transition'] } }]);
  t.after(() => h.close());
  await h.settle(delta('modified', failed, running));
  const [e] = h.delivered.out as CloudEvent[];
  assert.deepEqual(e?.data, {
    reason: 'live',
    object: {
      metadata: {
        name: 'orders-nightly',
        namespace: 'shop',
        uid: failed.metadata.uid,
        resourceVersion: '1300',
      },
      status: { phase: 'Failed' },
    },
    transition: e?.data.transition,
  });
  assert.equal(e?.data.transition?.to, 'Failed');
  assert.equal(h.deadLetters.entries.length, 0);
});

test('keep with oldObject paths keeps the old object valid too', async (t) => {
  const h = await stageHarness([{ factory: transformStage, config: { keep: ['/*/status'] } }]);
  t.after(() => h.close());
  await h.settle(delta('modified', failed, running));
  const [e] = h.delivered.out as CloudEvent[];
  assert.deepEqual(e?.data.oldObject?.status, { phase: 'Running' });
  assert.equal(e?.data.oldObject?.metadata.resourceVersion, '1250');
  assert.equal(h.deadLetters.entries.length, 0);
});

test('drop, rename and set with templates, applied in order; templates see the event as it came in', async (t) => {
  const h = await stageHarness([
    {
      factory: transformStage,
      config: {
        drop: ['/oldObject', '/patch', '/object/metadata/labels'],
        rename: { '/object/status/phase': '/phase' },
        set: {
          '/summary':
            'Backup {{ object.metadata.name }} is {{ object.status.phase }} (was {{ oldObject.status.phase }})',
          'object.metadata.annotations.note': '{{ size(object.metadata.labels) }} labels',
          '/missing': '{{ object.spec.nope }}!',
        },
      },
    },
  ]);
  t.after(() => h.close());
  await h.settle(delta('modified', failed, running));
  const [e] = h.delivered.out as CloudEvent[];
  assert.equal(e?.data.summary, 'Backup orders-nightly is Failed (was Running)');
  assert.equal(e?.data.phase, 'Failed');
  assert.deepEqual(e?.data.object.status, {});
  assert.equal(e?.data.object.metadata.labels, undefined);
  assert.deepEqual(e?.data.object.metadata.annotations, { note: '2 labels' });
  assert.equal('oldObject' in (e?.data ?? {}), false);
  assert.equal('patch' in (e?.data ?? {}), false);
  assert.equal(e?.data.missing, '<error>!');
  assert.equal(counter(h.metrics, 'crbridge_component_errors_total', 'p/transform-0', { code: 'CRB_EXPRESSION' }), 1);
  assert.equal(h.deadLetters.entries.length, 0);
});

test('the input event and its objects are never modified; the result passes validation', () => {
  const stage = transformStage.create(
    { drop: ['/object/spec'], rename: { '/object/status/phase': '/object/status/was' }, set: { '/x': 'y' } },
    {
      id: 'p/t',
      pipeline: 'p',
      logger: captureLogger().logger,
      metrics: new Metrics(),
      stateDir: '/x',
      clusterName: 'c',
    },
  );
  const event = buildEvent(delta('modified', failed, running), { clusterName: 'c' });
  const before = structuredClone(event);
  const [out] = stage.process(event) as CloudEvent[];
  assert.deepEqual(event, before);
  assert.deepEqual(out?.data.object.status, { was: 'Failed' });
  assert.equal(out?.data.object.spec, undefined);
  assert.equal(out?.data.x, 'y');
  assert.equal(out?.data.oldObject, event.data.oldObject, 'untouched parts are shared, not copied');
  assert.deepEqual(createEventValidator().validateChanged?.(out as CloudEvent, event), { ok: true });
});
