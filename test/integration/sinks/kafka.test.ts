/**
 * The kafka sink behind a DeliveryQueue against the REAL Kafka of the local stack: records keyed by
 * the object uid with ce_* headers (binary) or the JSON event (structured), per-key order across
 * partitions, tombstones after deletes, an oversized event dead-lettered alone, and Kafka
 * unreachable at start (a bootstrap port that refuses connections until a forwarding proxy opens on
 * it) survived with backoff and delivery once it answers. The shared broker is never stopped.
 * Compression: records produced with each codec (none, gzip, snappy, lz4) are read back by a
 * kafkajs consumer, and the broker itself decodes them (a topic with compression.type=gzip makes
 * it recompress every batch). Topics chosen per event by a CEL topicExpression.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import type { DeadLetter, DeadLetterEntry } from '../../../src/delivery/dead-letter.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { type KafkaSinkConfig, kafkaSink } from '../../../src/sinks/kafka/index.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { componentMetrics, Metrics } from '../../../src/telemetry/metrics.ts';
import { loadStackEnv, waitFor } from '../../support/stack.ts';

const env = loadStackEnv();
const brokers = env.KAFKA_BROKERS.split(',');
const kafka = new Kafka({ clientId: 'it-sinks', brokers, logLevel: logLevel.NOTHING });
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;

function event(uid: string, n: number, type = 'updated', dataPad = 0): CloudEvent {
  return {
    specversion: '1.0',
    id: `${uid}-${n}`,
    source: 'crbridge://it/apis/example.com/v1/namespaces/ns/backups',
    type: `io.crbridge.example.com.backup.${type}`,
    subject: `ns/${uid}`,
    time: '2026-11-28T10:00:00.000Z',
    datacontenttype: 'application/json',
    partitionkey: uid,
    k8suid: uid,
    data: {
      object: {
        apiVersion: 'example.com/v1',
        kind: 'Backup',
        metadata: { name: uid, namespace: 'ns', uid, resourceVersion: String(n) },
        spec: { databaseName: 'db', schedule: '0 3 * * *', pad: 'x'.repeat(dataPad) },
      },
      reason: 'live',
      n,
    },
  } as CloudEvent;
}

class MemoryDeadLetter implements DeadLetter {
  readonly entries: DeadLetterEntry[] = [];
  async write(e: DeadLetterEntry): Promise<void> {
    this.entries.push(e);
  }
  async close(): Promise<void> {}
}

function pipeline(config: KafkaSinkConfig, retry = { initialIntervalMs: 100, maxIntervalMs: 1000 }) {
  const metrics = new Metrics();
  const deadLetter = new MemoryDeadLetter();
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l)) });
  const ctx = { id: 'it/kafka', pipeline: 'it', logger, metrics, stateDir: '/tmp', clusterName: 'it' };
  const sink = kafkaSink.create(config, ctx);
  const queue = new DeliveryQueue(sink, resolveDeliveryConfig({ maxBatch: 50, retry }), {
    id: 'it/kafka',
    logger,
    metrics,
    deadLetter,
  });
  return { queue, deadLetter, logs, m: componentMetrics(metrics) };
}

interface Seen {
  partition: number;
  offset: number;
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

async function createTopic(
  topic: string,
  numPartitions: number,
  configEntries?: { name: string; value: string }[],
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      topics: [{ topic, numPartitions, ...(configEntries && { configEntries }) }],
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
}

const consumers: { disconnect(): Promise<void> }[] = [];
after(async () => {
  for (const c of consumers) await c.disconnect().catch(() => {});
});

async function readTopic(topic: string, want: number, timeoutMs = 60_000): Promise<Seen[]> {
  const consumer = kafka.consumer({ groupId: `it-sinks-${topic}-${Math.random()}` });
  consumers.push(consumer);
  const seen: Seen[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
      seen.push({
        partition,
        offset: Number(message.offset),
        key: message.key?.toString() ?? null,
        value: message.value,
        headers,
      });
    },
  });
  await waitFor(() => seen.length >= want, timeoutMs, `${want} records on ${topic} (have ${seen.length})`);
  await new Promise((r) => setTimeout(r, 500)); // nothing more should arrive
  await consumer.disconnect();
  return seen;
}

async function deliver(queue: DeliveryQueue, events: CloudEvent[]): Promise<void> {
  const settled: Promise<void>[] = [];
  for (const e of events) settled.push((await queue.enqueue(e)).settled);
  await Promise.all(settled);
}

describe('kafka sink on the real broker', () => {
  test('binary mode: key = uid, ce_* headers, data as value, per-key order across 3 partitions', async () => {
    const topic = `it-sinks-binary-${suffix}`;
    await createTopic(topic, 3);
    const { queue, m, deadLetter } = pipeline({ brokers: [env.KAFKA_BROKERS], topic });
    await queue.start(new AbortController().signal);
    const uids = ['uid-a', 'uid-b', 'uid-c', 'uid-d'];
    const events: CloudEvent[] = [];
    for (let n = 1; n <= 15; n++) for (const uid of uids) events.push(event(uid, n));
    await deliver(queue, events);
    await queue.shutdown(Date.now() + 5000);
    assert.equal(m.sent.get({ component: 'it/kafka' }), 60);
    assert.equal(deadLetter.entries.length, 0);

    const seen = await readTopic(topic, 60);
    assert.equal(seen.length, 60);
    for (const uid of uids) {
      const mine = seen.filter((s) => s.key === uid);
      assert.equal(new Set(mine.map((s) => s.partition)).size, 1, `${uid} lives in one partition`);
      mine.sort((a, b) => a.offset - b.offset);
      assert.deepEqual(
        mine.map((s) => s.headers.ce_id),
        Array.from({ length: 15 }, (_, i) => `${uid}-${i + 1}`),
        `${uid} in order`,
      );
    }
    const first = seen.find((s) => s.headers.ce_id === 'uid-b-3');
    assert.ok(first);
    assert.equal(first.key, 'uid-b');
    assert.equal(first.headers.ce_specversion, '1.0');
    assert.equal(first.headers.ce_type, 'io.crbridge.example.com.backup.updated');
    assert.equal(first.headers.ce_source, 'crbridge://it/apis/example.com/v1/namespaces/ns/backups');
    assert.equal(first.headers.ce_subject, 'ns/uid-b');
    assert.equal(first.headers.ce_time, '2026-11-28T10:00:00.000Z');
    assert.equal(first.headers.ce_partitionkey, 'uid-b');
    assert.equal(first.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(String(first.value)), event('uid-b', 3).data);
  });

  test('structured mode with tombstones: the JSON event as value, then a null record after a delete', async () => {
    const topic = `it-sinks-structured-${suffix}`;
    await createTopic(topic, 1);
    const { queue } = pipeline({ brokers: [env.KAFKA_BROKERS], topic, mode: 'structured', tombstones: true });
    await queue.start(new AbortController().signal);
    const events = [event('uid-t', 1, 'created'), event('uid-t', 2, 'updated'), event('uid-t', 3, 'deleted')];
    await deliver(queue, events);
    await queue.shutdown(Date.now() + 5000);
    const seen = (await readTopic(topic, 4)).sort((a, b) => a.offset - b.offset);
    assert.equal(seen.length, 4);
    assert.deepEqual(
      seen.map((s) => s.key),
      ['uid-t', 'uid-t', 'uid-t', 'uid-t'],
    );
    for (let i = 0; i < 3; i++) {
      assert.equal(seen[i]?.headers['content-type'], 'application/cloudevents+json; charset=utf-8');
      assert.deepEqual(JSON.parse(String(seen[i]?.value)), events[i]);
    }
    assert.equal(seen[3]?.value, null, 'the tombstone comes last and has a null value');
  });

  test('an event over the broker limit is dead-lettered alone; its batch neighbours are delivered in order', async () => {
    const topic = `it-sinks-large-${suffix}`;
    await createTopic(topic, 1);
    const { queue, deadLetter, m } = pipeline({ brokers: [env.KAFKA_BROKERS], topic });
    const events = [event('uid-l', 1), event('uid-l', 2, 'updated', 2_000_000), event('uid-l', 3)];
    const settled: Promise<void>[] = [];
    for (const e of events) settled.push((await queue.enqueue(e)).settled);
    await queue.start(new AbortController().signal); // all three go in one batch
    await Promise.all(settled);
    await queue.shutdown(Date.now() + 5000);
    assert.equal(deadLetter.entries.length, 1);
    assert.equal(deadLetter.entries[0]?.event.id, 'uid-l-2');
    assert.equal(deadLetter.entries[0]?.code, 'CRB_DELIVERY_PERMANENT');
    assert.match(deadLetter.entries[0]?.errors[0] ?? '', /MESSAGE_TOO_LARGE|RECORD_LIST_TOO_LARGE|too large/i);
    assert.equal(m.sent.get({ component: 'it/kafka' }), 2);
    const seen = (await readTopic(topic, 2)).sort((a, b) => a.offset - b.offset);
    assert.deepEqual(
      seen.map((s) => s.headers.ce_id),
      ['uid-l-1', 'uid-l-3'],
    );
  });

  test('a batch larger than one produce request is split: 30 events of 100 KB arrive in order, none refused', async () => {
    const topic = `it-sinks-split-${suffix}`;
    await createTopic(topic, 1);
    const { queue, deadLetter, logs, m } = pipeline({ brokers: [env.KAFKA_BROKERS], topic });
    const events = Array.from({ length: 30 }, (_, i) => event('uid-s', i + 1, 'updated', 100_000));
    const settled: Promise<void>[] = [];
    for (const e of events) settled.push((await queue.enqueue(e)).settled);
    await queue.start(new AbortController().signal); // 30 events in one 3 MB batch
    await Promise.all(settled);
    await queue.shutdown(Date.now() + 5000);
    assert.equal(deadLetter.entries.length, 0);
    assert.equal(m.sent.get({ component: 'it/kafka' }), 30);
    assert.equal(m.retries.get({ component: 'it/kafka' }), 0);
    assert.deepEqual(
      logs.filter((l) => /larger than the max message size|TOO_LARGE/i.test(JSON.stringify(l))),
      [],
      'no request was refused as too large',
    );
    const seen = (await readTopic(topic, 30)).sort((a, b) => a.offset - b.offset);
    assert.deepEqual(
      seen.map((s) => s.headers.ce_id),
      events.map((e) => e.id),
    );
  });

  test('Kafka unreachable at start: start returns at once, sends back off, events arrive once it answers', async () => {
    const topic = `it-sinks-late-${suffix}`;
    await createTopic(topic, 1);
    // Reserve a loopback port with nothing listening: connections are refused like a down broker.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as net.AddressInfo;
    await new Promise<void>((r) => probe.close(() => r()));

    const { queue, m, logs, deadLetter } = pipeline(
      { brokers: [`127.0.0.1:${port}`], topic, connectionTimeoutMs: 1000, requestTimeoutMs: 3000 },
      { initialIntervalMs: 100, maxIntervalMs: 400 },
    );
    const t0 = Date.now();
    await queue.start(new AbortController().signal);
    assert.ok(Date.now() - t0 < 200, 'start returns at once');
    const events = Array.from({ length: 10 }, (_, i) => event('uid-late', i + 1));
    const settled: Promise<void>[] = [];
    for (const e of events) settled.push((await queue.enqueue(e)).settled);
    await waitFor(() => m.retries.get({ component: 'it/kafka' }) >= 30, 20_000, 'three failed attempts');
    assert.equal(m.sent.get({ component: 'it/kafka' }), 0);
    assert.equal(queue.depth, 10);
    const warn = logs.filter((l) => l.msg === 'delivery failing; retrying with backoff');
    assert.equal(warn.length, 1, 'one warning per failure streak');
    assert.match(String(warn[0]?.error), /ECONNREFUSED|Connection/i);

    // "Kafka comes up": a proxy opens on the bootstrap port and forwards to the real broker.
    const [host, realPort] = (brokers[0] as string).split(':') as [string, string];
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(realPort), host);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((r) => proxy.listen(port, '127.0.0.1', r));
    try {
      await Promise.race([
        Promise.all(settled),
        new Promise((_, reject) => setTimeout(() => reject(new Error('not delivered within 30 s')), 30_000)),
      ]);
      assert.equal(m.sent.get({ component: 'it/kafka' }), 10);
      assert.equal(deadLetter.entries.length, 0);
      assert.equal(logs.filter((l) => l.msg === 'delivery recovered').length, 1);
      await queue.shutdown(Date.now() + 5000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
    }
    const seen = (await readTopic(topic, 10)).sort((a, b) => a.offset - b.offset);
    assert.deepEqual(
      seen.map((s) => s.headers.ce_id),
      events.map((e) => e.id),
    );
  });

  for (const compression of ['none', 'gzip', 'snappy', 'lz4'] as const) {
    test(`compression ${compression}: the broker decodes the batches and a kafkajs consumer reads every record back`, async () => {
      const asIs = `it-sinks-${compression}-${suffix}`;
      const recompressed = `it-sinks-${compression}-gz-${suffix}`;
      await createTopic(asIs, 1);
      // the broker must decompress what it gets to write it again as gzip
      await createTopic(recompressed, 1, [{ name: 'compression.type', value: 'gzip' }]);
      const events = Array.from({ length: 120 }, (_, i) => event(`uid-${compression}`, i + 1, 'updated', 3000));
      for (const topic of [asIs, recompressed]) {
        const { queue, deadLetter, m } = pipeline({ brokers: [env.KAFKA_BROKERS], topic, compression });
        await queue.start(new AbortController().signal);
        await deliver(queue, events);
        await queue.shutdown(Date.now() + 5000);
        assert.equal(deadLetter.entries.length, 0, topic);
        assert.equal(m.sent.get({ component: 'it/kafka' }), 120, topic);
        const seen = (await readTopic(topic, 120)).sort((a, b) => a.offset - b.offset);
        assert.deepEqual(
          seen.map((s) => s.headers.ce_id),
          events.map((e) => e.id),
          topic,
        );
        for (const [i, s] of seen.entries()) assert.deepEqual(JSON.parse(String(s.value)), events[i]?.data, topic);
      }
    });
  }

  test('topicExpression: each event goes to the topic its CEL expression names, the rest to topic', async () => {
    const base = `it-sinks-route-${suffix}`;
    for (const t of [base, `${base}.created`, `${base}.deleted`]) await createTopic(t, 1);
    const { queue, deadLetter } = pipeline({
      brokers: [env.KAFKA_BROKERS],
      topic: base,
      topicExpression: `change == "created" || change == "deleted" ? "${base}." + change : ""`,
    });
    await queue.start(new AbortController().signal);
    const events = [event('uid-r', 1, 'created'), event('uid-r', 2, 'updated'), event('uid-r', 3, 'deleted')];
    await deliver(queue, events);
    await queue.shutdown(Date.now() + 5000);
    assert.equal(deadLetter.entries.length, 0);
    assert.deepEqual(
      (await readTopic(`${base}.created`, 1)).map((s) => s.headers.ce_id),
      ['uid-r-1'],
    );
    assert.deepEqual(
      (await readTopic(base, 1)).map((s) => s.headers.ce_id),
      ['uid-r-2'],
    );
    assert.deepEqual(
      (await readTopic(`${base}.deleted`, 1)).map((s) => s.headers.ce_id),
      ['uid-r-3'],
    );
  });
});
