/**
 * CEL templates: placeholders found (also with `}}` inside strings and map literals), rendered
 * with predictable stringification, every compile problem located by offset, line and column in
 * the template, and a placeholder failing at render time rendering the marker, counted and logged
 * once, never throwing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { celVariables } from '../../../src/cel/index.ts';
import {
  checkTemplate,
  compileTemplate,
  TEMPLATE_ERROR_MARKER,
  TemplateCompileError,
  templateProblems,
  templateRenderer,
  templateString,
} from '../../../src/cel/template.ts';
import { buildEvent } from '../../../src/events/build.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger } from '../delivery/helpers.ts';
import { backup, delta } from '../events/fixtures.ts';

const failed = backup({ phase: 'Failed', rv: '1300' });
const running = backup({ phase: 'Running', rv: '1250' });
const event = buildEvent(delta('modified', failed, running), { clusterName: 'prod-eu' });
const vars = celVariables(event);

test('renders the text with each placeholder replaced by its value', () => {
  const t = compileTemplate('Backup {{ object.metadata.name }} is {{object.status.phase}} ({{ change }})');
  assert.deepEqual(t.expressions, ['object.metadata.name', 'object.status.phase', 'change']);
  assert.equal(t.render(vars), 'Backup orders-nightly is Failed (status.changed)');
  assert.equal(compileTemplate('no placeholders }} here').render(vars), 'no placeholders }} here');
  assert.equal(compileTemplate('').render(vars), '');
  assert.equal(compileTemplate('{{ "a" }}{{ "b" }}').render(vars), 'ab');
});

test('a }} inside a CEL string or a map literal does not close the placeholder; {{ "{{" }} writes a literal {{', () => {
  assert.equal(compileTemplate('<{{ "}}" + object.metadata.name }}>').render(vars), '<}}orders-nightly>');
  assert.equal(compileTemplate("{{ '}}' }}|{{ r'\\}}' }}").render(vars), '}}|\\}}');
  assert.equal(compileTemplate('{{ {"a": {"b": 1}}["a"]["b"] }}').render(vars), '1');
  assert.equal(compileTemplate('{{ "{{" }} x }}').render(vars), '{{ x }}');
  assert.equal(compileTemplate('{{ """a "}}" b""" }}').render(vars), 'a "}}" b');
});

test('values are stringified predictably', () => {
  const cases: [string, string][] = [
    ['"text"', 'text'],
    ['3', '3'],
    ['2.5', '2.5'],
    ['object.metadata.generation', '1'],
    ['1u', '1'],
    ['true', 'true'],
    ['null', ''],
    ['object.metadata.?missing', ''],
    ['object.metadata.?name', 'orders-nightly'],
    ['object.metadata.labels', '{"app":"orders","example.com/tier":"gold"}'],
    ['[1, "a", null]', '[1,"a",null]'],
    ['timestamp("2026-11-28T10:00:00Z")', '2026-11-28T10:00:00.000Z'],
    ['duration("90s")', '90s'],
    ['b"ab"', 'YWI='],
    ['{"d": duration("1s"), "n": 5}', '{"d":"1s","n":5}'],
  ];
  for (const [expr, want] of cases) assert.equal(compileTemplate(`{{ ${expr} }}`).render(vars), want, expr);
  assert.equal(templateString(undefined), '');
});

test('compile problems are all reported, each with its offset, line and column in the template', () => {
  const source = 'Backup {{ objct.metadata.name }}\nis {{ object.status.( }} and {{ }} and {{ object.x';
  const problems = templateProblems(source);
  assert.deepEqual(
    problems.map((p) => [p.offset, p.line, p.column]),
    [
      [10, 1, 11], // objct
      [53, 2, 21], // the ( after status.
      [62, 2, 30], // the {{ of the empty placeholder
      [72, 2, 40], // the {{ never closed
    ],
  );
  assert.equal(source.slice(10, 15), 'objct');
  assert.equal(source[53], '(');
  assert.equal(source.slice(62, 64), '{{');
  assert.equal(source.slice(72), '{{ object.x');
  assert.match(
    problems[0]?.message ?? '',
    /^in placeholder \{\{ objct\.metadata\.name \}\}: CEL type error: Unknown variable: objct/,
  );
  assert.match(problems[1]?.message ?? '', /CEL syntax error/);
  assert.match(problems[2]?.message ?? '', /placeholder is empty/);
  assert.match(problems[3]?.message ?? '', /not closed; end it with \}\}/);
  assert.throws(
    () => compileTemplate(source),
    (err: unknown) =>
      err instanceof TemplateCompileError &&
      err.offset === 10 &&
      err.line === 1 &&
      err.column === 11 &&
      err.problems.length === 4,
  );
  assert.deepEqual(checkTemplate('/text', source)[1], { pointer: '/text', message: problems[1]?.message, offset: 53 });
  assert.deepEqual(checkTemplate('/text', 42), []);
  assert.deepEqual(templateProblems('fine {{ object.metadata.name }}'), []);
});

test('a placeholder failing for an event renders the marker, never throws, and is counted and logged once', () => {
  const { logger, lines } = captureLogger();
  const metrics = new Metrics();
  const render = templateRenderer({ id: 'p/slack', pipeline: 'p', logger, metrics, stateDir: '/x', clusterName: 'c' });
  const t = compileTemplate('{{ object.metadata.name }}: {{ object.spec.missing.deeper }}!');
  assert.equal(render(t, event), `orders-nightly: ${TEMPLATE_ERROR_MARKER}!`);
  assert.equal(render(t, event), `orders-nightly: ${TEMPLATE_ERROR_MARKER}!`);
  assert.equal(
    metrics.counter('crbridge_component_errors_total', '').get({ component: 'p/slack', code: 'CRB_EXPRESSION' }),
    2,
  );
  const logged = lines.filter((l) => l.code === 'CRB_EXPRESSION');
  assert.equal(logged.length, 1);
  assert.equal(logged[0]?.expression, 'object.spec.missing.deeper');
  assert.equal(logged[0]?.id, event.id);
  // without a reporter, and with one that throws, rendering still does not throw
  assert.equal(t.render(vars), `orders-nightly: ${TEMPLATE_ERROR_MARKER}!`);
  assert.equal(
    t.render(vars, () => {
      throw new Error('boom');
    }),
    `orders-nightly: ${TEMPLATE_ERROR_MARKER}!`,
  );
});
