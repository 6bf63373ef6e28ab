/**
 * Pipelines sharing one source (same resource, namespaces and selectors) must agree on the settings
 * one LIST+WATCH and one checkpoint can have only once; `initial` stays per pipeline. A disagreement
 * is one configuration error per setting, at the later file's line, naming the earlier file and line.
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

const dir = mkdtempSync(join(tmpdir(), 'crb-sharing-'));
function pipeline(name: string, sourceExtra: string, namespaces = '[a]'): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: ${name}
spec:
  source:
    group: example.com
    version: v1
    resource: backups
    namespaces: ${namespaces}
${sourceExtra}  sinks:
    - name: out
      type: stdout
`,
  );
  return file;
}
const validator = () => createPipelineValidator(currentSchema(), allFactories());

test('pipelines sharing a source that disagree on its shared settings are refused, naming both files', () => {
  const a = pipeline('a', '    pageSize: 100\n    initial: emit\n');
  const b = pipeline('b', '    initial: skip\n    pageSize: 200\n    checkpoint:\n      backend: kubernetes\n');
  let err: unknown;
  try {
    loadPipelines([a, b], validator());
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError, 'refused');
  const issues = err.issues.map((i) => `${i.file.split('/').pop()}:${i.line} ${i.pointer}`);
  assert.deepEqual(issues, ['b.yaml:12 /spec/source/pageSize', 'b.yaml:14 /spec/source/checkpoint/backend']);
  assert.match(err.issues[0]?.message ?? '', /is 200 here but 100 in pipeline "a" \(.*a\.yaml:11\)/);
  assert.match(err.issues[1]?.message ?? '', /"kubernetes" here but "file" in pipeline "a"/);
});

test('a different initial, or a default written out, is not a disagreement; other watches are independent', () => {
  const a = pipeline('a', '    initial: emit\n');
  const b = pipeline('b', '    initial: skip\n    pageSize: 500\n    dropFields: ["/metadata/managedFields"]\n');
  const c = pipeline('c', '    pageSize: 7\n', '[other]');
  const loaded = loadPipelines([a, b, c], validator());
  assert.deepEqual(
    loaded.map((p) => p.config.metadata.name),
    ['a', 'b', 'c'],
  );
});

test('a malformed label or field selector is refused at validation, located by line and pointer', () => {
  const bad = pipeline('bad-selectors', '    labelSelector: "tier in (prod"\n    fieldSelector: "metadata.name"\n');
  let err: unknown;
  try {
    loadPipelines([bad], validator());
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError);
  assert.deepEqual(
    err.issues.map((i) => `${i.line} ${i.pointer}`),
    ['11 /spec/source/labelSelector', '12 /spec/source/fieldSelector'],
  );
  assert.match(err.issues[0]?.message ?? '', /not a valid labelSelector: .*\(e\.g\. tier=prod/);
});
