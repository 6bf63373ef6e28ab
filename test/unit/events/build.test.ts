/**
 * Contract tests of the event builder: one per change kind (create, spec change, status-only
 * change, phase transition, delete, delete found on catch-up, oversized object, redaction), each
 * checking every attribute and the data.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { buildEvent, type EventOptions, eventBytes, REDACTED } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { applyPatch, diff, type PatchOp } from '../../../src/events/patch.ts';
import { BACKUPS, backup, delta, OBSERVED, UID } from './fixtures.ts';

const opts: EventOptions = { clusterName: 'local' };

/** The attributes every event of the orders-nightly Backup carries. */
function common(e: CloudEvent, rv: string, generation: number): void {
  assert.equal(e.specversion, '1.0');
  assert.equal(e.source, '/clusters/local/apis/example.com/v1/backups');
  assert.equal(e.subject, 'shop/orders-nightly');
  assert.equal(e.datacontenttype, 'application/json');
  assert.equal(e.dataschema, 'https://crbridge.io/schemas/event-data.schema.json');
  assert.equal(e.k8sgroup, 'example.com');
  assert.equal(e.k8sversion, 'v1');
  assert.equal(e.k8skind, 'Backup');
  assert.equal(e.k8snamespace, 'shop');
  assert.equal(e.k8sname, 'orders-nightly');
  assert.equal(e.k8suid, UID);
  assert.equal(e.k8sresourceversion, rv);
  assert.equal(e.k8sgeneration, generation);
  assert.equal(e.k8scluster, 'local');
  assert.equal(e.partitionkey, UID);
  assert.equal(e.traceparent, undefined);
  for (const k of Object.keys(e)) assert.match(k, /^[a-z0-9]{1,20}$/, `attribute name ${k}`);
  assert.deepEqual(attrs(e), ALL, 'exactly these attributes');
  assert.equal(Object.keys(e).at(-1), 'data', 'data comes last');
}

const attrs = (e: CloudEvent) => Object.keys(e).sort();
const ALL = [
  'data',
  'datacontenttype',
  'dataschema',
  'id',
  'k8scluster',
  'k8sgeneration',
  'k8sgroup',
  'k8skind',
  'k8sname',
  'k8snamespace',
  'k8sresourceversion',
  'k8suid',
  'k8sversion',
  'partitionkey',
  'source',
  'specversion',
  'subject',
  'time',
  'type',
];

