/**
 * Filter and enrich stages on the real stack: `crbridge run` with a pipeline that keeps only
 * failed or deleted Backups and tags each event with its team (from a label) and a derived value.
 * Backups change in the REAL apiserver; the events are read back from the REAL Kafka (binary mode:
 * the enrich attributes arrive as `ce_` headers), the dropped ones never arrive and are counted on
 * /metrics, and an object the expression fails on is kept in the dead-letter file, not lost.
 * `crbridge validate` reports a broken expression with file:line and pointer, touching no network.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runArgs, startCrbridge, validateOffline } from '../../support/crbridge.ts';
import { readTopic } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, kubectl, loadStackEnv } from '../../support/stack.ts';
import { create, metric, patch, withBackupNamespace } from '../events/helpers.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const RES = 'backups.example.com';
const ns = `st-${suffix}`;
const topic = `stages-${suffix}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-stages-'));
const deadLetters = join(dir, 'dead.jsonl');

const STAGES = `  stages:
    - type: filter
      name: failed-or-deleted
      expression: change == "deleted" || (has(object.status) && has(object.status.phase) && object.status.phase == "Failed")
    - type: enrich
      name: tag
      attributes:
        team: object.metadata.labels["team"]
        retention: object.spec.retentionDays * 2
        severity: 'change == "deleted" ? "info" : "page"'
  deadLetter:
    path: ${deadLetters}
`;

/** Creates a Backup; with `phase`, then sets its status (a subresource: create ignores status). */
function createBackup(name: string, labels: Record<string, string>, phase?: string): void {
  create({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: { name, namespace: ns, labels },
    spec: { databaseName: name, schedule: '0 2 * * *', retentionDays: 7 },
  });
  if (phase) patch(RES, ns, name, { status: { phase } }, true);
}

withBackupNamespace(ns);

test('only failed or deleted Backups reach Kafka, tagged by enrich; a failing expression dead-letters', async (t) => {
  const file = join(dir, 'stages.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'stages',
      namespaces: [ns],
      specExtra: STAGES,
      sinks: `    - name: events\n      type: kafka\n      brokers: ["${env.KAFKA_BROKERS}"]\n      topic: ${topic}\n`,
    }),
  );
  const proc = startCrbridge(runArgs([file], join(dir, 'state'), ['--cluster-name', 'it']), { ...process.env, ...env });
  t.after(() => proc.stop('SIGKILL'));
  const port = await proc.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  createBackup('orders', { team: 'payments' }); // created, no status: dropped
  createBackup('users', { team: 'identity' }, 'Running'); // created, then Running: both dropped
  patch(RES, ns, 'orders', { status: { phase: 'Failed' } }, true); // Failed: kept
  patch(RES, ns, 'users', { spec: { schedule: '0 4 * * *' } }); // still Running: dropped
  // created: dropped; Failed: kept by the filter, but enrich fails on the missing label
  createBackup('nolabel', { app: 'x' }, 'Failed');
  kubectl(['-n', ns, 'delete', RES, 'users']); // deleted: kept

  const seen = (await readTopic(env.KAFKA_BROKERS, topic, 2)).sort((a, b) =>
    String(a.event.subject).localeCompare(String(b.event.subject)),
  );
  assert.deepEqual(
    seen.map((s) => [s.event.subject, String(s.event.type).split('.').slice(-2).join('.')]),
    [
      [`${ns}/orders`, 'status.changed'],
      [`${ns}/users`, 'backup.deleted'],
    ],
  );
  const [failed, deleted] = seen;
  assert.equal(failed?.headers.ce_team, 'payments');
  assert.equal(failed?.headers.ce_severity, 'page');
  assert.equal(failed?.headers.ce_retention, '14');
  assert.equal(deleted?.headers.ce_team, 'identity');
  assert.equal(deleted?.headers.ce_severity, 'info');
  assert.equal(failed?.event.k8sname, 'orders', "crbridge's own attributes stay");

  const dead = await eventually(
    () =>
      readFileSync(deadLetters, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
    20_000,
    'a dead letter',
  );
  assert.equal(dead.length, 1);
  assert.equal(dead[0].code, 'CRB_EXPRESSION');
  assert.equal(dead[0].event.data.object.metadata.name, 'nolabel');
  assert.match(
    dead[0].errors[0],
    /stage stages\/tag: CEL expression "object\.metadata\.labels\[\\"team\\"\]" failed: No such key: team/,
  );

  const component = (c: string, name: string) => metric(port, name, { component: `stages/${c}` });
  assert.equal(await component('failed-or-deleted', 'crbridge_component_received_events_total'), 8);
  assert.equal(await component('failed-or-deleted', 'crbridge_component_dropped_events_total'), 5);
  assert.equal(await component('tag', 'crbridge_component_received_events_total'), 3);
  assert.equal(await component('tag', 'crbridge_component_sent_events_total'), 2);
  assert.equal(
    await metric(port, 'crbridge_component_errors_total', { component: 'stages/tag', code: 'CRB_EXPRESSION' }),
    1,
  );
});

test('crbridge validate names the file, line and pointer of a broken expression, with no stack needed', () => {
  const file = join(dir, 'broken.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'broken',
      namespaces: [ns],
      specExtra: '  stages:\n    - type: filter\n      expression: object.status.phase = "Failed"\n',
      sinks: '    - name: out\n      type: stdout\n',
    }),
  );
  const { code, out } = validateOffline([file]);
  assert.notEqual(code, 0);
  assert.match(out, new RegExp(`${file.replaceAll('/', '\\/')}:13:19: /spec/stages/0/expression: CEL syntax error`));
});
