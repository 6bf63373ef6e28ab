/**
 * Reflector details: backoff bounds, bounded buffering by count and by bytes (overflow closes and
 * resumes the stream without loss), bookmarks applied only after the events before them, a refused
 * push being retried rather than lost; failures logged once per cause with what to grant, counted
 * per attempt, and the recovery logged once; the status model (ready: a current list and a running
 * watch; live: progress) for a reflector and for the source; a WATCH or LIST in flight through the
 * real HTTP client aborted promptly at shutdown.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { backoffDelay } from '../../../src/backoff.ts';
import type { SourceContext } from '../../../src/component.ts';
import type { Delta, KubeObject } from '../../../src/events/delta.ts';
import { type KubeApi, KubeHttpError, kubeApi } from '../../../src/sources/kubernetes/client.ts';
import { accessError } from '../../../src/sources/kubernetes/discovery.ts';
import { Reflector, type ReflectorOptions } from '../../../src/sources/kubernetes/reflector.ts';
import { KubernetesSource } from '../../../src/sources/kubernetes/source.ts';
import { createLogger, silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { fakeClock } from './fake-clock.ts';
import { FakeCluster } from './fake-cluster.ts';

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

async function until(fn: () => boolean, what: string, ms = 5000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** JSON log lines written by a logger, parsed. */
function capture(level: 'debug' | 'info' = 'info') {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: createLogger({ level, write: (l) => lines.push(JSON.parse(l)) }) };
}

const backups = { group: 'example.com', version: 'v1', resource: 'backups' };

/** A reflector over namespace `a` of the fake cluster, recording what it hands on. */
function reflector(api: KubeApi, extra: Partial<ReflectorOptions> = {}) {
  const seen: string[] = [];
  const errors: string[] = [];
  let lists = 0;
  const r = new Reflector({
    api,
    path: '/apis/example.com/v1/namespaces/a/backups',
    pageSize: 100,
    watchTimeoutSeconds: 60,
    stallTimeoutMs: 5000,
    backoffInitialMs: 1,
    backoffMaxMs: 5,
    logger: silentLogger,
    target: { resource: backups, scope: { namespace: 'a', namespaced: true } },
    onError: (code) => errors.push(code),
    handler: {
      onList: async (pages) => {
        for await (const _ of pages) {
        }
        lists++;
      },
      onEvent: async (_type, obj: KubeObject) => {
        seen.push(obj.metadata.name);
      },
      waitForResource: async () => {},
    },
    ...extra,
  });
  const ac = new AbortController();
  const run = r.run(ac.signal);
  return {
    r,
    seen,
    errors,
    lists: () => lists,
    stop: () => {
      ac.abort();
      return run;
    },
  };
}

test('backoff doubles from the initial delay up to the maximum, with 50-100 % jitter', () => {
  assert.equal(
    backoffDelay(1, 1000, 30000, () => 0),
    500,
  );
  assert.equal(
    backoffDelay(1, 1000, 30000, () => 1),
    1000,
  );
  assert.equal(
    backoffDelay(3, 1000, 30000, () => 1),
    4000,
  );
  assert.equal(
    backoffDelay(20, 1000, 30000, () => 1),
    30000,
  );
  for (let a = 1; a < 10; a++) {
    const d = backoffDelay(a, 100, 5000);
    const base = Math.min(5000, 100 * 2 ** (a - 1));
    assert.ok(d >= base / 2 && d <= base);
  }
});

