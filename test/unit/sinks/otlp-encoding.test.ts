/**
 * The OTLP encodings of src/sinks/otlp-traces/otlp.ts (OpenTelemetry JS's serializers): JSON with
 * hex ids and nanosecond strings as the OTLP JSON mapping says, and protobuf carrying the same
 * span (its ids as raw bytes, its name) in fewer bytes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SpanRecord } from '../../../src/sinks/otlp-traces/lifecycle.ts';
import { body, encodeTraces } from '../../../src/sinks/otlp-traces/otlp.ts';

const span: SpanRecord = {
  traceId: '0af7651916cd43dd8448eb211c80319c',
  spanId: 'b7ad6b7169203331',
  parentSpanId: '00f067aa0ba902b7',
  name: 'Backup Running',
  startMs: 1_700_000_000_123,
  endMs: 1_700_000_002_456,
  attributes: { 'k8s.namespace.name': 'shop', 'crbridge.k8s.generation': 3, ok: true },
  links: [{ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b8' }],
  error: 'disk full',
};

test('JSON: the OTLP JSON mapping — hex ids, nanosecond strings, kind INTERNAL, error status, links', async () => {
  const bytes = encodeTraces([span], { 'service.name': 'crbridge' }, { name: 'crbridge' }, 'json');
  const req = JSON.parse(Buffer.from(bytes).toString('utf8'));
  const rs = req.resourceSpans[0];
  assert.deepEqual(rs.resource.attributes, [{ key: 'service.name', value: { stringValue: 'crbridge' } }]);
  const s = rs.scopeSpans[0].spans[0];
  assert.equal(rs.scopeSpans[0].scope.name, 'crbridge');
  assert.equal(s.traceId, span.traceId);
  assert.equal(s.spanId, span.spanId);
  assert.equal(s.parentSpanId, span.parentSpanId);
  assert.equal(s.kind, 1, 'SPAN_KIND_INTERNAL');
  assert.equal(String(s.startTimeUnixNano), '1700000000123000000');
  assert.equal(String(s.endTimeUnixNano), '1700000002456000000');
  assert.deepEqual(s.status, { code: 2, message: 'disk full' });
  assert.equal(s.links[0].traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.deepEqual(s.attributes.find((a: { key: string }) => a.key === 'crbridge.k8s.generation').value, {
    intValue: 3,
  });
  const gz = await body(bytes, 'gzip');
  assert.equal(gz[0], 0x1f, 'gzip magic');
  assert.deepEqual(await body(bytes, 'none'), Buffer.from(bytes));
});

test('protobuf: the same span as an ExportTraceServiceRequest message, its ids as raw bytes, smaller than JSON', () => {
  const proto = Buffer.from(encodeTraces([span], { 'service.name': 'crbridge' }, { name: 'crbridge' }, 'protobuf'));
  const json = encodeTraces([span], { 'service.name': 'crbridge' }, { name: 'crbridge' }, 'json');
  assert.equal(proto[0], 0x0a, 'field 1 (resource_spans), length-delimited');
  assert.ok(proto.includes(Buffer.from(span.traceId, 'hex')), 'the trace id as 16 raw bytes');
  assert.ok(proto.includes(Buffer.from(span.spanId, 'hex')), 'the span id as 8 raw bytes');
  assert.ok(proto.includes(Buffer.from('Backup Running')), 'the span name');
  assert.ok(proto.includes(Buffer.from('disk full')), 'the status message');
  assert.ok(proto.length < json.length / 2, `protobuf ${proto.length} B vs JSON ${json.length} B`);
});
