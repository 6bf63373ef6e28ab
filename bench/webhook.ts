/**
 * Benchmark 8, webhook sink throughput: events/s and requests/s of the real `webhook` sink (signed
 * per Standard Webhooks, keep-alive connections) behind the real `DeliveryQueue` (up to
 * `delivery.concurrency` batches in flight, never two of one object), against a local HTTP receiver
 * in a child process (so it does not share the sender's event loop) that answers 204 after 0 ms or
 * after 50 ms. Events are updates of ~2 KB Backups spread over 5,000 objects (uids). Modes: binary
 * (one event per request) at concurrency 1, 16, 64 against both receivers; batch
 * (`application/cloudevents-batch+json`, 100 and 500 events per request) at concurrency 1, 16, 64
 * against the 50 ms one. Each setting: a short warm-up, then delivered events counted over a
 * window of a few seconds while the queue is kept full. No stack needed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpus } from 'node:os';
import type { OutboundEvent, Sink } from '../src/component.ts';
import { resolveDeliveryConfig } from '../src/delivery/config.ts';
import type { DeadLetter, DeadLetterEntry } from '../src/delivery/dead-letter.ts';
import { DeliveryQueue } from '../src/delivery/queue.ts';
import type { CloudEvent } from '../src/events/cloudevent.ts';
import type { KubeObject } from '../src/events/delta.ts';
import { type WebhookSinkConfig, webhookSink } from '../src/sinks/webhook/index.ts';
import { silentLogger } from '../src/telemetry/logger.ts';
import { Metrics } from '../src/telemetry/metrics.ts';
import { backupObject } from './lib/kube.ts';
import { note, report } from './report.ts';
import type { Benchmark } from './run.ts';

const OBJECTS = 5_000;
const SECRET = `whsec_${Buffer.from('crbridge-bench-webhook-secret-32b').toString('base64')}`;

export interface Setting {
  delayMs: number;
  mode: 'binary' | 'batch';
  batchSize: number;
  concurrency: number;
}

export const SETTINGS: Setting[] = [
  ...[1, 16, 64].map((concurrency) => ({ delayMs: 0, mode: 'binary' as const, batchSize: 1, concurrency })),
  ...[1, 16, 64].map((concurrency) => ({ delayMs: 50, mode: 'binary' as const, batchSize: 1, concurrency })),
  ...[100, 500].flatMap((batchSize) =>
    [1, 16, 64].map((concurrency) => ({ delayMs: 50, mode: 'batch' as const, batchSize, concurrency })),
  ),
];

/**
 * The receiver (run with `node -e`): reads each request body whole, answers 204 after the delay
 * in the path (`/d/<ms>`), counts requests, bytes and connections (keep-alive: one per request in flight); prints its port, then `{requests, bytes, connections}`
 * as a JSON line on every `stats` line read from stdin.
 */
const RECEIVER = `
const http = require('node:http');
let requests = 0, bytes = 0, connections = 0;
const server = http.createServer((req, res) => {
  const delay = Number(req.url.split('/')[2] ?? 0);
  req.on('data', (c) => { bytes += c.length; });
  req.on('end', () => {
    requests++;
    const answer = () => { res.writeHead(204); res.end(); };
    if (delay > 0) setTimeout(answer, delay); else answer();
  });
});
server.on('connection', () => { connections++; });
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { for (const l of d.split('\\n')) if (l === 'stats') process.stdout.write(JSON.stringify({ requests, bytes, connections }) + '\\n'); });
process.stdin.on('end', () => process.exit(0));
`;

export class Receiver {
  private lines: string[] = [];
  private waiters: ((l: string) => void)[] = [];
  private readonly child: ChildProcess;
  private constructor(child: ChildProcess) {
    this.child = child;
    let buf = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
  }
  static async start(): Promise<{ receiver: Receiver; port: number }> {
    const child = spawn(process.execPath, ['-e', RECEIVER], { stdio: ['pipe', 'pipe', 'inherit'] });
    const receiver = new Receiver(child);
    return { receiver, port: Number(await receiver.line()) };
  }
  get pid(): number | undefined {
    return this.child.pid;
  }
  private line(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  async stats(): Promise<{ requests: number; bytes: number; connections: number }> {
    this.child.stdin?.write('stats\n');
    return JSON.parse(await this.line()) as { requests: number; bytes: number; connections: number };
  }
  async stop(): Promise<void> {
    const exited = once(this.child, 'exit');
    this.child.stdin?.end();
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000).unref())]);
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

