/**
 * The OTLP encoder is imported lazily: a process that loads the whole registry (every sink's
 * factory) and even creates an otlp-traces sink has not loaded `src/sinks/otlp-traces/otlp.ts`
 * until the sink starts. Checked in a child process with a module load hook.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../../support/stack.ts';

test('the encoder module loads only when an otlp-traces sink starts', () => {
  const registry = pathToFileURL(join(repoRoot, 'src', 'registry.ts')).href;
  const script = `
import { registerHooks } from 'node:module';
const loaded = [];
registerHooks({ load(url, context, next) { if (url.endsWith('/otlp-traces/otlp.ts')) loaded.push(url); return next(url, context); } });
const { registry } = await import(${JSON.stringify(registry)});
const factory = registry.sinks.find((f) => f.type === 'otlp-traces');
const logger = { debug() {}, info() {}, warn() {}, error() {}, once() {}, child() { return logger; } };
const sink = factory.create({ endpoint: 'http://127.0.0.1:9' }, { id: 'p/s', pipeline: 'p', logger, metrics: { gauge: () => ({ set() {} }), counter: () => ({ inc() {} }) }, stateDir: '/tmp', clusterName: 'c' });
console.log('after-create', loaded.length);
await sink.start(new AbortController().signal);
await new Promise((r) => setTimeout(r, 200));
console.log('after-start', loaded.length);
await sink.shutdown(Date.now() + 100);
`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.deepEqual(out.trim().split('\n'), ['after-create 0', 'after-start 1']);
});
