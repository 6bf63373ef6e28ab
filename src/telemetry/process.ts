/**
 * Process metrics under the names Prometheus client libraries use (`process_*` as in client_golang
 * and prom-client, `nodejs_*` as in prom-client): resident memory, CPU seconds, start time, open
 * file descriptors, V8 heap and event-loop lag. Read at scrape time (`Metrics.onCollect`), so they
 * cost nothing between scrapes.
 */
import { readdirSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Metrics } from './metrics.ts';

export interface ProcessMetrics {
  /** Stops the event-loop delay monitor (idempotent). */
  stop(): void;
}

/**
 * Registers the process metrics on `m`, once per registry (a second call returns the first
 * monitor, enabled again). The event-loop lag is the mean and the 99th percentile of the delays measured since
 * the previous scrape (a `perf_hooks` histogram, reset at each scrape).
 */
export function registerProcessMetrics(m: Metrics): ProcessMetrics {
  const known = registered.get(m);
  if (known) {
    known.loop.enable();
    return known.pm;
  }
  const g = {
    rss: m.gauge('process_resident_memory_bytes', 'Resident memory size in bytes.'),
    cpuUser: m.counter('process_cpu_user_seconds_total', 'User CPU time spent in seconds.'),
    cpuSystem: m.counter('process_cpu_system_seconds_total', 'System CPU time spent in seconds.'),
    cpu: m.counter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.'),
    start: m.gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch in seconds.'),
    fds: m.gauge('process_open_fds', 'Number of open file descriptors (absent where /proc is not available).'),
    heapUsed: m.gauge('nodejs_heap_size_used_bytes', 'V8 heap in use, in bytes.'),
    heapTotal: m.gauge('nodejs_heap_size_total_bytes', 'V8 heap allocated, in bytes.'),
    external: m.gauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript objects, in bytes.'),
    lag: m.gauge('nodejs_eventloop_lag_seconds', 'Mean event-loop delay since the previous scrape, in seconds.'),
    lagP99: m.gauge(
      'nodejs_eventloop_lag_p99_seconds',
      '99th percentile of the event-loop delay since the previous scrape, in seconds.',
    ),
  };
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  g.start.set({}, Math.round((Date.now() - process.uptime() * 1000) / 1000));
  // counters carry the running totals: set them by adding the difference since the last scrape
  const setTotal = (c: typeof g.cpu, v: number) => c.inc({}, v - c.get({}));
  m.onCollect(() => {
    const mem = process.memoryUsage();
    g.rss.set({}, mem.rss);
    g.heapUsed.set({}, mem.heapUsed);
    g.heapTotal.set({}, mem.heapTotal);
    g.external.set({}, mem.external);
    const cpu = process.cpuUsage();
    setTotal(g.cpuUser, cpu.user / 1e6);
    setTotal(g.cpuSystem, cpu.system / 1e6);
    setTotal(g.cpu, (cpu.user + cpu.system) / 1e6);
    const fds = openFds();
    if (fds !== undefined) g.fds.set({}, fds);
    if (loop.count > 0) {
      g.lag.set({}, loop.mean / 1e9);
      g.lagP99.set({}, loop.percentile(99) / 1e9);
    }
    loop.reset();
  });
  const pm: ProcessMetrics = { stop: () => loop.disable() };
  registered.set(m, { pm, loop });
  return pm;
}

const registered = new WeakMap<Metrics, { pm: ProcessMetrics; loop: ReturnType<typeof monitorEventLoopDelay> }>();

function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}
