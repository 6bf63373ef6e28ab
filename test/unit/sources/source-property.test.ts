/**
 * Property test of the whole source against the fake API server: random sequences of creates,
 * updates and deletes interleaved with clean stream closes, 410s after compaction (with changes
 * made while the stream was cut) and graceful restarts on the same checkpoint. Whatever happens,
 * the concatenated delta stream rebuilds exactly the cluster's state, never repeats a change, never
 * adds a known object and never modifies an unknown one.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import type { DeltaReceiver, SourceContext } from '../../../src/component.ts';
import type { Delta } from '../../../src/events/delta.ts';
import { KubernetesSource } from '../../../src/sources/kubernetes/source.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { FakeCluster } from './fake-cluster.ts';

type Mut = { op: 'create' } | { op: 'update'; pick: number } | { op: 'delete'; pick: number };
type Step = Mut | { op: 'close' } | { op: 'gone'; during: Mut[] } | { op: 'restart'; during: Mut[] };

const mutArb: fc.Arbitrary<Mut> = fc.oneof(
  fc.constant({ op: 'create' as const }),
  fc.nat(1000).map((pick) => ({ op: 'update' as const, pick })),
  fc.nat(1000).map((pick) => ({ op: 'delete' as const, pick })),
);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { arbitrary: mutArb, weight: 8 },
  { arbitrary: fc.constant({ op: 'close' as const }), weight: 1 },
  { arbitrary: fc.array(mutArb, { maxLength: 4 }).map((during) => ({ op: 'gone' as const, during })), weight: 1 },
  { arbitrary: fc.array(mutArb, { maxLength: 4 }).map((during) => ({ op: 'restart' as const, during })), weight: 1 },
);

function mutate(c: FakeCluster, m: Mut, seq: { n: number }): void {
  const names = [...c.objects.values()].map((o) => o.metadata.name);
  if (m.op === 'create' || names.length === 0) c.create('a', `o${seq.n++}`);
  else if (m.op === 'update') c.update('a', names[m.pick % names.length] as string, { v: m.pick });
  else c.delete('a', names[m.pick % names.length] as string);
}

const tick = () => new Promise((r) => setImmediate(r));

test('property: any interleaving of changes, stream failures and restarts is delivered exactly once', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(mutArb, { maxLength: 5 }), fc.array(stepArb, { maxLength: 25 }), async (init, steps) => {
      const c = new FakeCluster();
      const seq = { n: 0 };
      for (const m of init) mutate(c, m, seq);
      const stateDir = mkdtempSync(join(tmpdir(), 'crbridge-prop-'));
      const stream: Delta[] = [];
      const receiver: DeltaReceiver = {
        async push(d) {
          stream.push(d);
          return { settled: Promise.resolve() };
        },
      };
      const ctx: SourceContext = {
        id: 'prop',
        pipeline: 'prop',
        logger: silentLogger,
        metrics: new Metrics(),
        stateDir,
        clusterName: 't',
        receiver,
      };
      const make = () =>
        new KubernetesSource(
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
          { api: c },
        );
      let src = make();
      await src.start(new AbortController().signal);
      for (const s of steps) {
        if (s.op === 'close') c.closeWatches();
        else if (s.op === 'gone') {
          for (const w of c.watchers) w.stalled = true;
          for (const m of s.during) mutate(c, m, seq);
          c.compact();
          c.closeWatches();
        } else if (s.op === 'restart') {
          await src.shutdown(Date.now() + 1000);
          for (const m of s.during) mutate(c, m, seq);
          src = make();
          await src.start(new AbortController().signal);
        } else mutate(c, s, seq);
        await tick();
      }
      const truth = new Map([...c.objects.values()].map((o) => [o.metadata.uid, o.metadata.resourceVersion]));
      const rebuild = () => {
        const st = new Map<string, string>();
        for (const d of stream) {
          if (d.kind === 'deleted') st.delete(d.object.metadata.uid);
          else st.set(d.object.metadata.uid, d.object.metadata.resourceVersion);
        }
        return st;
      };
      const end = Date.now() + 3000;
      while (Date.now() < end) {
        const st = rebuild();
        if (st.size === truth.size && [...truth].every(([u, rv]) => st.get(u) === rv)) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      await src.shutdown(Date.now() + 1000);
      assert.deepEqual(rebuild(), truth);
      const known = new Set<string>();
      const seen = new Set<string>();
      for (const d of stream) {
        const uid = d.object.metadata.uid;
        const id = `${uid}@${d.object.metadata.resourceVersion}/${d.kind}`;
        assert.ok(!seen.has(id), `repeated ${id}`);
        seen.add(id);
        if (d.kind === 'added') assert.ok(!known.has(uid), `add of known ${uid}`);
        else assert.ok(known.has(uid), `${d.kind} of unknown ${uid}`);
        if (d.kind === 'deleted') known.delete(uid);
        else known.add(uid);
      }
    }),
    { numRuns: 40 },
  );
});
