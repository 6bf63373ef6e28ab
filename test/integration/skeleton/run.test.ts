/**
 * @serial: stops and restarts the stack's Kafka.
 * The walking skeleton on the real stack: `crbridge run` carries Backup changes to a Kafka topic
 * and a file as CloudEvents, in order per object; bad pipeline files are refused before start;
 * Kafka down at start is survived with retries and delivery once it is back.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CloudEventV1, HTTP } from 'cloudevents';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { publishedSchemas, readTopic as readTopicOf } from '../../support/events.ts';
import { kafkaAndFileSinks, writeBackupsPipeline } from '../../support/pipeline.ts';
import { waitFor as eventually, installBackupCrd, kubectl, loadStackEnv, repoRoot } from '../../support/stack.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;

function backup(ns: string, name: string, db: string): string {
  return JSON.stringify({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: { name, namespace: ns },
    spec: { databaseName: db, schedule: '0 3 * * *' },
  });
}

/** A merge patch of a Backup, of its status subresource when `status`. */
function patch(ns: string, name: string, body: string, status = false): void {
  kubectl([
    '-n',
    ns,
    'patch',
    'backups.example.com',
    name,
    ...(status ? ['--subresource=status'] : []),
    '--type=merge',
    '-p',
    body,
  ]);
}

function apply(json: string): void {
  kubectl(['apply', '-f', '-'], { input: json });
}

const readTopic = (topic: string, want: number, timeoutMs?: number) =>
  readTopicOf(env.KAFKA_BROKERS, topic, want, timeoutMs);

function pipeline(
  dir: string,
  name: string,
  ns: string,
  topic: string,
  file: string,
  brokers = env.KAFKA_BROKERS,
): string {
  return writeBackupsPipeline(dir, { name, namespaces: [ns], sinks: kafkaAndFileSinks(brokers, topic, file) });
}

before(() => {
  installBackupCrd();
});

