/**
 * The diff of a fresh LIST against the cache (relist) and against the checkpoint (resume), with
 * example-based tests and fast-check properties over random sequences of changes; objects leaving
 * and entering a label selector, and the event ids of it all.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { eventId } from '../../../src/events/build.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import {
  applyChange,
  type Change,
  changeFromWatch,
  diffList,
  leftOrDeleted,
  type WatchEventType,
} from '../../../src/sources/kubernetes/diff.ts';
import { compileSelection } from '../../../src/sources/kubernetes/selector.ts';
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

test('a DELETED that the selector shows outside is a departure with the last handed-on state; else a deletion', () => {
  const inCache = { ...obj('u1', 1), metadata: { ...obj('u1', 1).metadata, labels: { tier: 'prod' } } };
  const known = new Map([['u1', inCache]]);
  const sel = compileSelection('tier=prod');
  // the kube-apiserver: the previous content (still matching), the resourceVersion of the change
  const asSent = { ...inCache, metadata: { ...inCache.metadata, resourceVersion: '5' } };
  const del = changeFromWatch(known, 'DELETED', asSent, sel.matches);
  assert.deepEqual(del, { kind: 'deleted', object: asSent, oldObject: inCache });
  // a server that sends the new content: outside, so a departure without asking
  const outside = { ...asSent, metadata: { ...asSent.metadata, labels: { tier: 'dev' } } };
  assert.deepEqual(changeFromWatch(known, 'DELETED', outside, sel.matches), {
    kind: 'deleted',
    object: inCache,
    selector: 'left',
    leftAt: '5',
  });
  assert.equal(changeFromWatch(known, 'DELETED', outside)?.selector, undefined, 'no selector, no departure');
});

test('leftOrDeleted: the same uid still there is a departure; 404 or a reused name is a deletion', () => {
  const last = obj('u1', 3, 'a', 'orders');
  const live: Change = { kind: 'deleted', object: obj('u1', 7, 'a', 'orders'), oldObject: last };
  const listed: Change = { kind: 'deleted', object: last };
  const now = obj('u1', 9, 'a', 'orders');
  for (const ch of [live, listed]) {
    assert.deepEqual(leftOrDeleted(ch, now), { kind: 'deleted', object: last, selector: 'left', leftAt: '9' });
    assert.equal(leftOrDeleted(ch, undefined), ch);
    assert.equal(leftOrDeleted(ch, obj('u2', 9, 'a', 'orders')), ch, 'deleted and recreated under the same name');
  }
  const mod: Change = { kind: 'modified', object: now, oldObject: last };
  assert.equal(leftOrDeleted(mod, now), mod);
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

// ---------------------------------------------------------------------------------------------
// Property tests: a model cluster with a label selector, as the kube-apiserver serves it.

const SEL = compileSelection('tier=prod');

type SelOp =
  | { op: 'create'; prod: boolean }
  | { op: 'update'; pick: number }
  | { op: 'relabel'; pick: number }
  | { op: 'delete'; pick: number };

const selOpArb: fc.Arbitrary<SelOp> = fc.oneof(
  fc.boolean().map((prod) => ({ op: 'create' as const, prod })),
  fc.nat(1000).map((pick) => ({ op: 'update' as const, pick })),
  { arbitrary: fc.nat(1000).map((pick) => ({ op: 'relabel' as const, pick })), weight: 2 },
  fc.nat(1000).map((pick) => ({ op: 'delete' as const, pick })),
);

const labelled = (uid: string, rv: number, tier: string): KubeObject => ({
  metadata: { uid, name: uid, namespace: 'a', resourceVersion: String(rv), labels: { tier } },
  spec: { v: rv },
});

/** Every object (in the selector or not), and the watch events a `tier=prod` watch gets. */
class SelModel {
  rv = 0;
  uid = 0;
  all = new Map<string, KubeObject>();
  apply(o: SelOp): { type: WatchEventType; obj: KubeObject }[] {
    const keys = [...this.all.keys()];
    if (o.op === 'create' || keys.length === 0) {
      const u = `u${++this.uid}`;
      const n = labelled(u, ++this.rv, o.op === 'create' && !o.prod ? 'dev' : 'prod');
      this.all.set(u, n);
      return SEL.matches(n) ? [{ type: 'ADDED', obj: n }] : [];
    }
    const u = keys[o.pick % keys.length] as string;
    const p = this.all.get(u) as KubeObject;
    const was = SEL.matches(p);
    const rv = ++this.rv;
    // a departure or a deletion: the previous content with the resourceVersion of the change
    const gone = { ...p, metadata: { ...p.metadata, resourceVersion: String(rv) } };
    if (o.op === 'delete') {
      this.all.delete(u);
      return was ? [{ type: 'DELETED', obj: gone }] : [];
    }
    const prod = p.metadata.labels?.tier === 'prod';
    const tier = prod !== (o.op === 'relabel') ? 'prod' : 'dev';
    const n = labelled(u, rv, tier);
    this.all.set(u, n);
    const is = SEL.matches(n);
    if (was && is) return [{ type: 'MODIFIED', obj: n }];
    if (is) return [{ type: 'ADDED', obj: n }];
    if (was) return [{ type: 'DELETED', obj: gone }];
    return [];
  }
  inside(): Map<string, KubeObject> {
    return new Map([...this.all].filter(([, o]) => SEL.matches(o)));
  }
}

