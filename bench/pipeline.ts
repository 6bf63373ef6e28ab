/**
 * Benchmark 1, the in-process pipeline on one core: from a raw watch line (the JSON text of one
 * MODIFIED event) to CloudEvent bytes ready for a sink, with the product's own code for each
 * stage: parse (JSON.parse, as the watch client does), strip (managedFields), diff against the
 * cache, delta, envelope (buildEvent), validation, serialization (structured JSON and the Kafka
 * record), with a CEL filter and an enrich stage between validation and serialization as a
 * pipeline runs them. Objects of ~2 KB and ~20 KB; every event is an update, so oldObject and the
 * patch are included. Reports the end-to-end rate and each stage's cost measured alone on the same
 * data.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { ComponentContext } from '../src/component.ts';
import { toKafkaRecord } from '../src/events/bindings/kafka.ts';
import { buildEvent, type EventOptions } from '../src/events/build.ts';
import type { CloudEvent } from '../src/events/cloudevent.ts';
import type { Delta, KubeObject, ResourceRef } from '../src/events/delta.ts';
import { toStructuredJson } from '../src/events/serialize.ts';
import { createEventValidator } from '../src/events/validate.ts';
import { applyChange, type Change, changeFromWatch, type WatchEventType } from '../src/sources/kubernetes/diff.ts';
import { parsePointers, stripFields } from '../src/sources/kubernetes/strip.ts';
import { enrichStage } from '../src/stages/enrich/index.ts';
import { filterStage } from '../src/stages/filter/index.ts';
import { silentLogger } from '../src/telemetry/logger.ts';
import { Metrics } from '../src/telemetry/metrics.ts';
import { IMAGE_NODE_FLAGS } from './lib/crbridge.ts';
import { backupObject } from './lib/kube.ts';
import { report } from './report.ts';
import type { Benchmark } from './run.ts';

const OBJECTS = 500;
/** Set in the child that re-measures the end-to-end rate under the container image's Node flags. */
const CHILD = process.env.CRBRIDGE_BENCH_PIPELINE_CHILD === '1';
/** The filter keeps every bench event (all are updates with a phase), so everything downstream is timed. */
export const BENCH_FILTER =
  'change != "deleted" && has(object.status) && object.status.phase in ["Running", "Completed"]';
/** Two attributes: one from a label (with a default), one from the phase transition. */
export const BENCH_ENRICH = {
  app: 'object.metadata.?labels["app"].orValue("none")',
  phasefrom: 'has(event.data.transition) ? event.data.transition.from : null',
};
const resource: ResourceRef = {
  group: 'bench.example.com',
  version: 'v1',
  resource: 'backups',
  kind: 'Backup',
  namespaced: true,
};

/** A Backup as the apiserver returns it: server metadata and one managedFields entry included. */
function serverObject(i: number, bytes: number, version: number, uid: string): KubeObject {
  const o = backupObject('bench', `b-${i}`, bytes, version) as KubeObject;
  const spec = o.spec as Record<string, unknown>;
  const md = o.metadata;
  md.uid = uid;
  md.resourceVersion = String(100_000 + i * 2 + version);
  md.generation = version + 1;
  md.creationTimestamp = '2026-11-28T10:00:00Z';
  md.managedFields = [
    {
      manager: 'bench',
      operation: 'Update',
      apiVersion: 'bench.example.com/v1',
      time: '2026-11-28T10:00:00Z',
      fieldsType: 'FieldsV1',
      fieldsV1: {
        'f:metadata': { 'f:labels': { '.': {}, 'f:app': {}, 'f:tier': {} } },
        'f:spec': Object.fromEntries(Object.keys(spec).map((k) => [`f:${k}`, {}])),
        'f:status': { '.': {}, 'f:phase': {} },
      },
    },
  ];
  (o.status as Record<string, unknown>).phase = version % 2 ? 'Running' : 'Completed';
  return o;
}

/**
 * `n` update events of ~`bytes` Backups as the pipeline builds them (oldObject and patch included,
 * managedFields stripped), spread over `objects` objects: the events a sink's queue receives.
 */
export function updateEvents(n: number, bytes: number, objects = OBJECTS): CloudEvent[] {
  const drop = parsePointers(['/metadata/managedFields']);
  const uids = Array.from({ length: objects }, () => randomUUID());
  const out: CloudEvent[] = [];
  for (let k = 0; k < n; k++) {
    const i = k % objects;
    const v = Math.floor(k / objects) + 1;
    const uid = uids[i] as string;
    const oldObject = stripFields(serverObject(i, bytes, v - 1, uid), drop);
    const object = stripFields(serverObject(i, bytes, v, uid), drop);
    out.push(
      buildEvent(
        { kind: 'modified', object, oldObject, reason: 'live', resource, observedAt: Date.now() },
        { clusterName: 'bench' },
      ),
    );
  }
  return out;
}

