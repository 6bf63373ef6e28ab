/**
 * The route, transform and dedupe blocks in pipeline files, checked by the real schema and
 * factories (`crbridge validate`): a bad template placeholder is reported at its exact line and
 * column in the file whatever the YAML style of the string (plain, quoted with escapes, block
 * literal or folded, over several lines); a route naming a sink that does not exist, and a sink no
 * route reaches, are refused at file:line; paths the event contract needs cannot be dropped.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { allFactories } from '../../../src/registry.ts';
import { issuesOf } from '../config/issues.ts';

const dir = mkdtempSync(join(tmpdir(), 'crbridge-stage-config-'));

function pipeline(stages: string, sinks = ['out']): string {
  const file = join(dir, `p-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    file,
    `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: stages
spec:
  source:
    group: example.com
    version: v1
    resource: backups
  stages:
${stages}
  sinks:
${sinks.map((s) => `    - name: ${s}\n      type: stdout`).join('\n')}
`,
  );
  return file;
}

/** The 1-based line and column of the first `marker` in `file`. */
function at(file: string, marker: string): string {
  const text = readFileSync(file, 'utf8');
  const i = text.indexOf(marker);
  assert.ok(i >= 0, marker);
  const before = text.slice(0, i).split('\n');
  return `${before.length}:${(before.at(-1)?.length ?? 0) + 1}`;
}

const located = (file: string) => issuesOf(file).map((i) => `${i.line}:${i.column} ${i.pointer} ${i.message}`);

test('a bad template placeholder is reported at its exact line and column, in every YAML string style', () => {
  const file = pipeline(`    - type: transform
      set:
        /plain: Backup {{ object.metadata.name }} is {{ objcta.status }}
        /single: 'it''s {{ objctb }}'
        /double: "tab\\t\\u00e9 \\"q\\" {{ objctc }}"
        /literal: |
          line one
            indented {{ objctd }}
        /folded: >-
          first
          second {{ objcte }}
        /multi: first
          second  {{ objctf }}
        /escaped: "one \\
             two {{ objctg }}"
        /syntax: '{{ object.status.( }}'
        /unclosed: 'x {{ object.metadata.name'`);
  const got = located(file);
  const want = [
    [
      at(file, 'objcta'),
      '/spec/stages/0/set/~1plain',
      /^in placeholder \{\{ objcta\.status \}\}: CEL type error: Unknown variable: objcta/,
    ],
    [at(file, 'objctb'), '/spec/stages/0/set/~1single', /Unknown variable: objctb/],
    [at(file, 'objctc'), '/spec/stages/0/set/~1double', /Unknown variable: objctc/],
    [at(file, 'objctd'), '/spec/stages/0/set/~1literal', /Unknown variable: objctd/],
    [at(file, 'objcte'), '/spec/stages/0/set/~1folded', /Unknown variable: objcte/],
    [at(file, 'objctf'), '/spec/stages/0/set/~1multi', /Unknown variable: objctf/],
    [at(file, 'objctg'), '/spec/stages/0/set/~1escaped', /Unknown variable: objctg/],
    [at(file, '( }}'), '/spec/stages/0/set/~1syntax', /CEL syntax error/],
    [at(file, "{{ object.metadata.name'"), '/spec/stages/0/set/~1unclosed', /not closed/],
  ] as const;
  for (const [pos, pointer, re] of want)
    assert.ok(
      got.some((g) => g.startsWith(`${pos} ${pointer} `) && re.test(g.slice(`${pos} ${pointer} `.length))),
      `${pos} ${pointer} ${re} not in:\n${got.join('\n')}`,
    );
  assert.equal(got.length, want.length, got.join('\n'));
});

test('a template whose text came from an env reference is reported at the start of its value', () => {
  const file = pipeline(`    - type: transform
      set:
        /x: '\${env:TEMPLATE} {{ objct }}'`);
  const issues = loadOrIssues(file, { TEMPLATE: '{{ a }}' });
  assert.deepEqual(
    issues.map((i) => `${i.line}:${i.column}`),
    [at(file, "'${env"), at(file, "'${env")],
  );
});

function loadOrIssues(file: string, env: Record<string, string>) {
  try {
    loadPipelines([file], createPipelineValidator(currentSchema(), allFactories()), { env });
    return [];
  } catch (err) {
    return (err as { issues: { line: number; column: number }[] }).issues;
  }
}

