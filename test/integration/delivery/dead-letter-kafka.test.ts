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
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { readTopic } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { type ReceivedEvent, WebhookReceiver } from '../../support/webhook-receiver.ts';
import { logs } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const PATH_TOKEN = `p${randomBytes(10).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-dlq-kafka-'));
const N = 20;

const objectOf = (e: ReceivedEvent) =>
  (e.data as { object: { metadata: { uid: string; name: string; resourceVersion: string } } }).object.metadata;

let receiver: WebhookReceiver | undefined;
after(async () => {
  await receiver?.close();
});

test('dead letters to Kafka: a 400 from the webhook lands in the topic as a dead-letter CloudEvent; the rest arrive', async (t) => {
  const ns = freshNamespace('dlq');
  const topic = `it-dead-letters-${randomBytes(4).toString('hex')}`;
  const r = new WebhookReceiver({
    secrets: [SECRET],
    respond: (q) =>
      q.method === 'POST' && q.events.some((e) => objectOf(e).name === 'poison')
        ? { status: 400, body: 'spec.databaseName "poison" is refused' }
        : undefined,
  });
  receiver = r;
  const base = await r.start();

  const file = join(dir, 'dlq.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'dlq',
      namespaces: [ns],
      specExtra: `  deadLetter:
    sink:
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
`,
      sinks: `    - name: hook
      type: webhook
      url: \${env:IT_WEBHOOK_URL}
      signing:
        secrets: ["\${env:IT_WEBHOOK_SECRET}"]
      delivery:
        retry:
          initialIntervalMs: 100
          maxIntervalMs: 1000
`,
    }),
  );
  const proc = startCrbridge(runArgs([file], join(dir, 'state'), ['--cluster-name', 'it']), {
    ...process.env,
    ...env,
    IT_WEBHOOK_URL: `${base}/hooks/${PATH_TOKEN}`,
    IT_WEBHOOK_SECRET: SECRET,
  });
  t.after(() => proc.stop('SIGKILL'));
  const port = await proc.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  const api = adminApi();
  const expected = new Map<string, string[]>(); // uid → resourceVersions in order
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
  await eventually(
    () => {
      const got = new Set(r.acceptedEvents.map((e) => `${objectOf(e).uid}@${objectOf(e).resourceVersion}`));
      return [...expected].every(([uid, rvs]) => rvs.every((rv) => got.has(`${uid}@${rv}`)));
    },
    60_000,
    'every change at the receiver',
  );
  assert.deepEqual(
    r.requests.filter((q) => q.method === 'POST' && q.verified !== true).map((q) => q.n),
    [],
  );
  for (const [uid, rvs] of expected) {
    const got = r.acceptedEvents.filter((e) => objectOf(e).uid === uid).map((e) => objectOf(e).resourceVersion);
    assert.deepEqual([...new Set(got)], rvs, `changes of ${uid} in order`);
  }

  // metrics: the webhook sink counted the dead letter; the dead-letter sink is <pipeline>/dead-letter
  const metricsText = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  assert.match(metricsText, /crbridge_component_dead_lettered_events_total\{[^}]*component="dlq\/hook"[^}]*\} 1\b/);
  assert.match(metricsText, /component="dlq\/dead-letter"/);

  // no secret in the logs, the metrics or the dead letter
  const everything = [proc.stderr(), JSON.stringify(logs(proc)), metricsText, JSON.stringify(seen)].join('\n');
  for (const s of [SECRET, SECRET.slice('whsec_'.length), PATH_TOKEN])
    assert.ok(!everything.includes(s), `a secret leaked: ${s.slice(0, 4)}…`);
});
