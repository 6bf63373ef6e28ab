/**
 * Benchmark 7, the durable outbox's cost: µs per event of append + ack for ~2 KB events (the
 * structured JSON of a ~2 KB Backup update is larger; 2 KB is the brief's unit), one batch in
 * flight as a sink queue would do it, steady state (each transaction inserts one batch and deletes
 * the one acknowledged before it). `per-batch` fsync with batches of 1, 50 and 500, then the
 * `interval` and `off` policies for comparison. The file lives under the OS temp folder (on this
 * machine the same disk as the state dir would be). No stack needed.
 * Two figures per setting: wall µs per event with one append awaited at a time (what one batch's
 * durability takes), and **event-loop µs per event** (`performance.eventLoopUtilization`) with up
 * to 4 appends outstanding, as a pipeline keeps appending while earlier ones are synced: the time
 * the outbox takes from the pipeline's thread, so its share of pipeline throughput (and that
 * thread's CPU per event, which a busy machine does not inflate; it leaves out a blocking fsync).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { DeliveryResult, OutboundEvent, Sink } from '../src/component.ts';
import { resolveDeliveryConfig } from '../src/delivery/config.ts';
import { type FsyncPolicy, type OutboxRecord, outboxPath, SqliteOutbox } from '../src/delivery/outbox.ts';
import { DeliveryQueue } from '../src/delivery/queue.ts';
import { toKafkaRecord } from '../src/events/bindings/kafka.ts';
import type { CloudEvent } from '../src/events/cloudevent.ts';
import { silentLogger } from '../src/telemetry/logger.ts';
import { Metrics } from '../src/telemetry/metrics.ts';
import { updateEvents } from './pipeline.ts';
import { note, report } from './report.ts';
import type { Benchmark } from './run.ts';

const EVENT_BYTES = 2048;
/** The in-process pipeline's cost per ~2 KB event (bench/RESULTS.md §1: 25,062 events/s ≈ 40 µs). */
const PIPELINE_US = 40;
const SETTINGS: { fsync: FsyncPolicy; batch: number }[] = [
  { fsync: 'per-batch', batch: 1 },
  { fsync: 'per-batch', batch: 50 },
  { fsync: 'per-batch', batch: 500 },
  { fsync: 'interval', batch: 1 },
  { fsync: 'interval', batch: 50 },
  { fsync: 'off', batch: 50 },
];

function record(i: number): OutboxRecord {
  const key = `uid-${i % 500}`;
  const head = `{"specversion":"1.0","id":"bench-${i}","source":"bench","type":"io.crbridge.bench.updated","subject":"${key}","data":"`;
  return { key, id: `bench-${i}`, body: `${head}${'x'.repeat(EVENT_BYTES - head.length - 2)}"}` };
}