describe('buildEvent contract', () => {
  it('create', () => {
    const obj = backup({ rv: '1201' });
    const e = buildEvent(delta('added', obj), opts);
    common(e, '1201', 1);
    assert.deepEqual(attrs(e), ALL);
    assert.equal(e.id, `${UID}.1201`, 'the uid and the resourceVersion of the state it appeared in');
    assert.equal(e.type, 'io.crbridge.example.com.backup.created');
    assert.equal(e.time, '2026-11-28T10:00:00.000Z');
    assert.deepEqual(e.data, { object: obj, reason: 'live' });
    assert.equal(e.data.object, obj, 'object is not copied');
  });

  it('spec change (generation moved)', () => {
    const old = backup({ rv: '1201', generation: 1, phase: 'Pending' });
    const obj = backup({ rv: '1305', generation: 2, schedule: '30 3 * * *', phase: 'Pending' });
    const e = buildEvent(delta('modified', obj, old), opts);
    common(e, '1305', 2);
    assert.deepEqual(attrs(e), ALL);
    assert.equal(e.id, `${UID}.1305`);
    assert.equal(e.type, 'io.crbridge.example.com.backup.spec.changed');
    assert.equal(e.time, new Date(OBSERVED).toISOString(), 'no managedFields or conditions: observedAt');
    assert.deepEqual(e.data, {
      object: obj,
      reason: 'live',
      oldObject: old,
      patch: [
        { op: 'replace', path: '/metadata/resourceVersion', value: '1305' },
        { op: 'replace', path: '/metadata/generation', value: 2 },
        { op: 'replace', path: '/spec/schedule', value: '30 3 * * *' },
      ],
      changedPaths: ['/metadata', '/spec'],
    });
  });

  it('status-only change (generation did not move), time from managedFields', () => {
    const old = backup({ rv: '1305', generation: 2, phase: 'Running' });
    old.metadata.managedFields = [{ manager: 'controller', time: '2026-11-28T10:05:00Z' }];
    const obj = backup({ rv: '1400', generation: 2, phase: 'Running', lastBackupTime: '2026-11-28T10:10:00Z' });
    obj.metadata.managedFields = [
      { manager: 'kubectl', time: '2026-11-28T10:01:00Z' },
      { manager: 'controller', time: '2026-11-28T10:10:01Z' },
    ];
    const e = buildEvent(delta('modified', obj, old, 'relist'), opts);
    common(e, '1400', 2);
    assert.equal(e.id, `${UID}.1400`);
    assert.equal(e.type, 'io.crbridge.example.com.backup.status.changed');
    assert.equal(e.time, '2026-11-28T10:10:01.000Z');
    assert.deepEqual(e.data, {
      object: obj,
      reason: 'relist',
      oldObject: old,
      patch: [
        { op: 'replace', path: '/metadata/resourceVersion', value: '1400' },
        { op: 'replace', path: '/metadata/managedFields/0/manager', value: 'kubectl' },
        { op: 'replace', path: '/metadata/managedFields/0/time', value: '2026-11-28T10:01:00Z' },
        {
          op: 'add',
          path: '/metadata/managedFields/1',
          value: { manager: 'controller', time: '2026-11-28T10:10:01Z' },
        },
        { op: 'add', path: '/status/lastBackupTime', value: '2026-11-28T10:10:00Z' },
      ],
      changedPaths: ['/metadata', '/status'],
    });
    assert.equal(e.data.transition, undefined, 'phase did not move');
    assert.deepEqual(applyPatch(old, e.data.patch as PatchOp[]), obj);
  });

  it('phase transition: status.phase Running → Completed', () => {
    const old = backup({ rv: '1400', generation: 2, phase: 'Running' });
    const obj = backup({ rv: '1480', generation: 2, phase: 'Completed', lastBackupTime: '2026-11-28T10:12:00Z' });
    const e = buildEvent(delta('modified', obj, old), opts);
    common(e, '1480', 2);
    assert.equal(e.type, 'io.crbridge.example.com.backup.status.changed');
    assert.equal(e.id, `${UID}.1480`);
    assert.equal(e.time, new Date(OBSERVED).toISOString());
    assert.deepEqual(Object.keys(e.data), ['object', 'reason', 'oldObject', 'patch', 'changedPaths', 'transition']);
    assert.equal(e.data.object, obj);
    assert.equal(e.data.oldObject, old);
    assert.deepEqual(e.data.changedPaths, ['/metadata', '/status']);
    assert.deepEqual(e.data.transition, { field: '/status/phase', from: 'Running', to: 'Completed' });
    assert.deepEqual(e.data.patch, [
      { op: 'replace', path: '/metadata/resourceVersion', value: '1480' },
      { op: 'replace', path: '/status/phase', value: 'Completed' },
      { op: 'add', path: '/status/lastBackupTime', value: '2026-11-28T10:12:00Z' },
    ]);
  });

  it('phase transition: duration from lastPhaseTransitionTime and a custom phase path', () => {
    const old = backup({ rv: '1', phase: 'x' });
    const obj = backup({ rv: '2', phase: 'x' });
    (old.status as Record<string, unknown>).state = {
      value: 'Running',
      lastPhaseTransitionTime: '2026-11-28T10:00:00Z',
    };
    (obj.status as Record<string, unknown>).state = {
      value: 'Failed',
      lastPhaseTransitionTime: '2026-11-28T10:01:30Z',
    };
    const e = buildEvent(delta('modified', obj, old), { clusterName: 'local', phasePath: '/status/state/value' });
    assert.deepEqual(e.data.transition, {
      field: '/status/state/value',
      from: 'Running',
      to: 'Failed',
      since: '2026-11-28T10:00:00Z',
      durationSeconds: 90,
    });
  });

  it('phase transition: falls back to the Ready condition, duration between its transition times', () => {
    const old = backup({
      rv: '10',
      conditions: [{ type: 'Ready', status: 'False', lastTransitionTime: '2026-11-28T10:00:00Z', reason: 'Waiting' }],
    });
    const obj = backup({
      rv: '11',
      conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: '2026-11-28T10:02:00Z', reason: 'Done' }],
    });
    const e = buildEvent(delta('modified', obj, old), opts);
    assert.equal(e.time, '2026-11-28T10:02:00.000Z', 'time from the newest condition transition');
    assert.deepEqual(e.data.transition, {
      field: 'condition:Ready',
      from: 'False',
      to: 'True',
      since: '2026-11-28T10:00:00Z',
      durationSeconds: 120,
    });
    // A stale condition time is not the change time.
    const obj2 = backup({
      rv: '12',
      schedule: '1 1 * * *',
      conditions: (obj.status as { conditions: unknown[] }).conditions,
    });
    const e2 = buildEvent(delta('modified', obj2, obj), opts);
    assert.equal(e2.time, new Date(OBSERVED).toISOString());
    assert.equal(e2.data.transition, undefined);
  });

  it('delete (live)', () => {
    const obj = backup({ rv: '1600', generation: 2, phase: 'Completed', deletionTimestamp: '2026-11-28T11:00:00Z' });
    const e = buildEvent(delta('deleted', obj, backup({ rv: '1480' })), opts);
    common(e, '1600', 2);
    assert.deepEqual(attrs(e), ALL);
    assert.equal(e.id, `${UID}.deleted`);
    assert.equal(e.type, 'io.crbridge.example.com.backup.deleted');
    assert.equal(e.time, '2026-11-28T11:00:00.000Z');
    assert.deepEqual(e.data, { object: obj, reason: 'live' }, 'no oldObject or patch for deletes');
  });

  it('delete found on catch-up gets the id the live delete would have had', () => {
    const live = buildEvent(delta('deleted', backup({ rv: '1600', phase: 'Completed' }), undefined, 'live'), opts);
    const lastKnown = backup({ rv: '1480', phase: 'Completed' });
    const caught = buildEvent(delta('deleted', lastKnown, undefined, 'resync'), opts);
    common(caught, '1480', 1);
    assert.equal(caught.id, live.id);
    assert.equal(caught.type, live.type);
    assert.equal(caught.k8sresourceversion, '1480');
    assert.equal(caught.time, new Date(OBSERVED).toISOString(), 'no deletionTimestamp: observedAt');
    assert.deepEqual(caught.data, { object: lastKnown, reason: 'resync' });
    // The same holds for an update seen live and on relist.
    const old = backup({ rv: '1', phase: 'Pending' });
    const obj = backup({ rv: '2', phase: 'Running' });
    const a = buildEvent(delta('modified', obj, old, 'live'), opts);
    const b = buildEvent(delta('modified', obj, old, 'relist'), opts);
    assert.equal(a.id, b.id);
    assert.deepEqual({ ...a, data: { ...a.data, reason: 'x' } }, { ...b, data: { ...b.data, reason: 'x' } });
  });

  it('leaving the selector: a deleted event marked selector "left", its id from the state that left', () => {
    const last = backup({ rv: '1480', phase: 'Running' });
    const left = { ...delta('deleted', last), selector: 'left' as const };
    const e = buildEvent(left, opts);
    common(e, '1480', 1);
    assert.equal(e.id, `${UID}.1480.left`);
    assert.equal(e.type, 'io.crbridge.example.com.backup.deleted', 'gone from what the pipeline watches');
    assert.deepEqual(e.data, { object: last, reason: 'live', selector: 'left' });
    // the same departure found on a relist or the resync after a restart: the same id and event
    const caught = buildEvent({ ...left, reason: 'resync' }, opts);
    assert.deepEqual({ ...caught, data: { ...caught.data, reason: 'live' } }, e);
    // distinct from the update into that state, from the real deletion, and from a later departure
    const ids = [
      buildEvent(delta('modified', last, backup({ rv: '1400' })), opts).id,
      buildEvent(delta('deleted', last), opts).id,
      e.id,
      buildEvent({ ...delta('deleted', backup({ rv: '1999' })), selector: 'left' }, opts).id,
      buildEvent(delta('added', backup({ rv: '1600' })), opts).id,
    ];
    assert.deepEqual(ids, [`${UID}.1480`, `${UID}.deleted`, `${UID}.1480.left`, `${UID}.1999.left`, `${UID}.1600`]);
  });

  it('oversized object: drops oldObject, then object, keeps the patch, and says so', () => {
    const big = 'x'.repeat(3000);
    const old = backup({ rv: '1', phase: 'Running' });
    const obj = backup({ rv: '2', phase: 'Completed' });
    (old.metadata.annotations as unknown) = { blob: big };
    (obj.metadata.annotations as unknown) = { blob: big };
    const full = buildEvent(delta('modified', obj, old), opts);
    const fullBytes = Buffer.byteLength(JSON.stringify(full));

    const e1 = buildEvent(delta('modified', obj, old), { clusterName: 'local', maxBytes: fullBytes - 1 });
    assert.equal(e1.data.oldObject, undefined);
    assert.equal(e1.data.object, obj);
    assert.deepEqual(e1.data.truncated, { dropped: ['oldObject'], originalBytes: fullBytes, maxBytes: fullBytes - 1 });
    assert.ok(Buffer.byteLength(JSON.stringify(e1)) <= fullBytes - 1);

    const e2 = buildEvent(delta('modified', obj, old), { clusterName: 'local', maxBytes: 2500 });
    assert.equal(e2.data.oldObject, undefined);
    assert.equal(e2.data.object, undefined);
    assert.deepEqual(e2.data.patch, full.data.patch);
    assert.deepEqual(e2.data.changedPaths, ['/metadata', '/status']);
    assert.deepEqual(e2.data.transition, { field: '/status/phase', from: 'Running', to: 'Completed' });
    assert.deepEqual(e2.data.truncated?.dropped, ['oldObject', 'object']);
    common(e2, '2', 1);
    assert.deepEqual(Object.keys(e2.data).sort(), ['changedPaths', 'patch', 'reason', 'transition', 'truncated']);
    assert.equal(e2.id, full.id);
    assert.equal(e2.type, full.type);
    assert.ok(Buffer.byteLength(JSON.stringify(e2)) <= 2500);

    const created = buildEvent(delta('added', obj), { clusterName: 'local', maxBytes: 2000 });
    assert.deepEqual(created.data.truncated?.dropped, ['object']);
    assert.equal(created.data.reason, 'live');
    assert.equal(created.k8suid, UID, 'identity stays in the envelope');

    // Counting bytes, not characters.
    const wide = backup({ rv: '3' });
    (wide.metadata.annotations as unknown) = { note: '€'.repeat(1000) };
    const w = buildEvent(delta('added', wide), opts);
    const wBytes = Buffer.byteLength(JSON.stringify(w));
    assert.ok(wBytes > JSON.stringify(w).length);
    const w2 = buildEvent(delta('added', wide), { clusterName: 'local', maxBytes: wBytes - 1 });
    assert.deepEqual(w2.data.truncated, { dropped: ['object'], originalBytes: wBytes, maxBytes: wBytes - 1 });
  });

  it('whenever something is redacted, kubectl last-applied-configuration is masked too', () => {
    const o = backup({ rv: '9', password: 's3cret' });
    o.metadata.annotations = {
      'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({
        spec: { credentials: { password: 's3cret' } },
      }),
    };
    const e = buildEvent(delta('added', o), { clusterName: 'local', redact: ['/spec/credentials/password'] });
    assert.ok(!JSON.stringify(e).includes('s3cret'), 'the secret appears nowhere');
    assert.deepEqual(e.data.redacted, [
      '/spec/credentials/password',
      '/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration',
    ]);
    const plain = buildEvent(delta('added', o), { clusterName: 'local' });
    assert.equal(
      plain.data.object.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration'],
      o.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration'],
      'nothing is masked when nothing is configured',
    );
  });

  it('redaction masks (not drops) values in object, oldObject and patch, without touching the delta', () => {
    const old = backup({ rv: '1', password: 'hunter2', phase: 'Pending' });
    const obj = backup({ rv: '2', password: 's3cret', phase: 'Running' });
    (obj.metadata.annotations as unknown) = { 'example.com/token': 'abc' };
    const before = JSON.stringify(obj);
    const e = buildEvent(delta('modified', obj, old), {
      clusterName: 'local',
      redact: ['/spec/credentials/password', '/metadata/annotations/example.com~1token', '/spec/absent'],
    });
    assert.equal(JSON.stringify(obj), before, 'delta object unchanged');
    common(e, '2', 1);
    assert.equal(e.type, 'io.crbridge.example.com.backup.status.changed');
    assert.deepEqual(e.data.transition, { field: '/status/phase', from: 'Pending', to: 'Running' });
    assert.deepEqual(e.data.patch, [
      { op: 'replace', path: '/metadata/resourceVersion', value: '2' },
      { op: 'add', path: '/metadata/annotations', value: { 'example.com/token': REDACTED } },
      { op: 'replace', path: '/status/phase', value: 'Running' },
    ]);
    assert.equal((obj.spec as { credentials: { password: string } }).credentials.password, 's3cret');
    const o = e.data.object as KubeObject & { spec: { credentials: { password: string; user: string } } };
    assert.equal(o.spec.credentials.password, REDACTED);
    assert.equal(o.spec.credentials.user, 'backup');
    assert.equal(o.metadata.annotations?.['example.com/token'], REDACTED);
    assert.equal((e.data.oldObject as typeof o).spec.credentials.password, REDACTED);
    assert.deepEqual(e.data.redacted, ['/spec/credentials/password', '/metadata/annotations/example.com~1token']);
    const text = JSON.stringify(e);
    assert.ok(!text.includes('s3cret') && !text.includes('hunter2') && !text.includes('"abc"'), 'no secret leaves');
    assert.equal(o.status, obj.status, 'untouched subtrees are shared, not copied');
    // Wildcards.
    const withList = backup({ rv: '5' });
    (withList.spec as Record<string, unknown>).targets = [
      { url: 'a', key: 'k1' },
      { url: 'b' },
      { url: 'c', key: 'k3' },
    ];
    const w = buildEvent(delta('added', withList), { clusterName: 'local', redact: ['/spec/targets/*/key'] });
    assert.deepEqual((w.data.object.spec as { targets: unknown }).targets, [
      { url: 'a', key: REDACTED },
      { url: 'b' },
      { url: 'c', key: REDACTED },
    ]);
    assert.deepEqual(w.data.redacted, ['/spec/targets/0/key', '/spec/targets/2/key']);
  });
});

