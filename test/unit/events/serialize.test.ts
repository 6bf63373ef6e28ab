/**
 * The structured JSON and the data's JSON made once and shared (`toStructuredJsonKeep`, the
 * outbox's serializer; `dataJson` and `toStructuredJson`, the bindings'): always the very text
 * `JSON.stringify` makes, whatever the attributes, their order and the data (a property test), and
 * the data serialized once when kept.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { toHttpBinary } from '../../../src/events/bindings/http.ts';
import { toKafkaRecord } from '../../../src/events/bindings/kafka.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { dataJson, toBatchJson, toStructuredJson, toStructuredJsonKeep } from '../../../src/events/serialize.ts';

const attrName = fc.stringMatching(/^[a-z][a-z0-9]{0,11}$/).filter((k) => k !== 'data');
const attrs = fc.dictionary(attrName, fc.oneof(fc.string(), fc.integer(), fc.boolean()), { maxKeys: 6 });
const data = fc.oneof(
  fc.object({ maxDepth: 3 }),
  fc.jsonValue({ maxDepth: 3 }),
  fc.constant(undefined),
  fc.constant(null),
);
/** An event with its data last (as the builder makes it) or among the attributes. */
const event = fc.tuple(attrs, data, fc.boolean()).map(([a, d, last]): CloudEvent => {
  const base = { specversion: '1.0', id: 'x', source: '/s', type: 't', ...a };
  if (last) return { ...base, data: d } as CloudEvent;
  return { data: d, ...base } as CloudEvent;
});

describe('shared serialization', () => {
  test("every serializer makes exactly JSON.stringify's text, kept data or not", () => {
    fc.assert(
      fc.property(fc.array(event, { minLength: 1, maxLength: 4 }), (events) => {
        const plain = events.map((e) => JSON.stringify(e));
        assert.deepEqual(events.map(toStructuredJson), plain, 'before keeping');
        assert.deepEqual(events.map(toStructuredJsonKeep), plain, 'keeping');
        assert.deepEqual(events.map(toStructuredJson), plain, 'after keeping');
        assert.equal(toBatchJson(events), JSON.stringify(events));
        for (const e of events) {
          assert.equal(dataJson(e), e.data === undefined ? undefined : JSON.stringify(e.data));
          const value = toKafkaRecord(e).value;
          assert.equal(value === null ? undefined : value.toString('utf8'), dataJson(e));
          assert.equal(toHttpBinary(e).body, dataJson(e) ?? '');
        }
      }),
      { numRuns: 300 },
    );
  });

  test('once kept, the data is not serialized again by the bindings', () => {
    let calls = 0;
    const payload = {
      object: { metadata: { name: 'b1' } },
      toJSON() {
        calls++;
        return { object: this.object };
      },
    };
    const e = { specversion: '1.0', id: 'a', source: '/s', type: 't', data: payload } as unknown as CloudEvent;
    const stored = toStructuredJsonKeep(e);
    assert.equal(calls, 1);
    assert.equal(
      stored,
      '{"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"object":{"metadata":{"name":"b1"}}}}',
    );
    assert.equal(toKafkaRecord(e).value?.toString('utf8'), '{"object":{"metadata":{"name":"b1"}}}');
    assert.equal(toHttpBinary(e).body, '{"object":{"metadata":{"name":"b1"}}}');
    assert.equal(toStructuredJson(e), stored);
    assert.equal(toStructuredJsonKeep(e), stored);
    assert.equal(calls, 1, 'serialized once for the outbox and three bindings');
    // a stage that changes the data makes a new data object: serialized anew, never the stale text
    const changed = { ...e, data: { object: { metadata: { name: 'b2' } } } } as unknown as CloudEvent;
    assert.equal(toKafkaRecord(changed).value?.toString('utf8'), '{"object":{"metadata":{"name":"b2"}}}');
  });
});
