/**
 * SqliteOutbox on real temp files: append/ack/replay in seq order across reopen; a child process
 * killed with SIGKILL in the middle of appends, under each fsync policy, loses nothing it was told
 * was stored; the interval policy syncs on its timer; a damaged file (garbled header, a garbled
 * row, a truncated file) is set aside, counted and logged once, and what could be read is kept;
 * the byte and entry bounds and a full disk refuse appends with CRB_OUTBOX_FULL and show in
 * status() and metrics; close is idempotent, commits what is pending and stays within its deadline.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  closeSync,
  fdatasync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  truncateSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  ACK_RETRY_MS,
  type FsyncPolicy,
  type OutboxConfig,
  type OutboxEntry,
  type OutboxRecord,
  outboxConfigSchema,
  outboxPath,
  PAGE_SIZE,
  resolveOutboxConfig,
  SqliteOutbox,
  type SqliteOutboxOptions,
} from '../../../src/delivery/outbox.ts';
import { ErrorCode } from '../../../src/errors.ts';
import { Metrics, outboxMetrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger, settlesWithin, tick } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'crb-outbox-'));
const rec = (i: number, key = `uid-${i % 7}`, size = 200): OutboxRecord => {
  const head = `{"specversion":"1.0","id":"ev-${i}","subject":"${key}","data":"`;
  return { key, id: `ev-${i}`, body: `${head}${'x'.repeat(Math.max(0, size - head.length - 2))}"}` };
};

function make(
  path: string,
  config: Partial<OutboxConfig> = {},
  extra: Pick<SqliteOutboxOptions, 'maxPageCount' | 'fdatasync'> = {},
) {
  const metrics = new Metrics();
  const { logger, lines } = captureLogger();
  const outbox = new SqliteOutbox({ path, id: 'p/hook', logger, metrics, config, ...extra });
  return { outbox, metrics, lines, m: outboxMetrics(metrics) };
}

async function replayAll(batches: AsyncGenerator<OutboxEntry[]>): Promise<OutboxEntry[]> {
  const out: OutboxEntry[] = [];
  for await (const b of batches) out.push(...b);
  return out;
}

const soon = () => Date.now() + 1000;

describe('SqliteOutbox: append, ack, replay', () => {
  test('replays what was not acknowledged, in append order with the same ids, across reopen', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const a = make(path);
    const first = await a.outbox.open();
    assert.equal(first.count, 0);
    assert.equal(first.lastSeq, 0);
    const s1 = await a.outbox.append([rec(1), rec(2), rec(3)]);
    const s2 = await a.outbox.append([rec(4), rec(5)]);
    assert.deepEqual([...s1, ...s2], [1, 2, 3, 4, 5]);
    assert.equal(a.outbox.depth, 5);
    a.outbox.ack([2, 4, 4, 99]); // repeated and unknown seqs are ignored
    assert.equal(a.outbox.depth, 3);
    assert.equal(a.outbox.bytes, 3 * 200);
    assert.equal(a.m.entries.get({ component: 'p/hook' }), 3);
    await a.outbox.close(soon());

    const b = make(path);
    const replay = await b.outbox.open();
    assert.equal(replay.count, 3);
    assert.equal(replay.bytes, 600);
    assert.equal(replay.lastSeq, 5);
    assert.equal(replay.setAside, 0);
    const got = await replayAll(replay.batches(2));
    assert.deepEqual(
      got.map((e) => [e.seq, e.id, e.key]),
      [
        [1, 'ev-1', 'uid-1'],
        [3, 'ev-3', 'uid-3'],
        [5, 'ev-5', 'uid-5'],
      ],
    );
    assert.equal(got[0]?.body, rec(1).body);
    // new appends come after everything replayed
    assert.deepEqual(await b.outbox.append([rec(6)]), [6]);
    // acknowledging a replayed entry while replaying skips it
    b.outbox.ack([3]);
    assert.deepEqual(
      (await replayAll(replay.batches())).map((e) => e.seq),
      [1, 5],
    );
    await b.outbox.close(soon());

    const c = make(path);
    const r3 = await c.outbox.open();
    assert.deepEqual(
      (await replayAll(r3.batches())).map((e) => e.id),
      ['ev-1', 'ev-5', 'ev-6'],
    );
    await c.outbox.close(soon());
  });

  test('appends in one turn of the event loop share one transaction and keep call order', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox, metrics } = make(path);
    await outbox.open();
    const calls = Array.from({ length: 20 }, (_, i) => outbox.append([rec(2 * i), rec(2 * i + 1)]));
    const seqs = await Promise.all(calls);
    assert.deepEqual(
      seqs.flat(),
      Array.from({ length: 40 }, (_, i) => i + 1),
    );
    assert.match(metrics.render(), /crbridge_outbox_commit_duration_seconds_count\{component="p\/hook"\} 1\n/);
    await outbox.close(soon());
  });

  test('acks are deleted in batches and an acknowledged entry is never replayed after a clean close', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const a = make(path);
    await a.outbox.open();
    const seqs = await a.outbox.append(Array.from({ length: 100 }, (_, i) => rec(i)));
    for (const s of seqs) a.outbox.ack([s]);
    await tick(50);
    const commits = /crbridge_outbox_commit_duration_seconds_count\{component="p\/hook"\} (\d+)/.exec(
      a.metrics.render(),
    );
    assert.equal(commits?.[1], '2'); // the append, then all 100 acks in one
    await a.outbox.close(soon());
    const b = make(path);
    assert.equal((await b.outbox.open()).count, 0);
    await b.outbox.close(soon());
  });

  test('a second outbox on the same file is refused with CRB_OUTBOX_IO naming the cause', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const a = make(path);
    await a.outbox.open();
    await a.outbox.append([rec(1)]);
    const b = make(path);
    await assert.rejects(b.outbox.open(), (err: { code?: string; message: string }) => {
      assert.equal(err.code, ErrorCode.OutboxIo);
      assert.match(err.message, /in use by another process/);
      return true;
    });
    await a.outbox.close(soon());
  });
});

/** A child that appends batches of 5 (keys interleaved) and prints each batch's seqs once stored, then acks every third. */
const CHILD = `
import { SqliteOutbox } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, '../../../src/delivery/outbox.ts')).href)};
import { Metrics } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, '../../../src/telemetry/metrics.ts')).href)};
import { silentLogger } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, '../../../src/telemetry/logger.ts')).href)};
const [path, fsync] = process.argv.slice(1);
const o = new SqliteOutbox({ path, id: 'p/hook', logger: silentLogger, metrics: new Metrics(), config: { fsync } });
await o.open();
for (let b = 0; ; b++) {
  const recs = [];
  for (let j = 0; j < 5; j++) { const i = b * 5 + j; recs.push({ key: 'uid-' + (i % 13), id: 'ev-' + i, body: JSON.stringify({ id: 'ev-' + i, pad: 'y'.repeat(1500) }) }); }
  const seqs = await o.append(recs);
  if (b % 3 === 2) o.ack(seqs);
  process.stdout.write(JSON.stringify({ b, seqs, acked: b % 3 === 2 }) + '\\n');
}
`;

