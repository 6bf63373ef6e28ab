/**
 * The `enrich` stage: sets CloudEvents extension attributes from CEL expressions, e.g. the owning
 * team from a label, so consumers can route and search on them (they become Kafka and HTTP
 * headers). A null result (or an empty optional) leaves the attribute out. The event is copied
 * shallowly; its data is shared, never changed.
 */

import { type CelProgram, celProblem, celVariables, compileCel, toAttributeValue } from '../../cel/index.ts';
import type { ComponentContext, Stage, StageFactory } from '../../component.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import { escapeToken } from '../../events/patch.ts';
import { expressionFailure } from '../expression-failure.ts';

export interface EnrichStageConfig {
  /** Extension attribute name → CEL expression. */
  attributes: Record<string, string>;
  onError?: 'deadLetter' | 'omit' | 'drop';
}

/** Attributes CloudEvents or crbridge own: an enrich stage may not change them. */
export const RESERVED_ATTRIBUTES = [
  'specversion',
  'id',
  'source',
  'type',
  'subject',
  'time',
  'datacontenttype',
  'dataschema',
  'data',
  'k8sgroup',
  'k8sversion',
  'k8skind',
  'k8snamespace',
  'k8sname',
  'k8suid',
  'k8sresourceversion',
  'k8sgeneration',
  'k8scluster',
  'traceparent',
  'tracestate',
] as const;

const NONE: CloudEvent[] = [];

export function createEnrich(config: EnrichStageConfig, ctx: ComponentContext): Stage {
  const programs: [string, CelProgram][] = Object.entries(config.attributes).map(([name, expr]) => [
    name,
    compileCel(expr, 'attribute'),
  ]);
  const onError = config.onError ?? ENRICH_DEFAULTS.onError;
  const failed = expressionFailure(
    ctx,
    onError,
    onError === 'omit' ? 'the attribute is left out' : 'the event is dropped',
  );
  return {
    process(event) {
      const vars = celVariables(event);
      const out: CloudEvent = { ...event };
      for (const [name, program] of programs) {
        let value: string | number | boolean | null;
        try {
          value = toAttributeValue(program.evaluate(vars));
        } catch (err) {
          failed(event, program.source, err);
          if (onError === 'drop') return NONE;
          continue;
        }
        if (value === null) delete out[name];
        else out[name] = value;
      }
      return [out];
    },
  };
}

/** The enrich stage's defaults: one constant for the schema and the code. */
export const ENRICH_DEFAULTS = { onError: 'deadLetter' } as const;

export const enrichStage: StageFactory<EnrichStageConfig> = {
  kind: 'stage',
  type: 'enrich',
  description: 'Sets CloudEvents extension attributes from CEL expressions.',
  configSchema: {
    type: 'object',
    required: ['attributes'],
    properties: {
      attributes: {
        type: 'object',
        minProperties: 1,
        description:
          'Extension attribute name → CEL expression giving its value (a string, number or bool; null leaves it out), e.g. `team: object.metadata.?labels["team"].orValue("none")`. Names are lower-case letters and digits, at most 20 characters, and cannot be attributes CloudEvents or crbridge set (id, type, k8sname, ...).',
        propertyNames: {
          pattern: '^[a-z0-9]{1,20}$',
          description: 'A CloudEvents extension attribute name not set by CloudEvents or crbridge.',
        },
        additionalProperties: {
          type: 'string',
          minLength: 1,
          description: 'CEL expression; variables: object, oldObject, change, patch, event (see docs/stages.md).',
        },
      },
      onError: {
        type: 'string',
        enum: ['deadLetter', 'omit', 'drop'],
        default: ENRICH_DEFAULTS.onError,
        description:
          'When an expression fails for an event (e.g. a missing field; guard with has() or `.?`): deadLetter writes the event to the dead-letter destination, omit leaves that attribute out and lets the event go on, drop drops the event. Failures are counted and logged once per kind.',
      },
    },
  },
  check(config) {
    const attrs = config.attributes;
    if (!attrs || typeof attrs !== 'object') return [];
    const out: { pointer: string; message: string }[] = [];
    for (const [name, expr] of Object.entries(attrs)) {
      const pointer = `/attributes/${escapeToken(name)}`;
      if ((RESERVED_ATTRIBUTES as readonly string[]).includes(name))
        out.push({
          pointer,
          message: `"${name}" is an attribute CloudEvents or crbridge sets and cannot be changed; choose another name`,
        });
      if (typeof expr !== 'string') continue;
      const problem = celProblem(expr, 'attribute');
      if (problem) out.push({ pointer, message: problem });
    }
    return out;
  },
  create: createEnrich,
};
