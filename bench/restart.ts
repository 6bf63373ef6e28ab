/**
 * Benchmark 4, restart catch-up: 10,000 Backups of ~2 KB are watched by crbridge (`initial: skip`,
 * so the first start only records them in the checkpoint); crbridge is stopped; 1,000 objects are
 * changed and 100 others deleted; crbridge is restarted with the same state. Measures the time
 * from the restart until all 1,100 events have been delivered to a file sink, and checks that
 * exactly 1,100 are emitted (none lost, none repeated). Once with the `file` checkpoint, once
 * with the Kubernetes-native (`kubernetes`, ConfigMaps) checkpoint.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../test/support/stack.ts';
import { type BenchCrbridge, benchPipeline, startBench } from './lib/crbridge.ts';
import {
  backupObject,
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
import { MB, sampleProc } from './lib/proc.ts';
import { note, report } from './report.ts';
import type { Benchmark } from './run.ts';

const OBJECTS = 10_000;
const CHANGED = 1_000;
const DELETED = 100;
const BYTES = 2048;

function lines(path: string): string[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').filter(Boolean);
}

export const benchmark: Benchmark = {
  name: 'restart',
  description: '10k objects, 1,000 changed + 100 deleted while stopped: catch-up time and count',
  budgetSeconds: 150,
  async run({ log, deadline }) {
    ensureBenchCrd();
    const kube = kubeClient(8);
    const id = runId();
    const ns = `bench-restart-${id}`;
    await createNamespace(kube, ns);
    try {
      const ms = await createBackups(kube, ns, 'r', 0, OBJECTS, BYTES, 8);
      log(`created ${OBJECTS} objects in ${(ms / 1000).toFixed(1)} s`);
      let round = 0;
      for (const backend of ['file', 'kubernetes'] as const) {
        if (Date.now() > deadline - 40_000) {
          note(`restart backend=${backend}: skipped, out of time budget`);
          continue;
        }
        // Objects this round changes and deletes (disjoint from earlier rounds' deletions).
        const changedFrom = round * (CHANGED + DELETED);
        const deletedFrom = changedFrom + CHANGED;
        round++;
        const dir = mkdtempSync(join(tmpdir(), `crb-bench-restart-${backend}-`));
        const stateDir = join(dir, 'state');
        const sourceExtra =
          `    initial: skip\n    checkpoint:\n      backend: ${backend}\n` +
          (backend === 'kubernetes' ? `      namespace: ${ns}\n      name: bench-ckpt-${id}\n` : '');
        const pipeline = (file: string) =>
          benchPipeline(
            `bench-restart-${backend}`,
            [ns],
            `    - name: out\n      type: file\n      path: ${file}\n`,
            sourceExtra,
          );
        // First run: record the 10,000 objects in the checkpoint.
        const first = await startBench({ pipelines: [pipeline(join(dir, 'first.jsonl'))], stateDir });
        const t0 = performance.now();
        await waitFor(() => first.ready(), 120_000, 'first run synced', 100);
        const firstSync = performance.now() - t0;
        await new Promise((r) => setTimeout(r, 1500)); // let the checkpoint flush
        await first.stop();
        const firstEvents = lines(join(dir, 'first.jsonl')).length;
        if (firstEvents > 0)
          note(`restart backend=${backend}: the first run (initial: skip) emitted ${firstEvents} events`);
        // While stopped: 1,000 changes and 100 deletions.
        const t1 = performance.now();
        await parallel(CHANGED, 8, async (i) =>
          ok(
            await kube.req(
              'PATCH',
              backupsPath(ns, `r-${changedFrom + i}`),
              { spec: { revision: 1000 + round }, status: { phase: 'Completed' } },
              'application/merge-patch+json',
            ),
            'patch',
          ),
        );
        await parallel(DELETED, 8, async (i) =>
          ok(await kube.req('DELETE', backupsPath(ns, `r-${deletedFrom + i}`)), 'delete'),
        );
        log(
          `backend=${backend}: first sync ${(firstSync / 1000).toFixed(1)} s; changed ${CHANGED} and deleted ${DELETED} in ${((performance.now() - t1) / 1000).toFixed(1)} s`,
        );
        // Restart and time the catch-up.
        const out = join(dir, 'second.jsonl');
        const t2 = performance.now();
        let second: BenchCrbridge | undefined;
        try {
          second = await startBench({ pipelines: [pipeline(out)], stateDir });
          const cr = second;
          await waitFor(
            () => lines(out).length >= CHANGED + DELETED,
            120_000,
            `${CHANGED + DELETED} events after restart`,
            50,
          );
          const caughtUp = performance.now() - t2;
          await waitFor(() => cr.ready(), 30_000, 'ready after restart', 50);
          const readyAt = performance.now() - t2;
          const rss = sampleProc(cr.pid).peakRssBytes;
          await new Promise((r) => setTimeout(r, 2000)); // nothing extra may follow
          const events = lines(out);
          const kinds: Record<string, number> = {};
          for (const l of events) {
            // e.g. io.crbridge.bench.example.com.backup.spec.changed → spec.changed
            const k = /"type":"[^"]*\.backup\.([^"]+)"/.exec(l)?.[1] ?? '?';
            kinds[`kind_${k}`] = (kinds[`kind_${k}`] ?? 0) + 1;
          }
          const params = { backend, objects: OBJECTS, changed: CHANGED, deleted: DELETED, objectBytes: BYTES };
          report({
            name: 'restart.catch_up',
            value: caughtUp / 1000,
            unit: 's',
            parameters: { ...params, readyS: +(readyAt / 1000).toFixed(2) },
          });
          report({
            name: 'restart.events_emitted',
            value: events.length,
            unit: 'events',
            parameters: { ...params, expected: CHANGED + DELETED, ...kinds },
          });
          report({
            name: 'restart.first_sync',
            value: firstSync / 1000,
            unit: 's',
            parameters: { ...params, initial: 'skip' },
          });
          report({ name: 'restart.rss_peak', value: rss / MB, unit: 'MB', parameters: params });
          if (events.length !== CHANGED + DELETED)
            note(`restart backend=${backend}: ${events.length} events emitted, ${CHANGED + DELETED} expected`);
          log(
            `backend=${backend}: caught up in ${(caughtUp / 1000).toFixed(2)} s, ${events.length} events ${JSON.stringify(kinds)}`,
          );
        } finally {
          await second?.stop();
        }
        // Top up to 10,000 objects for the next round.
        await parallel(DELETED, 8, async (i) => {
          const name = `r-${deletedFrom + i}`;
          ok(await kube.req('POST', backupsPath(ns), backupObject(ns, name, BYTES)), `recreate ${name}`);
        });
      }
    } finally {
      await deleteAllBackups(kube, ns);
      await kube.req('DELETE', `/api/v1/namespaces/${ns}/configmaps`).catch(() => undefined);
      kube.close();
    }
  },
};