describe('crbridge run on the real stack', () => {
  const dir = mkdtempSync(join(tmpdir(), 'crb-skeleton-'));

  test('creates, spec and status updates and deletes reach Kafka and the file, in order, as CloudEvents', async () => {
    const ns = `skel-${suffix}`;
    const topic = `backups-${suffix}`;
    const file = join(dir, 'audit.jsonl');
    kubectl(['create', 'namespace', ns]);
    const proc = startCrbridge(
      runArgs([pipeline(dir, 'skeleton', ns, topic, file)], join(dir, 'state'), ['--cluster-name', 'it']),
      { ...process.env, ...env },
    );
    after(() => proc.stop('SIGKILL'));
    const port = await proc.port();
    await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

    apply(backup(ns, 'orders', 'orders-db'));
    apply(backup(ns, 'users', 'users-db'));
    patch(ns, 'orders', '{"spec":{"schedule":"0 4 * * *"}}');
    patch(ns, 'orders', '{"status":{"phase":"Running"}}', true);
    kubectl(['-n', ns, 'delete', 'backups.example.com', 'users', '--wait=true']);
    patch(ns, 'orders', '{"status":{"phase":"Completed"}}', true);
    kubectl(['-n', ns, 'delete', 'backups.example.com', 'orders', '--wait=true']);

    const expected = [
      ['orders', 'added'],
      ['users', 'added'],
      ['orders', 'spec'],
      ['orders', 'status'],
      ['users', 'deleted'],
      ['orders', 'status'],
      ['orders', 'deleted'],
    ] as const;
    const records = await readTopic(topic, expected.length);
    assert.equal(records.length, expected.length, `records: ${records.map((r) => r.event.type).join(', ')}`);

    const kinds = (type: string) =>
      /deleted/.test(type)
        ? 'deleted'
        : /status/.test(type)
          ? 'status'
          : /spec/.test(type)
            ? 'spec'
            : /created|added/.test(type)
              ? 'added'
              : type;
    for (const name of ['orders', 'users']) {
      const got = records
        .filter((r) => (r.event.data as { object: { metadata: { name: string } } }).object.metadata.name === name)
        .map((r) => kinds(r.event.type));
      const want = expected.filter(([n]) => n === name).map(([, k]) => k);
      assert.deepEqual(got, want, `order of ${name}'s events`);
    }
    const uids = new Set<string>();
    const check = publishedSchemas();
    for (const r of records) {
      assert.deepEqual(check(JSON.parse(JSON.stringify(r.event))), [], `${r.event.id} matches the published schemas`);
      const data = r.event.data as { object: { metadata: { uid: string; name: string } }; oldObject?: unknown };
      assert.equal(r.key, data.object.metadata.uid, 'record key is the uid');
      uids.add(data.object.metadata.uid);
      assert.equal(r.headers.ce_specversion, '1.0');
      assert.ok(r.headers.ce_id && r.headers.ce_type && r.headers.ce_source, 'ce_* headers');
      assert.equal(r.event.specversion, '1.0');
      // Updates carry the previous object as oldObject; a delete's object is the last known state.
      if (kinds(r.event.type) === 'spec' || kinds(r.event.type) === 'status')
        assert.ok(data.oldObject, `${r.event.type} carries the old object`);
    }
    assert.equal(uids.size, 2);
    const statusEvents = records.filter((r) => kinds(r.event.type) === 'status');
    assert.deepEqual(
      statusEvents.map((r) => (r.event.data as { object: { status: { phase: string } } }).object.status.phase),
      ['Running', 'Completed'],
    );
    const lastStates = records
      .filter((r) => kinds(r.event.type) === 'deleted')
      .map((r) => (r.event.data as { object: { metadata: { name: string }; status?: { phase: string } } }).object);
    assert.deepEqual(
      lastStates.map((o) => [o.metadata.name, o.status?.phase]).sort(),
      [
        ['users', undefined],
        ['orders', 'Completed'],
      ].sort(),
      'deletes carry the last known state',
    );
    const specEvent = records.find((r) => kinds(r.event.type) === 'spec');
    assert.equal(
      (specEvent!.event.data as { object: { spec: { schedule: string } } }).object.spec.schedule,
      '0 4 * * *',
    );

    // The file holds the same events, structured mode, one per line, in the same order.
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    assert.equal(lines.length, expected.length);
    for (const l of lines) assert.deepEqual(check(JSON.parse(l)), [], 'file events match the published schemas');
    const fromFile = lines.map(
      (l) =>
        HTTP.toEvent({ headers: { 'content-type': 'application/cloudevents+json' }, body: l }) as CloudEventV1<unknown>,
    );
    assert.deepEqual(
      fromFile.map((e) => [(e.data as { object: { metadata: { name: string } } }).object.metadata.name, kinds(e.type)]),
      expected.map(([n, k]) => [n, k]),
      'the file holds every change in the order it happened',
    );
    assert.deepEqual(new Set(fromFile.map((e) => e.id)), new Set(records.map((r) => r.event.id)));

    // kcat, an independent consumer, sees the ce_* headers.
    const kcatOut = execFileSync(
      'kcat',
      ['-C', '-b', env.KAFKA_BROKERS, '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%k|%h\n'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    const kcatLines = kcatOut.trim().split('\n');
    assert.equal(kcatLines.length, expected.length);
    for (const l of kcatLines) {
      assert.match(l, /ce_specversion=1\.0/);
      assert.match(l, /ce_id=/);
      assert.match(l, /ce_type=/);
      assert.ok(uids.has(l.split('|')[0] ?? ''), 'kcat key is a uid');
    }

    assert.equal(await proc.stop('SIGTERM'), 0, `exit code after SIGTERM; stderr:\n${proc.stderr().slice(-2000)}`);
  });

  test('a bad pipeline file is refused before start, naming file, line and field', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: bad
spec:
  source:
    group: example.com
    resource: backups
  sinks:
    - name: events
      type: kafak
      topic: x
    - name: audit
      type: file
`,
    );
    const yamlErr = join(dir, 'yamlerr.yaml');
    writeFileSync(yamlErr, 'apiVersion: crbridge.io/v1alpha1\nkind: Pipeline\nmetadata: {name: x\n');
    const proc = startCrbridge(
      ['run', '-c', bad, '-c', yamlErr, '--state-dir', join(dir, 'bad-state'), '--http-port', '0'],
      { ...process.env, ...env },
    );
    assert.equal(await proc.exited, 2);
    const err = proc.stderr();
    assert.match(
      err,
      new RegExp(
        `${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:7:\\d+: /spec/source/version: required field "version" is missing`,
      ),
    );
    assert.match(err, /bad\.yaml:11:\d+: \/spec\/sinks\/0\/type: must be one of: kafka, file, stdout/);
    assert.match(err, /bad\.yaml:13:\d+: \/spec\/sinks\/1\/path: required field "path" is missing/);
    assert.match(err, /yamlerr\.yaml:\d+:\d+: YAML: /);
    assert.doesNotMatch(err, /ops endpoint listening|crbridge started/, 'nothing started');
  });

  test('Kafka unreachable at start: crbridge keeps watching, retries, and delivers once Kafka is up', async () => {
    const ns = `skel-down-${suffix}`;
    const topic = `backups-down-${suffix}`;
    const file = join(dir, 'down.jsonl');
    kubectl(['create', 'namespace', ns]);
    execFileSync(process.execPath, [join(repoRoot, 'test/infra/stack.ts'), 'stop', 'kafka'], { stdio: 'inherit' });
    let restarted = false;
    after(() => {
      if (!restarted)
        execFileSync(process.execPath, [join(repoRoot, 'test/infra/stack.ts'), 'start', 'kafka'], { stdio: 'inherit' });
    });
    const proc = startCrbridge(runArgs([pipeline(dir, 'kafka-down', ns, topic, file)], join(dir, 'down-state')), {
      ...process.env,
      ...env,
    });
    after(() => proc.stop('SIGKILL'));
    const port = await proc.port();
    await eventually(
      async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200,
      30_000,
      'readyz with Kafka down',
    );
    apply(backup(ns, 'a', 'a-db'));
    apply(backup(ns, 'b', 'b-db'));
    // Still watching: the file sink gets both while Kafka is down.
    await eventually(
      () => readFileSync(file, 'utf8').trim().split('\n').length === 2,
      30_000,
      'file events while Kafka is down',
    );
    // Retries are happening (counted), not one attempt given up.
    await eventually(
      async () => {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const m = /crbridge_component_retries_total\{component="kafka-down\/events"\} (\d+)/.exec(text);
        return m && Number(m[1]) >= 2;
      },
      30_000,
      'kafka retries counted',
    );
    execFileSync(process.execPath, [join(repoRoot, 'test/infra/stack.ts'), 'start', 'kafka'], { stdio: 'inherit' });
    restarted = true;
    apply(backup(ns, 'c', 'c-db'));
    const records = await readTopic(topic, 3, 120_000);
    assert.deepEqual(
      records.map((r) => (r.event.data as { object: { metadata: { name: string } } }).object.metadata.name).sort(),
      ['a', 'b', 'c'],
    );
    assert.equal(await proc.stop('SIGTERM'), 0);
  });
});
