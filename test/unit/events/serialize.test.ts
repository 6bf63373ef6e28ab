/**
 * The data text made once per event and reused by every binding: each serialized form equals a
 * fresh JSON.stringify of the event as it is now — after the size policy removed fields, after an
 * enrich stage added attributes — so reuse never sends stale or different bytes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { toHttpBinary, toHttpStructured } from '../../../src/events/bindings/http.ts';
import { toKafkaRecord } from '../../../src/events/bindings/kafka.ts';
import { buildEvent, eventBytes } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { dataJson, structuredBytes, toBatchJson, toStructuredJson } from '../../../src/events/serialize.ts';
import { backup, delta } from './fixtures.ts';

const opts = { clusterName: 'prod-eu' };
const old = backup({ phase: 'Pending' });
const now = backup({ rv: '1300', generation: 2, schedule: '0 3 * * *', phase: 'Running' });

function forms(e: CloudEvent) {
  return {
    structured: toStructuredJson(e),
    kafkaValue: toKafkaRecord(e).value?.toString('utf8'),
    httpBody: toHttpBinary(e).body,
    httpStructured: toHttpStructured(e).body,
  };
}

test('every form carries the data exactly as JSON.stringify would, the data last in structured mode', () => {
  const e = buildEvent(delta('modified', now, old), opts);
  const f = forms(e);
  assert.equal(f.kafkaValue, JSON.stringify(e.data));
  assert.equal(f.httpBody, JSON.stringify(e.data));
  assert.equal(f.structured, JSON.stringify(e), 'the builder puts data last, so even the key order is the same');
  assert.equal(f.httpStructured, f.structured);
  assert.equal(structuredBytes(e), Buffer.byteLength(f.structured));
  assert.equal(toBatchJson([e, e]), JSON.stringify([e, e]));
});

test('after the size policy dropped fields, no form carries the text measured before', () => {
  const full = buildEvent(delta('modified', now, old), opts);
  const e = buildEvent(delta('modified', now, old), { ...opts, maxBytes: eventBytes(full) - 1 });
  assert.deepEqual(e.data.truncated?.dropped, ['oldObject']);
  assert.equal(dataJson(e.data), JSON.stringify(e.data));
  assert.equal(forms(e).kafkaValue, JSON.stringify(e.data));
  assert.equal(eventBytes(e), Buffer.byteLength(JSON.stringify(e)));
});

test('an enriched copy shares the data text and serializes its new attributes, data still last', () => {
  const e = buildEvent(delta('modified', now, old), opts);
  const before = toStructuredJson(e);
  const enriched = { ...e, team: 'payments' } as CloudEvent;
  assert.equal(toStructuredJson(e), before);
  const parsed = JSON.parse(toStructuredJson(enriched));
  assert.deepEqual(parsed, JSON.parse(JSON.stringify(enriched)));
  assert.equal(Object.keys(parsed).at(-1), 'data');
  assert.equal(toKafkaRecord(enriched).headers.ce_team, 'payments');
  assert.equal(structuredBytes(enriched), Buffer.byteLength(JSON.stringify(enriched)));
});

test('events without data serialize as before', () => {
  const e = { specversion: '1.0', id: 'x', source: '/s', type: 't', datacontenttype: 'application/json' } as CloudEvent;
  assert.equal(toStructuredJson(e), JSON.stringify(e));
  assert.equal(toKafkaRecord(e).value, null);
  assert.equal(structuredBytes(e), Buffer.byteLength(JSON.stringify(e)));
});
