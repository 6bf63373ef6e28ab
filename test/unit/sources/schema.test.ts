/**
 * The `kubernetes` source's config schema: compiles in Ajv strict mode, every property is
 * described, unknown fields are refused, and the defaults it fills in are the ones the source's
 * code applies.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { type KubernetesSourceConfig, kubernetesSource } from '../../../src/sources/kubernetes/index.ts';

function walk(schema: Record<string, unknown>, path: string, out: string[]): void {
  const props = schema.properties as Record<string, Record<string, unknown>> | undefined;
  if (!props) return;
  if (schema.additionalProperties !== false) out.push(`${path}: additionalProperties is not false`);
  for (const [k, v] of Object.entries(props)) {
    if (typeof v.description !== 'string' || v.description.length < 5) out.push(`${path}/${k}: no description`);
    walk(v, `${path}/${k}`, out);
  }
}

test('config schema: strict, described, closed', () => {
  const problems: string[] = [];
  walk(kubernetesSource.configSchema, '', problems);
  assert.deepEqual(problems, []);
  const ajv = new Ajv2020({ strict: true, allErrors: true, useDefaults: true });
  const validate = ajv.compile(kubernetesSource.configSchema);
  assert.equal(validate({ version: 'v1', resource: 'backups', bogus: 1 }), false);
  assert.equal(validate({ version: 'v1', resource: 'backups', initial: 'maybe' }), false);
  assert.equal(validate({ version: 'v1' }), false);
});

test('the defaults the schema fills in are the ones the source applies to a block that omits them', () => {
  const ajv = new Ajv2020({ strict: true, allErrors: true, useDefaults: true });
  const validate = ajv.compile(kubernetesSource.configSchema);
  const bare: KubernetesSourceConfig = { group: 'example.com', version: 'v1', resource: 'backups' };
  const filled: KubernetesSourceConfig = { ...bare, checkpoint: {} };
  assert.equal(validate(filled), true, JSON.stringify(validate.errors));
  assert.notDeepEqual(filled, { ...bare, checkpoint: {} }, 'the schema filled defaults in');
  // the source's code path (`??` defaults) and the schema's defaults give the same watch and checkpoint
  const settings = kubernetesSource.sharedSettings;
  assert.ok(settings);
  assert.deepEqual(settings(filled), settings(bare));
});
