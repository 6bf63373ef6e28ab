/**
 * The runtime's contracts with fake components (the real ones are covered on the real stack):
 * pipelines naming the same source share one instance whose deltas fan out to all of them; sinks
 * start before sources; sources stop before sinks drain; shutdown is idempotent; a delta settles
 * only when every pipeline's sinks have it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type {
  ComponentContext,
  DeliveryResult,
  OutboundEvent,
  Sink,
  SinkFactory,
  Source,
  SourceContext,
  SourceFactory,
} from '../../../src/component.ts';
import type { LoadedPipeline, PipelineConfig } from '../../../src/config/types.ts';
import { CrbridgeError } from '../../../src/errors.ts';
import type { Registry } from '../../../src/registry.ts';
import { Runtime } from '../../../src/runtime/runtime.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { backup, delta } from '../events/fixtures.ts';

interface World {
  log: string[];
  sources: { config: { group: string; resource: string }; ctx: SourceContext }[];
  delivered: Map<string, string[]>;
  /** Sinks hold their sends until released (to observe settling). */
  gate: { open: boolean; waiters: (() => void)[] };
}

function fakeRegistry(w: World, extra: Partial<SourceFactory<{ group: string; resource: string }>> = {}): Registry {
  const source: SourceFactory<{ group: string; resource: string }> = {
    kind: 'source',
    type: 'fake',
    description: 'fake source',
    configSchema: {},
    shareKey: (c) => `${c.group}/${c.resource}`,
    create(config, ctx): Source {
      w.sources.push({ config, ctx });
      const id = ctx.id;
      return {
        synced: true,
        status: () => ({ ready: true, live: true, reasons: [] }),
        start: async () => {
          w.log.push(`start source ${id}`);
        },
        shutdown: async () => {
          w.log.push(`stop source ${id}`);
        },
      };
    },
    ...extra,
  };
  const sink: SinkFactory<Record<string, unknown>> = {
    kind: 'sink',
    type: 'memory',
    description: 'fake sink',
    configSchema: {},
    create(_config, ctx): Sink {
      const got: string[] = [];
      w.delivered.set(ctx.id, got);
      let stops = 0;
      return {
        maxBatch: 10,
        start: async () => {
          w.log.push(`start sink ${ctx.id}`);
        },
        shutdown: async () => {
          stops++;
          w.log.push(`stop sink ${ctx.id} (${stops})`);
        },
        send: async (batch: readonly OutboundEvent[]): Promise<DeliveryResult[]> => {
          while (!w.gate.open) await new Promise<void>((r) => w.gate.waiters.push(r));
          for (const b of batch) got.push(b.event.id);
          return batch.map(() => ({ status: 'ok' }));
        },
      };
    },
  };
  return { sources: [source], stages: [], sinks: [sink] };
}

function pipeline(name: string, resource: string, sinks: string[]): LoadedPipeline {
  const config: PipelineConfig = {
    apiVersion: 'crbridge.io/v1alpha1',
    kind: 'Pipeline',
    metadata: { name },
    spec: {
      source: { type: 'fake', group: 'example.com', resource },
      stages: [],
      sinks: sinks.map((s) => ({ name: s, type: 'memory' })),
    },
  };
  return { file: `${name}.yaml`, document: 0, config };
}

function world(): World {
  return { log: [], sources: [], delivered: new Map(), gate: { open: true, waiters: [] } };
}

function runtime(w: World, pipelines: LoadedPipeline[]): Runtime {
  return new Runtime(pipelines, fakeRegistry(w), {
    stateDir: mkdtempSync(join(tmpdir(), 'crb-runtime-')),
    clusterName: 'unit',
    logger: silentLogger,
    metrics: new Metrics(),
  });
}

test('pipelines naming the same source share one instance; a different resource gets its own', () => {
  const w = world();
  const rt = runtime(w, [
    pipeline('a', 'backups', ['s']),
    pipeline('b', 'backups', ['s']),
    pipeline('c', 'restores', ['s']),
  ]);
  assert.equal(w.sources.length, 2);
  assert.deepEqual(
    rt.sources.map((s) => s.pipelines),
    [['a', 'b'], ['c']],
  );
  assert.equal(w.log.length, 0, 'building performs no I/O: nothing started');
});

