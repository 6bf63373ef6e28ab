/**
 * Benchmark 5, Kafka sink ceiling: events/s that crbridge's Kafka sink sustains with the
 * idempotent producer, by batch size and compression, calling `send()` back to back (one batch in
 * flight, as the delivery queue does) for a few seconds per setting. Events are updates of ~2 KB
 * Backups (object, oldObject and patch). A bare kafkajs idempotent producer on the same messages
 * is measured alongside as the reference: what Kafka and the client library allow on this machine.
 * Then the sink behind the real `DeliveryQueue` (as a pipeline runs it: batches of up to 500, the
 * queue's default bounds), fed as fast as back-pressure allows, at concurrency 1 and the sink's
 * default (several sends in flight; see the sink's `defaultConcurrency`). `BENCH_KAFKA=<regex>`
 * runs only the settings whose label (`sink batch=500 none inline`, `sink batch=500 none thread`,
 * `kafkajs batch=500 none`, `queue c=4 gzip thread`) matches. Each sink setting runs with the
 * producers inline (`thread: false`) and on their worker thread (`thread: true`, the default).
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { CompressionTypes, type Kafka } from 'kafkajs';
import type { ComponentContext, OutboundEvent, Sink, SinkFactory } from '../src/component.ts';
import { resolveDeliveryConfig } from '../src/delivery/config.ts';
import type { DeadLetter } from '../src/delivery/dead-letter.ts';
import { DeliveryQueue } from '../src/delivery/queue.ts';
import type { CloudEvent } from '../src/events/cloudevent.ts';
import type { KubeObject } from '../src/events/delta.ts';
import { silentLogger } from '../src/telemetry/logger.ts';
import { Metrics } from '../src/telemetry/metrics.ts';
import { loadStackEnv, repoRoot } from '../test/support/stack.ts';
import { createTopic, deleteTopic, kafkaClient } from './lib/kafka.ts';
import { backupObject, runId } from './lib/kube.ts';
import { MB, procMonitor, stackPid } from './lib/proc.ts';
import { note, report } from './report.ts';
import type { Benchmark } from './run.ts';

/**
 * 250 × ~3.4 KB stays under the broker's default message.max.bytes (1 MB per record batch); 500
 * (the sink's maxBatch) does not, which is worth seeing.
 */
const BATCHES = [1, 100, 250, 500];
const COMPRESSIONS = ['none', 'gzip'] as const;
const SECONDS = 3;
/** Concurrency of the queue settings: one send at a time, and the sink's default. */
const QUEUE_CONCURRENCY = [1, 4];
const QUEUE_OBJECTS = 5_000;
/** The producers inline on the sink's thread, and on a worker thread (`thread`, the default). */
const THREADS = [false, true];

const only = process.env.BENCH_KAFKA ? new RegExp(process.env.BENCH_KAFKA) : undefined;
const wanted = (label: string) => !only || only.test(label);

/**
 * The sink behind the real DeliveryQueue at `concurrency`, fed as fast as back-pressure allows
 * (after a 0.5 s warm-up): events delivered per second, events not ok, sends per second.
 */
async function throughQueue(
  sink: Sink,
  events: CloudEvent[],
  concurrency: number,
  seconds: number,
): Promise<{ rate: number; failed: number; sendsPerSecond: number }> {
  let sends = 0;
  const counting: Sink = {
    maxBatch: sink.maxBatch,
    ...(sink.defaultConcurrency !== undefined && { defaultConcurrency: sink.defaultConcurrency }),
    ...(sink.maxConcurrency !== undefined && { maxConcurrency: sink.maxConcurrency }),
    start: (s) => sink.start(s),
    shutdown: (d) => sink.shutdown(d),
    send: (b, s) => {
      sends++;
      return sink.send(b, s);
    },
  };
  let failed = 0;
  const dead: DeadLetter = {
    write: async () => {
      failed++;
    },
    close: async () => {},
  };
  const queue = new DeliveryQueue(counting, resolveDeliveryConfig({ concurrency }), {
    id: 'bench/kafka',
    logger: silentLogger,
    metrics: new Metrics(),
    deadLetter: dead,
  });
  const ac = new AbortController();
  await queue.start(ac.signal);
  let delivered = 0;
  let stop = false;
  let seq = 0;
  const feeder = (async () => {
    while (!stop) {
      const base = events[seq++ % events.length] as CloudEvent;
      try {
        // 5,000 objects (subjects), so that concurrent batches find objects not already in flight
        const event = { ...base, id: `${base.id}-${seq}`, subject: `bench/b-${seq % QUEUE_OBJECTS}` };
        const { settled } = await queue.enqueue(event, ac.signal);
        settled.then(
          () => delivered++,
          () => {},
        );
      } catch {
        break;
      }
    }
  })();
  await new Promise((r) => setTimeout(r, 500));
  const d0 = delivered;
  const s0 = sends;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const ms = performance.now() - t0;
  const d1 = delivered;
  const s1 = sends;
  stop = true;
  await queue.shutdown(Date.now() + 2000);
  ac.abort();
  await feeder;
  return { rate: ((d1 - d0) / ms) * 1000, failed, sendsPerSecond: ((s1 - s0) / ms) * 1000 };
}