async function measure(fsync: FsyncPolicy, batch: number, seconds: number, outstanding = 1) {
  const dir = mkdtempSync(join(tmpdir(), 'crb-bench-outbox-'));
  const outbox = new SqliteOutbox({
    path: outboxPath(dir, 'bench', 'sink'),
    id: 'bench/sink',
    logger: silentLogger,
    metrics: new Metrics(),
    config: { fsync },
  });
  await outbox.open();
  const records = Array.from({ length: 1000 }, (_, i) => record(i));
  let i = 0;
  const next = () => {
    const out: OutboxRecord[] = [];
    for (let j = 0; j < batch; j++) out.push(records[i++ % records.length] as OutboxRecord);
    return out;
  };
  // warm-up
  for (let w = 0; w < 3; w++) outbox.ack(await outbox.append(next()));
  let events = 0;
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.threadCpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const inFlight = new Set<Promise<void>>();
  while (performance.now() < end) {
    const p: Promise<void> = outbox.append(next()).then((seqs) => {
      inFlight.delete(p);
      outbox.ack(seqs); // committed with the next append's transaction
      events += seqs.length;
    });
    inFlight.add(p);
    if (inFlight.size >= outstanding) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  const ms = performance.now() - t0;
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.threadCpuUsage(cpu0);
  await outbox.close(Date.now() + 1000);
  rmSync(dir, { recursive: true, force: true });
  return {
    usPerEvent: (ms * 1000) / events,
    loopUsPerEvent: (elu.active * 1000) / events,
    /** CPU of the main thread alone (not the thread pool's fsyncs): unlike loop time, not inflated when the machine is busy. */
    cpuUsPerEvent: (cpu.user + cpu.system) / events,
    eventsPerSecond: (events / ms) * 1000,
    events,
  };
}

/**
 * A sink that encodes every event as the Kafka sink does (binary-mode record, `toKafkaRecord`) and
 * acknowledges at once: the queue path's cost plus the one serialization every sink does, nothing
 * of a network.
 */
class EncodingSink implements Sink {
  readonly maxBatch = 500;
  readonly defaultConcurrency = 4;
  bytes = 0;
  async start(): Promise<void> {}
  async send(batch: readonly OutboundEvent[]): Promise<DeliveryResult[]> {
    for (const o of batch) this.bytes += toKafkaRecord(o.event).value?.length ?? 0;
    return batch.map(() => ({ status: 'ok' }));
  }
  async shutdown(): Promise<void> {}
}

/** A copy of `e` with a data object of its own (shallow), so nothing serialized earlier is reused. */
const fresh = (e: CloudEvent): CloudEvent => ({ ...e, data: { ...(e.data as object) } }) as CloudEvent;

/**
 * The whole delivery-queue path, outbox off or on (`per-batch` fsync): pipeline-built ~2 KB update
 * events enqueued as fast as back-pressure allows (each awaited until accepted, as the source's
 * settle path does) into a real `DeliveryQueue` with a sink that acknowledges at once; event-loop
 * time and main-thread CPU per delivered event. The queue's outbox is the one production uses (its
 * SQLite work on a worker thread, `src/delivery/outbox-thread.ts`), so the process CPU (every
 * thread: the outbox's worker, libuv's fdatasync, GC helpers) is reported beside the main thread's.
 */
async function queuePath(events: readonly CloudEvent[], outbox: boolean, seconds: number) {
  const dir = mkdtempSync(join(tmpdir(), 'crb-bench-queue-'));
  const config = resolveDeliveryConfig({ outbox: { enabled: outbox, fsync: 'per-batch' } });
  const queue = new DeliveryQueue(new EncodingSink(), config, {
    id: 'bench/sink',
    logger: silentLogger,
    metrics: new Metrics(),
    deadLetter: { write: async () => {}, close: async () => {} },
    stateDir: dir,
  });
  const abort = new AbortController();
  await queue.start(abort.signal);
  let i = 0;
  const pending = new Set<Promise<void>>();
  const push = async () => {
    const { settled } = await queue.enqueue(fresh(events[i++ % events.length] as CloudEvent));
    const p = settled.then(() => {
      pending.delete(p);
    });
    pending.add(p);
  };
  for (let w = 0; w < 2000; w++) await push();
  await Promise.all(pending);
  let sent = 0;
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.threadCpuUsage();
  const proc0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    await push();
    sent++;
    // bounded in-flight settles, as the source's ordered commits keep a bounded window
    if (pending.size > 4000) await Promise.race(pending);
  }
  await Promise.all(pending);
  const ms = performance.now() - t0;
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.threadCpuUsage(cpu0);
  const proc = process.cpuUsage(proc0);
  await queue.shutdown(Date.now() + 5000);
  rmSync(dir, { recursive: true, force: true });
  return {
    loopUsPerEvent: (elu.active * 1000) / sent,
    cpuUsPerEvent: (cpu.user + cpu.system) / sent,
    processCpuUsPerEvent: (proc.user + proc.system) / sent,
    eventsPerSecond: (sent / ms) * 1000,
  };
}