test('sinks start before sources; sources stop before sinks drain; shutdown is idempotent', async () => {
  const w = world();
  const rt = runtime(w, [pipeline('a', 'backups', ['s1', 's2']), pipeline('b', 'backups', ['s1'])]);
  const ac = new AbortController();
  await rt.start(ac.signal);
  const firstSource = w.log.findIndex((l) => l.startsWith('start source'));
  assert.equal(firstSource, 3, `three sinks started first: ${w.log.join('; ')}`);
  w.log.length = 0;
  const deadline = Date.now() + 5000;
  const [p1, p2] = [rt.shutdown(deadline), rt.shutdown(deadline)];
  assert.equal(p1, p2, 'a second shutdown returns the same promise');
  await p1;
  assert.match(w.log[0] ?? '', /^stop source/, `sources stop first: ${w.log.join('; ')}`);
  assert.equal(w.log.filter((l) => l.startsWith('stop sink')).length, 3, 'every sink stopped once');
  assert.ok(
    w.log.every((l) => !l.includes('(2)')),
    'no sink stopped twice',
  );
  ac.abort();
});

test('a shared source fans each delta out to every pipeline; it settles only when all sinks have it', async () => {
  const w = world();
  const rt = runtime(w, [pipeline('a', 'backups', ['s1', 's2']), pipeline('b', 'backups', ['s1'])]);
  const ac = new AbortController();
  await rt.start(ac.signal);
  const receiver = w.sources[0]?.ctx.receiver;
  assert.ok(receiver);
  w.gate.open = false;
  const { settled } = await receiver.push(delta('added', backup({ rv: '10' })));
  let done = false;
  void settled.then(() => {
    done = true;
  });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(done, false, 'not settled while the sinks hold the event');
  w.gate.open = true;
  for (const r of w.gate.waiters.splice(0)) r();
  await settled;
  const ids = ['a/s1', 'a/s2', 'b/s1'].map((k) => w.delivered.get(k));
  assert.equal(ids[0]?.length, 1);
  assert.deepEqual(ids[1], ids[0]);
  assert.deepEqual(ids[2], ids[0], 'the same event id in every pipeline');
  await rt.shutdown(Date.now() + 5000);
  ac.abort();
});

test('pipelines checking the same CRD share one schema validator: one start, stopped after the last pipeline', async () => {
  const w = world();
  const made: string[] = [];
  const calls: string[] = [];
  const withCrd = (name: string, resource: string, version = 'v1') => {
    const p = pipeline(name, resource, ['s']);
    p.config.spec.source = { ...p.config.spec.source, version };
    p.config.spec.validation = { crdSchema: true };
    return p;
  };
  // the factory memoizes one validator per resource and version through the runtime's ctx.shared
  const registry = fakeRegistry(w, {
    objectSchema(config, ctx) {
      const key = `${config.resource}/${String((config as { version?: string }).version)}`;
      assert.ok(ctx.shared, 'the runtime hands down its per-process memo');
      return ctx.shared(`fake:schema:${key}`, () => {
        made.push(key);
        return {
          validate: () => [],
          start: async () => {
            calls.push(`start ${key}`);
          },
          stop: () => {
            calls.push(`stop ${key}`);
          },
        };
      });
    },
  });
  const rt = new Runtime(
    [withCrd('a', 'backups'), withCrd('b', 'backups'), withCrd('c', 'restores'), withCrd('d', 'backups', 'v2')],
    registry,
    {
      stateDir: mkdtempSync(join(tmpdir(), 'crb-runtime-')),
      clusterName: 'unit',
      logger: silentLogger,
      metrics: new Metrics(),
    },
  );
  assert.deepEqual(made, ['backups/v1', 'restores/v1', 'backups/v2'], 'one validator per CRD and version');
  const ac = new AbortController();
  await rt.start(ac.signal);
  assert.deepEqual(calls.sort(), ['start backups/v1', 'start backups/v2', 'start restores/v1']);
  calls.length = 0;
  await rt.shutdown(Date.now() + 5000);
  assert.deepEqual(calls.sort(), ['stop backups/v1', 'stop backups/v2', 'stop restores/v1'], 'each stopped once');
  ac.abort();
});