const idOf = (c: Change) => eventId(c.kind, c.object, c.selector, c.leftAt);

/** A watch event through the cache; a deletion is checked with a GET of the model as it is now. */
function live(m: SelModel, cache: Map<string, KubeObject>, type: WatchEventType, o: KubeObject): Change | undefined {
  const ch = changeFromWatch(cache, type, o, SEL.matches);
  if (!ch) return undefined;
  const out = leftOrDeleted(ch, m.all.get(o.metadata.name));
  applyChange(cache, out);
  return out;
}

/** The first LIST after a restart against `known`, vanished objects checked with a GET. */
function resume(m: SelModel, known: Map<string, KubeObject>): Change[] {
  return diffList(known, [...m.inside().values()]).map((c) => leftOrDeleted(c, m.all.get(c.object.metadata.name)));
}

test('property: with a label selector every change gets its own id, live and after a restart', () => {
  fc.assert(
    fc.property(fc.array(selOpArb, { maxLength: 80 }), fc.array(selOpArb, { maxLength: 30 }), (before, down) => {
      const m = new SelModel();
      const cache = new Map<string, KubeObject>();
      const ids: string[] = [];
      for (const o of before)
        for (const e of m.apply(o)) {
          const c = live(m, cache, e.type, e.obj);
          if (c) ids.push(idOf(c));
        }
      assert.deepEqual(cache, m.inside(), 'the view follows the selector');
      assert.equal(new Set(ids).size, ids.length, `distinct ids live: ${ids.join(' ')}`);
      // stopped with the checkpoint = the cache; changes while down; the resync
      for (const o of down) m.apply(o);
      const changes = resume(m, cache);
      const resumed = changes.map(idOf);
      const all = [...ids, ...resumed];
      assert.equal(new Set(all).size, all.length, `changes while down get new ids: ${resumed.join(' ')}`);
      for (const c of changes) applyChange(cache, c);
      assert.deepEqual(cache, m.inside());
    }),
    { numRuns: 400 },
  );
});

test('property: a checkpoint behind delivery repeats changes with the ids they had (but the documented two)', () => {
  fc.assert(
    fc.property(fc.array(selOpArb, { maxLength: 40 }), fc.array(selOpArb, { maxLength: 40 }), (before, after) => {
      const m = new SelModel();
      const cache = new Map<string, KubeObject>();
      for (const o of before) for (const e of m.apply(o)) live(m, cache, e.type, e.obj);
      // the checkpoint stops here; everything after is delivered but never recorded, then a crash
      const checkpoint = new Map(cache);
      const delivered: Change[] = [];
      for (const o of after)
        for (const e of m.apply(o)) {
          const c = live(m, cache, e.type, e.obj);
          if (c) delivered.push(c);
        }
      const seen = new Set(delivered.map(idOf));
      const removed = new Set(delivered.filter((c) => c.kind === 'deleted').map((c) => c.object.metadata.uid));
      for (const c of resume(m, checkpoint)) {
        if (seen.has(idOf(c))) continue;
        // the only repeats under another id: an object already gone from the view goes again, its
        // departure from an older state (an update of it was not recorded) or its deletion while
        // outside the selector (its departure was not recorded)
        assert.equal(c.kind, 'deleted', `${idOf(c)} repeats a change under a new id`);
        assert.ok(removed.has(c.object.metadata.uid), `${idOf(c)}: the consumer saw this object go`);
      }
    }),
    { numRuns: 400 },
  );
});
