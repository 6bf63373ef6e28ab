/**
 * Route and dedupe on the real stack: one `crbridge run` pipeline sends every change of a Backup
 * to the REAL Kafka, routes the Failed ones to a file sink too, and drops heartbeat-only updates
 * (`status.lastHeartbeatTime`) with dedupe; a transform stamps a templated summary. Backups change
 * in the REAL apiserver. Then crbridge stops and restarts: the checkpoint went past the dropped
 * heartbeats and past the events the file sink was not given, so the restart hands on exactly
 * what changed while it was down (a Backup that failed) and nothing for the others.
 * `crbridge validate` reports a bad template placeholder at its file, line and column.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runArgs, startCrbridge, validateOffline } from '../../support/crbridge.ts';
import { fileEvents, readTopic } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { create, metric, patch, withBackupNamespace } from '../events/helpers.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const RES = 'backups.example.com';
const ns = `rd-${suffix}`;
const topic = `route-dedupe-${suffix}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-route-dedupe-'));
const failures = join(dir, 'failures.jsonl');
const P = 'alerts';

const STAGES = `  stages:
    - type: dedupe
      name: heartbeats
      ignore: [status.lastHeartbeatTime]
    - type: transform
      name: summary
      set:
        /summary: "Backup {{ object.metadata.name }} is {{ object.?status.?phase.orValue(\\"new\\") }}"
    - type: route
      name: by-phase
      routes:
        - when: object.?status.?phase.orValue("") == "Failed"
          sinks: [events, failures]
      default: [events]
`;

function createBackup(name: string): void {
  create({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: { name, namespace: ns },
    spec: { databaseName: name, schedule: '0 2 * * *' },
  });
}
const status = (name: string, s: Record<string, unknown>) => patch(RES, ns, name, { status: s }, true);
const beat = (name: string, second: number) =>
  status(name, { lastHeartbeatTime: `2026-12-01T10:00:${String(second).padStart(2, '0')}Z` });

/** [name, phase in the summary] of each event, sorted by name then resourceVersion. */
function summaries(events: Record<string, unknown>[]): [string, string][] {
  return events
    .map((e) => e.data as { object: { metadata: { name: string; resourceVersion: string } }; summary: string })
    .sort(
      (a, b) =>
        a.object.metadata.name.localeCompare(b.object.metadata.name) ||
        Number(a.object.metadata.resourceVersion) - Number(b.object.metadata.resourceVersion),
    )
    .map((d) => [d.object.metadata.name, d.summary]);
}

withBackupNamespace(ns);