async function killMidAppends(path: string, fsync: FsyncPolicy, batches: number) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, path, fsync], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const reported: { b: number; seqs: number[]; acked: boolean }[] = [];
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    child.on('exit', () => reject(new Error(`child exited early: ${stderr}`)));
    child.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        reported.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
      if (reported.length >= batches) {
        child.removeAllListeners('exit');
        child.kill('SIGKILL'); // mid-appends: the next batches are in flight
        child.on('exit', () => resolve());
      }
    });
  });
  return reported;
}

describe('SqliteOutbox: kill -9 in the middle of appends', () => {
  for (const fsync of ['per-batch', 'interval', 'off'] as const) {
    test(`fsync ${fsync}: every entry reported as stored and not acknowledged is replayed, in order`, async () => {
      const path = outboxPath(tmp(), 'p', 'hook');
      const reported = await killMidAppends(path, fsync, 60);
      const { outbox } = make(path, { fsync });
      const replay = await outbox.open();
      const got = await replayAll(replay.batches(64));
      const seqs = got.map((e) => e.seq);
      // strictly increasing seqs, each with the id the child gave it (seq n is the n-th event)
      assert.deepEqual(
        seqs,
        [...seqs].sort((x, y) => x - y),
      );
      for (const e of got) assert.equal(e.id, `ev-${e.seq - 1}`);
      for (const e of got) assert.equal(JSON.parse(e.body).id, e.id);
      const have = new Set(seqs);
      const mustHave = reported.filter((r) => !r.acked).flatMap((r) => r.seqs);
      assert.ok(mustHave.length >= 40);
      for (const s of mustHave) assert.ok(have.has(s), `seq ${s} was reported stored but is missing`);
      // per key, the replay keeps append order
      const byKey = new Map<string, number[]>();
      for (const e of got) byKey.set(e.key, [...(byKey.get(e.key) ?? []), e.seq]);
      for (const list of byKey.values())
        assert.deepEqual(
          list,
          [...list].sort((x, y) => x - y),
        );
      // appends after the replay continue after the highest seq
      const [next] = await outbox.append([rec(1)]);
      assert.equal(next, replay.lastSeq + 1);
      await outbox.close(soon());
    });
  }
});