test('a slow handler with a burst beyond maxQueued loses nothing: the stream is closed and resumed', async () => {
  const c = new FakeCluster();
  const seen: string[] = [];
  const restarts: string[] = [];
  const ac = new AbortController();
  let listed = false;
  const r = new Reflector({
    api: c,
    path: '/apis/example.com/v1/namespaces/a/backups',
    pageSize: 100,
    watchTimeoutSeconds: 60,
    stallTimeoutMs: 5000,
    backoffInitialMs: 1,
    backoffMaxMs: 5,
    maxQueued: 5,
    logger: silentLogger,
    target: { resource: backups, scope: { namespace: 'a', namespaced: true } },
    onRestart: (why) => restarts.push(why),
    handler: {
      onList: async () => {
        listed = true;
      },
      onEvent: async (_type, obj: KubeObject) => {
        await new Promise((res) => setTimeout(res, 1));
        seen.push(obj.metadata.name);
      },
      waitForResource: async () => {},
    },
  });
  const run = r.run(ac.signal);
  while (!listed) await new Promise((res) => setTimeout(res, 1));
  await new Promise((res) => setTimeout(res, 10));
  for (let i = 0; i < 40; i++) c.create('a', `o${i}`);
  const end = Date.now() + 5000;
  while (seen.length < 40 && Date.now() < end) await new Promise((res) => setTimeout(res, 5));
  ac.abort();
  await run;
  assert.deepEqual(
    seen,
    Array.from({ length: 40 }, (_, i) => `o${i}`),
  );
  assert.ok(restarts.includes('overflow'));
  assert.equal(c.lists, 1);
});

test('a push that fails is retried from the last accepted resourceVersion, not lost and not repeated', async () => {
  const c = new FakeCluster();
  const got: Delta[] = [];
  let failNext = false;
  const ctx: SourceContext = {
    id: 's',
    pipeline: 'p',
    logger: silentLogger,
    metrics: new Metrics(),
    stateDir: mkdtempSync(join(tmpdir(), 'crbridge-refl-')),
    clusterName: 't',
    receiver: {
      async push(d) {
        if (failNext) {
          failNext = false;
          throw new Error('queue closed');
        }
        got.push(d);
        return { settled: Promise.resolve() };
      },
    },
  };
  const s = new KubernetesSource(
    { group: 'example.com', version: 'v1', resource: 'backups', backoffInitialMs: 1, backoffMaxMs: 5 },
    ctx,
    { api: c },
  );
  await s.start(new AbortController().signal);
  while (!s.synced) await new Promise((res) => setTimeout(res, 2));
  failNext = true;
  c.create('a', 'x');
  c.create('a', 'y');
  const end = Date.now() + 3000;
  while (got.length < 2 && Date.now() < end) await new Promise((res) => setTimeout(res, 5));
  await new Promise((res) => setTimeout(res, 50));
  assert.deepEqual(
    got.map((d) => `${d.kind} ${d.object.metadata.name}`),
    ['added x', 'added y'],
  );
  await s.shutdown(Date.now() + 1000);
});

test('a burst beyond maxQueuedBytes (under maxQueued) loses nothing: the stream is closed and resumed', async () => {
  const c = new FakeCluster();
  const restarts: string[] = [];
  const pad = 'x'.repeat(2000);
  const slow: string[] = [];
  const t = reflector(c, {
    maxQueued: 10_000,
    maxQueuedBytes: 5 * 2200, // about five of these events
    onRestart: (why) => restarts.push(why),
    handler: {
      onList: async (pages) => {
        for await (const _ of pages) {
        }
      },
      onEvent: async (_type, obj: KubeObject) => {
        await sleep(1);
        slow.push(obj.metadata.name);
      },
      waitForResource: async () => {},
    },
  });
  await until(() => c.watches === 1, 'the watch');
  for (let i = 0; i < 40; i++) c.create('a', `o${i}`, { pad });
  await until(() => slow.length >= 40, 'all 40 events');
  await sleep(20);
  await t.stop();
  assert.deepEqual(
    slow,
    Array.from({ length: 40 }, (_, i) => `o${i}`),
  );
  assert.ok(restarts.includes('overflow'), `restarts: ${restarts.join(',')}`);
  assert.ok(c.watches >= 2, 'the stream was reopened');
  assert.equal(c.lists, 1, 'resumed from the resume point, not relisted');
});

