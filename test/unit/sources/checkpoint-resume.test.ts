/**
 * What the source persists and what a resume then emits, through the real source (fake API
 * server) and the real event builder, for both checkpoint backends: the checkpoint holds the
 * stripped (`dropFields`) and redacted object (`SourceContext.redact`, the union of the sharing
 * pipelines' `events.redact`); a resumed update whose old state comes from it has no spurious
 * patch op and no secret, in a pipeline with that redaction and in one without; an object stored
 * reduced gives an update without oldObject/patch and a delete with the reduced last state.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { DeltaReceiver, SourceContext } from '../../../src/component.ts';
import { buildEvent, type EventOptions } from '../../../src/events/build.ts';
import { type Delta, type KubeObject, STORED } from '../../../src/events/delta.ts';
import { REDACTED } from '../../../src/events/redact.ts';
import { EntryCodec } from '../../../src/sources/kubernetes/checkpoint/base.ts';
import { KubernetesSource, type KubernetesSourceConfig } from '../../../src/sources/kubernetes/source.ts';
import { silentLogger } from '../../../src/telemetry/logger.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { FakeCluster } from './fake-cluster.ts';

class Recorder implements DeltaReceiver {
  deltas: Delta[] = [];
  async push(delta: Delta) {
    this.deltas.push(delta);
    return { settled: Promise.resolve() };
  }
}

const REDACT = ['/spec/password'];

function makeSource(cluster: FakeCluster, stateDir: string, checkpoint: KubernetesSourceConfig['checkpoint']) {
  const receiver = new Recorder();
  const ctx: SourceContext = {
    id: 'p/source',
    pipeline: 'p',
    logger: silentLogger,
    metrics: new Metrics(),
    stateDir,
    clusterName: 'test',
    receiver,
    redact: REDACT,
  };
  const source = new KubernetesSource(
    {
      group: 'example.com',
      version: 'v1',
      resource: 'backups',
      backoffInitialMs: 10,
      backoffMaxMs: 50,
      checkpoint: { flushIntervalMs: 20, ...checkpoint },
    },
    ctx,
    { api: cluster },
  );
  return { source, receiver, start: () => source.start(new AbortController().signal) };
}

async function until(fn: () => boolean, what: string, ms = 5000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function noise(n: number): string {
  let s = '';
  while (s.length < n) s += Math.random().toString(36).slice(2);
  return s.slice(0, n);
}

/** Every persisted byte of the checkpoint, as text. */
function persisted(backend: 'file' | 'kubernetes', stateDir: string, cluster: FakeCluster): string {
  if (backend === 'file') {
    return readdirSync(stateDir)
      .filter((f) => f.startsWith('checkpoints.sqlite'))
      .map((f) => readFileSync(join(stateDir, f), 'latin1'))
      .join('\n');
  }
  return [...cluster.configMaps.values()]
    .map((cm) => {
      const c = cm as { data?: Record<string, string>; binaryData?: Record<string, string> };
      const bin = Object.values(c.binaryData ?? {}).map((v) => gunzipSync(Buffer.from(v, 'base64')).toString());
      return [...Object.values(c.data ?? {}), ...bin].join('\n');
    })
    .join('\n');
}

const withRedaction: EventOptions = { clusterName: 'test', redact: REDACT };
const withoutRedaction: EventOptions = { clusterName: 'test' };