describe('SqliteOutbox: a torn WAL tail after kill -9', () => {
  test('SQLite drops the torn transaction by its frame checksums: a clean prefix replays, nothing set aside', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    await killMidAppends(path, 'per-batch', 30);
    const wal = `${path}-wal`;
    const size = statSync(wal).size;
    assert.ok(size > 100_000, `WAL of ${size} bytes`);
    truncateSync(wal, size - 5000); // cut inside the last frames
    const { outbox, m } = make(path);
    const replay = await outbox.open();
    assert.equal(replay.setAside, 0);
    assert.equal(m.corrupt.get({ component: 'p/hook' }), 0);
    const got = await replayAll(replay.batches());
    assert.ok(got.length > 0);
    for (const e of got) assert.equal(e.id, `ev-${e.seq - 1}`);
    // a prefix of the appended events (minus the acknowledged ones): no holes before the cut
    const ids = got.map((e) => e.seq);
    const last = ids[ids.length - 1] as number;
    const expected = Array.from({ length: last }, (_, i) => i + 1).filter((s) => Math.floor((s - 1) / 5) % 3 !== 2);
    const missing = expected.filter((s) => !ids.includes(s));
    // acknowledged batches may still be present (their deletes may be in the cut frames); the others must be
    assert.deepEqual(missing, []);
    await outbox.close(soon());
  });
});

