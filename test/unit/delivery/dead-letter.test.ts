/**
 * fileDeadLetter on real temp files: parent folders created, JSON lines in call order under
 * concurrent writes, appends to an existing file, reopens after close, rejects when it cannot write.
 * DurableDeadLetter over it: a write that fails on the real file system is retried until it
 * succeeds, counted and logged once per cause; at its close deadline a pending write rejects with
 * CRB_SHUTDOWN and close never waits longer.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  type DeadLetter,
  type DeadLetterEntry,
  DurableDeadLetter,
  fileDeadLetter,
} from '../../../src/delivery/dead-letter.ts';
import { componentMetrics, Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger, ev, settlesWithin, tick } from './helpers.ts';

const entry = (id: string): DeadLetterEntry => ({
  event: ev(id),
  component: 'p/s',
  code: 'CRB_DELIVERY_PERMANENT',
  errors: [`refused ${id}`],
  time: '2026-11-28T10:00:00.000Z',
  attempts: 1,
});

const read = (path: string) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as DeadLetterEntry);

describe('fileDeadLetter', () => {
  test('creates parent folders and appends one JSON line per entry in call order', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'crb-dl-')), 'a', 'b', 'dead.jsonl');
    const dl = fileDeadLetter(path);
    await Promise.all(Array.from({ length: 50 }, (_, i) => dl.write(entry(`e${i}`))));
    await dl.close();
    const got = read(path);
    assert.deepEqual(
      got.map((e) => e.event.id),
      Array.from({ length: 50 }, (_, i) => `e${i}`),
    );
    assert.deepEqual(got[3], entry('e3'));
  });

  test('appends to an existing file and reopens after close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crb-dl-'));
    const path = join(dir, 'dead.jsonl');
    writeFileSync(path, `${JSON.stringify(entry('old'))}\n`);
    const dl = fileDeadLetter(path);
    await dl.write(entry('a'));
    await dl.close();
    await dl.close();
    await dl.write(entry('b'));
    await dl.close();
    assert.deepEqual(
      read(path).map((e) => e.event.id),
      ['old', 'a', 'b'],
    );
  });

  test('rejects the write when the path is a folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crb-dl-'));
    mkdirSync(join(dir, 'dead.jsonl'));
    const dl = fileDeadLetter(join(dir, 'dead.jsonl'));
    await assert.rejects(dl.write(entry('a')), /EISDIR/);
    await dl.close();
  });
});

describe('DurableDeadLetter', () => {
  const L = { component: 'p/s' };
  const durable = (inner: string | DeadLetter) => {
    const metrics = new Metrics();
    const { logger, lines } = captureLogger();
    const dl = new DurableDeadLetter(typeof inner === 'string' ? fileDeadLetter(inner) : inner, {
      id: 'p/s',
      logger,
      metrics,
      retry: { initialMs: 10, maxMs: 40 },
    });
    return { dl, m: componentMetrics(metrics), lines };
  };

  test('a write failing on the real file system is retried until it is stored; counted, logged once per cause', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crb-dl-'));
    writeFileSync(join(dir, 'blocker'), 'a file where the folder should be');
    const path = join(dir, 'blocker', 'dead.jsonl');
    const { dl, m, lines } = durable(path);
    const written = dl.write(entry('a'));
    assert.equal(await settlesWithin(written, 150), false, 'pending while the folder cannot be made');
    assert.equal(dl.pending, 1);
    // retried with backoff (1 ms, 2 ms, ...): a few attempts, however loaded the machine is
    for (let i = 0; i < 300 && m.deadLetterWriteFailures.get(L) < 3; i++) await new Promise((r) => setTimeout(r, 10));
    const failures = m.deadLetterWriteFailures.get(L);
    assert.ok(failures >= 3, `${failures} failed attempts counted`);
    assert.equal(dl.pending, 1, 'still pending');
    const logged = lines.filter((l) => l.code === 'CRB_DEAD_LETTER_WRITE');
    assert.equal(logged.length, 1);
    const error = logged[0]?.error as { message?: string } | undefined;
    assert.match(String(error?.message), /EEXIST|ENOTDIR/);
    rmSync(join(dir, 'blocker'));
    await written;
    assert.equal(dl.pending, 0);
    await dl.close(Date.now() + 1000);
    assert.deepEqual(
      read(path).map((e) => e.event.id),
      ['a'],
    );
    assert.equal(lines.filter((l) => l.msg === 'dead letters are written again').length, 1);
  });

  test('each cause is logged once; a new cause is logged again', async () => {
    const causes = ['ENOSPC', 'ENOSPC', 'ENOSPC', 'EROFS', 'EROFS'];
    let n = 0;
    const { dl, lines } = durable({
      write: async () => {
        const code = causes[n++];
        if (code) throw Object.assign(new Error(`${code}: cannot write`), { code });
      },
      close: async () => {},
    });
    await dl.write(entry('a'));
    assert.equal(n, 6);
    assert.deepEqual(
      lines.filter((l) => l.code === 'CRB_DEAD_LETTER_WRITE').map((l) => (l.error as { code: string }).code),
      ['ENOSPC', 'EROFS'],
    );
  });

  test('at the close deadline a write still failing rejects with CRB_SHUTDOWN; close does not wait longer', async () => {
    const { dl } = durable({
      write: async () => {
        throw new Error('EIO');
      },
      close: () => new Promise<void>(() => {}), // a hung file system
    });
    const written = dl.write(entry('a'));
    const outcome = written.then(
      () => 'written',
      (e: { code?: string }) => e.code,
    );
    await tick(30);
    const t0 = Date.now();
    await dl.close(Date.now() + 100);
    assert.ok(Date.now() - t0 < 300, `close took ${Date.now() - t0} ms`);
    assert.equal(await outcome, 'CRB_SHUTDOWN');
    await assert.rejects(dl.write(entry('late')), { code: 'CRB_SHUTDOWN' });
  });

  test('a write whose signal aborts rejects with CRB_SHUTDOWN, even while the destination hangs', async () => {
    const { dl } = durable({ write: () => new Promise<void>(() => {}), close: async () => {} });
    const ac = new AbortController();
    const w = dl.write(entry('a'), ac.signal);
    assert.equal(await settlesWithin(w, 20), false);
    ac.abort();
    await assert.rejects(w, { code: 'CRB_SHUTDOWN' });
  });
});
