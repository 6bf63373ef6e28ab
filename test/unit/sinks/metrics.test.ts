/**
 * The `metrics` sink: one crbridge_cr_status_phase series per object for its current phase (moved
 * on a phase change, removed on delete), seconds in the phase, changes by kind and change type, the
 * maxSeries guard (one warning, a metric), a custom CEL phase, and the phases surviving a restart
 * through the component's durable state store.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ComponentContext, OutboundEvent } from '../../../src/component.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { createMetricsSink, metricsSink } from '../../../src/sinks/metrics/index.ts';
import { FileStateStore, stateFilePath } from '../../../src/state/store.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { metricSum } from '../../support/prom.ts';
import { captureLogger } from '../delivery/helpers.ts';

const signal = new AbortController().signal;

function backup(name: string, change: string, phase: string | undefined, time = new Date().toISOString()): CloudEvent {
  return {
    specversion: '1.0',
    id: `${name}-${change}-${phase}`,
    source: 'test',
    type: `io.crbridge.example.com.backup.${change}`,
    subject: `ns1/${name}`,
    time,
    k8sgroup: 'example.com',
    k8skind: 'Backup',
    k8snamespace: 'ns1',
    k8sname: name,
    partitionkey: `uid-${name}`,
    data: {
      object: { metadata: { name, namespace: 'ns1' }, ...(phase !== undefined && { status: { phase } }) },
      reason: 'live',
    },
  } as unknown as CloudEvent;
}
const batch = (...events: CloudEvent[]): OutboundEvent[] =>
  events.map((event, i) => ({ event, seq: i + 1, attempts: 1 }));

function context(stateDir?: string) {
  const metrics = new Metrics();
  const { logger, lines } = captureLogger();
  const ctx: ComponentContext = {
    id: 'p/state',
    pipeline: 'p',
    logger,
    metrics,
    stateDir: stateDir ?? '/nonexistent',
    clusterName: 'c',
    ...(stateDir && { state: (name: string) => new FileStateStore(stateFilePath(stateDir, 'p/state', name)) }),
  };
  return { ctx, metrics, lines };
}

/** The phases exported for `name`: phase → value. */
function phases(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^crbridge_cr_status_phase\{([^}]*)\} (\S+)$/.exec(line);
    if (!m?.[1]?.includes(`name="${name}"`)) continue;
    const phase = /phase="([^"]*)"/.exec(m[1])?.[1] ?? '?';
    out[phase] = Number(m[2]);
  }
  return out;
}

