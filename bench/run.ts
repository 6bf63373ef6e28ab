/**
 * `npm run bench [-- name ...]`: runs every benchmark, or those named, each within its own time
 * budget, then prints the readable table. Results go to stdout as one JSON object per line
 * (name, value, unit, parameters); progress, notes and the table go to stderr, so
 * `npm run bench > results.jsonl` keeps a clean record.
 *
 * Real-stack benchmarks need the local stack (`npm run stack -- up`) and a build (`npm run build`).
 */
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { notes, table } from './report.ts';

export interface BenchContext {
  /** Epoch ms by which the benchmark should have finished (its budget). */
  deadline: number;
  log: (msg: string) => void;
}

export interface Benchmark {
  name: string;
  description: string;
  /** Time budget in seconds; the benchmark scales itself down to fit. */
  budgetSeconds: number;
  run(ctx: BenchContext): Promise<void>;
}

const all: Record<string, () => Promise<Benchmark>> = {
  pipeline: async () => (await import('./pipeline.ts')).benchmark,
  e2e: async () => (await import('./e2e.ts')).benchmark,
  memory: async () => (await import('./memory.ts')).benchmark,
  restart: async () => (await import('./restart.ts')).benchmark,
  'kafka-sink': async () => (await import('./kafka-sink.ts')).benchmark,
  'apiserver-cost': async () => (await import('./apiserver-cost.ts')).benchmark,
  outbox: async () => (await import('./outbox.ts')).benchmark,
  webhook: async () => (await import('./webhook.ts')).benchmark,
  'otlp-traces': async () => (await import('./otlp-traces.ts')).benchmark,
};

/** Date, machine, Node version, commit and load: the header of every run (for bench/RESULTS.md). */
function machine(): string {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {}
  const la = loadavg().map((x) => x.toFixed(2));
  return `${new Date().toISOString()} · ${cpus().length} cores (${cpus()[0]?.model ?? '?'}) · ${(totalmem() / 2 ** 30).toFixed(1)} GiB · Node ${process.version} · commit ${commit} · load ${la.join(' ')}`;
}

async function main(): Promise<number> {
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const unknown = wanted.filter((w) => !(w in all));
  if (unknown.length > 0) {
    process.stderr.write(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(all).join(', ')}\n`);
    return 2;
  }
  const names = wanted.length > 0 ? wanted : Object.keys(all);
  process.stderr.write(`${machine()}\n`);
  const failed: string[] = [];
  const t0 = Date.now();
  for (const name of names) {
    const started = Date.now();
    try {
      const b = await (all[name] as () => Promise<Benchmark>)();
      process.stderr.write(`\n== ${b.name}: ${b.description} (budget ${b.budgetSeconds} s)\n`);
      await b.run({
        deadline: started + b.budgetSeconds * 1000,
        log: (msg) => process.stderr.write(`  [${b.name} +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}\n`),
      });
    } catch (err) {
      failed.push(name);
      process.stderr.write(`!! ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.stderr.write(`== ${name} took ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
  process.stderr.write(`\n${machine()}\n${table()}\n`);
  for (const n of notes()) process.stderr.write(`- ${n}\n`);
  process.stderr.write(`\n${names.length} benchmark(s) in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  process.stderr.write(failed.length > 0 ? `; FAILED: ${failed.join(', ')}\n` : '\n');
  return failed.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Kafka clients or keep-alive sockets must not keep a finished run alive.
    setTimeout(() => process.exit(code), 1000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${String(err)}\n`);
    process.exit(1);
  },
);