/** A realistic update event for a ~2 KB Backup, built by hand (the sink only needs a CloudEvent). */
function sampleEvent(i: number): CloudEvent {
  const object = backupObject('bench', `b-${i % 500}`, 2048, i) as KubeObject;
  object.metadata.uid = randomUUID();
  object.metadata.resourceVersion = String(200_000 + i);
  const oldObject = structuredClone(object);
  oldObject.metadata.resourceVersion = String(199_999 + i);
  (oldObject.spec as Record<string, unknown>).revision = i - 1;
  return {
    specversion: '1.0',
    id: randomUUID(),
    source: '/clusters/bench/apis/bench.example.com/v1/namespaces/bench/backups',
    type: 'io.crbridge.bench.example.com.backup.updated',
    subject: `bench/b-${i % 500}`,
    time: new Date().toISOString(),
    datacontenttype: 'application/json',
    data: {
      object,
      oldObject,
      patch: [{ op: 'replace', path: '/spec/revision', value: i }],
      changedPaths: ['/spec'],
      reason: 'live',
    },
  };
}

async function loadKafkaSink(): Promise<SinkFactory | undefined> {
  try {
    const path = '../src/sinks/kafka/index.ts';
    const mod = (await import(path)) as { kafkaSink?: SinkFactory };
    return mod.kafkaSink;
  } catch {
    return undefined;
  }
}

/** Runs `send(batch)` back to back for `seconds`; returns events/s. */
async function drive(
  send: (batch: OutboundEvent[]) => Promise<void>,
  events: CloudEvent[],
  batch: number,
  seconds: number,
): Promise<number> {
  let seq = 0;
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const b: OutboundEvent[] = [];
    for (let i = 0; i < batch; i++)
      b.push({ event: events[seq % events.length] as CloudEvent, seq: ++seq, attempts: 0 });
    await send(b);
    n += batch;
  }
  return (n / (performance.now() - t0)) * 1000;
}

async function rawProducer(
  kafka: Kafka,
  topic: string,
  events: CloudEvent[],
  batch: number,
  compression: string,
): Promise<number> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    const values = events.map((e) => ({ key: e.subject ?? null, value: JSON.stringify(e) }));
    const type = compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
    let k = 0;
    return await drive(
      async (b) => {
        await producer.send({
          topic,
          acks: -1,
          compression: type,
          messages: b.map(() => values[k++ % values.length] as { key: string; value: string }),
        });
      },
      events,
      batch,
      SECONDS,
    );
  } finally {
    await producer.disconnect();
  }
}

