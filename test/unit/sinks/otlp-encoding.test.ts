/**
 * src/sinks/otlp-traces/otlp.ts, the OpenTelemetry SDK path: span records become SDK spans (the
 * given ids, times, parent, links, status; the configured resource; scope `crbridge`) and one
 * `export` is one OTLP/HTTP request of the SDK's exporter — JSON or protobuf, gzip or not — which a
 * local receiver decodes to the same spans; protobuf carries them in fewer bytes; the SDK's span
 * limits cut nothing crbridge puts in a span.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, test } from 'node:test';
import type { SpanRecord } from '../../../src/sinks/otlp-traces/lifecycle.ts';
import { createSpanExporter, type SpanExporterOptions } from '../../../src/sinks/otlp-traces/otlp.ts';
import { attr, ms, type OtlpAttribute, type OtlpSpan, Receiver } from './otlp-receiver.ts';

const span: SpanRecord = {
  traceId: '0af7651916cd43dd8448eb211c80319c',
  spanId: 'b7ad6b7169203331',
  parentSpanId: '00f067aa0ba902b7',
  name: 'Backup Running',
  startMs: 1_700_000_000_123,
  endMs: 1_700_000_002_456,
  attributes: { 'k8s.namespace.name': 'shop', 'crbridge.k8s.generation': 3, ok: true, ratio: 0.5 },
  links: [
    { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b8', attributes: { 'crbridge.link': 'x' } },
  ],
  error: 'disk full',
};
const root: SpanRecord = {
  traceId: span.traceId,
  spanId: '00f067aa0ba902b7',
  name: 'Backup shop/b',
  startMs: 1_700_000_000_000,
  endMs: 1_700_000_003_000,
  attributes: { 'k8s.namespace.name': 'shop' },
};

/** The fields crbridge sets, in one shape whatever the encoding (attributes by key). */
const canonical = (x: OtlpSpan) => {
  const attrs = (list: OtlpAttribute[] = []) =>
    Object.fromEntries(
      list.map((a) => [a.key, Object.values(a.value)[0]]).sort(([a], [b]) => String(a).localeCompare(String(b))),
    );
  return {
    traceId: x.traceId,
    spanId: x.spanId,
    parentSpanId: x.parentSpanId,
    name: x.name,
    kind: x.kind,
    start: String(x.startTimeUnixNano),
    end: String(x.endTimeUnixNano),
    attributes: attrs(x.attributes),
    links: (x.links ?? []).map((l) => ({ traceId: l.traceId, spanId: l.spanId, attributes: attrs(l.attributes) })),
    status: { code: x.status.code ?? 0, message: x.status.message || undefined },
  };
};

const receivers: Receiver[] = [];
after(async () => {
  for (const r of receivers) {
    assert.deepEqual(r.errors, [], 'every request decoded');
    await r.close();
  }
});

async function exporterTo(o: Partial<SpanExporterOptions> = {}) {
  const r = await new Receiver().start();
  receivers.push(r);
  const agent = new http.Agent({ keepAlive: true });
  const partial: [number, string][] = [];
  const exporter = await createSpanExporter({
    url: `${r.url}/v1/traces`,
    headers: { 'x-tenant': 'a' },
    compression: 'gzip',
    encoding: 'json',
    timeoutMs: 2000,
    resource: { 'service.name': 'crbridge', 'k8s.cluster.name': 'c1' },
    agent: () => agent,
    onPartialSuccess: (n, m) => partial.push([n, m]),
    ...o,
  });
  return { r, exporter, partial, agent };
}

test('SDK spans: the given ids, times, parent, links and status, under the configured resource and scope', async () => {
  const { exporter, agent } = await exporterTo();
  const [s, top] = exporter.spans([span, root]);
  assert.ok(s && top);
  assert.deepEqual(s.spanContext(), {
    traceId: span.traceId,
    spanId: span.spanId,
    traceFlags: 1,
    traceState: undefined,
  });
  assert.equal(s.parentSpanContext?.spanId, span.parentSpanId);
  assert.equal(s.parentSpanContext?.traceId, span.traceId);
  assert.equal(top.parentSpanContext, undefined);
  assert.deepEqual(top.spanContext().spanId, root.spanId);
  assert.deepEqual(s.startTime, [1_700_000_000, 123_000_000]);
  assert.deepEqual(s.endTime, [1_700_000_002, 456_000_000]);
  assert.deepEqual(s.duration, [2, 333_000_000]);
  assert.equal(s.ended, true);
  assert.deepEqual(s.status, { code: 2, message: 'disk full' });
  assert.deepEqual(top.status, { code: 0 });
  assert.deepEqual(s.attributes, span.attributes);
  assert.deepEqual(
    s.links.map((l) => [l.context.traceId, l.context.spanId, l.attributes]),
    [['4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b8', { 'crbridge.link': 'x' }]],
  );
  assert.equal(s.instrumentationScope.name, 'crbridge');
  assert.deepEqual(s.resource.attributes, { 'service.name': 'crbridge', 'k8s.cluster.name': 'c1' });
  assert.equal(s.resource, top.resource, 'one resource object: one resourceSpans entry');
  assert.deepEqual(exporter.spans([]), [], 'spans of an earlier call are not collected again');
  await exporter.shutdown();
  agent.destroy();
});

