/**
 * Every metric family crbridge registers: a runtime built (not started) from one pipeline using
 * every component of the registry (every sink, an outbox, a dead-letter sink, both stages), the ops
 * server's process metrics, plus every metric name written as a literal in `src/` (families a
 * component registers only when something happens). For the tests that keep docs/metrics.md and
 * the Grafana dashboard true.
 */
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { currentSchema } from '../../../src/cli-schema.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { allFactories, registry } from '../../../src/registry.ts';
import { Runtime } from '../../../src/runtime/runtime.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { type FamilyInfo, Metrics } from '../../../src/telemetry/metrics.ts';
import { registerProcessMetrics } from '../../../src/telemetry/process.ts';
import { repoRoot } from '../../support/stack.ts';

const PIPELINE = `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: all
spec:
  source:
    group: example.com
    version: v1
    resource: backups
  stages:
    - type: filter
      expression: 'true'
    - type: enrich
      attributes:
        phase: 'object.?status.?phase.orValue("")'
  deadLetter:
    sink:
      type: file
      path: DIR/dead.jsonl
  sinks:
    - name: kafka
      type: kafka
      brokers: ["127.0.0.1:1"]
      topic: t
      delivery:
        outbox:
          enabled: true
    - name: webhook
      type: webhook
      url: http://127.0.0.1:1/hook
    - name: file
      type: file
      path: DIR/out.jsonl
    - name: stdout
      type: stdout
    - name: state
      type: metrics
`;

/** The families a runtime with every component registers, with help and type, by name. */
export function registeredFamilies(): Map<string, FamilyInfo> {
  const dir = mkdtempSync(join(tmpdir(), 'crb-all-metrics-'));
  const file = join(dir, 'all.yaml');
  writeFileSync(file, PIPELINE.replaceAll('DIR', dir));
  const loaded = loadPipelines([file], createPipelineValidator(currentSchema(), allFactories()));
  const metrics = new Metrics();
  new Runtime(loaded, registry, {
    stateDir: dir,
    clusterName: 'unit',
    logger: createLogger({ level: 'error', write: () => {} }),
    metrics,
  });
  registerProcessMetrics(metrics).stop();
  return new Map(metrics.list().map((f) => [f.name, f]));
}

/** Every metric name written as a string literal in src/ (but `src/top`, which only reads them). */
export function metricNamesInSource(): Set<string> {
  const names = new Set<string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) {
        if (p !== join(repoRoot, 'src', 'top')) walk(p);
      } else if (p.endsWith('.ts'))
        for (const m of readFileSync(p, 'utf8').matchAll(/'((?:crbridge|process|nodejs)_[a-z0-9_]+)'/g))
          names.add(m[1] as string);
    }
  };
  walk(join(repoRoot, 'src'));
  return names;
}
