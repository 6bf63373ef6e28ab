/**
 * Benchmark 3, memory: RSS and V8 heap of a crbridge child watching 0, 1,000, 10,000 and 50,000
 * Backups of ~2 KB (one namespace, grown step by step; a fresh crbridge and state dir per step),
 * measured after the initial sync has been delivered and a full GC (heap via the preloaded probe,
 * RSS from /proc). Bytes per cached object = heap growth over the empty baseline / objects.
 * crbridge runs with the container image's Node flags; at 10,000 objects also with Node's defaults.
 */
import { waitFor } from '../test/support/stack.ts';
import { benchPipeline, IMAGE_NODE_FLAGS, metricSum, startBench } from './lib/crbridge.ts';
import { createBackups, createNamespace, deleteAllBackups, ensureBenchCrd, kubeClient, runId } from './lib/kube.ts';
import { MB, sampleProc } from './lib/proc.ts';
import { note, report } from './report.ts';
import type { Benchmark } from './run.ts';

const BYTES = 2048;
/** Object counts measured; `BENCH_MEMORY_STEPS=0,1000` overrides (quick checks). */
const STEPS = (process.env.BENCH_MEMORY_STEPS ?? '0,1000,10000,50000').split(',').map(Number);
/** Measured create rate on this machine is ~700/s; leave room for crbridge's sync. */
const CREATE_RATE_GUESS = 600;

export const benchmark: Benchmark = {
  name: 'memory',
  description: 'crbridge RSS and heap with 0 / 1k / 10k / 50k Backups of ~2 KB watched',
  budgetSeconds: 210,
  async run({ log, deadline }) {
    ensureBenchCrd();
    const kube = kubeClient(8);
    const ns = `bench-mem-${runId()}`;
    await createNamespace(kube, ns);
    let have = 0;
    let baseHeap: number | undefined;
    try {
      for (const n of STEPS) {
        const left = (deadline - Date.now()) / 1000;
        const need = (n - have) / CREATE_RATE_GUESS + n / 2000 + 15;
        if (need > left) {
          note(`memory n=${n}: skipped, needs ~${Math.round(need)} s, ${Math.round(left)} s left of the budget`);
          break;
        }
        if (n > have) {
          const ms = await createBackups(kube, ns, 'm', have, n - have, BYTES, 8);
          log(
            `created ${n - have} objects in ${(ms / 1000).toFixed(1)} s (${(((n - have) / ms) * 1000).toFixed(0)}/s)`,
          );
          have = n;
        }
        for (const nodeFlags of n === 10_000 ? [IMAGE_NODE_FLAGS, []] : [IMAGE_NODE_FLAGS]) {
          const flags = nodeFlags.length > 0 ? nodeFlags.join(' ') : 'node defaults';
          const pipeline = `bench-mem-${n}`;
          const t0 = performance.now();
          const cr = await startBench({
            pipelines: [benchPipeline(pipeline, [ns], '    - name: out\n      type: stdout\n')],
            nodeFlags,
          });
          try {
            await waitFor(() => cr.ready(), 180_000, `crbridge synced with ${n} objects`, 100);
            const syncMs = performance.now() - t0;
            // Everything listed has been handed to the sink and the queue is empty.
            await waitFor(
              async () => {
                const m = await cr.metrics();
                return (
                  metricSum(m, 'crbridge_component_received_events_total', { component: pipeline }) >= n &&
                  metricSum(m, 'crbridge_component_queue_depth') === 0
                );
              },
              180_000,
              `${n} events delivered`,
              200,
            );
            const deliveredMs = performance.now() - t0;
            const peak = sampleProc(cr.pid).peakRssBytes;
            await new Promise((r) => setTimeout(r, 1000));
            const mem = await cr.memory();
            await new Promise((r) => setTimeout(r, 500));
            const rss = sampleProc(cr.pid).rssBytes;
            baseHeap ??= mem.heapUsed;
            const params = { objects: n, objectBytes: BYTES, nodeFlags: flags };
            report({ name: 'memory.rss', value: rss / MB, unit: 'MB', parameters: { ...params, afterGc: true } });
            report({
              name: 'memory.rss_peak',
              value: peak / MB,
              unit: 'MB',
              parameters: { ...params, phase: 'initial sync' },
            });
            report({
              name: 'memory.heap_used',
              value: mem.heapUsed / MB,
              unit: 'MB',
              parameters: { ...params, heapTotalMB: +(mem.heapTotal / MB).toFixed(1) },
            });
            report({
              name: 'memory.external',
              value: (mem.external + mem.arrayBuffers) / MB,
              unit: 'MB',
              parameters: params,
            });
            report({
              name: 'memory.initial_sync',
              value: deliveredMs / 1000,
              unit: 's',
              parameters: { ...params, readyS: +(syncMs / 1000).toFixed(2) },
            });
            if (n > 0) {
              report({
                name: 'memory.heap_per_object',
                value: (mem.heapUsed - baseHeap) / n,
                unit: 'bytes',
                parameters: params,
              });
            }
            log(
              `n=${n} (${flags}): rss ${(rss / MB).toFixed(1)} MB (peak ${(peak / MB).toFixed(1)}), heap ${(mem.heapUsed / MB).toFixed(1)} MB, delivered in ${(deliveredMs / 1000).toFixed(1)} s`,
            );
          } finally {
            await cr.stop();
          }
        }
      }
    } finally {
      const t = performance.now();
      await deleteAllBackups(kube, ns);
      log(`deleted ${have} objects in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      kube.close();
    }
  },
};