interface Stage<I, O> {
  name: string;
  fn: (x: I) => O;
}

/**
 * Times `fn` for about `ms` of its own time (at most 10 rounds). Every round gets fresh inputs from `prepare` (not
 * timed): the same objects twice would flatter stages that memoize per object instance.
 */
function timeStage<I, O>(prepare: () => I[], fn: (x: I) => O, ms: number): { nsPerItem: number; outputs: O[] } {
  let outputs: O[] = [];
  let items = 0;
  let spent = 0;
  let rounds = 0;
  do {
    const inputs = prepare();
    const t = performance.now();
    outputs = inputs.map(fn);
    spent += performance.now() - t;
    items += inputs.length;
    rounds++;
  } while (spent < ms && rounds < 10);
  return { nsPerItem: (spent * 1e6) / items, outputs };
}

export const benchmark: Benchmark = {
  name: 'pipeline',
  description: 'in-process: raw watch line → CloudEvent bytes, events/s on one core and per-stage cost',
  budgetSeconds: 60,
  async run({ log }) {
    const ctx: ComponentContext = {
      id: 'bench/stage',
      pipeline: 'bench',
      logger: silentLogger,
      metrics: new Metrics(),
      stateDir: '/nonexistent',
      clusterName: 'bench',
    };
    const celFilter = filterStage.create({ expression: BENCH_FILTER }, ctx);
    const celEnrich = enrichStage.create({ attributes: BENCH_ENRICH }, ctx);
    const drop = parsePointers(['/metadata/managedFields']);
    const buildOpts: EventOptions = { clusterName: 'bench' };
    const validator = createEventValidator();
    for (const bytes of [2048, 20480]) {
      const uids = Array.from({ length: OBJECTS }, () => randomUUID());
      // Two versions of every object; the cache starts at version 1 so each line is a modification.
      const lines: string[] = [];
      for (const v of [0, 1])
        for (let i = 0; i < OBJECTS; i++)
          lines.push(JSON.stringify({ type: 'MODIFIED', object: serverObject(i, bytes, v, uids[i] as string) }));
      const cache = new Map<string, KubeObject>();
      for (let i = 0; i < OBJECTS; i++) {
        const o = stripFields(serverObject(i, bytes, 1, uids[i] as string), drop);
        cache.set(o.metadata.uid, o);
      }
      const lineBytes = Math.round(lines.reduce((n, l) => n + Buffer.byteLength(l), 0) / lines.length);

      const parse: Stage<string, { type: WatchEventType; object: KubeObject }> = {
        name: 'parse',
        fn: (l) => JSON.parse(l) as { type: WatchEventType; object: KubeObject },
      };
      const strip: Stage<{ type: WatchEventType; object: KubeObject }, { type: WatchEventType; object: KubeObject }> = {
        name: 'strip',
        fn: (e) => ({ type: e.type, object: stripFields(e.object, drop) }),
      };
      const diff: Stage<{ type: WatchEventType; object: KubeObject }, Change | undefined> = {
        name: 'diff',
        fn: (e) => {
          const ch = changeFromWatch(cache, e.type, e.object);
          if (ch) applyChange(cache, ch);
          return ch;
        },
      };
      const delta: Stage<Change | undefined, Delta> = {
        name: 'delta',
        fn: (ch) => {
          const c = ch as Change;
          return {
            kind: c.kind,
            object: c.object,
            ...(c.oldObject !== undefined && { oldObject: c.oldObject }),
            reason: 'live',
            resource,
            observedAt: Date.now(),
          };
        },
      };
      const envelope: Stage<Delta, CloudEvent> = { name: 'envelope', fn: (d) => buildEvent(d, buildOpts) };
      const validate: Stage<CloudEvent, CloudEvent> = {
        name: 'validate',
        fn: (e) => {
          const v = validator.validate(e);
          if (!v.ok) throw new Error(`bench event failed validation: ${v.errors.join('; ')}`);
          return e;
        },
      };
      // Stages are synchronous for these two; a dropped event would make the chain throw.
      const only = (out: CloudEvent[] | Promise<CloudEvent[]>): CloudEvent => {
        const e = (out as CloudEvent[])[0];
        if (!e) throw new Error('the bench filter dropped an event');
        return e;
      };
      const filter: Stage<CloudEvent, CloudEvent> = { name: 'filter', fn: (e) => only(celFilter.process(e)) };
      const enrich: Stage<CloudEvent, CloudEvent> = { name: 'enrich', fn: (e) => only(celEnrich.process(e)) };
      const kafkaRecord: Stage<CloudEvent, unknown> = { name: 'serialize_kafka', fn: (e) => toKafkaRecord(e) };
      const structured: Stage<CloudEvent, unknown> = { name: 'serialize_json', fn: (e) => toStructuredJson(e) };
      const stages = [parse, strip, diff, delta, envelope, validate, filter, enrich] as Stage<never, unknown>[];
      const serializers = [kafkaRecord, structured] as Stage<never, unknown>[];

      // Per-stage cost, each stage alone on the previous stage's outputs (the two serializers are
      // alternatives: the Kafka binary record, or the structured JSON other sinks send).
      // Runs the stages before `upTo` on every line (the cache toggles back each pass).
      const upstream = (upTo: number) => () =>
        lines.map((l) => {
          let x: unknown = l;
          for (let i = 0; i < upTo; i++) x = (stages[i] as Stage<never, unknown>).fn(x as never);
          return x as never;
        });
      let events: unknown[] = upstream(stages.length)();
      let totalNs = 0;
      const perStage: Record<string, number> = {};
      // The child measures the end-to-end rate only (the stage costs do not depend on the flags).
      for (const s of CHILD ? [] : [...stages, ...serializers]) {
        const k = stages.indexOf(s);
        const r = timeStage(upstream(k >= 0 ? k : stages.length), s.fn, 700);
        perStage[s.name] = r.nsPerItem;
        if (s === enrich) events = r.outputs;
        if (s !== structured) totalNs += r.nsPerItem;
        if (s === diff && r.outputs.some((o) => o === undefined)) throw new Error('diff produced no change');
      }
      const record = toKafkaRecord(events[0] as CloudEvent);
      const outBytes =
        (record.value?.length ?? 0) + Object.entries(record.headers).reduce((n, [k, v]) => n + k.length + v.length, 0);
      for (const [name, ns] of Object.entries(perStage)) {
        report({
          name: `pipeline.stage.${name}`,
          value: ns / 1000,
          unit: 'µs/event',
          parameters: {
            objectBytes: bytes,
            share: name === structured.name ? 'alternative' : `${((ns / totalNs) * 100).toFixed(0)}%`,
          },
        });
      }

      // End to end: every stage in sequence per event, as the product runs them. Seven windows of
      // ~0.5 s; the median is reported (this VM's neighbours move single windows by ±15 %).
      const chain = [...stages, kafkaRecord as Stage<never, unknown>];
      const windows: number[] = [];
      for (let w = 0; w < 7; w++) {
        let n = 0;
        const t0 = performance.now();
        let t = t0;
        do {
          for (const l of lines) {
            let x: unknown = l;
            for (const s of chain) x = s.fn(x as never);
            n++;
          }
          t = performance.now();
        } while (t - t0 < 500);
        windows.push((n / (t - t0)) * 1000);
      }
      windows.sort((a, b) => a - b);
      const rate = windows[3] as number;
      report({
        name: 'pipeline.events_per_second',
        value: rate,
        unit: 'events/s',
        parameters: {
          objectBytes: bytes,
          watchLineBytes: lineBytes,
          outputBytes: outBytes,
          stages: chain.map((s) => s.name).join('>'),
          core: 1,
          windows: `${windows.length}x0.5s median; min ${Math.round(windows[0] as number)} max ${Math.round(windows.at(-1) as number)}`,
          nodeFlags: process.execArgv.filter((a) => a.startsWith('--max-')).join(' ') || 'node defaults',
        },
      });
      log(
        `~${bytes} B objects: ${Math.round(rate).toLocaleString('en-US')} events/s (median; min ${Math.round(windows[0] as number)}, max ${Math.round(windows.at(-1) as number)}); per stage ${JSON.stringify(Object.fromEntries(Object.entries(perStage).map(([k, v]) => [k, +(v / 1000).toFixed(1)])))} µs`,
      );
    }
    if (CHILD) return;
    // The same end-to-end loop in a child running with the container image's Node flags (a small
    // young generation for memory, which costs throughput): both figures are reported.
    const out = execFileSync(
      process.execPath,
      [...IMAGE_NODE_FLAGS, fileURLToPath(new URL('./run.ts', import.meta.url)), 'pipeline'],
      {
        env: { ...process.env, CRBRIDGE_BENCH_PIPELINE_CHILD: '1' },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    for (const line of out.split('\n')) {
      if (!line.startsWith('{')) continue;
      const r = JSON.parse(line) as Parameters<typeof report>[0];
      report(r);
      log(
        `image flags (${IMAGE_NODE_FLAGS.join(' ')}), ~${String(r.parameters?.objectBytes)} B objects: ${Math.round(r.value).toLocaleString('en-US')} events/s (${String(r.parameters?.windows)})`,
      );
    }
  },
};
