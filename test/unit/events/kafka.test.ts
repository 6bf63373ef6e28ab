/**
 * Kafka binding: binary and structured records, key = uid, tombstones; round-trips through the
 * `cloudevents` SDK (`Kafka.toEvent`) compare every attribute and the data.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kafka, type KafkaMessage } from 'cloudevents';
import { toKafkaRecord, tombstoneFor } from '../../../src/events/bindings/kafka.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { toStructuredJson } from '../../../src/events/serialize.ts';
import { backup, delta, UID } from './fixtures.ts';

const opts = { clusterName: 'local' };
const events: Record<string, CloudEvent> = {
  created: buildEvent(delta('added', backup({ rv: '1', phase: 'Pending' })), opts),
  updated: buildEvent(
    delta('modified', backup({ rv: '2', phase: 'Running' }), backup({ rv: '1', phase: 'Pending' })),
    opts,
  ),
  deleted: buildEvent(delta('deleted', backup({ rv: '3', phase: 'Completed' })), opts),
  traced: buildEvent(delta('added', backup({ rv: '1', phase: 'Pending' })), {
    clusterName: 'local',
    traceContext: () => ({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'k=v' }),
  }),
};

/** Attributes as the SDK gives them back: every value as a string except integers, which it parses. */
function sdkView(e: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e as Record<string, unknown>)) {
    if (k === 'data' || k === 'data_base64' || v === undefined) continue;
    out[k] = typeof v === 'number' ? String(v) : v;
  }
  return out;
}

function expectedAttrs(e: CloudEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) if (k !== 'data') out[k] = typeof v === 'number' ? String(v) : v;
  return out;
}

describe('toStructuredJson', () => {
  it('is one line without trailing newline and parses back to the event', () => {
    const s = toStructuredJson(events.updated as CloudEvent);
    assert.ok(!s.includes('\n'));
    assert.deepEqual(JSON.parse(s), events.updated);
  });
});

describe('Kafka binding', () => {
  it('binary: ce_ headers for every attribute, content-type, data as value, key = uid', () => {
    const e = events.updated as CloudEvent;
    const r = toKafkaRecord(e);
    assert.equal(r.key, UID);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers.ce_specversion, '1.0');
    assert.equal(r.headers.ce_id, `${UID}.2`);
    assert.equal(r.headers.ce_type, 'io.crbridge.example.com.backup.status.changed');
    assert.equal(r.headers.ce_k8sgeneration, '1');
    assert.equal(r.headers.ce_partitionkey, UID);
    assert.equal(r.headers.ce_datacontenttype, undefined);
    const attrCount = Object.keys(e).filter((k) => k !== 'data').length;
    assert.equal(Object.keys(r.headers).length, attrCount);
    assert.deepEqual(JSON.parse(r.value?.toString('utf8') ?? ''), e.data);
  });

  it('structured: the JSON event format as the value', () => {
    const e = events.created as CloudEvent;
    const r = toKafkaRecord(e, 'structured');
    assert.equal(r.key, UID);
    assert.deepEqual(r.headers, { 'content-type': 'application/cloudevents+json; charset=utf-8' });
    assert.equal(r.value?.toString('utf8'), toStructuredJson(e));
  });

  for (const [name, e] of Object.entries(events)) {
    for (const mode of ['binary', 'structured'] as const) {
      it(`round-trips ${name} (${mode}) through the cloudevents SDK`, () => {
        const r = toKafkaRecord(e, mode);
        const msg: KafkaMessage = { key: r.key ?? '', value: r.value, headers: r.headers, body: r.value };
        const parsed = Kafka.toEvent(msg);
        assert.ok(!Array.isArray(parsed));
        const p = parsed as unknown as Record<string, unknown>;
        assert.deepEqual(sdkView(p), expectedAttrs(e));
        assert.deepEqual(p.data, e.data);
      });
    }
  }

  it('tombstone only for deletes: key uid, value null', () => {
    assert.deepEqual(tombstoneFor(events.deleted as CloudEvent), { key: UID, value: null, headers: {} });
    assert.equal(tombstoneFor(events.created as CloudEvent), undefined);
    assert.equal(tombstoneFor(events.updated as CloudEvent), undefined);
  });

  it('same event, same record (idempotent mapping)', () => {
    const e = events.updated as CloudEvent;
    assert.deepEqual(toKafkaRecord(e), toKafkaRecord(structuredClone(e)));
  });
});
