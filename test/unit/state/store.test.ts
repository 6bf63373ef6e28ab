// FileStateStore: staged changes become durable on flush, survive a reload, and a failed flush keeps them.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FileStateStore, fileStateOpener, stateFilePath } from '../../../src/state/store.ts';

test('set, flush, reload: the entries come back; delete removes; no flush means nothing stored', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'crb-state-'));
  try {
    const open = fileStateOpener(dir);
    const a = open('alerts/slack', 'threads');
    await a.load();
    assert.equal(a.get('u1'), undefined);
    a.set('u1', { channel: 'C1', ts: '1.2' });
    a.set('u2', { channel: 'C1', ts: '3.4' });
    await a.flush();
    a.delete('u2');
    a.set('u3', 1); // staged only
    const b = open('alerts/slack', 'threads');
    await b.load();
    assert.deepEqual(
      [...b.entries()],
      [
        ['u1', { channel: 'C1', ts: '1.2' }],
        ['u2', { channel: 'C1', ts: '3.4' }],
      ],
    );
    await a.flush();
    await b.load();
    assert.deepEqual(
      [...b.entries()].map(([k]) => k),
      ['u1', 'u3'],
    );
    assert.equal(stateFilePath(dir, 'alerts/slack', 'threads'), join(dir, 'state', 'alerts', 'slack', 'threads.json'));
    const body = JSON.parse(await readFile(stateFilePath(dir, 'alerts/slack', 'threads'), 'utf8'));
    assert.equal(body.version, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failed flush keeps the change staged; the next flush writes it', {
  skip: process.getuid?.() === 0,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'crb-state-'));
  try {
    const path = join(dir, 'ro', 'x.json');
    const s = new FileStateStore(path);
    await s.load();
    s.set('k', 'v');
    await s.flush();
    await chmod(join(dir, 'ro'), 0o500);
    s.set('k', 'w');
    await assert.rejects(s.flush());
    await chmod(join(dir, 'ro'), 0o700);
    await s.flush();
    const t = new FileStateStore(path);
    await t.load();
    assert.equal(t.get('k'), 'w');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
