/**
 * @serial: stops the stack's Kafka.
 * The checkpoint never overtakes delivery, on the real stack (kube-apiserver, Kafka): a pipeline
 * drops status changes with a filter; with Kafka stopped, a Backup's spec changes (the event is
 * stuck in retries) and then its status changes (filtered: settled at once). Past the checkpoint's
 * flush interval crbridge is killed with SIGKILL. After Kafka and crbridge are back, the spec
 * change must arrive — before the fix, the filtered status change had moved the object's checkpoint
 * entry past the stuck spec change, and the restart emitted nothing for it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { readTopic } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, loadStackEnv, stackCtl } from '../../support/stack.ts';
import { create, patch, withBackupNamespace } from '../events/helpers.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const RES = 'backups.example.com';
const ns = `cpo-${suffix}`;
const topic = `cp-order-${suffix}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-cp-order-'));

withBackupNamespace(ns);

test('a filtered status change does not move the checkpoint past a spec change stuck behind a down Kafka', async (t) => {
  const file = join(dir, 'order.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'order',
      namespaces: [ns],
      sourceExtra: '    checkpoint:\n      flushIntervalMs: 100\n',
      specExtra: '  stages:\n    - type: filter\n      expression: change != "status.changed"\n',
      sinks: `    - name: events
      type: kafka
      brokers: ["${env.KAFKA_BROKERS}"]
      topic: ${topic}
      connectionTimeoutMs: 1000
      requestTimeoutMs: 2000
      delivery:
        retry:
          initialIntervalMs: 200
          maxIntervalMs: 1000
`,
    }),
  );
  const args = runArgs([file], join(dir, 'state'), ['--cluster-name', 'it']);
  const penv = { ...process.env, ...env };
  let proc = startCrbridge(args, penv);
  t.after(() => proc.stop('SIGKILL'));
  t.after(() => stackCtl(['start', 'kafka']));
  const port = await proc.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  create({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: { name: 'orders', namespace: ns },
    spec: { databaseName: 'orders', schedule: '0 2 * * *', retentionDays: 7 },
  });
  const first = await readTopic(env.KAFKA_BROKERS, topic, 1);
  assert.match(String(first[0]?.event.type), /backup\.created$/);

  stackCtl(['stop', 'kafka']);
  const spec = patch(RES, ns, 'orders', { spec: { schedule: '0 4 * * *' } }); // stuck: Kafka is down
  patch(RES, ns, 'orders', { status: { phase: 'Running' } }, true); // filtered: settles at once
  // well past the flush interval: a checkpoint that overtook the stuck change would be on disk now
  await new Promise((r) => setTimeout(r, 2000));
  proc.child.kill('SIGKILL');
  assert.equal(await proc.exited, 'SIGKILL');

  stackCtl(['start', 'kafka']);
  proc = startCrbridge(args, penv);
  await proc.port();
  const seen = await readTopic(env.KAFKA_BROKERS, topic, 2, 90_000);
  const types = seen.map((s) => String(s.event.type).split('.').slice(-2).join('.'));
  assert.deepEqual(types, ['backup.created', 'spec.changed'], 'the spec change arrives after the restart');
  const data = seen[1]?.event.data as { object: { spec: { schedule: string } }; reason: string };
  assert.equal(data.object.spec.schedule, '0 4 * * *');
  assert.equal(data.reason, 'resync', 'found by comparing the LIST with the checkpoint');
  assert.equal(
    seen[1]?.event.k8sresourceversion !== undefined &&
      Number(seen[1]?.event.k8sresourceversion) >= Number(spec.metadata.resourceVersion),
    true,
  );
  assert.equal(await proc.stop('SIGTERM'), 0);
});
