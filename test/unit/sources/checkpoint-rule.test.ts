/**
 * The checkpoint rule, as a property of the whole source: an object's checkpoint entry only ever
 * advances to a state all of whose earlier deltas, in every pipeline sharing the source, have
 * settled. Random changes are fanned out to several pipelines that settle each delta at once (a
 * filter, a dead letter written), later in a random order (a slow sink), or never (a dead letter
 * that cannot be written, a shutdown): every checkpoint write is checked against that rule when it
 * is staged, and the entries left at the end are exactly the newest fully settled prefix.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { DeltaReceiver, SourceContext } from '../../../src/component.ts';
import type { Delta, KubeObject } from '../../../src/events/delta.ts';
import { fanOut } from '../../../src/runtime/pipeline.ts';
import type { CheckpointState, CheckpointStore } from '../../../src/sources/kubernetes/checkpoint/types.ts';
import { OrderedCommits } from '../../../src/sources/kubernetes/commits.ts';
import { KubernetesSource } from '../../../src/sources/kubernetes/source.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { FakeCluster } from './fake-cluster.ts';

type Fate = 'now' | 'later' | 'never';
type Mut = { op: 'create' } | { op: 'update'; pick: number } | { op: 'delete'; pick: number };

/** A pipeline whose settles the test decides: each delta's fate is drawn from `fates` in turn. */
class ScriptedPipeline implements DeltaReceiver {
  readonly held: { resolve: () => void; reject: (e: Error) => void; seq: number; fate: Fate }[] = [];
  /** seq (observation index of the delta) → settled in this pipeline */
  readonly settledSeqs = new Set<number>();
  private next = 0;
  private readonly fates: Fate[];
  private readonly seqOf: (d: Delta) => number;
  constructor(fates: Fate[], seqOf: (d: Delta) => number) {
    this.fates = fates;
    this.seqOf = seqOf;
  }
  async push(delta: Delta) {
    const fate = this.fates[this.next++ % this.fates.length] ?? 'now';
    const seq = this.seqOf(delta);
    if (fate === 'now') {
      this.settledSeqs.add(seq);
      return { settled: Promise.resolve() };
    }
    const settled = new Promise<void>((resolve, reject) => {
      this.held.push({
        seq,
        fate,
        resolve: () => {
          this.settledSeqs.add(seq);
          resolve();
        },
        reject,
      });
    });
    if (fate === 'never') settled.catch(() => {});
    return { settled };
  }
}

