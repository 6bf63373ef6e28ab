/**
 * Kafka sink parts that need no broker: broker-list splitting, error classification with kafkajs'
 * own error classes and protocol error objects (configuration problems are retried and logged
 * once, never dead-lettered), the config schema, that `start` returns at once and `send` answers
 * retryable for every event, within its timeout, when nothing listens at the broker address, and
 * that a broker that accepts connections but never answers holds neither a send past its abort
 * signal nor the shutdown past its deadline.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import { describe, test } from 'node:test';
import kafkajs from 'kafkajs';
import type { ComponentContext, OutboundEvent } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import {
  classifyKafkaError,
  kafkaConfigurationProblem,
  kafkaSink,
  splitBrokers,
} from '../../../src/sinks/kafka/index.ts';
import { createLogger, silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger, ev, MemoryDeadLetter } from '../delivery/helpers.ts';

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
const { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError, KafkaJSSASLAuthenticationError } =
  kafkajs;
/** kafkajs' own decoder of broker error codes: the very objects a broker answer turns into. */
const { createErrorFromCode } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
  createErrorFromCode: (code: number) => Error & { type: string; code: number };
};
/** What kafkajs throws once its retry budget for an answer is spent. */
const exhausted = (e: Error) => new KafkaJSNumberOfRetriesExceeded(e, { retryCount: 1, retryTime: 100 });

