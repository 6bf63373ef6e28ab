/**
 * @serial: measures the takeover time against a short Lease; parallel load would skew it.
 * Fail-over on the real stack: two `crbridge run --leader-elect` instances (same pipeline, a
 * ConfigMap checkpoint, a file sink each) with a short Lease (4 s / 3 s / 1 s). Instance A leads
 * (it holds the Lease), B is a ready standby that emits nothing; Backups churn; A is killed with
 * -9 mid-churn; B (whose cache followed the cluster all along, writing no checkpoint) takes the
 * Lease once it expired, within the lease duration + 2.2 retry periods of the kill (measured and
 * printed), and then every change has arrived: the final state rebuilt from A's and B's events is
 * the cluster's, every change made while A or B led is an event (or, for those made while no one
 * led, covered by B's net change of that object, as after a restart), objects created, changed and
 * deleted while no one led are emitted by B, each object's events are in order in each file, and
 * a duplicate carries the id of its first copy. Component state fails over too: a `metrics` sink
 * (its phases kept with `--state-backend kubernetes`, in a ConfigMap) on B exports the phase of an
 * object that never changed after A died — B never got an event for it, only A's stored state.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { KubeObject } from '../../../src/events/delta.ts';
import { type RunningCrbridge, runArgs, startCrbridge } from '../../support/crbridge.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor } from '../../support/stack.ts';
import {
  adminApi,
  createBackup,
  deleteBackup,
  env,
  freshNamespace,
  listState,
  updateBackup,
} from '../source/helpers.ts';

const api = adminApi();
const procs: RunningCrbridge[] = [];
after(async () => {
  for (const p of procs) await p.stop('SIGKILL');
});

const LEASE_S = 4;
const RENEW_S = 3;
const RETRY_S = 1;

interface Ev {
  id: string;
  type: string;
  data: { object: KubeObject; reason: string };
}

/** A file sink's events; a line cut short by the kill -9 is ignored. */
function events(path: string): Ev[] {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: Ev[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as Ev);
    } catch {}
  }
  return out;
}

const rvOf = (e: Ev) => Number(e.data.object.metadata.resourceVersion);
const uidOf = (e: Ev) => e.data.object.metadata.uid;
const deleted = (e: Ev) => e.type.endsWith('.deleted');

async function leaseHolder(ns: string): Promise<{ holder: string | undefined; transitions: number }> {
  try {
    const l = (await api.request('GET', `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/crbridge-ha`)) as {
      spec?: { holderIdentity?: string; leaseTransitions?: number };
    };
    return { holder: l.spec?.holderIdentity || undefined, transitions: l.spec?.leaseTransitions ?? 0 };
  } catch {
    return { holder: undefined, transitions: 0 };
  }
}

async function metric(port: number, line: RegExp): Promise<string | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return text.split('\n').find((l) => line.test(l));
}

