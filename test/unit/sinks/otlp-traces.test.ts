/**
 * The otlp-traces sink (spans made by the OpenTelemetry SDK, sent by its OTLP exporter) against a
 * local OTLP/HTTP receiver that decodes JSON and protobuf: the spans of a Backup's lifecycle (an
 * event span per change, phase spans with their real start and end, the root from creation to the
 * terminal phase or the deletion), all in the trace the events' traceparent names; failure as
 * error status; identical spans when a batch is sent again (the exporter's own retry of a 503, a
 * replay); the lifecycle state surviving a new process (FileStateStore); the status mapping
 * (503 past the timeout, 500, 408, a refused connection; 400, 301); an abort at the deadline; TLS
 * and the proxy through the sink's agents; gzip; sampling; the annotation link; a partial success
 * logged once; config checks; no header value in an error.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
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
import { attr, ms, type OtlpSpan, Receiver } from './otlp-receiver.ts';

const dirs: string[] = [];
const receivers: Receiver[] = [];
after(async () => {
  for (const r of receivers) {
    assert.deepEqual(r.errors, [], 'every request decoded');
    await r.close();
  }
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
const signal = new AbortController().signal;

describe('otlp-traces sink', () => {
  for (const encoding of ['json', 'protobuf'] as const)
    test(`a lifecycle Pending → Running → Completed (${encoding}): event, phase and root spans in one trace`, async () => {
      const r = await receiver();
      const { sink } = make({ endpoint: r.url, serviceName: 'svc-a', resourceAttributes: { env: 'test' }, encoding });
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
      assert.equal(
        r.requests[0]?.headers['content-type'],
        encoding === 'json' ? 'application/json' : 'application/x-protobuf',
      );
      assert.match(String(r.requests[0]?.headers['user-agent']), /^crbridge OTel-OTLP-Exporter-JavaScript\//);
      assert.deepEqual(r.requests[0]?.resource, {
        'service.name': 'svc-a',
        'k8s.cluster.name': 'test-cluster',
        env: 'test',
      });
      assert.deepEqual(r.requests[0]?.scope, { name: 'crbridge' });
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
      assert.ok(
        spans.every((s) => s.kind === 1),
        'SPAN_KIND_INTERNAL',
      );
      // consumers' traceparent points at the same trace and root
      for (const e of events)
        assert.deepEqual(parseTraceparent(e.traceparent), { traceId, spanId: root, sampled: true });
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

  test('a 503 the exporter retries within the send: one ok, the same spans twice; a replay re-exports only event spans', async () => {
    const r = await receiver();
    const { sink } = make({ endpoint: r.url });
    const events = lifecycle(
      [
        ['Pending', 0],
        ['Running', 300],
      ],
      'uid-retry',
    );
    r.answers.push({ status: 503 });
    assert.deepEqual(await sink.send(outs(events), signal), [{ status: 'ok' }, { status: 'ok' }]);
    assert.equal(r.requests.length, 2, "the exporter's own retry after its backoff");
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
    await sink.shutdown(Date.now() + 1000);
  });

  test('status mapping: 503 past the timeout, 500, 408 and a refused connection retryable; 400 and 301 permanent; no header value in an error', async () => {
    const r = await receiver();
    const secret = 'sekret-key-123';
    const { sink } = make({ endpoint: r.url, headers: { 'x-api-key': secret }, timeoutMs: 500 });
    const one = (uid: string) => outs(lifecycle([['Pending', 0]], uid));
    // Retry-After beyond the export's timeout: the exporter gives up at once (it consumes the header)
    r.answers.push({ status: 503, headers: { 'retry-after': '2' } });
    const [busy] = await sink.send(one('uid-503'), signal);
    assert.equal(busy?.status, 'retryable');
    assert.ok(busy?.status === 'retryable' && busy.error.includes('503') && busy.retryAfterMs === undefined);
    assert.equal(r.requests.length, 1, 'no retry inside the send past its timeout');
    assert.equal(r.requests[0]?.headers['x-api-key'], secret, 'the header is sent');
    const cases: [number, 'retryable' | 'permanent', RegExp][] = [
      [500, 'retryable', /^http:\/\/127\.0\.0\.1:\d+: HTTP 500: \{"message":"\[redacted\]"\}$/],
      [408, 'retryable', /HTTP 408/],
      [400, 'permanent', /^http:\/\/127\.0\.0\.1:\d+: HTTP 400: \{"message":"\[redacted\]"\}$/],
      [301, 'permanent', /HTTP 301.*redirects are not followed/],
    ];
    for (const [status, expected, error] of cases) {
      // the receiver echoes the secret: the sink scrubs the exporter's error data
      r.answers.push({ status, body: JSON.stringify({ message: secret }) });
      const before: number = r.requests.length;
      const [res] = await sink.send(one(`uid-${status}`), signal);
      assert.equal(res?.status, expected, `HTTP ${status}`);
      assert.match(res?.status === expected ? res.error : '', error);
      assert.ok(!JSON.stringify(res).includes(secret));
      assert.equal(r.requests.length, before + 1, `HTTP ${status}: not retried by the exporter`);
    }
    await sink.shutdown(Date.now() + 1000);
    const down = await receiver();
    await down.close();
    const gone = make({ endpoint: down.url, timeoutMs: 300 }).sink;
    const [refused] = await gone.send(one('uid-refused'), signal);
    assert.equal(refused?.status, 'retryable');
    assert.match(refused?.status === 'retryable' ? refused.error : '', /ECONNREFUSED/);
    await gone.shutdown(Date.now() + 1000);
  });

  test('headers from OTEL_EXPORTER_OTLP_HEADERS are sent (as by any OpenTelemetry exporter) and scrubbed from errors too', async () => {
    const r = await receiver();
    const before = process.env.OTEL_EXPORTER_OTLP_HEADERS;
    process.env.OTEL_EXPORTER_OTLP_HEADERS = 'x-env-key=env%20secret%2Fvalue';
    try {
      const { sink } = make({ endpoint: r.url });
      await sink.start(signal);
      r.answers.push({ status: 400, body: 'bad key env secret/value' });
      const [res] = await sink.send(outs(lifecycle([['Pending', 0]], 'uid-env')), signal);
      assert.equal(r.requests[0]?.headers['x-env-key'], 'env secret/value');
      assert.equal(res?.status, 'permanent');
      assert.match(res?.status === 'permanent' ? res.error : '', /HTTP 400: bad key \[redacted\]$/);
      await sink.shutdown(Date.now() + 1000);
    } finally {
      if (before === undefined) delete process.env.OTEL_EXPORTER_OTLP_HEADERS;
      else process.env.OTEL_EXPORTER_OTLP_HEADERS = before;
    }
  });

  test('an abort (the shutdown deadline) ends a send the receiver never answers; shutdown keeps its deadline; no request after it', async () => {
    const r = await receiver();
    r.hang = true;
    const { sink } = make({ endpoint: r.url, timeoutMs: 30_000 });
    await sink.start(signal);
    const ac = new AbortController();
    const t0 = Date.now();
    const sending = sink.send(outs(lifecycle([['Pending', 0]], 'uid-hang')), ac.signal);
    setTimeout(() => ac.abort(new Error('deadline')), 200);
    await assert.rejects(sending, /deadline/);
    assert.equal(r.requests.length, 1, 'the request reached the receiver');
    await sink.shutdown(Date.now() + 300);
    const took = Date.now() - t0;
    assert.ok(took < 1500, `send + shutdown took ${took} ms`);
    // the cut request is not retried by the exporter once the sink is shut down (its backoff is ~1 s)
    await new Promise((ok) => setTimeout(ok, 2000));
    assert.equal(r.requests.length, 1, 'no request after shutdown');
  });

  test("TLS and proxy: the exporter's requests go through the sink's agents (CA, server name, client certificate; HTTP_PROXY)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'otlp-tls-'));
    dirs.push(dir);
    const f = (n: string) => join(dir, n);
    // one self-signed certificate for receiver.test: the server's, the CA of both sides, the client's
    writeFileSync(
      f('ext.cnf'),
      '[req]\ndistinguished_name=dn\n[dn]\n[x]\nsubjectAltName=DNS:receiver.test\nextendedKeyUsage=serverAuth,clientAuth\n',
    );
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('key.pem'), '-out', f('cert.pem')].concat([
        '-days',
        '2',
        '-subj',
        '/CN=receiver.test',
        '-config',
        f('ext.cnf'),
        '-extensions',
        'x',
      ]),
      { stdio: 'ignore' },
    );
    const peers: unknown[] = [];
    const server = https.createServer(
      {
        key: readFileSync(f('key.pem')),
        cert: readFileSync(f('cert.pem')),
        ca: readFileSync(f('cert.pem')),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        peers.push((req.socket as TLSSocket).getPeerCertificate().subject?.CN);
        req.resume();
        req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
      },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const tls = { caFile: f('cert.pem'), serverName: 'receiver.test', certFile: f('cert.pem'), keyFile: f('key.pem') };
    try {
      const good = make({ endpoint: url, tls, timeoutMs: 2000 }).sink;
      assert.deepEqual(await good.send(outs(lifecycle([['Pending', 0]], 'uid-tls')), signal), [{ status: 'ok' }]);
      assert.deepEqual(peers, ['receiver.test'], 'the client certificate was presented');
      await good.shutdown(Date.now() + 1000);
      const noCa = make({ endpoint: url, timeoutMs: 2000 }).sink;
      const [untrusted] = await noCa.send(outs(lifecycle([['Pending', 0]], 'uid-tls2')), signal);
      assert.equal(untrusted?.status, 'retryable');
      assert.match(untrusted?.status === 'retryable' ? untrusted.error : '', /TLS: .*certificate.*check tls\.caFile/i);
      await noCa.shutdown(Date.now() + 1000);
    } finally {
      server.closeAllConnections();
      server.close();
    }
    // a forwarding proxy from HTTP_PROXY (read when the sink is made)
    const r = await receiver();
    const via: string[] = [];
    const proxy = http.createServer((req, res) => {
      via.push(`${req.method} ${req.url}`);
      const up = http.request(String(req.url), { method: req.method, headers: req.headers }, (u) => {
        res.writeHead(u.statusCode ?? 502, u.headers);
        u.pipe(res);
      });
      req.pipe(up);
    });
    const sockets = new Set<Socket>();
    proxy.on('connection', (sock: Socket) => sockets.add(sock));
    await new Promise<void>((ok) => proxy.listen(0, '127.0.0.1', ok));
    const before = process.env.HTTP_PROXY;
    process.env.HTTP_PROXY = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    let proxied: Sink;
    try {
      proxied = make({ endpoint: r.url }).sink;
    } finally {
      if (before === undefined) delete process.env.HTTP_PROXY;
      else process.env.HTTP_PROXY = before;
    }
    try {
      assert.deepEqual(await proxied.send(outs(lifecycle([['Pending', 0]], 'uid-proxy')), signal), [{ status: 'ok' }]);
      assert.deepEqual(via, [`POST ${r.url}/v1/traces`]);
      assert.equal(r.requests.length, 1);
      await proxied.shutdown(Date.now() + 1000);
    } finally {
      for (const sock of sockets) sock.destroy();
      proxy.close();
    }
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
