/**
 * The delivery queue with its durable outbox (`delivery.outbox.enabled`): settled on durable
 * append, replay after a restart (same file, new queue) first and in per-object order with the
 * same ids, acked events not replayed, and a full outbox holding `enqueue` back until it has room.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import type { DeliveryResult } from '../../../src/component.ts';
import { type DeliveryConfig, type OutboxDeliveryConfig, resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { outboxPath, SqliteOutbox } from '../../../src/delivery/outbox.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics, outboxMetrics } from '../../../src/telemetry/metrics.ts';
import { ev, FakeSink, MemoryDeadLetter, settlesWithin, tick } from './helpers.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'crb-queue-outbox-'));
  dirs.push(d);
  return d;
}

const config = (outbox: Partial<OutboxDeliveryConfig> = {}, top: Partial<DeliveryConfig> = {}): DeliveryConfig =>
  resolveDeliveryConfig({
    ...top,
    retry: { initialIntervalMs: 10, maxIntervalMs: 50, multiplier: 2, randomizationFactor: 0 },
    outbox: { enabled: true, fsync: 'per-batch', ...outbox },
  } as never);

function setup(sink: FakeSink, dir: string, cfg: DeliveryConfig, outboxSettles?: boolean) {
  const metrics = new Metrics();
  const deadLetter = new MemoryDeadLetter();
  const queue = new DeliveryQueue(sink, cfg, {
    id: 'p/s',
    logger: silentLogger,
    metrics,
    deadLetter,
    stateDir: dir,
    ...(outboxSettles !== undefined && { outboxSettles }),
  });
  return { queue, metrics, deadLetter, abort: new AbortController() };
}

const retryable = (b: readonly unknown[]): DeliveryResult[] => b.map(() => ({ status: 'retryable', error: 'down' }));

/** The ids an outbox file holds, in seq order (opened after the queue closed it). */
async function storedIds(dir: string): Promise<string[]> {
  const ob = new SqliteOutbox({
    path: outboxPath(dir, 'p', 's'),
    id: 'check',
    logger: silentLogger,
    metrics: new Metrics(),
  });
  const replay = await ob.open();
  const ids: string[] = [];
  for await (const b of replay.batches()) ids.push(...b.map((e) => e.id));
  await ob.close(Date.now() + 1000);
  return ids;
}

