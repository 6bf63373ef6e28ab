/**
 * The diff of a fresh LIST against the cache (relist) and against the checkpoint (resume), with
 * example-based tests and fast-check properties over random sequences of changes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { KubeObject } from '../../../src/events/delta.ts';
import { applyChange, changeFromWatch, diffList } from '../../../src/sources/kubernetes/diff.ts';
import { parsePointers, stripFields } from '../../../src/sources/kubernetes/strip.ts';

const obj = (uid: string, rv: number | string, ns = 'a', name = uid): KubeObject => ({
  metadata: { uid, name, namespace: ns, resourceVersion: String(rv) },
  spec: { v: rv },
});

test('list vs cache: updates, deletes with last state, adds; nothing for unchanged', () => {
  const known = new Map([
    ['u1', obj('u1', 1)],
    ['u2', obj('u2', 2)],
    ['u3', obj('u3', 3)],
  ]);
  const changes = diffList(known, [obj('u1', 1), obj('u2', 7), obj('u4', 8)]);
  assert.deepEqual(
    changes.map((c) => [
      c.kind,
      c.object.metadata.uid,
      c.object.metadata.resourceVersion,
      c.oldObject?.metadata.resourceVersion,
    ]),
    [
      ['modified', 'u2', '7', '2'],
      ['added', 'u4', '8', undefined],
      ['deleted', 'u3', '3', undefined],
    ],
  );
});

test('list vs cache restricted to a scope leaves other namespaces alone', () => {
  const known = new Map([
    ['u1', obj('u1', 1, 'a')],
    ['u2', obj('u2', 2, 'b')],
  ]);
  const changes = diffList(known, [], (o) => o.metadata.namespace === 'a');
  assert.deepEqual(
    changes.map((c) => [c.kind, c.object.metadata.uid]),
    [['deleted', 'u1']],
  );
});

test('a name deleted and recreated while away is a delete of the old uid and an add of the new one', () => {
  const known = new Map([['u1', obj('u1', 1, 'a', 'orders')]]);
  const changes = diffList(known, [obj('u9', 5, 'a', 'orders')]);
  assert.deepEqual(
    changes.map((c) => [c.kind, c.object.metadata.uid]),
    [
      ['added', 'u9'],
      ['deleted', 'u1'],
    ],
  );
});

test('watch events: repeats are ignored, ADDED of a known uid is a modification, unknown deletes are ignored', () => {
  const known = new Map([['u1', obj('u1', 1)]]);
  assert.equal(changeFromWatch(known, 'ADDED', obj('u1', 1)), undefined);
  assert.equal(changeFromWatch(known, 'MODIFIED', obj('u1', 1)), undefined);
  assert.equal(changeFromWatch(known, 'ADDED', obj('u1', 2))?.kind, 'modified');
  assert.equal(changeFromWatch(known, 'MODIFIED', obj('u2', 2))?.kind, 'added');
  assert.equal(changeFromWatch(known, 'DELETED', obj('u2', 3)), undefined);
  const del = changeFromWatch(known, 'DELETED', obj('u1', 4));
  assert.equal(del?.kind, 'deleted');
  assert.equal(del?.oldObject?.metadata.resourceVersion, '1');
});

test('stripFields removes pointers without touching the input', () => {
  const o: KubeObject = {
    metadata: { uid: 'u', name: 'n', resourceVersion: '1', managedFields: [{}], annotations: { 'a/b': 'x', c: 'y' } },
    spec: { keep: 1 },
  };
  const s = stripFields(o, parsePointers(['/metadata/managedFields', '/metadata/annotations/a~1b', '/status/missing']));
  assert.deepEqual(s, {
    metadata: { uid: 'u', name: 'n', resourceVersion: '1', annotations: { c: 'y' } },
    spec: { keep: 1 },
  });
  assert.ok(o.metadata.managedFields);
  assert.throws(() => parsePointers(['metadata']));
});

// ---------------------------------------------------------------------------------------------
// Property tests: a model cluster under random operations.

type Op = { op: 'create' } | { op: 'update'; pick: number } | { op: 'delete'; pick: number } | { op: 'snapshot' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.constant({ op: 'create' as const }), weight: 3 },
  { arbitrary: fc.nat(1000).map((pick) => ({ op: 'update' as const, pick })), weight: 3 },
  { arbitrary: fc.nat(1000).map((pick) => ({ op: 'delete' as const, pick })), weight: 2 },
  { arbitrary: fc.constant({ op: 'snapshot' as const }), weight: 1 },
);

class Model {
  rv = 0;
  uid = 0;
  live = new Map<string, KubeObject>();
  apply(o: Op): void {
    const keys = [...this.live.keys()];
    if (o.op === 'create') {
      const u = `u${++this.uid}`;
      this.live.set(u, obj(u, ++this.rv, this.uid % 2 ? 'a' : 'b'));
    } else if ((o.op === 'update' || o.op === 'delete') && keys.length > 0) {
      const u = keys[o.pick % keys.length] as string;
      if (o.op === 'delete') this.live.delete(u);
      else {
        const old = this.live.get(u) as KubeObject;
        this.live.set(u, obj(u, ++this.rv, old.metadata.namespace));
      }
    }
  }
}

test('property: applying the diff of list vs cache to the cache yields exactly the list', () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 60 }), fc.array(opArb, { maxLength: 60 }), (before, during) => {
      const m = new Model();
      for (const o of before) m.apply(o);
      const cache = new Map(m.live);
      for (const o of during) m.apply(o);
      const list = [...m.live.values()];
      const changes = diffList(cache, list);
      // never an add for a known uid; never a change for an unchanged object; each uid at most once
      const uids = changes.map((c) => c.object.metadata.uid);
      assert.equal(new Set(uids).size, uids.length);
      for (const c of changes) {
        const u = c.object.metadata.uid;
        if (c.kind === 'added') assert.ok(!cache.has(u));
        if (c.kind === 'modified') {
          assert.equal(c.oldObject, cache.get(u));
          assert.notEqual(c.object.metadata.resourceVersion, cache.get(u)?.metadata.resourceVersion);
        }
        if (c.kind === 'deleted') assert.equal(c.object, cache.get(u));
      }
      const unchanged = list.filter(
        (o) => cache.get(o.metadata.uid)?.metadata.resourceVersion === o.metadata.resourceVersion,
      );
      assert.equal(
        changes.length,
        list.length - unchanged.length + [...cache.keys()].filter((u) => !m.live.has(u)).length,
      );
      const after = new Map(cache);
      for (const c of changes) applyChange(after, c);
      assert.deepEqual(after, m.live);
    }),
    { numRuns: 300 },
  );
});

test('property: resume from a checkpoint taken at any point emits exactly the net changes since then', () => {
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 120 }), (ops) => {
      const m = new Model();
      // the live path: watch events applied to a cache; snapshots are checkpoints
      const cache = new Map<string, KubeObject>();
      let checkpoint = new Map<string, KubeObject>();
      for (const o of ops) {
        const prev = new Map(m.live);
        m.apply(o);
        for (const [u, ob] of m.live)
          if (prev.get(u) !== ob) {
            const c = changeFromWatch(cache, prev.has(u) ? 'MODIFIED' : 'ADDED', ob);
            if (c) applyChange(cache, c);
          }
        for (const [u, ob] of prev)
          if (!m.live.has(u)) {
            const c = changeFromWatch(cache, 'DELETED', ob);
            if (c) applyChange(cache, c);
          }
        assert.deepEqual(cache, m.live);
        if (o.op === 'snapshot') checkpoint = new Map(cache);
      }
      // restart: list vs checkpoint
      const changes = diffList(checkpoint, [...m.live.values()]);
      const expected =
        [...m.live.values()].filter(
          (o) => checkpoint.get(o.metadata.uid)?.metadata.resourceVersion !== o.metadata.resourceVersion,
        ).length + [...checkpoint.keys()].filter((u) => !m.live.has(u)).length;
      assert.equal(changes.length, expected);
      const resumed = new Map(checkpoint);
      for (const c of changes) applyChange(resumed, c);
      assert.deepEqual(resumed, m.live);
      // a second start right after emits nothing
      assert.deepEqual(diffList(resumed, [...m.live.values()]), []);
    }),
    { numRuns: 300 },
  );
});
