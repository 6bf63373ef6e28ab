/**
 * ThreadedOutbox (the SqliteOutbox on a worker thread) on real temp files: errors cross the thread
 * with their codes (CRB_OUTBOX_FULL, CRB_OUTBOX_IO, CRB_SHUTDOWN); depth, bytes, status() and
 * whenRoom() follow the worker; its logs and metrics reach this thread's logger and registry;
 * close stays within its deadline while the worker is busy; a killed worker fails its pending
 * appends with CRB_OUTBOX_IO and the next append starts a new one on the same file; replay comes
 * in seq order, in pages, skipping what was acknowledged meanwhile.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  type OutboxConfig,
  type OutboxEntry,
  type OutboxRecord,
  outboxPath,
  SqliteOutbox,
} from '../../../src/delivery/outbox.ts';
import { ThreadedOutbox } from '../../../src/delivery/outbox-thread.ts';
import { CrbridgeError, ErrorCode } from '../../../src/errors.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics, outboxMetrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger, settlesWithin, tick } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'crb-outbox-thread-'));
const rec = (i: number, size = 200): OutboxRecord => {
  const head = `{"specversion":"1.0","id":"ev-${i}","subject":"uid-${i % 7}","data":"`;
  return { key: `uid-${i % 7}`, id: `ev-${i}`, body: `${head}${'x'.repeat(Math.max(0, size - head.length - 2))}"}` };
};
const soon = () => Date.now() + 2000;
const labels = { component: 'p/hook' };

function make(path: string, config: Partial<OutboxConfig> = {}, extra: { syncDelayMs?: number } = {}) {
  const metrics = new Metrics();
  const { logger, lines } = captureLogger();
  const outbox = new ThreadedOutbox({ path, id: 'p/hook', logger, metrics, config, ...extra });
  return { outbox, metrics, lines, m: outboxMetrics(metrics) };
}

/** Waits until `cond()` holds (the worker's state arrives asynchronously). */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await tick(5);
  }
}

/** The ids the file holds, in seq order (read in process after the threaded outbox closed it). */
async function storedIds(path: string): Promise<string[]> {
  const o = new SqliteOutbox({ path, id: 'check', logger: silentLogger, metrics: new Metrics() });
  const ids: string[] = [];
  for await (const b of (await o.open()).batches()) ids.push(...b.map((e) => e.id));
  await o.close(soon());
  return ids;
}

const hasCode = (code: string) => (err: unknown) => {
  assert.ok(err instanceof CrbridgeError, `a CrbridgeError, got ${String(err)}`);
  assert.equal(err.code, code);
  return true;
};

describe('ThreadedOutbox: errors cross the thread with their codes', () => {
  test('CRB_OUTBOX_FULL at the bound, CRB_OUTBOX_IO for a state dir that is a file, CRB_SHUTDOWN after close', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path, { maxEntries: 3 });
    await outbox.open();
    assert.deepEqual(await outbox.append([rec(0), rec(1), rec(2)]), [1, 2, 3]);
    await assert.rejects(outbox.append([rec(3)]), (err: unknown) => {
      hasCode(ErrorCode.OutboxFull)(err);
      assert.match((err as Error).message, /p\/hook is full: 3 events/);
      return true;
    });
    await outbox.close(soon());
    await assert.rejects(outbox.append([rec(4)]), hasCode(ErrorCode.Shutdown));

    const file = join(tmp(), 'not-a-dir');
    writeFileSync(file, 'x');
    const bad = make(join(file, 'p', 'hook.sqlite')).outbox;
    const opening = bad.open();
    const appending = bad.append([rec(0)]); // same turn, same message: after the failed open
    await assert.rejects(opening, (err: unknown) => {
      hasCode(ErrorCode.OutboxIo)(err);
      assert.match((err as Error).message, /cannot create the outbox folder/);
      return true;
    });
    await assert.rejects(appending, hasCode(ErrorCode.OutboxIo), 'a write failure, not a shutdown');
    await bad.close(soon());
  });
});

