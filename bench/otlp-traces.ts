/**
 * Benchmark 9, the otlp-traces sink: what it costs in memory and time. RSS (after a full GC) of a
 * crbridge child watching 500 Backups with a stdout sink only, and with an otlp-traces sink to the
 * stack's Jaeger as well (the sink imports the OpenTelemetry SDK lazily, so the first process never
 * loads it); for reference the RSS of a bare Node process, of one that imports what the sink loads
 * (`@opentelemetry/sdk-trace`, `resources`, `exporter-trace-otlp-http`) and of one that imports
 * `@opentelemetry/sdk-node` + the exporter. Then the sink's own cost in process: lifecycle spans
 * computed, made by the SDK and exported (gzipped OTLP/JSON, the SDK's exporter) to a local
 * receiver per second, for batches of 200 events, and the SDK span making alone.
 * `npm run bench -- otlp-traces`, or `node bench/otlp-traces.ts` alone.
 */
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { compileCel } from '../src/cel/index.ts';
import type { CloudEvent } from '../src/events/cloudevent.ts';
import { applyEvent, type LifecycleState, type SpanRecord } from '../src/sinks/otlp-traces/lifecycle.ts';
import { createSpanExporter } from '../src/sinks/otlp-traces/otlp.ts';
import { loadStackEnv, waitFor } from '../test/support/stack.ts';
import { benchPipeline, metricSum, startBench } from './lib/crbridge.ts';
import { createBackups, createNamespace, deleteAllBackups, ensureBenchCrd, kubeClient, runId } from './lib/kube.ts';
import { MB, sampleProc } from './lib/proc.ts';
import { report } from './report.ts';
import type { Benchmark } from './run.ts';

const OBJECTS = 500;

/** RSS (MB) of a bare `node -e` child after `code` ran and a GC. */
function childRss(code: string): number {
  const out = execFileSync(
    process.execPath,
    ['--expose-gc', '--input-type=module', '-e', `${code}\nglobalThis.gc(); console.log(process.memoryUsage().rss);`],
    { encoding: 'utf8' },
  );
  return Number(out.trim().split('\n').pop()) / MB;
}

async function inProcess(log: (m: string) => void): Promise<void> {
  const opts = {
    phase: compileCel('object.status.phase', 'string'),
    failed: compileCel("object.status.phase == 'Failed'", 'bool'),
    failureReason: compileCel('object.status.message', 'string'),
    terminalPhases: ['Completed', 'Failed'],
  };
  const phases = ['Pending', 'Running', 'Completed'];
  const events: CloudEvent[] = [];
  for (let i = 0; i < 200; i++)
    events.push({
      specversion: '1.0',
      id: `u${i}.${i}`,
      source: '/clusters/b/apis/example.com/v1/backups',
      type: 'io.crbridge.example.com.backup.status.changed',
      subject: `ns/b${i}`,
      time: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
      datacontenttype: 'application/json',
      k8skind: 'Backup',
      k8snamespace: 'ns',
      k8sname: `b${i}`,
      k8suid: `uid-${i % 50}`,
      data: {
        object: {
          metadata: { name: `b${i}`, uid: `uid-${i % 50}`, resourceVersion: String(i) },
          status: { phase: phases[i % 3] },
        },
        reason: 'live',
      },
    } as unknown as CloudEvent);
  // a local OTLP receiver keeping the bodies as sent (gzip), decoded after the timing
  const bodies: Buffer[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const agent = new http.Agent({ keepAlive: true });
  const exporter = await createSpanExporter({
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
    headers: {},
    compression: 'gzip',
    encoding: 'json',
    timeoutMs: 10_000,
    resource: { 'service.name': 'bench' },
    agent: () => agent,
    onPartialSuccess: () => {},
  });
  const batch = (): SpanRecord[] => {
    const state = new Map<string, LifecycleState | undefined>();
    const out: SpanRecord[] = [];
    for (const e of events) {
      const k = e.k8suid as string;
      const res = applyEvent(e, state.get(k), opts);
      state.set(k, res.state);
      out.push(...res.spans);
    }
    return out;
  };
  const rounds = 200;
  let spans = 0;
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) {
    const records = batch();
    spans += records.length;
    const res = await exporter.export(exporter.spans(records));
    if (!res.ok) throw new Error(`export failed: ${String(res.error)}`);
  }
  const s = (performance.now() - t0) / 1000;
  const records = batch();
  const t1 = performance.now();
  for (let r = 0; r < rounds; r++) exporter.spans(records);
  const sdkOnly = (performance.now() - t1) / 1000;
  await exporter.shutdown();
  agent.destroy();
  server.close();
  const gz = bodies.reduce((n, b) => n + b.length, 0);
  const bytes = bodies.reduce((n, b) => n + gunzipSync(b).length, 0);
  report({
    name: 'otlp_traces.events_per_second',
    value: (rounds * events.length) / s,
    unit: 'events/s',
    parameters: {
      batch: events.length,
      spansPerBatch: spans / rounds,
      gzip: true,
      path: 'lifecycle + SDK spans + OTLPTraceExporter to a local receiver',
    },
  });
  report({
    name: 'otlp_traces.sdk_spans_per_second',
    value: (rounds * records.length) / sdkOnly,
    unit: 'spans/s',
    parameters: { note: 'span records made into ended SDK spans (TracerProvider, no export)' },
  });
  report({
    name: 'otlp_traces.gzip_ratio',
    value: bytes / gz,
    unit: 'x',
    parameters: { jsonBytesPerSpan: Math.round(bytes / spans) },
  });
  log(`in process: ${rounds} batches of ${events.length} events in ${s.toFixed(2)} s`);
}

