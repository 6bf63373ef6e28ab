/**
 * The Lease elector against a fake Lease API (an in-memory coordination.k8s.io/v1 Lease with
 * resourceVersions and 409 on a stale one): acquire, renew, lose when renewing fails, a standby
 * that waits while the holder renews and steals after expiry, a conflict between two candidates,
 * release on shutdown, and a Lease taken by someone else.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KubeHttpError } from '../../../src/sources/kubernetes/client.ts';
import { LeaseElector, type LeaseSpec, leaseTimingProblems, microTime } from '../../../src/sources/kubernetes/lease.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';

const NS = 'ha';
const NAME = 'crbridge';
const PATH = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`;

interface StoredLease {
  metadata: { name: string; namespace: string; resourceVersion: string };
  spec: LeaseSpec;
}

/** One Lease, as the API server keeps it: POST creates (409 if it exists), PUT needs the current resourceVersion. */
class FakeLeaseApi {
  lease: StoredLease | undefined;
  rv = 1;
  /** While set, every request fails this way (`hang`: never answers until aborted). */
  fail: 'error' | 'hang' | undefined;
  writes: { method: string; spec: LeaseSpec }[] = [];

  async request(method: string, path: string, _q?: unknown, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    if (this.fail === 'hang')
      return new Promise((_, reject) => {
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
    if (this.fail === 'error') throw new KubeHttpError(503, 'ServiceUnavailable', `${method} ${path}: HTTP 503`);
    await new Promise((r) => setImmediate(r));
    const b = body as { metadata: { resourceVersion?: string }; spec: LeaseSpec } | undefined;
    if (method === 'GET') {
      assert.equal(path, `${PATH}/${NAME}`);
      if (!this.lease) throw new KubeHttpError(404, 'NotFound', 'not found');
      return structuredClone(this.lease);
    }
    if (method === 'POST') {
      assert.equal(path, PATH);
      if (this.lease) throw new KubeHttpError(409, 'AlreadyExists', 'exists');
      return this.store(method, b as NonNullable<typeof b>);
    }
    if (method === 'PUT') {
      assert.equal(path, `${PATH}/${NAME}`);
      if (!this.lease) throw new KubeHttpError(404, 'NotFound', 'not found');
      if (b?.metadata.resourceVersion !== this.lease.metadata.resourceVersion)
        throw new KubeHttpError(409, 'Conflict', 'the object has been modified');
      return this.store(method, b as NonNullable<typeof b>);
    }
    throw new Error(`unexpected ${method}`);
  }

  private store(method: string, b: { spec: LeaseSpec }): StoredLease {
    this.lease = {
      metadata: { name: NAME, namespace: NS, resourceVersion: String(++this.rv) },
      spec: structuredClone(b.spec),
    };
    this.writes.push({ method, spec: structuredClone(b.spec) });
    return structuredClone(this.lease);
  }

  /** Someone else writes the Lease (another candidate or an operator). */
  overwrite(spec: LeaseSpec): void {
    this.lease = { metadata: { name: NAME, namespace: NS, resourceVersion: String(++this.rv) }, spec };
  }
}

const TIMING = { leaseDurationMs: 1000, renewDeadlineMs: 600, retryPeriodMs: 100 };

function elector(api: FakeLeaseApi, identity: string, metrics = new Metrics()) {
  const changes: boolean[] = [];
  const e = new LeaseElector({ api, namespace: NS, name: NAME, identity, ...TIMING, logger: silentLogger, metrics });
  e.onChange((l) => changes.push(l));
  return { e, changes, metrics, abort: new AbortController() };
}

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms: number, what: string): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await wait(10);
  }
  return Date.now() - t0;
}

const MICRO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