/** One ~2 KB Backup update per object; events share their object's data (cheap to make, measured once). */
export function objectsData(): { uid: string; name: string; data: Record<string, unknown> }[] {
  return Array.from({ length: OBJECTS }, (_, i) => {
    const name = `b-${i}`;
    const object = backupObject('bench', name, 2048, i) as KubeObject;
    const uid = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    object.metadata.uid = uid;
    object.metadata.resourceVersion = String(300_000 + i);
    return {
      uid,
      name,
      data: {
        object,
        patch: [{ op: 'replace', path: '/spec/revision', value: i }],
        changedPaths: ['/spec'],
        reason: 'live',
      },
    };
  });
}

/** An update event of object `o` (the envelope crbridge's builder makes, with its uid as partition key). */
function makeEvent(o: ReturnType<typeof objectsData>[number], id: string): CloudEvent {
  return {
    specversion: '1.0',
    id,
    source: '/clusters/bench/apis/bench.example.com/v1/namespaces/bench/backups',
    type: 'io.crbridge.bench.example.com.backup.updated',
    subject: `bench/${o.name}`,
    time: '2026-12-01T21:00:00.000Z',
    datacontenttype: 'application/json',
    k8suid: o.uid,
    partitionkey: o.uid,
    data: o.data as unknown as CloudEvent['data'],
  };
}

class NullDeadLetter implements DeadLetter {
  count = 0;
  async write(_entry: DeadLetterEntry): Promise<void> {
    this.count++;
  }
  async close(): Promise<void> {}
}

/** Counts sends (= requests: binary sends one event per call, batch one request per call). */
function counting(sink: Sink): { sink: Sink; sends: () => number } {
  let sends = 0;
  const wrapped: Sink = Object.assign(Object.create(sink) as Sink, {
    send(batch: readonly OutboundEvent[], signal: AbortSignal) {
      sends++;
      return sink.send(batch, signal);
    },
  });
  return { sink: wrapped, sends: () => sends };
}

export async function measure(
  s: Setting,
  port: number,
  receiver: Receiver,
  objects: ReturnType<typeof objectsData>,
  seconds: number,
  run: string,
) {
  const c0 = (await receiver.stats()).connections;
  const config: WebhookSinkConfig = {
    url: `http://127.0.0.1:${port}/d/${s.delayMs}`,
    mode: s.mode,
    ...(s.mode === 'batch' && { batchSize: s.batchSize }),
    signing: { secrets: [SECRET] },
  };
  const metrics = new Metrics();
  const inner = webhookSink.create(config, {
    id: 'bench/hook',
    pipeline: 'bench',
    logger: silentLogger,
    metrics,
    stateDir: '/tmp',
    clusterName: 'bench',
  });
  const { sink, sends } = counting(inner);
  const dead = new NullDeadLetter();
  const queue = new DeliveryQueue(sink, resolveDeliveryConfig({ concurrency: s.concurrency }), {
    id: 'bench/hook',
    logger: silentLogger,
    metrics,
    deadLetter: dead,
  });
  const ac = new AbortController();
  await queue.start(ac.signal);
  let delivered = 0;
  let failed = 0;
  let seq = 0;
  let stop = false;
  const feeder = (async () => {
    while (!stop) {
      const o = objects[seq % objects.length] as (typeof objects)[number];
      const event = makeEvent(o, `${run}-${seq++}`);
      try {
        const { settled } = await queue.enqueue(event, ac.signal);
        settled.then(
          () => delivered++,
          () => failed++,
        );
      } catch {
        break;
      }
    }
  })();
  const warmup = Math.min(500, seconds * 200);
  await new Promise((r) => setTimeout(r, warmup));
  const d0 = delivered;
  const n0 = sends();
  const r0 = await receiver.stats();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const d1 = delivered;
  const n1 = sends();
  const r1 = await receiver.stats();
  stop = true;
  await queue.shutdown(Date.now() + 200);
  ac.abort();
  await feeder;
  return {
    eventsPerSecond: ((d1 - d0) / ms) * 1000,
    requestsPerSecond: ((n1 - n0) / ms) * 1000,
    receivedPerSecond: ((r1.requests - r0.requests) / ms) * 1000,
    mbPerSecond: (((r1.bytes - r0.bytes) / ms) * 1000) / 2 ** 20,
    connections: r1.connections - c0,
    senderCpu: ((cpu.user + cpu.system) / 1000 / ms) * 100,
    deadLettered: dead.count,
    undeliveredAtShutdown: failed,
  };
}

