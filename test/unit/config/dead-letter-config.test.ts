/**
 * `spec.deadLetter.sink` is checked like any sink block, with file, line and pointer: the schema
 * (generated from the registry: an unknown field, a missing required one, a `name` or `delivery`
 * that only the pipeline's sinks have) and the factory's `check` (a Kafka topicExpression that does
 * not compile); `path` and `sink` together, and a pipeline sink named `dead-letter` next to a
 * dead-letter sink, are refused. Real pipeline files, the real registry and schema.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { issuesOf, where } from './issues.ts';

const dir = mkdtempSync(join(tmpdir(), 'crb-dl-config-'));

/** A pipeline whose `deadLetter:` block is `deadLetter` (from line 13 on) and whose one sink is named `sinkName`. */
function pipeline(name: string, deadLetter: string, sinkName = 'out'): string {
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
  sinks:
    - name: ${sinkName}
      type: stdout
  deadLetter:
${deadLetter}`,
  );
  return file;
}

test('a kafka, webhook, file or stdout dead-letter sink is accepted; path alone too', () => {
  for (const [n, block] of [
    ['kafka', '    sink:\n      type: kafka\n      brokers: ["localhost:9092"]\n      topic: dead\n'],
    ['webhook', '    sink:\n      type: webhook\n      url: https://example.com/dead\n'],
    ['file', '    sink:\n      type: file\n      path: /tmp/dead.jsonl\n'],
    ['stdout', '    sink:\n      type: stdout\n'],
    ['path', '    path: /tmp/dead.jsonl\n'],
  ] as const)
    assert.deepEqual(issuesOf(pipeline(`ok-${n}`, block)), [], n);
});

test("the schema of the chosen sink applies, at the line written; name and delivery are the pipeline sinks' only", () => {
  const issues = issuesOf(
    pipeline('bad-fields', '    sink:\n      type: kafka\n      topic: dead\n      bogus: 1\n      name: x\n'),
  );
  assert.deepEqual(where(issues).sort(), [
    'bad-fields.yaml:15 /spec/deadLetter/sink/brokers',
    'bad-fields.yaml:17 /spec/deadLetter/sink/bogus',
    'bad-fields.yaml:18 /spec/deadLetter/sink/name',
  ]);
  assert.match(issues.find((i) => i.pointer.endsWith('/bogus'))?.message ?? '', /unknown field "bogus"/);
  assert.match(issues.find((i) => i.pointer.endsWith('/brokers'))?.message ?? '', /required field "brokers"/);

  const unknownType = issuesOf(pipeline('bad-type', '    sink:\n      type: carrier-pigeon\n'));
  assert.deepEqual(where(unknownType), ['bad-type.yaml:15 /spec/deadLetter/sink/type']);
  assert.match(unknownType[0]?.message ?? '', /must be one of: kafka, file, stdout, webhook/);
});

test("the sink factory's check runs on the dead-letter block, located by pointer", () => {
  const issues = issuesOf(
    pipeline(
      'bad-cel',
      '    sink:\n      type: kafka\n      brokers: ["localhost:9092"]\n      topic: dead\n      topicExpression: "object.kind +"\n',
    ),
  );
  assert.deepEqual(where(issues), ['bad-cel.yaml:18 /spec/deadLetter/sink/topicExpression']);
});

test('path and sink together, and a sink named dead-letter next to a dead-letter sink, are refused', () => {
  const both = issuesOf(pipeline('both', '    path: /tmp/d.jsonl\n    sink:\n      type: stdout\n'));
  assert.deepEqual(where(both), ['both.yaml:14 /spec/deadLetter/path']);
  assert.match(both[0]?.message ?? '', /either deadLetter\.path .* or deadLetter\.sink, not both/);

  const taken = issuesOf(pipeline('taken', '    sink:\n      type: stdout\n', 'dead-letter'));
  assert.deepEqual(where(taken), ['taken.yaml:11 /spec/sinks/0/name']);
  assert.match(taken[0]?.message ?? '', /"dead-letter" is taken by deadLetter\.sink/);
  // with the file destination the name is free
  assert.deepEqual(issuesOf(pipeline('free', '    path: /tmp/d.jsonl\n', 'dead-letter')), []);
});
