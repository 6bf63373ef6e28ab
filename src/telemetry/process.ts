/**
 * Process metrics under the names Prometheus client libraries use (`process_*` as in client_golang
 * and prom-client, `nodejs_*` as in prom-client): resident memory, CPU seconds, start time, open
 * file descriptors, V8 heap and event-loop lag (mean and longest since the previous scrape). Read at scrape time (`Metrics.onCollect`), so they
 * cost nothing between scrapes.
 */
import { readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Metrics } from './metrics.ts';

export interface ProcessMetrics {
  /** Stops the event-loop delay monitor (idempotent). */
  stop(): void;
}

/**
 * Registers the process metrics on `m`, once per registry (a second call returns the first
 * monitor, enabled again). The event-loop lag is the mean and the longest delay of a 50 ms timer
 * since the previous scrape.
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
    lagMax: m.gauge(
      'nodejs_eventloop_lag_max_seconds',
      'Longest event-loop delay since the previous scrape, in seconds.',
    ),
  };
  const loop = new LoopLag();
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
    const lag = loop.take();
    g.lag.set({}, lag.mean / 1000);
    g.lagMax.set({}, lag.max / 1000);
  });
  const pm: ProcessMetrics = { stop: () => loop.disable() };
  registered.set(m, { pm, loop });
  return pm;
}

const registered = new WeakMap<Metrics, { pm: ProcessMetrics; loop: LoopLag }>();

/** How often the event-loop lag is sampled (ms). */
const LAG_TICK_MS = 50;

/**
 * Event-loop lag as the drift of a timer: each tick is due `LAG_TICK_MS` after the previous one;
 * how late it runs is the lag (a loop blocked for 200 ms makes one tick 200 ms late). A loop blocked
 * right now shows as the time since the tick was due. (`perf_hooks.monitorEventLoopDelay` reports
 * its sampling interval rather than a long block, hence this.)
 */
class LoopLag {
  private timer: NodeJS.Timeout | undefined;
  private last = 0;
  private sum = 0;
  private count = 0;
  private max = 0;

  enable(): void {
    if (this.timer) return;
    this.last = performance.now();
    this.timer = setInterval(() => {
      const now = performance.now();
      const lag = Math.max(0, now - this.last - LAG_TICK_MS);
      this.last = now;
      this.sum += lag;
      this.count++;
      this.max = Math.max(this.max, lag);
    }, LAG_TICK_MS);
    this.timer.unref();
  }

  /** Mean and longest lag (ms) since the previous call, then starts over. */
  take(): { mean: number; max: number } {
    const overdue = this.timer ? Math.max(0, performance.now() - this.last - LAG_TICK_MS) : 0;
    const out = { mean: this.count > 0 ? this.sum / this.count : overdue, max: Math.max(this.max, overdue) };
    this.sum = 0;
    this.count = 0;
    this.max = 0;
    return out;
  }

  disable(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}
