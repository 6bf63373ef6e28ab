/**
 * Level-3 validation on the real stack (`spec.validation.crdSchema: true`): crbridge reads the CRD's
 * openAPIV3Schema from the API server and watches it. A Backup stored under a looser schema stays
 * stored when the CRD is tightened, and the API server still accepts updates that leave the invalid
 * field alone (CRD validation ratcheting): those events fail level 3 and go to the dead-letter file
 * with their errors, are counted and logged once per kind, while valid objects flow. Relaxing the
 * CRD again is picked up (recompiled) and the object's events flow again. The credentials come only
 * from `--kubeconfig`, handed down by the CLI. `crbridge validate` of the same file opens no
 * connection.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type RunningCrbridge, runArgs, startCrbridge } from '../../support/crbridge.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, kubectl, loadStackEnv, repoRoot } from '../../support/stack.ts';
import { create, fileEvents, logs, metric, patch, publishedSchemas } from './helpers.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
// a CRD of its own (the Backup fixture in another group), so tightening it disturbs no other test
const GROUP = `l3-${suffix}.example.com`;
const CRD = `backups.${GROUP}`;
const RETENTION = '/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/retentionDays';

function crdYaml(): string {
  return readFileSync(join(repoRoot, 'test/fixtures/crds/backup.yaml'), 'utf8')
    .replace('name: backups.example.com', `name: ${CRD}`)
    .replace('group: example.com', `group: ${GROUP}`);
}

/** JSON-patches the CRD and returns its new resourceVersion. */
function patchCrd(ops: unknown[]): string {
  return kubectl([
    'patch',
    'crd',
    CRD,
    '--type=json',
    '-p',
    JSON.stringify(ops),
    '-o',
    'jsonpath={.metadata.resourceVersion}',
  ]).trim();
}

function backup(ns: string, name: string, retentionDays: number) {
  return {
    apiVersion: `${GROUP}/v1`,
    kind: 'Backup',
    metadata: { name, namespace: ns },
    spec: { databaseName: name, retentionDays },
  };
}

