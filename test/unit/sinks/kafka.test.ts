/**
 * Kafka sink parts that need no broker: broker-list splitting, error classification with kafkajs'
 * own error classes and protocol error objects (configuration problems are retried and logged
 * once, never dead-lettered), the config schema, that `start` returns at once and `send` answers
 * retryable for every event, within its timeout, when nothing listens at the broker address, and
 * that a broker that accepts connections but never answers holds neither a send past its abort
 * signal nor the shutdown past its deadline. Also: the snappy (xerial framing) and LZ4 (frame of
 * independent blocks) codecs, the topic chosen per event by `topicExpression` and its validation,
 * TLS and SASL settings handed to kafkajs (TLS checked against a local TLS listener), and that the
 * SASL password never reaches a log line or an error.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import tls from 'node:tls';
import kafkajs from 'kafkajs';
import type { ComponentContext, OutboundEvent } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import { lz4Compress, lz4Decompress, snappyCompress, snappyDecompress } from '../../../src/sinks/kafka/codecs.ts';
import {
  classifyKafkaError,
  kafkaClientConfig,
  kafkaConfigurationProblem,
  kafkaSink,
  logCreator,
  splitBrokers,
} from '../../../src/sinks/kafka/index.ts';
import { createLogger, silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { closedPort } from '../../support/proxy.ts';
import { captureLogger, ev, MemoryDeadLetter } from '../delivery/helpers.ts';

const ctx: ComponentContext = {
  id: 'p/kafka',
  pipeline: 'p',
  logger: silentLogger,
  metrics: new Metrics(),
  stateDir: '/tmp',
  clusterName: 'test',
};

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
    const sink = kafkaSink.create(
      { brokers: ['127.0.0.1:1'], topic: 'orders', autoCreateTopics: false },
      { ...ctx, logger, metrics },
    );
    let sends = 0;
    // the producer kafkajs would build, answering as a broker with ACLs does
    (sink as unknown as { kafka: { producer: () => unknown } }).kafka.producer = () => ({
      connect: async () => {},
      disconnect: async () => {},
      sendBatch: async () => {
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

  test("kafkajs' own log of a failed produce request (the sink classifies and reports it) stays at debug; other errors are logged once", () => {
    const lines: { level: string; msg: string }[] = [];
    const logger = createLogger({ level: 'info', write: (l) => lines.push(JSON.parse(l)) });
    const log = logCreator(logger)();
    const entry = (message: string) => ({
      level: kafkajs.logLevel.ERROR,
      log: { message, timestamp: 'x', logger: 'kafkajs' },
    });
    // a topic created on first use has no partition leader for a moment: kafkajs logs each failed request
    for (let i = 0; i < 3; i++)
      log(entry('Failed to send messages: This server is not the leader for that topic-partition'));
    assert.equal(JSON.stringify(lines), '[]', 'nothing above debug');
    log(entry('Crash: KafkaJSNonRetriableError'));
    log(entry('Crash: KafkaJSNonRetriableError'));
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg]),
      [['error', 'kafkajs: Crash: KafkaJSNonRetriableError']],
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

/** Replaces the sink's kafkajs producer with one that records every `sendBatch`. */
function recordingProducer(sink: unknown, fail?: (n: number) => Error | undefined) {
  const calls: { topic: string; ids: string[] }[][] = [];
  (sink as { kafka: { producer: () => unknown } }).kafka.producer = () => ({
    connect: async () => {},
    disconnect: async () => {},
    sendBatch: async (req: {
      topicMessages: { topic: string; messages: { headers?: Record<string, unknown> }[] }[];
    }) => {
      const err = fail?.(calls.length);
      calls.push(
        req.topicMessages.map((t) => ({ topic: t.topic, ids: t.messages.map((m) => String(m.headers?.ce_id)) })),
      );
      if (err) throw err;
      return [];
    },
  });
  return calls;
}

function inNamespace(id: string, ns: string | undefined, kind = 'Backup') {
  const e = ev(id);
  const obj = (e.data as { object: { kind: string; metadata: Record<string, unknown> } }).object;
  obj.kind = kind;
  if (ns) obj.metadata.namespace = ns;
  return e;
}

const out = (ids: string[]): OutboundEvent[] =>
  ids.map((id, i) => ({ event: ev(id), seq: i + 1, attempts: 1 }) as OutboundEvent);