test('a LIST refused with 403 is logged once with what to grant, counted per attempt, and its recovery logged once', async () => {
  const c = new FakeCluster();
  c.create('a', 'b0');
  c.forbid.add('list');
  const { lines, logger } = capture('debug');
  const t = reflector(c, { logger });
  await until(() => c.forbidden >= 5, 'five refused LISTs');
  c.forbid.clear();
  await until(() => t.lists() === 1, 'the LIST once allowed');
  await until(() => c.watches === 1, 'the watch');
  c.create('a', 'b1');
  await until(() => t.seen.includes('b1'), 'a live event');
  await t.stop();
  const refused = lines.filter((l) => l.level === 'error');
  assert.equal(refused.length, 1, JSON.stringify(refused));
  const e = refused[0] as Record<string, string>;
  assert.equal(e.code, 'CRB_FORBIDDEN');
  assert.equal(e.verb, 'list');
  assert.equal(e.resource, 'backups.example.com/v1');
  assert.equal(e.namespace, 'a');
  assert.match(e.msg as string, /^cannot list backups\.example\.com\/v1 in namespace "a": forbidden \(/);
  assert.match(e.msg as string, /User "crbridge-restricted" cannot list resource "backups"/);
  assert.match(e.msg as string, /grant get,list,watch on backups\.example\.com in namespace a /);
  assert.match(e.msg as string, /a Role \+ RoleBinding in that namespace, or a ClusterRole \+ ClusterRoleBinding/);
  assert.match(
    e.msg as string,
    /kubectl create role crbridge-backups -n a --verb=get,list,watch --resource=backups\.example\.com && kubectl create rolebinding crbridge-backups -n a --role=crbridge-backups --user=crbridge-restricted/,
  );
  assert.ok(t.errors.length >= 5, 'every refused attempt counted');
  assert.ok(t.errors.every((code) => code === 'CRB_FORBIDDEN'));
  assert.ok(
    lines.filter((l) => l.level === 'debug' && l.code === 'CRB_FORBIDDEN').length >= 4,
    'a debug line per retry',
  );
  assert.equal(lines.filter((l) => l.level === 'warn').length, 0);
  const recovered = lines.filter((l) => /recovered/.test(String(l.msg)));
  assert.equal(recovered.length, 1);
  assert.equal(recovered[0]?.level, 'info');
  assert.match(String(recovered[0]?.msg), /list\/watch of backups\.example\.com\/v1 in namespace "a": recovered/);
  assert.deepEqual(t.seen, ['b1']);
});

test('a WATCH refused with 403 across all namespaces names the verb and asks for a ClusterRole', async () => {
  const c = new FakeCluster();
  c.forbid.add('watch');
  const { lines, logger } = capture();
  const t = reflector(c, {
    logger,
    path: '/apis/example.com/v1/backups',
    target: { resource: backups, scope: { namespace: null, namespaced: true } },
  });
  await until(() => c.forbidden >= 4, 'refused watches');
  await t.stop();
  const refused = lines.filter((l) => l.level === 'error');
  assert.equal(refused.length, 1);
  assert.match(String(refused[0]?.msg), /^cannot watch backups\.example\.com\/v1 in all namespaces: forbidden/);
  assert.match(
    String(refused[0]?.msg),
    /grant get,list,watch on backups\.example\.com in all namespaces to the identity crbridge runs as \(a ClusterRole \+ ClusterRoleBinding\), e\.g\. kubectl create clusterrole crbridge-backups --verb=get,list,watch --resource=backups\.example\.com && kubectl create clusterrolebinding crbridge-backups --clusterrole=crbridge-backups --user=crbridge-restricted/,
  );
  assert.equal(t.lists(), 1, 'the LIST was allowed');
});

test('status: ready with a current list and a running watch; a watch down past the grace is not ready, then ready again', async (tc) => {
  const clock = fakeClock(tc);
  const c = new FakeCluster();
  // the default grace (10 s) and backoff (1 s up to 30 s), on the fake clock
  const t = reflector(c, { backoffInitialMs: 1000, backoffMaxMs: 30_000 });
  assert.equal(t.r.status().ready, false);
  assert.match(
    t.r.status().reasons[0] ?? '',
    /backups\.example\.com\/v1 in namespace "a": the first LIST is not handed on yet/,
  );
  await clock.until(() => t.r.status().ready, 'ready');
  assert.deepEqual(t.r.status(), { ready: true, live: true, reasons: [] });
  c.forbid.add('watch');
  c.closeWatches();
  await clock.until(() => c.forbidden >= 1, 'a refused watch');
  await clock.advance(9_000, 100);
  assert.equal(t.r.status().ready, true, 'within the reconnect grace (10 s)');
  await clock.advance(2_000, 100);
  const st = t.r.status();
  assert.equal(st.ready, false, 'down for 11 s: past the grace');
  assert.equal(st.live, true, 'a 403 is an answer: retrying makes progress, a restart would not help');
  assert.match(st.reasons.join('\n'), /cannot watch backups\.example\.com\/v1 in namespace "a": forbidden/);
  c.forbid.clear();
  await clock.until(() => t.r.status().ready, 'ready again', 60_000, 100);
  assert.deepEqual(t.r.status().reasons, []);
  await t.stop();
});

test('status: a resource no longer served (404) is not ready at once, naming it', async () => {
  const c = new FakeCluster();
  let release: () => void = () => {};
  const t = reflector(c, {
    handler: {
      onList: async (pages) => {
        for await (const _ of pages) {
        }
      },
      onEvent: async () => {},
      waitForResource: (signal) =>
        new Promise<void>((res) => {
          release = res;
          signal.addEventListener('abort', () => res(), { once: true });
        }),
    },
  });
  await until(() => t.r.status().ready, 'ready');
  c.served = false;
  c.closeWatches();
  await until(() => !t.r.status().ready, 'not ready');
  assert.match(
    t.r.status().reasons.join('\n'),
    /backups\.example\.com\/v1 in namespace "a": the resource is no longer served/,
  );
  assert.equal(t.r.status().live, true);
  c.served = true;
  release();
  await until(() => t.r.status().ready, 'ready once served again');
  await t.stop();
});

test('status: no answer for longer than progressTimeoutMs is not live; waiting on the handler is', async (tc) => {
  const clock = fakeClock(tc);
  // a LIST that never answers (what the stall watchdog cannot cut: it guards the watch)
  const c = new FakeCluster();
  const hanging: KubeApi = {
    request: (method, path, query, body, signal) =>
      path.endsWith('/backups')
        ? new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }))
        : c.request(method, path, query, body),
    watch: (...a) => c.watch(...a),
  };
  // the default progress timeout: max(3 × stall timeout, 60 s) = 60 s
  const t = reflector(hanging);
  await clock.advance(59_000, 1000);
  assert.equal(t.r.status().live, true, 'within the progress timeout');
  await clock.advance(2_000, 1000);
  const st = t.r.status();
  assert.equal(st.live, false);
  assert.match(
    st.reasons.join('\n'),
    /backups\.example\.com\/v1 in namespace "a": stuck: no answer from the API server for 61 s/,
  );
  await t.stop();

  // back-pressure: the handler takes longer than the progress timeout
  let release: () => void = () => {};
  const handled = new Promise<void>((res) => {
    release = res;
  });
  const b = reflector(c, {
    handler: {
      onList: async (pages) => {
        for await (const _ of pages) {
        }
      },
      onEvent: () => handled,
      waitForResource: async () => {},
    },
  });
  await clock.until(() => c.watches >= 1, 'the watch');
  c.create('a', 'slow');
  await clock.advance(120_000, 1000);
  assert.equal(b.r.status().live, true, 'waiting two minutes for a slow sink is not being stuck');
  release();
  await clock.advance(100);
  assert.equal(b.r.status().live, true);
  await b.stop();
});

