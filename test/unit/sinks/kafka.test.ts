/**
 * Kafka sink parts that need no broker: broker-list splitting, error classification with kafkajs'
 * own error classes, the config schema, and that `start` returns at once and `send` answers
 * retryable for every event, within its timeout, when nothing listens at the broker address.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import kafkajs from 'kafkajs';
import type { ComponentContext, OutboundEvent } from '../../../src/component.ts';
import { classifyKafkaError, kafkaSink, splitBrokers } from '../../../src/sinks/kafka/index.ts';
import { createLogger, silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { ev } from '../delivery/helpers.ts';

const ctx: ComponentContext = {
  id: 'p/kafka',
  pipeline: 'p',
  logger: silentLogger,
  metrics: new Metrics(),
  stateDir: '/tmp',
  clusterName: 'test',
};

/** A loopback port with nothing listening. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

// kafkajs is CommonJS: its error classes are reachable through the default export only
const { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } = kafkajs;

describe('kafka sink', () => {
  test('splitBrokers splits comma-separated entries and drops blanks', () => {
    assert.deepEqual(splitBrokers(['h1:9092,h2:9092', ' h3:9092 ', '']), ['h1:9092', 'h2:9092', 'h3:9092']);
  });

  test('classifies kafkajs errors: too large / invalid / unauthorized are permanent, the rest retryable', () => {
    const proto = (type: string) => {
      const e = new KafkaJSProtocolError('x');
      (e as unknown as { type: string }).type = type;
      return e;
    };
    assert.equal(classifyKafkaError(proto('MESSAGE_TOO_LARGE')), 'permanent');
    assert.equal(classifyKafkaError(proto('INVALID_RECORD')), 'permanent');
    assert.equal(classifyKafkaError(proto('TOPIC_AUTHORIZATION_FAILED')), 'permanent');
    assert.equal(classifyKafkaError(proto('NOT_LEADER_FOR_PARTITION')), 'retryable');
    assert.equal(classifyKafkaError(new KafkaJSConnectionError('Connection error: ECONNREFUSED')), 'retryable');
    assert.equal(classifyKafkaError(new Error('connecting to Kafka timed out')), 'retryable');
    // kafkajs wraps the last error once its (short) retry budget is spent
    const wrapped = new KafkaJSNumberOfRetriesExceeded(proto('MESSAGE_TOO_LARGE'), { retryCount: 1, retryTime: 100 });
    assert.equal(classifyKafkaError(wrapped), 'permanent');
  });

  test('the config schema describes every property and requires brokers and topic', () => {
    const s = kafkaSink.configSchema as { properties: Record<string, { description?: string }>; required: string[] };
    for (const [k, p] of Object.entries(s.properties)) assert.ok(p.description, k);
    assert.deepEqual(s.required, ['brokers', 'topic']);
  });

  test('with no broker listening, start returns at once and send answers retryable for every event', async () => {
    const port = await closedPort();
    const sink = kafkaSink.create(
      { brokers: [`127.0.0.1:${port}`], topic: 't', connectionTimeoutMs: 500, requestTimeoutMs: 1000 },
      ctx,
    );
    const signal = new AbortController().signal;
    const t0 = Date.now();
    await sink.start(signal);
    assert.ok(Date.now() - t0 < 100);
    const batch: OutboundEvent[] = ['a', 'b', 'c'].map((id, i) => ({ event: ev(id), seq: i + 1, attempts: 1 }));
    const t1 = Date.now();
    const results = await sink.send(batch, signal);
    assert.ok(Date.now() - t1 < 5000, `send took ${Date.now() - t1} ms`);
    assert.equal(results.length, 3);
    for (const r of results) {
      assert.equal(r.status, 'retryable');
      assert.ok(
        r.status === 'retryable' && /ECONNREFUSED|Connection/i.test(r.error),
        r.status === 'retryable' ? r.error : '',
      );
    }
    await sink.shutdown(Date.now() + 1000);
  });

  test('kafkajs connection errors repeated on every attempt are not logged above debug', async () => {
    const port = await closedPort();
    const lines: { level: string; msg: string }[] = [];
    const logger = createLogger({ level: 'info', write: (l) => lines.push(JSON.parse(l)) });
    const sink = kafkaSink.create(
      { brokers: [`127.0.0.1:${port}`], topic: 't', connectionTimeoutMs: 300, requestTimeoutMs: 500 },
      { ...ctx, logger },
    );
    const signal = new AbortController().signal;
    await sink.start(signal);
    for (let i = 0; i < 3; i++) {
      const [r] = await sink.send([{ event: ev('a'), seq: 1, attempts: i + 1 }], signal);
      assert.equal(r?.status, 'retryable');
    }
    await sink.shutdown(Date.now() + 1000);
    assert.deepEqual(
      lines.filter((l) => l.msg.startsWith('kafkajs:')),
      [],
    );
  });
});