describe('ThreadedOutbox: appends of one turn', () => {
  test('posted together but made one by one: each call gets its own seqs, or its own refusal at the bound', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path, { maxEntries: 3 });
    await outbox.open();
    const calls = [outbox.append([rec(0)]), outbox.append([rec(1), rec(2)]), outbox.append([rec(3)])];
    const got = await Promise.allSettled(calls);
    assert.deepEqual(got[0], { status: 'fulfilled', value: [1] });
    assert.deepEqual(got[1], { status: 'fulfilled', value: [2, 3] });
    assert.equal(got[2]?.status, 'rejected');
    hasCode(ErrorCode.OutboxFull)((got[2] as PromiseRejectedResult).reason);
    await outbox.close(soon());
    assert.deepEqual(await storedIds(path), ['ev-0', 'ev-1', 'ev-2']);
  });
});

describe('ThreadedOutbox: state, logs and metrics follow the worker', () => {
  test('depth, bytes, status() and whenRoom() after a refusal and the acks that make room', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox, m } = make(path, { maxBytes: 10 * 200 });
    await outbox.open();
    const seqs = await outbox.append(Array.from({ length: 10 }, (_, i) => rec(i)));
    assert.equal(outbox.depth, 10);
    assert.equal(outbox.bytes, 2000);
    await assert.rejects(outbox.append([rec(10)]), hasCode(ErrorCode.OutboxFull));
    // the state is posted before the refusal: status says why at once
    const st = outbox.status();
    assert.equal(st.ready, false);
    assert.match(st.reasons.join(), /full .*maxBytes 2000/);
    await until(() => m.full.get(labels) === 1);
    assert.equal(m.refused.get({ ...labels, reason: 'bound' }), 1);
    assert.equal(m.entries.get(labels), 10);
    assert.equal(m.bytes.get(labels), 2000);

    let room = false;
    void outbox.whenRoom().then(() => {
      room = true;
    });
    await tick(50);
    assert.equal(room, false, 'still full');
    outbox.ack([seqs[0] as number]); // 1800 bytes: 90 %, room again
    await until(() => room);
    assert.equal(outbox.status().ready, true);
    assert.equal(outbox.depth, 9);
    assert.equal(outbox.bytes, 1800);
    await until(() => m.full.get(labels) === 0 && m.entries.get(labels) === 9);
    assert.deepEqual(await outbox.append([rec(10)]), [11]);
    await outbox.close(soon());
    assert.deepEqual(await storedIds(path), [
      'ev-1',
      'ev-2',
      'ev-3',
      'ev-4',
      'ev-5',
      'ev-6',
      'ev-7',
      'ev-8',
      'ev-9',
      'ev-10',
    ]);
  });

  test('a damaged file: the worker logs and counts the set-aside on this thread', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const first = make(path).outbox;
    await first.open();
    await first.append(Array.from({ length: 5 }, (_, i) => rec(i)));
    await first.close(soon());
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, 0);
    closeSync(fd);
    const { outbox, lines, m, metrics } = make(path);
    const replay = await outbox.open();
    assert.equal(replay.setAside, 1);
    await until(() => m.corrupt.get(labels) === 1);
    const logged = lines.filter((l) => l.code === ErrorCode.OutboxCorrupt);
    assert.equal(logged.length, 1);
    assert.equal(logged[0]?.level, 'error');
    assert.equal(logged[0]?.component, 'p/hook');
    assert.match(metrics.render(), /crbridge_outbox_corrupt_total\{component="p\/hook"\} 1/);
    await outbox.close(soon());
  });

  test('the metric families exist from construction, before any worker runs', () => {
    const { metrics } = make(outboxPath(tmp(), 'p', 'hook'));
    const names = metrics.list().map((f) => f.name);
    for (const n of [
      'crbridge_outbox_entries',
      'crbridge_outbox_commit_duration_seconds',
      'crbridge_outbox_refused_appends_total',
    ])
      assert.ok(names.includes(n), n);
  });
});

