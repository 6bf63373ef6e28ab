/**
 * `node test/infra/integration.ts [files...]`: runs the integration tests against the stack that
 * `with-stack.ts` provides, in two passes so the whole command stays short on two cores:
 *
 * 1. every file that does not say `@serial` in its text, two files at a time (they are isolated:
 *    each uses its own namespace, topic, state dir and ports, and they mostly wait on I/O);
 * 2. the `@serial` files one at a time: those that stop or restart a stack component (Kafka,
 *    Jaeger), that count the API server's own request metrics, or whose timing cannot share the
 *    machine.
 *
 * A file opts into the second pass with a comment naming `@serial` and why. Without arguments, all
 * of `test/integration/**\/*.test.ts`. `CRBRIDGE_IT_CONCURRENCY` overrides the first pass's
 * concurrency (1 runs everything serially). Exits non-zero when any test failed.
 */
import { spawnSync } from 'node:child_process';
import { globSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './stack.ts';

const files = (
  process.argv.length > 2 ? process.argv.slice(2) : globSync('test/integration/**/*.test.ts', { cwd: repoRoot })
)
  .map((f) => f.replaceAll('\\', '/'))
  .sort();
const serial = files.filter((f) => readFileSync(join(repoRoot, f), 'utf8').includes('@serial'));
const parallel = files.filter((f) => !serial.includes(f));
const concurrency = Number(process.env.CRBRIDGE_IT_CONCURRENCY ?? 2);

function run(list: string[], n: number): number {
  if (list.length === 0) return 0;
  process.stdout.write(`[integration] ${list.length} file(s), ${n} at a time\n`);
  const r = spawnSync(
    process.execPath,
    [
      '--test',
      `--test-concurrency=${n}`,
      '--test-timeout=180000',
      '--test-force-exit',
      '--test-reporter=spec',
      ...list,
    ],
    { cwd: repoRoot, stdio: 'inherit' },
  );
  return r.status ?? 1;
}

const started = Date.now();
const a = run(parallel, concurrency);
const b = run(serial, 1);
process.stdout.write(`[integration] done in ${Math.round((Date.now() - started) / 1000)} s\n`);
process.exitCode = a || b;
