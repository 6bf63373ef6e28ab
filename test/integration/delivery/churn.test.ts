/**
 * 500 Backups churn in the REAL apiserver (created, updated twice, every tenth deleted) while the
 * webhook receiver misbehaves on a plan: 500s, 429 with Retry-After in seconds and as an HTTP date,
 * 2 s stalls past a 1 s request timeout, connection resets, then a 410 Gone — after which the sink
 * sends nothing and keeps its events (outbox enabled) until crbridge restarts — and more trouble
 * after the restart; one object's request gets a 400 and lands in the dead-letter Kafka topic with
 * its error. Compared against the test's own kubectl watch: every change arrives, per-object order
 * holds, one id per change (retries carry the same id and body), no retry came before its
 * Retry-After, every signature verifies with the standardwebhooks library, no secret leaks.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readTopic } from '../../support/events.ts';
import { metricSum } from '../../support/prom.ts';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { ClusterWatch } from '../../support/watch.ts';
import {
  misbehaviourPlan,
  type PlanStep,
  retryAfterDate,
  retryAfterViolations,
  WebhookReceiver,
} from '../../support/webhook-receiver.ts';
import {
  deliveryProblems,
  leakedSecrets,
  missingChanges,
  objectOf,
  refuseObjectNamed,
  retryChanges,
  startWebhookRun,
  unverified,
  waitAllArrived,
  webhookSecrets,
} from '../../support/webhook-run.ts';
import { logs } from '../events/helpers.ts';
import { adminApi, createBackup, deleteBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const { secret: SECRET, pathToken: PATH_TOKEN } = webhookSecrets();
const dir = mkdtempSync(join(tmpdir(), 'crb-churn-'));
const OBJECTS = 500;
const UPDATES = 2;
const GONE_AT = 300; // the POST answered 410 Gone

const steps: PlanStep[] = [
  { from: 5, to: 7, action: { status: 500, body: 'internal error' } },
  { from: 30, action: { status: 429, headers: { 'retry-after': '1' } } },
  { from: 60, action: retryAfterDate(2000) },
  { from: 90, to: 91, action: { stallMs: 2000 } },
  { from: 120, to: 121, action: { reset: true } },
  { from: 200, action: { status: 503, headers: { 'retry-after': '1' } } },
  { from: GONE_AT, action: { status: 410, body: 'gone' } },
  // after the restart
  { from: GONE_AT + 40, to: GONE_AT + 41, action: { status: 502 } },
  { from: GONE_AT + 80, action: retryAfterDate(1500) },
  { from: GONE_AT + 120, action: { stallMs: 2000 } },
  { from: GONE_AT + 160, action: { reset: true } },
];

let receiver: WebhookReceiver | undefined;
let watch: ClusterWatch | undefined;
after(async () => {
  watch?.stop();
  await receiver?.close();
});

test('churn: 500 objects through 500s, 429s, stalls, resets and a 410 with a restart; a 400 goes to the Kafka dead letters', async (t) => {
  const ns = freshNamespace('churn');
  const topic = `it-churn-dead-${randomBytes(4).toString('hex')}`;
  const plan = misbehaviourPlan(steps, [refuseObjectNamed('poison', 400, 'spec.databaseName "poison" is refused')]);
  const r = new WebhookReceiver({ secrets: [SECRET], respond: plan.respond });
  receiver = r;
  const baseUrl = await r.start();
  const run = await startWebhookRun({
    dir,
    name: 'churn',
    args: ['--cluster-name', 'it', '--shutdown-timeout', '3'],
    namespaces: [ns],
    baseUrl,
    pathToken: PATH_TOKEN,
    secret: SECRET,
    env,
    specExtra: `  deadLetter:
    sink:
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
`,
    sink: `      timeoutMs: 1000
      delivery:
        retry:
          initialIntervalMs: 100
          maxIntervalMs: 1000
        outbox:
          enabled: true
`,
  });
  t.after(() => Promise.all(run.all.map((p) => p.stop('SIGKILL'))));
  const t0 = Date.now();
  const phase = (what: string) => t.diagnostic(`${what} at +${Date.now() - t0} ms (${plan.posts} POSTs)`);

  // the test's own record of every change, from a watch of its own
  const api = adminApi();
  const w = new ClusterWatch('backups.example.com', ns);
  watch = w;
  await w.ready(() => createBackup(api, ns, 'first'));
  const names = Array.from({ length: OBJECTS - 1 }, (_, i) => `b${i}`);
  let poisonUid = '';
  await pool(names, 16, async (name) => {
    await createBackup(api, ns, name);
    for (let u = 1; u <= UPDATES; u++) await updateBackup(api, ns, name, `${name}-db${u}`);
    if (name.endsWith('0')) await deleteBackup(api, ns, name);
    if (name === 'b250') poisonUid = (await createBackup(api, ns, 'poison')).metadata.uid;
  });
  const deletes = names.filter((n) => n.endsWith('0')).length;
  const total = 1 + (OBJECTS - 1) * (1 + UPDATES) + deletes + 1;
  await w.until(total);
  phase('churn done');
  const expected = new Map([...w.changes].filter(([uid]) => uid !== poisonUid));

  // the 410 came: the sink stops sending (and keeps everything) until the restart
  const gone = await eventually(
    () => r.requests.find((q) => 'status' in q.action && q.action.status === 410),
    60_000,
    'the 410',
  );
  await eventually(
    async () =>
      metricSum((await run.ops('/metrics')).text, 'crbridge_webhook_endpoint_gone', { component: 'churn/hook' }) === 1,
    10_000,
    'the endpoint-gone gauge',
  );
  const first = run.proc;
  await new Promise((res) => setTimeout(res, 1500));
  assert.deepEqual(
    r.requests.filter((q) => q.at > gone.at + 1000).map((q) => q.n),
    [],
    'nothing is sent after the 410',
  );
  assert.ok(missingChanges(r.acceptedEvents, expected).length > 0, 'changes are still due after the 410');
  const metricsBefore = (await run.ops('/metrics')).text;
  assert.equal(await first.stop('SIGTERM'), 0);

  // the receiver is fixed (the plan's 410 was one answer); the restart replays the outbox
  phase('first process stopped');
  const second = await run.restart();
  phase('restarted');
  await waitAllArrived(() => r.acceptedEvents, expected, 60_000);
  phase('everything arrived');
  const replay = logs(second).find((l) => l.msg === 'replaying the outbox');
  assert.ok(replay && Number(replay.events) > 0, 'the restarted process replays what the outbox kept');

  const problems = deliveryProblems(r.acceptedEvents, expected);
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems`);
  assert.deepEqual(unverified(r.requests), [], 'every signature verifies (standardwebhooks)');
  assert.deepEqual(retryAfterViolations(r.requests), [], 'no retry before its Retry-After');
  // retries carry the same id and the same bytes, across the restart too
  assert.deepEqual(retryChanges(r.requests), [], 'retries carry the same id and bytes');
  // the plan's trouble all happened
  const did = (f: (q: (typeof r.requests)[number]) => boolean) => r.requests.filter(f).length;
  assert.ok(did((q) => 'stallMs' in q.action) >= 3, 'stalls');
  assert.ok(did((q) => 'reset' in q.action) >= 3, 'resets');
  assert.ok(did((q) => 'status' in q.action && q.action.status === 429) >= 3, '429s');
  assert.ok(did((q) => 'status' in q.action && q.action.status >= 500) >= 6, '5xx');
  assert.equal(
    metricSum((await run.ops('/metrics')).text, 'crbridge_webhook_endpoint_gone', { component: 'churn/hook' }),
    0,
  );

  // the 400: one dead letter in the Kafka topic, with its error; never accepted
  const seen = await readTopic(env.KAFKA_BROKERS, topic, 1);
  assert.equal(seen.length, 1, `${seen.length} dead letters`);
  const data = seen[0]?.event.data as {
    event: { id: string; data: { object: { metadata: { uid: string } } } };
    code: string;
    errors: string[];
  };
  assert.equal(data.event.data.object.metadata.uid, poisonUid);
  assert.equal(data.code, 'CRB_DELIVERY_PERMANENT');
  assert.match(data.errors.join('\n'), /HTTP 400: spec\.databaseName "poison" is refused/);
  assert.ok(!r.acceptedEvents.some((e) => objectOf(e).uid === poisonUid));

  // no secret anywhere
  const texts = [
    ...run.all.map((p) => p.stderr()),
    metricsBefore,
    (await run.ops('/metrics')).text,
    JSON.stringify(seen),
  ];
  assert.deepEqual(leakedSecrets(texts, [SECRET, SECRET.slice('whsec_'.length), PATH_TOKEN]), []);
});
