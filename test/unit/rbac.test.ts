/**
 * Derived RBAC: the permissions the kubernetes source declares for its config, how `src/rbac.ts`
 * merges them with the process's (Lease, state ConfigMaps) into a ClusterRole and per-namespace
 * Roles, and the `crbridge rbac` command (YAML with bindings, JSON rules, usage errors).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { currentSchema } from '../../src/cli-schema.ts';
import { loadPipelines } from '../../src/config/load.ts';
import { createPipelineValidator } from '../../src/config/validate.ts';
import { mergeRoles, type PolicyRule, pipelinePermissions, processPermissions } from '../../src/rbac.ts';
import { allFactories, registry } from '../../src/registry.ts';
import { repoRoot } from '../support/stack.ts';

/** A pipeline's reference to the pod's namespace (the downward API's POD_NAMESPACE). */
const POD_NS = '$' + '{env:POD_NAMESPACE}';
const dir = mkdtempSync(join(tmpdir(), 'crb-rbac-unit-'));
let n = 0;

/** A pipeline file with `source` (YAML lines under `source:`) and `extra` spec lines. */
function pipeline(source: string, extra = ''): string {
  const file = join(dir, `p${n++}.yaml`);
  writeFileSync(
    file,
    `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata: { name: p${n} }
spec:
  source:
    group: example.com
    version: v1
    resource: backups
${source}  stages:
    - type: enrich
      attributes: { team: 'object.metadata.name' }
  sinks: [{ name: out, type: stdout }]
${extra}`,
  );
  return file;
}

function rolesOf(files: string[], env: Record<string, string> = {}) {
  const loaded = loadPipelines(files, createPipelineValidator(currentSchema(), allFactories()), { env });
  return pipelinePermissions(loaded, registry);
}

const rules = (r: ReturnType<typeof mergeRoles>[number] | undefined): PolicyRule[] =>
  (r?.rules ?? []).map((x) => x.rule);

describe('derived RBAC', () => {
  test('all namespaces, file checkpoint: one ClusterRole with get/list/watch on exactly the watched resource', () => {
    const roles = mergeRoles(rolesOf([pipeline('')]));
    assert.deepEqual(
      roles.map((r) => r.namespace),
      [null],
    );
    assert.deepEqual(rules(roles[0]), [
      { apiGroups: ['example.com'], resources: ['backups'], verbs: ['get', 'list', 'watch'] },
    ]);
  });

  test('listed namespaces, kubernetes checkpoint, crdSchema: a Role per namespace, the CRD by name, the checkpoint ConfigMaps', () => {
    const file = pipeline(
      `    namespaces: [team-b, team-a]\n    checkpoint: { backend: kubernetes, namespace: "${POD_NS}" }\n`,
      '  validation: { crdSchema: true }\n',
    );
    const roles = mergeRoles(rolesOf([file], { POD_NAMESPACE: 'ops' }));
    assert.deepEqual(
      roles.map((r) => r.namespace),
      [null, 'ops', 'team-a', 'team-b'],
    );
    assert.deepEqual(rules(roles[0]), [
      {
        apiGroups: ['apiextensions.k8s.io'],
        resources: ['customresourcedefinitions'],
        resourceNames: ['backups.example.com'],
        verbs: ['get', 'list', 'watch'],
      },
    ]);
    assert.deepEqual(rules(roles[1]), [
      { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'update'] },
    ]);
    for (const r of roles.slice(2))
      assert.deepEqual(rules(r), [
        { apiGroups: ['example.com'], resources: ['backups'], verbs: ['get', 'list', 'watch'] },
      ]);
  });

  test('two pipelines sharing a watch give one rule; Lease by name and state ConfigMaps merge into the namespace Role', () => {
    const a = pipeline('    checkpoint: { backend: kubernetes, namespace: ops }\n');
    const b = pipeline('    checkpoint: { backend: kubernetes, namespace: ops }\n');
    const roles = mergeRoles([
      ...rolesOf([a, b]),
      ...processPermissions({ leaderElection: { namespace: 'ops', id: 'crb' }, state: { namespace: 'ops' } }),
    ]);
    assert.deepEqual(rules(roles[0]), [
      { apiGroups: ['example.com'], resources: ['backups'], verbs: ['get', 'list', 'watch'] },
    ]);
    assert.equal(roles[1]?.namespace, 'ops');
    assert.deepEqual(rules(roles[1]), [
      { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'update'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['crb'], verbs: ['get', 'update'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
    ]);
    assert.match(roles[1]?.rules[0]?.reason ?? '', /checkpoint ConfigMaps crbridge-checkpoint-\*.*; component state/);
  });

  test('crbridge rbac prints applyable YAML bound to the ServiceAccount; $POD_NAMESPACE defaults to --namespace', () => {
    const file = pipeline(
      `    namespaces: [team-a]\n    checkpoint: { backend: kubernetes, namespace: "${POD_NS}" }\n`,
    );
    const env = { ...process.env };
    delete env.POD_NAMESPACE;
    const r = spawnSync(
      process.execPath,
      ['src/cli.ts', 'rbac', '-c', file, '--namespace', 'ops', '--service-account', 'bridge', '--name', 'crb'],
      { cwd: repoRoot, encoding: 'utf8', env },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^ {2}# watch backups\.example\.com\n {2}- apiGroups:/m);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as Record<string, any>);
    assert.deepEqual(
      docs.map((d) => `${d.kind} ${d.metadata.namespace ?? '-'}/${d.metadata.name}`),
      ['Role ops/crb', 'RoleBinding ops/crb', 'Role team-a/crb', 'RoleBinding team-a/crb'],
    );
    assert.deepEqual(docs[0]?.rules, [
      { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'update'] },
    ]);
    assert.deepEqual(docs[3]?.subjects, [{ kind: 'ServiceAccount', name: 'bridge', namespace: 'ops' }]);
    assert.deepEqual(docs[3]?.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'crb' });
  });

  test('crbridge rbac refuses a wrong --state-backend and a missing -c with exit 2 and what to do', () => {
    const file = pipeline('');
    const bad = spawnSync(process.execPath, ['src/cli.ts', 'rbac', '-c', file, '--state-backend', 'etcd'], {
      cwd: repoRoot,
      encoding: 'utf8',
    });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--state-backend must be file or kubernetes, got "etcd"/);
    const none = spawnSync(process.execPath, ['src/cli.ts', 'rbac'], { cwd: repoRoot, encoding: 'utf8' });
    assert.equal(none.status, 2);
    assert.match(none.stderr, /rbac needs at least one -c <pipeline\.yaml>/);
  });
});