describe('buildEvent details', () => {
  it('core group, cluster-scoped objects, type prefix, trace context', () => {
    const ns: KubeObject = {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', uid: 'u-1', resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z' },
    };
    const e = buildEvent(
      {
        kind: 'added',
        object: ns,
        reason: 'live',
        observedAt: OBSERVED,
        resource: { group: '', version: 'v1', resource: 'namespaces', kind: 'Namespace', namespaced: false },
      },
      {
        clusterName: 'prod eu',
        typePrefix: 'com.example.k8s',
        traceContext: () => ({
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          tracestate: 'a=b',
        }),
      },
    );
    assert.equal(e.type, 'com.example.k8s.core.namespace.created');
    assert.equal(e.source, '/clusters/prod%20eu/api/v1/namespaces');
    assert.equal(e.subject, 'shop');
    assert.equal(e.k8snamespace, undefined);
    assert.equal(e.k8sgroup, 'core');
    assert.equal(e.k8sgeneration, undefined);
    assert.equal(e.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    assert.equal(e.tracestate, 'a=b');
  });

  it('without generation, spec vs status is told by the changed top-level paths', () => {
    const old = backup({ rv: '1', phase: 'Pending' });
    const obj = backup({ rv: '2', phase: 'Running' });
    delete old.metadata.generation;
    delete obj.metadata.generation;
    assert.equal(buildEvent(delta('modified', obj, old), opts).type, 'io.crbridge.example.com.backup.status.changed');
    const obj2 = backup({ rv: '3', phase: 'Running', schedule: '5 5 * * *' });
    delete obj2.metadata.generation;
    assert.equal(buildEvent(delta('modified', obj2, obj), opts).type, 'io.crbridge.example.com.backup.spec.changed');
    assert.equal(buildEvent(delta('modified', obj2), opts).type, 'io.crbridge.example.com.backup.spec.changed');
  });

  it('large generations travel as strings (CloudEvents Integer is 32-bit)', () => {
    const obj = backup({ rv: '1', generation: 2 ** 40 });
    assert.equal(buildEvent(delta('added', obj), opts).k8sgeneration, String(2 ** 40));
  });

  it('rejects an object without identity', () => {
    const bad = { metadata: { name: 'x' } } as unknown as KubeObject;
    assert.throws(() => buildEvent(delta('added', bad), opts), /metadata\.uid/);
  });

  it('patch equals diff(oldObject, object) and round-trips', () => {
    const old = backup({ rv: '1', phase: 'Pending' });
    const obj = backup({ rv: '2', phase: 'Failed', schedule: '0 0 * * 0' });
    const e = buildEvent(delta('modified', obj, old), opts);
    assert.deepEqual(e.data.patch, diff(old, obj));
    assert.deepEqual(applyPatch(old, e.data.patch as PatchOp[]), obj);
    assert.equal(BACKUPS.resource, 'backups');
  });

  it('property: live, relist and resync of the same change give the same event but for reason', () => {
    const phase = fc.constantFrom('Pending', 'Running', 'Completed', 'Failed');
    fc.assert(
      fc.property(
        fc.constantFrom('added', 'modified', 'deleted' as const),
        fc.integer({ min: 1, max: 1e9 }),
        phase,
        phase,
        fc.integer({ min: 1, max: 5 }),
        (kind, rv, p1, p2, gen) => {
          const old = backup({ rv: String(rv), phase: p1 });
          const obj = backup({ rv: String(rv + 1), phase: p2, generation: gen });
          const built = (['live', 'relist', 'resync'] as const).map((reason) =>
            buildEvent(delta(kind, obj, kind === 'modified' ? old : undefined, reason), opts),
          );
          const strip = (e: CloudEvent) => ({ ...e, data: { ...e.data, reason: '-' } });
          assert.deepEqual(strip(built[1] as CloudEvent), strip(built[0] as CloudEvent));
          assert.deepEqual(strip(built[2] as CloudEvent), strip(built[0] as CloudEvent));
          assert.equal(built[2]?.data.reason, 'resync');
        },
      ),
      { numRuns: 200 },
    );
  });

  it('property: eventBytes is the exact UTF-8 size of the structured JSON', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme' }),
        fc.string(),
        fc.constantFrom('added', 'modified', 'deleted' as const),
        (a, b, kind) => {
          const old = backup({ rv: '1', schedule: a });
          const obj = backup({ rv: '2', schedule: b, phase: a });
          const e = buildEvent(delta(kind, obj, kind === 'modified' ? old : undefined), opts);
          assert.equal(eventBytes(e), Buffer.byteLength(JSON.stringify(e), 'utf8'));
          assert.equal(eventBytes(e), Buffer.byteLength(JSON.stringify(e), 'utf8'), 'memoized sizes stay exact');
        },
      ),
      { numRuns: 200 },
    );
  });

  it('never modifies the delta (deep-frozen input, with redaction and truncation)', () => {
    const freeze = (o: unknown): void => {
      if (o && typeof o === 'object') {
        for (const v of Object.values(o)) freeze(v);
        Object.freeze(o);
      }
    };
    for (const kind of ['added', 'modified', 'deleted'] as const) {
      const d = delta(
        kind,
        backup({ rv: '2', password: 'p2', phase: 'Running' }),
        backup({ rv: '1', password: 'p1', phase: 'Pending' }),
      );
      freeze(d);
      const before = JSON.stringify(d);
      for (const maxBytes of [100_000, 1500, 500]) {
        const e = buildEvent(d, { clusterName: 'local', redact: ['/spec/credentials/password', '/spec/*'], maxBytes });
        assert.ok(!JSON.stringify(e).includes('p2'));
      }
      assert.equal(JSON.stringify(d), before);
    }
  });
});
