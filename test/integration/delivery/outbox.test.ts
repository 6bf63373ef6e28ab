/**
 * The durable outbox on the real stack: `crbridge run` Backups → webhook with
 * `delivery.outbox.enabled: true`, the receiver answering 503 while ~2,000 Backup changes are made
 * in the REAL apiserver; once the outbox holds them all (crbridge_outbox_entries), crbridge (the
 * node process itself) is killed with SIGKILL; the receiver then answers 200 and crbridge is
 * restarted on the same state dir: it replays the outbox, and every change arrives, per-object
 * order holds (resourceVersions increase per uid), and duplicates only ever carry the same id.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { type ReceivedEvent, WebhookReceiver } from '../../support/webhook-receiver.ts';
import { logs, metric } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const dir = mkdtempSync(join(tmpdir(), 'crb-outbox-'));
const OBJECTS = 500;
const UPDATES = 3; // 500 × (create + 3 updates) = 2,000 changes

const objectOf = (e: ReceivedEvent) =>
  (e.data as { object: { metadata: { uid: string; resourceVersion: string } } }).object.metadata;

let receiver: WebhookReceiver | undefined;
after(async () => {
  await receiver?.close();
});

test('outbox: ~2,000 changes stored while the webhook is down survive kill -9 and all arrive after restart, in per-object order', async (t) => {
  const ns = freshNamespace('ob');
  let down = true;
  const r = new WebhookReceiver({ respond: (q) => (q.method === 'POST' && down ? { status: 503 } : undefined) });
  receiver = r;
  const base = await r.start();
  const file = join(dir, 'outbox.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'ob',
      namespaces: [ns],
      sinks: `    - name: hook
      type: webhook
      url: ${base}/hooks
      timeoutMs: 2000
      delivery:
        retry:
          initialIntervalMs: 200
          maxIntervalMs: 1000
        outbox:
          enabled: true
`,
    }),
  );
  const stateDir = join(dir, 'state');
  const childEnv = { ...process.env, ...env };
  const first = startCrbridge(runArgs([file], stateDir, ['--cluster-name', 'it']), childEnv);
  t.after(() => first.stop('SIGKILL'));
  const port = await first.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  // the changes, as the apiserver answered them: uid → resourceVersions in order
  const api = adminApi();
  const expected = new Map<string, string[]>();
  const names = Array.from({ length: OBJECTS }, (_, i) => `b${i}`);
  await pool(names, 16, async (name) => {
    const rvs: string[] = [];
    const c = await createBackup(api, ns, name);
    rvs.push(c.metadata.resourceVersion);
    for (let u = 1; u <= UPDATES; u++)
      rvs.push((await updateBackup(api, ns, name, `${name}-db${u}`)).metadata.resourceVersion);
    expected.set(c.metadata.uid, rvs);
  });
  const total = OBJECTS * (UPDATES + 1);

  const labels = { component: 'ob/hook' };
  await eventually(
    async () => (await metric(port, 'crbridge_outbox_entries', labels)) >= total,
    90_000,
    `the outbox holds all ${total} changes`,
  );
  assert.ok(r.acceptedEvents.length === 0, 'nothing was accepted while the receiver was down');
  assert.ok(r.requests.length > 0, 'the sink tried (and got 503s)');

  // kill -9 the crbridge process itself, then let the receiver accept
  assert.equal(first.child.pid !== undefined, true);
  assert.equal(await first.stop('SIGKILL'), 'SIGKILL');
  const before = r.requests.length;
  down = false;

  const second = startCrbridge(runArgs([file], stateDir, ['--cluster-name', 'it']), childEnv);
  t.after(() => second.stop('SIGKILL'));
  const port2 = await second.port();
  await eventually(
    () => {
      const got = new Set(r.acceptedEvents.map((e) => `${objectOf(e).uid}@${objectOf(e).resourceVersion}`));
      return [...expected].every(([uid, rvs]) => rvs.every((rv) => got.has(`${uid}@${rv}`)));
    },
    120_000,
    'every change at the receiver after the restart',
  );
  assert.ok(r.requests.length > before);
  // the second process replayed what the first had stored (not only a re-list from the cluster)
  const replay = logs(second).find((l) => l.msg === 'replaying the outbox');
  assert.ok(replay, 'the restarted process replays its outbox');
  assert.ok(Number(replay.events) >= total, `replayed ${String(replay.events)} events`);

  // duplicates only with the same id: one id is always the same change
  const changeById = new Map<string, string>();
  for (const e of r.acceptedEvents) {
    const change = `${objectOf(e).uid}@${objectOf(e).resourceVersion}`;
    const prev = changeById.get(e.id);
    if (prev !== undefined) assert.equal(change, prev, `id ${e.id} carried two different changes`);
    changeById.set(e.id, change);
  }
  const ids = new Map<string, string>();
  for (const [id, change] of changeById) {
    const prev = ids.get(change);
    if (prev !== undefined) assert.equal(id, prev, `change ${change} arrived under two ids`);
    ids.set(change, id);
  }
  // per-object order: the accepted events of one uid have increasing resourceVersions (exact duplicates aside)
  const perUid = new Map<string, { id: string; rv: number }[]>();
  for (const e of r.acceptedEvents) {
    const m = objectOf(e);
    const list = perUid.get(m.uid) ?? [];
    if (list.at(-1)?.id !== e.id) list.push({ id: e.id, rv: Number(m.resourceVersion) });
    perUid.set(m.uid, list);
  }
  for (const [uid, rvs] of expected) {
    const seen = perUid.get(uid)?.map((x) => x.rv) ?? [];
    assert.deepEqual(
      seen,
      [...seen].sort((a, b) => a - b),
      `order of ${uid}`,
    );
    assert.deepEqual(
      seen.filter((rv) => rvs.includes(String(rv))),
      rvs.map(Number),
      `changes of ${uid}`,
    );
  }
  // and the outbox drains once everything is acknowledged
  await eventually(
    async () => (await metric(port2, 'crbridge_outbox_entries', labels)) === 0,
    30_000,
    'the outbox is empty again',
  );
});
