/**
 * Derived RBAC on the real stack: a ServiceAccount bound only to what `crbridge rbac` prints for a
 * pipeline (a namespace watch, the kubernetes checkpoint, validation.crdSchema) runs `crbridge run`
 * with its token and delivers: ready, no CRB_FORBIDDEN, a Backup reaches the file sink, the
 * checkpoint ConfigMaps are written. With one rule removed from the printed Role (the watched
 * resource's), a fresh process reports the clear error naming the verb, the resource, the namespace
 * and the grant, and /readyz says so.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseAllDocuments, stringify } from 'yaml';
import { cliPath, runArgs, startCrbridge } from '../../support/crbridge.ts';
import { fileEvents } from '../../support/events.ts';
import { writeBackupsPipeline } from '../../support/pipeline.ts';
import { kubectl, waitFor } from '../../support/stack.ts';
import { adminApi, createBackup, env, freshNamespace } from '../source/helpers.ts';

async function readyz(port: number): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: r.status, body: await r.text() };
}

const logsWith = (stderr: string, code: string) =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.code === code);

describe('crbridge rbac on the real stack', () => {
  test('bound only to the printed role it delivers; without the watch rule it names the missing permission', async () => {
    const ns = freshNamespace('it-rbacd');
    const name = `crbridge-${ns}`; // the ClusterRole (the CRD rule) is cluster-wide: unique per run
    after(() => {
      for (const kind of ['clusterrolebinding', 'clusterrole'])
        kubectl(['delete', kind, name, '--ignore-not-found', '--wait=false']);
      kubectl(['delete', 'namespace', ns, '--wait=false']);
    });
    const dir = mkdtempSync(join(tmpdir(), 'crb-rbacd-'));
    const out = join(dir, 'out.jsonl');
    const file = writeBackupsPipeline(dir, {
      name: 'rbacd',
      namespaces: [ns],
      sourceExtra: `    backoffInitialMs: 200\n    backoffMaxMs: 1000\n    checkpoint: { backend: kubernetes, namespace: ${ns}, flushIntervalMs: 100 }\n`,
      specExtra: '  validation: { crdSchema: true }\n',
      sinks: `    - name: out\n      type: file\n      path: ${out}\n`,
    });

    const printed = execFileSync(
      process.execPath,
      [cliPath, 'rbac', '-c', file, '--namespace', ns, '--service-account', 'bridge', '--name', name],
      { encoding: 'utf8' },
    );
    const docs = parseAllDocuments(printed).map((d) => d.toJS() as Record<string, any>);
    assert.deepEqual(
      docs.map((d) => `${d.kind} ${d.metadata.namespace ?? ''}`),
      ['ClusterRole ', 'ClusterRoleBinding ', `Role ${ns}`, `RoleBinding ${ns}`],
    );
    kubectl(['-n', ns, 'create', 'serviceaccount', 'bridge']);
    kubectl(['apply', '-f', '-'], { input: printed });
    const token = kubectl(['-n', ns, 'create', 'token', 'bridge', '--duration=1h']).trim();
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, readFileSync(env.KUBECONFIG_RESTRICTED, 'utf8').replace(/token: \S+/, `token: ${token}`));
    const runEnv = { ...process.env, KUBECONFIG: kubeconfig };

    // 1. exactly the printed grants: ready, nothing forbidden, a change delivered, the checkpoint written
    const proc = startCrbridge(runArgs([file], join(dir, 'state')), runEnv);
    after(() => proc.stop('SIGKILL'));
    const port = await proc.port();
    await waitFor(async () => (await readyz(port)).status === 200, 30_000, '/readyz 200 with the derived role');
    await createBackup(adminApi(), ns, 'derived');
    const events = await waitFor(
      () => (fileEvents(out).length >= 1 ? fileEvents(out) : undefined),
      30_000,
      'the Backup in the file sink',
    );
    assert.deepEqual(
      events.map((e) => (e.data as { object: { metadata: { name: string } } }).object.metadata.name),
      ['derived'],
    );
    await waitFor(
      () => kubectl(['-n', ns, 'get', 'configmaps', '-o', 'name']).includes('configmap/crbridge-checkpoint-'),
      15_000,
      'the checkpoint ConfigMaps written with the derived role',
    );
    assert.equal(await proc.stop('SIGTERM'), 0);
    assert.deepEqual(logsWith(proc.stderr(), 'CRB_FORBIDDEN'), [], proc.stderr());
    assert.doesNotMatch(proc.stderr(), /"level":"error"/, proc.stderr());

    // 2. the same Role without its watch rule: the clear error naming what is missing
    const role = docs[2] as Record<string, any>;
    const rules = (role.rules as { resources: string[] }[]).filter((r) => !r.resources.includes('backups'));
    assert.equal(rules.length, (role.rules as unknown[]).length - 1, 'the printed Role had the watch rule');
    kubectl(['apply', '-f', '-'], { input: stringify({ ...role, rules }) });
    const again = startCrbridge(runArgs([file], join(dir, 'state')), runEnv);
    after(() => again.stop('SIGKILL'));
    const port2 = await again.port();
    const refused = await waitFor(
      () => logsWith(again.stderr(), 'CRB_FORBIDDEN')[0],
      30_000,
      'the forbidden LIST reported',
    );
    assert.equal(refused.verb, 'list');
    assert.equal(refused.resource, 'backups.example.com/v1');
    assert.equal(refused.namespace, ns);
    assert.match(
      String(refused.msg),
      new RegExp(
        `^cannot list backups\\.example\\.com/v1 in namespace "${ns}": forbidden \\(.*User "system:serviceaccount:${ns}:bridge" cannot list resource "backups" in API group "example\\.com".*grant get,list,watch on backups\\.example\\.com in namespace ${ns} `,
      ),
    );
    const r = await readyz(port2);
    assert.equal(r.status, 503);
    assert.match(r.body, new RegExp(`cannot list backups\\.example\\.com/v1 in namespace "${ns}": forbidden`));
    assert.equal(await again.stop('SIGTERM'), 0);
  });
});