test('the source: 403 on LIST makes it not ready with the reason and counts CRB_FORBIDDEN; allowed, it is ready again', async (tc) => {
  // the source's own backoff (1 s doubling up to 30 s) on a fake clock
  const clock = fakeClock(tc, 100);
  const c = new FakeCluster();
  c.create('a', 'b0');
  c.forbid.add('list');
  const metrics = new Metrics();
  const got: Delta[] = [];
  const ctx: SourceContext = {
    id: 'p/source',
    pipeline: 'p',
    logger: silentLogger,
    metrics,
    stateDir: mkdtempSync(join(tmpdir(), 'crbridge-refl-')),
    clusterName: 't',
    receiver: {
      async push(d) {
        got.push(d);
        return { settled: Promise.resolve() };
      },
    },
  };
  const s = new KubernetesSource({ group: 'example.com', version: 'v1', resource: 'backups' }, ctx, { api: c });
  assert.deepEqual(s.status().ready, false);
  await s.start(new AbortController().signal);
  await clock.until(() => c.forbidden >= 3, 'refused LISTs');
  const st = s.status();
  assert.equal(st.ready, false);
  assert.equal(st.live, true);
  assert.equal(st.reasons.length, 1);
  assert.match(
    st.reasons[0] ?? '',
    /^cannot list backups\.example\.com\/v1 in all namespaces: forbidden .*grant get,list,watch/,
  );
  const errors = metrics.counter('crbridge_component_errors_total', '');
  assert.ok(errors.get({ component: 'p/source', code: 'CRB_FORBIDDEN' }) >= 3);
  c.forbid.clear();
  await clock.until(() => s.status().ready, 'ready once allowed');
  assert.deepEqual(s.status(), { ready: true, live: true, reasons: [] });
  assert.deepEqual(
    got.map((d) => `${d.reason} ${d.kind} ${d.object.metadata.name}`),
    ['resync added b0'],
  );
  // discovery refused too (a CRD re-created while the identity lost its discovery grant)
  const refusedBefore = c.forbidden;
  c.forbid.add('discovery');
  c.served = false;
  c.closeWatches();
  await clock.until(() => c.forbidden > refusedBefore, 'a refused discovery');
  assert.equal(s.status().ready, false);
  assert.match(
    s.status().reasons.join('\n'),
    /cannot discover backups\.example\.com\/v1 \(GET \/apis\/example\.com\/v1\): forbidden/,
  );
  assert.ok(errors.get({ component: 'p/source', code: 'CRB_FORBIDDEN' }) > refusedBefore);
  c.forbid.clear();
  c.served = true;
  await clock.until(() => s.status().ready, 'ready once discovery is allowed and the resource served');
  await s.shutdown(Date.now() + 1000);
});

