/**
 * The otlp-traces sink against a local OTLP/HTTP receiver: the spans of a Backup's lifecycle
 * (an event span per change, phase spans with their real start and end, the root from creation to
 * the terminal phase or the deletion), all in the trace the events' traceparent names; failure as
 * error status; identical spans when a batch is sent again; the lifecycle state surviving a new
 * process (FileStateStore); status mapping (503 + Retry-After, 400); gzip; sampling; the
 * annotation link; config checks; no header value in an error.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { ComponentContext, OutboundEvent, Sink } from '../../../src/component.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import {
  lifecycleTraceId,
  parseTraceparent,
  rootSpanId,
  traceContextOption,
} from '../../../src/events/trace-context.ts';
import { type OtlpTracesSinkConfig, otlpTracesSink } from '../../../src/sinks/otlp-traces/index.ts';
import { FileStateStore, stateFilePath } from '../../../src/state/store.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger } from '../delivery/helpers.ts';
import { backup, delta, UID } from '../events/fixtures.ts';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: Record<string, unknown> }[];
  links?: { traceId: string; spanId: string }[];
  status: { code?: number; message?: string };
}
interface Request {
  headers: http.IncomingHttpHeaders;
  resource: Record<string, unknown>;
  spans: OtlpSpan[];
}

/** A local OTLP/HTTP receiver; `answers` scripts the status of each request (then 200). */
class Receiver {
  readonly requests: Request[] = [];
  answers: { status: number; headers?: Record<string, string>; body?: string }[] = [];
  private server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
      const body = JSON.parse(text);
      const rs = body.resourceSpans[0];
      this.requests.push({
        headers: req.headers,
        resource: Object.fromEntries(
          rs.resource.attributes.map((a: { key: string; value: Record<string, unknown> }) => [
            a.key,
            Object.values(a.value)[0],
          ]),
        ),
        spans: rs.scopeSpans[0].spans,
      });
      const a = this.answers.shift() ?? { status: 200 };
      res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
      res.end(a.body ?? (a.status === 200 ? '{}' : '{"message":"no"}'));
    });
  });
  url = '';
  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }
  get spans(): OtlpSpan[] {
    return this.requests.flatMap((r) => r.spans);
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

const dirs: string[] = [];
const receivers: Receiver[] = [];
after(async () => {
  for (const r of receivers) await r.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function receiver(): Promise<Receiver> {
  const r = await new Receiver().start();
  receivers.push(r);
  return r;
}

function make(config: OtlpTracesSinkConfig, stateDir?: string): { sink: Sink; lines: Record<string, unknown>[] } {
  assert.deepEqual(otlpTracesSink.check?.(config), [], 'the test config passes check');
  const { logger, lines } = captureLogger();
  const ctx: ComponentContext = {
    id: 'p/jaeger',
    pipeline: 'p',
    logger,
    metrics: new Metrics(),
    stateDir: stateDir ?? '/tmp',
    clusterName: 'test-cluster',
    ...(stateDir && { state: (name: string) => new FileStateStore(stateFilePath(stateDir, 'p/jaeger', name)) }),
  };
  return { sink: otlpTracesSink.create(config, ctx), lines };
}

const T0 = Date.parse('2026-11-28T10:00:00.000Z');
const opts = { clusterName: 'test-cluster', traceContext: traceContextOption({}) };

/** Backup events: created at T0 (Pending), then each phase at its time (ms after T0). */
function lifecycle(phases: [string, number, string?][], uid = UID, name = 'orders-nightly'): CloudEvent[] {
  const out: CloudEvent[] = [];
  let prev: KubeObject | undefined;
  phases.forEach(([phase, at, message], i) => {
    const o = backup({ rv: String(1000 + i), phase });
    o.metadata.uid = uid;
    o.metadata.name = name;
    o.metadata.creationTimestamp = new Date(T0).toISOString();
    if (message) (o.status as Record<string, unknown>).message = message;
    const e = buildEvent(prev ? delta('modified', o, prev) : delta('added', o), opts);
    e.time = new Date(T0 + at).toISOString();
    out.push(e);
    prev = o;
  });
  return out;
}

function deleted(last: CloudEvent, at: number): CloudEvent {
  const o = structuredClone(last.data.object);
  o.metadata.deletionTimestamp = new Date(T0 + at).toISOString();
  const e = buildEvent(delta('deleted', o), opts);
  e.time = new Date(T0 + at).toISOString();
  return e;
}

const outs = (events: CloudEvent[], from = 1): OutboundEvent[] =>
  events.map((event, i) => ({ event, seq: from + i, attempts: 0 }));
const ms = (nanos: string) => Number(BigInt(nanos) / 1_000_000n);
const attr = (s: OtlpSpan, key: string) => {
  const a = s.attributes.find((x) => x.key === key);
  return a ? Object.values(a.value)[0] : undefined;
};
const signal = new AbortController().signal;

describe('otlp-traces sink', () => {
  test('a lifecycle Pending → Running → Completed: event, phase and root spans in one trace', async () => {
    const r = await receiver();
    const { sink } = make({ endpoint: r.url, serviceName: 'svc-a', resourceAttributes: { env: 'test' } });
    await sink.start(signal);
    const events = lifecycle([
      ['Pending', 0],
      ['Running', 1500],
      ['Completed', 4250],
    ]);
    // one event per send, as a live stream would arrive
    for (const [i, e] of events.entries())
      assert.deepEqual(await sink.send(outs([e], i + 1), signal), [{ status: 'ok' }]);
    const traceId = lifecycleTraceId(UID);
    const root = rootSpanId(traceId);
    assert.equal(r.requests.length, 3);
    assert.equal(r.requests[0]?.headers['content-encoding'], 'gzip');
    assert.equal(r.requests[0]?.headers['content-type'], 'application/json');
    assert.deepEqual(r.requests[0]?.resource, {
      'service.name': 'svc-a',
      'k8s.cluster.name': 'test-cluster',
      env: 'test',
    });
    const spans = r.spans;
    assert.ok(spans.every((s) => s.traceId === traceId));
    // every span but the root hangs off the root: no orphans
    assert.deepEqual(
      spans.filter((s) => s.spanId !== root).map((s) => s.parentSpanId),
      spans.filter((s) => s.spanId !== root).map(() => root),
    );
    const eventSpans = spans.filter((s) => attr(s, 'cloudevents.event_id') !== undefined);
    assert.deepEqual(
      eventSpans.map((s) => attr(s, 'cloudevents.event_id')),
      events.map((e) => e.id),
    );
    assert.deepEqual(
      eventSpans.map((s) => s.name),
      ['Backup created', 'Backup status.changed', 'Backup status.changed'],
    );
    const first = eventSpans[0] as OtlpSpan;
    assert.equal(attr(first, 'cloudevents.event_source'), events[0]?.source);
    assert.equal(attr(first, 'cloudevents.event_type'), events[0]?.type);
    assert.equal(attr(first, 'cloudevents.event_subject'), 'shop/orders-nightly');
    assert.equal(attr(first, 'cloudevents.event_spec_version'), '1.0');
    assert.equal(attr(first, 'k8s.namespace.name'), 'shop');
    assert.equal(attr(first, 'k8s.cluster.name'), 'test-cluster');
    assert.equal(attr(first, 'crbridge.k8s.kind'), 'Backup');
    assert.equal(attr(first, 'crbridge.k8s.uid'), UID);
    const phases = spans.filter((s) => s.spanId !== root && attr(s, 'cloudevents.event_id') === undefined);
    assert.deepEqual(
      phases.map((s) => [s.name, ms(s.startTimeUnixNano) - T0, ms(s.endTimeUnixNano) - T0]),
      [
        ['Backup Pending', 0, 1500],
        ['Backup Running', 1500, 4250],
        ['Backup Completed', 4250, 4250],
      ],
    );
    const roots = spans.filter((s) => s.spanId === root);
    assert.equal(roots.length, 1, 'the root is exported once, when it ends');
    assert.equal(roots[0]?.parentSpanId, undefined);
    assert.equal(roots[0]?.name, 'Backup shop/orders-nightly');
    assert.deepEqual(
      [ms(roots[0]?.startTimeUnixNano ?? '0') - T0, ms(roots[0]?.endTimeUnixNano ?? '0') - T0],
      [0, 4250],
    );
    assert.equal(roots[0]?.status.code ?? 0, 0, 'unset (OTLP STATUS_CODE_UNSET = 0)');
    // consumers' traceparent points at the same trace and root
    for (const e of events) assert.deepEqual(parseTraceparent(e.traceparent), { traceId, spanId: root, sampled: true });
    await sink.shutdown(Date.now() + 1000);
  });

  test('a failed phase is an error span with the reason, and so is the root', async () => {
    const r = await receiver();
    const { sink } = make({ endpoint: r.url, compression: 'none' });
    const events = lifecycle(
      [
        ['Pending', 0],
        ['Running', 100],
        ['Failed', 900, 'disk full'],
      ],
      'uid-failed',
    );
    assert.deepEqual(await sink.send(outs(events), signal), [{ status: 'ok' }, { status: 'ok' }, { status: 'ok' }]);
    assert.equal(r.requests.length, 1, 'one batch, one export request');
    assert.equal(r.requests[0]?.headers['content-encoding'], undefined);
    const byName = new Map(r.spans.map((s) => [s.name, s]));
    assert.deepEqual(byName.get('Backup Failed')?.status, { code: 2, message: 'disk full' });
    assert.equal(byName.get('Backup Running')?.status.code ?? 0, 0, 'unset');
    assert.deepEqual(byName.get('Backup shop/orders-nightly')?.status, { code: 2, message: 'disk full' });
  });

  test('deleted while Running: the Running span and the root end at the deletion', async () => {
    const r = await receiver();
    const { sink } = make({ endpoint: r.url });
    const events = lifecycle(
      [
        ['Pending', 0],
        ['Running', 200],
      ],
      'uid-deleted',
    );
    await sink.send(outs(events), signal);
    assert.deepEqual(await sink.send(outs([deleted(events[1] as CloudEvent, 700)], 3), signal), [{ status: 'ok' }]);
    const last = r.requests[1]?.spans ?? [];
    assert.deepEqual(
      last.map((s) => [s.name, ms(s.startTimeUnixNano) - T0, ms(s.endTimeUnixNano) - T0]),
      [
        ['Backup deleted', 700, 700],
        ['Backup Running', 200, 700],
        ['Backup shop/orders-nightly', 0, 700],
      ],
    );
  });

  test('a batch sent again after 503 exports identical spans; 400 is permanent; header values stay out of errors', async () => {
    const r = await receiver();
    const { sink } = make({ endpoint: r.url, headers: { 'x-api-key': 'sekret-key-123' } });
    const events = lifecycle(
      [
        ['Pending', 0],
        ['Running', 300],
      ],
      'uid-retry',
    );
    r.answers.push({ status: 503, headers: { 'retry-after': '2' } });
    const [res] = await sink.send(outs(events), signal);
    assert.equal(res?.status, 'retryable');
    assert.equal(res?.status === 'retryable' && res.retryAfterMs, 2000);
    assert.deepEqual(await sink.send(outs(events), signal), [{ status: 'ok' }, { status: 'ok' }]);
    assert.equal(r.requests[0]?.headers['x-api-key'], 'sekret-key-123');
    assert.deepEqual(r.requests[1]?.spans, r.requests[0]?.spans, 'the same spans, ids and times');
    // sent once more after an accepted export (a crash before the checkpoint): the same ids again
    await sink.send(outs(events), signal);
    const ids = (i: number) => r.requests[i]?.spans.map((s) => s.spanId);
    assert.deepEqual(
      ids(2),
      ids(1)?.filter(
        (_, i) =>
          r.requests[1]?.spans[i]?.name.endsWith('changed') || r.requests[1]?.spans[i]?.name.endsWith('created'),
      ),
      'a replay only re-exports its event spans',
    );
    r.answers.push({ status: 400 });
    const more = lifecycle([['Pending', 0]], 'uid-bad');
    const [bad] = await sink.send(outs(more), signal);
    assert.equal(bad?.status, 'permanent');
    assert.ok(bad?.status === 'permanent' && bad.error.includes('HTTP 400') && !bad.error.includes('sekret'));
  });

  test('a partial success is delivered and logged once with the receiver message', async () => {
    const r = await receiver();
    const { sink, lines } = make({ endpoint: r.url });
    const partial = JSON.stringify({ partialSuccess: { rejectedSpans: '2', errorMessage: 'span too old' } });
    r.answers.push({ status: 200, body: partial }, { status: 200, body: partial });
    assert.deepEqual(await sink.send(outs(lifecycle([['Pending', 0]], 'uid-p1')), signal), [{ status: 'ok' }]);
    assert.deepEqual(await sink.send(outs(lifecycle([['Pending', 0]], 'uid-p2')), signal), [{ status: 'ok' }]);
    const warned = lines.filter((l) => String(l.msg).includes('rejected 2 span(s): span too old'));
    assert.equal(warned.length, 1);
  });

  test('the lifecycle state survives a restart: the open phase span ends with its real start', async () => {
    const r = await receiver();
    const dir = mkdtempSync(join(tmpdir(), 'otlp-state-'));
    dirs.push(dir);
    const events = lifecycle(
      [
        ['Pending', 0],
        ['Running', 1000],
        ['Completed', 6000],
      ],
      'uid-restart',
    );
    const a = make({ endpoint: r.url }, dir).sink;
    await a.start(signal);
    await a.send(outs(events.slice(0, 2)), signal);
    await a.shutdown(Date.now() + 1000);
    const b = make({ endpoint: r.url }, dir).sink;
    await b.start(signal);
    await b.send(outs(events.slice(2), 3), signal);
    const running = r.spans.find((s) => s.name === 'Backup Running');
    assert.deepEqual(
      [ms(running?.startTimeUnixNano ?? '0') - T0, ms(running?.endTimeUnixNano ?? '0') - T0],
      [1000, 6000],
    );
    const root = r.spans.find((s) => s.spanId === rootSpanId(lifecycleTraceId('uid-restart')));
    assert.equal(ms(root?.startTimeUnixNano ?? '0') - T0, 0);
    await b.shutdown(Date.now() + 1000);
  });

  test('sampling: an unsampled lifecycle sends nothing and is ok; a sampled one keeps all its spans', async () => {
    const r = await receiver();
    const { sink } = make({ endpoint: r.url, sampleRatio: 0 });
    assert.deepEqual(await sink.send(outs(lifecycle([['Pending', 0]], 'uid-s')), signal), [{ status: 'ok' }]);
    assert.equal(r.requests.length, 0);
  });

  test('the tracing.k8s.io/traceparent annotation becomes a span link', async () => {
    const r = await receiver();
    const { sink } = make({ endpoint: r.url });
    const [e] = lifecycle([['Pending', 0]], 'uid-link');
    const caller = `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01`;
    (e as CloudEvent).data.object.metadata.annotations = { 'tracing.k8s.io/traceparent': caller };
    await sink.send(outs([e as CloudEvent]), signal);
    const d = deleted(e as CloudEvent, 50);
    await sink.send(outs([d], 2), signal);
    const root = r.spans.find((s) => s.parentSpanId === undefined);
    assert.deepEqual(
      root?.links?.map((l) => [l.traceId, l.spanId]),
      [['ab'.repeat(16), 'cd'.repeat(8)]],
    );
  });

  test('config: checks and the endpoint from OTEL_EXPORTER_OTLP_ENDPOINT', () => {
    const problems = otlpTracesSink.check?.({
      endpoint: 'ftp://x',
      phase: 'object.status.(',
      headers: { 'Content-Encoding': 'br' },
    });
    assert.deepEqual(
      problems?.map((p) => p.pointer),
      ['/endpoint', '/phase', '/headers/Content-Encoding'],
    );
    const before = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    assert.throws(() => make({}), /OTEL_EXPORTER_OTLP_ENDPOINT/);
    if (before !== undefined) process.env.OTEL_EXPORTER_OTLP_ENDPOINT = before;
  });
});
