/**
 * Runs the real `crbridge` CLI (dist/cli.js on this Node 24) as a child process for integration
 * tests: captures stdout/stderr, finds the ops port from its JSON logs, stops it with a signal.
 */
import { type ChildProcess, spawn } from 'node:child_process';
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