export const benchmark: Benchmark = {
  name: 'kafka-sink',
  description: 'Kafka sink events/s by batch size and compression (idempotent producer)',
  budgetSeconds: 120,
  async run({ log, deadline }) {
    const env = loadStackEnv();
    const kafka = kafkaClient('crbridge-bench-sink');
    const kafkaPid = stackPid(join(repoRoot, '.stack'), 'kafka');
    const topic = `bench-sink-${runId()}`;
    await createTopic(kafka, topic, 1);
    const events = Array.from({ length: 1000 }, (_, i) => sampleEvent(i));
    const eventBytes = Math.round(Buffer.byteLength(JSON.stringify(events[0])));
    const factory = await loadKafkaSink();
    /** A fresh sink of `factory` (checked by the caller) on the bench topic. */
    const newSink = (compression: string, thread: boolean): Sink => {
      const ctx: ComponentContext = {
        id: 'bench/kafka',
        pipeline: 'bench',
        logger: silentLogger,
        metrics: new Metrics(),
        stateDir: '/tmp',
        clusterName: 'bench',
      };
      return (factory as SinkFactory).create(
        { brokers: env.KAFKA_BROKERS.split(','), topic, compression, thread },
        ctx,
      );
    };
    if (!factory) note('kafka-sink: src/sinks/kafka has not landed; only the bare kafkajs reference was measured');
    try {
      for (const compression of COMPRESSIONS) {
        for (const batch of BATCHES) {
          if (
            !THREADS.some((t) => wanted(`sink batch=${batch} ${compression} ${t ? 'thread' : 'inline'}`)) &&
            !wanted(`kafkajs batch=${batch} ${compression}`)
          )
            continue;
          if (Date.now() > deadline - 2 * (SECONDS + 2) * 1000) {
            note(`kafka-sink batch=${batch} compression=${compression}: skipped, out of time budget`);
            continue;
          }
          const params = { batch, compression, eventBytes, idempotent: true, acks: 'all' };
          for (const thread of THREADS) {
            const label = `sink batch=${batch} ${compression} ${thread ? 'thread' : 'inline'}`;
            if (!factory || !wanted(label)) continue;
            const sink = newSink(compression, thread);
            const ac = new AbortController();
            await sink.start(ac.signal);
            const mon = kafkaPid ? procMonitor(kafkaPid) : undefined;
            let failed = 0;
            const rate = await drive(
              async (b) => {
                const res = await sink.send(b.slice(0, sink.maxBatch), ac.signal);
                failed += res.filter((r) => r.status !== 'ok').length;
              },
              events,
              Math.min(batch, sink.maxBatch),
              SECONDS,
            );
            const k = mon?.stop();
            await sink.shutdown(Date.now() + 5000);
            ac.abort();
            report({
              name: 'kafka_sink.events_per_second',
              value: rate,
              unit: 'events/s',
              parameters: {
                ...params,
                thread,
                maxBatch: sink.maxBatch,
                failed,
                kafkaCpu: Math.round(k?.cpuPercent ?? 0),
              },
            });
            report({
              name: 'kafka_sink.mb_per_second',
              value: (rate * eventBytes) / MB,
              unit: 'MB/s',
              parameters: { ...params, thread },
            });
            log(`${label}: ${Math.round(rate)} events/s (kafka ${Math.round(k?.cpuPercent ?? 0)}% CPU)`);
          }
          if (wanted(`kafkajs batch=${batch} ${compression}`))
            try {
              const raw = await rawProducer(kafka, topic, events, batch, compression);
              report({ name: 'kafka_sink.kafkajs_reference', value: raw, unit: 'events/s', parameters: params });
              log(`bare kafkajs batch=${batch} ${compression}: ${Math.round(raw)} events/s`);
            } catch (e) {
              note(`kafka-sink: bare kafkajs batch=${batch} ${compression} refused: ${String(e).slice(0, 120)}`);
            }
        }
      }
      for (const compression of COMPRESSIONS)
        for (const concurrency of QUEUE_CONCURRENCY)
          for (const thread of THREADS) {
            const label = `queue c=${concurrency} ${compression} ${thread ? 'thread' : 'inline'}`;
            if (!factory || !wanted(label)) continue;
            if (Date.now() > deadline - (SECONDS + 3) * 1000) {
              note(`kafka-sink queue c=${concurrency} compression=${compression}: skipped, out of time budget`);
              continue;
            }
            const sink = newSink(compression, thread);
            const mon = kafkaPid ? procMonitor(kafkaPid) : undefined;
            const cpu0 = process.cpuUsage();
            const main0 = process.threadCpuUsage();
            const t0 = performance.now();
            const r = await throughQueue(sink, events, concurrency, SECONDS);
            const cpu = process.cpuUsage(cpu0);
            const main = process.threadCpuUsage(main0);
            const mainCpu = ((main.user + main.system) / 1000 / (performance.now() - t0)) * 100;
            const benchCpu = ((cpu.user + cpu.system) / 1000 / (performance.now() - t0)) * 100;
            const k = mon?.stop();
            report({
              name: 'kafka_sink.queue_events_per_second',
              value: r.rate,
              unit: 'events/s',
              parameters: {
                compression,
                concurrency,
                thread,
                eventBytes,
                idempotent: true,
                acks: 'all',
                failed: r.failed,
                sendsPerSecond: Math.round(r.sendsPerSecond),
                benchCpu: `${Math.round(benchCpu)}%`,
                mainThreadCpu: `${Math.round(mainCpu)}%`,
                kafkaCpu: Math.round(k?.cpuPercent ?? 0),
              },
            });
            log(
              `${label}: ${Math.round(r.rate)} events/s, ${Math.round(r.sendsPerSecond)} sends/s (${r.failed} failed; bench ${Math.round(benchCpu)}% CPU, its main thread ${Math.round(mainCpu)}%, kafka ${Math.round(k?.cpuPercent ?? 0)}%)`,
            );
          }
    } finally {
      await deleteTopic(kafka, topic);
    }
  },
};
