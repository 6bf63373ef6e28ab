/** OpenAPI v3 structural schema → JSON Schema conversion for level-3 validation. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CRD_COLLECTION,
  crdFromApi,
  createCrdSchemaValidator,
  openApiToJsonSchema,
} from '../../../src/events/crd-schema.ts';
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
});

describe('crdFromApi', () => {
  /** A fake API server holding one CRD; each watch is recorded and can be ended or fed events. */
  function fakeApi(initial: unknown) {
    let crd = initial;
    const gets: string[] = [];
    const watches: {
      path: string;
      query: Record<string, unknown>;
      onEvent: (type: string, object: unknown) => void;
      onDone: (err: unknown) => void;
      aborted: boolean;
    }[] = [];
    return {
      gets,
      watches,
      set(next: unknown) {
        crd = next;
      },
      api: {
        async request(_method: 'GET', path: string) {
          gets.push(path);
          return crd;
        },
        async watch(
          path: string,
          query: Record<string, string | number | boolean | undefined>,
          onEvent: (type: string, object: unknown) => void,
          onDone: (err: unknown) => void,
        ) {
          const w = { path, query, onEvent, onDone, aborted: false };
          watches.push(w);
          return {
            abort() {
              w.aborted = true;
            },
          };
        },
      },
    };
  }
  const schema = (max: number) => ({
    type: 'object',
    properties: { spec: { type: 'object', properties: { n: { type: 'integer', maximum: max } } } },
  });
  const widget = (n: number) =>
    ({
      apiVersion: 'example.com/v1',
      kind: 'Widget',
      metadata: { name: 'w', uid: 'u', resourceVersion: '1' },
      spec: { n },
    }) as KubeObject;
  const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

  it('fetches the CRD by name and watches it by field selector; a MODIFIED event recompiles', async () => {
    const f = fakeApi(crdWith(schema(10), '1'));
    const loads: (string | undefined)[] = [];
    const v = createCrdSchemaValidator({
      ...crdFromApi(f.api, 'widgets.example.com'),
      onLoad: (i) => loads.push(i.resourceVersion),
    });
    assert.equal(v.validate(widget(50)), undefined, 'nothing compiled yet: not checked');
    await v.start();
    assert.deepEqual(f.gets, [`${CRD_COLLECTION}/widgets.example.com`]);
    assert.equal(f.watches.length, 1);
    assert.equal(f.watches[0]?.path, CRD_COLLECTION);
    assert.equal(f.watches[0]?.query.fieldSelector, 'metadata.name=widgets.example.com');
    assert.deepEqual(v.validate(widget(5)), []);
    assert.deepEqual(v.validate(widget(50)), ['/spec/n must be <= 10']);

    f.set(crdWith(schema(100), '2'));
    f.watches[0]?.onEvent('MODIFIED', {});
    await tick(5);
    assert.deepEqual(v.validate(widget(50)), [], 'recompiled with the new schema');
    assert.equal(v.resourceVersion, '2');
    assert.deepEqual(loads, ['1', '2']);
    v.stop();
    assert.equal(f.watches[0]?.aborted, true);
  });

  it('reopens a watch that ended (at once when clean, after a delay on error) and catches up', async () => {
    const f = fakeApi(crdWith(schema(10), '1'));
    const errors: string[] = [];
    const v = createCrdSchemaValidator(
      crdFromApi(f.api, 'widgets.example.com', { retryInitialMs: 20, onError: (e) => errors.push(String(e)) }),
    );
    await v.start();
    f.watches[0]?.onDone(null);
    await tick(80);
    assert.equal(f.watches.length, 2, 'a clean close reopens');
    f.watches[1]?.onDone(new Error('connection reset'));
    await tick(5);
    assert.equal(f.watches.length, 2, 'an error waits before reopening');
    await tick(60);
    assert.equal(f.watches.length, 3);
    assert.match(errors[0] ?? '', /CRD watch: connection reset/);
    // the reopened watch first reports the current state: a change missed meanwhile is caught up
    f.set(crdWith(schema(100), '7'));
    f.watches[2]?.onEvent('ADDED', {});
    await tick(5);
    assert.equal(v.resourceVersion, '7');
    v.stop();
    f.watches[2]?.onDone(null);
    await tick(80);
    assert.equal(f.watches.length, 3, 'no reopen after stop');
  });

  it('a failed fetch keeps the last schema and is reported; a later change loads', async () => {
    const f = fakeApi(crdWith(schema(10), '1'));
    const errors: string[] = [];
    const v = createCrdSchemaValidator({
      ...crdFromApi(f.api, 'widgets.example.com'),
      onError: (e) => errors.push(String(e)),
    });
    await v.start();
    f.set({ metadata: { resourceVersion: '2' }, spec: {} });
    f.watches[0]?.onEvent('MODIFIED', {});
    await tick(5);
    assert.match(errors[0] ?? '', /CRD schema: CRD has no spec.versions/);
    assert.deepEqual(v.validate(widget(50)), ['/spec/n must be <= 10'], 'the previous schema stays');
    v.stop();
  });
});
