/**
 * Smoke test of the real Jaeger v2: the OpenTelemetry Node SDK exports a span (unique service name,
 * one attribute) over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, and Jaeger's query API returns it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { loadStackEnv, waitFor } from '../../support/stack.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const service = `crbridge-smoke-${suffix}`;

interface JaegerTraces {
  data: {
    traceID: string;
    spans: { spanID: string; operationName: string; tags: { key: string; value: unknown }[] }[];
    processes: Record<string, { serviceName: string }>;
  }[];
}

describe('smoke: jaeger', () => {
  test('a span exported with the OTel SDK is read back from the query API', async () => {
    const sdk = new NodeSDK({
      serviceName: service,
      traceExporter: new OTLPTraceExporter({ url: `${env.OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces` }),
      instrumentations: [],
      autoDetectResources: false,
      metricReaders: [],
      logRecordProcessors: [],
    });
    sdk.start();
    let traceId = '';
    trace.getTracer('smoke').startActiveSpan('smoke-operation', (span) => {
      span.setAttribute('smoke.suffix', suffix);
      traceId = span.spanContext().traceId;
      span.end();
    });
    await sdk.shutdown(); // flushes the batch processor

    const traces = await waitFor(
      async () => {
        const r = await fetch(`${env.JAEGER_QUERY_URL}/api/traces?service=${encodeURIComponent(service)}&limit=10`);
        if (r.status !== 200) throw new Error(`query answered ${r.status}`);
        const body = (await r.json()) as JaegerTraces;
        return body.data.length > 0 ? body : undefined;
      },
      30_000,
      `the trace of ${service} in Jaeger`,
    );
    assert.equal(traces.data.length, 1);
    const [t] = traces.data;
    assert.equal(t?.traceID, traceId);
    assert.equal(t?.spans.length, 1);
    const span = t?.spans[0];
    assert.equal(span?.operationName, 'smoke-operation');
    assert.deepEqual(
      span?.tags.find((x) => x.key === 'smoke.suffix'),
      { key: 'smoke.suffix', type: 'string', value: suffix },
    );
    assert.deepEqual(
      Object.values(t?.processes ?? {}).map((p) => p.serviceName),
      [service],
    );

    const services = (await (await fetch(`${env.JAEGER_QUERY_URL}/api/services`)).json()) as { data: string[] };
    assert.ok(services.data.includes(service));
  });
});
