/**
 * @serial: stops and restarts the stack's Jaeger.
 * The otlp-traces sink on the real stack (kube-apiserver, Jaeger v2, Kafka), through the real
 * crbridge CLI: three Backups — one Pending → Running → Completed, one Pending → Failed, one deleted
 * while Running — become one trace each in Jaeger (`/api/v3/traces/{id}` and a search by service),
 * phase spans in order with the start and end times of the events that entered and left each
 * phase, the failure marked, no orphan spans (made by the OpenTelemetry SDK and exported as OTLP
 * protobuf by `@opentelemetry/exporter-trace-otlp-proto`; JSON is the unit tests' and the demo's).
 * Faults on the way: Jaeger is stopped in the middle of the lifecycles, after it has stored their first spans (the stack's Jaeger keeps its traces on
 * disk, so what it had survives its restart); the next changes happen while it is down (the sink's
 * outbox keeps their events), crbridge is killed with -9 and restarted, then Jaeger comes back and
 * the lifecycles finish; afterwards the traces are complete and no span id appears twice. A Kafka
 * consumer reads `traceparent` from the records' headers: its trace id is the one Jaeger shows.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { lifecycleTraceId, parseTraceparent, rootSpanId } from '../../../src/events/trace-context.ts';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { loadStackEnv, stackCtl, waitFor } from '../../support/stack.ts';
import { create, metric, patch, readTopic, withBackupNamespace } from '../events/helpers.ts';
import { adminApi, deleteBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const ns = `it-traces-${suffix}`;
const service = `crbridge-it-${suffix}`;
const topic = `it-traces-${suffix}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-traces-'));
withBackupNamespace(ns);

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: { key: string; value: Record<string, unknown> }[];
  status?: { code?: number | string; message?: string };
}

const toHex = (id: string) => (/^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex'));
const ms = (n: string) => Number(BigInt(n) / 1_000_000n);
const attr = (s: Span, k: string) => {
  const a = s.attributes?.find((x) => x.key === k);
  return a ? Object.values(a.value)[0] : undefined;
};

/** Every span of a trace from Jaeger's API v3 (OTLP JSON in `result`), ids as hex. */
async function jaegerTrace(traceId: string): Promise<Span[]> {
  const r = await fetch(`${env.JAEGER_QUERY_URL}/api/v3/traces/${traceId}`);
  if (r.status !== 200) throw new Error(`GET trace answered ${r.status}`);
  const body = (await r.json()) as {
    result: { resourceSpans: { scopeSpans: { spans: Span[] }[] }[] };
  };
  return body.result.resourceSpans.flatMap((rs) =>
    rs.scopeSpans.flatMap((ss) =>
      ss.spans.map((s) => ({
        ...s,
        traceId: toHex(s.traceId),
        spanId: toHex(s.spanId),
        ...(s.parentSpanId && { parentSpanId: toHex(s.parentSpanId) }),
      })),
    ),
  );
}

function statusOf(s: Span): number {
  const c = s.status?.code;
  return c === 'STATUS_CODE_ERROR' || c === 2 ? 2 : 0;
}

let stopJaeger = false;
after(() => {
  if (stopJaeger) stackCtl(['start', 'jaeger']);
});

