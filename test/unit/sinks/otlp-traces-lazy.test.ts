/**
 * The OpenTelemetry SDK is imported lazily: a process that loads the whole registry (every sink's
 * factory) and even creates an otlp-traces sink has loaded no `@opentelemetry/*` module (nor
 * `src/sinks/otlp-traces/otlp.ts`) until the sink starts; then the tracing SDK and the OTLP/HTTP
 * exporter are loaded. Checked in a child process with a module load hook.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../../support/stack.ts';

test('the OpenTelemetry SDK and exporter load only when an otlp-traces sink starts', () => {
  const registry = pathToFileURL(join(repoRoot, 'src', 'registry.ts')).href;
  const names = [
    '/otlp-traces/otlp.ts',
    '/@opentelemetry/',
    '/@opentelemetry/sdk-trace/',
    '/@opentelemetry/exporter-trace-otlp-http/',
    '/@opentelemetry/resources/',
  ];
  const script = `
import { registerHooks } from 'node:module';
const loaded = [];
const seen = (name) => loaded.some((u) => u.includes(name));
const names = ${JSON.stringify(names)};
const report = (when) => console.log(when, names.map((n) => n + '=' + seen(n)).join(' '));
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
const { registry } = await import(${JSON.stringify(registry)});
const factory = registry.sinks.find((f) => f.type === 'otlp-traces');
const logger = { debug() {}, info() {}, warn() {}, error() {}, once() {}, child() { return logger; } };
const sink = factory.create({ endpoint: 'http://127.0.0.1:9' }, { id: 'p/s', pipeline: 'p', logger, metrics: { gauge: () => ({ set() {} }), counter: () => ({ inc() {} }) }, stateDir: '/tmp', clusterName: 'c' });
report('after-create');
await sink.start(new AbortController().signal);
const all = () => names.every(seen);
for (let i = 0; i < 200 && !all(); i++) await new Promise((r) => setTimeout(r, 50));
report('after-start');
await sink.shutdown(Date.now() + 100);
`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.deepEqual(out.trim().split('\n'), [
    `after-create ${names.map((n) => `${n}=false`).join(' ')}`,
    `after-start ${names.map((n) => `${n}=true`).join(' ')}`,
  ]);
});
