/**
 * The ops endpoint's probes: `/readyz` and `/healthz` follow the runtime's aggregated status as it
 * is now (503 with one line per reason, 200 again without a restart), `/healthz` also fails while
 * the event loop is blocked beyond its limit, and the runtime prefixes each source's reasons with
 * the source's id (and its pipelines when shared).
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ComponentStatus, Sink, SinkFactory, Source, SourceFactory } from '../../../src/component.ts';
import type { LoadedPipeline } from '../../../src/config/types.ts';
import { Runtime } from '../../../src/runtime/runtime.ts';
import { startOpsServer } from '../../../src/server/http.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

test('/readyz and /healthz follow the current status: 503 with the reasons, 200 again', async () => {
  let st: ComponentStatus = { ready: false, live: true, reasons: ['p/source: cannot list backups: forbidden'] };
  const srv = await startOpsServer({ host: '127.0.0.1', port: 0, metrics: new Metrics(), status: () => st });
  try {
    assert.deepEqual(await get(srv.port, '/readyz'), {
      status: 503,
      body: 'not ready\np/source: cannot list backups: forbidden\n',
    });
    assert.deepEqual(await get(srv.port, '/healthz'), { status: 200, body: 'ok\n' }, 'not ready is not dead');
    st = { ready: true, live: true, reasons: [] };
    assert.deepEqual(await get(srv.port, '/readyz'), { status: 200, body: 'ok\n' });
    st = { ready: false, live: false, reasons: ['p/source: stuck: no answer for 500 s'] };
    assert.deepEqual(await get(srv.port, '/healthz'), {
      status: 503,
      body: 'not live\np/source: stuck: no answer for 500 s\n',
    });
    assert.equal((await get(srv.port, '/readyz')).status, 503);
    st = { ready: true, live: true, reasons: [] };
    assert.equal((await get(srv.port, '/healthz')).status, 200);
    assert.equal((await get(srv.port, '/nope')).status, 404);
  } finally {
    await srv.close();
  }
});

test('/healthz fails while the event loop is blocked beyond the limit, and recovers', async () => {
  const srv = await startOpsServer({
    host: '127.0.0.1',
    port: 0,
    metrics: new Metrics(),
    status: () => ({ ready: true, live: true, reasons: [] }),
    maxEventLoopDelayMs: 150,
    eventLoopWindowMs: 100,
  });
  try {
    await sleep(250);
    assert.equal((await get(srv.port, '/healthz')).status, 200);
    // block the loop for 400 ms, as a runaway synchronous computation would
    const request = get(srv.port, '/healthz');
    const end = Date.now() + 400;
    while (Date.now() < end) {}
    const blocked = await request;
    assert.equal(blocked.status, 503);
    assert.match(
      blocked.body,
      /^not live\nevent loop: delayed \d+ ms \(limit 150 ms\): the process is not responsive\n$/,
    );
    await sleep(350);
    assert.deepEqual(await get(srv.port, '/healthz'), { status: 200, body: 'ok\n' });
  } finally {
    await srv.close();
  }
});

test('the runtime aggregates its sources: ready and live only if all are, reasons prefixed by source', async () => {
  const states = new Map<string, ComponentStatus>();
  const source: SourceFactory<{ resource: string }> = {
    kind: 'source',
    type: 'fake',
    description: 'fake source',
    configSchema: {},
    shareKey: (c) => c.resource,
    create(config): Source {
      return {
        synced: true,
        status: () => states.get(config.resource) ?? { ready: true, live: true, reasons: [] },
        start: async () => {},
        shutdown: async () => {},
      };
    },
  };
  const sink: SinkFactory<Record<string, unknown>> = {
    kind: 'sink',
    type: 'memory',
    description: 'fake sink',
    configSchema: {},
    create: (): Sink => ({
      maxBatch: 1,
      start: async () => {},
      shutdown: async () => {},
      send: async (batch) => batch.map(() => ({ status: 'ok' })),
    }),
  };
  const pipeline = (name: string, resource: string): LoadedPipeline => ({
    file: `${name}.yaml`,
    document: 0,
    config: {
      apiVersion: 'crbridge.io/v1alpha1',
      kind: 'Pipeline',
      metadata: { name },
      spec: { source: { type: 'fake', resource }, stages: [], sinks: [{ name: 's', type: 'memory' }] },
    },
  });
  const rt = new Runtime(
    [pipeline('a', 'backups'), pipeline('b', 'backups'), pipeline('c', 'restores')],
    { sources: [source], stages: [], sinks: [sink] },
    {
      stateDir: mkdtempSync(join(tmpdir(), 'crb-probes-')),
      clusterName: 'unit',
      logger: silentLogger,
      metrics: new Metrics(),
    },
  );
  assert.deepEqual(rt.status(), { ready: true, live: true, reasons: [] });
  states.set('backups', { ready: false, live: true, reasons: ['cannot list backups: forbidden'] });
  states.set('restores', { ready: true, live: false, reasons: ['stuck'] });
  assert.deepEqual(rt.status(), {
    ready: false,
    live: false,
    reasons: ['shared/fake-0 (pipelines a, b): cannot list backups: forbidden', 'c/source: stuck'],
  });
  states.clear();
  assert.deepEqual(rt.status(), { ready: true, live: true, reasons: [] });
});
