/**
 * The example pipeline `pipelines/backup-lifecycles.yaml`: it loads with the real registry, its
 * `otlp-traces` sink takes the endpoint from OTEL_EXPORTER_OTLP_ENDPOINT, and a Backup that fails
 * becomes a trace (phase spans, error status with the status message) whose id is the one the
 * pipeline's own `events.traceContext` puts in every event's traceparent.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { buildEvent } from '../../../src/events/build.ts';
import { parseTraceparent, traceContextOption } from '../../../src/events/trace-context.ts';
import { allFactories, registry } from '../../../src/registry.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { repoRoot } from '../../support/stack.ts';
import { captureLogger } from '../delivery/helpers.ts';
import { backup, delta } from '../events/fixtures.ts';

test('pipelines/backup-lifecycles.yaml: a failed Backup becomes an error trace matching the events traceparent', async () => {
  const bodies: { resourceSpans: { resource: unknown; scopeSpans: { spans: Record<string, unknown>[] }[] }[] }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const { gunzipSync } = await import('node:zlib');
      bodies.push(JSON.parse(gunzipSync(Buffer.concat(chunks)).toString('utf8')));
      assert.equal(req.url, '/v1/traces');
      res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const [loaded] = loadPipelines(
      [join(repoRoot, 'pipelines', 'backup-lifecycles.yaml')],
      createPipelineValidator(currentSchema(), allFactories()),
      { env: { OTEL_EXPORTER_OTLP_ENDPOINT: url } },
    );
    const spec = loaded?.config.spec;
    assert.ok(spec?.events?.traceContext?.enabled);
    const {
      name: _n,
      type,
      delivery: _d,
      ...own
    } = spec.sinks[0] as { name: string; type: string; delivery?: unknown };
    assert.equal(type, 'otlp-traces');
    const factory = registry.sinks.find((f) => f.type === type);
    const { logger } = captureLogger();
    const sink = (factory as NonNullable<typeof factory>).create(own, {
      id: 'backup-lifecycles/jaeger',
      pipeline: 'backup-lifecycles',
      logger,
      metrics: new Metrics(),
      stateDir: '/tmp',
      clusterName: 'prod',
    });
    const opts = { clusterName: 'prod', traceContext: traceContextOption(spec.events.traceContext) };
    const pending = backup({ rv: '10', phase: 'Pending' });
    const failed = backup({ rv: '11', phase: 'Failed' });
    (failed.status as Record<string, unknown>).message = 'bucket not found';
    const events = [buildEvent(delta('added', pending), opts), buildEvent(delta('modified', failed, pending), opts)];
    const signal = new AbortController().signal;
    await sink.start(signal);
    const res = await sink.send(
      events.map((event, i) => ({ event, seq: i + 1, attempts: 0 })),
      signal,
    );
    assert.deepEqual(res, [{ status: 'ok' }, { status: 'ok' }]);
    const spans = bodies.flatMap((b) => b.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((s) => s.spans)));
    const traceId = parseTraceparent(events[0]?.traceparent)?.traceId;
    assert.ok(traceId);
    assert.ok(spans.every((s) => s.traceId === traceId));
    const byName = Object.fromEntries(spans.map((s) => [s.name, s]));
    assert.deepEqual(byName['Backup Failed']?.status, { code: 2, message: 'bucket not found' });
    assert.deepEqual(byName['Backup shop/orders-nightly']?.status, { code: 2, message: 'bucket not found' });
    assert.ok(byName['Backup Pending']);
    const resource = bodies[0]?.resourceSpans[0]?.resource as { attributes: { key: string; value: unknown }[] };
    assert.deepEqual(resource.attributes.find((a) => a.key === 'service.name')?.value, {
      stringValue: 'crbridge-backups',
    });
    await sink.shutdown(Date.now() + 1000);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