describe('level-3 validation against the CRD schema', () => {
  const dir = mkdtempSync(join(tmpdir(), 'crb-l3-'));
  const ns = `l3-${suffix}`;
  const file = join(dir, 'events.jsonl');
  const deadFile = join(dir, 'dead.jsonl');
  const pipeline = join(dir, 'l3.yaml');
  writeFileSync(
    pipeline,
    backupsPipelineYaml({
      name: 'l3',
      group: GROUP,
      namespaces: [ns],
      specExtra: `  validation:\n    crdSchema: true\n  deadLetter:\n    path: ${deadFile}\n`,
      sinks: `    - name: audit\n      type: file\n      path: ${file}\n`,
    }),
  );
  let proc: RunningCrbridge | undefined;
  after(async () => {
    await proc?.stop('SIGKILL');
    try {
      kubectl(['delete', 'crd', CRD, '--wait=false']);
    } catch {}
  });

  test('`crbridge validate` of a pipeline with crdSchema opens no connection', async () => {
    const v = startCrbridge(['validate', '-c', pipeline], {
      ...process.env,
      KUBECONFIG: join(dir, 'no-such-kubeconfig'),
      KUBERNETES_SERVICE_HOST: '',
    });
    assert.equal(await v.exited, 0, v.stderr());
    assert.match(v.stdout(), /pipeline "l3" is valid/);
  });

  test('objects that break the CRD schema are dead-lettered with the errors; valid ones flow; CRD changes recompile', async () => {
    kubectl(['apply', '-f', '-'], { input: crdYaml() });
    kubectl(['wait', '--for=condition=Established', '--timeout=60s', `crd/${CRD}`]);
    kubectl(['create', 'namespace', ns]);
    const res = `backups.${GROUP}`;
    // credentials only through --kubeconfig: the source and the CRD reflector share the CLI's one client
    proc = startCrbridge(runArgs([pipeline], join(dir, 'state'), ['--kubeconfig', env.KUBECONFIG]), {
      ...process.env,
      ...env,
      KUBECONFIG: join(dir, 'no-such-kubeconfig'),
      KUBERNETES_SERVICE_HOST: '',
    });
    const p = proc;
    const port = await p.port();
    await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');
    const compiled = (rv: string) =>
      eventually(
        () =>
          logs(p).find(
            (l) => l.msg === 'CRD schema compiled for level-3 validation' && l.crd === CRD && l.resourceVersion === rv,
          ),
        30_000,
        `the CRD schema at resourceVersion ${rv} compiled`,
      );
    const rv0 = kubectl(['get', 'crd', CRD, '-o', 'jsonpath={.metadata.resourceVersion}']).trim();
    await compiled(rv0);
    const inFile = (what: string, pred: (e: Record<string, unknown>) => boolean) =>
      eventually(() => fileEvents(file).find(pred), 30_000, what);
    const named = (name: string, type: string) => (e: Record<string, unknown>) =>
      e.k8sname === name && String(e.type).endsWith(type);

    // both valid under the first schema (no maximum)
    create(backup(ns, 'good', 7));
    create(backup(ns, 'legacy', 400));
    await inFile('good created', named('good', '.created'));
    await inFile('legacy created', named('legacy', '.created'));

    // tighten: retentionDays at most 365. legacy stays stored; new objects over it are refused
    const rv1 = patchCrd([{ op: 'add', path: `${RETENTION}/maximum`, value: 365 }]);
    await compiled(rv1);
    assert.throws(() => create(backup(ns, 'refused', 400)), /less than or equal to 365/);
    // the API server still accepts status updates of legacy (ratcheting: spec untouched)
    const legacyRunning = patch(res, ns, 'legacy', { status: { phase: 'Running' } }, true);
    patch(res, ns, 'good', { status: { phase: 'Running' } }, true);
    create(backup(ns, 'fresh', 30));
    const legacyDone = patch(res, ns, 'legacy', { status: { phase: 'Completed' } }, true);
    await inFile('good running', named('good', '.status.changed'));
    await inFile('fresh created', named('fresh', '.created'));

    const dead = await eventually(
      () => {
        const d = fileEvents(deadFile);
        return d.length >= 2 ? d : undefined;
      },
      30_000,
      'two dead letters',
    );
    const legacyUid = legacyRunning.metadata.uid;
    assert.deepEqual(
      dead.map((d) => [(d.event as { id: string }).id, d.component, d.code, d.errors, d.attempts]),
      [
        [
          `${legacyUid}.${legacyRunning.metadata.resourceVersion}`,
          'l3',
          'CRB_EVENT_INVALID',
          ['object: /data/object/spec/retentionDays must be <= 365'],
          0,
        ],
        [
          `${legacyUid}.${legacyDone.metadata.resourceVersion}`,
          'l3',
          'CRB_EVENT_INVALID',
          ['object: /data/object/spec/retentionDays must be <= 365'],
          0,
        ],
      ],
    );
    // the dead-lettered events are complete events (they pass levels 1 and 2: only level 3 failed)
    const check = publishedSchemas();
    for (const d of dead) assert.deepEqual(check(d.event as Record<string, unknown>), []);
    assert.ok(
      !fileEvents(file).some((e) => e.k8sname === 'legacy' && String(e.type).endsWith('.status.changed')),
      'no invalid event reached the sink',
    );
    assert.equal(await metric(port, 'crbridge_events_invalid_total', { component: 'l3', level: 'object' }), 2);
    assert.equal(
      await metric(port, 'crbridge_component_errors_total', { component: 'l3', code: 'CRB_EVENT_INVALID' }),
      2,
    );
    // counted once the dead-letter write has returned, which can be a moment after the line is in the file
    await eventually(
      async () => (await metric(port, 'crbridge_component_dead_lettered_events_total', { component: 'l3' })) === 2,
      10_000,
      'two dead letters counted',
    );
    assert.equal(await metric(port, 'crbridge_component_dead_lettered_events_total', { component: 'l3' }), 2);
    const warned = logs(p).filter((l) => l.msg === 'event failed validation; dead-lettered');
    assert.equal(warned.length, 1, 'logged once for this kind of error');
    assert.equal(warned[0]?.level, 'warn');
    assert.equal(warned[0]?.validationLevel, 'object');
    assert.equal(warned[0]?.kind, '/data/object/spec/retentionDays must be <= 365');

    // relax the CRD again: recompiled, and legacy's next change flows
    const rv2 = patchCrd([{ op: 'replace', path: `${RETENTION}/maximum`, value: 1000 }]);
    await compiled(rv2);
    const legacyFailed = patch(res, ns, 'legacy', { status: { phase: 'Failed', message: 'disk full' } }, true);
    const flowed = await inFile(
      'legacy failed',
      (e) => e.id === `${legacyUid}.${legacyFailed.metadata.resourceVersion}`,
    );
    assert.deepEqual(check(flowed), []);
    assert.equal(fileEvents(deadFile).length, 2, 'nothing more dead-lettered');
    assert.deepEqual(
      fileEvents(file).map((e) => [
        e.k8sname,
        String(e.type).replace(/^io\.crbridge\.[^.]+\.example\.com\.backup\./, ''),
      ]),
      [
        ['good', 'created'],
        ['legacy', 'created'],
        ['good', 'status.changed'],
        ['fresh', 'created'],
        ['legacy', 'status.changed'],
      ],
    );
    assert.equal(await p.stop('SIGTERM'), 0, p.stderr().slice(-2000));
  });
});
