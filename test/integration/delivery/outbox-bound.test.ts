/**
 * The outbox at its byte bound on the real stack: Backups → webhook with a small outbox
 * (`maxBytes` 16 KiB, a few events) and a small in-memory queue while the receiver answers 503.
 * The outbox fills, the source pauses (the pipeline receives nothing more while the REAL apiserver
 * keeps changing objects), `/readyz` answers 503 naming the sink and the bound, and
 * `crbridge_outbox_full` is 1. Then the receiver recovers: every change the test's own watch saw
 * arrives, in per-object order, one id per change, and readiness comes back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { metricSum } from '../../support/prom.ts';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { ClusterWatch } from '../../support/watch.ts';
import { misbehaviourPlan, WebhookReceiver } from '../../support/webhook-receiver.ts';
import { deliveryProblems, startWebhookRun, waitAllArrived } from '../../support/webhook-run.ts';
import { adminApi, createBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const dir = mkdtempSync(join(tmpdir(), 'crb-outbox-bound-'));
const OBJECTS = 60;
const MAX_BYTES = 16_384;

let receiver: WebhookReceiver | undefined;
let watch: ClusterWatch | undefined;
after(async () => {
  watch?.stop();
  await receiver?.close();
});

test('outbox bound: the source pauses and /readyz says why while the sink is down; after recovery everything arrives, no gap', async (t) => {
  const ns = freshNamespace('obb');
  const plan = misbehaviourPlan([]);
  plan.down = { status: 503, body: 'down for maintenance' };
  const r = new WebhookReceiver({ respond: plan.respond });
  receiver = r;
  const run = await startWebhookRun({
    dir,
    name: 'obb',
    namespaces: [ns],
    baseUrl: await r.start(),
    env,
    sink: `      timeoutMs: 2000
      delivery:
        queueCapacity: 20
        retry:
          initialIntervalMs: 100
          maxIntervalMs: 500
        outbox:
          enabled: true
          maxBytes: ${MAX_BYTES}
`,
  });
  t.after(() => Promise.all(run.all.map((p) => p.stop('SIGKILL'))));
  const metrics = async () => (await run.ops('/metrics')).text;
  const sink = { component: 'obb/hook' };

  const api = adminApi();
  const w = new ClusterWatch('backups.example.com', ns);
  watch = w;
  await w.ready(() => createBackup(api, ns, 'first'));
  const names = Array.from({ length: OBJECTS }, (_, i) => `b${i}`);
  await pool(names, 8, (name) => createBackup(api, ns, name));

  // the outbox reaches its bound: not ready, naming the sink and the bound
  const ready = await eventually(
    async () => {
      const rz = await run.ops('/readyz');
      return rz.status === 503 && /outbox of obb\/hook is full/.test(rz.text) ? rz.text : undefined;
    },
    30_000,
    '/readyz naming the full outbox',
  );
  assert.match(ready, new RegExp(`maxBytes ${MAX_BYTES}`));
  assert.match(ready, /reading paused/);
  let text = await metrics();
  assert.equal(metricSum(text, 'crbridge_outbox_full', sink), 1);
  assert.ok(metricSum(text, 'crbridge_outbox_bytes', sink) <= MAX_BYTES + 4096, 'the outbox stays near its bound');
  assert.ok(metricSum(text, 'crbridge_outbox_refused_appends_total', sink) >= 1);

  // the source is paused: the cluster keeps changing, the pipeline receives nothing more
  const receivedNow = async () =>
    metricSum(await metrics(), 'crbridge_component_received_events_total', { component: 'obb' });
  const received = await eventually(
    async () => {
      const before = await receivedNow();
      await new Promise((res) => setTimeout(res, 1000));
      return before === (await receivedNow()) ? before : undefined;
    },
    20_000,
    'the source to stop',
  );
  assert.ok(received < 1 + OBJECTS, `the pipeline stopped early (received ${received} of ${1 + OBJECTS})`);
  t.diagnostic(
    `paused after ${received} of ${1 + OBJECTS} changes; outbox ${metricSum(text, 'crbridge_outbox_entries', sink)} events, ${metricSum(text, 'crbridge_outbox_bytes', sink)} bytes`,
  );
  await pool(names, 8, (name) => updateBackup(api, ns, name, `${name}-db2`));
  await w.until(1 + 2 * OBJECTS);
  await new Promise((res) => setTimeout(res, 1500));
  assert.equal(await receivedNow(), received, 'nothing read while paused');
  assert.equal(r.acceptedEvents.length, 0);
  assert.ok(r.requests.length > 0, 'the sink kept trying');

  // the receiver recovers: everything arrives with no gap, in per-object order
  plan.down = undefined;
  await waitAllArrived(() => r.acceptedEvents, w.changes, 60_000);
  assert.deepEqual(deliveryProblems(r.acceptedEvents, w.changes).slice(0, 20), []);
  await eventually(async () => (await run.ops('/readyz')).status === 200, 20_000, 'ready again');
  text = await metrics();
  assert.equal(metricSum(text, 'crbridge_outbox_full', sink), 0);
  assert.ok(metricSum(text, 'crbridge_component_received_events_total', { component: 'obb' }) >= 1 + 2 * OBJECTS);
});
