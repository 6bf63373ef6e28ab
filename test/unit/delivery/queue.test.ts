/**
 * DeliveryQueue against a scriptable fake sink: batching in queue order, back-pressure, retry with
 * exponential backoff (timed with small intervals), Retry-After, per-order retry of failed heads,
 * permanent and exhausted events to the dead letter, `settled` semantics, shutdown drain and
 * deadline, metrics and log-once behaviour; concurrency with lanes per object (a property test over
 * random outcomes and latencies), per-object backoff, the outage report and the age rule; and that
 * taking a batch never walks objects that are blocked (in flight or backing off).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { DeliveryResult, OutboundEvent } from '../../../src/component.ts';
import { type DeliveryConfig, resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { DeliveryQueue, objectKey, retryDelay } from '../../../src/delivery/queue.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { componentMetrics, Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger, ev, FakeSink, MemoryDeadLetter, settlesWithin, tick } from './helpers.ts';

const fast = (over: Partial<DeliveryConfig['retry']> = {}, top: Partial<DeliveryConfig> = {}): DeliveryConfig =>
  resolveDeliveryConfig({
    ...top,
    retry: { initialIntervalMs: 10, maxIntervalMs: 1000, multiplier: 2, randomizationFactor: 0, ...over },
  });

function setup(sink: FakeSink, config: DeliveryConfig, logger = silentLogger) {
  const metrics = new Metrics();
  const deadLetter = new MemoryDeadLetter();
  const queue = new DeliveryQueue(sink, config, { id: 'p/s', logger, metrics, deadLetter });
  const abort = new AbortController();
  return { queue, metrics, m: componentMetrics(metrics), deadLetter, abort };
}

const L = { component: 'p/s' };

describe('DeliveryQueue', () => {
  test('delivers in queue order in batches of min(sink.maxBatch, config.maxBatch), settling each event', async () => {
    const sink = new FakeSink(10);
    const { queue, m, abort } = setup(sink, fast({}, { maxBatch: 7 }));
    const settled: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) settled.push((await queue.enqueue(ev(`e${i}`))).settled);
    assert.equal(queue.depth, 20);
    await queue.start(abort.signal);
    await Promise.all(settled);
    assert.deepEqual(
      sink.calls.map((c) => c.ids.length),
      [7, 7, 6],
    );
    assert.deepEqual(
      sink.sentIds,
      Array.from({ length: 20 }, (_, i) => `e${i}`),
    );
    assert.equal(m.received.get(L), 20);
    assert.equal(m.sent.get(L), 20);
    assert.equal(m.queueDepth.get(L), 0);
    assert.equal(queue.depth, 0);
    await queue.shutdown(Date.now() + 1000);
    assert.equal(sink.started, 1);
    assert.equal(sink.shutdowns, 1);
  });

  test('send is never concurrent for one sink', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const sink = new FakeSink(2, async (b) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await tick(2);
      inFlight--;
      return b.map(() => ({ status: 'ok' }));
    });
    const { queue, abort } = setup(sink, fast());
    await queue.start(abort.signal);
    const settled = await Promise.all(Array.from({ length: 9 }, (_, i) => queue.enqueue(ev(`e${i}`))));
    await Promise.all(settled.map((s) => s.settled));
    assert.equal(maxInFlight, 1);
    assert.equal(sink.sentIds.length, 9);
    await queue.shutdown(Date.now() + 1000);
  });

  test('enqueue waits for room when the queue is full (back-pressure)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const sink = new FakeSink(1, async (b) => {
      await gate;
      return b.map(() => ({ status: 'ok' }));
    });
    const { queue, abort } = setup(sink, fast({}, { queueCapacity: 3 }));
    await queue.start(abort.signal);
    for (let i = 0; i < 3; i++) await queue.enqueue(ev(`e${i}`));
    const fourth = queue.enqueue(ev('e3'));
    assert.equal(await settlesWithin(fourth, 30), false, 'the 4th enqueue must wait while 3 are queued');
    assert.equal(queue.depth, 3);
    release();
    const { settled } = await fourth;
    await settled;
    assert.deepEqual(sink.sentIds, ['e0', 'e1', 'e2', 'e3']);
    await queue.shutdown(Date.now() + 1000);
  });

  test('retries retryable failures with exponential backoff, then delivers; warns once per streak', async () => {
    const sink = new FakeSink(10, (b, call) =>
      b.map(() => (call <= 3 ? { status: 'retryable', error: 'connection refused' } : { status: 'ok' })),
    );
    const { logger, lines } = captureLogger();
    const { queue, m, abort } = setup(sink, fast({ initialIntervalMs: 20 }), logger);
    await queue.start(abort.signal);
    const { settled } = await queue.enqueue(ev('a'));
    await settled;
    assert.equal(sink.calls.length, 4);
    const gaps = sink.calls.slice(1).map((c, i) => c.at - (sink.calls[i]?.at ?? 0));
    const expected = [20, 40, 80];
    for (let i = 0; i < 3; i++) {
      assert.ok((gaps[i] ?? 0) >= (expected[i] ?? 0) - 2, `gap ${i} = ${gaps[i]} >= ${expected[i]}`);
      assert.ok((gaps[i] ?? 0) < (expected[i] ?? 0) + 60, `gap ${i} = ${gaps[i]} not far above ${expected[i]}`);
    }
    assert.deepEqual(
      sink.calls.map((c) => c.attempts[0]),
      [1, 2, 3, 4],
    );
    assert.equal(m.retries.get(L), 3);
    assert.equal(m.errors.get({ ...L, code: 'CRB_DELIVERY_RETRYABLE' }), 3);
    assert.equal(m.sent.get(L), 1);
    const warns = lines.filter((l) => l.level === 'warn');
    assert.equal(warns.length, 1);
    assert.equal(warns[0]?.msg, 'delivery failing; retrying with backoff');
    assert.equal(warns[0]?.error, 'connection refused');
    assert.equal(lines.filter((l) => l.msg === 'delivery recovered').length, 1);
    await queue.shutdown(Date.now() + 1000);
  });

  test('a failure its first retry clears is counted but not warned of; the next failure that persists is', async () => {
    let failUntil = 1;
    const sink = new FakeSink(10, (b, call) =>
      b.map(() => (call <= failUntil ? { status: 'retryable', error: 'NOT_LEADER_FOR_PARTITION' } : { status: 'ok' })),
    );
    const { logger, lines } = captureLogger();
    const { queue, m, abort } = setup(sink, fast({ initialIntervalMs: 5 }), logger);
    await queue.start(abort.signal);
    await (await queue.enqueue(ev('a'))).settled;
    assert.equal(sink.calls.length, 2);
    assert.equal(m.retries.get(L), 1);
    assert.deepEqual(
      lines.filter((l) => l.level !== 'debug'),
      [],
      'a blip is logged at debug only',
    );
    assert.ok(lines.some((l) => l.msg === 'delivery recovered at the first retry'));
    // the next episode fails twice in a row: warned once, and its recovery logged
    failUntil = 5;
    await (await queue.enqueue(ev('b'))).settled;
    assert.equal(sink.calls.length, 6, 'calls 3, 4 and 5 fail');
    const warns = lines.filter((l) => l.level === 'warn');
    assert.equal(warns.length, 1);
    assert.equal(warns[0]?.error, 'NOT_LEADER_FOR_PARTITION');
    assert.equal(lines.filter((l) => l.msg === 'delivery recovered').length, 1);
    await queue.shutdown(Date.now() + 1000);
  });

  test('honours Retry-After when it is longer than the backoff', async () => {
    const sink = new FakeSink(10, (b, call) =>
      b.map(
        (): DeliveryResult =>
          call === 1 ? { status: 'retryable', error: '429', retryAfterMs: 150 } : { status: 'ok' },
      ),
    );
    const { queue, abort } = setup(sink, fast({ initialIntervalMs: 5 }));
    await queue.start(abort.signal);
    await (await queue.enqueue(ev('a'))).settled;
    const gap = (sink.calls[1]?.at ?? 0) - (sink.calls[0]?.at ?? 0);
    assert.ok(gap >= 148, `waited ${gap} ms, Retry-After was 150`);
    await queue.shutdown(Date.now() + 1000);
  });

  test('a thrown send error counts as retryable for the whole batch', async () => {
    const sink = new FakeSink(10, (b, call) => {
      if (call === 1) throw new Error('socket hang up');
      return b.map(() => ({ status: 'ok' }));
    });
    const { queue, m, abort } = setup(sink, fast());
    await queue.start(abort.signal);
    const s = await Promise.all([queue.enqueue(ev('a')), queue.enqueue(ev('b'))]);
    await Promise.all(s.map((x) => x.settled));
    assert.equal(sink.calls.length >= 2, true);
    assert.deepEqual(sink.calls.at(-1)?.ids, ['a', 'b']);
    assert.equal(m.retries.get(L) >= 1, true);
    await queue.shutdown(Date.now() + 1000);
  });

  test('failed events are re-sent, in order, before the later events of their object (those the sink took go again)', async () => {
    const sink = new FakeSink(3, (b, call) =>
      b.map(
        (o): DeliveryResult =>
          call === 1 && o.event.id === 'b' ? { status: 'retryable', error: 'x' } : { status: 'ok' },
      ),
    );
    const { queue, abort } = setup(sink, fast());
    const all = [];
    for (const id of ['a', 'b', 'c', 'd', 'e']) all.push((await queue.enqueue(ev(id))).settled);
    await queue.start(abort.signal);
    await Promise.all(all);
    // all five are events of one object: c, answered ok after b failed, goes again after b
    assert.deepEqual(
      sink.calls.map((c) => c.ids),
      [['a', 'b', 'c'], ['b', 'c', 'd'], ['e']],
    );
    assert.deepEqual(sink.calls[1]?.attempts, [2, 2, 1]);
    await queue.shutdown(Date.now() + 1000);
  });

  test('permanent failures go to the dead letter and settle; the rest are delivered', async () => {
    const sink = new FakeSink(10, (b) =>
      b.map(
        (o): DeliveryResult => (o.event.id === 'bad' ? { status: 'permanent', error: 'too large' } : { status: 'ok' }),
      ),
    );
    const { logger, lines } = captureLogger();
    const { queue, m, deadLetter, abort } = setup(sink, fast(), logger);
    const s = [];
    for (const id of ['a', 'bad', 'c']) s.push((await queue.enqueue(ev(id))).settled);
    await queue.start(abort.signal);
    await Promise.all(s);
    assert.equal(sink.calls.length, 1);
    assert.equal(deadLetter.entries.length, 1);
    const entry = deadLetter.entries[0];
    assert.equal(entry?.event.id, 'bad');
    assert.equal(entry?.code, 'CRB_DELIVERY_PERMANENT');
    assert.deepEqual(entry?.errors, ['too large']);
    assert.equal(entry?.component, 'p/s');
    assert.equal(entry?.attempts, 1);
    assert.equal(m.sent.get(L), 2);
    assert.equal(m.deadLettered.get(L), 1);
    assert.equal(m.errors.get({ ...L, code: 'CRB_DELIVERY_PERMANENT' }), 1);
    assert.equal(lines.filter((l) => l.msg === 'events dead-lettered').length, 1);
    await queue.shutdown(Date.now() + 1000);
  });

  test('an event that keeps failing past maxElapsedMs while the endpoint answers others is dead-lettered as exhausted', async () => {
    const sink = new FakeSink(10, (b) =>
      b.map(
        (o): DeliveryResult => (o.event.id === 'a' ? { status: 'retryable', error: 'broker down' } : { status: 'ok' }),
      ),
    );
    const { queue, deadLetter, abort } = setup(
      sink,
      fast({ initialIntervalMs: 10, maxIntervalMs: 20, maxElapsedMs: 80 }, { concurrency: 2 }),
    );
    await queue.start(abort.signal);
    const t0 = Date.now();
    const { settled } = await queue.enqueue(ev('a', 'uid-a'));
    // another object keeps the endpoint answering
    let others = 0;
    const feeder = (async () => {
      while (!(await settlesWithin(settled, 5))) {
        await (await queue.enqueue(ev(`o${others}`, `uid-o${others}`))).settled;
        others++;
      }
    })();
    await settled;
    await feeder;
    assert.ok(Date.now() - t0 >= 80);
    assert.ok(others >= 5, `others delivered meanwhile: ${others}`);
    assert.equal(deadLetter.entries.length, 1);
    const entry = deadLetter.entries[0];
    assert.equal(entry?.event.id, 'a');
    assert.equal(entry?.code, 'CRB_DELIVERY_RETRYABLE');
    assert.match(entry?.errors[0] ?? '', /^retries exhausted after \d+ attempts in \d+ ms: broker down$/);
    assert.ok((entry?.attempts ?? 0) >= 3, `attempts ${entry?.attempts}`);
    assert.equal(queue.depth, 0);
    await queue.shutdown(Date.now() + 1000);
  });

  test('while the whole endpoint is down nothing ages: events are kept past maxElapsedMs, and the outage is reported once', async () => {
    let up = false;
    const sink = new FakeSink(10, (b) =>
      b.map((): DeliveryResult => (up ? { status: 'ok' } : { status: 'retryable', error: 'connection refused' })),
    );
    const { logger, lines } = captureLogger();
    const { queue, m, deadLetter, abort } = setup(
      sink,
      fast({ initialIntervalMs: 5, maxIntervalMs: 10, maxElapsedMs: 40 }, { outageAlertMs: 1000 }),
      logger,
    );
    // outageAlertMs has a schema minimum of 1 s; a test may go lower through the resolved config
    (queue as unknown as { config: DeliveryConfig }).config.outageAlertMs = 60;
    await queue.start(abort.signal);
    const s = [];
    for (const id of ['a', 'b', 'c']) s.push((await queue.enqueue(ev(id, `uid-${id}`))).settled);
    await tick(30);
    assert.equal(m.failing.get(L), 0, 'not yet reported');
    await tick(170);
    assert.equal(await settlesWithin(Promise.all(s), 0), false);
    assert.equal(deadLetter.entries.length, 0, 'nothing dead-lettered by age while the endpoint is down');
    assert.equal(m.failing.get(L), 1);
    assert.ok(m.failingSeconds.get(L) >= 0.1, `failing for ${m.failingSeconds.get(L)} s`);
    const alerts = lines.filter((l) => l.msg === 'endpoint failing continuously; its events stay queued');
    assert.equal(alerts.length, 1);
    assert.equal(alerts[0]?.level, 'error');
    assert.equal(alerts[0]?.queued, 3);
    up = true;
    await Promise.all(s);
    assert.equal(deadLetter.entries.length, 0);
    assert.equal(m.failing.get(L), 0);
    assert.equal(m.failingSeconds.get(L), 0);
    assert.equal(lines.filter((l) => l.msg === 'endpoint answering again').length, 1);
    assert.equal(lines.filter((l) => l.msg === 'delivery recovered').length, 1);
    await queue.shutdown(Date.now() + 1000);
  });

  test('maxElapsedMs 0 retries forever: settled stays open while the sink fails', async () => {
    let up = false;
    const sink = new FakeSink(10, (b) =>
      b.map((): DeliveryResult => (up ? { status: 'ok' } : { status: 'retryable', error: 'down' })),
    );
    const { queue, deadLetter, abort } = setup(sink, fast({ initialIntervalMs: 5, maxIntervalMs: 20 }));
    await queue.start(abort.signal);
    const { settled } = await queue.enqueue(ev('a'));
    assert.equal(await settlesWithin(settled, 200), false);
    assert.ok(sink.calls.length >= 5);
    up = true;
    await settled;
    assert.equal(deadLetter.entries.length, 0);
    await queue.shutdown(Date.now() + 1000);
  });

  test('shutdown drains the queue, shuts the sink down once, is idempotent and refuses new events', async () => {
    const sink = new FakeSink(2, async (b) => {
      await tick(5);
      return b.map(() => ({ status: 'ok' }));
    });
    const { queue, abort } = setup(sink, fast());
    await queue.start(abort.signal);
    const s = [];
    for (let i = 0; i < 7; i++) s.push((await queue.enqueue(ev(`e${i}`))).settled);
    const p1 = queue.shutdown(Date.now() + 5000);
    const p2 = queue.shutdown(Date.now() + 5000);
    assert.equal(p1, p2);
    await p1;
    assert.equal(sink.sentIds.length, 7);
    assert.equal(await settlesWithin(Promise.all(s), 5), true);
    assert.equal(sink.shutdowns, 1);
    await assert.rejects(queue.enqueue(ev('late')), /shut down/);
  });

  test('at the shutdown deadline undelivered events are reported and their settled rejects with CRB_SHUTDOWN', async () => {
    const sink = new FakeSink(10, (b) => b.map(() => ({ status: 'retryable', error: 'down' })));
    const { logger, lines } = captureLogger();
    const { queue, m, abort } = setup(sink, fast({ initialIntervalMs: 10_000 }), logger);
    await queue.start(abort.signal);
    const s = [];
    for (let i = 0; i < 4; i++) s.push((await queue.enqueue(ev(`e${i}`))).settled);
    await tick(20);
    const t0 = Date.now();
    await queue.shutdown(Date.now() + 100);
    const took = Date.now() - t0;
    assert.ok(took >= 90 && took < 1000, `shutdown took ${took} ms`);
    const report = lines.find((l) => l.msg === 'shutdown deadline reached with events undelivered');
    assert.equal(report?.undelivered, 4);
    assert.equal(report?.code, 'CRB_SHUTDOWN');
    const outcomes = await Promise.allSettled(s);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.equal((o as PromiseRejectedResult).reason.code, 'CRB_SHUTDOWN');
    }
    assert.equal(queue.depth, 0);
    assert.equal(m.queueDepth.get(L), 0);
    assert.equal(m.queueBytes.get(L), 0);
    assert.equal(sink.shutdowns, 1);
  });

  test('enqueuers waiting for room are refused at shutdown', async () => {
    const sink = new FakeSink(1, (b) => b.map(() => ({ status: 'retryable', error: 'down' })));
    const { queue, abort } = setup(sink, fast({ initialIntervalMs: 10_000 }, { queueCapacity: 1 }));
    await queue.start(abort.signal);
    await queue.enqueue(ev('a'));
    const waiting = queue.enqueue(ev('b')).then(
      () => 'admitted',
      (e: Error) => e.message,
    );
    await tick(10);
    await queue.shutdown(Date.now() + 50);
    assert.match(await waiting, /shut down/);
  });

  test('a failing dead-letter write blocks the worker and is retried until written; only then the event settles', async () => {
    const sink = new FakeSink(10, (b) =>
      b.map((o): DeliveryResult => (o.event.id === 'bad' ? { status: 'permanent', error: 'nope' } : { status: 'ok' })),
    );
    const metrics = new Metrics();
    const { logger, lines } = captureLogger();
    const written: string[] = [];
    let diskFull = true;
    let attempts = 0;
    const queue = new DeliveryQueue(sink, fast({}, { queueCapacity: 3 }), {
      id: 'p/s',
      logger,
      metrics,
      deadLetterRetry: { initialMs: 10, maxMs: 40 },
      deadLetter: {
        write: async (entry) => {
          attempts++;
          if (diskFull) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          written.push(entry.event.id);
        },
        close: async () => {},
      },
    });
    await queue.start(new AbortController().signal);
    const bad = (await queue.enqueue(ev('bad'))).settled;
    await tick(20);
    const after = [];
    for (const id of ['b', 'c']) after.push((await queue.enqueue(ev(id))).settled);
    const full = queue.enqueue(ev('d'));
    assert.equal(await settlesWithin(bad, 150), false, 'not settled while its dead letter cannot be written');
    assert.equal(await settlesWithin(full, 0), false, 'the queue stays full: back-pressure');
    assert.deepEqual(sink.sentIds, ['bad'], 'the worker sends nothing else meanwhile');
    assert.equal(queue.depth, 3, 'the dead item is still queued');
    assert.ok(attempts >= 4, `retried: ${attempts} attempts`);
    const failures = componentMetrics(metrics).deadLetterWriteFailures.get(L);
    assert.equal(failures, attempts, 'every failed attempt is counted');
    assert.equal(componentMetrics(metrics).errors.get({ ...L, code: 'CRB_DEAD_LETTER_WRITE' }), attempts);
    const errs = lines.filter((l) => l.code === 'CRB_DEAD_LETTER_WRITE');
    assert.equal(errs.length, 1, 'logged once per cause, not per retry');
    const logged = errs[0]?.error as { code?: string } | undefined;
    assert.equal(logged?.code, 'ENOSPC');
    diskFull = false;
    await bad;
    assert.deepEqual(written, ['bad']);
    assert.equal(componentMetrics(metrics).deadLettered.get(L), 1);
    const { settled: d } = await full;
    await Promise.all([...after, d]);
    assert.deepEqual(sink.sentIds, ['bad', 'b', 'c', 'd']);
    assert.equal(lines.filter((l) => l.msg === 'dead letters are written again').length, 1);
    await queue.shutdown(Date.now() + 100);
  });

  test('settles are per event: one delivered after a dead one settles at once, the dead one once its letter is written', async () => {
    const sink = new FakeSink(10, (b) =>
      b.map((o): DeliveryResult => (o.event.id === 'bad' ? { status: 'permanent', error: 'nope' } : { status: 'ok' })),
    );
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const order: string[] = [];
    const queue = new DeliveryQueue(sink, fast(), {
      id: 'p/s',
      logger: silentLogger,
      metrics: new Metrics(),
      deadLetter: { write: () => gate, close: async () => {} },
    });
    const s = [];
    for (const id of ['a', 'bad', 'c']) {
      const { settled } = await queue.enqueue(ev(id));
      s.push(settled.then(() => order.push(id)));
    }
    await queue.start(new AbortController().signal);
    await tick(30);
    // out-of-order settles are fine: the source's OrderedCommits orders commits per object
    assert.deepEqual(order, ['a', 'c'], 'bad waits for its dead letter, c does not');
    release();
    await Promise.all(s);
    assert.deepEqual(order, ['a', 'c', 'bad']);
    await queue.shutdown(Date.now() + 100);
  });

  test('a dead letter still failing at the shutdown deadline: its settled rejects, delivered ones settled', async () => {
    const sink = new FakeSink(10, (b) =>
      b.map((o): DeliveryResult => (o.event.id === 'bad' ? { status: 'permanent', error: 'nope' } : { status: 'ok' })),
    );
    const queue = new DeliveryQueue(sink, fast(), {
      id: 'p/s',
      logger: silentLogger,
      metrics: new Metrics(),
      deadLetterRetry: { initialMs: 10, maxMs: 20 },
      deadLetter: {
        write: async () => {
          throw new Error('EROFS: read-only file system');
        },
        close: async () => {},
      },
    });
    const s = [];
    for (const id of ['a', 'bad', 'c']) s.push((await queue.enqueue(ev(id))).settled);
    await queue.start(new AbortController().signal);
    await tick(50);
    const t0 = Date.now();
    await queue.shutdown(Date.now() + 100);
    assert.ok(Date.now() - t0 < 400, `shutdown took ${Date.now() - t0} ms`);
    const [a, bad, c] = await Promise.allSettled(s);
    assert.equal(a?.status, 'fulfilled', 'a was delivered before bad');
    assert.equal(bad?.status, 'rejected');
    assert.equal((bad as PromiseRejectedResult).reason.code, 'CRB_SHUTDOWN');
    assert.equal(c?.status, 'fulfilled', 'c was delivered');
    assert.equal(queue.depth, 0);
  });

  test('no settled promise leaks: a sink that never returns from send, and never shuts down, still lets shutdown finish', async () => {
    const sink = new FakeSink(2, () => new Promise<DeliveryResult[]>(() => {}));
    sink.shutdown = () => new Promise<void>(() => {});
    const { logger, lines } = captureLogger();
    const { queue, abort } = setup(sink, fast(), logger);
    await queue.start(abort.signal);
    const s = [];
    for (let i = 0; i < 5; i++) s.push((await queue.enqueue(ev(`e${i}`))).settled);
    const t0 = Date.now();
    await queue.shutdown(Date.now() + 150);
    const took = Date.now() - t0;
    assert.ok(took >= 140 && took < 600, `shutdown took ${took} ms`);
    const outcomes = await Promise.allSettled(s);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['rejected', 'rejected', 'rejected', 'rejected', 'rejected'],
    );
    assert.ok(lines.some((l) => l.msg === 'the sink did not shut down by the deadline; going on without it'));
  });

  test('enqueue waiting for room rejects with the reason when its signal aborts, and leaves the queue as it was', async () => {
    const sink = new FakeSink(1, (b) => b.map(() => ({ status: 'retryable', error: 'down' })));
    const { queue, abort } = setup(sink, fast({ initialIntervalMs: 10_000 }, { queueCapacity: 1 }));
    await queue.start(abort.signal);
    await queue.enqueue(ev('a'));
    const ac = new AbortController();
    const waiting = queue.enqueue(ev('b'), ac.signal);
    assert.equal(await settlesWithin(waiting, 20), false);
    ac.abort(new Error('source stopping'));
    await assert.rejects(waiting, /source stopping/);
    assert.equal(queue.depth, 1);
    await queue.shutdown(Date.now() + 50);
  });

  test('the queue is bounded by bytes too: enqueue waits at queueBytes; the bytes gauge follows', async () => {
    let release!: () => void;
    let gate = new Promise<void>((r) => {
      release = r;
    });
    const sink = new FakeSink(10, async (b) => {
      await gate;
      return b.map(() => ({ status: 'ok' }));
    });
    const metrics = new Metrics();
    const m = componentMetrics(metrics);
    const sizes: Record<string, number> = { a: 400, b: 400, c: 400, huge: 5000 };
    const queue = new DeliveryQueue(sink, fast({}, { queueCapacity: 100, queueBytes: 1024 }), {
      id: 'p/s',
      logger: silentLogger,
      metrics,
      deadLetter: new MemoryDeadLetter(),
      sizeOf: (e) => sizes[e.id] ?? 0,
    });
    await queue.start(new AbortController().signal);
    const a = (await queue.enqueue(ev('a'))).settled;
    const b = (await queue.enqueue(ev('b'))).settled;
    assert.equal(m.queueBytes.get(L), 800);
    assert.equal(queue.bytes, 800);
    const c = queue.enqueue(ev('c'));
    assert.equal(await settlesWithin(c, 30), false, '400 more bytes would pass 1024: waits');
    release();
    await Promise.all([a, b]);
    await (await c).settled;
    assert.equal(m.queueBytes.get(L), 0);
    // one event larger than the bound enters an empty queue (no deadlock) and then holds the rest back
    gate = new Promise<void>((r) => {
      release = r;
    });
    const huge = (await queue.enqueue(ev('huge'))).settled;
    assert.equal(m.queueBytes.get(L), 5000);
    const next = queue.enqueue(ev('a'));
    assert.equal(await settlesWithin(next, 30), false);
    release();
    await huge;
    await (await next).settled;
    assert.deepEqual(sink.sentIds, ['a', 'b', 'c', 'huge', 'a']);
    assert.equal(m.queueBytes.get(L), 0);
    await queue.shutdown(Date.now() + 100);
  });

  test('by default an event counts its structured-JSON size as the builder measured it', async () => {
    const sink = new FakeSink(10, () => new Promise<DeliveryResult[]>(() => {}));
    const { queue, m, abort } = setup(sink, fast());
    await queue.start(abort.signal);
    const e = ev('sized');
    await queue.enqueue(e);
    const exact = Buffer.byteLength(JSON.stringify(e));
    assert.equal(m.queueBytes.get(L), exact);
    await queue.shutdown(Date.now() + 20);
  });
});

/** A sink that answers after `latency` ms and records how many sends overlap, and which objects. */
class OverlapSink extends FakeSink {
  inFlight = 0;
  maxInFlight = 0;
  readonly busy = new Set<string>();
  overlapOfOneObject = 0;
  private readonly latency: (batch: readonly OutboundEvent[]) => number;
  readonly defaultConcurrency?: number;
  readonly maxConcurrency?: number;
  constructor(
    maxBatch: number,
    latency: (batch: readonly OutboundEvent[]) => number,
    respond?: FakeSink['respond'],
    defaultConcurrency?: number,
    maxConcurrency?: number,
  ) {
    super(maxBatch, respond);
    this.latency = latency;
    if (defaultConcurrency !== undefined) this.defaultConcurrency = defaultConcurrency;
    if (maxConcurrency !== undefined) this.maxConcurrency = maxConcurrency;
  }
  override async send(batch: readonly OutboundEvent[]): Promise<DeliveryResult[]> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const keys = new Set(batch.map((o) => objectKey(o.event)));
    for (const k of keys) if (this.busy.has(k)) this.overlapOfOneObject++;
    for (const k of keys) this.busy.add(k);
    try {
      const ms = this.latency(batch);
      if (ms > 0) await tick(ms);
      return await super.send(batch);
    } finally {
      for (const k of keys) this.busy.delete(k);
      this.inFlight--;
    }
  }
}

