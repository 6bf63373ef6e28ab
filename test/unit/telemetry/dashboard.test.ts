/**
 * The Grafana dashboard (helm/crbridge/dashboards/crbridge.json) queries only what crbridge
 * exports: every metric a PromQL expression names is a family registered by a runtime with every
 * component (or the `_bucket`/`_sum`/`_count` series of a registered histogram), every panel has a
 * query, and the chart ships it as a ConfigMap only with dashboard.enabled (rendered with the real
 * helm when the stack's binaries are built).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../support/stack.ts';
import { registeredFamilies } from './all-metrics.ts';

const dashboardPath = join(repoRoot, 'helm', 'crbridge', 'dashboards', 'crbridge.json');

interface Panel {
  title: string;
  type: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

function queries(): { panel: string; expr: string }[] {
  const d = JSON.parse(readFileSync(dashboardPath, 'utf8')) as {
    panels: Panel[];
    templating: { list: { name: string; query?: unknown; definition?: string }[] };
  };
  const out: { panel: string; expr: string }[] = [];
  const walk = (ps: Panel[]) => {
    for (const p of ps) {
      if (p.type === 'row') {
        walk(p.panels ?? []);
        continue;
      }
      assert.ok((p.targets ?? []).length > 0, `panel "${p.title}" has no query`);
      for (const t of p.targets ?? []) out.push({ panel: p.title, expr: t.expr });
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) {
    const q = typeof v.query === 'object' && v.query !== null ? (v.query as { query?: string }).query : undefined;
    if (q) out.push({ panel: `variable ${v.name}`, expr: q });
  }
  return out;
}

/** The metric names an expression uses: identifiers outside `{...}`, not PromQL words or label names after by/on. */
export function metricNames(expr: string): string[] {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const noMatchers = noStrings.replace(/\{[^}]*\}/g, '{}').replace(/\[[^\]]*\]/g, '[]');
  const noGroupings = noMatchers.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const names: string[] = [];
  for (const m of noGroupings.matchAll(/[a-zA-Z_:][\w:]*(?=\s*(\{|\[|\)|$|\s|,|>|<|=|\+|-|\*|\/))/g)) {
    const id = m[0];
    if (/^(crbridge|process|nodejs)_/.test(id)) names.push(id);
  }
  return names;
}

test('every dashboard query names only metrics crbridge exports', () => {
  const families = registeredFamilies();
  const exported = (name: string) => {
    if (families.has(name)) return true;
    const base = name.replace(/_(bucket|sum|count)$/, '');
    return base !== name && families.get(base)?.type === 'histogram';
  };
  const qs = queries();
  assert.ok(qs.length >= 30, `${qs.length} queries`);
  const used = new Set<string>();
  for (const { panel, expr } of qs) {
    const names = metricNames(expr);
    assert.ok(names.length > 0, `panel "${panel}": no crbridge metric in ${expr}`);
    for (const n of names) {
      assert.ok(exported(n), `panel "${panel}" queries ${n}, which crbridge does not export`);
      used.add(n.replace(/_(bucket|sum|count)$/, ''));
    }
  }
  // the headline series are on the dashboard
  for (const n of [
    'crbridge_component_delivery_latency_seconds',
    'crbridge_cr_status_phase',
    'process_resident_memory_bytes',
    'crbridge_component_queue_depth',
  ])
    assert.ok(used.has(n), `${n} is on the dashboard`);
});

test('the metric-name extraction sees through selectors, groupings and functions', () => {
  assert.deepEqual(
    metricNames(
      'histogram_quantile(0.99, sum by (component, le) (rate(crbridge_x_bucket{job=~"a|b", component!~".*/.*"}[5m]))) and on (component) crbridge_y',
    ),
    ['crbridge_x_bucket', 'crbridge_y'],
  );
  assert.deepEqual(metricNames('time() - process_start_time_seconds{job="x"}'), ['process_start_time_seconds']);
});

const helm = join(homedir(), '.cache', 'crbridge', 'helm-v3.22.0', 'bin', 'helm');

test('the chart ships the dashboard as a ConfigMap only when dashboard.enabled', {
  skip: !existsSync(helm) && 'helm not built',
}, () => {
  const chart = join(repoRoot, 'helm', 'crbridge');
  const off = execFileSync(helm, ['template', 'r', chart], { encoding: 'utf8' });
  assert.doesNotMatch(off, /grafana_dashboard/);
  const on = execFileSync(
    helm,
    ['template', 'r', chart, '--set', 'dashboard.enabled=true', '--show-only', 'templates/dashboard-configmap.yaml'],
    { encoding: 'utf8' },
  );
  assert.match(on, /kind: ConfigMap/);
  assert.match(on, /grafana_dashboard: "1"/);
  const body = on.slice(on.indexOf('crbridge.json: |-') + 'crbridge.json: |-'.length);
  const json = body
    .split('\n')
    .filter((l) => l.startsWith('    ') || l === '')
    .map((l) => l.slice(4))
    .join('\n');
  assert.deepEqual(
    JSON.parse(json),
    JSON.parse(readFileSync(dashboardPath, 'utf8')),
    'the ConfigMap holds the dashboard file',
  );
});