export const benchmark: Benchmark = {
  name: 'otlp-traces',
  description: 'crbridge RSS with and without an otlp-traces sink; the SDK import cost; spans encoded per second',
  budgetSeconds: 60,
  async run({ log }) {
    report({ name: 'otlp_traces.bare_node_rss', value: childRss(''), unit: 'MB' });
    report({
      name: 'otlp_traces.sdk_import_rss',
      value: childRss(
        "await import('@opentelemetry/sdk-trace'); await import('@opentelemetry/resources'); await import('@opentelemetry/exporter-trace-otlp-http');",
      ),
      unit: 'MB',
      parameters: { note: 'what the sink imports at its start' },
    });
    report({
      name: 'otlp_traces.sdk_node_import_rss',
      value: childRss(
        "await import('@opentelemetry/sdk-node'); await import('@opentelemetry/exporter-trace-otlp-http');",
      ),
      unit: 'MB',
      parameters: { note: 'sdk-node (all signals, instrumentation) + the exporter, for reference' },
    });
    ensureBenchCrd();
    const kube = kubeClient(8);
    const ns = `bench-otlp-${runId()}`;
    await createNamespace(kube, ns);
    const env = loadStackEnv();
    try {
      await createBackups(kube, ns, 'o', 0, OBJECTS, 2048, 8);
      const variants: [string, string][] = [
        ['stdout only', '    - name: out\n      type: stdout\n'],
        [
          'stdout + otlp-traces',
          `    - name: out\n      type: stdout\n    - name: jaeger\n      type: otlp-traces\n      endpoint: ${env.OTEL_EXPORTER_OTLP_ENDPOINT}\n      serviceName: bench-${runId()}\n`,
        ],
      ];
      for (const [label, sinks] of variants) {
        const pipeline = `bench-otlp-${variants.findIndex((v) => v[0] === label)}`;
        const cr = await startBench({ pipelines: [benchPipeline(pipeline, [ns], sinks)] });
        try {
          await waitFor(
            async () => {
              const m = await cr.metrics();
              return (
                metricSum(m, 'crbridge_component_sent_events_total', { component: `${pipeline}/out` }) >= OBJECTS &&
                metricSum(m, 'crbridge_component_queue_depth') === 0
              );
            },
            60_000,
            `${OBJECTS} events delivered (${label})`,
          );
          await cr.memory(); // a full GC in the child
          await new Promise((r) => setTimeout(r, 500));
          const rss = sampleProc(cr.pid).rssBytes / MB;
          report({
            name: 'otlp_traces.crbridge_rss',
            value: rss,
            unit: 'MB',
            parameters: { sinks: label, objects: OBJECTS },
          });
          log(`${label}: RSS ${rss.toFixed(1)} MB`);
        } finally {
          await cr.stop();
        }
      }
    } finally {
      await deleteAllBackups(kube, ns).catch(() => 0);
    }
    await inProcess(log);
  },
};

if (import.meta.main) {
  await benchmark.run({ deadline: Date.now() + 60_000, log: (m) => process.stderr.write(`${m}\n`) });
}