describe('LeaseElector', () => {
  test('acquires a missing Lease: holder, duration, MicroTimes, no transitions; metric and one change', async () => {
    const api = new FakeLeaseApi();
    const a = elector(api, 'pod-a');
    await a.e.start(a.abort.signal);
    await until(() => a.e.isLeader, 1000, 'leadership');
    assert.deepEqual(a.changes, [true]);
    const spec = api.lease?.spec as LeaseSpec;
    assert.equal(spec.holderIdentity, 'pod-a');
    assert.equal(spec.leaseDurationSeconds, 1);
    assert.equal(spec.leaseTransitions, 0);
    assert.match(spec.acquireTime as string, MICRO);
    assert.match(spec.renewTime as string, MICRO);
    assert.equal(api.writes[0]?.method, 'POST');
    assert.equal(a.metrics.gauge('crbridge_leader', '').get({ identity: 'pod-a' }), 1);
    assert.deepEqual(a.e.state(), { identity: 'pod-a', leading: true, leader: 'pod-a' });
    a.abort.abort();
  });

  test('renews every retry period: renewTime advances, acquireTime and transitions stay', async () => {
    const api = new FakeLeaseApi();
    const a = elector(api, 'pod-a');
    await a.e.start(a.abort.signal);
    await until(() => a.e.isLeader, 1000, 'leadership');
    const first = structuredClone(api.lease?.spec as LeaseSpec);
    await wait(450);
    const now = api.lease?.spec as LeaseSpec;
    assert.ok(api.writes.length >= 3, `renewed ${api.writes.length - 1} times in 450 ms`);
    assert.ok(api.writes.slice(1).every((w) => w.method === 'PUT'));
    assert.equal(now.acquireTime, first.acquireTime);
    assert.ok((now.renewTime as string) > (first.renewTime as string));
    assert.equal(now.leaseTransitions, 0);
    assert.deepEqual(a.changes, [true]);
    a.abort.abort();
  });

  for (const mode of ['error', 'hang'] as const)
    test(`loses within the renew deadline when renewing fails (${mode})`, async () => {
      const api = new FakeLeaseApi();
      const a = elector(api, 'pod-a');
      await a.e.start(a.abort.signal);
      await until(() => a.e.isLeader, 1000, 'leadership');
      await wait(150); // at least one renewal
      api.fail = mode;
      const t0 = Date.now();
      await until(() => !a.e.isLeader, 2000, 'loss');
      const took = Date.now() - t0;
      assert.ok(took <= TIMING.renewDeadlineMs + 300, `lost after ${took} ms`);
      assert.deepEqual(a.changes, [true, false]);
      assert.equal(a.metrics.gauge('crbridge_leader', '').get({ identity: 'pod-a' }), 0);
      // once lost, never leads again in this process, even when the API recovers
      api.fail = undefined;
      await wait(300);
      assert.equal(a.e.isLeader, false);
      assert.deepEqual(a.changes, [true, false]);
    });

  test('a standby waits while the holder renews and takes over after the lease duration once it stops', async () => {
    const api = new FakeLeaseApi();
    const a = elector(api, 'pod-a');
    const b = elector(api, 'pod-b');
    await a.e.start(a.abort.signal);
    await until(() => a.e.isLeader, 1000, 'a leads');
    await b.e.start(b.abort.signal);
    await wait(TIMING.leaseDurationMs + 300); // longer than a lease: A's renewals keep it
    assert.equal(b.e.isLeader, false);
    assert.deepEqual(b.changes, []);
    assert.equal(b.e.state().leader, 'pod-a');
    // A dies without releasing (kill -9): B takes the Lease once its record went unchanged for a lease duration
    a.abort.abort();
    const stoppedAt = Date.now();
    await until(() => b.e.isLeader, 3000, 'b leads');
    const took = Date.now() - stoppedAt;
    assert.ok(took >= TIMING.leaseDurationMs - 150, `took over after ${took} ms, before the lease expired`);
    assert.ok(took <= TIMING.leaseDurationMs + 2 * TIMING.retryPeriodMs * 1.2 + 400, `took over after ${took} ms`);
    const spec = api.lease?.spec as LeaseSpec;
    assert.equal(spec.holderIdentity, 'pod-b');
    assert.equal(spec.leaseTransitions, 1);
    assert.ok(b.metrics.counter('crbridge_leader_transitions_total', '').get({ identity: 'pod-b' }) >= 2);
  });

  test('two candidates at once: exactly one leads (the other gets a conflict), and keeps leading', async () => {
    const api = new FakeLeaseApi();
    const a = elector(api, 'pod-a');
    const b = elector(api, 'pod-b');
    await Promise.all([a.e.start(a.abort.signal), b.e.start(b.abort.signal)]);
    await until(() => a.e.isLeader || b.e.isLeader, 1000, 'a leader');
    await wait(700);
    assert.equal([a.e.isLeader, b.e.isLeader].filter(Boolean).length, 1);
    const leader = a.e.isLeader ? 'pod-a' : 'pod-b';
    assert.equal(api.lease?.spec.holderIdentity, leader);
    assert.equal(api.writes.filter((w) => w.method === 'POST').length, 1);
    assert.ok(api.writes.every((w) => w.spec.holderIdentity === leader));
    a.abort.abort();
    b.abort.abort();
  });

  test('a PUT with a stale resourceVersion is a conflict: no leadership from it', async () => {
    const api = new FakeLeaseApi();
    // an expired Lease of a dead holder; every PUT is raced by another writer
    api.overwrite({ holderIdentity: 'pod-z', leaseDurationSeconds: 1, renewTime: microTime(Date.now() - 60_000) });
    const real = api.request.bind(api);
    api.request = async (method, path, q, body, signal) => {
      if (method === 'PUT') api.overwrite({ ...(api.lease as StoredLease).spec });
      return real(method, path, q, body, signal);
    };
    const a = elector(api, 'pod-a');
    await a.e.start(a.abort.signal);
    await wait(TIMING.leaseDurationMs + 400);
    assert.equal(a.e.isLeader, false);
    assert.equal(api.lease?.spec.holderIdentity, 'pod-z');
    a.abort.abort();
  });

  test('shutdown releases the Lease: the standby takes over at once, not after the lease duration', async () => {
    const api = new FakeLeaseApi();
    const a = elector(api, 'pod-a');
    const b = elector(api, 'pod-b');
    await a.e.start(a.abort.signal);
    await until(() => a.e.isLeader, 1000, 'a leads');
    await b.e.start(b.abort.signal);
    await wait(250);
    await a.e.shutdown(Date.now() + 1000);
    assert.equal(a.e.isLeader, false);
    assert.deepEqual(a.changes, [true, false]);
    assert.equal(api.lease?.spec.holderIdentity, '');
    const took = await until(() => b.e.isLeader, 1000, 'b leads');
    assert.ok(took < TIMING.leaseDurationMs - 200, `took over after ${took} ms`);
    await a.e.shutdown(Date.now() + 1000); // idempotent
    b.abort.abort();
  });

  test('a leader whose Lease another holder took stops at its next renewal', async () => {
    const api = new FakeLeaseApi();
    const a = elector(api, 'pod-a');
    await a.e.start(a.abort.signal);
    await until(() => a.e.isLeader, 1000, 'a leads');
    api.overwrite({ holderIdentity: 'pod-x', leaseDurationSeconds: 1, renewTime: microTime(Date.now()) });
    const took = await until(() => !a.e.isLeader, 1000, 'loss');
    assert.ok(took <= TIMING.retryPeriodMs + 300, `stopped after ${took} ms`);
    assert.equal(a.e.state().leader, 'pod-x');
  });

  test('timings are checked like client-go: lease > renew deadline > 1.2 × retry period', () => {
    assert.deepEqual(leaseTimingProblems({ leaseDurationMs: 15000, renewDeadlineMs: 10000, retryPeriodMs: 2000 }), []);
    assert.match(
      leaseTimingProblems({ leaseDurationMs: 5000, renewDeadlineMs: 5000, retryPeriodMs: 1000 }).join(),
      /lease duration \(5 s\) must be greater than the renew deadline/,
    );
    assert.match(
      leaseTimingProblems({ leaseDurationMs: 5000, renewDeadlineMs: 1000, retryPeriodMs: 1000 }).join(),
      /renew deadline \(1 s\) must be greater than 1.2 × the retry period/,
    );
    assert.equal(microTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678)), '2026-01-02T03:04:05.678000Z');
  });
});