test('one export, one request; JSON and protobuf decode to the same spans; protobuf is smaller; gzip optional', async () => {
  const decoded = [];
  const sizes: number[] = [];
  for (const encoding of ['json', 'protobuf'] as const) {
    const { r, exporter, agent } = await exporterTo({ encoding, compression: 'none' });
    assert.deepEqual(await exporter.export(exporter.spans([span, root])), { ok: true });
    assert.equal(r.requests.length, 1);
    const req = r.requests[0];
    assert.ok(req);
    assert.equal(req.headers['content-encoding'], undefined);
    assert.equal(req.headers['x-tenant'], 'a');
    assert.deepEqual(req.resource, { 'service.name': 'crbridge', 'k8s.cluster.name': 'c1' });
    assert.equal(req.scope.name, 'crbridge');
    const [s, top] = req.spans;
    assert.ok(s && top);
    assert.equal(s.traceId, span.traceId);
    assert.equal(s.spanId, span.spanId);
    assert.equal(s.parentSpanId, span.parentSpanId);
    assert.equal(top.parentSpanId, undefined);
    assert.equal(s.kind, 1, 'SPAN_KIND_INTERNAL');
    assert.equal(String(s.startTimeUnixNano), '1700000000123000000');
    assert.equal(String(s.endTimeUnixNano), '1700000002456000000');
    assert.deepEqual(s.status, { code: 2, message: 'disk full' });
    assert.equal(top.status.code ?? 0, 0);
    assert.deepEqual(
      s.links?.map((l) => [l.traceId, l.spanId, l.attributes]),
      [
        [
          '4bf92f3577b34da6a3ce929d0e0e4736',
          '00f067aa0ba902b8',
          [{ key: 'crbridge.link', value: { stringValue: 'x' } }],
        ],
      ],
    );
    assert.equal(attr(s, 'crbridge.k8s.generation'), 3);
    assert.equal(attr(s, 'ok'), true);
    assert.equal(attr(s, 'ratio'), 0.5);
    assert.equal(attr(s, 'k8s.namespace.name'), 'shop');
    decoded.push(req.spans.map(canonical));
    sizes.push(req.bytes);
    await exporter.shutdown();
    agent.destroy();
  }
  assert.deepEqual(decoded[1], decoded[0], 'protobuf and JSON carry the same spans');
  assert.ok((sizes[1] ?? 0) < (sizes[0] ?? 0) / 2, `protobuf ${sizes[1]} B vs JSON ${sizes[0]} B`);
  const { r, exporter, agent } = await exporterTo({ compression: 'gzip' });
  assert.deepEqual(await exporter.export(exporter.spans([span])), { ok: true });
  assert.equal(r.requests[0]?.headers['content-encoding'], 'gzip');
  assert.equal(r.requests[0]?.spans[0]?.spanId, span.spanId);
  await exporter.shutdown();
  agent.destroy();
});

test("the SDK's span limits cut nothing: 60 attributes, a 20 kB value, 10 links arrive whole", async () => {
  const { r, exporter, agent } = await exporterTo();
  const attributes: Record<string, string> = { long: 'x'.repeat(20_000) };
  for (let i = 0; i < 59; i++) attributes[`a${i}`] = String(i);
  const links = Array.from({ length: 10 }, (_, i) => ({
    traceId: span.traceId,
    spanId: `00000000000000${String(i).padStart(2, '0')}`,
  }));
  assert.deepEqual(await exporter.export(exporter.spans([{ ...root, attributes, links }])), { ok: true });
  const s = r.requests[0]?.spans[0];
  assert.equal(s?.attributes.length, 60);
  assert.equal(attr(s ?? { attributes: [] }, 'long'), 'x'.repeat(20_000));
  assert.equal(s?.links?.length, 10);
  assert.equal(ms(s?.startTimeUnixNano ?? '0'), root.startMs);
  await exporter.shutdown();
  agent.destroy();
});

test("a partial success reaches the sink's callback with the receiver's count and message", async () => {
  const { r, exporter, partial, agent } = await exporterTo();
  r.answers.push({
    status: 200,
    body: JSON.stringify({ partialSuccess: { rejectedSpans: '3', errorMessage: 'old' } }),
  });
  assert.deepEqual(await exporter.export(exporter.spans([span])), { ok: true });
  assert.deepEqual(partial, [[3, 'old']]);
  await exporter.shutdown();
  agent.destroy();
});
