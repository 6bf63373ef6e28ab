/**
 * The file sink on real temp files: structured JSON lines appended in batch order, parent folders
 * created, existing content kept; EISDIR/EACCES are permanent and name the path; shutdown is idempotent.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ComponentContext, OutboundEvent } from '../../../src/component.ts';
import { toStructuredJson } from '../../../src/events/serialize.ts';
import { fileSink } from '../../../src/sinks/file/index.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { ev } from '../delivery/helpers.ts';

const ctx: ComponentContext = {
  id: 'p/file',
  pipeline: 'p',
  logger: silentLogger,
  metrics: new Metrics(),
  stateDir: tmpdir(),
  clusterName: 'test',
};
const batch = (...ids: string[]): OutboundEvent[] => ids.map((id, i) => ({ event: ev(id), seq: i + 1, attempts: 1 }));
const signal = new AbortController().signal;

describe('file sink', () => {
  test('appends one structured CloudEvent JSON line per event, creating parent folders', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'crb-file-')), 'out', 'events.jsonl');
    const sink = fileSink.create({ path }, ctx);
    await sink.start(signal);
    assert.deepEqual(await sink.send(batch('a', 'b'), signal), [{ status: 'ok' }, { status: 'ok' }]);
    assert.deepEqual(await sink.send(batch('c'), signal), [{ status: 'ok' }]);
    await sink.shutdown(Date.now() + 1000);
    await sink.shutdown(Date.now() + 1000);
    const text = readFileSync(path, 'utf8');
    assert.equal(text, ['a', 'b', 'c'].map((id) => `${toStructuredJson(ev(id))}\n`).join(''));
    assert.deepEqual(
      text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).id),
      ['a', 'b', 'c'],
    );
  });

  test('keeps what the file already holds (opens for appending)', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'crb-file-')), 'events.jsonl');
    writeFileSync(path, 'existing\n');
    const sink = fileSink.create({ path, fsync: false }, ctx);
    await sink.send(batch('a'), signal);
    await sink.shutdown(Date.now() + 1000);
    assert.equal(readFileSync(path, 'utf8'), `existing\n${toStructuredJson(ev('a'))}\n`);
  });

  test('a folder at the path is a permanent failure naming the path', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'crb-file-')), 'events.jsonl');
    mkdirSync(path);
    const sink = fileSink.create({ path }, ctx);
    const results = await sink.send(batch('a', 'b'), signal);
    assert.equal(results.length, 2);
    for (const r of results) {
      assert.equal(r.status, 'permanent');
      assert.ok(r.status === 'permanent' && r.error.includes(path) && r.error.includes('EISDIR'), JSON.stringify(r));
    }
    await sink.shutdown(Date.now() + 1000);
  });

  test('a folder without write permission is a permanent EACCES failure', {
    skip: process.getuid?.() === 0,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crb-file-'));
    chmodSync(dir, 0o500);
    const path = join(dir, 'events.jsonl');
    const sink = fileSink.create({ path }, ctx);
    const [r] = await sink.send(batch('a'), signal);
    assert.equal(r?.status, 'permanent');
    assert.ok(r?.status === 'permanent' && r.error.includes(path) && r.error.includes('EACCES'));
    chmodSync(dir, 0o700);
  });

  test('an event that cannot be serialized is refused alone', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'crb-file-')), 'events.jsonl');
    const sink = fileSink.create({ path }, ctx);
    const bad = ev('bad');
    (bad.data as Record<string, unknown>).loop = bad;
    const results = await sink.send([...batch('a'), { event: bad, seq: 9, attempts: 1 }], signal);
    assert.equal(results[0]?.status, 'ok');
    assert.equal(results[1]?.status, 'permanent');
    await sink.shutdown(Date.now() + 1000);
    assert.deepEqual(
      readFileSync(path, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).id),
      ['a'],
    );
  });

  test('the config schema describes every property', () => {
    const props = (fileSink.configSchema as { properties: Record<string, { description?: string }> }).properties;
    for (const [k, p] of Object.entries(props)) assert.ok(p.description, k);
    // that the schema's keys and required fields match FileSinkConfig: test/unit/config/config-types.test.ts
  });
});