/** A setting's label, e.g. `binary c=64 50ms` or `batch×100 c=16 50ms` (what BENCH_WEBHOOK matches). */
export function settingLabel(s: Setting): string {
  return `${s.mode}${s.mode === 'batch' ? `×${s.batchSize}` : ''} c=${s.concurrency} ${s.delayMs}ms`;
}

export const benchmark: Benchmark = {
  name: 'webhook',
  description:
    'webhook sink events/s and requests/s behind the delivery queue, 0 ms and 50 ms receiver, by mode and concurrency',
  budgetSeconds: 90,
  async run({ log, deadline }) {
    const objects = objectsData();
    const sample = JSON.stringify(makeEvent(objects[0] as ReturnType<typeof objectsData>[number], 'x'.repeat(24)));
    const { receiver, port } = await Receiver.start();
    const run = Date.now().toString(36);
    try {
      // BENCH_WEBHOOK=<regex> runs only the settings whose label (e.g. "batch×100 c=64 50ms") matches
      const only = process.env.BENCH_WEBHOOK ? new RegExp(process.env.BENCH_WEBHOOK) : undefined;
      const settings = SETTINGS.filter((s) => !only || only.test(settingLabel(s)));
      // ~1.5 s per setting for start, warm-up, the receiver's counters and shutdown
      const seconds = Math.max(1, Math.min(4, (deadline - Date.now()) / 1000 / Math.max(1, settings.length) - 2));
      for (const s of settings) {
        if (Date.now() > deadline - (seconds + 2) * 1000) {
          note(
            `webhook ${s.mode} batch=${s.batchSize} c=${s.concurrency} delay=${s.delayMs}ms: skipped, out of time budget`,
          );
          continue;
        }
        const r = await measure(s, port, receiver, objects, seconds, run);
        const params = {
          mode: s.mode,
          ...(s.mode === 'batch' && { batchSize: s.batchSize }),
          concurrency: s.concurrency,
          receiverDelayMs: s.delayMs,
          eventBytes: sample.length,
          objects: OBJECTS,
          signed: true,
          senderCpu: `${Math.round(r.senderCpu)}%`,
          connections: r.connections,
        };
        report({ name: 'webhook.events_per_second', value: r.eventsPerSecond, unit: 'events/s', parameters: params });
        report({
          name: 'webhook.requests_per_second',
          value: r.requestsPerSecond,
          unit: 'requests/s',
          parameters: { mode: s.mode, batchSize: s.batchSize, concurrency: s.concurrency, receiverDelayMs: s.delayMs },
        });
        log(
          `${s.mode}${s.mode === 'batch' ? ` ×${s.batchSize}` : ''} c=${s.concurrency} receiver ${s.delayMs} ms: ${Math.round(r.eventsPerSecond)} events/s, ${Math.round(r.requestsPerSecond)} requests/s (receiver saw ${Math.round(r.receivedPerSecond)}/s, ${r.mbPerSecond.toFixed(1)} MB/s, ${r.connections} connections); sender CPU ${Math.round(r.senderCpu)}%${r.deadLettered > 0 ? `; ${r.deadLettered} dead-lettered!` : ''}`,
        );
        if (r.deadLettered > 0) note(`webhook ${s.mode} c=${s.concurrency}: ${r.deadLettered} events dead-lettered`);
      }
      note(
        `webhook: receiver in a child process on the same ${cpus().length}-core machine; sender CPU = the sending process's CPU time over the window (100% = one core)`,
      );
    } finally {
      await receiver.stop();
    }
  },
};