/** A plain-HTTP fake API server: a LIST of `objects` and a watch that stays open. */
async function httpCluster(onWatch: (res: http.ServerResponse) => void, listDelayMs = 0) {
  const closed: string[] = [];
  let open = 0;
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const kind = u.searchParams.get('watch') ? 'watch' : 'list';
    open++;
    res.on('close', () => {
      open--;
      closed.push(kind);
    });
    if (kind === 'list') {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ metadata: { resourceVersion: '10' }, items: [] }));
      }, listDelayMs);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders();
    onWatch(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const api = kubeApi({ server: `http://127.0.0.1:${port}`, origin: 'test', apply: async () => {} });
  return {
    api,
    closed,
    open: () => open,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

const line = (type: string, name: string, rv: number, pad = '') =>
  `${JSON.stringify({ type, object: { metadata: { name, namespace: 'a', uid: `u-${name}`, resourceVersion: String(rv) }, pad } })}\n`;

test('real client: event bytes come from the line length, so big events overflow the byte bound', async () => {
  let watches = 0;
  const srv = await httpCluster((res) => {
    watches++;
    // the first stream sends ten 4 KB events at once; later ones nothing
    if (watches === 1)
      res.write(Array.from({ length: 10 }, (_, i) => line('ADDED', `o${i}`, 11 + i, 'x'.repeat(4000))).join(''));
  });
  const restarts: string[] = [];
  const seen: string[] = [];
  const t = reflector(srv.api, {
    maxQueuedBytes: 3 * 4100,
    onRestart: (why) => restarts.push(why),
    handler: {
      onList: async (pages) => {
        for await (const _ of pages) {
        }
      },
      onEvent: async (_type, obj: KubeObject) => {
        await sleep(2);
        seen.push(obj.metadata.name);
      },
      waitForResource: async () => {},
    },
  });
  try {
    await until(() => watches >= 2, 'the stream reopened after the overflow');
    assert.ok(restarts.includes('overflow'));
    assert.equal(t.r.resourceVersion, String(11 + seen.length - 1));
    assert.ok(seen.length >= 4 && seen.length < 10, `handed on before the close: ${seen.length}`);
  } finally {
    await t.stop();
    srv.close();
  }
});

test('real client: a WATCH in flight and a LIST in flight are aborted promptly at shutdown', async () => {
  const srv = await httpCluster(() => {});
  const t = reflector(srv.api);
  await until(() => srv.open() === 1 && srv.closed.includes('list'), 'the watch open');
  const t0 = Date.now();
  await t.stop();
  await until(() => srv.open() === 0, 'the server sees the watch connection closed', 1000);
  assert.ok(Date.now() - t0 < 500, `took ${Date.now() - t0} ms`);
  srv.close();

  const slow = await httpCluster(() => {}, 60_000);
  const l = reflector(slow.api);
  await until(() => slow.open() === 1, 'the LIST in flight');
  const t1 = Date.now();
  await l.stop();
  await until(() => slow.open() === 0, 'the server sees the LIST connection closed', 1000);
  assert.ok(Date.now() - t1 < 500, `took ${Date.now() - t1} ms`);
  slow.close();
});

test('accessError: core group, cluster scope, service-account subjects, 401 and network failures', () => {
  const sa = new KubeHttpError(
    403,
    'Forbidden',
    'GET /api/v1/nodes: HTTP 403: nodes is forbidden: User "system:serviceaccount:ops:crbridge" cannot list resource "nodes"',
  );
  const nodes = accessError(
    sa,
    'list',
    { group: '', version: 'v1', resource: 'nodes' },
    { namespace: null, namespaced: false },
  );
  assert.equal(nodes.code, 'CRB_FORBIDDEN');
  assert.match(nodes.message, /^cannot list nodes\/v1 \(cluster-scoped\): forbidden/);
  assert.match(
    nodes.message,
    /kubectl create clusterrole crbridge-nodes --verb=get,list,watch --resource=nodes && kubectl create clusterrolebinding crbridge-nodes --clusterrole=crbridge-nodes --serviceaccount=ops:crbridge;/,
  );
  const scope = { namespace: 'a', namespaced: true };
  const u = accessError(new KubeHttpError(401, 'Unauthorized', 'HTTP 401: Unauthorized'), 'watch', backups, scope);
  assert.equal(u.code, 'CRB_UNAUTHORIZED');
  assert.match(
    u.message,
    /^cannot watch backups\.example\.com\/v1 in namespace "a": the API server refused the credentials/,
  );
  const net = accessError(
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }),
    'list',
    backups,
    scope,
  );
  assert.equal(net.code, 'CRB_KUBE_API');
  assert.equal(net.details.cause, 'list:ECONNREFUSED');
  assert.match(
    net.message,
    /^cannot list backups\.example\.com\/v1 in namespace "a": connect ECONNREFUSED .*; retrying with backoff$/,
  );
});