test('route: an unknown sink and a sink no route reaches are refused, each at file:line', () => {
  const file = pipeline(
    `    - type: route
      routes:
        - when: object.?status.?phase.orValue("") == "Failed"
          sinks: [alerts, alrets]
        - when: change == "deleted"
          sinks: [audit]
      default: [kafka]
    - type: route
      routes:
        - when: 'objct.x'
          sinks: [kafka]`,
    ['kafka', 'alerts', 'audit', 'archive'],
  );
  const got = located(file);
  const want = [
    /^14:27 \/spec\/stages\/0\/routes\/0\/sinks\/1 no sink of this pipeline is named "alrets" \(its sinks: kafka, alerts, audit, archive\); fix the name or add the sink$/,
    /^20:17 \/spec\/stages\/1\/routes\/0\/when CEL type error: Unknown variable: objct/,
    /^25:13 \/spec\/sinks\/1\/name sink "alerts" would receive nothing: the route stage at \/spec\/stages\/1 sends events only to the sinks it names/,
    /^27:13 \/spec\/sinks\/2\/name sink "audit" would receive nothing: the route stage at \/spec\/stages\/1/,
    /^29:13 \/spec\/sinks\/3\/name sink "archive" would receive nothing: the route stage at \/spec\/stages\/0 /,
    /^29:13 \/spec\/sinks\/3\/name sink "archive" would receive nothing: the route stage at \/spec\/stages\/1 /,
  ];
  for (const re of want)
    assert.ok(
      got.some((g) => re.test(g)),
      `${re} not in:\n${got.join('\n')}`,
    );
  assert.equal(got.length, want.length, got.join('\n'));
});

test('valid route, transform and dedupe blocks load with their defaults', () => {
  const file = pipeline(
    `    - type: dedupe
      ignore: [status.lastHeartbeatTime]
    - type: transform
      set:
        /summary: 'Backup {{ object.metadata.name }} is {{ object.?status.?phase.orValue("new") }}'
    - type: route
      routes:
        - when: object.?status.?phase.orValue("") == "Failed"
          sinks: [kafka, alerts]
      default: [kafka]`,
    ['kafka', 'alerts'],
  );
  assert.deepEqual(issuesOf(file), []);
  const [p] = loadPipelines([file], createPipelineValidator(currentSchema(), allFactories()));
  assert.deepEqual(p?.config.spec.stages[2], {
    type: 'route',
    routes: [{ when: 'object.?status.?phase.orValue("") == "Failed"', sinks: ['kafka', 'alerts'] }],
    default: ['kafka'],
    mode: 'first',
    onError: 'deadLetter',
  });
});

test('transform and dedupe: what the event contract needs cannot be dropped or overwritten; empty blocks are refused', () => {
  const file = pipeline(`    - type: transform
      drop: [/object/metadata, /oldObject, /reason]
      rename:
        /object/metadata/uid: /uid
        /object/status/phase: /patch/0
      set:
        /object/metadata/name: x
        '/a/*/b': y
    - type: transform
      name: nothing
    - type: dedupe
      paths: ['', 'a..b']`);
  const got = located(file);
  const want = [
    /^12:14 \/spec\/stages\/0\/drop\/0 \/object\/metadata would remove \/object\/metadata\/name, which every event must carry/,
    /^12:44 \/spec\/stages\/0\/drop\/2 \/reason would remove \/reason/,
    /^14:31 \/spec\/stages\/0\/rename\/~1object~1metadata~1uid \/object\/metadata\/uid would remove/,
    /^15:31 \/spec\/stages\/0\/rename\/~1object~1status~1phase \/patch\/0 is part of \/patch, whose shape the event contract fixes/,
    /^17:32 \/spec\/stages\/0\/set\/~1object~1metadata~1name \/object\/metadata\/name would replace \/object\/metadata\/name, which names the object/,
    /^18:19 \/spec\/stages\/0\/set\/~1a~1\*~1b the path "\/a\/\*\/b" has a \* wildcard/,
    /^19:7 \/spec\/stages\/1 the stage does nothing: give keep, drop, rename or set$/,
    /^22:15 \/spec\/stages\/2\/paths\/0 must NOT have fewer than 1 characters$/,
    /^22:19 \/spec\/stages\/2\/paths\/1 the path "a\.\.b" has an empty segment/,
  ];
  for (const re of want)
    assert.ok(
      got.some((g) => re.test(g)),
      `${re} not in:\n${got.join('\n')}`,
    );
  assert.equal(got.length, want.length, got.join('\n'));
});
