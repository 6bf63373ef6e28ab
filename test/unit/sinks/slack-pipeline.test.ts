/**
 * The example pipeline pipelines/backup-alerts.yaml: it validates with the real registry, its two
 * pipelines share one source (one LIST and one WATCH), everything goes to Kafka, and its filter
 * lets through exactly the changes that enter Failed — not a heartbeat-only update of a Failed
 * Backup, not a creation, not a delete, not any other phase.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { allFactories } from '../../../src/registry.ts';
import { createFilter, type FilterStageConfig } from '../../../src/stages/filter/index.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { repoRoot } from '../../support/stack.ts';
import { captureLogger } from '../delivery/helpers.ts';

const file = join(repoRoot, 'pipelines', 'backup-alerts.yaml');
const load = () =>
  loadPipelines([file], createPipelineValidator(currentSchema(), allFactories()), {
    env: { KAFKA_BROKERS: '127.0.0.1:9092', SLACK_BOT_TOKEN: 'xoxb-example' },
  });

const BACKUPS = { group: 'example.com', version: 'v1', resource: 'backups', kind: 'Backup', namespaced: true };
let rv = 1;
const backup = (status?: Record<string, unknown>): KubeObject => ({
  apiVersion: 'example.com/v1',
  kind: 'Backup',
  metadata: { name: 'b', namespace: 'ns', uid: 'u1', resourceVersion: String(++rv) },
  spec: { databaseName: 'db' },
  ...(status && { status }),
});
const ev = (kind: 'added' | 'modified' | 'deleted', object: KubeObject, oldObject?: KubeObject) =>
  buildEvent(
    {
      kind,
      object,
      ...(oldObject && { oldObject }),
      reason: 'live',
      resource: BACKUPS,
      observedAt: Date.now(),
    } as never,
    { clusterName: 'c' },
  );

test('backup-alerts.yaml: two pipelines on one source, Kafka gets every change, Slack is the bot-token sink', () => {
  const loaded = load();
  assert.deepEqual(
    loaded.map((p) => p.config.metadata.name),
    ['backup-events', 'backup-alerts'],
  );
  const [events, alerts] = loaded.map((p) => p.config) as [(typeof loaded)[0]['config'], (typeof loaded)[0]['config']];
  assert.deepEqual(events.spec.source, alerts.spec.source, 'the same source block: one LIST and one WATCH');
  assert.deepEqual(events.spec.stages ?? [], [], 'no stage before Kafka: every change');
  assert.equal(events.spec.sinks[0]?.type, 'kafka');
  const slack = alerts.spec.sinks[0] as Record<string, unknown>;
  assert.equal(slack.type, 'slack');
  assert.equal(slack.token, 'xoxb-example');
  assert.equal(slack.channel, 'backup-alerts');
});

test('backup-alerts.yaml: the filter keeps the changes entering Failed and nothing else (heartbeats ignored)', () => {
  const alerts = load()[1]?.config;
  const stage = alerts?.spec.stages[0] as unknown as FilterStageConfig;
  const { logger } = captureLogger();
  const filter = createFilter(stage, {
    id: 'backup-alerts/entering-failed',
    pipeline: 'backup-alerts',
    logger,
    metrics: new Metrics(),
    stateDir: '/tmp',
    clusterName: 'c',
  });
  const kept = (e: ReturnType<typeof ev>) => (filter.process(e) as unknown[]).length === 1;
  const running = backup({ phase: 'Running' });
  const failed = backup({ phase: 'Failed', lastBackupTime: '2026-12-01T10:00:00Z' });
  const heartbeat = backup({ phase: 'Failed', lastBackupTime: '2026-12-01T10:05:00Z' });
  assert.equal(kept(ev('modified', failed, running)), true, 'Running → Failed');
  assert.equal(kept(ev('modified', failed, backup())), true, 'no status → Failed');
  assert.equal(kept(ev('added', failed)), true, 'created already Failed (e.g. found on start)');
  assert.equal(kept(ev('modified', heartbeat, failed)), false, 'a heartbeat of a Failed Backup');
  assert.equal(kept(ev('modified', running, backup({ phase: 'Pending' }))), false, 'Pending → Running');
  assert.equal(kept(ev('modified', backup({ phase: 'Completed' }), running)), false, 'Running → Completed');
  assert.equal(kept(ev('added', backup())), false, 'a creation without a phase');
  assert.equal(kept(ev('deleted', failed)), false, 'a delete');
});
