/**
 * The published pipeline schema (`schemas/pipeline.schema.json`) is generated from the registry;
 * this test fails when it is stale (`npm run schemas` regenerates it), and checks the example
 * pipelines in `pipelines/` validate against it.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { allFactories } from '../../../src/registry.ts';
import { repoRoot } from '../../support/stack.ts';

test('schemas/pipeline.schema.json is up to date with the registry', () => {
  const published = JSON.parse(readFileSync(join(repoRoot, 'schemas/pipeline.schema.json'), 'utf8'));
  assert.deepEqual(published, currentSchema(), 'run `npm run schemas` and commit the result');
});

test('every example pipeline validates', () => {
  const dir = join(repoRoot, 'pipelines');
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => join(dir, f));
  assert.ok(files.length >= 2);
  const loaded = loadPipelines(files, createPipelineValidator(currentSchema(), allFactories()), {
    env: {
      KAFKA_BROKERS: '127.0.0.1:9092',
      WEBHOOK_SECRET: `whsec_${Buffer.alloc(32, 7).toString('base64')}`,
      SLACK_BOT_TOKEN: 'xoxb-example',
    },
  });
  // a file may hold more than one pipeline (pipelines/backup-alerts.yaml holds two)
  assert.ok(loaded.length >= files.length);
});
