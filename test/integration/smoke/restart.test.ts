/**
 * Smoke test of the stack manager itself: `restart kafka` keeps the port (clients keep their
 * bootstrap address) and the data (a record written before is read after), and `status` reports all
 * four components healthy afterwards.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { loadStackEnv, stackCtl, waitFor } from '../../support/stack.ts';

const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;

describe('smoke: stack restart', () => {
  test('restart kafka keeps its port and its data', async () => {
    const before = loadStackEnv();
    const topic = `smoke-restart-${suffix}`;
    const kafka = new Kafka({
      clientId: 'it-restart',
      brokers: before.KAFKA_BROKERS.split(','),
      logLevel: logLevel.NOTHING,
    });
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [{ key: 'before', value: 'restart' }] });
    await producer.disconnect();

    stackCtl(['restart', 'kafka']);
    assert.equal(loadStackEnv().KAFKA_BROKERS, before.KAFKA_BROKERS);

    const admin = kafka.admin();
    const offsets = await waitFor(
      async () => {
        await admin.connect();
        return admin.fetchTopicOffsets(topic);
      },
      60_000,
      'the topic after the restart',
      1000,
    );
    await admin.disconnect();
    assert.equal(
      offsets.reduce((n, p) => n + Number(p.high), 0),
      1,
    );

    const status = stackCtl(['status']);
    assert.equal(status.match(/port \d+ +healthy$/gm)?.length, 4, status);
  });
});