describe('SqliteOutbox: fsync policies', () => {
  test('interval: a WAL checkpoint every fsyncIntervalMs moves stored events into the database file', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path, { fsync: 'interval', fsyncIntervalMs: 50 });
    await outbox.open();
    const before = statSync(path).size;
    await outbox.append(Array.from({ length: 50 }, (_, i) => rec(i, 'k', 2000)));
    assert.equal(statSync(path).size, before, 'committed to the WAL only');
    await tick(200);
    assert.ok(statSync(path).size >= before + 50 * 2000, 'checkpointed into the database file');
    await outbox.close(soon());
  });

  test('per-batch: the database file is untouched until SQLite checkpoints (each commit fsyncs the WAL)', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path, { fsync: 'per-batch' });
    await outbox.open();
    const before = statSync(path).size;
    await outbox.append(Array.from({ length: 50 }, (_, i) => rec(i, 'k', 2000)));
    await tick(200);
    assert.equal(statSync(path).size, before);
    assert.ok(statSync(`${path}-wal`).size >= 50 * 2000);
    await outbox.close(soon());
  });

  test("per-batch: append resolves only after the WAL is fdatasync'd off the event loop; commits made meanwhile share the next sync", async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const syncs: number[] = [];
    const { outbox } = make(
      path,
      { fsync: 'per-batch' },
      {
        // a slow disk: each sync takes 80 ms (on the thread pool; the event loop keeps running)
        fdatasync: (fd, done) => {
          syncs.push(fd);
          setTimeout(() => fdatasync(fd, done), 80);
        },
      },
    );
    await outbox.open();
    const a = outbox.append([rec(1)]);
    await tick(20);
    assert.equal(syncs.length, 1, 'the commit is being synced');
    assert.equal(await settlesWithin(a, 20), false, 'not stored (durably) before its sync is done');
    const b = outbox.append([rec(2)]);
    await tick(5);
    const c = outbox.append([rec(3)]);
    assert.deepEqual(await a, [1]);
    assert.deepEqual(await Promise.all([b, c]), [[2], [3]]);
    assert.equal(syncs.length, 2, 'b and c, committed while a was syncing, shared one sync');
    await outbox.close(soon());
    const again = make(path);
    assert.deepEqual(
      (await replayAll((await again.outbox.open()).batches())).map((e) => e.id),
      ['ev-1', 'ev-2', 'ev-3'],
    );
    await again.outbox.close(soon());
  });

  test('per-batch: a failing WAL sync rejects its appends with CRB_OUTBOX_IO and leaves them uncounted; the next sync works', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    let fail = true;
    const { outbox, lines } = make(
      path,
      { fsync: 'per-batch' },
      {
        fdatasync: (fd, done) => {
          if (fail) {
            fail = false;
            done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
          } else fdatasync(fd, done);
        },
      },
    );
    await outbox.open();
    await assert.rejects(outbox.append([rec(1)]), (err: { code?: string; message?: string }) => {
      assert.equal(err.code, ErrorCode.OutboxIo);
      assert.match(String(err.message), /cannot sync outbox .*EIO/);
      return true;
    });
    assert.equal(outbox.depth, 0);
    assert.equal(lines.filter((l) => l.code === ErrorCode.OutboxIo).length, 1, 'logged');
    assert.deepEqual(await outbox.append([rec(2)]), [2]);
    assert.equal(outbox.depth, 1);
    await outbox.close(soon());
  });

  test('the config schema and the defaults come from one constant', () => {
    const props = outboxConfigSchema.properties as Record<string, { default: unknown }>;
    const defaults = resolveOutboxConfig();
    assert.deepEqual(Object.keys(props).sort(), Object.keys(defaults).sort());
    for (const [k, v] of Object.entries(defaults)) assert.equal(props[k]?.default, v, k);
    assert.equal(defaults.fsync, 'per-batch');
    assert.equal(resolveOutboxConfig({ fsync: 'off', maxBytes: undefined }).maxBytes, defaults.maxBytes);
  });
});

describe('SqliteOutbox: a damaged file', () => {
  async function filled(path: string, n: number, size = 200) {
    const { outbox } = make(path);
    await outbox.open();
    await outbox.append(Array.from({ length: n }, (_, i) => rec(i, `uid-${i % 7}`, size)));
    await outbox.close(soon());
  }
  const asideFiles = (path: string) =>
    readdirSync(join(path, '..')).filter((f) => f.includes('.corrupt-') && !f.endsWith('-wal') && !f.endsWith('-shm'));

  test('a garbled header: set aside, counted, logged once; a fresh outbox works', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    await filled(path, 10);
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, 0);
    closeSync(fd);
    const { outbox, lines, m } = make(path);
    const replay = await outbox.open();
    assert.equal(replay.count, 0);
    assert.equal(replay.setAside, 1);
    assert.equal(m.corrupt.get({ component: 'p/hook' }), 1);
    const logged = lines.filter((l) => l.code === ErrorCode.OutboxCorrupt);
    assert.equal(logged.length, 1);
    assert.equal(logged[0]?.level, 'error');
    assert.equal(asideFiles(path).length, 1);
    assert.equal(
      readFileSync(join(path, '..', asideFiles(path)[0] as string))
        .subarray(0, 100)
        .toString(),
      'Z'.repeat(100),
    );
    assert.deepEqual(await outbox.append([rec(1)]), [1]);
    await outbox.close(soon());
  });

  test('a garbled row: set aside, the row counted and dropped, every other row replayed in order', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    await filled(path, 10);
    const db = new DatabaseSync(path);
    db.prepare("UPDATE outbox SET body = replace(body, 'xxxx', 'xxyx') WHERE seq = 4").run();
    db.close();
    const { outbox, m, lines } = make(path);
    const replay = await outbox.open();
    assert.equal(replay.setAside, 1);
    assert.equal(m.corrupt.get({ component: 'p/hook' }), 1);
    assert.equal(m.corruptEntries.get({ component: 'p/hook' }), 1);
    assert.equal(lines.filter((l) => l.code === ErrorCode.OutboxCorrupt).length, 1);
    assert.deepEqual(
      (await replayAll(replay.batches())).map((e) => e.seq),
      [1, 2, 3, 5, 6, 7, 8, 9, 10],
    );
    assert.deepEqual(await outbox.append([rec(11)]), [11]);
    await outbox.close(soon());
    // the recovered rows are durable in the fresh file
    const again = make(path);
    const r2 = await again.outbox.open();
    assert.equal(r2.setAside, 0);
    assert.equal(r2.count, 10);
    await again.outbox.close(soon());
  });

  test('a truncated file: never crashes; set aside, and a prefix of the rows is kept intact', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    await filled(path, 400, 2000);
    truncateSync(path, Math.floor(statSync(path).size / 2));
    const { outbox, m } = make(path);
    const replay = await outbox.open();
    assert.equal(replay.setAside, 1);
    assert.equal(m.corrupt.get({ component: 'p/hook' }), 1);
    const got = await replayAll(replay.batches());
    assert.ok(got.length < 400, `kept ${got.length}`);
    for (const e of got) assert.equal(e.body, rec(e.seq - 1, `uid-${(e.seq - 1) % 7}`, 2000).body);
    assert.deepEqual(
      got.map((e) => e.seq),
      [...got.map((e) => e.seq)].sort((x, y) => x - y),
    );
    await outbox.append([rec(1)]);
    await outbox.close(soon());
  });
});