describe('metrics sink', () => {
  test('one phase series per object, moved on change and removed on delete; changes counted by kind and type', async () => {
    const { ctx, metrics } = context();
    const sink = createMetricsSink({}, ctx);
    await sink.start(signal);
    const r = await sink.send(
      batch(
        backup('a', 'created', 'Pending'),
        backup('b', 'created', undefined),
        backup('a', 'status.changed', 'Running'),
      ),
      signal,
    );
    assert.deepEqual(
      r.map((x) => x.status),
      ['ok', 'ok', 'ok'],
    );
    let text = metrics.render();
    assert.deepEqual(phases(text, 'a'), { Running: 1 });
    assert.deepEqual(phases(text, 'b'), {}, 'no status: no phase series');
    assert.match(
      text,
      /crbridge_cr_status_phase\{component="p\/state",group="example.com",kind="Backup",name="a",namespace="ns1",phase="Running"\} 1/,
    );
    assert.equal(metricSum(text, 'crbridge_cr_changes_total', { kind: 'Backup', change: 'created' }), 2);
    assert.equal(metricSum(text, 'crbridge_cr_changes_total', { change: 'status.changed' }), 1);
    assert.equal(metricSum(text, 'crbridge_cr_tracked_objects'), 1);

    await sink.send(batch(backup('b', 'status.changed', 'Running'), backup('a', 'deleted', 'Running')), signal);
    text = metrics.render();
    assert.deepEqual(phases(text, 'a'), {}, 'deleted: series removed');
    assert.deepEqual(phases(text, 'b'), { Running: 1 });
    assert.doesNotMatch(text, /crbridge_cr_status_phase_seconds\{[^}]*name="a"/);
    assert.equal(metricSum(text, 'crbridge_cr_changes_total', { change: 'deleted' }), 1);
    await sink.shutdown(Date.now() + 1000);
  });

  test('seconds in the current phase count from the event time of the change that set it', async () => {
    const { ctx, metrics } = context();
    const sink = createMetricsSink({}, ctx);
    await sink.start(signal);
    const tenSecondsAgo = new Date(Date.now() - 10_000).toISOString();
    await sink.send(batch(backup('a', 'created', 'Running', tenSecondsAgo)), signal);
    // the same phase again (a spec change) keeps the start
    await sink.send(batch(backup('a', 'spec.changed', 'Running')), signal);
    const secs = metricSum(metrics.render(), 'crbridge_cr_status_phase_seconds', { name: 'a', phase: 'Running' });
    assert.ok(secs >= 10 && secs < 15, `seconds in phase ${secs}`);
    await sink.send(batch(backup('a', 'status.changed', 'Completed')), signal);
    const text = metrics.render();
    assert.ok(metricSum(text, 'crbridge_cr_status_phase_seconds', { name: 'a', phase: 'Completed' }) < 2);
    assert.doesNotMatch(text, /crbridge_cr_status_phase_seconds\{[^}]*phase="Running"/);
  });

  test('maxSeries bounds the tracked objects: a warning once and crbridge_cr_series_limit_reached 1', async () => {
    const { ctx, metrics, lines } = context();
    const sink = createMetricsSink({ maxSeries: 2 }, ctx);
    await sink.start(signal);
    await sink.send(
      batch(
        backup('a', 'created', 'P'),
        backup('b', 'created', 'P'),
        backup('c', 'created', 'P'),
        backup('d', 'created', 'P'),
      ),
      signal,
    );
    let text = metrics.render();
    assert.equal(metricSum(text, 'crbridge_cr_status_phase'), 2);
    assert.equal(metricSum(text, 'crbridge_cr_tracked_objects'), 2);
    assert.equal(metricSum(text, 'crbridge_cr_series_limit_reached'), 1);
    assert.equal(metricSum(text, 'crbridge_cr_untracked_changes_total'), 2);
    assert.equal(metricSum(text, 'crbridge_cr_changes_total'), 4, 'changes are counted for every object');
    const warnings = lines.filter((l) => String(l.msg).includes('maxSeries'));
    assert.equal(warnings.length, 1, 'warned once');
    // tracked objects leave: room again (d, still refused, keeps the flag up while the bound is full)
    await sink.send(batch(backup('a', 'deleted', 'P'), backup('c', 'status.changed', 'Q')), signal);
    assert.equal(metricSum(metrics.render(), 'crbridge_cr_series_limit_reached'), 1);
    await sink.send(batch(backup('b', 'deleted', 'P')), signal);
    text = metrics.render();
    assert.deepEqual(phases(text, 'c'), { Q: 1 });
    assert.equal(metricSum(text, 'crbridge_cr_series_limit_reached'), 0);
  });

  test('a custom CEL phase expression; a failing one keeps the last phase and counts an error', async () => {
    const { ctx, metrics } = context();
    const sink = createMetricsSink({ phase: 'object.status.phase == "Running" ? "Busy" : object.status.phase' }, ctx);
    await sink.start(signal);
    await sink.send(batch(backup('a', 'created', 'Running')), signal);
    assert.deepEqual(phases(metrics.render(), 'a'), { Busy: 1 });
    const failing = context();
    const bad = createMetricsSink({ phase: 'object.status.phase + ""' }, failing.ctx);
    await bad.start(signal);
    await bad.send(batch(backup('a', 'created', 'Running')), signal);
    // a number where the expression wants a string: it fails; the last phase stays
    await bad.send(batch(backup('a', 'status.changed', 5 as unknown as string)), signal);
    const text = failing.metrics.render();
    assert.deepEqual(phases(text, 'a'), { Running: 1 });
    assert.equal(metricSum(text, 'crbridge_component_errors_total', { code: 'CRB_EXPRESSION' }), 1);
    assert.deepEqual(
      metricsSink.check?.({ phase: 'object.status.phase +' }).map((p) => p.pointer),
      ['/phase'],
    );
    assert.deepEqual(metricsSink.check?.({ phase: 'object.status.phase' }), []);
  });

  test('the phases survive a restart through the durable state store (unchanged objects are not emitted again)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crb-metrics-sink-'));
    const first = context(dir);
    const a = createMetricsSink({}, first.ctx);
    await a.start(signal);
    await a.send(batch(backup('a', 'created', 'Running'), backup('b', 'created', 'Failed')), signal);
    await a.shutdown(Date.now() + 1000);

    const second = context(dir);
    const b = createMetricsSink({}, second.ctx);
    await b.start(signal);
    let text = second.metrics.render();
    assert.deepEqual(phases(text, 'a'), { Running: 1 });
    assert.deepEqual(phases(text, 'b'), { Failed: 1 });
    // deleted while down: the restart's delete event removes it (and from the store)
    await b.send(batch(backup('b', 'deleted', 'Failed')), signal);
    const third = context(dir);
    const c = createMetricsSink({}, third.ctx);
    await c.start(signal);
    text = third.metrics.render();
    assert.deepEqual(phases(text, 'a'), { Running: 1 });
    assert.deepEqual(phases(text, 'b'), {});
  });
});