for (const backend of ['file', 'kubernetes'] as const) {
  test(`${backend} checkpoint: stores the stripped, redacted object; a resume emits exactly the changes, no spurious op, no secret`, async () => {
    const c = new FakeCluster();
    const stateDir = mkdtempSync(join(tmpdir(), 'crbridge-cpr-'));
    const checkpoint = backend === 'kubernetes' ? { backend, namespace: 'crb' } : {};
    c.create('a', 'plain', { databaseName: 'db1', password: 'pw-plain-SECRET' });
    c.create('a', 'quiet', { databaseName: 'db2', password: 'pw-quiet-SECRET' });
    c.create('a', 'huge', { databaseName: 'db3', password: 'pw-huge-SECRET', blob: noise(400_000) });
    c.create('a', 'doomed', { databaseName: 'db4', password: 'pw-doomed-SECRET', blob: noise(400_000) });
    const s1 = makeSource(c, stateDir, checkpoint);
    await s1.start();
    await until(() => s1.source.synced && s1.receiver.deltas.length === 4, 'first run');
    await s1.source.shutdown(Date.now() + 2000);

    const text = persisted(backend, stateDir, c);
    assert.ok(text.includes('db1') && text.includes('db2'), 'the persisted objects are readable here');
    assert.ok(!text.includes('SECRET'), 'no secret persisted');
    assert.ok(!text.includes('"manager"'), 'managedFields (dropFields) are not persisted');
    assert.ok(!text.includes('db3'), 'the huge objects are stored reduced');

    // while down: one change of a normal object, one of a huge one, a delete of a huge one
    c.update('a', 'plain', { databaseName: 'db1-new', password: 'pw-plain-SECRET' });
    c.update('a', 'huge', { databaseName: 'db3-new', password: 'pw-huge-SECRET', blob: noise(400_000) });
    c.delete('a', 'doomed');
    // the ConfigMap backend needs no volume: the second run gets an empty state dir
    const s2 = makeSource(c, backend === 'file' ? stateDir : mkdtempSync(join(tmpdir(), 'crbridge-cpr-')), checkpoint);
    await s2.start();
    await until(() => s2.source.synced, 'second run synced');
    await new Promise((r) => setTimeout(r, 50));
    await s2.source.shutdown(Date.now() + 2000);
    const d = new Map(s2.receiver.deltas.map((x) => [x.object.metadata.name, x]));
    assert.deepEqual(
      s2.receiver.deltas.map((x) => `${x.reason} ${x.kind} ${x.object.metadata.name}`),
      ['resync modified plain', 'resync modified huge', 'resync deleted doomed'],
      'exactly the changes made while down; nothing for the unchanged objects',
    );

    // a normal object: old state from the checkpoint (redacted), new state from the API (not)
    const plain = d.get('plain') as Delta;
    assert.deepEqual(plain.oldObject?.[STORED], { redacted: REDACT, partial: false });
    for (const opts of [withRedaction, withoutRedaction]) {
      const e = buildEvent(plain, opts);
      assert.deepEqual(
        e.data.patch,
        [
          { op: 'replace', path: '/metadata/resourceVersion', value: plain.object.metadata.resourceVersion },
          { op: 'replace', path: '/spec/databaseName', value: 'db1-new' },
        ],
        `only the real change (${opts.redact ? 'with' : 'without'} the pipeline's own redaction)`,
      );
      assert.ok(!JSON.stringify(e).includes('SECRET'), 'no secret in the event');
      assert.equal((e.data.object.spec as { password: string }).password, REDACTED);
      assert.deepEqual(e.data.redacted, ['/spec/password']);
      assert.equal(e.id, `${plain.object.metadata.uid}.${plain.object.metadata.resourceVersion}`);
    }

    // a huge object: only its identity and metadata were stored, so no diff against them
    const huge = d.get('huge') as Delta;
    assert.equal(huge.oldObject?.[STORED]?.partial, true);
    assert.equal(huge.oldObject?.spec, undefined);
    const eh = buildEvent(huge, withRedaction);
    assert.equal(eh.type, 'io.crbridge.example.com.backup.spec.changed');
    assert.equal(eh.id, `${huge.object.metadata.uid}.${huge.object.metadata.resourceVersion}`);
    assert.equal((eh.data.object.spec as { databaseName: string }).databaseName, 'db3-new');
    for (const k of ['oldObject', 'patch', 'changedPaths', 'transition'] as const)
      assert.equal(eh.data[k], undefined, `no ${k} from a reduced old state`);
    assert.ok(!JSON.stringify(eh).includes('SECRET'));

    // a huge object deleted while down: its last known state is the reduced one
    const doomed = d.get('doomed') as Delta;
    const ed = buildEvent(doomed, withoutRedaction);
    assert.equal(ed.id, `${doomed.object.metadata.uid}.deleted`);
    assert.deepEqual(Object.keys(ed.data.object).sort(), ['apiVersion', 'kind', 'metadata']);
    assert.equal(ed.data.object.metadata.name, 'doomed');
  });
}

test('builder: a stored old state is diffed with the redaction it was stored with; a reduced one not at all', () => {
  const codec = new EntryCodec({ redact: ['/spec/password', '/spec/keys/*'] });
  const live = (rv: string, db: string): KubeObject => ({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: {
      uid: 'u1',
      name: 'b',
      namespace: 'a',
      resourceVersion: rv,
      generation: Number(rv),
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"spec":{"password":"pw-SECRET"}}' },
    },
    spec: { databaseName: db, password: 'pw-SECRET', keys: ['k1-SECRET', 'k2-SECRET'] },
    status: { phase: 'Running' },
  });
  const storedOld = codec.decode(JSON.parse(codec.encode(live('1', 'db')).json) as KubeObject);
  const delta = (old: KubeObject, obj: KubeObject): Delta => ({
    kind: 'modified',
    object: obj,
    oldObject: old,
    reason: 'resync',
    resource: { group: 'example.com', version: 'v1', resource: 'backups', kind: 'Backup', namespaced: true },
    observedAt: 0,
  });
  // a pipeline that redacts only the password (another pipeline sharing the source redacts the keys)
  const e = buildEvent(delta(storedOld, live('2', 'db2')), { clusterName: 'c', redact: ['/spec/password'] });
  assert.deepEqual(e.data.patch, [
    { op: 'replace', path: '/metadata/resourceVersion', value: '2' },
    { op: 'replace', path: '/metadata/generation', value: 2 },
    { op: 'replace', path: '/spec/databaseName', value: 'db2' },
  ]);
  assert.equal(e.type, 'io.crbridge.example.com.backup.spec.changed');
  assert.ok(!JSON.stringify(e).includes('SECRET'));
  assert.deepEqual((e.data.object.spec as { keys: string[] }).keys, [REDACTED, REDACTED]);
  // the same delta without a stored old state: the pipeline's own redaction only (unchanged behaviour)
  const fresh = buildEvent(delta(live('1', 'db'), live('2', 'db2')), { clusterName: 'c', redact: ['/spec/password'] });
  assert.deepEqual((fresh.data.object.spec as { keys: string[] }).keys, ['k1-SECRET', 'k2-SECRET']);
  // reduced: no oldObject/patch/changedPaths/transition, the type still from the generations
  const reduced = new EntryCodec({ maxEntryBytes: 100 });
  const partialOld = reduced.decode(JSON.parse(reduced.encode(live('1', 'db')).json) as KubeObject);
  const p = buildEvent(delta(partialOld, { ...live('2', 'db'), status: { phase: 'Done' } }), { clusterName: 'c' });
  assert.equal(p.type, 'io.crbridge.example.com.backup.spec.changed');
  assert.deepEqual(Object.keys(p.data).sort(), ['object', 'reason']);
  const sameGen = { ...live('1', 'db'), metadata: { ...live('1', 'db').metadata, resourceVersion: '3' } };
  assert.equal(
    buildEvent(delta(partialOld, sameGen), { clusterName: 'c' }).type,
    'io.crbridge.example.com.backup.status.changed',
  );
});