describe('leader election fail-over (two crbridge run --leader-elect, kill -9 of the leader)', () => {
  test('the standby takes over once the Lease expires (measured) and every change arrives', async () => {
    const ns = freshNamespace('it-ha');
    const dir = mkdtempSync(join(tmpdir(), 'crbridge-ha-'));
    const sinkOf = (who: string) => join(dir, `events-${who}.jsonl`);
    const start = (who: string) => {
      const file = join(dir, `ha-${who}.yaml`);
      writeFileSync(
        file,
        backupsPipelineYaml({
          name: 'ha',
          namespaces: [ns],
          sourceExtra: `    checkpoint:\n      backend: kubernetes\n      namespace: ${ns}\n      name: crb-ha\n      flushIntervalMs: 200\n`,
          sinks: `    - name: out\n      type: file\n      path: ${sinkOf(who)}\n    - name: phases\n      type: metrics\n      phase: object.spec.databaseName\n`,
        }),
      );
      const p = startCrbridge(
        runArgs([file], join(dir, `state-${who}`), [
          '--leader-elect',
          '--leader-election-namespace',
          ns,
          '--leader-election-id',
          'crbridge-ha',
          '--leader-election-lease-duration',
          String(LEASE_S),
          '--leader-election-renew-deadline',
          String(RENEW_S),
          '--leader-election-retry-period',
          String(RETRY_S),
          '--state-backend',
          'kubernetes',
          '--state-namespace',
          ns,
        ]),
        { ...process.env, KUBECONFIG: env.KUBECONFIG, POD_NAME: `inst-${who}` },
      );
      procs.push(p);
      return p;
    };

    // every write and the resourceVersion it produced, in order
    const writes: { uid: string; rv: number; at: number }[] = [];
    const record = (o: KubeObject) =>
      writes.push({ uid: o.metadata.uid, rv: Number(o.metadata.resourceVersion), at: Date.now() });
    const names = Array.from({ length: 8 }, (_, i) => `b${i}`);
    const uids = new Map<string, string>();
    for (const n of names) {
      const o = await createBackup(api, ns, n);
      uids.set(n, o.metadata.uid);
      record(o);
    }
    // never changed again: after the fail-over only the ConfigMap state knows its phase
    record(await createBackup(api, ns, 'steady', 'steady-db'));

    const a = start('a');
    await waitFor(async () => (await leaseHolder(ns)).holder === 'inst-a', 30_000, 'A holds the Lease');
    const b = start('b');
    const bPort = await b.port();
    await waitFor(() => /"msg":"leader election: inst-a leads"/.test(b.stderr()), 20_000, 'B sees A lead');
    await waitFor(() => events(sinkOf('a')).length >= names.length + 1, 30_000, 'A emitted the initial objects');
    const ready = await fetch(`http://127.0.0.1:${bPort}/readyz`);
    assert.equal(ready.status, 200, `a standby is ready: ${await ready.text()}`);
    assert.match((await metric(bPort, /^crbridge_leader\{/)) ?? '', /identity="inst-b"\} 0$/);
    // a warm standby: its cache follows the cluster, and it writes no checkpoint
    await waitFor(
      async () => / 9$/.test((await metric(bPort, /^crbridge_source_objects\{/)) ?? ''),
      10_000,
      'the standby caches the 9 objects',
    );

    // churn: updates round-robin, all the time; kill -9 A in the middle
    let churn = true;
    let round = 0;
    const churning = (async () => {
      while (churn) {
        const n = names[round++ % (names.length - 1)] as string; // b7 is deleted while no one leads
        record(await updateBackup(api, ns, n, `db-${round}`));
        await new Promise((r) => setTimeout(r, 40));
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(events(sinkOf('b')), [], 'the standby emitted nothing while A led');
    assert.equal(await metric(bPort, /^crbridge_source_checkpoint_flushes_total\{/), undefined, 'nor checkpointed');
    a.child.kill('SIGKILL');
    const killedAt = Date.now();
    await a.exited;
    // while no one leads: an object created, one created and deleted, one deleted
    const gapNew = await createBackup(api, ns, 'gap-new');
    record(gapNew);
    const gapGone = await createBackup(api, ns, 'gap-gone');
    record(gapGone);
    await deleteBackup(api, ns, 'gap-gone');
    await deleteBackup(api, ns, 'b7');

    await waitFor(async () => (await leaseHolder(ns)).holder === 'inst-b', 20_000, 'B holds the Lease');
    const tookMs = Date.now() - killedAt;
    process.stdout.write(`# takeover after kill -9 of the leader: ${tookMs} ms (lease ${LEASE_S} s)\n`);
    // client-go semantics: the Lease expires a lease duration after the last renewal B saw (≤ 1 retry period
    // after it was written), and B notices at its next attempt (≤ 1.2 retry periods later)
    assert.ok(tookMs <= (LEASE_S + 2.2 * RETRY_S) * 1000 + 500, `B took over after ${tookMs} ms`);
    assert.equal((await leaseHolder(ns)).transitions, 1);
    await new Promise((r) => setTimeout(r, 1500));
    churn = false;
    await churning;

    // B delivers until its events rebuild the cluster's state
    const truth = await listState(api, ns);
    const rebuild = () => {
      const s = new Map<string, number>();
      for (const e of [...events(sinkOf('a')), ...events(sinkOf('b'))].sort((x, y) => rvOf(x) - rvOf(y)))
        if (deleted(e)) s.delete(uidOf(e));
        else s.set(uidOf(e), rvOf(e));
      return s;
    };
    const want = new Map([...truth].map(([k, v]) => [k, Number(v)]));
    await waitFor(
      () => JSON.stringify([...rebuild()].sort()) === JSON.stringify([...want].sort()),
      30_000,
      'the events rebuild the final state',
    );
    // when B's first LIST was handed on: changes made before it may be folded into its net change
    const listed = /\{[^\n]*"msg":"initial list handed on"[^\n]*/.exec(b.stderr());
    assert.ok(listed, 'B handed on its first listing');
    const listedAt = Date.parse((JSON.parse(listed[0]) as { time: string }).time);
    const evA = events(sinkOf('a'));
    const evB = events(sinkOf('b'));
    assert.ok(evB.length > 0);

    // every change arrived: as itself, or (made while no one led) inside B's net change of its object
    const all = [...evA, ...evB];
    const seen = new Set(all.map((e) => `${uidOf(e)}@${rvOf(e)}`));
    const resyncOf = new Map<string, number>();
    for (const e of evB)
      if (e.data.reason === 'resync') resyncOf.set(uidOf(e), Math.max(resyncOf.get(uidOf(e)) ?? 0, rvOf(e)));
    const missing = writes.filter((w) => !seen.has(`${w.uid}@${w.rv}`));
    for (const w of missing) {
      const net = resyncOf.get(w.uid);
      const gone = evB.some((e) => uidOf(e) === w.uid && deleted(e));
      // created and deleted while no one led: the net change is nothing
      const never = w.at >= killedAt && !truth.has(w.uid) && !all.some((e) => uidOf(e) === w.uid);
      assert.ok(
        (net !== undefined && net > w.rv) || gone || never,
        `change ${w.uid}@${w.rv} (at +${w.at - killedAt} ms from the kill) is neither an event nor covered by B's net change`,
      );
      assert.ok(w.at <= listedAt, `change ${w.uid}@${w.rv} made after B listed was not emitted as itself`);
    }
    // what happened while no one led is emitted by B
    assert.ok(
      evB.some((e) => uidOf(e) === gapNew.metadata.uid && !deleted(e)),
      'gap-new emitted',
    );
    assert.ok(
      evB.some((e) => uidOf(e) === (uids.get('b7') as string) && deleted(e)),
      'b7 deletion emitted',
    );
    assert.ok(!rebuild().has(gapGone.metadata.uid), 'gap-gone is not left behind');

    // component state failed over with the ConfigMap backend: B exports the phase of 'steady', an
    // object B got no event for (unchanged since A emitted it), from what A's metrics sink stored
    assert.ok(!evB.some((e) => e.data.object.metadata.name === 'steady'), 'B got no event for steady');
    const phaseOf = async (name: string) =>
      (await (await fetch(`http://127.0.0.1:${bPort}/metrics`)).text())
        .split('\n')
        .filter((l) => l.startsWith('crbridge_cr_status_phase{') && l.includes(`name="${name}"`));
    assert.deepEqual(
      (await phaseOf('steady')).map((l) => /phase="([^"]*)"/.exec(l)?.[1]),
      ['steady-db'],
      "B knows steady's phase from the state A left in its ConfigMap",
    );
    assert.equal((await phaseOf('gap-gone')).length, 0, 'an object gone while no one led has no series');

    // in order per object in each file; a duplicate carries the same id
    for (const [who, evs] of [
      ['a', evA],
      ['b', evB],
    ] as const) {
      const last = new Map<string, number>();
      for (const e of evs) {
        const prev = last.get(uidOf(e)) ?? 0;
        assert.ok(rvOf(e) >= prev, `${who}: ${uidOf(e)} went back from ${prev} to ${rvOf(e)}`);
        last.set(uidOf(e), rvOf(e));
      }
    }
    const idOf = new Map<string, string>();
    for (const e of all) {
      const k = `${uidOf(e)}@${rvOf(e)}:${deleted(e)}`;
      const id = idOf.get(k);
      if (id === undefined) idOf.set(k, e.id);
      else assert.equal(e.id, id, `duplicate of ${k} with another id`);
    }

    assert.match((await metric(bPort, /^crbridge_leader\{/)) ?? '', /identity="inst-b"\} 1$/);
    assert.match(b.stderr(), /"msg":"leader election: inst-b leads"/);
    assert.match(
      b.stderr(),
      /"msg":"leading: resumed from the checkpoint"[^\n]*"scopesListed":1/,
      'from the warm cache',
    );
    assert.equal(await b.stop('SIGTERM'), 0);
    assert.equal((await leaseHolder(ns)).holder, undefined, 'a leader shutting down releases the Lease');
    process.stdout.write(
      `# events: A ${evA.length}, B ${evB.length}; changes made ${writes.length}; covered by a net change ${missing.length}\n`,
    );
  });

  test('a leader whose Lease another holder takes stops at once: it exits 1 to restart as a standby', async () => {
    const ns = freshNamespace('it-ha-lost');
    const dir = mkdtempSync(join(tmpdir(), 'crbridge-ha-lost-'));
    const file = join(dir, 'ha.yaml');
    writeFileSync(
      file,
      backupsPipelineYaml({
        name: 'ha',
        namespaces: [ns],
        sourceExtra: `    checkpoint:\n      backend: kubernetes\n      namespace: ${ns}\n`,
        sinks: `    - name: out\n      type: file\n      path: ${join(dir, 'events.jsonl')}\n`,
      }),
    );
    const c = startCrbridge(
      runArgs([file], join(dir, 'state'), [
        '--leader-elect',
        '--leader-election-namespace',
        ns,
        '--leader-election-id',
        'crbridge-ha',
        '--leader-election-lease-duration',
        String(LEASE_S),
        '--leader-election-renew-deadline',
        String(RENEW_S),
        '--leader-election-retry-period',
        String(RETRY_S),
      ]),
      { ...process.env, KUBECONFIG: env.KUBECONFIG, POD_NAME: 'inst-c' },
    );
    procs.push(c);
    await waitFor(async () => (await leaseHolder(ns)).holder === 'inst-c', 30_000, 'C holds the Lease');
    const path = `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/crbridge-ha`;
    const lease = (await api.request('GET', path)) as { spec: Record<string, unknown> };
    await api.request('PUT', path, undefined, {
      ...lease,
      spec: { ...lease.spec, holderIdentity: 'intruder', renewTime: new Date().toISOString().replace('Z', '000Z') },
    });
    const takenAt = Date.now();
    const code = await Promise.race([c.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    const took = Date.now() - takenAt;
    assert.equal(code, 1, c.stderr());
    assert.ok(took <= RETRY_S * 1000 + 1500, `exited ${took} ms after the Lease was taken`);
    assert.match(c.stderr(), /CRB_LEADER_ELECTION: lost the leadership/);
    assert.match(
      c.stderr(),
      /"msg":"leader election: lost the leadership; stopping at once"[^\n]*"reason":"the Lease is held by intruder"/,
    );
    assert.equal((await leaseHolder(ns)).holder, 'intruder', 'the Lease is left to its new holder');
  });
});
