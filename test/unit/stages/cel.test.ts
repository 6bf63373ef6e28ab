/**
 * The CEL environment of pipeline stages: the variables an event gives, compile-time type checks
 * with located messages, JSON numbers meeting integer literals, attribute value conversion.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CelCompileError,
  celProblem,
  celVariables,
  changeOf,
  compileCel,
  toAttributeValue,
} from '../../../src/cel/index.ts';
import { buildEvent } from '../../../src/events/build.ts';
import { backup, delta } from '../events/fixtures.ts';

const opts = { clusterName: 'prod-eu' };
const created = buildEvent(delta('added', backup({ phase: 'Pending' })), opts);
const updated = buildEvent(
  delta(
    'modified',
    backup({ rv: '1300', generation: 2, schedule: '0 3 * * *', phase: 'Running' }),
    backup({ phase: 'Pending' }),
  ),
  opts,
);
const deleted = buildEvent(delta('deleted', backup({ phase: 'Running' })), opts);

const run = (expr: string, event = updated) => compileCel(expr, 'attribute').evaluate(celVariables(event));

test('change is the last part of the event type, two parts for spec/status changes', () => {
  assert.equal(changeOf(created.type), 'created');
  assert.equal(changeOf(updated.type), 'spec.changed');
  assert.equal(changeOf('io.crbridge.example.com.backup.status.changed'), 'status.changed');
  assert.equal(changeOf(deleted.type), 'deleted');
});

test('the variables give the object, the old object, the change, the patch and the event', () => {
  assert.equal(run('object.spec.schedule'), '0 3 * * *');
  assert.equal(run('oldObject.spec.schedule'), '0 2 * * *');
  assert.equal(run('oldObject == null', created), true);
  assert.equal(run('oldObject == null', deleted), true);
  assert.equal(run('change'), 'spec.changed');
  assert.equal(run('patch.exists(p, p.path == "/spec/schedule")'), true);
  assert.equal(run('size(patch) == 0', created), true);
  assert.equal(run('event.k8snamespace + "/" + event.k8sname'), 'shop/orders-nightly');
  assert.equal(run('event.data.reason'), 'live');
  assert.equal(run('object.metadata.labels["example.com/tier"]'), 'gold');
  assert.equal(run('object.metadata.?annotations["owner"].orValue("nobody")'), 'nobody');
});

test('JSON numbers compare with integer literals and mix with them in arithmetic', () => {
  assert.equal(run('object.metadata.generation == 2'), true);
  assert.equal(run('object.metadata.generation > 1'), true);
  assert.equal(run('object.metadata.generation + 1'), 3);
  assert.equal(run('10 - object.metadata.generation'), 8);
  assert.equal(run('object.metadata.generation * 2 / 4'), 1);
});

test('evaluation does not change the event', () => {
  const before = structuredClone(updated);
  run('object.metadata.?labels["app"].orValue("") + string(size(patch))');
  assert.deepEqual(updated, before);
});

test('compile errors are one line, say what is wrong and where', () => {
  assert.match(
    celProblem('object.spec.(', 'bool') ?? '',
    /^CEL syntax error: Expected IDENTIFIER, got LPAREN, at character 13 of "object\.spec\.\("$/,
  );
  assert.match(celProblem('objct.spec', 'bool') ?? '', /^CEL type error: Unknown variable: objct, at character 1/);
  assert.match(celProblem('change == 1', 'bool') ?? '', /no such overload: string == int/);
  // a `dyn` result passes the check; the filter refuses a non-bool when it evaluates
  assert.equal(celProblem('object.metadata.name', 'bool'), undefined);
  assert.match(celProblem('"a" + "b"', 'bool') ?? '', /must produce a bool .* but it produces string/);
  assert.match(celProblem('[1, 2]', 'attribute') ?? '', /string, number or bool .* produces list/);
  assert.equal(celProblem('has(object.status) && object.status.phase == "Failed"', 'bool'), undefined);
  assert.equal(celProblem('object.metadata.name', 'attribute'), undefined);
  assert.throws(() => compileCel('1 +', 'bool'), CelCompileError);
  for (const p of [celProblem('1 +', 'bool'), celProblem('change == 1', 'bool')]) assert.doesNotMatch(p ?? '', /\n/);
});

test('a missing key fails at evaluation; has() and optionals guard it', () => {
  assert.throws(() => run('object.metadata.annotations["x"]'), /annotations/);
  assert.equal(run('has(object.metadata.annotations) && object.metadata.annotations["x"] == "y"'), false);
});

test('attribute values: strings, bools, 32-bit integers; other numbers as strings; null and empty optionals as absent', () => {
  assert.equal(toAttributeValue('a'), 'a');
  assert.equal(toAttributeValue(true), true);
  assert.equal(toAttributeValue(7n), 7);
  assert.equal(toAttributeValue(2n ** 40n), '1099511627776');
  assert.equal(toAttributeValue(3), 3);
  assert.equal(toAttributeValue(2.5), '2.5');
  assert.equal(toAttributeValue(2 ** 32), '4294967296');
  assert.equal(toAttributeValue(null), null);
  assert.equal(toAttributeValue(run('object.metadata.?annotations["x"]')), null);
  assert.equal(toAttributeValue(run('object.metadata.?labels["app"]')), 'orders');
  assert.equal(toAttributeValue(run('1u')), 1);
  assert.throws(() => toAttributeValue(run('object.metadata.labels')), /a map cannot be an event attribute/);
  assert.throws(() => toAttributeValue(['x']), /a list cannot/);
});