/** A fake kafkajs producer factory: records each request (producer number, keys and ids), how many overlap, and fails those `fail` picks (nothing written). */
function scriptedProducers(
  sink: unknown,
  opts: { delayMs?: (n: number) => number; fail?: (n: number) => boolean } = {},
) {
  const state = {
    producers: 0,
    inside: 0,
    most: 0,
    requests: [] as { producer: number; records: { key: string; id: string }[]; ok: boolean }[],
  };
  (sink as { kafka: { producer: () => unknown } }).kafka.producer = () => {
    const producer = ++state.producers;
    return {
      connect: async () => {},
      disconnect: async () => {},
      sendBatch: async (req: {
        topicMessages: { messages: { key?: unknown; headers?: Record<string, unknown> }[] }[];
      }) => {
        const n = state.requests.length;
        const records = req.topicMessages.flatMap((t) =>
          t.messages.map((m) => ({ key: String(m.key), id: String(m.headers?.ce_id) })),
        );
        const ok = !opts.fail?.(n);
        state.requests.push({ producer, records, ok });
        state.inside++;
        state.most = Math.max(state.most, state.inside);
        await new Promise((r) => setTimeout(r, opts.delayMs?.(n) ?? 5));
        state.inside--;
        if (!ok) throw new KafkaJSConnectionError('Connection error: read ECONNRESET');
        return [];
      },
    };
  };
  return state;
}

describe('kafka sink concurrency', () => {
  test('the delivery queue sends to it several batches at once by default', () => {
    const sink = kafkaSink.create({ brokers: ['127.0.0.1:1'], topic: 't' }, ctx);
    const queue = new DeliveryQueue(sink, resolveDeliveryConfig(), {
      id: 'p/kafka',
      logger: silentLogger,
      metrics: new Metrics(),
      deadLetter: new MemoryDeadLetter(),
    });
    assert.equal(queue.maxInFlight, 4);
    const more = new DeliveryQueue(sink, resolveDeliveryConfig({ concurrency: 16 }), {
      id: 'p/kafka',
      logger: silentLogger,
      metrics: new Metrics(),
      deadLetter: new MemoryDeadLetter(),
    });
    assert.equal(more.maxInFlight, 16, 'no cap below a configured concurrency');
  });

  test('idempotent producer: concurrent sends produce one request at a time, and a request queued behind a failed one goes on a fresh producer', async () => {
    const sink = kafkaSink.create({ brokers: ['127.0.0.1:1'], topic: 't' }, ctx);
    const st = scriptedProducers(sink, { fail: (n) => n === 0 });
    const signal = new AbortController().signal;
    const one = (id: string, uid: string) => [{ event: ev(id, uid), seq: 1, attempts: 1 }];
    const [a, b, c] = await Promise.all([
      sink.send(one('a1', 'A'), signal),
      sink.send(one('b1', 'B'), signal),
      sink.send(one('c1', 'C'), signal),
    ]);
    assert.deepEqual(
      [a, b, c].map((r) => r[0]?.status),
      ['retryable', 'ok', 'ok'],
    );
    assert.equal(st.most, 1, 'one produce request in flight at a time');
    assert.deepEqual(
      st.requests.map((r) => [r.producer, r.records.map((x) => x.id)]),
      [
        [1, ['a1']],
        [2, ['b1']],
        [2, ['c1']],
      ],
      'the requests queued behind the failed one went on a new producer (new producer id), not the failed one',
    );
    await sink.shutdown(Date.now() + 100);
  });

  test('without idempotence (acks 1) concurrent sends produce at once', async () => {
    const sink = kafkaSink.create({ brokers: ['127.0.0.1:1'], topic: 't', acks: 1 }, ctx);
    const st = scriptedProducers(sink, { delayMs: () => 20 });
    const signal = new AbortController().signal;
    const res = await Promise.all(
      ['a', 'b', 'c'].map((k) => sink.send([{ event: ev(`${k}1`, k), seq: 1, attempts: 1 }], signal)),
    );
    assert.deepEqual(
      res.map((r) => r[0]?.status),
      ['ok', 'ok', 'ok'],
    );
    assert.equal(st.most, 3);
    await sink.shutdown(Date.now() + 100);
  });

  for (const acks of [-1, 1] as const)
    test(`behind the delivery queue at concurrency 4 with failing requests (acks ${acks}): every event written, each key's records in order`, async () => {
      const sink = kafkaSink.create({ brokers: ['127.0.0.1:1'], topic: 't', acks }, ctx);
      let r = 12345;
      const random = () => {
        r = (r * 1103515245 + 12345) % 2 ** 31;
        return r / 2 ** 31;
      };
      const st = scriptedProducers(sink, { fail: () => random() < 0.25, delayMs: () => Math.floor(random() * 8) });
      const queue = new DeliveryQueue(
        sink,
        resolveDeliveryConfig({
          maxBatch: 7,
          retry: { initialIntervalMs: 1, maxIntervalMs: 4, maxElapsedMs: 0 },
        }),
        { id: 'p/kafka', logger: silentLogger, metrics: new Metrics(), deadLetter: new MemoryDeadLetter() },
      );
      await queue.start(new AbortController().signal);
      const KEYS = 12;
      const VERSIONS = 8;
      const settled: Promise<void>[] = [];
      for (let v = 0; v < VERSIONS; v++)
        for (let k = 0; k < KEYS; k++) settled.push((await queue.enqueue(ev(`k${k}-v${v}`, `k${k}`))).settled);
      await Promise.all(settled);
      await queue.shutdown(Date.now() + 1000);
      assert.ok(
        st.requests.some((q) => !q.ok),
        'some requests failed',
      );
      const written = st.requests.filter((q) => q.ok).flatMap((q) => q.records);
      for (let k = 0; k < KEYS; k++) {
        const versions = written.filter((x) => x.key === `k${k}`).map((x) => Number(x.id.split('-v')[1]));
        assert.deepEqual(
          versions,
          Array.from({ length: VERSIONS }, (_, v) => v),
          `key k${k}: written in order, each once`,
        );
      }
      if (acks === -1) {
        assert.equal(st.most, 1);
        for (let i = 1; i < st.requests.length; i++)
          if (!st.requests[i - 1]?.ok)
            assert.notEqual(st.requests[i]?.producer, st.requests[i - 1]?.producer, 'a fresh producer after a failure');
      }
    });
});

