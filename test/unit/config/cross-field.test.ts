/**
 * Rules across fields the schema cannot express, reported like every other configuration error
 * (file, line, pointer, what to do): a sink's retry maxIntervalMs below its initialIntervalMs, a
 * written maxBatch above the queue's capacity, the kubernetes source's backoffMaxMs below its
 * backoffInitialMs, and ConfigMap checkpoint settings with the file backend. Real pipeline files,
 * the real registry and schema.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { issuesOf, where } from './issues.ts';

const dir = mkdtempSync(join(tmpdir(), 'crb-cross-field-'));

/** A pipeline file whose source block ends with `sourceExtra` (line 10 on) and whose sink with `sinkExtra`. */
function pipeline(name: string, sourceExtra: string, sinkExtra: string): string {
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
${sourceExtra}  sinks:
    - name: out
      type: stdout
${sinkExtra}`,
  );
  return file;
}

test("a sink's retry maxIntervalMs below its initialIntervalMs is refused at the line written", () => {
  const both = pipeline(
    'retry-both',
    '',
    '      delivery:\n        retry:\n          initialIntervalMs: 5000\n          maxIntervalMs: 1000\n',
  );
  const issues = issuesOf(both);
  assert.deepEqual(where(issues), ['retry-both.yaml:16 /spec/sinks/0/delivery/retry/maxIntervalMs']);
  assert.match(
    issues[0]?.message ?? '',
    /maxIntervalMs \(1000\) is less than retry\.initialIntervalMs \(5000\).*raise maxIntervalMs to at least 5000/,
  );

  // only initialIntervalMs written: the default maxIntervalMs (30000) is below it; the line is initialIntervalMs'
  const onlyInitial = pipeline(
    'retry-initial',
    '',
    '      delivery:\n        retry:\n          initialIntervalMs: 60000\n',
  );
  const second = issuesOf(onlyInitial);
  assert.deepEqual(where(second), ['retry-initial.yaml:15 /spec/sinks/0/delivery/retry/initialIntervalMs']);
  assert.match(second[0]?.message ?? '', /maxIntervalMs \(30000 by default\) is less than .*\(60000\)/);

  // equal bounds are fine (a constant wait)
  assert.deepEqual(
    issuesOf(
      pipeline(
        'retry-equal',
        '',
        '      delivery:\n        retry:\n          initialIntervalMs: 2000\n          maxIntervalMs: 2000\n',
      ),
    ),
    [],
  );
});

test('a written maxBatch above queueCapacity is refused; the default maxBatch with a small queue is not', () => {
  const bad = pipeline('batch', '', '      delivery:\n        queueCapacity: 100\n        maxBatch: 200\n');
  const issues = issuesOf(bad);
  assert.deepEqual(where(issues), ['batch.yaml:15 /spec/sinks/0/delivery/maxBatch']);
  assert.match(
    issues[0]?.message ?? '',
    /maxBatch \(200\) is larger than queueCapacity \(100\).*lower maxBatch to at most 100/,
  );

  assert.deepEqual(issuesOf(pipeline('small-queue', '', '      delivery:\n        queueCapacity: 100\n')), []);
});

test("the kubernetes source's backoffMaxMs below backoffInitialMs is refused at the line written", () => {
  const both = pipeline('backoff', '    backoffInitialMs: 5000\n    backoffMaxMs: 2000\n', '');
  const issues = issuesOf(both);
  assert.deepEqual(where(issues), ['backoff.yaml:11 /spec/source/backoffMaxMs']);
  assert.match(
    issues[0]?.message ?? '',
    /backoffMaxMs \(2000\) is less than backoffInitialMs \(5000\).*raise backoffMaxMs/,
  );

  const onlyInitial = issuesOf(pipeline('backoff-initial', '    backoffInitialMs: 60000\n', ''));
  assert.deepEqual(where(onlyInitial), ['backoff-initial.yaml:10 /spec/source/backoffInitialMs']);
  assert.match(onlyInitial[0]?.message ?? '', /\(30000 by default\)/);
});

test('ConfigMap checkpoint settings with the file backend are refused; with backend kubernetes they are fine', () => {
  const file = pipeline('cp-file', '    checkpoint:\n      namespace: ops\n      name: my-checkpoint\n', '');
  const issues = issuesOf(file);
  assert.deepEqual(where(issues), [
    'cp-file.yaml:11 /spec/source/checkpoint/namespace',
    'cp-file.yaml:12 /spec/source/checkpoint/name',
  ]);
  assert.match(
    issues[0]?.message ?? '',
    /applies only to checkpoint\.backend kubernetes.*"file" by default.*set checkpoint\.backend: kubernetes/,
  );

  const ok = pipeline('cp-kube', '    checkpoint:\n      backend: kubernetes\n      namespace: ops\n', '');
  assert.deepEqual(issuesOf(ok), []);
});

test('a block of the wrong type gets its schema error only, not a cross-field one as well', () => {
  const wrong = pipeline(
    'wrong-type',
    '    backoffMaxMs: soon\n',
    '      delivery:\n        retry:\n          maxIntervalMs: "1"\n',
  );
  const issues = issuesOf(wrong);
  assert.deepEqual(where(issues), [
    'wrong-type.yaml:10 /spec/source/backoffMaxMs',
    'wrong-type.yaml:16 /spec/sinks/0/delivery/retry/maxIntervalMs',
  ]);
  for (const i of issues) assert.match(i.message, /must be integer/);
});
