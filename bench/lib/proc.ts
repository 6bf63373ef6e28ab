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
