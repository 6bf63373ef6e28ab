/**
 * Benchmark 2, end to end on the real stack: Backup PATCHes to kube-apiserver at fixed rates
 * (100, 500, 1,000/s, then as fast as the apiserver answers) → crbridge (child process) → Kafka →
 * a consumer in this process. Lag is measured from the write's acknowledgement (last byte of the
 * PATCH response) to the record's arrival at the consumer, both on this process's clock. Also
 * reports crbridge CPU and RSS, and the CPU of the apiserver, etcd and Kafka as evidence of what
 * limits the figures on this 2-core machine.
 */
import { join } from 'node:path';
import { loadStackEnv, repoRoot, waitFor } from '../test/support/stack.ts';
import { benchPipeline, metricSum, startBench } from './lib/crbridge.ts';
import { consume, createTopic, deleteTopic, kafkaClient } from './lib/kafka.ts';
import {
  backupsPath,
  createBackups,
  createNamespace,
  deleteAllBackups,
  ensureBenchCrd,
  type Kube,
  kubeClient,
  ok,
  runId,
} from './lib/kube.ts';
import { MB, machineMonitor, procMonitor, stackPid } from './lib/proc.ts';
import { note, percentile, report } from './report.ts';
import type { Benchmark } from './run.ts';

const OBJECTS = 200;
const BYTES = 2048;
const STEP_SECONDS = 8;
const MAX_IN_FLIGHT = 64;

interface StepResult {
  writes: number;
  achievedRate: number;
  lags: number[];
  /** Write acknowledgement → the same change arriving on this process's own WATCH (the apiserver's share). */
  watchLags: number[];
  /** Own WATCH arrival → Kafka record arrival (crbridge + Kafka + consumer). */
  afterWatchLags: number[];
  missing: number;
  drainMs: number;
}

