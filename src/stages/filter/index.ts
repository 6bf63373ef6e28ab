/**
 * The `filter` stage: keeps the events for which a CEL expression is true and drops the others
 * (counted as `crbridge_component_dropped_events_total`). An expression that fails for an event
 * dead-letters it by default (`onError`).
 */

import { type CelProgram, celProblem, celVariables, compileCel } from '../../cel/index.ts';
import type { ComponentContext, Stage, StageFactory } from '../../component.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import { expressionFailure } from '../expression-failure.ts';

export interface FilterStageConfig {
  /** CEL; true keeps the event. */
  expression: string;
  onError?: 'deadLetter' | 'drop' | 'keep';
}

const NONE: CloudEvent[] = [];

export function createFilter(config: FilterStageConfig, ctx: ComponentContext): Stage {
  const program: CelProgram = compileCel(config.expression, 'bool');
  const onError = config.onError ?? FILTER_DEFAULTS.onError;
  const failed = expressionFailure(ctx, onError, onError === 'keep' ? 'the event is kept' : 'the event is dropped');
  return {
    process(event) {
      let keep: unknown;
      try {
        keep = program.evaluate(celVariables(event));
        if (typeof keep !== 'boolean') throw new TypeError(`it produced ${typeof keep}, not a bool`);
      } catch (err) {
        failed(event, config.expression, err);
        return onError === 'keep' ? [event] : NONE;
      }
      return keep ? [event] : NONE;
    },
  };
}

/** The filter's defaults: one constant for the schema and the code. */
export const FILTER_DEFAULTS = { onError: 'deadLetter' } as const;

export const filterStage: StageFactory<FilterStageConfig> = {
  kind: 'stage',
  type: 'filter',
  description: 'Keeps the events for which a CEL expression is true; drops the others.',
  configSchema: {
    type: 'object',
    required: ['expression'],
    properties: {
      expression: {
        type: 'string',
        minLength: 1,
        description:
          'CEL expression that must be true for the event to go on, e.g. `change == "deleted" || object.status.phase == "Failed"`. Variables: object, oldObject, change, patch, event (see docs/stages.md).',
      },
      onError: {
        type: 'string',
        enum: ['deadLetter', 'drop', 'keep'],
        default: FILTER_DEFAULTS.onError,
        description:
          'When the expression fails for an event (e.g. a missing field; guard with has() or `.?`): deadLetter writes it to the dead-letter destination, drop drops it, keep lets it through. Failures are counted and logged once per kind.',
      },
    },
  },
  check(config) {
    if (typeof config.expression !== 'string') return [];
    const problem = celProblem(config.expression, 'bool');
    return problem ? [{ pointer: '/expression', message: problem }] : [];
  },
  create: createFilter,
};
