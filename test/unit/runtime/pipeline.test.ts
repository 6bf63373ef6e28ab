/**
 * PipelineRunner's dead-letter and settle paths with a real DeliveryQueue and a fake sink: an
 * invalid event whose dead letter cannot be written stays unsettled while the write is retried
 * (counted, logged once), settles once it is written, holds back the deltas pushed after it, and
 * rejects with CRB_SHUTDOWN when the shutdown deadline comes first.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Stage } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import type { DeadLetter, DeadLetterEntry } from '../../../src/delivery/dead-letter.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { createEventValidator } from '../../../src/events/validate.ts';
import { type EventValidator, PipelineRunner } from '../../../src/runtime/pipeline.ts';
import { componentMetrics, Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger, FakeSink, settlesWithin, tick } from '../delivery/helpers.ts';
import { backup, delta } from '../events/fixtures.ts';

/** A dead letter that fails with `code` while `broken` is set. */
class FlakyDeadLetter implements DeadLetter {
  broken = true;
  attempts = 0;
  readonly entries: DeadLetterEntry[] = [];
  async write(entry: DeadLetterEntry): Promise<void> {
    this.attempts++;
    if (this.broken) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    this.entries.push(entry);
  }
  async close(): Promise<void> {}
}

/** Refuses events whose object has `spec.schedule` "invalid". */
const validator: EventValidator = {
  validate: (e: CloudEvent) =>
    (e.data as { object?: { spec?: { schedule?: string } } }).object?.spec?.schedule === 'invalid'
      ? { ok: false, level: 'object', errors: ['/spec/schedule: must be a cron expression'] }
      : { ok: true },
};

function setup() {
  const metrics = new Metrics();
  const { logger, lines } = captureLogger();
  const deadLetter = new FlakyDeadLetter();
  const sink = new FakeSink(10);
  const queue = new DeliveryQueue(sink, resolveDeliveryConfig(), { id: 'p/out', logger, metrics, deadLetter });
  const runner = new PipelineRunner({
    name: 'p',
    eventOptions: { clusterName: 'unit' },
    validator,
    stages: [],
    sinks: [{ id: 'p/out', queue }],
    deadLetter,
    logger,
    metrics,
    deadLetterRetry: { initialMs: 10, maxMs: 40 },
  });
  return { runner, deadLetter, sink, metrics, lines, m: componentMetrics(metrics) };
}

describe('PipelineRunner dead letters', () => {
  test('an invalid event whose dead letter cannot be written stays unsettled, retried until written', async () => {
    const { runner, deadLetter, sink, m, lines } = setup();
    await runner.start(new AbortController().signal);
    const { settled: bad } = await runner.push(delta('added', backup({ rv: '1', schedule: 'invalid' })));
    assert.equal(await settlesWithin(bad, 150), false, 'not settled while the dead letter fails');
    for (let i = 0; i < 300 && deadLetter.attempts < 3; i++) await tick(10); // however loaded the machine
    assert.ok(deadLetter.attempts >= 3, `${deadLetter.attempts} attempts`);
    assert.equal(m.deadLetterWriteFailures.get({ component: 'p' }), deadLetter.attempts);
    assert.equal(lines.filter((l) => l.code === 'CRB_DEAD_LETTER_WRITE').length, 1, 'logged once per cause');
    // a later, valid delta is delivered but does not settle before the earlier dead letter is written
    const { settled: good } = await runner.push(delta('modified', backup({ rv: '2' }), backup({ rv: '1' })));
    await tick(30);
    assert.equal(sink.sentIds.length, 1, 'delivered');
    assert.equal(await settlesWithin(good, 30), false, 'settles in push order');
    deadLetter.broken = false;
    await bad;
    await good;
    assert.equal(deadLetter.entries.length, 1);
    assert.equal(deadLetter.entries[0]?.code, 'CRB_EVENT_INVALID');
    assert.equal(m.deadLettered.get({ component: 'p' }), 1);
    await runner.shutdown(Date.now() + 500);
  });

  test('a delta the builder cannot turn into an event is dead-lettered durably too', async () => {
    const { runner, deadLetter } = setup();
    await runner.start(new AbortController().signal);
    const broken = backup({ rv: '1' });
    delete (broken.metadata as { uid?: string }).uid;
    const { settled } = await runner.push(delta('added', broken));
    assert.equal(await settlesWithin(settled, 60), false);
    deadLetter.broken = false;
    await settled;
    assert.equal(deadLetter.entries[0]?.event.type, 'io.crbridge.unbuilt');
    await runner.shutdown(Date.now() + 500);
  });

  test('a dead letter still failing at the shutdown deadline: its settled rejects with CRB_SHUTDOWN', async () => {
    const { runner, deadLetter } = setup();
    await runner.start(new AbortController().signal);
    const { settled } = await runner.push(delta('added', backup({ rv: '1', schedule: 'invalid' })));
    const outcome = settled.then(
      () => 'settled',
      (e: { code?: string }) => e.code,
    );
    await tick(30);
    const t0 = Date.now();
    await runner.shutdown(Date.now() + 150);
    const took = Date.now() - t0;
    assert.ok(took >= 140 && took < 500, `shutdown took ${took} ms`);
    assert.equal(await outcome, 'CRB_SHUTDOWN');
    assert.equal(deadLetter.entries.length, 0);
  });
});

describe('PipelineRunner checks what the stages produced', () => {
  test('an event a stage broke (envelope, replaced data, size) is dead-lettered; the others are delivered', async () => {
    const metrics = new Metrics();
    const { logger } = captureLogger();
    const deadLetter = new FlakyDeadLetter();
    deadLetter.broken = false;
    const sink = new FakeSink(10);
    const queue = new DeliveryQueue(sink, resolveDeliveryConfig(), { id: 'p/out', logger, metrics, deadLetter });
    const breaker: Stage = {
      process(e) {
        const name = (e.data as { object: { metadata: { name: string } } }).object.metadata.name;
        if (name === 'attr') return [{ ...e, BadName: 'x' } as CloudEvent];
        if (name === 'data') return [{ ...e, data: { reason: 42 } } as unknown as CloudEvent];
        if (name === 'huge') return [{ ...e, data: { ...e.data, note: 'x'.repeat(5000) } } as CloudEvent];
        if (name === 'tag') return [{ ...e, team: 'payments' } as CloudEvent];
        return [e];
      },
    };
    const runner = new PipelineRunner({
      name: 'p',
      eventOptions: { clusterName: 'unit', maxBytes: 4000 },
      validator: createEventValidator(),
      stages: [{ id: 'p/breaker', stage: breaker }],
      sinks: [{ id: 'p/out', queue }],
      deadLetter,
      logger,
      metrics,
    });
    await runner.start(new AbortController().signal);
    for (const name of ['attr', 'data', 'huge', 'tag', 'plain']) {
      const b = backup({ rv: '1' });
      const obj = { ...b, metadata: { ...b.metadata, name, uid: `uid-${name}` } };
      const { settled } = await runner.push(delta('added', obj));
      await settled;
    }
    assert.deepEqual(
      sink.sentIds.map((i) => i.split('.')[0]),
      ['uid-tag', 'uid-plain'],
      'what the stages left valid is delivered',
    );
    assert.deepEqual(
      deadLetter.entries.map((d) => [d.event.id.split('.')[0], d.errors[0]?.split(':')[0]]),
      [
        ['uid-attr', 'envelope after the stages'],
        ['uid-data', 'data after the stages'],
        ['uid-huge', 'size after the stages'],
      ],
    );
    await runner.shutdown(Date.now() + 500);
  });
});
