/** OpenAPI v3 structural schema → JSON Schema conversion for level-3 validation. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createCrdSchemaValidator, openApiToJsonSchema } from '../../../src/events/crd-schema.ts';
import type { KubeObject } from '../../../src/events/delta.ts';

function crdWith(schema: unknown, rv = '1') {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: 'widgets.example.com', resourceVersion: rv },
    spec: { versions: [{ name: 'v1', schema: { openAPIV3Schema: schema } }] },
  };
}

function check(schema: unknown, spec: unknown): string[] | undefined {
  const v = createCrdSchemaValidator({ fetchCrd: async () => undefined });
  v.load(crdWith({ type: 'object', properties: { spec: schema } }));
  return v.validate({
    apiVersion: 'example.com/v1',
    kind: 'Widget',
    metadata: { name: 'w', uid: 'u', resourceVersion: '1' },
    spec,
  } as KubeObject);
}

describe('openApiToJsonSchema', () => {
  it('nullable adds null to the type and enum', () => {
    const s = { type: 'string', enum: ['a'], nullable: true };
    assert.deepEqual(check(s, null), []);
    assert.deepEqual(check(s, 'a'), []);
    assert.equal(check(s, 'b')?.length, 1);
    assert.equal(check({ type: 'string' }, null)?.length, 1);
  });

  it('x-kubernetes-int-or-string accepts integers and strings only', () => {
    const s = { 'x-kubernetes-int-or-string': true };
    assert.deepEqual(check(s, 3), []);
    assert.deepEqual(check(s, '50%'), []);
    assert.ok((check(s, 1.5)?.length ?? 0) > 0);
    assert.ok((check(s, true)?.length ?? 0) > 0);
  });

  it('unknown fields: rejected by default, allowed with preserve-unknown-fields or additionalProperties', () => {
    const props = { a: { type: 'string' } };
    assert.deepEqual(check({ type: 'object', properties: props }, { a: 'x', b: 1 }), [
      '/spec must NOT have additional properties: b',
    ]);
    assert.deepEqual(
      check({ type: 'object', properties: props, 'x-kubernetes-preserve-unknown-fields': true }, { a: 'x', b: 1 }),
      [],
    );
    assert.deepEqual(check({ type: 'object', additionalProperties: { type: 'integer' } }, { x: 1 }), []);
    assert.equal(check({ type: 'object', additionalProperties: { type: 'integer' } }, { x: 'no' })?.length, 1);
  });

  it('embedded resources allow apiVersion, kind and metadata', () => {
    const s = {
      type: 'object',
      properties: { template: { type: 'object', 'x-kubernetes-embedded-resource': true, properties: { spec: {} } } },
    };
    assert.deepEqual(check(s, { template: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: {} } }), []);
  });

  it('OpenAPI 3.0 boolean exclusiveMinimum/Maximum become draft-07 numbers', () => {
    const s = { type: 'integer', minimum: 0, exclusiveMinimum: true, maximum: 10, exclusiveMaximum: true };
    assert.deepEqual(check(s, 5), []);
    assert.equal(check(s, 0)?.length, 1);
    assert.equal(check(s, 10)?.length, 1);
  });

  it('Kubernetes formats int32/int64/byte are checked; unknown formats ignored', () => {
    assert.equal(check({ type: 'integer', format: 'int32' }, 2 ** 31)?.length, 1);
    assert.deepEqual(check({ type: 'integer', format: 'int64' }, 2 ** 40), []);
    assert.deepEqual(check({ type: 'string', format: 'byte' }, 'aGVsbG8='), []);
    assert.equal(check({ type: 'string', format: 'byte' }, 'not base64!')?.length, 1);
    assert.deepEqual(check({ type: 'string', format: 'k8s-short-name' }, 'anything'), []);
  });

  it('list-type set means unique items; RE2-only patterns and CEL rules are skipped and listed', () => {
    assert.equal(
      check({ type: 'array', items: { type: 'string' }, 'x-kubernetes-list-type': 'set' }, ['a', 'a'])?.length,
      1,
    );
    const skipped: string[] = [];
    const out = openApiToJsonSchema(
      {
        type: 'object',
        properties: {
          name: { type: 'string', pattern: '(?i)^abc$' },
          n: { type: 'integer', 'x-kubernetes-validations': [{ rule: 'self > 0' }] },
        },
      },
      skipped,
    );
    assert.deepEqual(skipped, [
      '/name: pattern "(?i)^abc$" (not a JavaScript regular expression)',
      '/n: x-kubernetes-validations (CEL)',
    ]);
    assert.deepEqual((out.properties as Record<string, unknown>).name, { type: 'string' });
  });

  it('the root allows apiVersion, kind and metadata and keeps metadata constraints', () => {
    const v = createCrdSchemaValidator({ fetchCrd: async () => undefined });
    v.load(
      crdWith({
        type: 'object',
        properties: { metadata: { type: 'object', properties: { name: { type: 'string', maxLength: 3 } } } },
      }),
    );
    const obj = (name: string) =>
      ({ apiVersion: 'example.com/v1', kind: 'W', metadata: { name, uid: 'u', resourceVersion: '1' } }) as KubeObject;
    assert.deepEqual(v.validate(obj('abc')), []);
    assert.deepEqual(v.validate(obj('abcd')), ['/metadata/name must NOT have more than 3 characters']);
    assert.equal(v.validate({ ...obj('a'), apiVersion: 'example.com/v2' }), undefined, 'unknown version: not checked');
  });

  it('does not recompile for the same resourceVersion, does for a new one', () => {
    const v = createCrdSchemaValidator({ fetchCrd: async () => undefined });
    v.load(crdWith({ type: 'object', properties: { spec: { type: 'string' } } }, '5'));
    v.load(crdWith({ type: 'object', properties: { spec: { type: 'integer' } } }, '5'));
    const o = { apiVersion: 'example.com/v1', metadata: { name: 'a', uid: 'u', resourceVersion: '1' }, spec: 's' };
    assert.deepEqual(v.validate(o as KubeObject), []);
    v.load(crdWith({ type: 'object', properties: { spec: { type: 'integer' } } }, '6'));
    assert.deepEqual(v.validate(o as KubeObject), ['/spec must be integer']);
    assert.throws(() => v.load({ spec: {} }), /no spec.versions/);
  });

  it('a change signalled while a fetch is under way gets one more fetch after it (never missed)', async () => {
    // the CRD moves to rv 2 after the first fetch read rv 1 but before it was loaded
    let crd: unknown = crdWith({ type: 'object', properties: { spec: { type: 'string' } } }, '1');
    let release: () => void = () => {};
    let fetches = 0;
    const v = createCrdSchemaValidator({
      fetchCrd: async () => {
        fetches++;
        const seen = crd;
        if (fetches === 1) await new Promise<void>((r) => (release = r));
        return seen;
      },
    });
    const first = v.refresh();
    await new Promise((r) => setTimeout(r, 5));
    crd = crdWith({ type: 'object', properties: { spec: { type: 'integer' } } }, '2');
    const second = v.refresh(); // told of the change mid-fetch
    const third = v.refresh();
    assert.equal(second, third, 'calls during one fetch share the one follow-up');
    release();
    await first;
    await second;
    assert.equal(fetches, 2);
    assert.equal(v.resourceVersion, '2', 'the change was loaded');
    const o = { apiVersion: 'example.com/v1', metadata: { name: 'a', uid: 'u', resourceVersion: '1' }, spec: 's' };
    assert.deepEqual(v.validate(o as KubeObject), ['/spec must be integer']);
  });
});