describe('ThreadedOutbox: close and a dying worker', () => {
  test('close returns by its deadline while the worker is busy syncing; the pending append rejects', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path, {}, { syncDelayMs: 5000 });
    await outbox.open();
    const pending = outbox.append([rec(0)]);
    const caught = pending.catch((err: unknown) => err);
    await tick(100); // the worker has committed it and is waiting on the slow sync
    const t0 = Date.now();
    await outbox.close(t0 + 300);
    const took = Date.now() - t0;
    assert.ok(took < 1000, `close took ${took} ms`);
    hasCode(ErrorCode.Shutdown)(await caught);
    assert.equal(outbox.thread, undefined, 'the worker is gone');
    assert.equal(await settlesWithin(outbox.close(Date.now()), 50), true, 'idempotent');
  });

  test('a killed worker fails its pending appends with CRB_OUTBOX_IO; the next append re-opens the file in a new one', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox, lines } = make(path, {}, { syncDelayMs: 300 });
    await outbox.open();
    assert.deepEqual(await outbox.append([rec(0)]), [1]);
    const pending = outbox.append([rec(1), rec(2)]);
    const caught = pending.catch((err: unknown) => err);
    await tick(50);
    const first = outbox.thread;
    assert.ok(first);
    await first.terminate();
    hasCode(ErrorCode.OutboxIo)(await caught);
    assert.ok(lines.some((l) => l.code === ErrorCode.OutboxIo && /outbox thread stopped/.test(String(l.msg))));
    // stored again, as the queue does: a new worker holds the file (the dead one's lock is gone)
    const seqs = await outbox.append([rec(1), rec(2)]);
    assert.notEqual(outbox.thread, first);
    assert.equal(seqs.length, 2);
    assert.ok((seqs[0] as number) > 1 && (seqs[1] as number) === (seqs[0] as number) + 1, String(seqs));
    outbox.ack([1]);
    await outbox.close(soon());
    const ids = await storedIds(path);
    assert.equal(ids.includes('ev-0'), false, 'the ack reached the new worker');
    assert.deepEqual(ids.slice(-2), ['ev-1', 'ev-2']);
  });
});

describe('ThreadedOutbox: a new worker cannot re-open the file', () => {
  test('its appends reject with CRB_OUTBOX_IO and it ends; once the file is free, the next worker takes appends', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path);
    await outbox.open();
    assert.deepEqual(await outbox.append([rec(0)]), [1]);
    await outbox.thread?.terminate();
    // another holder of the exclusive lock while the new worker re-opens
    const other = new SqliteOutbox({ path, id: 'other', logger: silentLogger, metrics: new Metrics() });
    await other.open();
    await assert.rejects(outbox.append([rec(1)]), (err: unknown) => {
      hasCode(ErrorCode.OutboxIo)(err);
      assert.match((err as Error).message, /in use by another process/);
      return true;
    });
    await other.close(soon());
    await until(() => outbox.thread === undefined);
    assert.deepEqual(await outbox.append([rec(2)]), [2]);
    await outbox.close(soon());
    assert.deepEqual(await storedIds(path), ['ev-0', 'ev-2']);
  });
});

describe('ThreadedOutbox: replay', () => {
  test('in seq order, in pages of the asked size, skipping entries acknowledged meanwhile', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const first = make(path).outbox;
    await first.open();
    await first.append(Array.from({ length: 1200 }, (_, i) => rec(i, 100)));
    await first.close(soon());

    const { outbox } = make(path);
    const replay = await outbox.open();
    assert.equal(replay.count, 1200);
    assert.equal(replay.lastSeq, 1200);
    assert.equal(outbox.depth, 1200);
    const sizes: number[] = [];
    const got: OutboxEntry[] = [];
    for await (const page of replay.batches(500)) {
      sizes.push(page.length);
      got.push(...page);
      if (sizes.length === 1) outbox.ack([700, 701]); // not yet read: skipped
    }
    assert.deepEqual(sizes, [500, 498, 200]);
    assert.deepEqual(
      got.map((e) => e.seq),
      Array.from({ length: 1200 }, (_, i) => i + 1).filter((s) => s !== 700 && s !== 701),
    );
    assert.equal(got[0]?.id, 'ev-0');
    assert.equal(got[0]?.body, rec(0, 100).body);
    assert.equal(got[0]?.bytes, 100);
    // new appends come after the replay
    assert.deepEqual(await outbox.append([rec(5000)]), [1201]);
    await outbox.close(soon());
  });

  test('a worker killed in the middle of the replay: a new one goes on where it stopped, nothing twice or missing', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const first = make(path).outbox;
    await first.open();
    await first.append(Array.from({ length: 300 }, (_, i) => rec(i, 100)));
    await first.close(soon());

    const { outbox } = make(path);
    const replay = await outbox.open();
    const got: number[] = [];
    for await (const page of replay.batches(100)) {
      got.push(...page.map((e) => e.seq));
      // dies while the next page is asked for
      if (got.length === 100) setTimeout(() => void outbox.thread?.terminate(), 0);
    }
    assert.deepEqual(
      got,
      Array.from({ length: 300 }, (_, i) => i + 1),
    );
    await outbox.close(soon());
  });
});
