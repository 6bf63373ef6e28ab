/**
 * The Helm chart on the real stack: `helm lint` and `helm template` with several value sets, the
 * rendered manifests accepted by the real kube-apiserver (`kubectl apply --dry-run=server`), the
 * chart's RBAC equal to what `crbridge rbac` prints for the same pipelines and flags, and wrong
 * values refused with a message naming the value and what to do.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { cliPath } from '../../support/crbridge.ts';
import { kubectl, loadStackEnv, repoRoot } from '../../support/stack.ts';

type Manifest = Record<string, any>;
const env = loadStackEnv();
const chart = join(repoRoot, 'helm', 'crbridge');
const helmBin = join(env.CRBRIDGE_STACK_BIN, 'helm');
const dir = mkdtempSync(join(tmpdir(), 'crb-chart-'));
const ns = `it-chart-${Date.now().toString(36)}`;
const release = 'rel';
const full = 'rel-crbridge';
/** `${env:NAME}`: a pipeline's reference to an environment variable. */
const envRef = (name: string) => `\${env:${name}}`;

function helm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(helmBin, args, {
    encoding: 'utf8',
    env: { ...process.env, HELM_CACHE_HOME: join(dir, 'cache') },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let n = 0;
/** `helm template` with `values` (written to a file), then the files `moreValues`; the manifests, or throws with helm's stderr. */
function template(values: Record<string, unknown> = {}, moreValues: string[] = []): Manifest[] {
  const file = join(dir, `values-${n++}.yaml`);
  writeFileSync(file, stringify(values));
  const r = helm(['template', release, chart, '-n', ns, '-f', file, ...moreValues.flatMap((f) => ['-f', f])]);
  assert.equal(r.status, 0, r.stderr);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as Manifest)
    .filter(Boolean);
}

/** The stderr of a `helm template` that must fail. */
function refused(values: Record<string, unknown>): string {
  const file = join(dir, `bad-${n++}.yaml`);
  writeFileSync(file, stringify(values));
  const r = helm(['template', release, chart, '-n', ns, '-f', file]);
  assert.notEqual(r.status, 0, `helm template should refuse ${JSON.stringify(values)}`);
  return r.stderr;
}

const byKind = (ms: Manifest[], kind: string) => ms.filter((m) => m.kind === kind);
const one = (ms: Manifest[], kind: string) => {
  const found = byKind(ms, kind);
  assert.equal(found.length, 1, `one ${kind}`);
  return found[0] as Manifest;
};

/** The RBAC objects without labels, sorted: what must be equal between the chart and `crbridge rbac`. */
function rbacOf(ms: Manifest[]): Manifest[] {
  return ms
    .filter((m) => /^(Cluster)?Role(Binding)?$/.test(m.kind))
    .map(({ metadata: { labels: _l, ...metadata }, ...rest }) => ({ ...rest, metadata }))
    .sort((a, b) => {
      const k = (m: Manifest) => `${m.kind}/${m.metadata.namespace ?? ''}`;
      return k(a) < k(b) ? -1 : 1;
    });
}

/** `crbridge rbac` for the chart's default pipelines (written as files), as the chart would run it. */
function crbridgeRbac(flags: string[]): Manifest[] {
  const values = parse(readFileSync(join(chart, 'values.yaml'), 'utf8')) as { pipelines: Record<string, unknown> };
  const files = Object.entries(values.pipelines).map(([name, doc]) => {
    const f = join(dir, name);
    writeFileSync(f, stringify(doc));
    return f;
  });
  const out = execFileSync(
    process.execPath,
    [
      cliPath,
      'rbac',
      ...files.flatMap((f) => ['-c', f]),
      '--namespace',
      ns,
      '--name',
      full,
      '--service-account',
      full,
      ...flags,
    ],
    { encoding: 'utf8', env: { ...process.env, POD_NAMESPACE: ns } },
  );
  return parseAllDocuments(out).map((d) => d.toJS() as Manifest);
}

/** `kubectl apply --dry-run=server` of the manifests: the real apiserver validates and admits them. */
function serverDryRun(ms: Manifest[]): string {
  return kubectl(['apply', '--dry-run=server', '-n', ns, '-f', '-'], {
    input: ms.map((m) => `---\n${stringify(m)}`).join(''),
  });
}

describe('the Helm chart', () => {
  before(() => kubectl(['create', 'namespace', ns]));
  after(() => kubectl(['delete', 'namespace', ns, '--wait=false']));

  test('helm lint passes, with the defaults and with the file backend', () => {
    const lint = helm(['lint', chart, '--strict']);
    assert.equal(lint.status, 0, lint.stdout + lint.stderr);
    const file = join(dir, 'lint-file.yaml');
    writeFileSync(file, stringify({ replicaCount: 1, state: { backend: 'file' } }));
    const lintFile = helm(['lint', chart, '--strict', '-f', file]);
    assert.equal(lintFile.status, 0, lintFile.stdout + lintFile.stderr);
  });

  test('defaults: 2 replicas with election, kubernetes state, hardened pod, PDB; the RBAC equals crbridge rbac; the server accepts it', () => {
    const ms = template();
    const dep = one(ms, 'Deployment');
    assert.equal(dep.spec.replicas, 2);
    const c = dep.spec.template.spec.containers[0];
    for (const arg of [
      '--leader-elect',
      `--leader-election-namespace=${ns}`,
      `--leader-election-id=${full}`,
      '--state-backend=kubernetes',
      `--state-namespace=${ns}`,
      '--config=/etc/crbridge/pipelines/backups-to-stdout.yaml',
    ])
      assert.ok(c.args.includes(arg), `${arg} in ${c.args}`);
    assert.deepEqual(
      c.env.slice(0, 2).map((e: Manifest) => [e.name, e.valueFrom.fieldRef.fieldPath]),
      [
        ['POD_NAME', 'metadata.name'],
        ['POD_NAMESPACE', 'metadata.namespace'],
      ],
    );
    assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'http' });
    assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'http' });
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(dep.spec.template.spec.securityContext.runAsNonRoot, true);
    assert.equal(dep.spec.template.spec.securityContext.runAsUser, 1000);
    assert.equal(dep.spec.template.spec.securityContext.seccompProfile.type, 'RuntimeDefault');
    assert.ok(c.resources.requests.memory && c.resources.limits.memory);
    assert.equal(one(ms, 'PodDisruptionBudget').spec.maxUnavailable, 1);
    assert.deepEqual(byKind(ms, 'PersistentVolumeClaim'), [], 'no volume with the kubernetes backends');
    assert.deepEqual(byKind(ms, 'ServiceMonitor'), []);
    const state = dep.spec.template.spec.volumes.find((v: Manifest) => v.name === 'state');
    assert.deepEqual(state.emptyDir, {});

    const expected = rbacOf(
      crbridgeRbac(['--leader-elect', '--leader-election-id', full, '--state-backend', 'kubernetes']),
    );
    assert.deepEqual(rbacOf(ms), expected);
    assert.ok(expected.some((m) => m.kind === 'Role' && JSON.stringify(m.rules).includes('"leases"')));

    const applied = serverDryRun(ms);
    assert.match(applied, new RegExp(`deployment.apps/${full} created \\(server dry run\\)`));
    assert.match(applied, new RegExp(`role.rbac.authorization.k8s.io/${full} created \\(server dry run\\)`));
  });

  test('file backend: one replica on a PersistentVolumeClaim, Recreate, no Lease or state rules; the server accepts it', () => {
    const ms = template({ replicaCount: 1, leaderElection: { enabled: false }, state: { backend: 'file' } });
    const dep = one(ms, 'Deployment');
    assert.equal(dep.spec.replicas, 1);
    assert.equal(dep.spec.strategy.type, 'Recreate');
    const pvc = one(ms, 'PersistentVolumeClaim');
    assert.equal(pvc.metadata.name, `${full}-state`);
    const state = dep.spec.template.spec.volumes.find((v: Manifest) => v.name === 'state');
    assert.deepEqual(state.persistentVolumeClaim, { claimName: `${full}-state` });
    const args: string[] = dep.spec.template.spec.containers[0].args;
    assert.ok(args.includes('--state-backend=file'));
    assert.ok(!args.some((a) => a.startsWith('--leader-elect')));
    assert.deepEqual(rbacOf(ms), rbacOf(crbridgeRbac([])));
    assert.doesNotMatch(JSON.stringify(rbacOf(ms)), /leases/);
    assert.match(serverDryRun(ms), /persistentvolumeclaim\/rel-crbridge-state created \(server dry run\)/);
  });

  test('other pipelines with the values file of crbridge rbac --output helm-values, secret env and a ServiceMonitor', () => {
    const pipeline = {
      apiVersion: 'crbridge.io/v1alpha1',
      kind: 'Pipeline',
      metadata: { name: 'orders' },
      spec: {
        source: {
          group: 'example.com',
          version: 'v1',
          resource: 'backups',
          namespaces: [ns],
          checkpoint: { backend: 'kubernetes', namespace: envRef('POD_NAMESPACE') },
        },
        sinks: [
          {
            name: 'hook',
            type: 'webhook',
            url: 'https://hooks.example.com/in',
            signing: { secrets: [envRef('WEBHOOK_SECRET')] },
          },
        ],
      },
    };
    const file = join(dir, 'orders.yaml');
    writeFileSync(file, stringify(pipeline));
    const rbacArgs = (output: string) => [
      cliPath,
      'rbac',
      '-c',
      file,
      '--namespace',
      ns,
      '--name',
      full,
      '--service-account',
      full,
      '--leader-elect',
      '--leader-election-id',
      full,
      '--state-backend',
      'kubernetes',
      '--output',
      output,
    ];
    const rbacEnv = { ...process.env, WEBHOOK_SECRET: 'whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=' };
    const rbacValues = join(dir, 'rbac-values.yaml');
    writeFileSync(
      rbacValues,
      execFileSync(process.execPath, rbacArgs('helm-values'), { encoding: 'utf8', env: rbacEnv }),
    );
    const printed = execFileSync(process.execPath, rbacArgs('yaml'), { encoding: 'utf8', env: rbacEnv });
    const values = {
      pipelines: { 'backups-to-stdout.yaml': null, 'orders.yaml': pipeline },
      secretEnv: [{ name: 'WEBHOOK_SECRET', secretName: 'hook-credentials', key: 'secret' }],
      serviceMonitor: { enabled: true },
    };
    const ms = template(values, [rbacValues]);
    assert.deepEqual(rbacOf(ms), rbacOf(parseAllDocuments(printed).map((d) => d.toJS() as Manifest)));
    const roles = byKind(ms, 'Role');
    assert.deepEqual(roles.map((r) => r.metadata.namespace).sort(), [ns]);
    assert.deepEqual(byKind(ms, 'ClusterRole'), [], 'a namespace watch needs no ClusterRole');
    const rules = JSON.stringify(roles[0]?.rules);
    assert.match(rules, /"example\.com".*"backups"/);
    assert.match(rules, /"leases"/);
    const c = one(ms, 'Deployment').spec.template.spec.containers[0];
    assert.deepEqual(
      c.env.find((e: Manifest) => e.name === 'WEBHOOK_SECRET'),
      { name: 'WEBHOOK_SECRET', valueFrom: { secretKeyRef: { name: 'hook-credentials', key: 'secret' } } },
    );
    const cm = one(ms, 'ConfigMap');
    assert.deepEqual(Object.keys(cm.data), ['orders.yaml']);
    assert.ok(cm.data['orders.yaml'].includes(envRef('WEBHOOK_SECRET')), 'the secret stays a reference');
    const sm = one(ms, 'ServiceMonitor');
    assert.deepEqual(sm.spec.endpoints, [{ port: 'http', path: '/metrics', interval: '30s' }]);
    // the apiserver here has no ServiceMonitor CRD: the rest must be accepted
    serverDryRun(ms.filter((m) => m.kind !== 'ServiceMonitor'));
  });

  test('wrong values fail with a message naming the value and what to do', () => {
    assert.match(refused({ replicaCount: 0 }), /at '\/replicaCount': minimum: got 0, want 1/);
    assert.match(
      refused({ state: { backend: 'etcd' } }),
      /at '\/state\/backend': value must be one of 'kubernetes', 'file'/,
    );
    assert.match(
      refused({ pipelines: { 'backups-to-stdout.yaml': { spec: { sinks: [{ name: 'console', type: 'pigeon' }] } } } }),
      /at '\/pipelines\/backups-to-stdout\.yaml\/spec\/sinks\/0\/type': value must be one of 'kafka', 'file', 'stdout', 'webhook'/,
    );
    assert.match(refused({ imagee: {} }), /additional properties 'imagee' not allowed/);
    assert.match(
      refused({ state: { backend: 'file' } }),
      /replicaCount is 2, but a file backend is used .*set replicaCount: 1, or use the kubernetes backends/,
    );
    assert.match(
      refused({ pipelines: { 'backups-to-stdout.yaml': { spec: { source: { namespaces: ['x'] } } } } }),
      /pipelines differ from the chart's defaults.*pass -f with the values file printed by `crbridge rbac .*--output helm-values`, which sets rbac\.roles/,
    );
  });
});
