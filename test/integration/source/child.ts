/**
 * A crbridge-like process for kill -9 tests: runs the Kubernetes source with a durable file sink
 * (each delta appended as one JSON line before it counts as acknowledged). Usage:
 *   node child.ts '<json {kubeconfig, stateDir, sinkFile, source}>'
 * Prints `synced` on stdout once the initial list / catch-up is handed on.
 */
import { appendFileSync } from 'node:fs';
import type { SourceContext } from '../../../src/component.ts';
import { loadKubeConfig } from '../../../src/sources/kubernetes/client.ts';
import { KubernetesSource, type KubernetesSourceConfig } from '../../../src/sources/kubernetes/source.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';

const args = JSON.parse(process.argv[2] ?? '{}') as {
  kubeconfig: string;
  stateDir: string;
  sinkFile: string;
  source: KubernetesSourceConfig;
};

const ctx: SourceContext = {
  id: 'child/source',
  pipeline: 'child',
  logger: createLogger({ level: 'warn' }),
  metrics: new Metrics(),
  stateDir: args.stateDir,
  clusterName: 'it',
  receiver: {
    async push(d) {
      const m = d.object.metadata;
      appendFileSync(
        args.sinkFile,
        `${JSON.stringify({ reason: d.reason, kind: d.kind, uid: m.uid, name: m.name, rv: m.resourceVersion, old: d.oldObject?.metadata.resourceVersion })}\n`,
      );
      return { settled: Promise.resolve() };
    },
  },
};

const source = new KubernetesSource(args.source, ctx, { kubeConfig: loadKubeConfig(args.kubeconfig) });
const ac = new AbortController();
await source.start(ac.signal);
const t = setInterval(() => {
  if (source.synced) {
    process.stdout.write('synced\n');
    clearInterval(t);
  }
}, 20);
process.on('SIGTERM', () => {
  void source.shutdown(Date.now() + 5000).then(() => process.exit(0));
});
