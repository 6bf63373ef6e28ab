/**
 * @serial: stops the stack's Kafka and measures memory and the shutdown time.
 * The delivery guarantee under load with the sink down, on the real stack: 10,000 Backups of about
 * 20 KB each are created while Kafka is stopped and the real `crbridge` CLI runs a Kafka pipeline.
 * crbridge must apply back-pressure (a sink queue holds at most `queueBytes`, the rest waits at the
 * source) and keep its RSS under the Helm chart's memory limit; SIGTERM must end it with exit code 0
 * within `--shutdown-timeout` + 1 s although Kafka is down and the queue is full. Then Kafka is
 * started, crbridge is restarted on the same state dir, and every one of the 10,000 creations must
 * arrive in Kafka (one distinct id per object; duplicates only with that same id).
 *
 * This file stops and starts the Kafka of the stack it runs on (a private stack per worktree).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { DEFAULT_DELIVERY_CONFIG } from '../../../src/delivery/config.ts';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { writeBackupsPipeline } from '../../support/pipeline.ts';
import { metricSum } from '../../support/prom.ts';
import { kubectl, loadStackEnv, repoRoot, stackCtl, waitFor } from '../../support/stack.ts';
import { adminApi, freshNamespace, pool, uniqueName } from '../source/helpers.ts';

const env = loadStackEnv();
const OBJECTS = 10_000;
const PAD = 19_500; // each Backup's JSON is about 20 KB
const SHUTDOWN_TIMEOUT_S = 3;
/** The Helm chart's memory limit (helm/crbridge/values.yaml `resources.limits.memory`). */
const MEMORY_LIMIT_BYTES = helmMemoryLimit();

function helmMemoryLimit(): number {
  const values = readFileSync(join(repoRoot, 'helm', 'crbridge', 'values.yaml'), 'utf8');
  const m = /limits:\s*\{[^}]*memory:\s*(\d+)Mi/.exec(values);
  return (m ? Number(m[1]) : 512) * 1024 * 1024;
}

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return kb ? Number(kb[1]) * 1024 : 0;
}

async function metrics(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
}

let kafkaStopped = false;
let namespace: string | undefined;
after(() => {
  if (kafkaStopped) stackCtl(['start', 'kafka']);
  // 10,000 large objects would weigh on every later test: one deletecollection (no namespace
  // controller runs on the stack, so deleting the namespace alone would keep them)
  if (namespace)
    try {
      kubectl(['delete', '--raw', `/apis/example.com/v1/namespaces/${namespace}/backups`], { timeoutMs: 120_000 });
      kubectl(['delete', 'namespace', namespace, '--wait=false']);
    } catch {}
});

