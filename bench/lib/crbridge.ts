/**
 * Runs the real `crbridge run` (dist/cli.js, after `npm run build`) as a child process for the
 * benchmarks: writes the pipeline files, parses the ops port from the JSON logs, reads its
 * Prometheus /metrics and /readyz, asks the preloaded heap probe for heap figures, stops it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runArgs } from '../../test/support/crbridge.ts';
import { loadStackEnv, repoRoot } from '../../test/support/stack.ts';

/** The CLI under test: dist/cli.js, or `$CRBRIDGE_BENCH_CLI` (e.g. another checkout's build or `src/cli.ts`). */
export const cliPath = process.env.CRBRIDGE_BENCH_CLI ?? join(repoRoot, 'dist', 'cli.js');
const probePath = join(repoRoot, 'bench', 'lib', 'heap-probe.mjs');

/** Children still running; killed when the benchmark process exits, whatever happened. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export interface BenchCrbridge {
  child: ChildProcess;
  pid: number;
  stateDir: string;
  port: number;
  stderr: () => string;
  /** Prometheus text from /metrics. */
  metrics(): Promise<string>;
  /** True when /readyz answers 200 (every source synced). */
  ready(): Promise<boolean>;
  /** Heap figures after a full GC (from the preloaded probe). */
  memory(): Promise<NodeJS.MemoryUsage>;
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export interface StartOptions {
  /** Pipeline YAML texts, one file each. */
  pipelines: string[];
  /** Reuse this state dir (restart benchmarks); a fresh temp dir otherwise. */
  stateDir?: string;
  logLevel?: string;
  /** Node flags for the crbridge process; default {@link IMAGE_NODE_FLAGS}, as the container runs it. */
  nodeFlags?: readonly string[];
}

/** The Node flags of the Dockerfile's ENTRYPOINT (keep the two in step). */
export const IMAGE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/** Throws with the command to run when dist/cli.js is missing. */
export function requireBuild(): void {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run \`npm run build\` first`);
}

export async function startBench(opts: StartOptions): Promise<BenchCrbridge> {
  requireBuild();
  const env = loadStackEnv();
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'crb-bench-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'crb-bench-pipe-'));
  const files = opts.pipelines.map((text, i) => {
    const f = join(dir, `p${i}.yaml`);
    writeFileSync(f, text);
    return f;
  });
  const child = spawn(
    process.execPath,
    [
      ...(opts.nodeFlags ?? IMAGE_NODE_FLAGS),
      '--expose-gc',
      '--import',
      probePath,
      cliPath,
      ...runArgs(files, stateDir, ['--log-level', opts.logLevel ?? 'info', '--kubeconfig', env.KUBECONFIG]),
    ],
    { env: process.env, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] },
  );
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    if (err.length > 1_000_000) err = err.slice(-200_000);
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
  });
  live.add(child);
  void exited.then(() => live.delete(child));
  let port = 0;
  for (let i = 0; i < 300 && !port; i++) {
    const m = /"msg":"ops endpoint listening"[^\n]*"port":(\d+)/.exec(err);
    if (m) port = Number(m[1]);
    else if (child.exitCode !== null) throw new Error(`crbridge exited early (${child.exitCode}):\n${err}`);
    else await new Promise((r) => setTimeout(r, 50));
  }
  if (!port) {
    child.kill('SIGKILL');
    throw new Error(`crbridge did not log its port:\n${err}`);
  }
  const base = `http://127.0.0.1:${port}`;
  return {
    child,
    pid: child.pid as number,
    stateDir,
    port,
    stderr: () => err,
    metrics: async () => (await fetch(`${base}/metrics`)).text(),
    ready: async () => (await fetch(`${base}/readyz`)).status === 200,
    memory: () =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('heap probe did not answer')), 10_000);
        const on = (m: unknown) => {
          if ((m as { type?: string }).type !== 'mem') return;
          clearTimeout(t);
          child.off('message', on);
          resolve(m as NodeJS.MemoryUsage);
        };
        child.on('message', on);
        child.send('mem');
      }),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export { metricSum } from '../../test/support/prom.ts';

/** A pipeline file watching bench Backups in `namespaces`, with the given sinks YAML (indented list items). */
export function benchPipeline(name: string, namespaces: string[], sinksYaml: string, sourceExtra = ''): string {
  return `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: ${name}
spec:
  source:
    group: bench.example.com
    version: v1
    resource: backups
    namespaces: [${namespaces.join(', ')}]
${sourceExtra}  sinks:
${sinksYaml}`;
}
