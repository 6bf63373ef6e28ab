/**
 * `node test/infra/with-stack.ts <command...>`: runs a command against the local real stack.
 *
 * If the stack is already up and healthy it is reused and left running. If nothing of it runs, it is
 * brought up for the command and taken down afterwards, even when the command fails or we get
 * SIGINT/SIGTERM. If only part of it runs (someone's shared stack with a stopped component), the
 * missing parts are started and the stack is left running. The command gets the `.stack/env`
 * variables in its environment (and CRBRIDGE_STACK_BIN first on PATH).
 * Exits with the command's exit code.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { delimiter } from 'node:path';
import { parseEnv } from 'node:util';
import { down, envFile, StackError, status, up } from './stack.ts';

const say = (s: string) => process.stdout.write(`[with-stack] ${s}\n`);

async function main(argv: string[]): Promise<number> {
  if (argv.length === 0) {
    process.stderr.write('usage: node test/infra/with-stack.ts <command...>\n');
    return 2;
  }
  let child: ChildProcess | undefined;
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
    if (child && child.exitCode === null) child.kill(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const before = await status();
  let owned = false;
  try {
    if (existsSync(envFile) && before.every((c) => c.healthy)) {
      say('stack already up and healthy: reusing it (it stays running)');
    } else if (before.some((c) => c.running)) {
      say('stack partly running: starting what is missing (it stays running)');
      await up();
    } else {
      owned = true;
      await up();
    }
    if (interrupted) return 130;
    const vars = parseEnv(readFileSync(envFile, 'utf8'));
    const env: NodeJS.ProcessEnv = { ...process.env, ...vars };
    env.PATH = [vars.CRBRIDGE_STACK_BIN, process.env.PATH].filter(Boolean).join(delimiter);
    // kafkajs 2.2.4 on Node >= 23 warns TimeoutNegativeWarning on every connection (harmless noise)
    env.NODE_OPTIONS = [process.env.NODE_OPTIONS, '--disable-warning=TimeoutNegativeWarning'].filter(Boolean).join(' ');
    // `node` means this Node 24, whatever PATH says
    const [cmd, ...args] = argv as [string, ...string[]];
    const bin = cmd === 'node' ? process.execPath : cmd;
    const code = await new Promise<number>((resolve) => {
      child = spawn(bin, args, { stdio: 'inherit', env });
      child.once('error', (e) => {
        process.stderr.write(`with-stack: cannot run ${cmd}: ${e.message}\n`);
        resolve(127);
      });
      child.once('exit', (c, sig) => resolve(c ?? (sig === 'SIGINT' ? 130 : 143)));
    });
    return interrupted && code === 0 ? 130 : code;
  } finally {
    if (owned) {
      say('taking the stack down (it was started for this command)');
      await down();
    }
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof StackError) process.stderr.write(`${e.message}\n`);
  else process.stderr.write(`with-stack: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
}