/** A checkpoint store that checks every staged write against the rule. */
class CheckingStore implements CheckpointStore {
  readonly description = 'checking';
  readonly entries = new Map<string, KubeObject>();
  pending = 0;
  violations: string[] = [];
  private readonly allowed: (uid: string, rv: string | null) => boolean;
  constructor(allowed: (uid: string, rv: string | null) => boolean) {
    this.allowed = allowed;
  }
  async load(): Promise<CheckpointState> {
    return { initialized: false, entries: new Map() };
  }
  put(uid: string, object: KubeObject): void {
    if (!this.allowed(uid, object.metadata.resourceVersion))
      this.violations.push(`put ${uid}@${object.metadata.resourceVersion}`);
    this.entries.set(uid, object);
  }
  remove(uid: string): void {
    if (!this.allowed(uid, null)) this.violations.push(`remove ${uid}`);
    this.entries.delete(uid);
  }
  markInitialized(): void {}
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

const fateArb = fc.array(fc.constantFrom<Fate>('now', 'now', 'later', 'never'), { minLength: 1, maxLength: 6 });
const mutArb: fc.Arbitrary<Mut> = fc.oneof(
  { arbitrary: fc.constant({ op: 'create' as const }), weight: 2 },
  { arbitrary: fc.nat(100).map((pick) => ({ op: 'update' as const, pick })), weight: 5 },
  { arbitrary: fc.nat(100).map((pick) => ({ op: 'delete' as const, pick })), weight: 1 },
);

const tick = () => new Promise((r) => setImmediate(r));

test('property: the checkpoint only advances to a state whose earlier deltas all settled in every pipeline', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fateArb, { minLength: 1, maxLength: 3 }),
      fc.array(mutArb, { minLength: 1, maxLength: 30 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      async (fatesPerPipeline, muts, settleOrder) => {
        const c = new FakeCluster();
        c.create('a', 'seed');
        // every delta the source hands on, in observation order
        const observed: Delta[] = [];
        const seqOf = (d: Delta) => observed.indexOf(d);
        const pipelines = fatesPerPipeline.map((f) => new ScriptedPipeline(f, seqOf));
        const all = fanOut(pipelines);
        const receiver: DeltaReceiver = {
          push(d, signal) {
            observed.push(d);
            return all.push(d, signal);
          },
        };
        // the rule: a state may be stored only if every delta of that uid up to the newest with
        // that state (a delete: the delete) settled in every pipeline
        const allowed = (uid: string, rv: string | null) => {
          let last = -1;
          observed.forEach((d, i) => {
            if (d.object.metadata.uid !== uid) return;
            if (rv === null ? d.kind === 'deleted' : d.kind !== 'deleted' && d.object.metadata.resourceVersion === rv)
              last = i;
          });
          if (last < 0) return false;
          for (let i = 0; i <= last; i++) {
            if (observed[i]?.object.metadata.uid !== uid) continue;
            if (!pipelines.every((p) => p.settledSeqs.has(i))) return false;
          }
          return true;
        };
        const store = new CheckingStore(allowed);
        const ctx: SourceContext = {
          id: 'rule',
          pipeline: 'rule',
          logger: silentLogger,
          metrics: new Metrics(),
          stateDir: '/nonexistent',
          clusterName: 't',
          receiver,
        };
        const src = new KubernetesSource(
          {
            group: 'example.com',
            version: 'v1',
            resource: 'backups',
            backoffInitialMs: 1,
            backoffMaxMs: 5,
            stallTimeoutSeconds: 30,
            checkpoint: { flushIntervalMs: 10 },
          },
          ctx,
          { api: c, checkpoint: store },
        );
        await src.start(new AbortController().signal);
        while (!src.synced || c.watchers.size === 0) await tick();
        let n = 0;
        for (const m of muts) {
          const names = [...c.objects.values()].map((o) => o.metadata.name);
          if (m.op === 'create' || names.length === 0) c.create('a', `o${n++}`);
          else if (m.op === 'update') c.update('a', names[m.pick % names.length] as string, { v: m.pick });
          else c.delete('a', names[m.pick % names.length] as string);
          await tick();
        }
        const end = Date.now() + 2000;
        while (observed.length < muts.length + 1 && Date.now() < end) await tick();
        assert.equal(observed.length, muts.length + 1, 'every change was handed on');
        // settle the held deltas in a random order; 'never' ones are rejected (cannot settle)
        const held = pipelines.flatMap((p) => p.held);
        const order = [...held.keys()];
        settleOrder.forEach((r, i) => {
          const j = i % Math.max(1, order.length);
          const k = r % Math.max(1, order.length);
          [order[j], order[k]] = [order[k] as number, order[j] as number];
        });
        for (const idx of order) {
          const h = held[idx];
          if (!h) continue;
          if (h.fate === 'never') h.reject(new Error('cannot settle'));
          else h.resolve();
          await tick();
        }
        await src.shutdown(Date.now() + 200);
        assert.deepEqual(store.violations, []);
        // at the end each uid's entry is its newest state whose prefix fully settled
        const expected = new Map<string, KubeObject>();
        const uids = new Set(observed.map((d) => d.object.metadata.uid));
        for (const uid of uids) {
          let state: KubeObject | null | undefined;
          observed.forEach((d, i) => {
            if (d.object.metadata.uid !== uid) return;
            const prefixDone = observed
              .slice(0, i + 1)
              .every((e, j) => e.object.metadata.uid !== uid || pipelines.every((p) => p.settledSeqs.has(j)));
            if (prefixDone) state = d.kind === 'deleted' ? null : d.object;
          });
          if (state) expected.set(uid, state);
        }
        assert.deepEqual(
          [...store.entries].map(([u, o]) => `${u}@${o.metadata.resourceVersion}`).sort(),
          [...expected].map(([u, o]) => `${u}@${o.metadata.resourceVersion}`).sort(),
        );
      },
    ),
    { numRuns: 60 },
  );
});

test('OrderedCommits: commits the newest settled prefix per key, folds, forgets and blocks on failures', () => {
  const log: string[] = [];
  const oc = new OrderedCommits<string>((k, s) => log.push(`${k}=${s}`));
  const a1 = oc.track('a', '1');
  const a2 = oc.track('a', '2');
  const a3 = oc.track('a', '3');
  const b1 = oc.track('b', '1');
  a3.settled();
  a2.settled();
  assert.deepEqual(log, [], 'nothing before the first change settled');
  b1.settled();
  assert.deepEqual(log, ['b=1'], 'another key is not held back');
  a1.settled();
  assert.deepEqual(log, ['b=1', 'a=3'], 'one commit of the newest state of the settled prefix');
  assert.equal(oc.pending, 0);
  assert.equal(oc.keys, 0);
  const a4 = oc.track('a', '4');
  const a5 = oc.track('a', '5');
  const a6 = oc.track('a', '6');
  a4.failed();
  a5.settled();
  a6.settled();
  assert.deepEqual(log, ['b=1', 'a=3'], 'a failed change blocks its key');
  const c1 = oc.track('c', '1');
  const c2 = oc.track('c', '2');
  c2.forget();
  c1.settled();
  assert.deepEqual(log, ['b=1', 'a=3', 'c=1'], 'a forgotten change is as if never tracked');
  a5.settled(); // a second call is ignored
  assert.equal(oc.pending, 0);
});
