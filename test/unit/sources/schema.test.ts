/**
 * The `kubernetes` source's config schema: compiles in Ajv strict mode, every property is
 * described, unknown fields are refused, and defaults fill in.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { kubernetesSource } from '../../../src/sources/kubernetes/index.ts';

function walk(schema: Record<string, unknown>, path: string, out: string[]): void {
  const props = schema.properties as Record<string, Record<string, unknown>> | undefined;
  if (!props) return;
  if (schema.additionalProperties !== false) out.push(`${path}: additionalProperties is not false`);
  for (const [k, v] of Object.entries(props)) {
    if (typeof v.description !== 'string' || v.description.length < 5) out.push(`${path}/${k}: no description`);
    walk(v, `${path}/${k}`, out);
  }
}

test('config schema: strict, described, closed, with defaults', () => {
  const problems: string[] = [];
  walk(kubernetesSource.configSchema, '', problems);
  assert.deepEqual(problems, []);
  const ajv = new Ajv2020({ strict: true, allErrors: true, useDefaults: true });
  const validate = ajv.compile(kubernetesSource.configSchema);
  const c: Record<string, unknown> = { group: 'example.com', version: 'v1', resource: 'backups', checkpoint: {} };
  assert.equal(validate(c), true, JSON.stringify(validate.errors));
  assert.equal(c.initial, 'emit');
  assert.deepEqual(c.dropFields, ['/metadata/managedFields']);
  assert.equal((c.checkpoint as Record<string, unknown>).backend, 'file');
  assert.equal(validate({ version: 'v1', resource: 'backups', bogus: 1 }), false);
  assert.equal(validate({ version: 'v1', resource: 'backups', initial: 'maybe' }), false);
  assert.equal(validate({ version: 'v1' }), false);
  assert.equal(kubernetesSource.kind, 'source');
  assert.equal(kubernetesSource.type, 'kubernetes');
});