describe('kafka sink', () => {
  test('splitBrokers splits comma-separated entries and drops blanks', () => {
    assert.deepEqual(splitBrokers(['h1:9092,h2:9092', ' h3:9092 ', '']), ['h1:9092', 'h2:9092', 'h3:9092']);
  });

  test('classifies kafkajs errors: too large / invalid are permanent, connection and leader errors retryable', () => {
    assert.equal(classifyKafkaError(createErrorFromCode(10)), 'permanent'); // MESSAGE_TOO_LARGE
    assert.equal(classifyKafkaError(createErrorFromCode(87)), 'permanent'); // INVALID_RECORD
    assert.equal(classifyKafkaError(createErrorFromCode(6)), 'retryable'); // NOT_LEADER_FOR_PARTITION
    assert.equal(classifyKafkaError(createErrorFromCode(7)), 'retryable'); // REQUEST_TIMED_OUT
    assert.equal(classifyKafkaError(createErrorFromCode(19)), 'retryable'); // NOT_ENOUGH_REPLICAS
    assert.equal(classifyKafkaError(new KafkaJSConnectionError('Connection error: ECONNREFUSED')), 'retryable');
    assert.equal(classifyKafkaError(new Error('connecting to Kafka timed out')), 'retryable');
    // kafkajs wraps the last error once its (short) retry budget is spent
    assert.equal(classifyKafkaError(exhausted(createErrorFromCode(10))), 'permanent');
    const proto = new KafkaJSProtocolError('x');
    (proto as unknown as { type: string }).type = 'RECORD_LIST_TOO_LARGE';
    assert.equal(classifyKafkaError(proto), 'permanent');
  });

  test('errors that refuse every event alike are configuration problems, named with what to check', () => {
    const cases: [Error, string, RegExp][] = [
      [createErrorFromCode(29), 'TOPIC_AUTHORIZATION_FAILED', /may not write to topic "orders".*WRITE/],
      [createErrorFromCode(31), 'CLUSTER_AUTHORIZATION_FAILED', /IDEMPOTENT_WRITE.*idempotent: false/],
      [createErrorFromCode(58), 'SASL_AUTHENTICATION_FAILED', /SASL credentials/],
      [createErrorFromCode(33), 'UNSUPPORTED_SASL_MECHANISM', /sasl\.enabled\.mechanisms/],
      [exhausted(createErrorFromCode(3)), 'UNKNOWN_TOPIC_OR_PARTITION', /"orders" does not exist.*auto\.create/],
      [createErrorFromCode(17), 'INVALID_TOPIC_EXCEPTION', /not a valid Kafka topic name/],
      [
        // (its typings declare no constructor arguments; the runtime class takes the message)
        new (KafkaJSSASLAuthenticationError as unknown as new (m: string) => Error)(
          'SASL SCRAM SHA256 authentication failed: Invalid username or password',
        ),
        'SASL_AUTHENTICATION_FAILED',
        /SASL credentials/,
      ],
      [exhausted(createErrorFromCode(29)), 'TOPIC_AUTHORIZATION_FAILED', /orders/],
    ];
    for (const [err, type, check] of cases) {
      assert.equal(classifyKafkaError(err), 'configuration', type);
      const p = kafkaConfigurationProblem(err, 'orders');
      assert.equal(p?.type, type);
      assert.match(p?.check ?? '', check, type);
    }
    assert.equal(kafkaConfigurationProblem(createErrorFromCode(10), 'orders'), undefined);
  });

  test('a configuration error is retried, logged once per cause naming the topic, and nothing is dead-lettered', async () => {
    const { logger, lines } = captureLogger();
    const metrics = new Metrics();
    const sink = kafkaSink.create({ brokers: ['127.0.0.1:1'], topic: 'orders' }, { ...ctx, logger, metrics });
    let sends = 0;
    // the producer kafkajs would build, answering as a broker with ACLs does
    (sink as unknown as { kafka: { producer: () => unknown } }).kafka.producer = () => ({
      connect: async () => {},
      disconnect: async () => {},
      send: async () => {
        sends++;
        throw exhausted(createErrorFromCode(sends <= 3 ? 29 : 3));
      },
    });
    const deadLetter = new MemoryDeadLetter();
    const config = resolveDeliveryConfig({
      retry: { initialIntervalMs: 5, maxIntervalMs: 10, randomizationFactor: 0 },
    });
    const queue = new DeliveryQueue(sink, config, { id: 'p/kafka', logger, metrics, deadLetter });
    await queue.start(new AbortController().signal);
    const s = [];
    for (const id of ['a', 'b', 'c']) s.push((await queue.enqueue(ev(id))).settled);
    while (sends < 6) await new Promise((r) => setTimeout(r, 5));
    assert.equal(deadLetter.entries.length, 0, 'nothing dead-lettered');
    assert.equal(queue.depth, 3, 'all three wait for the fix');
    const logged = lines.filter((l) => l.code === 'CRB_DELIVERY_CONFIG');
    assert.deepEqual(
      logged.map((l) => l.kafkaError),
      ['TOPIC_AUTHORIZATION_FAILED', 'UNKNOWN_TOPIC_OR_PARTITION'],
      'once per cause',
    );
    assert.equal(logged[0]?.level, 'error');
    assert.equal(logged[0]?.topic, 'orders');
    assert.match(String(logged[0]?.msg), /topic "orders"/);
    assert.match(String(logged[0]?.check), /WRITE and DESCRIBE/);
    const retryWarn = lines.find((l) => l.msg === 'delivery failing; retrying with backoff');
    assert.match(String(retryWarn?.error), /kafka orders: TOPIC_AUTHORIZATION_FAILED: /);
    await queue.shutdown(Date.now() + 50);
    for (const o of await Promise.allSettled(s)) assert.equal(o.status, 'rejected');
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

  test('a broker that accepts connections but never answers holds neither a send past its abort nor the shutdown', async () => {
    const sockets: net.Socket[] = [];
    const srv = net.createServer((c) => sockets.push(c));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const { port } = srv.address() as net.AddressInfo;
    try {
      const sink = kafkaSink.create(
        { brokers: [`127.0.0.1:${port}`], topic: 't', connectionTimeoutMs: 3000, requestTimeoutMs: 30_000 },
        ctx,
      );
      const ac = new AbortController();
      await sink.start(ac.signal);
      const sending = sink.send([{ event: ev('a'), seq: 1, attempts: 1 }], ac.signal);
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(sockets.length > 0, 'the producer connected and waits for an answer');
      const t0 = Date.now();
      ac.abort();
      const [r] = await sending;
      assert.ok(Date.now() - t0 < 300, `send returned ${Date.now() - t0} ms after the abort`);
      assert.equal(r?.status, 'retryable');
      const t1 = Date.now();
      await sink.shutdown(Date.now() + 200);
      assert.ok(Date.now() - t1 < 400, `shutdown took ${Date.now() - t1} ms`);
    } finally {
      for (const c of sockets) c.destroy();
      srv.close();
    }
  });
});
