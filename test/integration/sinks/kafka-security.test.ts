/**
 * The Kafka sink's security and topic handling on the REAL broker's SASL_PLAINTEXT listener (the
 * stack's PLAIN user and SCRAM-SHA-256/512 user) and SSL listener: one `crbridge run`, one pipeline,
 * eight kafka sinks — PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 with credentials from `${file:}` and `${env:}`
 * references deliver every change; a wrong SCRAM password is one clear error (the mechanism, user
 * and what to check) that never prints a password, retried and never dead-lettered; a missing topic
 * with auto-create off (`autoCreateTopics: false`) is a clear, retryable error naming the topic,
 * and the events arrive once the topic is created; a topic the brokers create on first use is
 * delivered with no such error. Over the SSL listener (client certificates
 * required), a sink with the stack CA, a client certificate and `serverName` delivers; one without a
 * client certificate is refused by the broker: retried, nothing dead-lettered.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { readTopic } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { metricSum } from '../../support/prom.ts';
import { waitFor as eventually, kafkaSasl, kafkaTls, loadStackEnv } from '../../support/stack.ts';
import { leakedSecrets } from '../../support/webhook-run.ts';
import { logs } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool } from '../source/helpers.ts';

const env = loadStackEnv();
const sasl = kafkaSasl();
const tls = kafkaTls();
const dir = mkdtempSync(join(tmpdir(), 'crb-kafka-sec-'));
const N = 10;
const WRONG = `wrong-${randomBytes(8).toString('hex')}`;

test('kafka security: PLAIN, SCRAM-SHA-256/512 and TLS with a client certificate deliver; a wrong password, no client certificate and a missing topic are clear, retried errors', async (t) => {
  const ns = freshNamespace('ksec');
  const tag = randomBytes(4).toString('hex');
  const topics = {
    plain: `it-sec-plain-${tag}`,
    s256: `it-sec-s256-${tag}`,
    s512: `it-sec-s512-${tag}`,
    wrong: `it-sec-wrong-${tag}`,
    missing: `it-sec-missing-${tag}`,
    tls: `it-sec-tls-${tag}`,
    nocert: `it-sec-nocert-${tag}`,
    auto: `it-sec-auto-${tag}`,
  };
  // the delivering sinks' topics exist beforehand (with leaders): a topic created on first use can
  // make the first produce fail for some partitions, and the retry then duplicates the others
  const admin = new Kafka({ clientId: 'it-ksec', brokers: [env.KAFKA_BROKERS], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await admin.createTopics({
    topics: [topics.plain, topics.s256, topics.s512, topics.tls].map((topic) => ({ topic, numPartitions: 3 })),
    waitForLeaders: true,
  });
  const plainPw = join(dir, 'plain-password');
  const scramPw = join(dir, 'scram-password');
  writeFileSync(plainPw, `${sasl.plain.password}\n`, { mode: 0o600 });
  writeFileSync(scramPw, sasl.scram.password, { mode: 0o600 });
  const sink = (name: string, topic: string, mechanism: string, user: string, password: string, extra = '') =>
    `    - name: ${name}
      type: kafka
      brokers: ["\${env:IT_SASL_BROKERS}"]
      topic: ${topic}
      sasl:
        mechanism: ${mechanism}
        username: ${user}
        password: ${password}
${extra}      delivery:
        retry:
          initialIntervalMs: 200
          maxIntervalMs: 1000
`;
  const file = join(dir, 'ksec.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'ksec',
      namespaces: [ns],
      sinks: [
        sink('plain', topics.plain, 'plain', `\${env:IT_PLAIN_USER}`, `\${file:${plainPw}}`),
        sink('s256', topics.s256, 'scram-sha-256', `\${env:IT_SCRAM_USER}`, `\${env:IT_SCRAM_PASSWORD}`),
        sink('s512', topics.s512, 'scram-sha-512', `\${env:IT_SCRAM_USER}`, `\${file:${scramPw}}`),
        sink('wrong', topics.wrong, 'scram-sha-512', `\${env:IT_SCRAM_USER}`, `\${env:IT_WRONG_PASSWORD}`),
        sink('auto', topics.auto, 'scram-sha-256', `\${env:IT_SCRAM_USER}`, `\${env:IT_SCRAM_PASSWORD}`),
        sink(
          'missing',
          topics.missing,
          'scram-sha-512',
          `\${env:IT_SCRAM_USER}`,
          `\${env:IT_SCRAM_PASSWORD}`,
          '      autoCreateTopics: false\n',
        ),
        `    - name: tls
      type: kafka
      brokers: ["${tls.brokers}"]
      topic: ${topics.tls}
      tls:
        caFile: ${tls.caFile}
        certFile: ${tls.certFile}
        keyFile: ${tls.keyFile}
        serverName: localhost
    - name: nocert
      type: kafka
      brokers: ["${tls.brokers}"]
      topic: ${topics.nocert}
      tls:
        caFile: ${tls.caFile}
      delivery:
        retry:
          initialIntervalMs: 200
          maxIntervalMs: 1000
`,
      ].join(''),
    }),
  );
  const proc = startCrbridge(runArgs([file], join(dir, 'state'), ['--cluster-name', 'it']), {
    ...process.env,
    ...env,
    IT_SASL_BROKERS: sasl.brokers,
    IT_PLAIN_USER: sasl.plain.username,
    IT_SCRAM_USER: sasl.scram.username,
    IT_SCRAM_PASSWORD: sasl.scram.password,
    IT_WRONG_PASSWORD: WRONG,
  });
  t.after(() => proc.stop('SIGKILL'));
  const port = await proc.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  const api = adminApi();
  const uids = new Set<string>();
  await pool(
    Array.from({ length: N }, (_, i) => `b${i}`),
    4,
    async (name) => uids.add((await createBackup(api, ns, name)).metadata.uid),
  );

  // PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 each delivered every change (read back over PLAINTEXT)
  const ids: string[][] = [];
  for (const topic of [topics.plain, topics.s256, topics.s512, topics.tls]) {
    const seen = await readTopic(env.KAFKA_BROKERS, topic, N, 30_000);
    assert.equal(seen.length, N, `${topic}: ${seen.length} records`);
    assert.deepEqual(new Set(seen.map((s) => s.key)), uids, topic);
    ids.push(seen.map((s) => s.event.id).sort());
  }
  assert.deepEqual(ids[1], ids[0]);
  assert.deepEqual(ids[2], ids[0]);
  assert.deepEqual(ids[3], ids[0]);

  // a topic the brokers create on first use (auto-create on): delivered, and no false "missing" error
  const auto = await readTopic(env.KAFKA_BROKERS, topics.auto, N, 30_000);
  assert.deepEqual(new Set(auto.map((s) => s.key)), uids);
  assert.deepEqual(
    logs(proc).filter((l) => l.component === 'ksec/auto' && l.level !== 'debug'),
    [],
    'nothing logged for a topic created on first use',
  );

  // the wrong password: one clear error, retried, nothing dead-lettered
  const metrics = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const refused = await eventually(
    () => logs(proc).find((l) => l.kafkaError === 'SASL_AUTHENTICATION_FAILED'),
    20_000,
    'the SASL error in the log',
  );
  assert.equal(refused.component, 'ksec/wrong');
  assert.equal(refused.code, 'CRB_DELIVERY_CONFIG');
  assert.equal(refused.topic, topics.wrong);
  assert.match(String(refused.check), /check the mechanism, user name and password/);
  assert.equal(logs(proc).filter((l) => l.kafkaError === 'SASL_AUTHENTICATION_FAILED').length, 1, 'logged once');
  await eventually(
    async () => metricSum(await metrics(), 'crbridge_component_retries_total', { component: 'ksec/wrong' }) >= 2,
    20_000,
    'retries of the wrong-password sink',
  );

  // the missing topic: a clear, retryable error naming it ...
  const missing = await eventually(
    () => logs(proc).find((l) => l.kafkaError === 'UNKNOWN_TOPIC_OR_PARTITION'),
    20_000,
    'the missing-topic error in the log',
  );
  assert.equal(missing.component, 'ksec/missing');
  assert.equal(missing.topic, topics.missing);
  assert.match(String(missing.check), new RegExp(`topic "${topics.missing}" does not exist`));
  await eventually(
    async () => metricSum(await metrics(), 'crbridge_component_retries_total', { component: 'ksec/missing' }) >= 2,
    20_000,
    'retries of the missing-topic sink',
  );
  // ... and once the topic exists, every change arrives on it
  assert.ok(!(await admin.listTopics()).includes(topics.missing), 'crbridge did not create it');
  await admin.createTopics({ topics: [{ topic: topics.missing, numPartitions: 3 }], waitForLeaders: true });
  const late = await readTopic(env.KAFKA_BROKERS, topics.missing, N, 30_000);
  assert.deepEqual(new Set(late.map((s) => s.key)), uids);

  const text = await metrics();
  // without a client certificate the SSL listener refuses: retried, nothing dead-lettered
  assert.ok(metricSum(text, 'crbridge_component_retries_total', { component: 'ksec/nocert' }) >= 2);
  assert.equal(metricSum(text, 'crbridge_component_sent_events_total', { component: 'ksec/nocert' }), 0);
  for (const c of ['ksec/wrong', 'ksec/missing', 'ksec/nocert'])
    assert.equal(metricSum(text, 'crbridge_component_dead_lettered_events_total', { component: c }), 0, c);
  // no password anywhere (logs, metrics)
  assert.deepEqual(
    leakedSecrets([proc.stderr(), proc.stdout(), text], [WRONG, sasl.plain.password, sasl.scram.password]),
    [],
  );
});