describe('kafka sink codecs', () => {
  const text = Buffer.from(
    Array.from({ length: 5000 }, (_, i) => `{"id":"e-${i}","kind":"Backup","n":${i * 7}}`).join('\n'),
  );
  const random = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 2654435761) >>> 24));

  test('snappy writes the xerial framing (magic, versions, chunks of at most 32 KiB) and reads it back', () => {
    const c = snappyCompress(text);
    assert.deepEqual([...c.subarray(0, 16)], [0x82, 83, 78, 65, 80, 80, 89, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    assert.ok(c.length < text.length / 2, `compressed ${text.length} to ${c.length}`);
    assert.ok(text.length > 3 * 32 * 1024, 'several chunks');
    assert.deepEqual(snappyDecompress(c), text);
    assert.deepEqual(snappyDecompress(snappyCompress(random)), random);
    assert.deepEqual(snappyDecompress(snappyCompress(Buffer.alloc(0))), Buffer.alloc(0));
  });

  test('snappy also reads raw (unframed) snappy, as other producers write it', () => {
    const snappyjs = createRequire(import.meta.url)('snappyjs') as { compress(b: Buffer): Buffer };
    assert.deepEqual(snappyDecompress(Buffer.from(snappyjs.compress(text))), text);
  });

  test('lz4 writes a frame of independent 64 KiB blocks with a valid header checksum and reads it back', () => {
    const c = lz4Compress(text);
    assert.equal(c.readUInt32LE(0), 0x184d2204);
    assert.equal(c[4], 0x60, 'FLG: version 1, independent blocks, no checksums');
    assert.equal(c[5], 0x40, 'BD: 64 KiB blocks');
    assert.ok(c.length < text.length / 2, `compressed ${text.length} to ${c.length}`);
    assert.deepEqual(lz4Decompress(c), text);
    // incompressible data is stored in uncompressed blocks
    const r = lz4Compress(random);
    assert.ok(r.length <= random.length + 7 + 4 * 5 + 4);
    assert.deepEqual(lz4Decompress(r), random);
    // every block decodes alone (what Kafka's Java reader requires): the second block has no back-reference
    const lz4js = createRequire(import.meta.url)('lz4js') as {
      decompressBlock(src: Uint8Array, dst: Uint8Array, s: number, n: number, d: number): number;
    };
    const first = c.readUInt32LE(7) & 0x7fffffff;
    const at = 7 + 4 + first;
    const second = c.readUInt32LE(at) & 0x7fffffff;
    const dst = new Uint8Array(64 * 1024);
    const n = lz4js.decompressBlock(c, dst, at + 4, second, 0);
    assert.deepEqual(Buffer.from(dst.subarray(0, n)), text.subarray(64 * 1024, 64 * 1024 + n));
  });

  test('compression accepts none, gzip, snappy and lz4', () => {
    const s = kafkaSink.configSchema as { properties: { compression: { enum: string[] } } };
    assert.deepEqual(s.properties.compression.enum, ['none', 'gzip', 'snappy', 'lz4']);
  });
});