test('validation.crdSchema with a source type that declares no object schema is a clear error', () => {
  const w = world();
  const p = pipeline('a', 'backups', ['s']);
  p.config.spec.validation = { crdSchema: true };
  assert.throws(
    () => runtime(w, [p]),
    (err: unknown) => {
      assert.ok(err instanceof CrbridgeError);
      assert.equal(err.code, 'CRB_CONFIG_INVALID');
      assert.match(err.message, /^a\.yaml: pipeline "a" sets spec\.validation\.crdSchema, but source type "fake"/);
      assert.match(err.message, /remove validation\.crdSchema/);
      return true;
    },
  );
});

test('RuntimeOptions.crdSchemaFor replaces the factory’s objectSchema (test injection)', async () => {
  const w = world();
  const p = pipeline('a', 'backups', ['s']);
  p.config.spec.validation = { crdSchema: true };
  const asked: Record<string, unknown>[] = [];
  const rt = new Runtime([p], fakeRegistry(w), {
    stateDir: mkdtempSync(join(tmpdir(), 'crb-runtime-')),
    clusterName: 'unit',
    logger: silentLogger,
    metrics: new Metrics(),
    crdSchemaFor: (source) => {
      asked.push(source);
      return { validate: () => [], start: async () => {}, stop: () => {} };
    },
  });
  assert.deepEqual(asked, [{ group: 'example.com', resource: 'backups' }], 'the source block without its type');
  await rt.shutdown(Date.now() + 1000);
});

test('every component gets the one per-process memo and the command line settings', () => {
  const w = world();
  const seen: ComponentContext[] = [];
  const registry = fakeRegistry(w);
  const sink = registry.sinks[0] as SinkFactory;
  const create = sink.create.bind(sink);
  sink.create = (config, ctx) => {
    seen.push(ctx);
    return create(config, ctx);
  };
  new Runtime([pipeline('a', 'backups', ['s']), pipeline('b', 'restores', ['s'])], registry, {
    stateDir: mkdtempSync(join(tmpdir(), 'crb-runtime-')),
    clusterName: 'unit',
    logger: silentLogger,
    metrics: new Metrics(),
    settings: { kubeconfig: '/etc/kube/config' },
  });
  const all = [...seen, ...w.sources.map((s) => s.ctx)];
  assert.equal(all.length, 4);
  let built = 0;
  const make = () => ({ n: ++built });
  const instances = all.map((c) => c.shared?.('client', make));
  assert.equal(built, 1, 'built once, on first use');
  assert.ok(
    instances.every((i) => i === instances[0]),
    'the same instance for every component',
  );
  assert.throws(
    () =>
      all[0]?.shared?.('broken', () => {
        throw new Error('no credentials');
      }),
    /no credentials/,
  );
  assert.equal(
    all[1]?.shared?.('broken', () => 'ok'),
    'ok',
    'a failed build is not cached',
  );
  for (const c of all) assert.equal(c.settings?.kubeconfig, '/etc/kube/config');
});

test('a shared source is told every consumer with its pipeline’s initial; a targeted delta reaches only those sinks', async () => {
  const w = world();
  const a = pipeline('a', 'backups', ['s1', 's2']);
  const b = pipeline('b', 'backups', ['s1']);
  b.config.spec.source = { ...b.config.spec.source, initial: 'skip' };
  const rt = runtime(w, [a, b]);
  assert.deepEqual(w.sources[0]?.ctx.consumers, [
    { id: 'a/s1', initial: 'emit' },
    { id: 'a/s2', initial: 'emit' },
    { id: 'b/s1', initial: 'skip' },
  ]);
  const ac = new AbortController();
  await rt.start(ac.signal);
  const receiver = w.sources[0]?.ctx.receiver;
  assert.ok(receiver);
  const { settled } = await receiver.push({ ...delta('added', backup({ rv: '10' })), targets: ['a/s2', 'b/s1'] });
  await settled;
  assert.equal(w.delivered.get('a/s1')?.length, 0, 'not a target');
  assert.equal(w.delivered.get('a/s2')?.length, 1);
  assert.equal(w.delivered.get('b/s1')?.length, 1);
  const none = await receiver.push({ ...delta('added', backup({ rv: '11' })), targets: [] });
  await none.settled;
  assert.deepEqual(
    ['a/s1', 'a/s2', 'b/s1'].map((k) => w.delivered.get(k)?.length),
    [0, 1, 1],
    'a delta for nobody settles without reaching a sink',
  );
  await rt.shutdown(Date.now() + 5000);
  ac.abort();
});
