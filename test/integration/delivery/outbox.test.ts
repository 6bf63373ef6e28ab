/**
 * The durable outbox on the real stack: `crbridge run` Backups → webhook with
 * `delivery.outbox.enabled: true`, the receiver answering 503 while ~2,000 Backup changes are made
 * in the REAL apiserver; once the outbox holds them all (crbridge_outbox_entries), crbridge (the
 * node process itself) is killed with SIGKILL; the receiver then answers 200 and crbridge is
 * restarted on the same state dir: it replays the outbox, and every change arrives, per-object
 * order holds (resourceVersions increase per uid), and duplicates only ever carry the same id.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { misbehaviourPlan, WebhookReceiver } from '../../support/webhook-receiver.ts';
import { type Changes, deliveryProblems, startWebhookRun, waitAllArrived } from '../../support/webhook-run.ts';
import { logs, metric } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const dir = mkdtempSync(join(tmpdir(), 'crb-outbox-'));
const OBJECTS = 500;
const UPDATES = 3; // 500 × (create + 3 updates) = 2,000 changes

let receiver: WebhookReceiver | undefined;
after(async () => {
  await receiver?.close();
});

test('outbox: ~2,000 changes stored while the webhook is down survive kill -9 and all arrive after restart, in per-object order', async (t) => {
  const ns = freshNamespace('ob');
  const plan = misbehaviourPlan([]);
  plan.down = { status: 503 };
  const r = new WebhookReceiver({ respond: plan.respond });
  receiver = r;
  const run = await startWebhookRun({
    dir,
    name: 'ob',
    namespaces: [ns],
    baseUrl: await r.start(),
    env,
    sink: `      timeoutMs: 2000
      delivery:
        retry:
          initialIntervalMs: 200
          maxIntervalMs: 1000
        outbox:
          enabled: true
`,
  });
  t.after(() => Promise.all(run.all.map((p) => p.stop('SIGKILL'))));
  const first = run.proc;

  // the changes, as the apiserver answered them: uid → resourceVersions in order
  const api = adminApi();
  const expected: Changes = new Map();
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
    async () => (await metric(run.port, 'crbridge_outbox_entries', labels)) >= total,
    90_000,
    `the outbox holds all ${total} changes`,
  );
  assert.ok(r.acceptedEvents.length === 0, 'nothing was accepted while the receiver was down');
  assert.ok(r.requests.length > 0, 'the sink tried (and got 503s)');

  // kill -9 the crbridge process itself, then let the receiver accept
  assert.equal(first.child.pid !== undefined, true);
  assert.equal(await first.stop('SIGKILL'), 'SIGKILL');
  const before = r.requests.length;
  plan.down = undefined;

  const second = await run.restart();
  await waitAllArrived(() => r.acceptedEvents, expected, 120_000, 'every change at the receiver after the restart');
  assert.ok(r.requests.length > before);
  // the second process replayed what the first had stored (not only a re-list from the cluster)
  const replay = logs(second).find((l) => l.msg === 'replaying the outbox');
  assert.ok(replay, 'the restarted process replays its outbox');
  assert.ok(Number(replay.events) >= total, `replayed ${String(replay.events)} events`);

  // per-object order, every change, duplicates only ever with the same id
  assert.deepEqual(deliveryProblems(r.acceptedEvents, expected).slice(0, 20), []);
  // and the outbox drains once everything is acknowledged
  await eventually(
    async () => (await metric(run.port, 'crbridge_outbox_entries', labels)) === 0,
    30_000,
    'the outbox is empty again',
  );
});
