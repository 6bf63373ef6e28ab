/**
 * The README's main command, `npm run demo`, on the real stack the test run already has up: the
 * demo script runs to its end (exit 0) and its own check says every change arrived in Kafka, at the
 * webhook with a valid signature, the failed Backup in Slack, and a trace per Backup in Jaeger —
 * counted from what its receivers and Kafka really got, not assumed. It reuses the running stack
 * and leaves it up.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { stripVTControlCharacters } from 'node:util';
import { repoRoot } from '../../support/stack.ts';

test('npm run demo: the story runs and nothing is lost anywhere', async () => {
  const child = spawn(process.execPath, [join(repoRoot, 'scripts/demo.ts')], {
    cwd: repoRoot,
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const plain = stripVTControlCharacters(out);
  assert.equal(code, 0, plain.slice(-3000));
  const m = /(\d+) changes made, (\d+) of them while crbridge was down/.exec(plain);
  assert.ok(m, 'the demo reports what it changed');
  const made = Number(m[1]);
  assert.ok(made >= 10 && Number(m[2]) >= 3, plain.slice(-2000));
  assert.match(plain, new RegExp(`Kafka: +${made}/${made} arrived ✓`));
  assert.match(plain, new RegExp(`webhook: ${made}/${made} arrived, 0 bad signatures ✓`));
  assert.match(plain, /Slack: +the failed Backup has its thread ✓/);
  assert.match(plain, /Jaeger: +a trace for every Backup ✓/);
  assert.match(plain, /every change arrived everywhere it was routed/);
  assert.match(plain, /the stack keeps running/, 'a stack it did not start is left up');
});