test('the server-side watch timeout of each WATCH is spread uniformly over [t, 2t], as client-go draws it', async () => {
  const c = new FakeCluster();
  const draws = [0, 0.5, 0.999, 0.25];
  let i = 0;
  const x = reflector(c, { watchTimeoutSeconds: 60, random: () => draws[i++ % draws.length] as number });
  try {
    for (let n = 1; n <= 4; n++) {
      await until(() => c.watches === n, `watch ${n}`);
      if (n < 4) c.closeWatches(); // a server timeout: reopened at once
    }
    assert.deepEqual(
      c.watchQueries.map((q) => q.timeoutSeconds),
      [60, 90, 119, 75],
    );
  } finally {
    await x.stop();
  }
  // with the default random source, every timeout stays in [t, 2t] and they differ
  const d = new FakeCluster();
  const y = reflector(d, { watchTimeoutSeconds: 300 });
  try {
    for (let n = 1; n <= 20; n++) {
      await until(() => d.watches === n, `watch ${n}`);
      if (n < 20) d.closeWatches();
    }
    const ts = d.watchQueries.map((q) => Number(q.timeoutSeconds));
    assert.ok(
      ts.every((t) => Number.isInteger(t) && t >= 300 && t <= 600),
      `${ts}`,
    );
    assert.ok(new Set(ts).size > 1, `the timeouts are spread, not all ${ts[0]}`);
  } finally {
    await y.stop();
  }
});