test('otlp-traces: a trace per Backup in Jaeger through a Jaeger outage and a kill -9; traceparent on Kafka matches', async (t) => {
  const file = join(dir, 'traces.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'it-traces',
      namespaces: [ns],
      specExtra: '  events:\n    traceContext:\n      enabled: true\n',
      sinks: `    - name: events
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
    - name: jaeger
      type: otlp-traces
      serviceName: ${service}
      encoding: protobuf
      timeoutMs: 2000
      delivery:
        outbox:
          enabled: true
        retry:
          initialIntervalMs: 100
          maxIntervalMs: 500
`,
    }),
  );
  const state = join(dir, 'state');
  const run = () => startCrbridge(runArgs([file], state, ['--cluster-name', 'it']), { ...process.env, ...env });
  const api = adminApi();

  // the lifecycles begin with Jaeger up: their first spans are stored
  const first = run();
  t.after(() => first.stop('SIGKILL'));
  const port = await first.port();
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');
  const step = (ms = 120) => new Promise((r) => setTimeout(r, ms));
  const names = ['done', 'failed', 'gone'];
  for (const name of names)
    create({
      apiVersion: 'example.com/v1',
      kind: 'Backup',
      metadata: { name, namespace: ns },
      spec: { databaseName: `${name}-db`, schedule: '0 3 * * *' },
    });
  await step();
  const uids = new Map<string, string>();
  for (const name of names)
    uids.set(name, patch('backups.example.com', ns, name, { status: { phase: 'Pending' } }, true).metadata.uid);
  await waitFor(
    async () => (await metric(port, 'crbridge_component_sent_events_total', { component: 'it-traces/jaeger' })) >= 6,
    20_000,
    'the first 6 events exported to Jaeger',
  );
  const storedEarly = await waitFor(
    async () => {
      const got = await Promise.all(
        names.map((n) => jaegerTrace(lifecycleTraceId(uids.get(n) as string)).catch(() => [] as Span[])),
      );
      return got.every((g) => g.length >= 2) ? got.flat().length : undefined;
    },
    20_000,
    'Jaeger holding the first spans of every lifecycle',
  );
  t.diagnostic(`Jaeger stopped holding ${storedEarly} spans of the three lifecycles`);
  // mid-lifecycle: Jaeger goes away; the next changes happen while it is down. The spans it holds
  // were acknowledged and are never sent again: the final check finds them only if Jaeger kept them.
  stackCtl(['stop', 'jaeger']);
  stopJaeger = true;
  patch('backups.example.com', ns, 'done', { status: { phase: 'Running' } }, true);
  patch('backups.example.com', ns, 'gone', { status: { phase: 'Running' } }, true);
  // 8 events stored in the otlp sink's outbox (its sends fail), then the process dies
  await waitFor(
    async () => (await metric(port, 'crbridge_component_sent_events_total', { component: 'it-traces/events' })) >= 8,
    20_000,
    'the 8 first events on Kafka',
  );
  await step(1000); // a few failed exports
  first.child.kill('SIGKILL');
  await first.exited;

  const second = run();
  t.after(() => second.stop('SIGKILL'));
  await second.port();
  stackCtl(['start', 'jaeger']);
  stopJaeger = false;
  await step();
  patch('backups.example.com', ns, 'done', { status: { phase: 'Completed' } }, true);
  patch('backups.example.com', ns, 'failed', { status: { phase: 'Failed', message: 'snapshot quota exceeded' } }, true);
  await step();
  await deleteBackup(api, ns, 'gone');

  // Kafka: every change, each with the traceparent of its object's lifecycle
  const records = await readTopic(env.KAFKA_BROKERS, topic, 11);
  const times = new Map<string, { id: string; time: number; type: string }[]>(); // uid → its events, deduplicated
  for (const r of records) {
    const tp = parseTraceparent(r.headers.traceparent);
    const uid = String(r.headers.ce_k8suid);
    assert.equal(r.headers.ce_traceparent, r.headers.traceparent);
    assert.equal(tp?.traceId, lifecycleTraceId(uid), 'the traceparent names the lifecycle trace');
    assert.equal(tp?.spanId, rootSpanId(lifecycleTraceId(uid)));
    const list = times.get(uid) ?? [];
    if (!list.some((e) => e.id === r.headers.ce_id))
      list.push({
        id: String(r.headers.ce_id),
        time: Date.parse(String(r.headers.ce_time)),
        type: String(r.headers.ce_type),
      });
    times.set(uid, list);
  }

  // Jaeger: one complete trace per Backup
  const expectPhases: Record<string, string[]> = {
    done: ['Pending', 'Running', 'Completed'],
    failed: ['Pending', 'Failed'],
    gone: ['Pending', 'Running'],
  };
  for (const name of names) {
    const uid = uids.get(name) as string;
    const traceId = lifecycleTraceId(uid);
    const root = rootSpanId(traceId);
    const events = times.get(uid) ?? [];
    const spans = await waitFor(
      async () => {
        const s = await jaegerTrace(traceId);
        return s.some((x) => x.spanId === root) &&
          s.filter((x) => attr(x, 'cloudevents.event_id')).length >= events.length
          ? s
          : undefined;
      },
      30_000,
      `the complete trace of ${name}`,
    );
    const ids = spans.map((s) => s.spanId);
    assert.equal(new Set(ids).size, ids.length, `${name}: no span id twice`);
    assert.ok(spans.every((s) => s.traceId === traceId));
    // no orphans: every span but the root has the root as parent
    assert.deepEqual(
      spans.filter((s) => s.spanId !== root && s.parentSpanId !== root).map((s) => s.name),
      [],
      `${name}: orphan spans`,
    );
    const rootSpan = spans.find((s) => s.spanId === root) as Span;
    assert.equal(rootSpan.parentSpanId ?? '', '');
    // one event span per change, at the change's time
    const eventSpans = spans.filter((s) => attr(s, 'cloudevents.event_id') !== undefined);
    assert.deepEqual(
      eventSpans.map((s) => attr(s, 'cloudevents.event_id')).sort(),
      events.map((e) => e.id).sort(),
      `${name}: event spans`,
    );
    for (const s of eventSpans)
      assert.equal(ms(s.startTimeUnixNano), events.find((e) => e.id === attr(s, 'cloudevents.event_id'))?.time);
    // phase spans in order, each from the event that entered the phase to the one that left it
    const phases = spans
      .filter((s) => s.spanId !== root && attr(s, 'cloudevents.event_id') === undefined)
      .sort((a, b) => ms(a.startTimeUnixNano) - ms(b.startTimeUnixNano));
    assert.deepEqual(
      phases.map((s) => attr(s, 'crbridge.k8s.phase')),
      expectPhases[name],
      `${name}: phases`,
    );
    const changeTimes = events.filter((e) => !e.type.endsWith('.created')).map((e) => e.time);
    phases.forEach((s, i) => {
      assert.equal(ms(s.startTimeUnixNano), changeTimes[i], `${name}: ${s.name} starts at its change`);
      const end = changeTimes[i + 1] ?? changeTimes[i];
      assert.ok(
        Math.abs(ms(s.endTimeUnixNano) - Math.max(end as number, changeTimes[i] as number)) <= 2,
        `${name}: ${s.name} ends at the next change`,
      );
    });
    assert.equal(ms(rootSpan.endTimeUnixNano), Math.max(...events.map((e) => e.time), ms(rootSpan.startTimeUnixNano)));
    const failed = phases
      .filter((s) => statusOf(s) === 2)
      .map((s) => [attr(s, 'crbridge.k8s.phase'), s.status?.message]);
    assert.deepEqual(
      failed,
      name === 'failed' ? [['Failed', 'snapshot quota exceeded']] : [],
      `${name}: failure marked`,
    );
    assert.equal(statusOf(rootSpan), name === 'failed' ? 2 : 0);
  }

  // a search by service and time (API v3) finds the three traces
  const min = new Date(Date.now() - 10 * 60_000).toISOString();
  const max = new Date(Date.now() + 60_000).toISOString();
  const found = await waitFor(
    async () => {
      const q = new URLSearchParams({
        'query.service_name': service,
        'query.start_time_min': min,
        'query.start_time_max': max,
        'query.num_traces': '20',
      });
      const r = await fetch(`${env.JAEGER_QUERY_URL}/api/v3/traces?${q}`);
      if (r.status !== 200) throw new Error(`search answered ${r.status}: ${await r.text()}`);
      const body = (await r.json()) as { result: { resourceSpans: { scopeSpans: { spans: Span[] }[] }[] } };
      const traces = new Set(
        body.result.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans.map((s) => toHex(s.traceId)))),
      );
      return traces.size >= 3 ? traces : undefined;
    },
    20_000,
    'the search by service',
  );
  assert.deepEqual([...found].sort(), names.map((n) => lifecycleTraceId(uids.get(n) as string)).sort());
  // a search by attributes (API v3 ignores query.attributes here; the v1 API's tags filter): the failed one
  const tagged = (await (
    await fetch(
      `${env.JAEGER_QUERY_URL}/api/traces?${new URLSearchParams({
        service,
        tags: JSON.stringify({ 'k8s.namespace.name': ns, 'crbridge.k8s.phase': 'Failed' }),
        limit: '20',
      })}`,
    )
  ).json()) as { data: { traceID: string }[] };
  assert.deepEqual(
    tagged.data.map((d) => d.traceID),
    [lifecycleTraceId(uids.get('failed') as string)],
  );
  await second.stop('SIGTERM');
});
