/**
 * The delivery latency histogram: a DeliveryQueue observes, per sink, the seconds from each
 * acknowledged event's `time` to the ack; retried events count once, when acknowledged;
 * dead-lettered events are not observed. A new queue exports its gauges at 0.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeliveryResult } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics, secondsSince } from '../../../src/telemetry/metrics.ts';
import { metricSum } from '../../support/prom.ts';
import { ev, FakeSink, MemoryDeadLetter } from '../delivery/helpers.ts';

const at = (id: string, uid: string, msAgo: number): CloudEvent => ({
  ...ev(id, uid),
  time: new Date(Date.now() - msAgo).toISOString(),
});

test('delivery latency: seconds from the event time to the ack, per sink, once per acknowledged event', async () => {
  const metrics = new Metrics();
  let call = 0;
  const sink = new FakeSink(10, (batch) =>
    batch.map((o): DeliveryResult => {
      if (o.event.id === 'bad') return { status: 'permanent', error: 'no' };
      // the first attempt of `slow` fails: it is observed once, after its retry
      if (o.event.id === 'slow' && call++ === 0) return { status: 'retryable', error: 'later' };
      return { status: 'ok' };
    }),
  );
  const config = resolveDeliveryConfig({
    retry: { initialIntervalMs: 200, maxIntervalMs: 200, multiplier: 1, randomizationFactor: 0 },
  });
  const queue = new DeliveryQueue(sink, config, {
    id: 'p/out',
    logger: silentLogger,
    metrics,
    deadLetter: new MemoryDeadLetter(),
  });
  const abort = new AbortController();
  await queue.start(abort.signal);
  const settled = await Promise.all([
    queue.enqueue(at('old', 'u1', 3000), abort.signal),
    queue.enqueue(at('slow', 'u2', 0), abort.signal),
    queue.enqueue(at('bad', 'u3', 0), abort.signal),
  ]);
  await Promise.all(settled.map((s) => s.settled));
  const text = metrics.render();
  const L = { component: 'p/out' };
  assert.equal(metricSum(text, 'crbridge_component_delivery_latency_seconds_count', L), 2, 'old and slow, not bad');
  const sum = metricSum(text, 'crbridge_component_delivery_latency_seconds_sum', L);
  // old: about 3 s; slow: its retry after 200 ms
  assert.ok(sum >= 3.2 && sum < 4.5, `sum ${sum}`);
  assert.equal(metricSum(text, 'crbridge_component_delivery_latency_seconds_bucket', { ...L, le: '0.1' }), 0);
  assert.equal(metricSum(text, 'crbridge_component_delivery_latency_seconds_bucket', { ...L, le: '1' }), 1);
  assert.equal(metricSum(text, 'crbridge_component_delivery_latency_seconds_bucket', { ...L, le: '5' }), 2);
  assert.equal(metricSum(text, 'crbridge_component_delivery_latency_seconds_bucket', { ...L, le: '+Inf' }), 2);
  await queue.shutdown(Date.now() + 1000);
});

test('secondsSince: a time in the future or unreadable counts 0', () => {
  const now = Date.parse('2026-01-01T00:00:10Z');
  assert.equal(secondsSince('2026-01-01T00:00:00Z', now), 10);
  assert.equal(secondsSince('2026-01-01T00:00:20Z', now), 0);
  assert.equal(secondsSince('not a time', now), 0);
  assert.equal(secondsSince(undefined, now), 0);
});

test("a sink queue's gauges exist at 0 from its construction (dashboards and crbridge top list the sink at once)", () => {
  const metrics = new Metrics();
  new DeliveryQueue(new FakeSink(), resolveDeliveryConfig({}), {
    id: 'p/idle',
    logger: silentLogger,
    metrics,
    deadLetter: new MemoryDeadLetter(),
  });
  const text = metrics.render();
  for (const name of [
    'crbridge_component_queue_depth',
    'crbridge_component_queue_bytes',
    'crbridge_component_in_flight_sends',
  ])
    assert.match(text, new RegExp(`^${name}\\{component="p/idle"\\} 0$`, 'm'), name);
});