test('the reconnect backoff starts over after a healthy watch (it delivered an event, or stayed open), not only after a LIST', async (tc) => {
  const clock = fakeClock(tc);
  const c = new FakeCluster();
  const log = capture('debug');
  const x = reflector(c, {
    logger: log.logger,
    // the defaults: 1 s doubling up to 30 s; a watch open 10 s was healthy; stall watchdog 150 s
    stallTimeoutMs: 150_000,
    backoffInitialMs: 1000,
    backoffMaxMs: 30_000,
    random: () => 1, // no jitter: the delay is the attempt's base
  });
  const attempts = () => log.lines.filter((l) => l.phase === 'watch').map((l) => [l.attempt, l.delayMs]);
  try {
    await clock.until(() => c.watches === 1, 'first watch');
    // two refused reconnects, then one that opens and breaks at once (not healthy): the backoff grows
    c.failNewWatches = 2;
    c.breakWatches();
    await clock.until(() => c.watches === 2, 'second watch');
    c.breakWatches();
    await clock.until(() => c.watches === 3, 'third watch');
    assert.deepEqual(attempts(), [
      [1, 1000],
      [2, 2000],
      [3, 4000],
      [4, 8000],
    ]);
    // a watch open for 9 s was not yet healthy: the next failure backs off further
    await clock.advance(9_000, 100);
    c.breakWatches();
    await clock.until(() => c.watches === 4, 'fourth watch');
    assert.deepEqual(attempts().at(-1), [5, 16000]);
    // a watch that stayed open past healthyWatchMs (10 s) was healthy: the next failure starts over
    await clock.advance(10_500, 100);
    c.breakWatches();
    await clock.until(() => c.watches === 5, 'fifth watch');
    assert.deepEqual(attempts().at(-1), [1, 1000]);
    // a watch that delivered an event was healthy too, however short
    c.failNewWatches = 1;
    c.breakWatches();
    await clock.until(() => c.watches === 6, 'sixth watch');
    assert.deepEqual(attempts().slice(-2), [
      [2, 2000],
      [3, 4000],
    ]);
    c.create('a', 'x1');
    await clock.until(() => x.seen.includes('x1'), 'the event handed on');
    c.breakWatches();
    await clock.until(() => c.watches === 7, 'seventh watch');
    assert.deepEqual(attempts().at(-1), [1, 1000]);
    assert.equal(x.lists(), 1, 'no relist: the reset came from the watch');
  } finally {
    await x.stop();
  }
});
