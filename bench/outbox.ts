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
import { type FsyncPolicy, type OutboxRecord, outboxPath, SqliteOutbox } from '../src/delivery/outbox.ts';
import { silentLogger } from '../src/telemetry/logger.ts';
import { Metrics } from '../src/telemetry/metrics.ts';
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

export const benchmark: Benchmark = {
  name: 'outbox',
  description: 'durable outbox: µs per event of append + ack, ~2 KB events, by fsync policy and batch size',
  budgetSeconds: 30,
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
    note(
      `outbox share of pipeline throughput = event-loop cost / (${PIPELINE_US} µs + cost), ${PIPELINE_US} µs being the in-process pipeline's cost per ~2 KB event (§1)`,
    );
  },
};