test('every change to Kafka, Failed ones to the file too, heartbeats dropped; a restart emits only what changed', async (t) => {
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: P,
      namespaces: [ns],
      sourceExtra: '    checkpoint:\n      flushIntervalMs: 50\n',
      specExtra: STAGES,
      sinks: `    - name: events
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
    - name: failures
      type: file
      path: ${failures}
`,
    }),
  );
  const args = runArgs([file], join(dir, 'state'), ['--cluster-name', 'it']);
  const first = startCrbridge(args, { ...process.env, ...env });
  t.after(() => first.stop('SIGKILL'));
  let port = await first.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  createBackup('nightly'); // created
  status('nightly', { phase: 'Running' }); // Running
  beat('nightly', 1); // heartbeat only: dropped
  beat('nightly', 2); // heartbeat only: dropped
  status('nightly', { phase: 'Failed', lastHeartbeatTime: '2026-12-01T10:00:03Z' }); // Failed: both sinks
  createBackup('weekly'); // created
  status('weekly', { phase: 'Running' }); // Running
  beat('weekly', 4); // heartbeat only: dropped, and the last change of weekly before the restart

  const kafka = await readTopic(env.KAFKA_BROKERS, topic, 5);
  assert.deepEqual(summaries(kafka.map((k) => k.event as unknown as Record<string, unknown>)), [
    ['nightly', 'Backup nightly is new'],
    ['nightly', 'Backup nightly is Running'],
    ['nightly', 'Backup nightly is Failed'],
    ['weekly', 'Backup weekly is new'],
    ['weekly', 'Backup weekly is Running'],
  ]);
  const filed = await eventually(
    () => (fileEvents(failures).length >= 1 ? fileEvents(failures) : undefined),
    10_000,
    'the file sink',
  );
  assert.deepEqual(summaries(filed), [['nightly', 'Backup nightly is Failed']]);
  // the Kafka record of the Failed change is the very event the file got (same id)
  const failedOnKafka = kafka.find((k) => (k.event.data as { summary: string }).summary.endsWith('Failed'));
  assert.equal(failedOnKafka?.event.id, filed[0]?.id);

  const m = (c: string, name: string) => metric(port, name, { component: `${P}/${c}` });
  assert.equal(await m('heartbeats', 'crbridge_component_received_events_total'), 8);
  assert.equal(await m('heartbeats', 'crbridge_component_dropped_events_total'), 3);
  assert.equal(await m('by-phase', 'crbridge_component_received_events_total'), 5);
  assert.equal(await m('events', 'crbridge_component_sent_events_total'), 5);
  assert.equal(await m('failures', 'crbridge_component_sent_events_total'), 1);

  assert.equal(await first.stop('SIGTERM'), 0);
  // while crbridge is down: a heartbeat of nightly (dropped after the restart), weekly fails
  beat('nightly', 5);
  status('weekly', { phase: 'Failed' });

  const second = startCrbridge(args, { ...process.env, ...env });
  t.after(() => second.stop('SIGKILL'));
  port = await second.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  const after = await readTopic(env.KAFKA_BROKERS, topic, 6);
  assert.equal(after.length, 6, 'exactly one more record: the change made while down');
  const resumed = after.find((k) => !kafka.some((b) => b.event.id === k.event.id));
  const resumedData = resumed?.event.data as { summary?: string; reason?: string } | undefined;
  assert.equal(resumedData?.summary, 'Backup weekly is Failed');
  assert.equal(resumedData?.reason, 'resync');
  await eventually(() => fileEvents(failures).length >= 2, 10_000, 'the file sink after the restart');
  assert.deepEqual(summaries(fileEvents(failures)), [
    ['nightly', 'Backup nightly is Failed'],
    ['weekly', 'Backup weekly is Failed'],
  ]);
  // the source handed on the two objects that changed while down, and nothing for the others
  assert.equal(await m('heartbeats', 'crbridge_component_received_events_total'), 2);
  assert.equal(await m('heartbeats', 'crbridge_component_dropped_events_total'), 1);
  assert.equal(await second.stop('SIGTERM'), 0);
});

test('crbridge validate names the file, line and column of a bad template placeholder and an unknown route sink', () => {
  const file = join(dir, 'broken.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'broken',
      namespaces: [ns],
      specExtra: `  stages:
    - type: transform
      set:
        /summary: 'Backup {{ object.metadata.name }} is {{ object.status.phase + }}'
    - type: route
      routes:
        - when: change == "deleted"
          sinks: [out, alerts]
`,
      sinks: '    - name: out\n      type: stdout\n',
    }),
  );
  const { code, out } = validateOffline([file]);
  assert.notEqual(code, 0);
  const lines = readFileSync(file, 'utf8').split('\n');
  const line = lines.findIndex((l) => l.includes('phase + }}')) + 1;
  // the expression ends early: the error is where it ends, just after the +
  const column = (lines[line - 1]?.indexOf('phase +') ?? 0) + 'phase +'.length + 1;
  assert.match(
    out,
    new RegExp(
      `${file.replaceAll('/', '\\/')}:${line}:${column}: /spec/stages/0/set/~1summary: in placeholder \\{\\{ object\\.status\\.phase \\+ \\}\\}: CEL syntax error`,
    ),
  );
  assert.match(
    out,
    new RegExp(
      `${file.replaceAll('/', '\\/')}:${line + 4}:\\d+: /spec/stages/1/routes/0/sinks/1: no sink of this pipeline is named "alerts"`,
    ),
  );
});