describe('kafka sink topic per event', () => {
  test('topicExpression picks each event topic; null or "" fall back to topic; one request carries all topics in order', async () => {
    const sink = kafkaSink.create(
      {
        brokers: ['127.0.0.1:1'],
        topic: 'crs-default',
        topicExpression:
          '!has(object.metadata.namespace) || object.metadata.namespace == "blank" ? "" : "crs." + object.metadata.namespace + "." + object.kind.lowerAscii()',
      },
      ctx,
    );
    const calls = recordingProducer(sink);
    const batch = [
      inNamespace('a', 'prod'),
      inNamespace('b', 'dev', 'Restore'),
      inNamespace('c', undefined),
      inNamespace('d', 'prod'),
      inNamespace('e', 'blank'),
    ].map((event, i) => ({ event, seq: i + 1, attempts: 1 }));
    const res = await sink.send(batch, new AbortController().signal);
    assert.deepEqual(
      res.map((r) => r.status),
      ['ok', 'ok', 'ok', 'ok', 'ok'],
    );
    assert.deepEqual(calls, [
      [
        { topic: 'crs.prod.backup', ids: ['a', 'd'] },
        { topic: 'crs.dev.restore', ids: ['b'] },
        { topic: 'crs-default', ids: ['c', 'e'] },
      ],
    ]);
    await sink.shutdown(Date.now() + 100);
  });

  test('a topicExpression yielding an empty optional or null means the static topic', async () => {
    for (const topicExpression of [
      'object.metadata.?labels.?topic',
      'has(object.metadata.labels) ? object.metadata.labels.topic : null',
    ]) {
      const sink = kafkaSink.create({ brokers: ['127.0.0.1:1'], topic: 'fallback', topicExpression }, ctx);
      const calls = recordingProducer(sink);
      const labelled = ev('l');
      (labelled.data as { object: { metadata: Record<string, unknown> } }).object.metadata.labels = {
        topic: 'by-label',
      };
      const res = await sink.send(
        [
          { event: ev('u'), seq: 1, attempts: 1 },
          { event: labelled, seq: 2, attempts: 1 },
        ],
        new AbortController().signal,
      );
      assert.deepEqual(
        res.map((r) => r.status),
        ['ok', 'ok'],
        topicExpression,
      );
      assert.deepEqual(
        calls,
        [
          [
            { topic: 'fallback', ids: ['u'] },
            { topic: 'by-label', ids: ['l'] },
          ],
        ],
        topicExpression,
      );
      await sink.shutdown(Date.now() + 100);
    }
  });

  test('an event whose topicExpression fails or yields an invalid name is refused alone, naming the expression', async () => {
    const sink = kafkaSink.create(
      { brokers: ['127.0.0.1:1'], topic: 't', topicExpression: 'object.metadata.namespace' },
      ctx,
    );
    const calls = recordingProducer(sink);
    const batch = [inNamespace('a', 'ok'), inNamespace('b', undefined), inNamespace('c', 'bad topic/x')].map(
      (event, i) => ({ event, seq: i + 1, attempts: 1 }),
    );
    const res = await sink.send(batch, new AbortController().signal);
    assert.equal(res[0]?.status, 'ok');
    assert.equal(res[1]?.status, 'permanent');
    assert.match(
      res[1]?.status === 'permanent' ? res[1].error : '',
      /event b: topicExpression "object\.metadata\.namespace" failed/,
    );
    assert.equal(res[2]?.status, 'permanent');
    assert.match(res[2]?.status === 'permanent' ? res[2].error : '', /"bad topic\/x", not a valid Kafka topic name/);
    assert.deepEqual(calls, [[{ topic: 'ok', ids: ['a'] }]]);
    await sink.shutdown(Date.now() + 100);
  });

  test('a missing topic (auto-create off) is retryable for the whole request and names the topic', async () => {
    const { logger, lines } = captureLogger();
    const sink = kafkaSink.create(
      {
        brokers: ['127.0.0.1:1'],
        topic: 't',
        topicExpression: '"orders-" + object.kind.lowerAscii()',
        autoCreateTopics: false,
      },
      { ...ctx, logger },
    );
    recordingProducer(sink, () => exhausted(createErrorFromCode(3)));
    const res = await sink.send(out(['a', 'b']), new AbortController().signal);
    for (const r of res) {
      assert.equal(r.status, 'retryable');
      assert.match(
        r.status === 'retryable' ? r.error : '',
        /kafka orders-backup: UNKNOWN_TOPIC_OR_PARTITION: topic "orders-backup" does not exist/,
      );
    }
    const logged = lines.filter((l) => l.code === 'CRB_DELIVERY_CONFIG');
    assert.equal(logged.length, 1);
    assert.equal(logged[0]?.topic, 'orders-backup');
    await sink.shutdown(Date.now() + 100);
  });

  test('a topic the brokers may still be creating (auto-create on) is retried quietly; logged as missing only once it stays missing', async () => {
    const { logger, lines } = captureLogger();
    const sink = kafkaSink.create({ brokers: ['127.0.0.1:1'], topic: 'fresh' }, { ...ctx, logger });
    let missing = true;
    recordingProducer(sink, () => (missing ? exhausted(createErrorFromCode(3)) : undefined));
    const signal = new AbortController().signal;
    const configErrors = () => lines.filter((l) => l.code === 'CRB_DELIVERY_CONFIG');
    // the first answers while the brokers create the topic: retryable, no configuration error
    for (let i = 0; i < 2; i++) {
      const [r] = await sink.send(out(['a']), signal);
      assert.equal(r?.status, 'retryable');
      assert.match(r?.status === 'retryable' ? r.error : '', /topic "fresh" is not there yet/);
    }
    assert.deepEqual(configErrors(), []);
    // created: delivered
    missing = false;
    assert.equal((await sink.send(out(['a']), signal))[0]?.status, 'ok');
    // a topic that stays missing past the grace is the configuration error, logged once
    missing = true;
    (sink as unknown as { autoCreateGraceMs: number }).autoCreateGraceMs = 0;
    const [r] = await sink.send(out(['b']), signal);
    assert.match(r?.status === 'retryable' ? r.error : '', /UNKNOWN_TOPIC_OR_PARTITION: topic "fresh" does not exist/);
    assert.deepEqual(
      configErrors().map((l) => l.topic),
      ['fresh'],
    );
    await sink.shutdown(Date.now() + 100);
  });

  test('check compiles topicExpression: a syntax error or a non-string result is reported at /topicExpression', () => {
    const check = kafkaSink.check as NonNullable<typeof kafkaSink.check>;
    const base = { brokers: ['b:9092'], topic: 't' };
    assert.deepEqual(check({ ...base, topicExpression: '"crs." + object.kind' }), []);
    const [syntax] = check({ ...base, topicExpression: '"crs." +' });
    assert.equal(syntax?.pointer, '/topicExpression');
    assert.match(syntax?.message ?? '', /CEL syntax error/);
    const [kind] = check({ ...base, topicExpression: '1 + 2' });
    assert.equal(kind?.pointer, '/topicExpression');
    assert.match(kind?.message ?? '', /must produce a string, but it produces int/);
    const [cert] = check({ ...base, tls: { certFile: '/x.pem' } });
    assert.equal(cert?.pointer, '/tls/keyFile');
  });
});

