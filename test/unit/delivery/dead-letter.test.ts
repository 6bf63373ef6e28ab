/**
 * fileDeadLetter on real temp files: parent folders created, JSON lines in call order under
 * concurrent writes, appends to an existing file, reopens after close, rejects when it cannot write.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { type DeadLetterEntry, fileDeadLetter } from '../../../src/delivery/dead-letter.ts';
import { ev } from './helpers.ts';

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
