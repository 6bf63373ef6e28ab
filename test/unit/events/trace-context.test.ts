/**
 * The lifecycle trace context: deterministic trace and span ids from the uid (and generation),
 * the traceparent format and its parsing, the trace-id ratio sampler, and the builder and bindings
 * carrying `traceparent` (the extension attribute, and the W3C header in Kafka and HTTP).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { toHttpBinary, toHttpStructured } from '../../../src/events/bindings/http.ts';
import { toKafkaRecord } from '../../../src/events/bindings/kafka.ts';
import { buildEvent } from '../../../src/events/build.ts';
import {
  formatTraceparent,
  isSampled,
  lifecycleOf,
  lifecycleTraceId,
  parseTraceparent,
  rootSpanId,
  spanIdFor,
  traceContextFor,
  traceContextOption,
} from '../../../src/events/trace-context.ts';
import { backup, delta, UID } from './fixtures.ts';

describe('trace context', () => {
  test('ids are deterministic hex of the right length, distinct per uid, generation and key', () => {
    const t = lifecycleTraceId(UID);
    assert.match(t, /^[0-9a-f]{32}$/);
    assert.equal(lifecycleTraceId(UID), t);
    assert.notEqual(lifecycleTraceId('other-uid'), t);
    assert.notEqual(lifecycleTraceId(UID, 2), t);
    assert.notEqual(lifecycleTraceId(UID, 2), lifecycleTraceId(UID, 3));
    assert.match(rootSpanId(t), /^[0-9a-f]{16}$/);
    assert.equal(rootSpanId(t), rootSpanId(lifecycleTraceId(UID)));
    assert.notEqual(spanIdFor(t, 'event:a'), spanIdFor(t, 'event:b'));
    assert.notEqual(spanIdFor(t, 'event:a'), rootSpanId(t));
  });

  test('perGeneration uses the generation; otherwise it is ignored', () => {
    assert.equal(lifecycleOf({ uid: UID, generation: 4 }).traceId, lifecycleTraceId(UID));
    const g = lifecycleOf({ uid: UID, generation: 4 }, { perGeneration: true });
    assert.equal(g.traceId, lifecycleTraceId(UID, 4));
    assert.equal(g.generation, 4);
  });

  test('traceparent is formatted and parsed per W3C trace context', () => {
    const t = lifecycleTraceId(UID);
    const tp = traceContextFor({ uid: UID }).traceparent;
    assert.equal(tp, `00-${t}-${rootSpanId(t)}-01`);
    assert.deepEqual(parseTraceparent(tp), { traceId: t, spanId: rootSpanId(t), sampled: true });
    assert.deepEqual(parseTraceparent(formatTraceparent(t, rootSpanId(t), false))?.sampled, false);
    for (const bad of [
      'nonsense',
      `00-${'0'.repeat(32)}-${rootSpanId(t)}-01`,
      `00-${t}-${'0'.repeat(16)}-01`,
      `ff-${t}-${rootSpanId(t)}-01`,
      `00-${t.toUpperCase()}-${rootSpanId(t)}-01`,
      42,
    ])
      assert.equal(parseTraceparent(bad), undefined, String(bad));
  });

  test('the sampler keeps about the ratio of lifecycles, and the same ones every time', () => {
    let kept = 0;
    for (let i = 0; i < 2000; i++) if (isSampled(lifecycleTraceId(`uid-${i}`), 0.25)) kept++;
    assert.ok(kept > 400 && kept < 600, `kept ${kept} of 2000 at 0.25`);
    for (let i = 0; i < 50; i++) {
      const id = lifecycleTraceId(`uid-${i}`);
      assert.equal(isSampled(id, 0.25), isSampled(id, 0.25));
      assert.equal(isSampled(id, 1), true);
      assert.equal(isSampled(id, 0), false);
      if (isSampled(id, 0.1)) assert.equal(isSampled(id, 0.5), true, 'a lower ratio keeps a subset');
    }
    assert.match(traceContextFor({ uid: 'x' }, { sampleRatio: 0 }).traceparent, /-00$/);
  });

  test('the builder sets traceparent from the object; Kafka and HTTP carry it as the W3C header too', () => {
    const opts = { clusterName: 'c', traceContext: traceContextOption({}) };
    const e = buildEvent(delta('added', backup({ phase: 'Pending' })), opts);
    const expected = traceContextFor({ uid: UID }).traceparent;
    assert.equal(e.traceparent, expected);
    assert.equal(e.tracestate, undefined);
    const rec = toKafkaRecord(e);
    assert.equal(rec.headers.traceparent, expected);
    assert.equal(rec.headers.ce_traceparent, expected);
    assert.equal(rec.headers.tracestate, undefined);
    assert.equal(toKafkaRecord(e, 'structured').headers.traceparent, expected);
    assert.equal(toHttpBinary(e).headers.traceparent, expected);
    assert.equal(toHttpBinary(e).headers['ce-traceparent'], expected);
    assert.equal(toHttpStructured(e).headers.traceparent, expected);
    // a later change of the same object points at the same trace
    const e2 = buildEvent(
      delta('modified', backup({ rv: '1300', phase: 'Running' }), backup({ phase: 'Pending' })),
      opts,
    );
    assert.equal(e2.traceparent, expected);
    // perGeneration: the generation selects the trace
    const g = buildEvent(delta('added', backup({ generation: 3 })), {
      clusterName: 'c',
      traceContext: traceContextOption({ perGeneration: true }),
    });
    assert.equal(parseTraceparent(g.traceparent)?.traceId, lifecycleTraceId(UID, 3));
  });

  test('without the option no event carries trace context and no header is added', () => {
    const e = buildEvent(delta('added', backup({})), { clusterName: 'c' });
    assert.equal(e.traceparent, undefined);
    assert.equal(toKafkaRecord(e).headers.traceparent, undefined);
    assert.equal(toHttpBinary(e).headers.traceparent, undefined);
  });
});
