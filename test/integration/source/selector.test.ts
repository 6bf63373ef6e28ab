/**
 * A label selector on the real stack: `crbridge run` with a pipeline on `labelSelector: tier=prod`
 * and a file sink. A Backup labelled in (created), out, in again, then deleted gives created,
 * deleted (`selector: left`), created, deleted — four distinct ids, by the rules of docs/events.md.
 * Then crbridge is stopped, a Backup is relabelled out while it is down, and the restart (same
 * --state-dir) finds the departure: the id the live departure would have had, `reason: resync`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { KubeObject } from '../../../src/events/delta.ts';
import { type RunningCrbridge, runArgs, startCrbridge } from '../../support/crbridge.ts';
import { fileEvents, publishedSchemas } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor } from '../../support/stack.ts';
import { adminApi, env, freshNamespace, group, plural, version } from './helpers.ts';

const api = adminApi();
const TYPE = 'io.crbridge.example.com.backup';

interface Ev {
  id: string;
  type: string;
  subject: string;
  k8suid: string;
  data: { reason: string; selector?: string; object?: KubeObject };
}

const procs: RunningCrbridge[] = [];
after(async () => {
  for (const p of procs) await p.stop('SIGKILL');
});

test('a Backup leaving and entering the label selector: departures and entries with distinct ids, live and after a restart', async () => {
  const ns = freshNamespace('it-sel');
  const coll = `/apis/${group}/${version}/namespaces/${ns}/${plural}`;
  const create = async (name: string, tier: string) =>
    (await api.request('POST', coll, undefined, {
      apiVersion: `${group}/${version}`,
      kind: 'Backup',
      metadata: { name, namespace: ns, labels: { tier } },
      spec: { databaseName: name, schedule: '0 3 * * *' },
    })) as KubeObject;
  const label = async (name: string, tier: string) =>
    (await api.request('PATCH', `${coll}/${name}`, undefined, { metadata: { labels: { tier } } })) as KubeObject;

  const dir = mkdtempSync(join(tmpdir(), 'crb-selector-'));
  const file = join(dir, 'events.jsonl');
  const pipeline = join(dir, 'prod.yaml');
  writeFileSync(
    pipeline,
    backupsPipelineYaml({
      name: 'prod',
      namespaces: [ns],
      sourceExtra: '    labelSelector: tier=prod\n    checkpoint:\n      flushIntervalMs: 100\n',
      sinks: `    - name: audit\n      type: file\n      path: ${file}\n`,
    }),
  );
  const stateDir = join(dir, 'state');
  const run = async () => {
    const proc = startCrbridge(runArgs([pipeline], stateDir, ['--cluster-name', 'it']), { ...process.env, ...env });
    procs.push(proc);
    const port = await proc.port();
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');
    return proc;
  };
  const events = () => fileEvents(file) as unknown as Ev[];
  const until = (n: number, what: string) => waitFor(() => events().length >= n, 30_000, what);

  let proc = await run();

  // live: in (created), out, in again, deleted; a Backup outside the selector is never seen
  const dev = await create('dev', 'dev');
  await label('dev', 'staging');
  const born = await create('orders', 'prod');
  const out = await label('orders', 'dev');
  const back = await label('orders', 'prod');
  await api.request('DELETE', `${coll}/orders`);
  await until(4, 'four events of orders');
  await new Promise((r) => setTimeout(r, 500));
  const uid = born.metadata.uid;
  const live = events();
  assert.deepEqual(
    live.map((e) => [e.type, e.data.reason, e.data.selector ?? null]),
    [
      [`${TYPE}.created`, 'live', null],
      [`${TYPE}.deleted`, 'live', 'left'], // the departure, not a deletion
      [`${TYPE}.created`, 'live', null],
      [`${TYPE}.deleted`, 'live', null],
    ],
  );
  // the departure carries the last state inside (the labels it had); the entry the state it entered in
  assert.equal(live[1]?.data.object?.metadata.resourceVersion, born.metadata.resourceVersion);
  assert.equal(live[1]?.data.object?.metadata.labels?.tier, 'prod');
  assert.equal(live[2]?.data.object?.metadata.resourceVersion, back.metadata.resourceVersion);
  assert.ok(Number(out.metadata.resourceVersion) < Number(back.metadata.resourceVersion));
  assert.deepEqual(
    live.map((e) => e.id),
    [
      `${uid}.${born.metadata.resourceVersion}`,
      `${uid}.${out.metadata.resourceVersion}.left`, // the write that took it out
      `${uid}.${back.metadata.resourceVersion}`,
      `${uid}.deleted`,
    ],
  );
  assert.equal(new Set(live.map((e) => e.id)).size, 4, 'every change its own id');
  assert.ok(!live.some((e) => e.k8suid === dev.metadata.uid), 'never inside: never seen');

  // restart: relabelled out while crbridge is down
  const keep = await create('users', 'prod');
  await until(5, 'users created');
  assert.equal(await proc.stop('SIGTERM'), 0, `exit code; stderr:\n${proc.stderr().slice(-2000)}`);
  const usersOut = await label('users', 'dev');
  proc = await run();
  await until(6, 'the departure found on the resync');
  const left = events()[5] as Ev;
  assert.equal(
    left.id,
    `${keep.metadata.uid}.${usersOut.metadata.resourceVersion}.left`,
    'the id a live departure has',
  );
  assert.equal(left.type, `${TYPE}.deleted`);
  assert.equal(left.data.reason, 'resync');
  assert.equal(left.data.selector, 'left');
  assert.equal(left.subject, `${ns}/users`);
  // and back in: a new entry, a new id
  const again = await label('users', 'prod');
  await until(7, 'users entering again');
  const entered = events()[6] as Ev;
  assert.equal(entered.id, `${keep.metadata.uid}.${again.metadata.resourceVersion}`);
  assert.equal(entered.type, `${TYPE}.created`);
  assert.equal(await proc.stop('SIGTERM'), 0, `exit code; stderr:\n${proc.stderr().slice(-2000)}`);

  const all = events();
  assert.equal(all.length, 7, 'nothing repeated by the restarts');
  assert.equal(new Set(all.map((e) => e.id)).size, all.length, 'all ids distinct');
  const check = publishedSchemas();
  for (const e of all) assert.deepEqual(check(e as unknown as Record<string, unknown>), [], `${e.id} (${e.type})`);
});
