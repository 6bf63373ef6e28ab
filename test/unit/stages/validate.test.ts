/**
 * Stage blocks in pipeline files, checked by the real schema and factories: a bad CEL expression,
 * a reserved or malformed attribute name and a wrong onError are all reported at once, each with
 * file:line and the JSON pointer of the field, without touching any network.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { ConfigError } from '../../../src/errors.ts';
import { allFactories } from '../../../src/registry.ts';

const dir = mkdtempSync(join(tmpdir(), 'crbridge-stages-'));
const validator = createPipelineValidator(currentSchema(), allFactories());

function pipeline(stages: string): string {
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
    - name: out
      type: stdout
`,
  );
  return file;
}

function issues(file: string): string[] {
  try {
    loadPipelines([file], validator);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.issues.map((i) => `${i.line}:${i.column} ${i.pointer} ${i.message}`);
  }
  return [];
}

test('valid filter and enrich stages load with their defaults', () => {
  const file = pipeline(`    - type: filter
      expression: change == "deleted" || object.status.phase == "Failed"
    - type: enrich
      name: team
      attributes:
        team: object.metadata.?labels["team"].orValue("none")`);
  const [p] = loadPipelines([file], validator);
  assert.deepEqual(p?.config.spec.stages, [
    { type: 'filter', expression: 'change == "deleted" || object.status.phase == "Failed"', onError: 'deadLetter' },
    {
      type: 'enrich',
      name: 'team',
      attributes: { team: 'object.metadata.?labels["team"].orValue("none")' },
      onError: 'deadLetter',
    },
  ]);
});

test('every stage problem is reported at once, located by line and pointer', () => {
  const file = pipeline(`    - type: filter
      expression: object.spec.(
    - type: filter
      expression: '"a" + "b"'
      onError: ignore
    - type: enrich
      attributes:
        id: '"x"'
        Team: '"x"'
        labels: '[object.metadata.name]'
        owner: objct.metadata.name
    - type: filtr
      expression: "true"`);
  const got = issues(file);
  const expect = [
    /^12:19 \/spec\/stages\/0\/expression CEL syntax error: Expected IDENTIFIER, got LPAREN, at character 13 of "object\.spec\.\("$/,
    /^14:19 \/spec\/stages\/1\/expression the expression must produce a bool .* produces string$/,
    /^15:16 \/spec\/stages\/1\/onError must be one of: deadLetter, drop, keep$/,
    /^18:13 \/spec\/stages\/2\/attributes\/id "id" is an attribute CloudEvents or crbridge sets/,
    /^19:15 \/spec\/stages\/2\/attributes\/Team the name "Team" must match pattern/,
    /^20:17 \/spec\/stages\/2\/attributes\/labels .*string, number or bool .* produces list;/,
    /^21:16 \/spec\/stages\/2\/attributes\/owner CEL type error: Unknown variable: objct, at character 1/,
    /^22:13 \/spec\/stages\/3\/type must be one of: filter, enrich, transform, dedupe, route$/,
  ];
  for (const re of expect)
    assert.ok(
      got.some((g) => re.test(g)),
      `${re} not in:\n${got.join('\n')}`,
    );
  assert.equal(got.length, expect.length, got.join('\n'));
});
