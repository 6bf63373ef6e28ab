/**
 * Runs the real `crbridge` CLI (dist/cli.js on this Node 24) as a child process for integration
 * tests: captures stdout/stderr, finds the ops port from its JSON logs, stops it with a signal.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './stack.ts';

export const cliPath = join(repoRoot, 'dist', 'cli.js');

export interface RunningCrbridge {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** The ops HTTP port, once the process logged it. */
  port: () => Promise<number>;
  /** Sends the signal and resolves with the exit code (or the signal name). */
  stop: (signal?: NodeJS.Signals) => Promise<number | string>;
  exited: Promise<number | string>;
}

/** `run` arguments for a test: the pipeline files, a state dir, a free ops port on loopback, and `extra`. */
export function runArgs(configs: readonly string[], stateDir: string, extra: readonly string[] = []): string[] {
  return [
    'run',
    ...configs.flatMap((c) => ['-c', c]),
    '--state-dir',
    stateDir,
    '--http-port',
    '0',
    '--http-host',
    '127.0.0.1',
    ...extra,
  ];
}

export function startCrbridge(args: string[], env: NodeJS.ProcessEnv = process.env): RunningCrbridge {
  const child = spawn(process.execPath, [cliPath, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    port: async () => {
      for (let i = 0; i < 300; i++) {
        const m = /"msg":"ops endpoint listening"[^\n]*"port":(\d+)/.exec(err);
        if (m) return Number(m[1]);
        if (child.exitCode !== null) throw new Error(`crbridge exited early (${child.exitCode}):\n${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`crbridge did not log its port:\n${err}`);
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * `crbridge validate -c <files>` with nothing but PATH in its environment (no KUBECONFIG, no
 * brokers: validation must not need them). Resolves with the exit code and what it printed.
 */
export function validateOffline(files: readonly string[]): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, [cliPath, 'validate', ...files.flatMap((f) => ['-c', f])], {
      env: { PATH: process.env.PATH ?? '' },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { code: 0, out };
  } catch (err) {
    const e = err as { status: number; stderr: string; stdout: string };
    return { code: e.status, out: e.stderr + e.stdout };
  }
}
