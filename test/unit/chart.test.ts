/**
 * The Helm chart's generated files are current: `values.schema.json` (the chart values with the
 * pipeline JSON Schema inside) and `files/rbac.json` (what `crbridge rbac` derives for the default
 * pipelines) equal what `scripts/chart.ts` makes from the code now; the default values pass the
 * schema and a wrong pipeline in them does not, naming where.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { IMAGE_NODE_FLAGS } from '../../bench/lib/crbridge.ts';
import { chartDir, generatedFiles, LEASE_ID, RELEASE_NAMESPACE, variantKey } from '../../scripts/chart.ts';

test('values.schema.json and files/rbac.json are up to date (node scripts/chart.ts regenerates them)', () => {
  for (const [rel, text] of Object.entries(generatedFiles()))
    assert.equal(readFileSync(join(chartDir, rel), 'utf8'), text, `${rel} is stale: run node scripts/chart.ts`);
});

test('the default values pass values.schema.json; a wrong pipeline field fails it at its path', () => {
  const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8'));
  const validate = new Ajv2020({ allErrors: true, strict: false }).compile(schema);
  const values = parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) as {
    pipelines: { 'backups-to-stdout.yaml': { spec: { sinks: [{ type: string }] } } };
  };
  assert.ok(validate(values), JSON.stringify(validate.errors));
  values.pipelines['backups-to-stdout.yaml'].spec.sinks[0].type = 'carrier-pigeon';
  assert.equal(validate(values), false);
  assert.ok(
    validate.errors?.some((e) => e.instancePath === '/pipelines/backups-to-stdout.yaml/spec/sinks/0/type'),
    JSON.stringify(validate.errors),
  );
});

test('files/rbac.json: the Lease only with leader election, the state ConfigMaps only with the kubernetes state backend', () => {
  const rbac = JSON.parse(readFileSync(join(chartDir, 'files/rbac.json'), 'utf8'));
  const rulesIn = (key: string, ns: string) =>
    JSON.stringify(rbac.variants[key].find((r: { namespace: string | null }) => r.namespace === ns)?.rules ?? []);
  assert.match(rulesIn(variantKey(true, 'kubernetes'), RELEASE_NAMESPACE), new RegExp(`"leases".*"${LEASE_ID}"`));
  assert.doesNotMatch(rulesIn(variantKey(false, 'kubernetes'), RELEASE_NAMESPACE), /leases/);
  assert.match(
    rulesIn(variantKey(false, 'kubernetes'), RELEASE_NAMESPACE),
    /component state ConfigMaps crbridge-state-/,
  );
  // file state: the checkpoint ConfigMaps remain (the default pipeline's checkpoint is kubernetes), not the state ones
  assert.doesNotMatch(rulesIn(variantKey(false, 'file'), RELEASE_NAMESPACE), /crbridge-state-|"list"|"delete"/);
  assert.match(rulesIn(variantKey(false, 'file'), RELEASE_NAMESPACE), /"configmaps"/);
});

test('the image and the chart agree: numeric non-root user, its state directory, the same Node flags', () => {
  const dockerfile = readFileSync(join(chartDir, '..', '..', 'Dockerfile'), 'utf8');
  const final = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const values = parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) as {
    podSecurityContext: { runAsUser: number; runAsGroup: number };
  };
  const user = /^USER (\d+):(\d+)$/m.exec(final);
  assert.ok(user, 'the final stage runs as a numeric USER uid:gid (runAsNonRoot can only check a number)');
  assert.notEqual(user[1], '0');
  assert.deepEqual(
    [Number(user[1]), Number(user[2])],
    [values.podSecurityContext.runAsUser, values.podSecurityContext.runAsGroup],
  );
  assert.match(final, new RegExp(`mkdir -p /var/lib/crbridge.*chown ${user[1]}:${user[2]} /var/lib/crbridge`));
  assert.ok(final.indexOf('chown') < final.indexOf('\nUSER '), 'the directory is made before dropping root');
  const entry = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(final)?.[1] ?? '[]') as string[];
  assert.deepEqual(entry.slice(1, -1), [...IMAGE_NODE_FLAGS]);
  const deployment = readFileSync(join(chartDir, 'templates', 'deployment.yaml'), 'utf8');
  assert.match(deployment, /- --state-dir=\/var\/lib\/crbridge\n/);
  assert.match(deployment, /mountPath: \/var\/lib\/crbridge \}/);
});
