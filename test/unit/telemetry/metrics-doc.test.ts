/**
 * docs/metrics.md cannot go stale: every metric family crbridge registers (a runtime with every
 * component, the process metrics) or names in src/ is listed there with the same type and help, and
 * every family listed there exists. Also the process metrics' values are real.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { registerProcessMetrics } from '../../../src/telemetry/process.ts';
import { metricSum } from '../../support/prom.ts';
import { repoRoot } from '../../support/stack.ts';
import { metricNamesInSource, registeredFamilies } from './all-metrics.ts';

interface DocRow {
  type: string;
  labels: string;
  help: string;
}

/** The table rows of docs/metrics.md whose first cell is a metric name in backticks. */
function documented(): Map<string, DocRow> {
  const rows = new Map<string, DocRow>();
  for (const line of readFileSync(join(repoRoot, 'docs', 'metrics.md'), 'utf8').split('\n')) {
    const m = /^\| `([a-z_:][a-z0-9_:]*)` \| (\w+) \|([^|]*)\| (.*) \|$/.exec(line);
    if (!m) continue;
    assert.ok(!rows.has(m[1] as string), `${m[1]} is listed twice in docs/metrics.md`);
    rows.set(m[1] as string, { type: m[2] as string, labels: (m[3] as string).trim(), help: m[4] as string });
  }
  return rows;
}

test('docs/metrics.md lists every registered metric with its type and help, and nothing else', () => {
  const doc = documented();
  const registered = registeredFamilies();
  assert.ok(registered.size >= 40, `only ${registered.size} families registered: the runtime was not built fully`);
  const missing = [...registered.keys()].filter((n) => !doc.has(n));
  assert.deepEqual(missing, [], 'registered but not in docs/metrics.md');
  for (const [name, f] of registered) {
    const row = doc.get(name) as DocRow;
    assert.equal(row.type, f.type, `${name}: type in docs/metrics.md`);
    assert.equal(row.help, f.help, `${name}: help in docs/metrics.md must be the registered help`);
  }
  const inSource = metricNamesInSource();
  const unlisted = [...inSource].filter((n) => !doc.has(n));
  assert.deepEqual(unlisted, [], 'named in src/ but not in docs/metrics.md');
  const stale = [...doc.keys()].filter((n) => !registered.has(n) && !inSource.has(n));
  assert.deepEqual(stale, [], 'in docs/metrics.md but crbridge exports no such metric');
});

test('metric names follow the Prometheus conventions', () => {
  for (const [name, f] of registeredFamilies()) {
    assert.match(name, /^[a-z][a-z0-9_]*$/, name);
    if (f.type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} must end in _total`);
    else assert.ok(!name.endsWith('_total'), `${f.type} ${name} must not end in _total`);
    if (f.type === 'histogram') assert.match(name, /_(seconds|bytes)$/, `histogram ${name} needs a base unit`);
    assert.doesNotMatch(name, /_(ms|milliseconds|kb|mb)(_|$)/, `${name}: use base units (seconds, bytes)`);
    assert.ok(f.help.length > 10 && f.help.endsWith('.'), `${name}: a help sentence`);
  }
});

test('the process metrics read the real process at scrape time', async () => {
  const m = new Metrics();
  const pm = registerProcessMetrics(m);
  try {
    const before = metricSum(m.render(), 'process_cpu_seconds_total');
    const until = Date.now() + 150;
    while (Date.now() < until) {} // burn CPU and block the loop
    await new Promise((r) => setTimeout(r, 20));
    const text = m.render();
    const rss = metricSum(text, 'process_resident_memory_bytes');
    assert.ok(rss > 10e6 && rss === Math.round(rss), `rss ${rss}`);
    assert.ok(metricSum(text, 'process_cpu_seconds_total') > before, 'CPU seconds grew');
    assert.ok(metricSum(text, 'nodejs_heap_size_used_bytes') > 1e6);
    assert.ok(metricSum(text, 'nodejs_eventloop_lag_max_seconds') >= 0.05, 'the blocked loop shows as lag');
    const start = metricSum(text, 'process_start_time_seconds');
    assert.ok(Math.abs(start - (Date.now() / 1000 - process.uptime())) < 2);
    assert.match(text, /# TYPE process_cpu_seconds_total counter/);
  } finally {
    pm.stop();
  }
});