describe('SqliteOutbox: bounds and a full disk', () => {
  test('maxBytes: append beyond it rejects with CRB_OUTBOX_FULL, status says why, room returns below 90 %', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox, m } = make(path, { maxBytes: 10 * 200 });
    await outbox.open();
    const seqs = await outbox.append(Array.from({ length: 10 }, (_, i) => rec(i)));
    assert.equal(outbox.bytes, 2000);
    await assert.rejects(outbox.append([rec(10)]), (err: { code?: string; message: string }) => {
      assert.equal(err.code, ErrorCode.OutboxFull);
      assert.match(err.message, /p\/hook is full/);
      return true;
    });
    assert.equal(outbox.depth, 10, 'nothing of the refused call is stored');
    const st = outbox.status();
    assert.equal(st.ready, false);
    assert.match(st.reasons.join(), /full .*maxBytes 2000/);
    assert.equal(m.full.get({ component: 'p/hook' }), 1);
    assert.equal(m.refused.get({ component: 'p/hook', reason: 'bound' }), 1);

    let room = false;
    void outbox.whenRoom().then(() => {
      room = true;
    });
    assert.equal(room, false);
    outbox.ack([seqs[0] as number]); // 1800 bytes: back at 90 %, so it takes appends again
    await tick();
    assert.equal(room, true);
    assert.equal(outbox.status().ready, true);
    assert.equal(m.full.get({ component: 'p/hook' }), 0);
    await outbox.append([rec(10)]);
    await assert.rejects(outbox.append([rec(11)]), { code: ErrorCode.OutboxFull });
    await outbox.close(soon());
  });

  test('hysteresis: after a refusal, appends wait until both bounds are under 90 %', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path, { maxEntries: 20 });
    await outbox.open();
    const seqs = await outbox.append(Array.from({ length: 20 }, (_, i) => rec(i)));
    await assert.rejects(outbox.append([rec(20)]), { code: ErrorCode.OutboxFull });
    outbox.ack([seqs[0] as number]); // 19 > 18: still refused though there is room for one
    await assert.rejects(outbox.append([rec(20)]), { code: ErrorCode.OutboxFull });
    outbox.ack([seqs[1] as number]);
    assert.deepEqual(await outbox.append([rec(20)]), [21]);
    await outbox.close(soon());
  });

  test('an empty outbox admits one call beyond the bound (never a deadlock)', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox } = make(path, { maxBytes: 1024 });
    await outbox.open();
    assert.deepEqual(await outbox.append([rec(1, 'k', 5000)]), [1]);
    await assert.rejects(outbox.append([rec(2)]), { code: ErrorCode.OutboxFull });
    await outbox.close(soon());
  });

  test('disk full (SQLITE_FULL): rejects with CRB_OUTBOX_FULL, stores nothing of it, recovers after acks', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox, m, lines } = make(path, {}, { maxPageCount: Math.ceil((150 * 1024) / PAGE_SIZE) + 2 }); // ~150 KB of rows fit
    await outbox.open();
    const seqs = await outbox.append(Array.from({ length: 20 }, (_, i) => rec(i, 'k', 2000)));
    await assert.rejects(
      outbox.append(Array.from({ length: 200 }, (_, i) => rec(100 + i, 'k', 2000))),
      (err: { code?: string; message: string }) => {
        assert.equal(err.code, ErrorCode.OutboxFull);
        assert.match(err.message, /disk .* is full/);
        return true;
      },
    );
    assert.equal(outbox.depth, 20);
    assert.equal(outbox.status().ready, false);
    assert.match(outbox.status().reasons.join(), /disk .* is full/);
    assert.equal(m.refused.get({ component: 'p/hook', reason: 'disk-full' }), 1);
    assert.equal(lines.filter((l) => l.msg === 'outbox write failed').length, 1);
    outbox.ack(seqs);
    await outbox.flush();
    assert.equal(outbox.status().ready, true);
    await outbox.append([rec(200, 'k', 2000)]);
    await outbox.close(soon());
    const again = make(path);
    assert.deepEqual(
      (await replayAll((await again.outbox.open()).batches())).map((e) => e.id),
      ['ev-200'],
    );
    await again.outbox.close(soon());
  });
});

