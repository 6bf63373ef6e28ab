/** RFC 6902 diff: unit cases and the property apply(diff(a, b), a) == b. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { applyPatch, diff, escapeToken, jsonEqual, parsePath, parsePointer } from '../../../src/events/patch.ts';

describe('diff', () => {
  it('is empty for equal documents, including distinct references', () => {
    assert.deepEqual(diff({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }), []);
    const o = { a: 1 };
    assert.deepEqual(diff(o, o), []);
  });

  it('emits remove, replace and add for object keys, recursively', () => {
    const ops = diff({ a: 1, b: { c: 2, d: 3 }, x: true }, { a: 1, b: { c: 5, e: 6 }, y: null });
    assert.deepEqual(ops, [
      { op: 'remove', path: '/x' },
      { op: 'remove', path: '/b/d' },
      { op: 'replace', path: '/b/c', value: 5 },
      { op: 'add', path: '/b/e', value: 6 },
      { op: 'add', path: '/y', value: null },
    ]);
  });

  it('diffs arrays element-wise, removing trailing elements from the end and adding in order', () => {
    assert.deepEqual(diff([1, 2, 3, 4], [1, 9]), [
      { op: 'replace', path: '/1', value: 9 },
      { op: 'remove', path: '/3' },
      { op: 'remove', path: '/2' },
    ]);
    assert.deepEqual(diff(['a'], ['a', 'b', 'c']), [
      { op: 'add', path: '/1', value: 'b' },
      { op: 'add', path: '/2', value: 'c' },
    ]);
  });

  it('replaces on a change of type (object ↔ array ↔ primitive)', () => {
    assert.deepEqual(diff({ a: [1] }, { a: { 0: 1 } }), [{ op: 'replace', path: '/a', value: { 0: 1 } }]);
    assert.deepEqual(diff({ a: null }, { a: {} }), [{ op: 'replace', path: '/a', value: {} }]);
  });

  it('escapes ~ and / in keys per RFC 6901', () => {
    assert.deepEqual(diff({}, { 'a/b~c': 1 }), [{ op: 'add', path: '/a~1b~0c', value: 1 }]);
    assert.equal(escapeToken('~/'), '~0~1');
    assert.deepEqual(parsePointer('/a~1b~0c/~01'), ['a/b~c', '~1']);
    assert.deepEqual(parsePath('status.phase'), ['status', 'phase']);
    assert.deepEqual(parsePath('/status/phase'), ['status', 'phase']);
    assert.throws(() => parsePointer('status'));
  });

  it('handles a __proto__ key as data', () => {
    const a = JSON.parse('{"__proto__": {"x": 1}}');
    const b = JSON.parse('{"__proto__": {"x": 2}}');
    const ops = diff(a, b);
    assert.deepEqual(ops, [{ op: 'replace', path: '/__proto__/x', value: 2 }]);
    assert.ok(jsonEqual(applyPatch(a, ops), b));
  });

  it('property: applying diff(a, b) to a gives b, and a is not modified', () => {
    const json = fc.jsonValue({ maxDepth: 4 });
    fc.assert(
      fc.property(json, json, (a, b) => {
        const before = JSON.stringify(a);
        const ops = diff(a, b);
        assert.ok(jsonEqual(applyPatch(a, ops), b));
        assert.equal(JSON.stringify(a), before);
        if (jsonEqual(a, b)) assert.equal(ops.length, 0);
      }),
      { numRuns: 500 },
    );
  });

  it('property: small edits of a shared document give small patches', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 3 })), fc.string(), fc.integer(), (doc, k, v) => {
        const next = { ...doc, [k]: v };
        const ops = diff(doc, next);
        assert.ok(ops.length <= 1);
        assert.ok(jsonEqual(applyPatch(doc, ops), next));
      }),
      { numRuns: 300 },
    );
  });
});
