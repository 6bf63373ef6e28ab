/**
 * @serial: brings up a private stack of its own (CPU-heavy).
 * The kafka sink behind a DeliveryQueue while a REAL broker goes away and comes back. The shared
 * stack's Kafka is left alone: this file brings up a private stack (`CRBRIDGE_STACK_DIR` in a temp
 * folder, a few seconds) and stops/starts ITS Kafka: stopped before the sink starts (start returns
 * at once, sends back off, everything arrives in order once it is up), and stopped mid-run after
 * the producer was connected (the producer is rebuilt; nothing is lost, duplicated or reordered).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseEnv } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import type { DeadLetter, DeadLetterEntry } from '../../../src/delivery/dead-letter.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { kafkaSink } from '../../../src/sinks/kafka/index.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { componentMetrics, Metrics } from '../../../src/telemetry/metrics.ts';
import { repoRoot, waitFor } from '../../support/stack.ts';

const stackDir = mkdtempSync(join(tmpdir(), 'crb-sinks-stack-'));
const stack = (...args: string[]) =>
  execFileSync(process.execPath, [join(repoRoot, 'test', 'infra', 'stack.ts'), ...args], {
    env: { ...process.env, CRBRIDGE_STACK_DIR: stackDir },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 240_000,
  });

let brokers = '';
before(() => {
  stack('up');
  brokers = parseEnv(readFileSync(join(stackDir, 'env'), 'utf8')).KAFKA_BROKERS ?? '';
  assert.ok(brokers, 'the private stack has a Kafka');
});
after(() => {
  try {
    stack('down');
  } finally {
    rmSync(stackDir, { recursive: true, force: true });
  }
});

function event(uid: string, n: number): CloudEvent {
  return {
    specversion: '1.0',
    id: `${uid}-${n}`,
    source: 'crbridge://it/apis/example.com/v1/namespaces/ns/backups',
    type: 'io.crbridge.example.com.backup.updated',
    subject: `ns/${uid}`,
    datacontenttype: 'application/json',
    partitionkey: uid,
    data: {
      object: {
        apiVersion: 'example.com/v1',
        kind: 'Backup',
        metadata: { name: uid, uid, resourceVersion: String(n) },
      },
      reason: 'live',
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

function pipeline(topic: string) {
  const metrics = new Metrics();
  const deadLetter = new MemoryDeadLetter();
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', write: (l) => logs.push(JSON.parse(l)) });
  const ctx = { id: 'it/kafka', pipeline: 'it', logger, metrics, stateDir: '/tmp', clusterName: 'it' };
  const sink = kafkaSink.create({ brokers: [brokers], topic, connectionTimeoutMs: 1000, requestTimeoutMs: 3000 }, ctx);
  const config = resolveDeliveryConfig({ retry: { initialIntervalMs: 200, maxIntervalMs: 1000 } });
  const queue = new DeliveryQueue(sink, config, { id: 'it/kafka', logger, metrics, deadLetter });
  return { queue, deadLetter, logs, m: componentMetrics(metrics) };
}

async function readIds(topic: string, want: number): Promise<string[]> {
  const kafka = new Kafka({ clientId: 'it-sinks-restart', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `it-${topic}-${Math.random()}` });
  const seen: { offset: number; id: string }[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        seen.push({ offset: Number(message.offset), id: String(message.headers?.ce_id) });
      },
    });
    await waitFor(() => seen.length >= want, 60_000, `${want} records on ${topic}`);
    await new Promise((r) => setTimeout(r, 1000)); // nothing extra may follow
  } finally {
    await consumer.disconnect();
  }
  return seen.sort((a, b) => a.offset - b.offset).map((s) => s.id);
}

async function enqueueAll(queue: DeliveryQueue, events: CloudEvent[]): Promise<Promise<void>[]> {
  const settled: Promise<void>[] = [];
  for (const e of events) settled.push((await queue.enqueue(e)).settled);
  return settled;
}

const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([
    p,
    new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)),
  ]);

describe('kafka sink while the real broker stops and starts', () => {
  test('broker stopped at start: start returns at once, retries back off, all arrive in order once it is up', async () => {
    const topic = `it-sinks-down-${Date.now().toString(36)}`;
    stack('stop', 'kafka');
    let running = false;
    try {
      const { queue, m, logs, deadLetter } = pipeline(topic);
      const t0 = Date.now();
      await queue.start(new AbortController().signal);
      assert.ok(Date.now() - t0 < 200, 'start returns at once');
      const events = Array.from({ length: 8 }, (_, i) => event('uid-d', i + 1));
      const settled = await enqueueAll(queue, events);
      await waitFor(() => m.retries.get({ component: 'it/kafka' }) >= 16, 30_000, 'two failed attempts');
      assert.equal(m.sent.get({ component: 'it/kafka' }), 0);
      stack('start', 'kafka');
      running = true;
      await within(Promise.all(settled), 60_000, 'delivery after Kafka came back');
      assert.equal(deadLetter.entries.length, 0);
      assert.equal(logs.filter((l) => l.msg === 'delivery failing; retrying with backoff').length, 1);
      assert.equal(logs.filter((l) => l.msg === 'delivery recovered').length, 1);
      await queue.shutdown(Date.now() + 5000);
      assert.deepEqual(
        await readIds(topic, 8),
        events.map((e) => e.id),
      );
    } finally {
      if (!running) stack('start', 'kafka');
    }
  });

  test('broker restarts mid-run: the producer is rebuilt and nothing is lost, duplicated or reordered', async () => {
    const topic = `it-sinks-restart-${Date.now().toString(36)}`;
    const { queue, m, deadLetter } = pipeline(topic);
    await queue.start(new AbortController().signal);
    const first = Array.from({ length: 5 }, (_, i) => event('uid-r', i + 1));
    await Promise.all(await enqueueAll(queue, first));
    assert.equal(m.sent.get({ component: 'it/kafka' }), 5);
    stack('stop', 'kafka');
    let running = false;
    try {
      const second = Array.from({ length: 5 }, (_, i) => event('uid-r', i + 6));
      const settled = await enqueueAll(queue, second);
      await waitFor(() => m.retries.get({ component: 'it/kafka' }) >= 10, 30_000, 'two failed attempts');
      stack('start', 'kafka');
      running = true;
      await within(Promise.all(settled), 60_000, 'delivery after the restart');
      assert.equal(m.sent.get({ component: 'it/kafka' }), 10);
      assert.equal(deadLetter.entries.length, 0);
      await queue.shutdown(Date.now() + 5000);
      assert.deepEqual(
        await readIds(topic, 10),
        [...first, ...second].map((e) => e.id),
      );
    } finally {
      if (!running) stack('start', 'kafka');
    }
  });
});