describe('DeliveryQueue with an outbox', () => {
  test('settled resolves once the event is stored, before it is delivered; undelivered ones stay stored', async () => {
    const dir = stateDir();
    const sink = new FakeSink(10, retryable);
    const { queue, metrics, abort } = setup(sink, dir, config());
    await queue.start(abort.signal);
    const settled = [];
    for (let i = 0; i < 5; i++) settled.push((await queue.enqueue(ev(`e${i}`, `u${i % 2}`))).settled);
    assert.equal(await settlesWithin(Promise.all(settled), 500), true, 'settled on durable append');
    assert.equal(sink.calls.flatMap((c) => c.ids).length > 0, true, 'delivery goes on from memory');
    assert.equal(outboxMetrics(metrics).entries.get({ component: 'p/s' }), 5);
    await queue.shutdown(Date.now() + 200);
    assert.deepEqual(await storedIds(dir), ['e0', 'e1', 'e2', 'e3', 'e4']);
  });

  test('shutdown with every waiting event stored: in-flight sends finish, the rest stays in the outbox — no retrying until the deadline', async () => {
    const dir = stateDir();
    const sink = new FakeSink(10, retryable);
    const { queue, abort } = setup(sink, dir, config());
    await queue.start(abort.signal);
    const settled = [];
    for (let i = 0; i < 4; i++) settled.push((await queue.enqueue(ev(`e${i}`, `u${i}`))).settled);
    assert.equal(await settlesWithin(Promise.all(settled), 500), true, 'stored');
    const t0 = Date.now();
    await queue.shutdown(Date.now() + 5_000);
    const took = Date.now() - t0;
    assert.ok(
      took < 1_000,
      `shutdown took ${took} ms of its 5 s: it retried a sink that is down instead of leaving the events stored`,
    );
    assert.deepEqual(await storedIds(dir), ['e0', 'e1', 'e2', 'e3']);
  });

  test('outboxSettles false (a local outbox a standby cannot see): stored events settle only when delivered', async () => {
    const dir = stateDir();
    let down = true;
    const sink = new FakeSink(10, (b) =>
      b.map(() => (down ? { status: 'retryable', error: 'down' } : { status: 'ok' })),
    );
    const { queue, metrics, abort } = setup(sink, dir, config(), false);
    await queue.start(abort.signal);
    const settled = [];
    for (let i = 0; i < 3; i++) settled.push((await queue.enqueue(ev(`e${i}`, `u${i}`))).settled);
    await tick(100);
    assert.equal(outboxMetrics(metrics).entries.get({ component: 'p/s' }), 3, 'stored in the outbox');
    assert.equal(await settlesWithin(Promise.all(settled), 300), false, 'stored is not settled');
    down = false;
    assert.equal(await settlesWithin(Promise.all(settled), 2000), true, 'settled once delivered');
    await queue.shutdown(Date.now() + 200);
    assert.deepEqual(await storedIds(dir), [], 'delivered events were acked');
  });

  test('without the outbox, settled waits for delivery (the control)', async () => {
    const sink = new FakeSink(10, retryable);
    const { queue, abort } = setup(sink, stateDir(), config({ enabled: false }));
    await queue.start(abort.signal);
    const { settled } = await queue.enqueue(ev('e0'));
    assert.equal(await settlesWithin(settled, 300), false);
    await queue.shutdown(Date.now() + 100);
  });

  test('a new queue on the same file replays the undelivered events first, per object in order, same ids and contents; acked ones are not replayed', async () => {
    const dir = stateDir();
    // first process: delivers uid "ok" only, the rest fails
    const sink1 = new FakeSink(10, (b) =>
      b.map((o) => (o.event.partitionkey === 'ok' ? { status: 'ok' } : { status: 'retryable', error: 'down' })),
    );
    const q1 = setup(sink1, dir, config());
    await q1.queue.start(q1.abort.signal);
    const order = [
      ['a1', 'A'],
      ['k1', 'ok'],
      ['b1', 'B'],
      ['a2', 'A'],
      ['k2', 'ok'],
      ['b2', 'B'],
      ['a3', 'A'],
    ] as const;
    const events = new Map(order.map(([id, uid]) => [id, ev(id, uid)]));
    const settled = [];
    for (const [id] of order) settled.push((await q1.queue.enqueue(events.get(id) as never)).settled);
    await Promise.all(settled);
    // wait until both "ok" events were delivered (and acked)
    for (let i = 0; i < 100 && sink1.sentIds.filter((id) => id.startsWith('k')).length < 2; i++) await tick(10);
    await tick(50); // the acks' flush (ACK_FLUSH_MS)
    await q1.queue.shutdown(Date.now() + 100);

    // second process: everything succeeds; a new event of A is enqueued right after start
    const sink2 = new FakeSink(1);
    const q2 = setup(sink2, dir, config());
    await q2.queue.start(q2.abort.signal);
    const fresh = await q2.queue.enqueue(ev('a4', 'A'));
    await fresh.settled;
    for (let i = 0; i < 200 && sink2.sentIds.length < 6; i++) await tick(10);
    assert.deepEqual(sink2.sentIds, ['a1', 'b1', 'a2', 'b2', 'a3', 'a4'], 'replayed first, in order, then the new one');
    const sent = sink2.calls.length;
    assert.equal(sent, 6);
    await tick(50);
    await q2.queue.shutdown(Date.now() + 500);
    assert.deepEqual(await storedIds(dir), [], 'every delivered event was acked');
    // a third process finds nothing to replay
    const sink3 = new FakeSink(10, retryable);
    const q3 = setup(sink3, dir, config());
    await q3.queue.start(q3.abort.signal);
    await tick(50);
    assert.equal(sink3.calls.length, 0, 'nothing left to replay');
    await q3.queue.shutdown(Date.now() + 100);
  });

  test('replayed events are the stored CloudEvents, unchanged', async () => {
    const dir = stateDir();
    const original = ev('x1', 'X');
    const q1 = setup(new FakeSink(10, retryable), dir, config());
    await q1.queue.start(q1.abort.signal);
    await (await q1.queue.enqueue(original)).settled;
    await q1.queue.shutdown(Date.now() + 100);
    const seen: unknown[] = [];
    const sink2 = new FakeSink(10, (b) => {
      for (const o of b) seen.push(o.event);
      return b.map(() => ({ status: 'ok' }));
    });
    const q2 = setup(sink2, dir, config());
    await q2.queue.start(q2.abort.signal);
    for (let i = 0; i < 100 && seen.length === 0; i++) await tick(10);
    assert.deepEqual(seen, [original]);
    await q2.queue.shutdown(Date.now() + 500);
  });

  test('a full outbox makes enqueue wait and shows in status; once the sink drains it, storing resumes in order', async () => {
    const dir = stateDir();
    let open = false;
    const sink = new FakeSink(10, (b) => (open ? b.map(() => ({ status: 'ok' })) : retryable(b)));
    const { queue, abort } = setup(sink, dir, config({ maxEntries: 3 }));
    await queue.start(abort.signal);
    const settled = [];
    for (let i = 0; i < 4; i++) settled.push((await queue.enqueue(ev(`e${i}`, `u${i}`))).settled);
    await Promise.all(settled.slice(0, 3));
    assert.equal(await settlesWithin(settled[3] as Promise<void>, 100), false, 'e3 is not stored: the outbox is full');
    const st = queue.status();
    assert.equal(st.ready, false);
    assert.match(st.reasons.join('; '), /outbox of p\/s is full/);
    const fifth = queue.enqueue(ev('e4', 'u4'));
    assert.equal(await settlesWithin(fifth, 200), false, 'enqueue waits while the outbox is full');
    open = true; // the sink recovers: deliveries ack, the outbox has room again
    const { settled: s4 } = await fifth;
    await Promise.all([...settled, s4]);
    for (let i = 0; i < 200 && sink.sentIds.filter((id) => id === 'e4').length === 0; i++) await tick(10);
    assert.equal(queue.status().ready, true);
    await tick(50);
    await queue.shutdown(Date.now() + 500);
    assert.deepEqual(await storedIds(dir), [], 'all delivered and acked');
    const delivered = new Set(sink.calls.filter((c) => c.ids.length > 0).flatMap((c) => c.ids));
    assert.deepEqual([...delivered].sort(), ['e0', 'e1', 'e2', 'e3', 'e4']);
  });

  test('refused events are stored again before later ones, so a restart replays them in order', async () => {
    const dir = stateDir();
    const sink = new FakeSink(10, retryable);
    // room for 2; the sink never delivers: after e0,e1 the rest waits
    const { queue, abort } = setup(sink, dir, config({ maxEntries: 2 }));
    await queue.start(abort.signal);
    const s0 = (await queue.enqueue(ev('e0', 'A'))).settled;
    const s1 = (await queue.enqueue(ev('e1', 'A'))).settled;
    const s2 = (await queue.enqueue(ev('e2', 'A'))).settled;
    await Promise.all([s0, s1]);
    assert.equal(await settlesWithin(s2, 100), false);
    await queue.shutdown(Date.now() + 100);
    await assert.rejects(s2, /CRB_SHUTDOWN|undelivered|shut down/);
    assert.deepEqual(await storedIds(dir), ['e0', 'e1']);
  });
});
