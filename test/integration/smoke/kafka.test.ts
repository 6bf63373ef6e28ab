/**
 * Smoke test of the real Kafka 4 KRaft node: kafkajs produces a record with a header to a fresh topic,
 * and both a kafkajs consumer and Debian's `kcat` read the same key, value and header back.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { loadStackEnv, waitFor } from '../../support/stack.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const topic = `smoke-kafka-${suffix}`;
const kafka = new Kafka({
  clientId: 'it-smoke',
  brokers: env.KAFKA_BROKERS.split(','),
  logLevel: logLevel.NOTHING,
});
const value = JSON.stringify({ hello: 'kafka', suffix });

describe('smoke: kafka', () => {
  const consumer = kafka.consumer({ groupId: `smoke-${suffix}` });
  after(async () => {
    await consumer.disconnect().catch(() => {});
  });

  test('kafkajs produces a record with a header to a fresh topic', async () => {
    const admin = kafka.admin();
    await admin.connect();
    try {
      assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true }), true);
    } finally {
      await admin.disconnect();
    }
    const producer = kafka.producer();
    await producer.connect();
    try {
      const [meta] = await producer.send({
        topic,
        acks: -1,
        messages: [{ key: 'k1', value, headers: { 'ce-type': 'smoke.test' } }],
      });
      assert.equal(meta?.errorCode, 0);
      assert.equal(meta?.baseOffset, '0');
    } finally {
      await producer.disconnect();
    }
  });

  test('a kafkajs consumer reads it back', async () => {
    const got: { key: string; value: string; header: string }[] = [];
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        got.push({
          key: String(message.key),
          value: String(message.value),
          header: String(message.headers?.['ce-type']),
        });
      },
    });
    await waitFor(() => got.length > 0, 30_000, 'the record at the kafkajs consumer');
    assert.deepEqual(got, [{ key: 'k1', value, header: 'smoke.test' }]);
  });

  test('kcat reads the same record with its header', () => {
    const out = execFileSync(
      join(env.CRBRIDGE_STACK_BIN, 'kcat'),
      ['-C', '-b', env.KAFKA_BROKERS, '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%k|%s|%h\\n'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.deepEqual(out.trim().split('\n'), [`k1|${value}|ce-type=smoke.test`]);
  });
});
