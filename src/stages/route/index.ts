/**
 * The `route` stage: sends each event to the pipeline's sinks chosen by CEL conditions — the
 * first route whose `when` is true (`mode: first`) or every such route (`mode: all`), else the
 * `default` sinks. It only annotates the event (`withDestinations`); the pipeline delivers it to
 * those sinks and counts it as settled for the others. An event no route and no default takes is
 * dropped (counted like a filtered one). `crbridge validate` refuses a sink name that is not in
 * the pipeline and a sink of the pipeline that no route and no default names.
 */

import { type CelProgram, celProblem, celVariables, compileCel } from '../../cel/index.ts';
import { type ComponentContext, type Stage, type StageFactory, withDestinations } from '../../component.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import { expressionFailure } from '../expression-failure.ts';

export interface RouteConfig {
  /** CEL; true sends the event to `sinks`. */
  when: string;
  /** Names of the pipeline's sinks. */
  sinks: string[];
  /** Optional, for docs and logs. */
  name?: string;
}

export interface RouteStageConfig {
  routes: RouteConfig[];
  /** Sinks for an event no route takes; none: such an event is dropped. */
  default?: string[];
  mode?: 'first' | 'all';
  onError?: 'deadLetter' | 'skip' | 'drop';
}

/** The route stage's defaults: one constant for the schema and the code. */
export const ROUTE_DEFAULTS = { mode: 'first', onError: 'deadLetter' } as const;

const NONE: CloudEvent[] = [];

export function createRoute(config: RouteStageConfig, ctx: ComponentContext): Stage {
  const routes: { program: CelProgram; sinks: readonly string[] }[] = config.routes.map((r) => ({
    program: compileCel(r.when, 'bool'),
    sinks: r.sinks,
  }));
  const fallback = config.default ?? [];
  const mode = config.mode ?? ROUTE_DEFAULTS.mode;
  const onError = config.onError ?? ROUTE_DEFAULTS.onError;
  const failed = expressionFailure(
    ctx,
    onError,
    onError === 'skip' ? 'the route is skipped for the event' : 'the event is dropped',
  );
  return {
    process(event) {
      const vars = celVariables(event);
      let chosen: string[] | undefined;
      for (const { program, sinks } of routes) {
        let match: unknown;
        try {
          match = program.evaluate(vars);
          if (typeof match !== 'boolean') throw new TypeError(`it produced ${typeof match}, not a bool`);
        } catch (err) {
          failed(event, program.source, err); // throws for deadLetter
          if (onError === 'drop') return NONE;
          continue;
        }
        if (!match) continue;
        chosen = chosen ? [...chosen, ...sinks] : [...sinks];
        if (mode === 'first') break;
      }
      const to = chosen ?? fallback;
      return to.length === 0 ? NONE : [withDestinations(event, to)];
    },
  };
}

const sinkNames = (what: string) => ({
  type: 'array',
  minItems: 1,
  description: what,
  items: { type: 'string', minLength: 1, description: 'The `name` of a sink of this pipeline.' },
});

export const routeStage: StageFactory<RouteStageConfig> = {
  kind: 'stage',
  type: 'route',
  description: 'Sends each event to the sinks whose CEL condition it meets (first match or all), else to a default.',
  configSchema: {
    type: 'object',
    required: ['routes'],
    properties: {
      routes: {
        type: 'array',
        minItems: 1,
        description: 'Conditions and where they send an event, tried in order.',
        items: {
          type: 'object',
          required: ['when', 'sinks'],
          additionalProperties: false,
          properties: {
            name: { type: 'string', description: 'Optional name of the route, for readers.' },
            when: {
              type: 'string',
              minLength: 1,
              description:
                'CEL condition, e.g. `object.?status.?phase.orValue("") == "Failed"`. Variables: object, oldObject, change, patch, event (see docs/stages.md).',
            },
            sinks: sinkNames('The sinks (by name) an event meeting `when` goes to.'),
          },
        },
      },
      default: sinkNames(
        'The sinks (by name) an event that meets no route goes to; without it such an event is dropped.',
      ),
      mode: {
        type: 'string',
        enum: ['first', 'all'],
        default: ROUTE_DEFAULTS.mode,
        description:
          'first: the first route whose condition is true decides; all: every route whose condition is true adds its sinks. `default` applies when none is true.',
      },
      onError: {
        type: 'string',
        enum: ['deadLetter', 'skip', 'drop'],
        default: ROUTE_DEFAULTS.onError,
        description:
          'When a condition fails for an event (e.g. a missing field; guard with has() or `.?`): deadLetter writes the event to the dead-letter destination, skip treats that route as not met, drop drops the event. Failures are counted and logged once per kind.',
      },
    },
  },
  check(config) {
    if (!Array.isArray(config.routes)) return [];
    const out: { pointer: string; message: string }[] = [];
    config.routes.forEach((r, i) => {
      if (typeof r?.when !== 'string') return;
      const problem = celProblem(r.when, 'bool');
      if (problem) out.push({ pointer: `/routes/${i}/when`, message: problem });
    });
    return out;
  },
  destinations(config) {
    const out: { pointer: string; sink: string }[] = [];
    (Array.isArray(config.routes) ? config.routes : []).forEach((r, i) => {
      (Array.isArray(r?.sinks) ? r.sinks : []).forEach((sink, j) => {
        if (typeof sink === 'string') out.push({ pointer: `/routes/${i}/sinks/${j}`, sink });
      });
    });
    (Array.isArray(config.default) ? config.default : []).forEach((sink, j) => {
      if (typeof sink === 'string') out.push({ pointer: `/default/${j}`, sink });
    });
    return out;
  },
  create: createRoute,
};
