/**
 * The command line's HA flags (`src/cli-ha.ts`): usage errors name the flag; the default
 * namespace comes from POD_NAMESPACE, then the service account's file, then `default`; with
 * --leader-elect a checkpoint on the local disk is refused naming file, pipeline and field unless
 * --state-dir-persistent; a local outbox counts as durable only then.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkElectionConfig, defaultNamespace, haFromFlags } from '../../src/cli-ha.ts';
import type { LoadedPipeline } from '../../src/config/types.ts';
import { registry } from '../../src/registry.ts';
import { silentLogger } from '../../src/telemetry/logger.ts';
import { Metrics } from '../../src/telemetry/metrics.ts';

const o = { logger: silentLogger, metrics: new Metrics() };

test('usage errors name the flag', () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ 'leader-election-id': 'x' }, /--leader-election-id needs --leader-elect/],
    [{ 'state-backend': 'etcd' }, /--state-backend must be "file" or "kubernetes", got "etcd"/],
    [{ 'state-namespace': 'x' }, /--state-namespace needs --state-backend kubernetes/],
    [
      { 'leader-elect': true, 'leader-election-retry-period': 'soon' },
      /--leader-election-retry-period must be a positive number of seconds, got "soon"/,
    ],
    [
      { 'leader-elect': true, 'leader-election-lease-duration': '5' },
      /lease duration \(5 s\) must be greater than the renew deadline \(10 s\)/,
    ],
    [{ 'leader-elect': true, 'leader-election-id': 'Not_A_Name' }, /--leader-election-id must be a Kubernetes name/],
  ];
  for (const [values, msg] of bad)
    assert.throws(
      () => haFromFlags(values, o),
      (e: { code?: string; message: string }) => {
        assert.equal(e.code, 'CRB_USAGE');
        assert.match(e.message, msg);
        return true;
      },
    );
});

test('without --leader-elect: no elector, the outbox is durable; with it, only with --state-dir-persistent', () => {
  assert.deepEqual(haFromFlags({}, o), { outboxDurable: true });
  const kc = join(mkdtempSync(join(tmpdir(), 'crb-cli-ha-')), 'kubeconfig');
  writeFileSync(
    kc,
    'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n',
  );
  const elected = haFromFlags({ 'leader-elect': true }, { ...o, kubeconfig: kc });
  assert.equal(elected.outboxDurable, false);
  assert.ok(elected.elector);
  assert.equal(
    haFromFlags({ 'leader-elect': true, 'state-dir-persistent': true }, { ...o, kubeconfig: kc }).outboxDurable,
    true,
  );
  assert.ok(haFromFlags({ 'state-backend': 'kubernetes' }, { ...o, kubeconfig: kc }).state);
});

test('the default namespace: POD_NAMESPACE, the service account file, else default', () => {
  const sa = mkdtempSync(join(tmpdir(), 'crb-sa-'));
  assert.equal(defaultNamespace({ POD_NAMESPACE: 'ops' }, sa), 'ops');
  assert.equal(defaultNamespace({}, sa), 'default');
  writeFileSync(join(sa, 'namespace'), 'crbridge-system\n');
  assert.equal(defaultNamespace({}, sa), 'crbridge-system');
});

test('--leader-elect refuses a file checkpoint (named by file, pipeline and field) unless --state-dir-persistent', () => {
  const pipeline = (name: string, checkpoint?: Record<string, unknown>): LoadedPipeline => ({
    file: `${name}.yaml`,
    document: 0,
    config: {
      apiVersion: 'crbridge.io/v1alpha1',
      kind: 'Pipeline',
      metadata: { name },
      spec: { source: { version: 'v1', resource: 'backups', ...(checkpoint && { checkpoint }) }, sinks: [] },
    } as never,
  });
  const loaded = [pipeline('a'), pipeline('b', { backend: 'kubernetes' }), pipeline('c', { backend: 'file' })];
  assert.throws(
    () => checkElectionConfig({ 'leader-elect': true }, loaded, registry.sources),
    (e: { code?: string; message: string }) => {
      assert.equal(e.code, 'CRB_USAGE');
      const lines = e.message.split('\n');
      assert.equal(lines.length, 2);
      assert.match(
        lines[0] as string,
        /^a\.yaml: pipeline "a", \/spec\/source\/checkpoint\/backend: .*"file" by default.*checkpoint\.backend: kubernetes/,
      );
      assert.match(lines[1] as string, /^c\.yaml: pipeline "c", \/spec\/source\/checkpoint\/backend:/);
      return true;
    },
  );
  checkElectionConfig({ 'leader-elect': true, 'state-dir-persistent': true }, loaded, registry.sources);
  checkElectionConfig({}, loaded, registry.sources);
  checkElectionConfig({ 'leader-elect': true }, [loaded[1] as LoadedPipeline], registry.sources);
});
