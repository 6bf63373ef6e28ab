/**
 * The ConfigMap checkpoint on the real stack, through `crbridge run`: with `events.redact` of a
 * secret field and one Backup of ~1.1 MB (incompressible, larger than a ConfigMap bucket) among
 * normal ones, the checkpoint is written (the oversized object stored reduced), the ConfigMaps
 * read back with kubectl after a SIGTERM hold no secret value, and a restart with an empty state
 * dir emits exactly the changes made while it was down, with their deterministic ids, and nothing
 * for the unchanged objects; no event of either run holds the secret.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { KubeObject } from '../../../src/events/delta.ts';
import { type RunningCrbridge, runArgs, startCrbridge } from '../../support/crbridge.ts';
import { fileEvents } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { kubectl, waitFor } from '../../support/stack.ts';
import { adminApi, env, freshNamespace } from './helpers.ts';

const api = adminApi();
const procs: RunningCrbridge[] = [];
after(async () => {
  for (const p of procs) await p.stop('SIGKILL');
});

interface Ev {
  id: string;
  type: string;
  data: {
    object?: KubeObject;
    oldObject?: KubeObject;
    patch?: { op: string; path: string; value?: unknown }[];
    reason: string;
    redacted?: string[];
    truncated?: unknown;
  };
}

describe('ConfigMap checkpoint with redaction and an oversized object (crbridge run)', () => {
  test('the ConfigMaps hold no secret; a restart emits exactly the changes made while down', async () => {
    const ns = freshNamespace('it-cpcm');
    const secret = (name: string) => `db-${name}-${randomBytes(6).toString('hex')}`;
    const secrets: string[] = [];
    const coll = `/apis/example.com/v1/namespaces/${ns}/backups`;
    const create = async (name: string, schedule = '0 3 * * *') => {
      const db = secret(name);
      secrets.push(db);
      return (await api.request('POST', coll, undefined, {
        apiVersion: 'example.com/v1',
        kind: 'Backup',
        metadata: { name, namespace: ns, labels: { app: 'cp' } },
        spec: { databaseName: db, schedule },
      })) as KubeObject;
    };
    const patchSpec = async (name: string, spec: Record<string, unknown>) =>
      (await api.request('PATCH', `${coll}/${name}`, undefined, { spec })) as KubeObject;

    // ~1.1 MB of incompressible text (base64 of random bytes): more than a 900 KB bucket, under etcd's 1.5 MiB
    const large = await create('large', randomBytes(825_000).toString('base64'));
    const normal = new Map<string, KubeObject>();
    for (const n of ['a', 'b', 'c', 'd']) normal.set(n, await create(n));

    const dir = mkdtempSync(join(tmpdir(), 'crbridge-cpcm-'));
    const pipeline = join(dir, 'cp.yaml');
    const sink = (run: number) => join(dir, `events-${run}.jsonl`);
    const writePipeline = (run: number) =>
      writeFileSync(
        pipeline,
        backupsPipelineYaml({
          name: 'cp',
          namespaces: [ns],
          sourceExtra: `    checkpoint:\n      backend: kubernetes\n      namespace: ${ns}\n      name: crb-cp\n      flushIntervalMs: 100\n`,
          // events large enough for the large object, so that what its events lack is the checkpoint's doing
          specExtra: '  events:\n    redact: ["/spec/databaseName"]\n    maxBytes: 4000000\n',
          sinks: `    - name: out\n      type: file\n      path: ${sink(run)}\n`,
        }),
      );
    const run = async (n: number) => {
      writePipeline(n);
      // a fresh state dir each time: the checkpoint lives only in the ConfigMaps
      const stateDir = mkdtempSync(join(tmpdir(), 'crbridge-cpcm-state-'));
      const proc = startCrbridge(runArgs([pipeline], stateDir, ['--cluster-name', 'it']), { ...process.env, ...env });
      procs.push(proc);
      const port = await proc.port();
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 60_000, 'readyz');
      return proc;
    };
    const configMaps = () =>
      (
        JSON.parse(
          kubectl(['-n', ns, 'get', 'configmaps', '-l', 'app.kubernetes.io/managed-by=crbridge', '-o', 'json']),
        ) as {
          items: { metadata: { name: string }; data?: Record<string, string>; binaryData?: Record<string, string> }[];
        }
      ).items;
    const index = () => configMaps().find((cm) => cm.data?.key !== undefined);

    // run 1: five created events, then the checkpoint records the first listing
    const p1 = await run(1);
    await waitFor(() => fileEvents(sink(1)).length >= 5, 60_000, 'five created events');
    await waitFor(() => index()?.data?.initialized === 'true', 30_000, 'checkpoint initialized');
    assert.equal(await p1.stop('SIGTERM'), 0, 'clean exit');
    const run1 = fileEvents(sink(1)) as unknown as Ev[];
    assert.deepEqual(
      run1.map((e) => e.id).sort(),
      [large, ...normal.values()].map((o) => `${o.metadata.uid}.${o.metadata.resourceVersion}`).sort(),
    );

    // the checkpoint ConfigMaps, as kubectl shows them: no secret; the large object stored reduced
    const cms = configMaps();
    const buckets = cms.filter((cm) => cm.binaryData?.['entries.json.gz'] !== undefined);
    assert.ok(buckets.length >= 1 && cms.length === buckets.length + 1, `an index and buckets: ${cms.length}`);
    const entries: Record<string, KubeObject & Record<string, unknown>> = {};
    for (const cm of buckets) {
      const text = gunzipSync(Buffer.from(cm.binaryData?.['entries.json.gz'] as string, 'base64')).toString();
      Object.assign(entries, JSON.parse(text));
    }
    const everything = JSON.stringify(cms) + JSON.stringify(entries);
    for (const s of secrets) assert.ok(!everything.includes(s), 'no secret value in the checkpoint ConfigMaps');
    assert.equal(Object.keys(entries).length, 5);
    for (const o of normal.values()) {
      const e = entries[o.metadata.uid];
      assert.equal(e?.metadata.resourceVersion, o.metadata.resourceVersion);
      assert.deepEqual(e?.spec, { databaseName: '[REDACTED]', schedule: '0 3 * * *' }, 'stored whole, masked');
    }
    const stored = entries[large.metadata.uid];
    assert.equal(stored?.['crbridge.io/partial'], true, 'the oversized object is stored reduced');
    assert.equal(stored?.spec, undefined);
    assert.equal(stored?.metadata.resourceVersion, large.metadata.resourceVersion);
    assert.deepEqual(stored?.metadata.labels, { app: 'cp' });

    // while down: change a and the large one, delete c, create e; b and d stay as they were
    const a2 = await patchSpec('a', { schedule: '5 4 * * *' });
    const large2 = await patchSpec('large', { retentionDays: 3 });
    await api.request('DELETE', `${coll}/c`);
    const e1 = await create('e');

    const p2 = await run(2);
    await waitFor(() => fileEvents(sink(2)).length >= 4, 60_000, 'the changes made while down');
    await new Promise((r) => setTimeout(r, 2000)); // and nothing else comes
    assert.equal(await p2.stop('SIGTERM'), 0, 'clean exit');
    const run2 = fileEvents(sink(2)) as unknown as Ev[];
    const byId = new Map(run2.map((e) => [e.id, e]));
    const uid = (n: string) => (normal.get(n) as KubeObject).metadata.uid;
    assert.deepEqual(
      run2.map((e) => e.id).sort(),
      [
        `${uid('a')}.${a2.metadata.resourceVersion}`,
        `${large.metadata.uid}.${large2.metadata.resourceVersion}`,
        `${uid('c')}.deleted`,
        `${e1.metadata.uid}.${e1.metadata.resourceVersion}`,
      ].sort(),
      'exactly the changes made while down; nothing for b and d',
    );
    assert.ok(run2.every((e) => e.data.reason === 'resync'));
    const ea = byId.get(`${uid('a')}.${a2.metadata.resourceVersion}`) as Ev;
    assert.equal(ea.type, 'io.crbridge.example.com.backup.spec.changed');
    assert.deepEqual(
      ea.data.patch?.filter((op) => op.path.startsWith('/spec')),
      [{ op: 'replace', path: '/spec/schedule', value: '5 4 * * *' }],
      'the patch against the (redacted) checkpoint shows only the real change',
    );
    const el = byId.get(`${large.metadata.uid}.${large2.metadata.resourceVersion}`) as Ev;
    assert.equal(el.type, 'io.crbridge.example.com.backup.spec.changed');
    assert.equal(el.data.truncated, undefined, 'nothing dropped by the size policy');
    assert.equal(
      (el.data.object?.spec as { retentionDays?: number } | undefined)?.retentionDays,
      3,
      'the new state in full',
    );
    assert.equal(el.data.oldObject, undefined, 'no old state: only its identity was stored');
    assert.equal(el.data.patch, undefined, 'no patch against a reduced old state');
    const ec = byId.get(`${uid('c')}.deleted`) as Ev;
    assert.equal(ec.data.object?.metadata.name, 'c');
    const all = JSON.stringify([...run1, ...run2]);
    for (const s of secrets) assert.ok(!all.includes(s), 'no secret in any event');
  });
});
