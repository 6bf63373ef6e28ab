/**
 * Level-3 validation wired into a pipeline (src/runtime/pipeline.ts): the CRD schema is listed and
 * watched (the Kubernetes source's CRD reflector, src/sources/kubernetes/crd-schema.ts) when the
 * pipeline starts; the first delta waits for
 * it; invalid events go to the dead letters with their errors, are counted by level and logged
 * once per kind of error; valid ones reach the sinks; the watch stops at shutdown.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import type { DeadLetterEntry } from '../../../src/delivery/dead-letter.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { createEventValidator } from '../../../src/events/validate.ts';
import { PipelineRunner } from '../../../src/runtime/pipeline.ts';
import type { KubeApi, Query } from '../../../src/sources/kubernetes/client.ts';
import { CRD_COLLECTION, crdSchemaFor } from '../../../src/sources/kubernetes/crd-schema.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { backup, delta } from './fixtures.ts';

const CRD = parse(readFileSync(new URL('../../fixtures/crds/backup.yaml', import.meta.url), 'utf8')) as {
  metadata: Record<string, unknown>;
  spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] };
};
CRD.metadata.uid = 'crd-uid';

function world(opts: { fetchDelayMs?: number; crd?: unknown } = {}) {
  let crd: unknown = opts.crd ?? { ...CRD, metadata: { ...CRD.metadata, resourceVersion: '10' } };
  const gets: string[] = [];
  const watches: { onEvent: (t: string, o: unknown) => void; aborted: boolean }[] = [];
  const api = {
    async request(_m: string, path: string, query: Query = {}) {
      gets.push(`${path}?fieldSelector=${String(query.fieldSelector)}`);
      if (opts.fetchDelayMs) await new Promise((r) => setTimeout(r, opts.fetchDelayMs));
      const item = structuredClone(crd) as { metadata: { resourceVersion?: string } };
      return { metadata: { resourceVersion: item.metadata.resourceVersion }, items: [item] };
    },
    async watch(_p: string, _q: unknown, onEvent: (t: string, o: unknown) => void) {
      const w = { onEvent, aborted: false };
      watches.push(w);
      return {
        abort() {
          w.aborted = true;
        },
      };
    },
  } as unknown as KubeApi;
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l)) });
  const metrics = new Metrics();
  const crdSchema = crdSchemaFor({ group: 'example.com', version: 'v1', resource: 'backups' }, { logger }, () => api);
  const enqueued: CloudEvent[] = [];
  const dead: DeadLetterEntry[] = [];
  const runner = new PipelineRunner({
    name: 'l3',
    eventOptions: { clusterName: 'unit' },
    validator: createEventValidator({ objectSchema: crdSchema }),
    crdSchema,
    stages: [],
    sinks: [
      {
        id: 'l3/out',
        queue: {
          start: async () => {},
          shutdown: async () => {},
          enqueue: async (e: CloudEvent) => {
            enqueued.push(e);
            return { settled: Promise.resolve() };
          },
        } as never,
      },
    ],
    deadLetter: {
      write: async (e) => {
        dead.push(e);
      },
      close: async () => {},
    },
    logger,
    metrics,
  });
  return {
    runner,
    gets,
    watches,
    logs,
    metrics,
    enqueued,
    dead,
    setCrd(next: unknown) {
      crd = next;
    },
  };
}

function withPhase(name: string, uid: string, phase: string): KubeObject {
  const o = backup({ phase });
  return { ...o, metadata: { ...o.metadata, name, uid } };
}

describe('pipeline level-3 validation (spec.validation.crdSchema)', () => {
  it('fetches the CRD at start, holds the first delta for it, dead-letters invalid objects with their errors', async () => {
    const w = world({ fetchDelayMs: 30 });
    await w.runner.start(new AbortController().signal);
    // pushed before the fetch finished: still checked against the CRD
    await w.runner.push(delta('added', withPhase('a', 'u-a', 'Exploded')));
    await w.runner.push(delta('added', withPhase('b', 'u-b', 'Running')));
    await w.runner.push(delta('added', withPhase('c', 'u-c', 'Imploded')));
    assert.deepEqual(w.gets, [`${CRD_COLLECTION}?fieldSelector=metadata.name=backups.example.com`], 'one LIST');
    assert.equal(w.watches.length, 1, 'the CRD is watched');
    assert.deepEqual(
      w.enqueued.map((e) => e.subject),
      ['shop/b'],
      'valid events go on',
    );
    assert.deepEqual(
      w.dead.map((d) => [d.event.subject, d.code, d.errors]),
      [
        [
          'shop/a',
          'CRB_EVENT_INVALID',
          ['object: /data/object/status/phase must be equal to one of the allowed values'],
        ],
        [
          'shop/c',
          'CRB_EVENT_INVALID',
          ['object: /data/object/status/phase must be equal to one of the allowed values'],
        ],
      ],
    );
    const invalid = w.metrics.counter('crbridge_events_invalid_total', '');
    assert.equal(invalid.get({ component: 'l3', level: 'object' }), 2);
    const errors = w.metrics.counter('crbridge_component_errors_total', '');
    assert.equal(errors.get({ component: 'l3', code: 'CRB_EVENT_INVALID' }), 2);
    const warned = w.logs.filter((l) => l.msg === 'event failed validation; dead-lettered');
    assert.equal(warned.length, 1, 'logged once per kind of error');
    assert.equal(warned[0]?.level, 'warn');
    assert.equal(warned[0]?.validationLevel, 'object');
    assert.equal(warned[0]?.kind, '/data/object/status/phase must be equal to one of the allowed values');
    assert.ok(w.logs.some((l) => l.msg === 'CRD schema compiled for level-3 validation' && l.resourceVersion === '10'));
    await w.runner.shutdown(Date.now() + 1000);
    assert.equal(w.watches[0]?.aborted, true, 'the CRD watch stops with the pipeline');
  });

  it('recompiles when the watched CRD changes', async () => {
    const w = world();
    await w.runner.start(new AbortController().signal);
    await w.runner.push(delta('added', withPhase('a', 'u-a', 'Archived')));
    assert.equal(w.dead.length, 1);
    const next = structuredClone(CRD);
    next.metadata = { ...next.metadata, resourceVersion: '11' };
    const root = next.spec.versions[0]?.schema.openAPIV3Schema as {
      properties: { status: { properties: { phase: { enum: string[] } } } };
    };
    const phase = root.properties.status.properties.phase;
    phase.enum = [...phase.enum, 'Archived'];
    w.setCrd(next);
    w.watches[0]?.onEvent('MODIFIED', next);
    await new Promise((r) => setTimeout(r, 10));
    await w.runner.push(delta('added', withPhase('b', 'u-b', 'Archived')));
    assert.deepEqual(
      w.enqueued.map((e) => e.subject),
      ['shop/b'],
    );
    assert.ok(w.logs.some((l) => l.msg === 'CRD schema compiled for level-3 validation' && l.resourceVersion === '11'));
    await w.runner.shutdown(Date.now() + 1000);
  });

  it('without a CRD (fetch fails) level 3 is skipped, the failure is logged once, events flow', async () => {
    const broken = world({ crd: { metadata: { name: 'backups.example.com', resourceVersion: '1' }, spec: {} } });
    await broken.runner.start(new AbortController().signal);
    await broken.runner.push(delta('added', withPhase('a', 'u-a', 'Exploded')));
    await broken.runner.push(delta('added', withPhase('b', 'u-b', 'Exploded')));
    assert.equal(broken.enqueued.length, 2);
    assert.equal(broken.dead.length, 0);
    const warns = broken.logs.filter(
      (l) => typeof l.msg === 'string' && l.msg.startsWith('cannot read the CRD schema'),
    );
    assert.equal(warns.length, 1);
    assert.match(String(warns[0]?.error), /no spec.versions/);
    await broken.runner.shutdown(Date.now() + 1000);
  });

  it('warns when the CRD has no schema for the watched version', async () => {
    const other = structuredClone(CRD) as unknown as {
      metadata: Record<string, unknown>;
      spec: { versions: { name: string }[] };
    };
    other.metadata.resourceVersion = '3';
    (other.spec.versions[0] as { name: string }).name = 'v2';
    const w = world({ crd: other });
    await w.runner.start(new AbortController().signal);
    await w.runner.push(delta('added', withPhase('a', 'u-a', 'Exploded')));
    assert.equal(w.enqueued.length, 1, 'v1 objects cannot be checked against v2: skipped');
    assert.ok(w.logs.some((l) => l.level === 'warn' && String(l.msg).includes('no schema for the watched version')));
    await w.runner.shutdown(Date.now() + 1000);
  });
});
