/**
 * Pipeline file loading: positions of errors, all errors at once, references, unknown types,
 * using small fake factories so the test stays independent of the real components.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { AnyFactory } from '../../../src/component.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { pipelineSchema } from '../../../src/config/schema.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { ConfigError } from '../../../src/errors.ts';

const noop = () => {
  throw new Error('not built in config tests');
};
const factories: AnyFactory[] = [
  {
    kind: 'source',
    type: 'kubernetes',
    description: 'Watches a resource.',
    configSchema: {
      type: 'object',
      required: ['version', 'resource'],
      properties: {
        group: { type: 'string', description: 'API group.' },
        version: { type: 'string', description: 'API version.' },
        resource: { type: 'string', description: 'Plural.' },
        namespaces: { type: 'array', items: { type: 'string' }, description: 'Namespaces.' },
      },
    },
    shareKey: () => 'k',
    create: noop,
  },
  {
    kind: 'sink',
    type: 'kafka',
    description: 'Kafka.',
    configSchema: {
      type: 'object',
      required: ['brokers', 'topic'],
      properties: {
        brokers: { type: 'array', items: { type: 'string' }, minItems: 1, description: 'Brokers.' },
        topic: { type: 'string', description: 'Topic.' },
      },
    },
    create: noop,
  },
  {
    kind: 'sink',
    type: 'file',
    description: 'File.',
    configSchema: {
      type: 'object',
      required: ['path'],
      properties: { path: { type: 'string', description: 'Path.' } },
    },
    create: noop,
  },
];
const delivery = {
  type: 'object',
  description: 'Delivery.',
  properties: { queueCapacity: { type: 'integer', description: 'Q.' } },
  additionalProperties: false,
};
const validator = createPipelineValidator(pipelineSchema(factories, delivery));
const dir = mkdtempSync(join(tmpdir(), 'crb-config-'));

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function issuesOf(files: string[], env: Record<string, string> = {}) {
  try {
    loadPipelines(files, validator, { env });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.issues;
  }
  assert.fail('expected the files to be refused');
}

const good = `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: backups
spec:
  source:
    group: example.com
    version: v1
    resource: backups
  sinks:
    - name: events
      type: kafka
      brokers: ["\${env:KAFKA_BROKERS}"]
      topic: backups
    - name: audit
      type: file
      path: \${env:AUDIT:-/tmp/audit.jsonl}
`;

test('a valid pipeline loads, with env references resolved and defaults applied', () => {
  const [p] = loadPipelines([write('good.yaml', good)], validator, { env: { KAFKA_BROKERS: '127.0.0.1:9092' } });
  assert.ok(p);
  assert.equal(p.config.metadata.name, 'backups');
  assert.deepEqual(p.config.spec.sinks[0]?.brokers, ['127.0.0.1:9092']);
  assert.equal(p.config.spec.sinks[1]?.path, '/tmp/audit.jsonl');
  assert.deepEqual(p.config.spec.stages, []);
});

test('a YAML syntax error names the file and line', () => {
  const f = write(
    'syntax.yaml',
    'apiVersion: crbridge.io/v1alpha1\nkind: Pipeline\nmetadata:\n  name: [unclosed\nspec: {}\n',
  );
  const issues = issuesOf([f]);
  assert.equal(issues.length >= 1, true);
  assert.equal(issues[0]?.file, f);
  assert.match(issues[0]?.message ?? '', /^YAML: /);
  assert.ok((issues[0]?.line ?? 0) >= 4, `line ${issues[0]?.line}`);
});

test('every problem is reported at once with line and JSON pointer', () => {
  const bad = good
    .replace('    - name: audit\n      type: file\n', '    - name: audit\n      type: fiel\n')
    .replace('      topic: backups\n', '      topik: backups\n')
    .replace('    version: v1\n', '');
  const f = write('bad.yaml', bad);
  const issues = issuesOf([f], { KAFKA_BROKERS: 'x:1' });
  const byPointer = new Map(issues.map((i) => [i.pointer, i]));
  const unknownType = byPointer.get('/spec/sinks/1/type');
  assert.ok(unknownType, JSON.stringify(issues));
  assert.match(unknownType.message, /must be one of: kafka, file/);
  assert.equal(unknownType.line, bad.split('\n').findIndex((l) => l.includes('type: fiel')) + 1);
  const missingTopic = byPointer.get('/spec/sinks/0/topic');
  assert.ok(missingTopic, JSON.stringify(issues));
  assert.match(missingTopic.message, /required field "topic"/);
  const unknownField = byPointer.get('/spec/sinks/0/topik');
  assert.ok(unknownField);
  assert.match(unknownField.message, /unknown field "topik"/);
  assert.equal(unknownField.line, bad.split('\n').findIndex((l) => l.includes('topik')) + 1);
  assert.ok(byPointer.get('/spec/source/version'), 'missing source version reported');
});

test('an unset environment variable is named with its location', () => {
  const f = write('env.yaml', good);
  const issues = issuesOf([f], {});
  assert.equal(issues.length, 1);
  assert.equal(issues[0]?.pointer, '/spec/sinks/0/brokers/0');
  assert.match(issues[0]?.message ?? '', /KAFKA_BROKERS is not set/);
  assert.equal(issues[0]?.line, 13);
});

test('duplicate sink names and duplicate pipeline names are refused', () => {
  const dupSink = good.replace('name: audit', 'name: events');
  const issues = issuesOf([write('dup.yaml', dupSink)], { KAFKA_BROKERS: 'x:1' });
  assert.equal(issues.length, 1);
  assert.equal(issues[0]?.pointer, '/spec/sinks/1/name');
  const a = write('a.yaml', good);
  const b = write('b.yaml', good);
  const issues2 = issuesOf([a, b], { KAFKA_BROKERS: 'x:1' });
  assert.equal(issues2.length, 1);
  assert.equal(issues2[0]?.file, b);
  assert.match(issues2[0]?.message ?? '', /already used at .*a\.yaml:4/);
});

test('a missing file and a wrong apiVersion are both reported', () => {
  const f = write('api.yaml', good.replace('crbridge.io/v1alpha1', 'crbridge.io/v9'));
  const issues = issuesOf([join(dir, 'nope.yaml'), f], { KAFKA_BROKERS: 'x:1' });
  assert.equal(issues.length, 2);
  assert.match(
    issues[0]?.message ?? '',
    /cannot read the file \(ENOENT: it does not exist\); check the path given with -c/,
  );
  assert.equal(issues[1]?.pointer, '/apiVersion');
  assert.equal(issues[1]?.line, 1);
});

test('the schema describes every property', () => {
  const schema = pipelineSchema(factories, delivery);
  const missing: string[] = [];
  const walk = (node: unknown, path: string) => {
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (n.properties && typeof n.properties === 'object') {
      for (const [k, v] of Object.entries(n.properties as Record<string, Record<string, unknown>>)) {
        if (typeof v.description !== 'string' && !('const' in v && path.includes('allOf')))
          missing.push(`${path}/${k}`);
      }
    }
    for (const [k, v] of Object.entries(n)) walk(v, `${path}/${k}`);
  };
  walk(schema, '');
  assert.deepEqual(missing, []);
});

test('spec.validation.crdSchema: off by default, on for a Custom Resource, refused for the core group', () => {
  const env = { KAFKA_BROKERS: 'k:9092' };
  const [plain] = loadPipelines([write('l3-default.yaml', good)], validator, { env });
  assert.equal(plain?.config.spec.validation, undefined);
  const on = good.replace('  sinks:\n', '  validation:\n    crdSchema: true\n  sinks:\n');
  const [p] = loadPipelines([write('l3-on.yaml', on)], validator, { env });
  assert.deepEqual(p?.config.spec.validation, { crdSchema: true });
  const core = on.replace('group: example.com', 'group: ""').replace('resource: backups', 'resource: configmaps');
  const f = write('l3-core.yaml', core);
  const issues = issuesOf([f], env);
  assert.equal(issues.length, 1);
  assert.equal(issues[0]?.pointer, '/spec/validation/crdSchema');
  assert.match(issues[0]?.message ?? '', /needs a Custom Resource/);
  assert.equal(issues[0]?.line, core.split('\n').findIndex((l) => l.includes('crdSchema')) + 1);
  const typo = on.replace('crdSchema: true', 'crdSchemas: true');
  assert.match(issuesOf([write('l3-typo.yaml', typo)], env)[0]?.message ?? '', /unknown field "crdSchemas"/);
});