describe('delivery: 10,000 large objects while Kafka is down, SIGTERM, restart', () => {
  test('back-pressure keeps RSS under the chart limit, SIGTERM exits 0 in time, and every creation arrives after the restart', async () => {
    const ns = freshNamespace('dl-shutdown');
    namespace = ns;
    const topic = uniqueName('it-delivery-shutdown');
    const dir = mkdtempSync(join(tmpdir(), 'crb-delivery-shutdown-'));
    const stateDir = join(dir, 'state');
    const file = writeBackupsPipeline(dir, {
      name: 'shutdown',
      namespaces: [ns],
      sinks: `    - name: events
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
      connectionTimeoutMs: 1000
      requestTimeoutMs: 3000
      delivery:
        retry:
          initialIntervalMs: 200
          maxIntervalMs: 1000
`,
    });
    // the container image and `npx crbridge` run Node with this flag (src/cli.ts shebang, Dockerfile)
    const childEnv = { ...process.env, NODE_OPTIONS: '--max-semi-space-size=2' };
    const args = runArgs([file], stateDir, ['--shutdown-timeout', String(SHUTDOWN_TIMEOUT_S), '--cluster-name', 'it']);

    stackCtl(['stop', 'kafka']);
    kafkaStopped = true;
    const first = startCrbridge(args, childEnv);
    const pid = first.child.pid as number;
    const port = await first.port();
    let maxRss = 0;
    let createdIn = 0;
    const sampler = setInterval(() => {
      try {
        maxRss = Math.max(maxRss, rssOf(pid));
      } catch {}
    }, 200);
    try {
      // create them fast: the API directly, 8 at a time
      const api = adminApi();
      const pad = 'x'.repeat(PAD);
      const names = Array.from({ length: OBJECTS }, (_, i) => `b-${String(i).padStart(5, '0')}`);
      const t0 = Date.now();
      await pool(names, 8, (name) =>
        api.request('POST', `/apis/example.com/v1/namespaces/${ns}/backups`, undefined, {
          apiVersion: 'example.com/v1',
          kind: 'Backup',
          metadata: { name, namespace: ns, annotations: { 'example.com/pad': pad } },
          spec: { databaseName: name, schedule: '0 3 * * *' },
        }),
      );
      createdIn = Date.now() - t0;

      // back-pressure: the queue fills up to its byte bound and no further; the rest waits upstream
      const L = { component: 'shutdown/events' };
      const bound = DEFAULT_DELIVERY_CONFIG.queueBytes;
      const text = await waitFor(
        async () => {
          const t = await metrics(port);
          return metricSum(t, 'crbridge_component_queue_bytes', L) > bound - 64 * 1024 ? t : undefined;
        },
        60_000,
        'the sink queue to fill up to its byte bound',
        500,
      );
      await new Promise((r) => setTimeout(r, 3000)); // and stay there
      const later = await metrics(port);
      const queued = metricSum(later, 'crbridge_component_queue_bytes', L);
      const depth = metricSum(later, 'crbridge_component_queue_depth', L);
      const accepted = metricSum(later, 'crbridge_component_received_events_total', L);
      assert.ok(queued <= bound, `queue bytes ${queued} stay within the bound ${bound}`);
      assert.ok(depth < OBJECTS && accepted < OBJECTS, `back-pressure: ${accepted} accepted, ${depth} queued`);
      assert.equal(metricSum(text, 'crbridge_component_sent_events_total', L), 0, 'nothing reached Kafka');
      assert.equal(metricSum(later, 'crbridge_component_dead_lettered_events_total', L), 0);

      // SIGTERM with Kafka down and the queue full
      const tStop = Date.now();
      const code = await first.stop('SIGTERM');
      const took = Date.now() - tStop;
      assert.equal(code, 0, `exit code; stderr tail:\n${first.stderr().slice(-3000)}`);
      assert.ok(took <= SHUTDOWN_TIMEOUT_S * 1000 + 1000, `exited ${took} ms after SIGTERM`);
      assert.match(first.stderr(), /"msg":"shutdown deadline reached with events undelivered"/);
      process.stdout.write(
        `# RSS peak ${(maxRss / 2 ** 20).toFixed(0)} MiB; created in ${createdIn} ms; ${accepted} accepted, ${depth} queued (${(queued / 2 ** 20).toFixed(1)} MiB); SIGTERM to exit ${took} ms\n`,
      );
    } finally {
      clearInterval(sampler);
      await first.stop('SIGKILL');
    }

    const rss = `RSS peaked at ${(maxRss / 2 ** 20).toFixed(0)} MiB, limit ${MEMORY_LIMIT_BYTES / 2 ** 20} MiB`;

    // Kafka back, crbridge again on the same state: every creation arrives
    stackCtl(['start', 'kafka']);
    kafkaStopped = false;
    const second = startCrbridge(args, childEnv);
    try {
      await second.port();
      const byUid = await creationsIn(topic, OBJECTS, 150_000);
      assert.equal(byUid.size, OBJECTS, 'one creation per object');
      for (const [uid, ids] of byUid) assert.equal(ids.size, 1, `object ${uid}: duplicates carry the same id`);
      const ids = new Set([...byUid.values()].flatMap((s) => [...s]));
      assert.equal(ids.size, OBJECTS, 'distinct ids');
      // checked last, so that one run reports on everything else too
      assert.ok(maxRss > 0 && maxRss < MEMORY_LIMIT_BYTES, rss);
    } finally {
      assert.equal(await second.stop('SIGTERM'), 0);
    }
  });
});

/** Reads `topic` from the start until `want` objects' creations were seen: uid → ids of its created events. */
async function creationsIn(topic: string, want: number, timeoutMs: number): Promise<Map<string, Set<string>>> {
  const kafka = new Kafka({
    clientId: 'it-delivery',
    brokers: env.KAFKA_BROKERS.split(','),
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  await waitFor(
    async () => {
      await admin.connect();
      return (await admin.listTopics()).includes(topic);
    },
    60_000,
    `topic ${topic} created`,
    500,
  );
  await admin.disconnect();
  const consumer = kafka.consumer({ groupId: `it-${topic}-${Math.random()}`, maxBytes: 16 * 1024 * 1024 });
  const byUid = new Map<string, Set<string>>();
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const h = message.headers ?? {};
        if (!String(h.ce_type ?? '').endsWith('.created')) return;
        const uid = String(h.ce_k8suid);
        const ids = byUid.get(uid) ?? new Set<string>();
        byUid.set(uid, ids);
        ids.add(String(h.ce_id));
      },
    });
    await waitFor(() => byUid.size >= want, timeoutMs, `${want} creations on ${topic} (have ${byUid.size})`, 500);
    await new Promise((r) => setTimeout(r, 1500)); // anything extra may follow; it must repeat an id
  } finally {
    await consumer.disconnect();
  }
  return byUid;
}
