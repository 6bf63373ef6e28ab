/**
 * The integration tests' webhook checks themselves (test/support/webhook-run.ts and the
 * misbehaviour plan of webhook-receiver.ts): each one reports the fault it exists for — a missing
 * change, an object's change before an earlier one, one change under two ids, a retry before its
 * Retry-After (seconds and HTTP date), a retry with other bytes — and passes good deliveries.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  misbehaviourPlan,
  type ReceivedEvent,
  type ReceivedRequest,
  type ReceiverAction,
  retryAfterViolations,
} from '../../support/webhook-receiver.ts';
import { type Changes, deliveryProblems, retryChanges } from '../../support/webhook-run.ts';

const ev = (uid: string, rv: string, id = `${uid}.${rv}`): ReceivedEvent => ({
  id,
  data: { object: { metadata: { uid, name: uid, namespace: 'ns', resourceVersion: rv } } },
});
const del = (uid: string, rv: string): ReceivedEvent => ev(uid, rv, `${uid}.deleted`);

let n = 0;
const post = (id: string, at: number, action: ReceiverAction = { status: 200 }, body = id): ReceivedRequest => ({
  n: ++n,
  method: 'POST',
  url: '/',
  headers: { 'webhook-id': id },
  body: Buffer.from(body),
  at,
  action,
  verified: true,
  events: [{ id }],
});

describe('webhook delivery checks', () => {
  const expected: Changes = new Map([
    ['a', ['1', '3', 'deleted']],
    ['b', ['2']],
  ]);

  test('every change in per-object order, duplicates with the same id: no problem', () => {
    const events = [ev('a', '1'), ev('b', '2'), ev('a', '3'), ev('a', '1'), ev('a', '3'), del('a', '4'), del('a', '3')];
    assert.deepEqual(deliveryProblems(events, expected), []);
  });

  test('a missing change, a change before an earlier one and one change under two ids are reported', () => {
    assert.deepEqual(deliveryProblems([ev('a', '1'), ev('a', '3'), del('a', '4')], expected), ['missing b@2']);
    assert.deepEqual(deliveryProblems([ev('b', '2'), ev('a', '3'), ev('a', '1'), del('a', '9')], expected), [
      'a@3 arrived before a@1',
    ]);
    assert.deepEqual(
      deliveryProblems([ev('b', '2'), ev('a', '1'), ev('a', '3'), del('a', '4'), ev('b', '2', 'x')], expected),
      ['change b@2 arrived as b.2 and x'],
    );
  });

  test('a retry before its Retry-After (seconds or HTTP date) is reported; one after it is not', () => {
    const t0 = Date.parse('2026-12-01T10:00:00.000Z');
    const secs: ReceiverAction = { status: 429, headers: { 'retry-after': '1' } };
    const date: ReceiverAction = { status: 429, headers: { 'retry-after': new Date(t0 + 2000).toUTCString() } };
    assert.deepEqual(retryAfterViolations([post('e1', t0, secs), post('e1', t0 + 1000)]), []);
    assert.equal(retryAfterViolations([post('e1', t0, secs), post('e1', t0 + 500)]).length, 1);
    assert.deepEqual(retryAfterViolations([post('e2', t0, date), post('e2', t0 + 2000)]), []);
    assert.match(retryAfterViolations([post('e2', t0, date), post('e2', t0 + 1200)])[0] ?? '', /800 ms before/);
    assert.match(retryAfterViolations([post('e3', t0, secs)])[0] ?? '', /never retried/);
  });

  test('a retry with other bytes is reported', () => {
    assert.deepEqual(retryChanges([post('e1', 0, { status: 500 }), post('e1', 1)]), []);
    assert.equal(retryChanges([post('e1', 0, { status: 500 }), post('e1', 1, { status: 200 }, 'other')]).length, 1);
  });

  test('the misbehaviour plan answers by POST number, rules first (uncounted), and not while down', () => {
    const plan = misbehaviourPlan(
      [
        { from: 2, to: 3, action: { status: 500 } },
        { from: 4, action: (q) => ({ status: 429, headers: { 'retry-after': String(q.n) } }) },
      ],
      [(q) => (q.url === '/poison' ? { status: 400 } : undefined)],
    );
    const req = (url = '/'): ReceivedRequest => ({ ...post('x', 0), url });
    plan.down = { status: 503 };
    assert.deepEqual(plan.respond(req()), { status: 503 });
    plan.down = undefined;
    const got = [req(), req(), req('/poison'), req(), req()].map((q) => plan.respond(q));
    assert.deepEqual(
      got.map((a) => (a && 'status' in a ? a.status : 200)),
      [200, 500, 400, 500, 429],
    );
    assert.equal(plan.posts, 4);
  });
});