describe('SqliteOutbox: acks of a failed transaction', () => {
  test('are committed again on their own after ACK_RETRY_MS', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const { outbox, metrics } = make(path, {}, { maxPageCount: Math.ceil((150 * 1024) / PAGE_SIZE) + 2 });
    await outbox.open();
    const seqs = await outbox.append(Array.from({ length: 20 }, (_, i) => rec(i, 'k', 2000)));
    const commits = () =>
      Number(/crbridge_outbox_commit_duration_seconds_count\{component="p\/hook"\} (\d+)/.exec(metrics.render())?.[1]);
    assert.equal(commits(), 1);
    outbox.ack(seqs); // shares the next transaction, which fails for the big append
    await assert.rejects(outbox.append(Array.from({ length: 200 }, (_, i) => rec(100 + i, 'k', 2000))), {
      code: ErrorCode.OutboxFull,
    });
    assert.equal(commits(), 1);
    await tick(ACK_RETRY_MS + 300);
    assert.equal(commits(), 2, 'the acks were committed without another call');
    assert.equal(outbox.status().ready, true, 'and the commit cleared the disk-full state');
    await outbox.close(soon());
    const again = make(path);
    assert.equal((await again.outbox.open()).count, 0);
    await again.outbox.close(soon());
  });
});

describe('SqliteOutbox: close', () => {
  test('commits pending appends and acks, is idempotent, keeps its deadline; later appends reject CRB_SHUTDOWN', async () => {
    const path = outboxPath(tmp(), 'p', 'hook');
    const a = make(path);
    await a.outbox.open();
    const stored = await a.outbox.append([rec(1), rec(2)]);
    a.outbox.ack([stored[0] as number]);
    const pending = a.outbox.append([rec(3)]); // not yet committed
    const t0 = Date.now();
    const c1 = a.outbox.close(Date.now() + 200);
    const c2 = a.outbox.close(Date.now() + 200);
    assert.equal(c1, c2);
    await c1;
    assert.ok(Date.now() - t0 < 200);
    assert.deepEqual(await pending, [3]);
    await assert.rejects(a.outbox.append([rec(4)]), { code: ErrorCode.Shutdown });
    const b = make(path);
    assert.deepEqual(
      (await replayAll((await b.outbox.open()).batches())).map((e) => e.id),
      ['ev-2', 'ev-3'],
    );
    await b.outbox.close(soon());
  });

  test('close of an outbox never opened, and with its deadline already past, resolves', async () => {
    const { outbox } = make(outboxPath(tmp(), 'p', 'hook'));
    await outbox.close(Date.now() - 1);
    const o2 = make(outboxPath(tmp(), 'p', 'hook'));
    await o2.outbox.open();
    await o2.outbox.append([rec(1)]);
    await o2.outbox.close(Date.now() - 1);
  });
});
