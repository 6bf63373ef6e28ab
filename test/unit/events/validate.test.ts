/**
 * Validation levels 1 (CloudEvents envelope + extension rules), 2 (published data schema) and
 * 3 (CRD openAPIV3Schema); every built event is valid; the published schema file is in sync.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parse as parseYaml } from 'yaml';
import { buildEvent } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { crdNameFor, createCrdSchemaValidator } from '../../../src/events/crd-schema.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { eventDataSchemaJson } from '../../../src/events/schemas/generate.ts';
import { createEventValidator, errorKind } from '../../../src/events/validate.ts';
import { backup, delta } from './fixtures.ts';

const opts = { clusterName: 'local' };
const v = createEventValidator();
const good = () =>
  buildEvent(delta('modified', backup({ rv: '2', phase: 'Running' }), backup({ rv: '1', phase: 'Pending' })), opts);

function bad(mutate: (e: Record<string, unknown>) => void): CloudEvent {
  const e = structuredClone(good()) as Record<string, unknown>;
  mutate(e);
  return e as CloudEvent;
}

describe('level 1: envelope', () => {
  it('accepts built events', () => assert.deepEqual(v.validate(good()), { ok: true }));

  const cases: [string, (e: Record<string, unknown>) => void, RegExp][] = [
    ['missing id', (e) => delete e.id, /must have required property 'id'/],
    ['empty type', (e) => (e.type = ''), /^\/type must NOT have fewer than 1 characters/],
    ['source not a URI reference', (e) => (e.source = 'a b\\c'), /^\/source must match format "uri-reference"/],
    ['time not RFC 3339', (e) => (e.time = 'yesterday'), /^\/time must match format "date-time"/],
    ['dataschema not absolute', (e) => (e.dataschema = '/relative'), /^\/dataschema must match format "uri"/],
    ['specversion 0.3', (e) => (e.specversion = '0.3'), /specversion must be "1.0"/],
    ['upper-case extension', (e) => (e.K8sName = 'x'), /^\/K8sName attribute name must be lowercase alphanumeric/],
    ['too long extension', (e) => (e.k8sresourceversionxyz = 'x'), /at most 20 characters/],
    ['object extension value', (e) => (e.k8sname = { a: 1 }), /^\/k8sname extension value must be/],
    ['64-bit integer extension', (e) => (e.k8sgeneration = 2 ** 40), /^\/k8sgeneration extension value/],
  ];
  for (const [name, mutate, re] of cases) {
    it(`rejects ${name}`, () => {
      const r = v.validate(bad(mutate));
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.level, 'envelope');
      assert.ok(
        r.errors.some((x) => re.test(x)),
        r.errors.join('; '),
      );
    });
  }
});

describe('level 2: data', () => {
  const cases: [string, (e: Record<string, unknown>) => void, RegExp][] = [
    [
      'missing reason',
      (e) => delete (e.data as Record<string, unknown>).reason,
      /^\/data must have required property 'reason'/,
    ],
    ['unknown reason', (e) => ((e.data as Record<string, unknown>).reason = 'guess'), /^\/data\/reason must be equal/],
    [
      'missing object',
      (e) => delete (e.data as Record<string, unknown>).object,
      /^\/data must have required property 'object'/,
    ],
    [
      'object without uid',
      (e) => delete (e.data as { object: { metadata: Partial<KubeObject['metadata']> } }).object.metadata.uid,
      /^\/data\/object\/metadata must have required property 'uid'/,
    ],
    [
      'patch op without value',
      (e) => ((e.data as Record<string, unknown>).patch = [{ op: 'add', path: '/a' }]),
      /^\/data\/patch\/0 must have required property 'value'/,
    ],
    [
      'bad pointer',
      (e) => ((e.data as Record<string, unknown>).patch = [{ op: 'remove', path: 'a' }]),
      /^\/data\/patch\/0\/path must match pattern/,
    ],
    [
      'transition without to',
      (e) => ((e.data as Record<string, unknown>).transition = { field: '/status/phase', from: 'A' }),
      /^\/data\/transition must have required property 'to'/,
    ],
  ];
  for (const [name, mutate, re] of cases) {
    it(`rejects ${name}`, () => {
      const r = v.validate(bad(mutate));
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.level, 'data');
      assert.ok(
        r.errors.some((x) => re.test(x)),
        r.errors.join('; '),
      );
    });
  }

  it('accepts a truncated event without object', () => {
    const e = buildEvent(delta('added', backup({ rv: '1' })), { clusterName: 'local', maxBytes: 900 });
    assert.deepEqual(e.data.truncated?.dropped, ['object']);
    assert.deepEqual(v.validate(e), { ok: true });
  });

  it('the published schema file is generated from the module', () => {
    assert.equal(
      readFileSync(new URL('../../../schemas/event-data.schema.json', import.meta.url), 'utf8'),
      eventDataSchemaJson(),
    );
  });

  it('property: every event the builder makes is valid at levels 1 and 2', () => {
    const phase = fc.option(fc.constantFrom('Pending', 'Running', 'Completed', 'Failed'), { nil: undefined });
    const obj = fc.record({
      rv: fc.integer({ min: 1, max: 1e9 }).map(String),
      generation: fc.integer({ min: 1, max: 2 ** 40 }),
      schedule: fc.string(),
      phase,
      password: fc.option(fc.string(), { nil: undefined }),
    });
    fc.assert(
      fc.property(
        fc.constantFrom('added', 'modified', 'deleted' as const),
        obj,
        obj,
        fc.constantFrom('live', 'relist', 'resync' as const),
        fc.integer({ min: 600, max: 5000 }),
        (kind, a, b, reason, maxBytes) => {
          const e = buildEvent(delta(kind, backup(b), kind === 'modified' ? backup(a) : undefined, reason), {
            clusterName: 'local',
            redact: ['/spec/credentials/password'],
            maxBytes,
          });
          assert.deepEqual(v.validate(e), { ok: true });
          if (!e.data.truncated) assert.ok(Buffer.byteLength(JSON.stringify(e)) <= maxBytes);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('level 3: CRD openAPIV3Schema', () => {
  const crd = parseYaml(readFileSync(new URL('../../../test/fixtures/crds/backup.yaml', import.meta.url), 'utf8'));
  crd.metadata.resourceVersion = '100';

  function objectValidator() {
    const crdV = createCrdSchemaValidator({ fetchCrd: async () => crd });
    return { crdV, v3: createEventValidator({ objectSchema: crdV }) };
  }

  it('skips level 3 until a schema compiled, then checks the object', async () => {
    const { crdV, v3 } = objectValidator();
    const wrong = backup({ rv: '2', phase: 'Sleeping' });
    const e = buildEvent(delta('added', wrong), opts);
    assert.deepEqual(v3.validate(e), { ok: true }, 'no schema yet');
    await crdV.refresh();
    assert.equal(crdV.resourceVersion, '100');
    const r = v3.validate(e);
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.equal(r.level, 'object');
    assert.deepEqual(r.errors, ['/data/object/status/phase must be equal to one of the allowed values']);
    assert.deepEqual(v3.validate(buildEvent(delta('added', backup({ rv: '2', phase: 'Running' })), opts)), {
      ok: true,
    });
  });

  it('reports missing required fields, unknown fields and wrong formats', async () => {
    const { crdV, v3 } = objectValidator();
    await crdV.refresh();
    const o = backup({ rv: '3', phase: 'Completed', lastBackupTime: 'noon' }) as KubeObject & {
      spec: Record<string, unknown>;
    };
    delete o.spec.databaseName;
    o.spec.colour = 'blue';
    const r = v3.validate(buildEvent(delta('added', o), opts));
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.deepEqual(r.errors.sort(), [
      '/data/object/spec must NOT have additional properties: colour',
      "/data/object/spec must have required property 'databaseName'",
      '/data/object/status/lastBackupTime must match format "date-time"',
    ]);
  });

  it('checks created and changed objects but never a delete, whose last state may break the schema', async () => {
    const { crdV, v3 } = objectValidator();
    await crdV.refresh();
    const wrong = backup({ rv: '7', phase: 'Sleeping' });
    const modified = v3.validate(buildEvent(delta('modified', wrong, backup({ rv: '6', phase: 'Running' })), opts));
    assert.equal(modified.ok, false, 'an update to an invalid state is caught');
    assert.deepEqual(v3.validate(buildEvent(delta('deleted', wrong), opts)), { ok: true });
  });

  it('ignores schema errors at redacted pointers, not elsewhere', async () => {
    const { crdV, v3 } = objectValidator();
    await crdV.refresh();
    const o = backup({ rv: '5', phase: 'Running' }) as KubeObject & { spec: Record<string, unknown> };
    o.spec.retentionDays = 3;
    const masked = buildEvent(delta('added', o), { clusterName: 'local', redact: ['/spec/retentionDays'] });
    assert.deepEqual(masked.data.redacted, ['/spec/retentionDays']);
    assert.deepEqual(v3.validate(masked), { ok: true });
    const other = buildEvent(delta('added', backup({ rv: '6', phase: 'Nope' })), {
      clusterName: 'local',
      redact: ['/spec/schedule'],
    });
    const r = v3.validate(other);
    assert.equal(r.ok, false);
    if (!r.ok) assert.deepEqual(r.errors, ['/data/object/status/phase must be equal to one of the allowed values']);
  });

  it('recompiles when told the CRD changed, keeps the old schema when a fetch fails', async () => {
    let current: unknown = crd;
    let notify: (() => void) | undefined;
    const errors: unknown[] = [];
    const crdV = createCrdSchemaValidator({
      fetchCrd: async () => {
        if (current instanceof Error) throw current;
        return current;
      },
      subscribe: (cb) => {
        notify = cb;
        return () => {
          notify = undefined;
        };
      },
      onError: (e) => errors.push(e),
    });
    await crdV.start();
    const sleeping = backup({ rv: '2', phase: 'Sleeping' });
    assert.equal(crdV.validate(sleeping)?.length, 1);
    const next = structuredClone(crd);
    next.metadata.resourceVersion = '101';
    next.spec.versions[0].schema.openAPIV3Schema.properties.status.properties.phase.enum.push('Sleeping');
    current = next;
    notify?.();
    await crdV.refresh();
    assert.equal(crdV.resourceVersion, '101');
    assert.deepEqual(crdV.validate(sleeping), []);
    current = new Error('forbidden');
    await crdV.refresh();
    assert.equal(errors.length, 1);
    assert.deepEqual(crdV.validate(sleeping), [], 'previous schema kept');
    crdV.stop();
    assert.equal(notify, undefined);
  });
});

describe('helpers', () => {
  it('errorKind groups errors that differ only by array index', () => {
    assert.equal(errorKind('/data/patch/3/path must match pattern "^/"'), '/data/patch/*/path must match pattern "^/"');
    assert.equal(
      errorKind("/data/patch/12 must have required property 'value'"),
      "/data/patch/* must have required property 'value'",
    );
    assert.equal(errorKind('/k8sname extension value must be a string'), '/k8sname extension value must be a string');
    assert.equal(errorKind('/data/object/spec/v2x must be integer'), '/data/object/spec/v2x must be integer');
  });

  it('crdNameFor', () => {
    assert.equal(crdNameFor({ resource: 'backups', group: 'example.com' }), 'backups.example.com');
  });
});