export const benchmark: Benchmark = {
  name: 'outbox',
  description: 'durable outbox: µs per event of append + ack, ~2 KB events, by fsync policy and batch size',
  budgetSeconds: 45,
  async run(ctx) {
    const seconds = Math.max(0.5, Math.min(1.5, (ctx.deadline - Date.now()) / 1000 / SETTINGS.length / 2 - 0.3));
    for (const { fsync, batch } of SETTINGS) {
      const r = await measure(fsync, batch, seconds);
      const p = await measure(fsync, batch, seconds, 4);
      const share = (100 * p.loopUsPerEvent) / (PIPELINE_US + p.loopUsPerEvent);
      ctx.log(
        `fsync ${fsync}, batch ${batch}: ${r.usPerEvent.toFixed(1)} µs/event awaited one at a time (${Math.round(r.eventsPerSecond)} events/s); 4 outstanding: event loop ${p.loopUsPerEvent.toFixed(1)} µs/event, main-thread CPU ${p.cpuUsPerEvent.toFixed(1)} µs/event (${Math.round(p.eventsPerSecond)} events/s), ${share.toFixed(0)} % of a ${PIPELINE_US} µs pipeline event`,
      );
      report({
        name: 'outbox append+ack',
        value: r.usPerEvent,
        unit: 'µs/event',
        parameters: { fsync, batch, eventBytes: EVENT_BYTES, eventsPerSecond: Math.round(r.eventsPerSecond) },
      });
      report({
        name: 'outbox event-loop time',
        value: p.loopUsPerEvent,
        unit: 'µs/event',
        parameters: {
          fsync,
          batch,
          outstanding: 4,
          cpuUsPerEvent: Number(p.cpuUsPerEvent.toFixed(1)),
          eventsPerSecond: Math.round(p.eventsPerSecond),
          share: `${share.toFixed(0)}%`,
        },
      });
    }
    // The whole queue path, outbox off then on, alternated three times, medians reported (the machine's noise moves both alike).
    const events = updateEvents(5000, 2048);
    const path: Record<'off' | 'on', { loop: number[]; cpu: number[]; proc: number[]; rate: number[] }> = {
      off: { loop: [], cpu: [], proc: [], rate: [] },
      on: { loop: [], cpu: [], proc: [], rate: [] },
    };
    for (let round = 0; round < 3; round++)
      for (const mode of ['off', 'on'] as const) {
        const r = await queuePath(events, mode === 'on', seconds);
        path[mode].loop.push(r.loopUsPerEvent);
        path[mode].cpu.push(r.cpuUsPerEvent);
        path[mode].proc.push(r.processCpuUsPerEvent);
        path[mode].rate.push(r.eventsPerSecond);
      }
    const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] as number;
    for (const mode of ['off', 'on'] as const) {
      const p = path[mode];
      ctx.log(
        `queue path, outbox ${mode}: event loop ${p.loop.map((x) => x.toFixed(1)).join(' · ')} µs/event, main-thread CPU ${p.cpu.map((x) => x.toFixed(1)).join(' · ')} µs/event, process CPU ${p.proc.map((x) => x.toFixed(1)).join(' · ')} µs/event (${p.rate.map(Math.round).join(' · ')} events/s)`,
      );
      report({
        name: 'queue path event-loop time',
        value: med(p.loop),
        unit: 'µs/event',
        parameters: {
          outbox: mode,
          cpuUsPerEvent: Number(med(p.cpu).toFixed(1)),
          processCpuUsPerEvent: Number(med(p.proc).toFixed(1)),
          eventsPerSecond: Math.round(med(p.rate)),
        },
      });
    }
    // the Kafka record encoding alone, on fresh copies: part of both the queue path and §1's 40 µs
    const copies = events.map(fresh);
    const t0 = performance.now();
    for (const e of copies) toKafkaRecord(e);
    const encodeUs = ((performance.now() - t0) * 1000) / copies.length;
    const added = med(path.on.loop) - med(path.off.loop);
    const queueOwn = med(path.off.loop) - encodeUs;
    const base = PIPELINE_US + queueOwn;
    ctx.log(
      `the outbox adds ${added.toFixed(1)} µs/event to the queue path: ${((100 * added) / (base + added)).toFixed(0)} % of the throughput of a pipeline (${PIPELINE_US} µs, its Kafka record included, + the queue's own ${queueOwn.toFixed(1)} µs; the record alone ${encodeUs.toFixed(1)} µs)`,
    );
    const addedCpu = med(path.on.cpu) - med(path.off.cpu);
    ctx.log(
      `by main-thread CPU (medians): the outbox adds ${addedCpu.toFixed(1)} µs/event, ${((100 * addedCpu) / (base + addedCpu)).toFixed(0)} % on the same base`,
    );
    report({
      name: 'outbox share of pipeline throughput',
      value: Number(((100 * added) / (base + added)).toFixed(1)),
      unit: '%',
      parameters: {
        addedUs: Number(added.toFixed(1)),
        pipelineUs: PIPELINE_US,
        queueOffUs: Number(med(path.off.loop).toFixed(1)),
      },
    });
    note(
      `outbox share of pipeline throughput = event-loop cost / (${PIPELINE_US} µs + cost), ${PIPELINE_US} µs being the in-process pipeline's cost per ~2 KB event (§1)`,
    );
  },
};
