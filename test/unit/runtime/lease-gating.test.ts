/**
 * The runtime under leader election, with fake components and a fake elector: a standby starts
 * no sink and no source that cannot wait (it emits nothing) and is ready saying who leads; a
 * warm-standby source runs and its `leadership` resolves only once elected and the sinks are up;
 * once elected sinks start, then sources; shutdown stops sources, drains sinks and only then
 * releases the leadership; a standby's shutdown stops nothing it never started.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type {
  DeliveryResult,
  Sink,
  SinkFactory,
  Source,
  SourceContext,
  SourceFactory,
} from '../../../src/component.ts';
import type { LoadedPipeline } from '../../../src/config/types.ts';
import type { Elector, LeadershipState } from '../../../src/election.ts';
import type { Registry } from '../../../src/registry.ts';
import { Runtime } from '../../../src/runtime/runtime.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';

class FakeElector implements Elector {
  readonly identity = 'pod-b';
  leader: string | undefined = 'pod-a';
  private leading = false;
  private readonly listeners: ((l: boolean) => void)[] = [];
  private readonly log: string[];
  constructor(log: string[]) {
    this.log = log;
  }
  get isLeader() {
    return this.leading;
  }
  state(): LeadershipState {
    return { identity: this.identity, leading: this.leading, leader: this.leader };
  }
  async start() {
    this.log.push('elector start');
  }
  onChange(l: (leading: boolean) => void) {
    this.listeners.push(l);
    return () => {};
  }
  elect() {
    this.leading = true;
    this.leader = this.identity;
    for (const l of this.listeners) l(true);
  }
  async shutdown() {
    this.log.push('elector release');
    this.leading = false;
  }
}

function registry(log: string[], warmStandby = false, seen: SourceContext[] = []): Registry {
  const source: SourceFactory<Record<string, unknown>> = {
    kind: 'source',
    type: 'fake',
    description: 'fake source',
    configSchema: {},
    shareKey: () => 'one',
    ...(warmStandby && { warmStandby }),
    create(_c, ctx): Source {
      seen.push(ctx);
      return {
        synced: true,
        status: () => ({ ready: false, live: true, reasons: ['listing'] }),
        start: async () => void log.push(`start source ${ctx.id}`),
        shutdown: async () => void log.push(`stop source ${ctx.id}`),
      };
    },
  };
  const sink: SinkFactory<Record<string, unknown>> = {
    kind: 'sink',
    type: 'memory',
    description: 'fake sink',
    configSchema: {},
    create(_c, ctx): Sink {
      return {
        maxBatch: 10,
        start: async () => void log.push(`start sink ${ctx.id}`),
        shutdown: async () => void log.push(`stop sink ${ctx.id}`),
        send: async (b): Promise<DeliveryResult[]> => b.map(() => ({ status: 'ok' })),
      };
    },
  };
  return { sources: [source], stages: [], sinks: [sink] };
}

const pipeline: LoadedPipeline = {
  file: 'a.yaml',
  document: 0,
  config: {
    apiVersion: 'crbridge.io/v1alpha1',
    kind: 'Pipeline',
    metadata: { name: 'a' },
    spec: { source: { type: 'fake' }, stages: [], sinks: [{ name: 's', type: 'memory' }] },
  } as never,
};

function setup(warmStandby = false) {
  const log: string[] = [];
  const seen: SourceContext[] = [];
  const elector = new FakeElector(log);
  const rt = new Runtime([pipeline], registry(log, warmStandby, seen), {
    stateDir: mkdtempSync(join(tmpdir(), 'crb-lease-rt-')),
    clusterName: 'unit',
    logger: silentLogger,
    metrics: new Metrics(),
    elector,
  });
  return { log, elector, rt, seen, ac: new AbortController() };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

test('a standby starts nothing and is ready; elected, it starts sinks then sources; release comes last', async () => {
  const { log, elector, rt, ac } = setup();
  await rt.start(ac.signal);
  await tick();
  assert.deepEqual(log, ['elector start'], 'a standby starts no sink and no source');
  assert.deepEqual(rt.status(), { ready: true, live: true, reasons: ['standby (pod-b): pod-a leads'] });
  elector.elect();
  await tick();
  assert.deepEqual(log, ['elector start', 'start sink a/s', 'start source a/source']);
  assert.equal(rt.status().ready, false, 'the leader is ready as its sources are');
  log.length = 0;
  await rt.shutdown(Date.now() + 2000);
  assert.deepEqual(log, ['stop source a/source', 'stop sink a/s', 'elector release']);
  ac.abort();
});

test('a standby that never led stops nothing on shutdown, and starts nothing when elected afterwards', async () => {
  const { log, elector, rt, ac } = setup();
  await rt.start(ac.signal);
  await rt.shutdown(Date.now() + 2000);
  elector.elect();
  await tick();
  assert.deepEqual(log, ['elector start', 'elector release']);
  ac.abort();
});

test('a warm-standby source runs on a standby; its leadership resolves once elected and the sinks are up', async () => {
  const { log, elector, rt, seen, ac } = setup(true);
  await rt.start(ac.signal);
  assert.deepEqual(log, ['start source a/source', 'elector start'], 'the warm source runs, no sink');
  const leadership = seen[0]?.leadership;
  assert.ok(leadership, 'the source gets the leadership');
  assert.equal(leadership.leading, false);
  let resolvedWith: string[] | undefined;
  void leadership.whenLeading(ac.signal).then(() => {
    resolvedWith = [...log];
  });
  await tick();
  assert.equal(resolvedWith, undefined, 'not before the election');
  assert.equal(rt.status().ready, true, 'a standby is ready');
  elector.elect();
  await tick();
  assert.deepEqual(
    resolvedWith,
    ['start source a/source', 'elector start', 'start sink a/s'],
    'after the sinks started',
  );
  assert.equal(leadership.leading, true);
  assert.equal(log.filter((l) => l.startsWith('start source')).length, 1, 'the source is not started twice');
  log.length = 0;
  await rt.shutdown(Date.now() + 2000);
  assert.deepEqual(log, ['stop source a/source', 'stop sink a/s', 'elector release']);
  ac.abort();
});

test('a warm-standby source of a standby that never led is stopped on shutdown; no sink is', async () => {
  const { log, rt, ac } = setup(true);
  await rt.start(ac.signal);
  await rt.shutdown(Date.now() + 2000);
  assert.deepEqual(log, ['start source a/source', 'elector start', 'stop source a/source', 'elector release']);
  ac.abort();
});
