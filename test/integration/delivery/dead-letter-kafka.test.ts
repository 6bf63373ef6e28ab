/**
 * Dead letters to a Kafka topic on the real stack: `crbridge run` with a pipeline
 * `apiserver Backups → webhook` (a local receiver answering 400 for one object) whose
 * `deadLetter.sink` is the real Kafka broker. The refused event lands in the topic as a dead-letter
 * CloudEvent of its own (type io.crbridge.deadletter, id `<event id>.dead.<pipeline>/<sink>`, the
 * original event, the HTTP error, the attempt count and the sink it failed for); every other change
 * reaches the receiver, signed; the dead-letter sink's metrics are those of `<pipeline>/dead-letter`;
 * no secret appears in the logs, /metrics or the dead letter.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readTopic } from '../../support/events.ts';
import { loadStackEnv } from '../../support/stack.ts';
import { misbehaviourPlan, WebhookReceiver } from '../../support/webhook-receiver.ts';
import {
  type Changes,
  deliveryProblems,
  leakedSecrets,
  refuseObjectNamed,
  startWebhookRun,
  unverified,
  waitAllArrived,
  webhookSecrets,
} from '../../support/webhook-run.ts';
import { logs } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const { secret: SECRET, pathToken: PATH_TOKEN } = webhookSecrets();
const dir = mkdtempSync(join(tmpdir(), 'crb-dlq-kafka-'));
const N = 20;

let receiver: WebhookReceiver | undefined;
after(async () => {
  await receiver?.close();
});

test('dead letters to Kafka: a 400 from the webhook lands in the topic as a dead-letter CloudEvent; the rest arrive', async (t) => {
  const ns = freshNamespace('dlq');
  const topic = `it-dead-letters-${randomBytes(4).toString('hex')}`;
  const plan = misbehaviourPlan([], [refuseObjectNamed('poison', 400, 'spec.databaseName "poison" is refused')]);
  const r = new WebhookReceiver({ secrets: [SECRET], respond: plan.respond });
  receiver = r;
  const run = await startWebhookRun({
    dir,
    name: 'dlq',
    namespaces: [ns],
    baseUrl: await r.start(),
    pathToken: PATH_TOKEN,
    secret: SECRET,
    env,
    specExtra: `  deadLetter:
    sink:
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
`,
    sink: `      delivery:
        retry:
          initialIntervalMs: 100
          maxIntervalMs: 1000
`,
  });
  const proc = run.proc;
  t.after(() => proc.stop('SIGKILL'));

  const api = adminApi();
  const expected: Changes = new Map(); // uid → resourceVersions in order
  await pool(
    Array.from({ length: N }, (_, i) => `b${i}`),
    4,
    async (name) => {
      const c = await createBackup(api, ns, name);
      const u = await updateBackup(api, ns, name, `${name}-db2`);
      expected.set(c.metadata.uid, [c.metadata.resourceVersion, u.metadata.resourceVersion]);
    },
  );
  const poison = await createBackup(api, ns, 'poison');

  // the refused event, as a dead-letter CloudEvent of its own on the topic (and nothing else)
  const seen = await readTopic(env.KAFKA_BROKERS, topic, 1);
  assert.equal(seen.length, 1, `${seen.length} dead letters`);
  const dead = seen[0]?.event;
  assert.ok(dead);
  assert.equal(dead.type, 'io.crbridge.deadletter');
  const data = dead.data as {
    event: { id: string; data: { object: { metadata: { uid: string; resourceVersion: string } } } };
    component: string;
    code: string;
    errors: string[];
    attempts: number;
    time: string;
  };
  assert.equal(data.event.data.object.metadata.uid, poison.metadata.uid);
  assert.equal(data.event.data.object.metadata.resourceVersion, poison.metadata.resourceVersion);
  assert.equal(dead.id, `${data.event.id}.dead.dlq/hook`);
  assert.equal(data.component, 'dlq/hook');
  assert.equal(data.code, 'CRB_DELIVERY_PERMANENT');
  assert.equal(data.attempts, 1);
  assert.match(data.errors.join('\n'), /HTTP 400: spec\.databaseName "poison" is refused/);
  assert.ok(!Number.isNaN(Date.parse(data.time)));
  // the refused event reached the receiver once (a 400 is not retried) and was never accepted
  const poisonPosts = r.requests.filter((q) => q.method === 'POST' && q.events.some((e) => e.id === data.event.id));
  assert.equal(poisonPosts.length, 1);

  // every other change arrived, signed, in per-object order
  await waitAllArrived(() => r.acceptedEvents, expected, 60_000);
  assert.deepEqual(unverified(r.requests), []);
  assert.deepEqual(deliveryProblems(r.acceptedEvents, expected).slice(0, 20), []);

  // metrics: the webhook sink counted the dead letter; the dead-letter sink is <pipeline>/dead-letter
  const metricsText = (await run.ops('/metrics')).text;
  assert.match(metricsText, /crbridge_component_dead_lettered_events_total\{[^}]*component="dlq\/hook"[^}]*\} 1\b/);
  assert.match(metricsText, /component="dlq\/dead-letter"/);

  // no secret in the logs, the metrics or the dead letter
  const texts = [proc.stderr(), JSON.stringify(logs(proc)), metricsText, JSON.stringify(seen)];
  assert.deepEqual(leakedSecrets(texts, [SECRET, SECRET.slice('whsec_'.length), PATH_TOKEN]), []);
});
