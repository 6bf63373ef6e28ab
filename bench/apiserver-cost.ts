/**
 * Benchmark 6, API server cost: the LIST and WATCH requests crbridge makes over a run with three
 * pipelines on one resource and namespace, read from kube-apiserver's own `/metrics`
 * (`apiserver_request_total`, counted when a request completes, so crbridge is stopped before the
 * second reading; `apiserver_longrunning_requests` shows the open watches while it runs). Only the
 * bench group `bench.example.com` is counted, which nothing else on the shared stack lists or
 * watches during the run.
 */
import { waitFor } from '../test/support/stack.ts';
import { benchPipeline, metricSum, startBench } from './lib/crbridge.ts';
import {
  apiserverMetrics,
  BENCH_GROUP,
  backupsPath,
  createBackups,
  createNamespace,
  deleteAllBackups,
  ensureBenchCrd,
  kubeClient,
  ok,
  parallel,
  runId,
} from './lib/kube.ts';
import { note, report } from './report.ts';
import type { Benchmark } from './run.ts';

const match = (verb: string) => ({ verb, group: BENCH_GROUP, resource: 'backups' });

export const benchmark: Benchmark = {
  name: 'apiserver-cost',
  description: 'LIST/WATCH requests to the apiserver for three pipelines on one resource',
  budgetSeconds: 40,
  async run({ log }) {
    ensureBenchCrd();
    const kube = kubeClient(8);
    const id = runId();
    const ns = `bench-cost-${id}`;
    await createNamespace(kube, ns);
    await createBackups(kube, ns, 'c', 0, 100, 2048);
    try {
      const before = await apiserverMetrics(kube);
      const cr = await startBench({
        pipelines: [1, 2, 3].map((i) =>
          benchPipeline(`bench-cost-${id}-${i}`, [ns], '    - name: out\n      type: stdout\n'),
        ),
      });
      let openWatches = Number.NaN;
      let runSeconds = 0;
      try {
        const t0 = performance.now();
        await waitFor(() => cr.ready(), 60_000, 'crbridge ready');
        // Some traffic on the watch, then a quiet period.
        await parallel(100, 8, async (i) =>
          ok(
            await kube.req(
              'PATCH',
              backupsPath(ns, `c-${i}`),
              { spec: { revision: i + 1 } },
              'application/merge-patch+json',
            ),
            'patch',
          ),
        );
        await new Promise((r) => setTimeout(r, 5000));
        openWatches = metricSum(await apiserverMetrics(kube), 'apiserver_longrunning_requests', match('WATCH'));
        runSeconds = (performance.now() - t0) / 1000;
      } finally {
        await cr.stop();
      }
      await new Promise((r) => setTimeout(r, 500));
      const after = await apiserverMetrics(kube);
      const params = { pipelines: 3, namespaces: 1, objects: 100, runSeconds: Math.round(runSeconds) };
      for (const verb of ['LIST', 'WATCH']) {
        const n =
          metricSum(after, 'apiserver_request_total', match(verb)) -
          metricSum(before, 'apiserver_request_total', match(verb));
        report({
          name: `apiserver.${verb.toLowerCase()}_requests`,
          value: n,
          unit: 'requests',
          parameters: { ...params, expected: 1 },
        });
        log(`${verb}: ${n}`);
        if (n !== 1) note(`apiserver-cost: ${n} ${verb} requests for three pipelines on one resource (1 expected)`);
      }
      report({
        name: 'apiserver.open_watches',
        value: openWatches,
        unit: 'watches',
        parameters: { ...params, when: 'running' },
      });
    } finally {
      await deleteAllBackups(kube, ns);
      kube.close();
    }
  },
};