describe('kafka sink TLS and SASL', () => {
  test('SASL and TLS settings reach the kafkajs client; no tls block means plaintext', () => {
    const dir = mkdtempSync(join(tmpdir(), 'crbridge-kafka-tls-'));
    writeFileSync(join(dir, 'ca.pem'), 'CA-PEM');
    const base = { brokers: ['a:1,b:2'], clientId: 'c', connectionTimeoutMs: 1, requestTimeoutMs: 2 };
    const plain = kafkaClientConfig(base, undefined, undefined, undefined);
    assert.equal(plain.ssl, undefined);
    assert.equal(plain.sasl, undefined);
    assert.deepEqual(plain.brokers, ['a:1', 'b:2']);
    for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512'] as const) {
      const c = kafkaClientConfig(
        base,
        { caFile: join(dir, 'ca.pem'), serverName: 'kafka.internal' },
        { mechanism, username: 'u', password: 'p' },
        undefined,
      );
      assert.deepEqual(c.sasl, { mechanism, username: 'u', password: 'p' });
      const ssl = c.ssl as tls.ConnectionOptions;
      assert.equal(String(ssl.ca), 'CA-PEM');
      assert.equal(ssl.servername, 'kafka.internal');
      assert.equal(ssl.rejectUnauthorized, true);
    }
    assert.equal(
      (kafkaClientConfig(base, { insecureSkipVerify: true }, undefined, undefined).ssl as tls.ConnectionOptions)
        .rejectUnauthorized,
      false,
    );
    assert.throws(
      () => kafkaClientConfig(base, { caFile: join(dir, 'nope.pem') }, undefined, undefined),
      /cannot read tls\.caFile .*nope\.pem/,
    );
  });

  test('against a TLS listener: an unknown CA is refused, the right CA and server name are accepted (SNI sent)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crbridge-kafka-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=kafka.internal',
        '-addext',
        'subjectAltName=DNS:kafka.internal',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const snis: (string | false)[] = [];
    let handshakes = 0;
    const srv = tls.createServer(
      { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
      (c) => {
        handshakes++;
        c.destroy(); // a broker that hangs up after the handshake: the send fails, retryably
      },
    );
    srv.on('tlsClientError', () => {});
    srv.on('secureConnection', (s) => snis.push((s as tls.TLSSocket & { servername: string | false }).servername));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const { port } = srv.address() as net.AddressInfo;
    const { logger, lines } = captureLogger();
    try {
      const untrusted = kafkaSink.create(
        { brokers: [`127.0.0.1:${port}`], topic: 't', tls: {}, connectionTimeoutMs: 1000, requestTimeoutMs: 1000 },
        { ...ctx, logger },
      );
      const [r1] = await untrusted.send(out(['a']), new AbortController().signal);
      assert.equal(r1?.status, 'retryable');
      assert.equal(handshakes, 0, 'the self-signed certificate was not accepted');
      await untrusted.shutdown(Date.now() + 200);

      const trusted = kafkaSink.create(
        {
          brokers: [`127.0.0.1:${port}`],
          topic: 't',
          tls: { caFile: join(dir, 'cert.pem'), serverName: 'kafka.internal' },
          connectionTimeoutMs: 1000,
          requestTimeoutMs: 1000,
        },
        { ...ctx, logger },
      );
      const [r2] = await trusted.send(out(['a']), new AbortController().signal);
      assert.equal(r2?.status, 'retryable');
      assert.ok(handshakes >= 1, 'the TLS handshake succeeded');
      assert.equal(snis[0], 'kafka.internal');
      await trusted.shutdown(Date.now() + 200);

      const insecure = kafkaSink.create(
        { brokers: [`127.0.0.1:${port}`], topic: 't', tls: { insecureSkipVerify: true } },
        { ...ctx, logger },
      );
      await insecure.start(new AbortController().signal);
      assert.ok(lines.some((l) => l.level === 'warn' && /certificate verification is off/.test(String(l.msg))));
      await insecure.shutdown(Date.now() + 200);
    } finally {
      srv.close();
    }
  });

  test('the SASL password never appears in a log line or an error, even when kafkajs puts it there', async () => {
    const secret = 'S3cr3t-kafka-pass';
    const { logger, lines } = captureLogger();
    const sink = kafkaSink.create(
      {
        brokers: ['127.0.0.1:1'],
        topic: 't',
        sasl: { mechanism: 'scram-sha-512', username: 'crbridge', password: secret },
      },
      { ...ctx, logger },
    );
    recordingProducer(sink, (n) => {
      const e = n === 0 ? createErrorFromCode(58) : new Error(`connection failed for password ${secret}`);
      e.message = `${e.message} (password ${secret})`;
      return e;
    });
    const results = [
      ...(await sink.send(out(['a']), new AbortController().signal)),
      ...(await sink.send(out(['b']), new AbortController().signal)),
    ];
    // kafkajs' own log lines go through the sink's log creator
    const client = (sink as unknown as { kafka: { logger: () => { error(m: string, f: object): void } } }).kafka;
    client.logger().error(`Failed with ${secret}`, { broker: 'b', sasl: { password: secret } });
    const all = JSON.stringify({ results, lines });
    assert.ok(results.every((r) => r.status === 'retryable'));
    assert.ok(lines.length >= 2, JSON.stringify(lines));
    assert.ok(!all.includes(secret), all);
    assert.ok(all.includes('[redacted]'));
    await sink.shutdown(Date.now() + 100);
  });
});