/** A small deterministic PRNG (mulberry32) so a fast-check seed replays a whole run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('DeliveryQueue lanes (concurrency, order per object)', () => {
  test('a 100 ms sink at concurrency 16 has 16 sends in flight and delivers ~16x what concurrency 1 does', async () => {
    const run = async (concurrency: number) => {
      const sink = new OverlapSink(1, () => 100);
      const { queue, m, abort } = setup(sink, fast({}, { concurrency }));
      await queue.start(abort.signal);
      for (let i = 0; i < 64; i++) await queue.enqueue(ev(`e${i}`, `uid-${i}`));
      await tick(50);
      assert.equal(m.inFlight.get(L), concurrency, 'crbridge_component_in_flight_sends');
      await tick(400);
      const delivered = sink.calls.length;
      await queue.shutdown(Date.now() + 1000);
      return { delivered, max: sink.maxInFlight };
    };
    const one = await run(1);
    const sixteen = await run(16);
    assert.equal(one.max, 1);
    assert.equal(sixteen.max, 16);
    assert.ok(one.delivered >= 3 && one.delivered <= 5, `concurrency 1 delivered ${one.delivered}`);
    assert.ok(sixteen.delivered >= 48, `concurrency 16 delivered ${sixteen.delivered}`);
    assert.ok(sixteen.delivered >= 10 * one.delivered, `${sixteen.delivered} vs ${one.delivered}`);
  });

  test('the sink declares its default concurrency and its limit; a configured value wins, within the limit', async () => {
    const cases: [number | undefined, number | undefined, number | undefined, number][] = [
      [undefined, undefined, undefined, 1],
      [undefined, 16, undefined, 16],
      [4, 16, undefined, 4],
      [8, undefined, 1, 1],
    ];
    for (const [configured, def, max, expected] of cases) {
      const sink = new OverlapSink(1, () => 20, undefined, def, max);
      const { logger, lines } = captureLogger();
      const { queue, abort } = setup(
        sink,
        fast({}, configured === undefined ? {} : { concurrency: configured }),
        logger,
      );
      assert.equal(queue.maxInFlight, expected);
      await queue.start(abort.signal);
      const s = [];
      for (let i = 0; i < 40; i++) s.push((await queue.enqueue(ev(`e${i}`, `uid-${i}`))).settled);
      await Promise.all(s);
      assert.equal(sink.maxInFlight, expected, `configured ${configured}, default ${def}, limit ${max}`);
      assert.equal(
        lines.filter((l) => l.level === 'warn').length,
        configured !== undefined && max !== undefined && configured > max ? 1 : 0,
      );
      await queue.shutdown(Date.now() + 1000);
    }
  });

  test("one object's events are never in flight together, whatever the concurrency", async () => {
    const sink = new OverlapSink(2, () => 5);
    const { queue, abort } = setup(sink, fast({}, { concurrency: 16 }));
    await queue.start(abort.signal);
    const s = [];
    for (let i = 0; i < 20; i++) s.push((await queue.enqueue(ev(`e${i}`, 'hot'))).settled);
    await Promise.all(s);
    assert.equal(sink.maxInFlight, 1);
    assert.deepEqual(
      sink.sentIds,
      Array.from({ length: 20 }, (_, i) => `e${i}`),
    );
    await queue.shutdown(Date.now() + 1000);
  });

  test('a failing object blocks only itself: the others keep flowing at full concurrency', async () => {
    let healed = false;
    const sink = new OverlapSink(
      1,
      () => 10,
      (b) =>
        b.map(
          (o): DeliveryResult =>
            o.event.partitionkey === 'bad' && !healed ? { status: 'retryable', error: '500' } : { status: 'ok' },
        ),
    );
    const { queue, m, abort } = setup(sink, fast({ initialIntervalMs: 20, maxIntervalMs: 40 }, { concurrency: 4 }));
    await queue.start(abort.signal);
    const bad = [];
    for (let i = 0; i < 3; i++) bad.push((await queue.enqueue(ev(`bad${i}`, 'bad'))).settled);
    const good = [];
    for (let i = 0; i < 40; i++) good.push((await queue.enqueue(ev(`g${i}`, `uid-${i % 10}`))).settled);
    await Promise.all(good);
    assert.equal(await settlesWithin(Promise.all(bad), 0), false, 'the failing object is still failing');
    assert.equal(sink.maxInFlight, 4);
    // only the head of the failing object was ever sent; its later events waited behind it
    const badSends = sink.calls.flatMap((c) => c.ids).filter((id) => id.startsWith('bad'));
    assert.ok(badSends.length >= 2);
    assert.deepEqual(new Set(badSends), new Set(['bad0']));
    assert.equal(m.sent.get(L), 40);
    healed = true;
    await Promise.all(bad);
    const order = sink.sentIds.filter((id) => id.startsWith('bad'));
    assert.deepEqual(order.slice(-3), ['bad0', 'bad1', 'bad2']);
    assert.equal(queue.depth, 0);
    await queue.shutdown(Date.now() + 1000);
  });

  test("backoff follows each object's own streak, not the sink's", async () => {
    const failures = new Map<string, number>([
      ['a', 4],
      ['b', 1],
    ]);
    const sink = new FakeSink(1, (batch) =>
      batch.map((o): DeliveryResult => {
        const id = o.event.id;
        const left = failures.get(id) ?? 0;
        if (left > 0) {
          failures.set(id, left - 1);
          return { status: 'retryable', error: 'x' };
        }
        return { status: 'ok' };
      }),
    );
    const { queue, abort } = setup(sink, fast({ initialIntervalMs: 20, maxIntervalMs: 1000 }, { concurrency: 4 }));
    await queue.start(abort.signal);
    const a = (await queue.enqueue(ev('a', 'uid-a'))).settled;
    await tick(70); // a has failed three times: its next wait is 80 ms
    const b = (await queue.enqueue(ev('b', 'uid-b'))).settled;
    const t0 = Date.now();
    await b;
    assert.ok(Date.now() - t0 < 60, `b retried after its own first backoff (20 ms), not a's: ${Date.now() - t0} ms`);
    await a;
    const aGaps = sink.calls
      .map((c, i) => ({ c, i }))
      .filter(({ c }) => c.ids[0] === 'a')
      .map(({ c }) => c.at);
    const gaps = aGaps.slice(1).map((t, i) => t - (aGaps[i] ?? 0));
    assert.equal(gaps.length, 4);
    for (const [i, want] of [20, 40, 80, 160].entries())
      assert.ok((gaps[i] ?? 0) >= want - 2 && (gaps[i] ?? 0) < want + 60, `gap ${i}: ${gaps[i]} ~ ${want}`);
    await queue.shutdown(Date.now() + 1000);
  });

  test('Retry-After pauses every object of the sink, and is capped at retry.maxRetryAfterMs', async () => {
    let first = true;
    const sink = new OverlapSink(
      1,
      () => 0,
      (b) =>
        b.map((): DeliveryResult => {
          if (first) {
            first = false;
            return { status: 'retryable', error: '429', retryAfterMs: 3_600_000 };
          }
          return { status: 'ok' };
        }),
    );
    const { queue, abort } = setup(sink, fast({ initialIntervalMs: 1, maxRetryAfterMs: 150 }, { concurrency: 1 }));
    await queue.start(abort.signal);
    const x = (await queue.enqueue(ev('x', 'uid-x'))).settled;
    await tick(10);
    const y = (await queue.enqueue(ev('y', 'uid-y'))).settled;
    assert.equal(await settlesWithin(y, 80), false, 'another object waits out the Retry-After too');
    const t0 = sink.calls[0]?.at ?? 0;
    await Promise.all([x, y]);
    const next = (sink.calls[1]?.at ?? 0) - t0;
    assert.ok(next >= 148 && next < 1000, `resumed after ${next} ms (Retry-After 1 h capped at 150 ms)`);
    await queue.shutdown(Date.now() + 1000);
  });

  test('property: random outcomes and latencies at concurrency > 1 keep per-object order, settle each event once, never exceed concurrency', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          objects: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 40 }),
          concurrency: fc.integer({ min: 2, max: 8 }),
          maxBatch: fc.integer({ min: 1, max: 5 }),
          seed: fc.integer(),
          // false: a sink keeping the contract (after one of an object's events fails, its later
          // events of the batch fail too); true: any per-event answer
          arbitrary: fc.boolean(),
        }),
        async ({ objects, concurrency, maxBatch, seed, arbitrary }) => {
          const random = prng(seed);
          const oks: string[] = [];
          const sink = new OverlapSink(
            maxBatch,
            () => Math.floor(random() * 4),
            (batch) => {
              const failed = new Set<string>();
              return batch.map((o): DeliveryResult => {
                const key = objectKey(o.event);
                const r = random();
                let res: DeliveryResult;
                if (!arbitrary && failed.has(key)) res = { status: 'retryable', error: 'behind a failure' };
                else if (o.attempts >= 5 || r < 0.6) res = { status: 'ok' };
                else if (r < 0.9) res = { status: 'retryable', error: 'flaky', ...(r > 0.85 && { retryAfterMs: 2 }) };
                else res = { status: 'permanent', error: 'refused' };
                if (res.status === 'ok') oks.push(o.event.id);
                else failed.add(key);
                return res;
              });
            },
          );
          const { queue, deadLetter, abort } = setup(
            sink,
            fast({ initialIntervalMs: 1, maxIntervalMs: 4, randomizationFactor: 1, maxElapsedMs: 0 }, { concurrency }),
          );
          await queue.start(abort.signal);
          const counts = new Map<string, number>();
          const settled: Promise<void>[] = [];
          const queued = objects.map((o, i) => ({ id: `e${i}`, key: `uid-${o}` }));
          for (const { id, key } of queued) {
            const { settled: p } = await queue.enqueue(ev(id, key));
            settled.push(p.then(() => void counts.set(id, (counts.get(id) ?? 0) + 1)));
          }
          await Promise.all(settled);
          await queue.shutdown(Date.now() + 1000);

          assert.ok(sink.maxInFlight <= concurrency, `in flight ${sink.maxInFlight} > ${concurrency}`);
          assert.equal(sink.overlapOfOneObject, 0, 'two sends of one object overlapped');
          for (const { id } of queued) assert.equal(counts.get(id), 1, `${id} settled once`);
          const deadIds = deadLetter.entries.map((e) => e.event.id);
          assert.equal(new Set(deadIds).size, deadIds.length, 'each dead letter written once');
          assert.equal(queue.depth, 0);
          for (let o = 0; o <= 5; o++) {
            const key = `uid-${o}`;
            const mine = queued.filter((q) => q.key === key).map((q) => q.id);
            const delivered = oks.filter((id) => mine.includes(id));
            const dead = new Set(deadIds.filter((id) => mine.includes(id)));
            if (!arbitrary) {
              // each event delivered once or dead-lettered once, first deliveries in queue order
              assert.deepEqual(
                delivered,
                mine.filter((id) => !dead.has(id)),
                `object ${key}`,
              );
            } else {
              // the sink may have taken an event after its object's earlier one failed: then it is
              // sent again after that one, so the last deliveries are in queue order
              // (an event refused for good on such a re-send is dead-lettered: it leaves the order)
              const last = delivered.filter((id, i) => delivered.lastIndexOf(id) === i && !dead.has(id));
              const expected = mine.filter((id) => last.includes(id));
              assert.deepEqual(last, expected, `object ${key}: last deliveries in queue order`);
              for (const id of mine) assert.ok(last.includes(id) || dead.has(id), `${id} delivered or dead`);
            }
          }
        },
      ),
      { numRuns: 80 },
    );
  });
});

describe('DeliveryQueue scheduling cost', () => {
  test('taking a batch never walks blocked objects: 100,000 events held behind one busy object do not slow the others', async () => {
    // object A's first event hangs in flight, so its 99,999 later events wait (blocked) at the front
    // of the queue; 2,000 events of other objects go one per send at concurrency 8. A dispatcher that
    // rescans the waiting events per free slot walks A's 99,999 each time (~200 M steps, many
    // seconds); one that keeps only ready objects in view takes each batch at once.
    let releaseA!: () => void;
    const aDone = new Promise<void>((r) => {
      releaseA = r;
    });
    const sink = new FakeSink(1, async (b) => {
      if (b.some((o) => o.event.partitionkey === 'A')) await aDone;
      return b.map(() => ({ status: 'ok' }));
    });
    const queue = new DeliveryQueue(
      sink,
      fast({}, { concurrency: 8, maxBatch: 1, queueCapacity: 200_000, queueBytes: 2 ** 30 }),
      { id: 'p/s', logger: silentLogger, metrics: new Metrics(), deadLetter: new MemoryDeadLetter(), sizeOf: () => 1 },
    );
    await queue.start(new AbortController().signal);
    for (let i = 0; i < 100_000; i++) await queue.enqueue(ev(`a${i}`, 'A'));
    const others: Promise<void>[] = [];
    const t0 = performance.now();
    for (let i = 0; i < 2_000; i++) others.push((await queue.enqueue(ev(`o${i}`, `obj-${i}`))).settled);
    await Promise.all(others);
    const ms = performance.now() - t0;
    assert.ok(ms < 3000, `2,000 events of ready objects took ${Math.round(ms)} ms behind 100,000 blocked ones`);
    assert.deepEqual(
      sink.calls.filter((c) => c.ids[0]?.startsWith('a')).map((c) => c.ids),
      [['a0']],
      'A stayed blocked behind its event in flight',
    );
    // A's send still hangs and its 99,999 are left: cut at the deadline and rejected, as at any
    await queue.shutdown(Date.now() + 50);
    releaseA();
  });
});

describe('retryDelay', () => {
  const retry = {
    initialIntervalMs: 100,
    maxIntervalMs: 1000,
    multiplier: 2,
    randomizationFactor: 0.5,
    maxElapsedMs: 0,
    maxRetryAfterMs: 60_000,
  };
  test('grows exponentially and is capped at maxIntervalMs', () => {
    const top = () => 0.999999;
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((n) => retryDelay(retry, n, 0, top)),
      [100, 200, 400, 800, 1000, 1000],
    );
  });
  test('jitter draws from [wait × (1 − randomizationFactor), wait]: maxIntervalMs is a true cap', () => {
    assert.equal(
      retryDelay(retry, 2, 0, () => 0),
      100,
    );
    assert.equal(
      retryDelay(retry, 2, 0, () => 0.999999),
      200,
    );
    for (let i = 0; i < 200; i++) {
      const d = retryDelay(retry, 3, 0);
      assert.ok(d >= 200 && d <= 400, String(d));
      const capped = retryDelay(retry, 10, 0);
      assert.ok(capped >= 500 && capped <= 1000, String(capped));
    }
  });
  test('randomizationFactor 1 (the default) is full jitter: anywhere in [0, wait]', () => {
    const full = { ...retry, randomizationFactor: 1 };
    assert.equal(resolveDeliveryConfig().retry.randomizationFactor, 1);
    assert.equal(
      retryDelay(full, 4, 0, () => 0),
      0,
    );
    assert.equal(
      retryDelay(full, 4, 0, () => 0.5),
      400,
    );
    const draws = Array.from({ length: 400 }, () => retryDelay(full, 4, 0));
    assert.ok(Math.min(...draws) < 200 && Math.max(...draws) > 600 && Math.max(...draws) <= 800);
  });
  test('Retry-After wins when longer, even past maxIntervalMs', () => {
    assert.equal(
      retryDelay(retry, 1, 5000, () => 0.5),
      5000,
    );
    assert.equal(
      retryDelay(retry, 1, 10, () => 0.999999),
      100,
    );
  });
});
