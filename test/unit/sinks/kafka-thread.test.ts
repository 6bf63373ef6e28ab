/**
 * The `kafka` sink's producer thread (`src/sinks/kafka/thread.ts`, `producer-thread.ts`) on a
 * real worker thread: kafkajs errors cross it with what the sink classifies by (name, type,
 * retriable, causes), kafkajs' log lines come back through the sink's scrubbing log creator, a
 * broker that is not there fails the send retryably, shutdown terminates the thread within its
 * deadline, a thread that died fails its pending calls and the next call starts a new one.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import kafkajs from 'kafkajs';
import type { ComponentContext } from '../../../src/component.ts';
import { CrbridgeError, ErrorCode, fromWire, toWire } from '../../../src/errors.ts';
import {
  classifyKafkaError,
  kafkaConfigurationProblem,
  kafkaSink,
  logCreator,
} from '../../../src/sinks/kafka/index.ts';
import { ThreadedKafka } from '../../../src/sinks/kafka/thread.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { closedPort } from '../../support/proxy.ts';
import { captureLogger, ev } from '../delivery/helpers.ts';

const { KafkaJSNumberOfRetriesExceeded, KafkaJSSASLAuthenticationError } = kafkajs;
const { createErrorFromCode } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
  createErrorFromCode: (code: number) => Error & { type: string; code: number };
};
/** A structured clone, as postMessage makes it. */
const acrossThread = (e: unknown) => fromWire(structuredClone(toWire(e)));

describe('kafka producer thread', () => {
  test('kafkajs errors keep what the sink classifies them by across the thread', () => {
    const cases: Error[] = [
      createErrorFromCode(29), // TOPIC_AUTHORIZATION_FAILED
      createErrorFromCode(10), // MESSAGE_TOO_LARGE
      new KafkaJSNumberOfRetriesExceeded(createErrorFromCode(3), { retryCount: 1, retryTime: 100 }),
      new (KafkaJSSASLAuthenticationError as unknown as new (m: string) => Error)(
        'SASL SCRAM SHA512 authentication failed',
      ),
      createErrorFromCode(6), // NOT_LEADER_FOR_PARTITION
      new Error('plain'),
    ];
    for (const e of cases) {
      const back = acrossThread(e) as Error & Record<string, unknown>;
      assert.ok(back instanceof Error);
      assert.equal(back.name, e.name);
      assert.equal(back.message, e.message);
      assert.equal(classifyKafkaError(back), classifyKafkaError(e), e.message);
      assert.deepEqual(kafkaConfigurationProblem(back, 't'), kafkaConfigurationProblem(e, 't'));
      assert.equal(back.retriable, (e as Error & { retriable?: boolean }).retriable);
      assert.equal(back.type, (e as Error & { type?: string }).type);
    }
    const crb = acrossThread(new CrbridgeError(ErrorCode.OutboxFull, 'full', { entries: 3 })) as CrbridgeError;
    assert.ok(crb instanceof CrbridgeError, 'a CrbridgeError comes back as one');
    assert.equal(crb.code, ErrorCode.OutboxFull);
    assert.deepEqual(crb.details, { entries: 3 });
    const wrapped = acrossThread(cases[2]) as Error & { cause?: Error & { type?: string } };
    assert.ok(wrapped.cause instanceof Error);
    assert.equal(wrapped.cause?.type, 'UNKNOWN_TOPIC_OR_PARTITION');
    assert.equal(classifyKafkaError(wrapped), 'configuration');
  });

  test('on the thread: a broker that is not there fails the send retryably; kafkajs logs come back scrubbed; shutdown ends the thread in time', async () => {
    const secret = 'hunter2-thread-secret';
    const { logger, lines } = captureLogger();
    const ctx: ComponentContext = {
      id: 'p/kafka',
      pipeline: 'p',
      logger,
      metrics: new Metrics(),
      stateDir: '/tmp',
      clusterName: 'test',
    };
    const port = await closedPort();
    const sink = kafkaSink.create(
      {
        brokers: [`127.0.0.1:${port}`],
        topic: 't',
        connectionTimeoutMs: 300,
        requestTimeoutMs: 500,
        sasl: { mechanism: 'plain', username: 'u', password: secret },
      },
      ctx,
    );
    await sink.start(new AbortController().signal);
    const [r] = await sink.send([{ event: ev('a1', 'A'), seq: 1, attempts: 1 }], new AbortController().signal);
    assert.equal(r?.status, 'retryable');
    assert.match(String((r as { error: string }).error), /ECONNREFUSED|Connection/i);
    // a log line kafkajs writes on the thread, with the secret in it, comes back through the log creator
    const kafka = (sink as unknown as { kafka: ThreadedKafka }).kafka;
    assert.ok(kafka instanceof ThreadedKafka, 'thread is the default');
    kafka.logger().error(`broker said ${secret}`, { sasl: { password: secret } });
    assert.ok(!JSON.stringify(lines).includes(secret));
    assert.ok(lines.some((l) => String(l.msg).includes('[redacted]')));
    const t0 = Date.now();
    await sink.shutdown(Date.now() + 1000);
    assert.ok(Date.now() - t0 < 1500, `shutdown took ${Date.now() - t0} ms`);
    const after = await sink.send([{ event: ev('a2', 'A'), seq: 2, attempts: 1 }], new AbortController().signal);
    assert.equal(after[0]?.status, 'retryable', 'after shutdown a send fails, retryably, and starts no thread');
  });

  test('a thread that dies fails its pending calls; the next call starts a new thread', async () => {
    const port = await closedPort();
    const { logger } = captureLogger();
    const kafka = new ThreadedKafka(
      { brokers: [`127.0.0.1:${port}`], connectionTimeout: 5000, retry: { retries: 0 } },
      logCreator(logger)(),
    );
    const p = kafka.producer({});
    const pending = p.connect();
    const worker = (kafka as unknown as { worker: { terminate(): Promise<number> } }).worker;
    await worker.terminate();
    await assert.rejects(pending, /producer thread stopped/);
    const again = kafka.producer({});
    await assert.rejects(
      again.connect(),
      (e: Error) => !/producer thread stopped/.test(e.message),
      'a new thread answered',
    );
    assert.notEqual((kafka as unknown as { worker: unknown }).worker, worker);
    await kafka.close(Date.now() + 1000);
  });
});
