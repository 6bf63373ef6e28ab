/**
 * The example pipeline pipelines/backup-alerts.yaml: it validates with the real registry, every
 * change goes to Kafka, and its route sends to Slack too exactly the changes that enter Failed — not
 * a heartbeat-only update of a Failed Backup, not a creation, not a delete, not any other phase.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import { destinationsOf } from '../../../src/component.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { allFactories } from '../../../src/registry.ts';
import { createRoute, type RouteStageConfig } from '../../../src/stages/route/index.ts';
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

test('backup-alerts.yaml: one pipeline, a route, Kafka and the bot-token Slack sink', () => {
  const loaded = load();
  assert.deepEqual(
    loaded.map((p) => p.config.metadata.name),
    ['backup-alerts'],
  );
  const spec = loaded[0]?.config.spec;
  assert.deepEqual(
    spec?.stages.map((s) => s.type),
    ['route'],
  );
  assert.deepEqual(
    spec?.sinks.map((s) => s.type),
    ['kafka', 'slack'],
  );
  const slack = spec?.sinks[1] as Record<string, unknown>;
  assert.equal(slack.token, 'xoxb-example');
  assert.equal(slack.channel, 'backup-alerts');
});

test('backup-alerts.yaml: every change to Kafka; to Slack too only the changes entering Failed (heartbeats ignored)', async () => {
  const block = load()[0]?.config.spec.stages[0] as unknown as RouteStageConfig & { type: string; name: string };
  const { type: _t, name: _n, ...stage } = block;
  const { logger } = captureLogger();
  const route = createRoute(stage, {
    id: 'backup-alerts/failures-to-slack',
    pipeline: 'backup-alerts',
    logger,
    metrics: new Metrics(),
    stateDir: '/tmp',
    clusterName: 'c',
  });
  const to = async (e: ReturnType<typeof ev>) => {
    const out = await route.process(e);
    assert.equal(out.length, 1, 'every change goes on');
    return [...(destinationsOf(out[0] as never) ?? [])].sort();
  };
  const kept = async (e: ReturnType<typeof ev>) => {
    const sinks = await to(e);
    assert.ok(sinks.includes('events'), 'every change to Kafka');
    return sinks.includes('slack');
  };
  const running = backup({ phase: 'Running' });
  const failed = backup({ phase: 'Failed', lastBackupTime: '2026-12-01T10:00:00Z' });
  const heartbeat = backup({ phase: 'Failed', lastBackupTime: '2026-12-01T10:05:00Z' });
  assert.equal(await kept(ev('modified', failed, running)), true, 'Running → Failed');
  assert.equal(await kept(ev('modified', failed, backup())), true, 'no status → Failed');
  assert.equal(await kept(ev('added', failed)), true, 'created already Failed (e.g. found on start)');
  assert.equal(await kept(ev('modified', heartbeat, failed)), false, 'a heartbeat of a Failed Backup');
  assert.equal(await kept(ev('modified', running, backup({ phase: 'Pending' }))), false, 'Pending → Running');
  assert.equal(await kept(ev('modified', backup({ phase: 'Completed' }), running)), false, 'Running → Completed');
  assert.equal(await kept(ev('added', backup())), false, 'a creation without a phase');
  assert.equal(await kept(ev('deleted', failed)), false, 'a delete');
});