async function step(
  kube: Kube,
  ns: string,
  rate: number | 'max',
  seconds: number,
  acks: Map<string, number>,
  arrivals: Map<string, number>,
  watched: Map<string, number>,
  seqStart: number,
): Promise<StepResult> {
  const keys: string[] = [];
  let seq = seqStart;
  let inFlight = 0;
  let sent = 0;
  const errors: string[] = [];
  const write = async () => {
    const i = seq++;
    const name = `e2e-${i % OBJECTS}`;
    inFlight++;
    try {
      const r = ok(
        await kube.req(
          'PATCH',
          backupsPath(ns, name),
          { spec: { revision: i }, status: { phase: i % 2 ? 'Running' : 'Completed' } },
          'application/merge-patch+json',
        ),
        `patch ${name}`,
      );
      const rv = (JSON.parse(r.body) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
      const key = `${name}@${rv}`;
      acks.set(key, r.ackAt);
      keys.push(key);
    } catch (e) {
      if (errors.length < 3) errors.push(String(e));
    } finally {
      inFlight--;
    }
  };
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const pending = new Set<Promise<void>>();
  const fire = () => {
    const p = write();
    pending.add(p);
    void p.finally(() => pending.delete(p));
    sent++;
  };
  if (rate === 'max') {
    // Closed loop: keep 16 writes in flight for the whole step.
    while (performance.now() < end) {
      while (inFlight < 16) fire();
      await Promise.race(pending);
    }
  } else {
    while (performance.now() < end) {
      const due = Math.floor(((performance.now() - t0) / 1000) * rate);
      while (sent < due && inFlight < MAX_IN_FLIGHT) fire();
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  await Promise.all(pending);
  const writeSeconds = (performance.now() - t0) / 1000;
  if (errors.length > 0) note(`e2e rate=${rate}: write errors, e.g. ${errors[0]}`);
  const lastAck = Math.max(...keys.map((k) => acks.get(k) ?? 0));
  // Drain: wait up to 10 s for every record of this step.
  const drainDeadline = performance.now() + 10_000;
  while (performance.now() < drainDeadline && keys.some((k) => !arrivals.has(k)))
    await new Promise((r) => setTimeout(r, 20));
  const lags: number[] = [];
  const watchLags: number[] = [];
  const afterWatchLags: number[] = [];
  let missing = 0;
  let lastArrival = 0;
  for (const k of keys) {
    const at = arrivals.get(k);
    const ack = acks.get(k) as number;
    const w = watched.get(k);
    if (w !== undefined) watchLags.push(w - ack);
    if (at === undefined) missing++;
    else {
      lags.push(at - ack);
      if (w !== undefined) afterWatchLags.push(at - w);
      if (at > lastArrival) lastArrival = at;
    }
  }
  for (const a of [lags, watchLags, afterWatchLags]) a.sort((x, y) => x - y);
  return {
    writes: keys.length,
    achievedRate: keys.length / writeSeconds,
    lags,
    watchLags,
    afterWatchLags,
    missing,
    drainMs: lastArrival - lastAck,
  };
}

export const benchmark: Benchmark = {
  name: 'e2e',
  description: 'apiserver writes → crbridge → Kafka → consumer: lag, CPU, RSS at fixed rates',
  budgetSeconds: 75,
  async run({ log, deadline }) {
    const env = loadStackEnv();
    const stackDir = join(repoRoot, '.stack');
    ensureBenchCrd();
    const kube = kubeClient(MAX_IN_FLIGHT);
    const kafka = kafkaClient('crbridge-bench-e2e');
    const id = runId();
    const ns = `bench-e2e-${id}`;
    const topic = `bench-e2e-${id}`;
    await createNamespace(kube, ns);
    await createTopic(kafka, topic, 1);
    await createBackups(kube, ns, 'e2e', 0, OBJECTS, BYTES);
    log(`${OBJECTS} objects of ~${BYTES} B in ${ns}; topic ${topic}`);

    const acks = new Map<string, number>();
    const arrivals = new Map<string, number>();
    const watched = new Map<string, number>();
    let stopWatch = () => {};
    let ownWatchRestarts = 0;
    let records = 0;
    const consumer = await consume(kafka, topic, (a) => {
      records++;
      if (a.key && !arrivals.has(a.key)) arrivals.set(a.key, a.at);
    });
    const cr = await startBench({
      pipelines: [
        benchPipeline(
          `bench-e2e-${id}`,
          [ns],
          `    - name: kafka
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
`,
        ),
      ],
    });
    try {
      await waitFor(() => cr.ready(), 60_000, 'crbridge ready');
      await waitFor(() => records >= OBJECTS, 60_000, `${OBJECTS} initial records (have ${records})`);
      log(`crbridge pid ${cr.pid} synced; ${records} initial records consumed`);
      // This process's own WATCH on the namespace: when the apiserver hands each change to a
      // watcher. Reopened from the last resourceVersion if the apiserver ends it.
      let lastRv = '';
      let stopped = false;
      let current: { close: () => void } | undefined;
      const openWatch = async (): Promise<void> => {
        const q = lastRv ? `&resourceVersion=${lastRv}` : '';
        current = await kube.stream(
          `${backupsPath(ns)}?watch=1&allowWatchBookmarks=false${q}`,
          (line, at) => {
            const md = (JSON.parse(line) as { object?: { metadata?: { name?: string; resourceVersion?: string } } })
              .object?.metadata;
            if (md?.name && md.resourceVersion) {
              watched.set(`${md.name}@${md.resourceVersion}`, at);
              lastRv = md.resourceVersion;
            }
          },
          () => {
            if (stopped) return;
            ownWatchRestarts++;
            openWatch().catch(() => undefined);
          },
        );
      };
      await openWatch();
      stopWatch = () => {
        stopped = true;
        current?.close();
      };
      const pids = {
        apiserver: stackPid(stackDir, 'apiserver'),
        etcd: stackPid(stackDir, 'etcd'),
        kafka: stackPid(stackDir, 'kafka'),
      };
      let seq = 1_000_000;
      for (const rate of [100, 500, 1000, 'max'] as const) {
        const remaining = (deadline - Date.now()) / 1000;
        const seconds = Math.min(STEP_SECONDS, remaining - 12);
        if (seconds < 2) {
          note(`e2e rate=${rate}: skipped, out of time budget`);
          continue;
        }
        const restarts0 = metricSum(await cr.metrics(), 'crbridge_source_watch_restarts_total');
        const relists0 = metricSum(await cr.metrics(), 'crbridge_source_relists_total');
        const ownRestarts0 = ownWatchRestarts;
        const mon = procMonitor(cr.pid);
        const others = Object.fromEntries(
          Object.entries(pids).flatMap(([k, pid]) => (pid ? [[k, procMonitor(pid)]] : [])),
        );
        const machine = machineMonitor();
        const selfCpu0 = process.cpuUsage();
        const selfT0 = performance.now();
        const r = await step(kube, ns, rate, seconds, acks, arrivals, watched, seq);
        seq += r.writes + 1000;
        const m = mon.stop();
        const o = Object.fromEntries(Object.entries(others).map(([k, v]) => [k, v.stop().cpuPercent]));
        const box = machine.stop();
        const selfCpu = process.cpuUsage(selfCpu0);
        const selfPct = ((selfCpu.user + selfCpu.system) / 1000 / (performance.now() - selfT0)) * 100;
        const keptUp = r.missing === 0 && r.drainMs < 1000;
        const after = await cr.metrics();
        const watchRestarts = metricSum(after, 'crbridge_source_watch_restarts_total') - restarts0;
        const relists = metricSum(after, 'crbridge_source_relists_total') - relists0;
        if (watchRestarts > 0 || relists > 0 || ownWatchRestarts > ownRestarts0)
          note(
            `e2e rate=${rate}: watch streams ended during the step (crbridge: ${watchRestarts} restarts, ${relists} relists; the bench's own watch: ${ownWatchRestarts - ownRestarts0} restarts)`,
          );
        const params = {
          rate,
          achieved: Math.round(r.achievedRate),
          writes: r.writes,
          objectBytes: BYTES,
          keptUp,
          crbridgeWatchRestarts: watchRestarts,
        };
        report({ name: 'e2e.write_rate', value: r.achievedRate, unit: 'writes/s', parameters: params });
        for (const [p, label] of [
          [50, 'p50'],
          [95, 'p95'],
          [99, 'p99'],
          [100, 'max'],
        ] as const) {
          report({ name: `e2e.lag_${label}`, value: percentile(r.lags, p), unit: 'ms', parameters: params });
        }
        report({
          name: 'e2e.apiserver_watch_lag_p99',
          value: percentile(r.watchLags, 99),
          unit: 'ms',
          parameters: { ...params, p50: +percentile(r.watchLags, 50).toFixed(1), what: 'ack→own WATCH' },
        });
        report({
          name: 'e2e.crbridge_kafka_lag_p99',
          value: percentile(r.afterWatchLags, 99),
          unit: 'ms',
          parameters: { ...params, p50: +percentile(r.afterWatchLags, 50).toFixed(1), what: 'own WATCH→Kafka record' },
        });
        report({ name: 'e2e.missing_records', value: r.missing, unit: 'records', parameters: params });
        report({ name: 'e2e.crbridge_cpu', value: m.cpuPercent, unit: '% of one core', parameters: params });
        report({ name: 'e2e.crbridge_rss_max', value: m.maxRssBytes / MB, unit: 'MB', parameters: params });
        report({
          name: 'e2e.stack_cpu',
          value: (o.apiserver ?? 0) + (o.etcd ?? 0) + (o.kafka ?? 0),
          unit: '% of one core',
          parameters: {
            rate,
            apiserver: Math.round(o.apiserver ?? 0),
            etcd: Math.round(o.etcd ?? 0),
            kafka: Math.round(o.kafka ?? 0),
            benchProcess: Math.round(selfPct),
            // The whole machine (100 % per core) and what none of the measured processes used
            // (other work on the box, the kernel's network stack): whether the box was full.
            machine: Math.round(box.busyPercent),
            cores: box.cores,
            other: Math.round(
              box.busyPercent - (o.apiserver ?? 0) - (o.etcd ?? 0) - (o.kafka ?? 0) - selfPct - m.cpuPercent,
            ),
          },
        });
        log(
          `rate=${rate}: ${r.writes} writes at ${r.achievedRate.toFixed(0)}/s, p50 ${percentile(r.lags, 50).toFixed(1)} ms, p99 ${percentile(r.lags, 99).toFixed(1)} ms (apiserver→watch p99 ${percentile(r.watchLags, 99).toFixed(1)}, watch→Kafka p99 ${percentile(r.afterWatchLags, 99).toFixed(1)}), missing ${r.missing}, crbridge ${m.cpuPercent.toFixed(0)}% CPU, apiserver ${Math.round(o.apiserver ?? 0)}%`,
        );
      }
    } finally {
      stopWatch();
      await cr.stop();
      await consumer.stop();
      await deleteAllBackups(kube, ns);
      await deleteTopic(kafka, topic);
      kube.close();
    }
  },
};
