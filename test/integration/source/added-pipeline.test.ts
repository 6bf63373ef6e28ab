/**
 * Pipelines sharing one source on the real stack: a pipeline added later gets its own `initial`
 * treatment — `emit`: a created event for every Backup that already exists; `skip`: nothing — while
 * the pipeline the checkpoint already knows gets exactly the changes made while crbridge was down,
 * nothing re-emitted. Live changes then reach all of them. Pipelines that share a source but
 * disagree on a setting it can have only once are refused by `crbridge validate`, naming both files.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runArgs, startCrbridge, validateOffline } from '../../support/crbridge.ts';
import { fileEvents } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { create, patch, withBackupNamespace } from '../events/helpers.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const RES = 'backups.example.com';
const ns = `addp-${suffix}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-added-'));

function pipelineFile(name: string, sourceExtra = ''): { file: string; out: string } {
  const out = join(dir, `${name}.jsonl`);
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    backupsPipelineYaml({
      name,
      namespaces: [ns],
      sourceExtra,
      sinks: `    - name: out\n      type: file\n      path: ${out}\n`,
    }),
  );
  return { file, out };
}

function backup(name: string): void {
  create({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: { name, namespace: ns },
    spec: { databaseName: name, schedule: '0 2 * * *', retentionDays: 7 },
  });
}

const summary = (path: string) =>
  fileEvents(path).map(
    (e) => `${String(e.type).split('.').slice(-2).join('.')} ${e.k8sname} ${(e.data as { reason: string }).reason}`,
  );

withBackupNamespace(ns);

test('a pipeline added later gets the existing objects (or skips them); the known one only what changed', async (t) => {
  const a = pipelineFile('known');
  const b = pipelineFile('added-emit', '    initial: emit\n');
  const c = pipelineFile('added-skip', '    initial: skip\n');
  const state = join(dir, 'state');
  const penv = { ...process.env, ...env };
  for (const n of ['orders', 'users', 'stock']) backup(n);

  let proc = startCrbridge(runArgs([a.file], state, ['--cluster-name', 'it']), penv);
  t.after(() => proc.stop('SIGKILL'));
  await eventually(() => fileEvents(a.out).length === 3, 30_000, 'three created events for the first pipeline');
  assert.equal(await proc.stop('SIGTERM'), 0);
  const firstIds = fileEvents(a.out).map((e) => e.id);

  patch(RES, ns, 'users', { spec: { schedule: '0 5 * * *' } }); // while crbridge is down

  proc = startCrbridge(runArgs([a.file, b.file, c.file], state, ['--cluster-name', 'it']), penv);
  const port = await proc.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');
  await eventually(() => fileEvents(b.out).length === 3 && fileEvents(a.out).length === 4, 30_000, 'the resync');
  await new Promise((r) => setTimeout(r, 1000)); // nothing more may follow
  assert.deepEqual(summary(a.out).slice(3), ['spec.changed users resync'], 'the known pipeline: only the change');
  assert.deepEqual(
    summary(b.out).sort(),
    ['backup.created orders resync', 'backup.created stock resync', 'backup.created users resync'],
    'the added pipeline (emit): every existing object',
  );
  assert.deepEqual(fileEvents(c.out), [], 'the added pipeline (skip): nothing');
  const created = fileEvents(b.out);
  const ordersId = created.find((e) => e.k8sname === 'orders')?.id;
  assert.ok(firstIds.includes(ordersId), 'an unchanged object is announced with the id it had');

  backup('ledger'); // live: to everyone
  await eventually(
    () => [a.out, b.out, c.out].every((f) => fileEvents(f).some((e) => e.k8sname === 'ledger')),
    30_000,
    'the live creation in all three pipelines',
  );
  assert.equal(await proc.stop('SIGTERM'), 0);

  // a third start knows all three: nothing is re-emitted
  const counts = [a.out, b.out, c.out].map((f) => fileEvents(f).length);
  proc = startCrbridge(runArgs([a.file, b.file, c.file], state, ['--cluster-name', 'it']), penv);
  const port3 = await proc.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port3}/readyz`)).status === 200, 30_000, 'readyz');
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(
    [a.out, b.out, c.out].map((f) => fileEvents(f).length),
    counts,
    'nothing for unchanged objects',
  );
  assert.equal(await proc.stop('SIGTERM'), 0);
});

test('crbridge validate refuses pipelines that share a source but disagree on its settings, naming both files', () => {
  const a = pipelineFile('page-a', '    pageSize: 100\n');
  const b = pipelineFile('page-b', '    pageSize: 250\n');
  const { code, out } = validateOffline([a.file, b.file]);
  assert.equal(code, 2);
  assert.match(out, new RegExp(`${b.file}:11:\\d+: /spec/source/pageSize`));
  assert.match(out, new RegExp(`is 250 here but 100 in pipeline "page-a" \\(${a.file}:11\\)`));
});
