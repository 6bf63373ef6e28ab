/**
 * Process resource probes for benchmarks: CPU time and RSS of any pid from `/proc/<pid>/stat` and
 * `/proc/<pid>/status` (Linux), sampled over an interval.
 */
import { readFileSync } from 'node:fs';

/** Clock ticks per second (`getconf CLK_TCK`), 100 on every Linux we run on. */
const CLK_TCK = 100;

export interface ProcSample {
  /** user+system CPU seconds since the process started. */
  cpuSeconds: number;
  /** Resident set size in bytes (VmRSS). */
  rssBytes: number;
  /** Peak resident set size in bytes (VmHWM). */
  peakRssBytes: number;
}

export function sampleProc(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { cpuSeconds: (utime + stime) / CLK_TCK, rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM') };
}

/** Samples a process every `intervalMs` until stopped; reports CPU use and max RSS over the window. */
export function procMonitor(pid: number, intervalMs = 250) {
  const first = sampleProc(pid);
  const t0 = performance.now();
  let maxRss = first.rssBytes;
  let last = first;
  const timer = setInterval(() => {
    try {
      last = sampleProc(pid);
      if (last.rssBytes > maxRss) maxRss = last.rssBytes;
    } catch {}
  }, intervalMs);
  return {
    stop(): { cpuPercent: number; cpuSeconds: number; maxRssBytes: number; rssBytes: number; seconds: number } {
      clearInterval(timer);
      try {
        last = sampleProc(pid);
        if (last.rssBytes > maxRss) maxRss = last.rssBytes;
      } catch {}
      const seconds = (performance.now() - t0) / 1000;
      const cpuSeconds = last.cpuSeconds - first.cpuSeconds;
      return {
        cpuPercent: (cpuSeconds / seconds) * 100,
        cpuSeconds,
        maxRssBytes: maxRss,
        rssBytes: last.rssBytes,
        seconds,
      };
    },
  };
}

/** The pid of the stack's component `name` (apiserver, etcd, kafka, ...) from `.stack/pids`, if running. */
export function stackPid(stackDir: string, name: string): number | undefined {
  try {
    const pid = Number(readFileSync(`${stackDir}/pids/${name}.pid`, 'utf8').trim());
    readFileSync(`/proc/${pid}/stat`);
    return pid;
  } catch {
    return undefined;
  }
}

export const MB = 1024 * 1024;

/** Busy and total jiffies of the whole machine (all cores) from the first line of `/proc/stat`. */
function machineTicks(): { busy: number; total: number; cores: number } {
  const lines = readFileSync('/proc/stat', 'utf8').split('\n');
  const f = lines[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const cores = lines.filter((l) => /^cpu\d/.test(l)).length;
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total, cores };
}

/**
 * Machine-wide CPU use over a window, in % of one core (so 200 % = both cores of a 2-core machine
 * full), to tell whether the box itself was saturated and how much went to processes not measured.
 */
export function machineMonitor() {
  const first = machineTicks();
  return {
    stop(): { busyPercent: number; cores: number } {
      const last = machineTicks();
      const total = last.total - first.total;
      const busy = last.busy - first.busy;
      return { busyPercent: total > 0 ? (busy / total) * 100 * last.cores : 0, cores: last.cores };
    },
  };
}
