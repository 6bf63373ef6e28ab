/**
 * Test helpers for configuration errors: load pipeline files with the real schema and registry and
 * return the issues found (none when they load), and a short `file:line pointer` form of them.
 */
import assert from 'node:assert/strict';
import { currentSchema } from '../../../src/cli-schema.ts';
import { loadPipelines } from '../../../src/config/load.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { ConfigError, type ConfigIssue } from '../../../src/errors.ts';
import { allFactories } from '../../../src/registry.ts';

/** The issues loading `files` reports with the real schema and factories; [] when they load. */
export function issuesOf(...files: string[]): readonly ConfigIssue[] {
  try {
    loadPipelines(files, createPipelineValidator(currentSchema(), allFactories()));
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.issues;
  }
  return [];
}

/** `<file name>:<line> <pointer>` of each issue. */
export const where = (issues: readonly ConfigIssue[]) =>
  issues.map((i) => `${i.file.split('/').pop()}:${i.line} ${i.pointer}`);
