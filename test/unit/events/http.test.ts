/**
 * HTTP binding: binary, structured and batch messages; round-trips through the `cloudevents` SDK
 * (`HTTP.toEvent`) compare every attribute and the data.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HTTP } from 'cloudevents';
import {
  decodeHeaderValue,
  encodeHeaderValue,
  toHttpBatch,
  toHttpBinary,
  toHttpStructured,
} from '../../../src/events/bindings/http.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { backup, delta, UID } from './fixtures.ts';

const opts = { clusterName: 'local' };
const events: CloudEvent[] = [
  buildEvent(delta('added', backup({ rv: '1', phase: 'Pending' })), opts),
  buildEvent(delta('modified', backup({ rv: '2', phase: 'Running' }), backup({ rv: '1', phase: 'Pending' })), opts),
  buildEvent(
    delta(
      'modified',
      backup({ rv: '3', generation: 2, schedule: '1 1 * * *', phase: 'Running' }),
      backup({ rv: '2', phase: 'Running' }),
    ),
    opts,
  ),
  buildEvent(delta('deleted', backup({ rv: '4', phase: 'Completed' }), undefined, 'resync'), {
    clusterName: 'local',
    maxBytes: 900,
  }),
];

function attrs(e: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e as Record<string, unknown>)) {
    if (k === 'data' || k === 'data_base64' || v === undefined) continue;
    out[k] = typeof v === 'number' ? String(v) : v;
  }
  return out;
}

describe('HTTP binding', () => {
  it('binary: ce- headers, content-type, data as the body', () => {
    const e = events[1] as CloudEvent;
    const m = toHttpBinary(e);
    assert.equal(m.headers['content-type'], 'application/json');
    assert.equal(m.headers['ce-id'], `${UID}.2`);
    assert.equal(m.headers['ce-specversion'], '1.0');
    assert.equal(m.headers['ce-k8sgeneration'], '1');
    assert.equal(m.headers['ce-subject'], 'shop/orders-nightly');
    assert.equal(Object.keys(m.headers).length, Object.keys(e).length - 1);
    assert.deepEqual(JSON.parse(m.body), e.data);
  });

  it('percent-encodes space, quote, percent and non-ASCII in header values', () => {
    assert.equal(encodeHeaderValue('a b"c%d€'), 'a%20b%22c%25d%E2%82%AC');
    assert.equal(encodeHeaderValue('shop/orders-nightly'), 'shop/orders-nightly');
    for (const s of ['a b"c%d€', 'plain', '100%', 'ünï cödé ✓'])
      assert.equal(decodeHeaderValue(encodeHeaderValue(s)), s);
    const e = { ...(events[0] as CloudEvent), subject: 'team a/back up' };
    assert.equal(toHttpBinary(e).headers['ce-subject'], 'team%20a/back%20up');
  });

  for (const [i, e] of events.entries()) {
    it(`round-trips event ${i} (${e.type}) in binary and structured mode through the SDK`, () => {
      for (const m of [toHttpBinary(e), toHttpStructured(e)]) {
        const parsed = HTTP.toEvent({ headers: m.headers, body: m.body });
        assert.ok(!Array.isArray(parsed));
        assert.deepEqual(attrs(parsed), attrs(e));
        assert.deepEqual((parsed as unknown as { data: unknown }).data, e.data);
      }
    });
  }

  it('batch: one array, parsed back to every event in order', () => {
    const m = toHttpBatch(events);
    assert.equal(m.headers['content-type'], 'application/cloudevents-batch+json; charset=utf-8');
    const parsed = HTTP.toEvent({ headers: m.headers, body: m.body });
    assert.ok(Array.isArray(parsed));
    assert.equal(parsed.length, events.length);
    for (const [i, p] of parsed.entries()) {
      assert.deepEqual(attrs(p), attrs(events[i]));
      assert.deepEqual((p as unknown as { data: unknown }).data, events[i]?.data);
    }
    assert.deepEqual(JSON.parse(toHttpBatch([]).body), []);
  });

  it('structured: the JSON event format', () => {
    const e = events[0] as CloudEvent;
    assert.deepEqual(JSON.parse(toHttpStructured(e).body), e);
  });
});
