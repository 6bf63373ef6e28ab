/**
 * CEL (the Common Expression Language Kubernetes users already write in CRD validation rules and
 * admission policies) for pipeline stages: one environment declaring the variables every
 * expression sees, compilation with type checking (pure, used by `crbridge validate` and again at
 * build time), and evaluation against one event.
 *
 * Variables: `object`, `oldObject`, `change`, `patch`, `event` (see {@link CEL_VARIABLES}).
 * Numbers inside objects are JSON numbers, i.e. CEL doubles; they compare with integer literals
 * (`object.spec.replicas > 3`) and, as an extension, mix with them in arithmetic
 * (`object.spec.replicas + 1`), the result being a double.
 */
import { Environment, Optional, type TypeCheckResult } from '@marcbachmann/cel-js';
import { type CloudEvent, isCloudEventsInteger } from '../events/cloudevent.ts';

/** The variables every expression can use, with their CEL types and meaning (also used for docs). */
export const CEL_VARIABLES = [
  {
    name: 'object',
    type: 'map',
    description: 'The object after the change; for deletes its last known state.',
  },
  {
    name: 'oldObject',
    type: 'dyn',
    description: 'The object before the change (updates only); null for creates and deletes.',
  },
  {
    name: 'change',
    type: 'string',
    description: 'What happened: "created", "spec.changed", "status.changed" or "deleted".',
  },
  {
    name: 'patch',
    type: 'list',
    description:
      'The RFC 6902 JSON Patch from oldObject to object (a list of {op, path, value}); empty unless an update.',
  },
  {
    name: 'event',
    type: 'map',
    description:
      'The CloudEvent: its attributes (id, type, source, subject, time, k8snamespace, k8sname, ...) and data.',
  },
] as const;

/** The values an expression is evaluated against. */
export interface CelVariables {
  object: Record<string, unknown>;
  oldObject: Record<string, unknown> | null;
  change: string;
  patch: readonly unknown[];
  event: CloudEvent;
}

const EMPTY_OBJECT: Record<string, unknown> = Object.freeze({}) as Record<string, unknown>;
const EMPTY_LIST: readonly unknown[] = Object.freeze([]);

/** The variables of one event. Cheap: no copy of the event or its objects. */
export function celVariables(event: CloudEvent): CelVariables {
  const data = event.data;
  return {
    object: (data?.object as Record<string, unknown> | undefined) ?? EMPTY_OBJECT,
    oldObject: (data?.oldObject as Record<string, unknown> | undefined) ?? null,
    change: changeOf(event.type),
    patch: data?.patch ?? EMPTY_LIST,
    event,
  };
}

/** The change part of `<prefix>.<group>.<kind>.<change>`. */
export function changeOf(type: string): string {
  if (type.endsWith('.spec.changed')) return 'spec.changed';
  if (type.endsWith('.status.changed')) return 'status.changed';
  return type.slice(type.lastIndexOf('.') + 1);
}

let shared: Environment | undefined;

function environment(): Environment {
  if (shared) return shared;
  const env = new Environment({
    unlistedVariablesAreDyn: false,
    homogeneousAggregateLiterals: false,
    enableOptionalTypes: true,
    limits: { maxAstNodes: 2000, maxDepth: 50, maxListElements: 1000, maxMapEntries: 1000, maxCallArguments: 32 },
  });
  for (const v of CEL_VARIABLES) env.registerVariable(v.name, v.type, { description: v.description });
  // JSON numbers are doubles: let them meet integer literals in arithmetic (the result is a double).
  for (const op of ['+', '-', '*', '/'] as const) {
    const f = arithmetic[op];
    env.registerOperator(`double ${op} int`, (a: number, b: bigint) => f(a, Number(b)));
    env.registerOperator(`int ${op} double`, (a: bigint, b: number) => f(Number(a), b));
  }
  shared = env;
  return env;
}

const arithmetic = {
  '+': (a: number, b: number) => a + b,
  '-': (a: number, b: number) => a - b,
  '*': (a: number, b: number) => a * b,
  '/': (a: number, b: number) => a / b,
};

/**
 * What an expression must produce: a bool (filters), a value for an event attribute (enrich),
 * a string (a name chosen per event, e.g. a Kafka topic; null or an empty optional for "none"),
 * or anything (a template placeholder, stringified when rendered).
 */
export type CelResult = 'bool' | 'attribute' | 'string' | 'any';

/** CEL types an attribute expression may have (`dyn` and optionals are checked when evaluated). */
const ATTRIBUTE_TYPES = /^(string|int|uint|double|bool|null|dyn|optional<.*>)$/;

/** CEL types a string expression may have (`dyn` and optionals are checked when evaluated). */
const STRING_TYPES = /^(string|null|dyn|optional<(string|dyn)>)$/;

/**
 * An expression that could not be compiled; `message` is one line and names where it failed.
 * `offset` is the 0-based character of `source` where the parser or checker stopped, when known.
 */
export class CelCompileError extends Error {
  readonly offset: number | undefined;
  constructor(message: string, offset?: number) {
    super(message);
    this.name = 'CelCompileError';
    this.offset = offset;
  }
}

/** A compiled expression; `evaluate` throws on evaluation errors (missing key, wrong type). */
export interface CelProgram {
  readonly source: string;
  /** The CEL type the checker inferred, e.g. `bool` or `dyn`. */
  readonly type: string;
  evaluate(vars: CelVariables): unknown;
}

function offsetOf(err: unknown): number | undefined {
  const at = (err as { range?: { start?: unknown } } | undefined)?.range?.start;
  return typeof at === 'number' ? at : undefined;
}

function located(source: string, err: unknown): string {
  const e = err as { message?: string; range?: { start: number } };
  const first = String(e.message ?? err).split('\n')[0] ?? '';
  const at = e.range?.start;
  if (typeof at !== 'number') return first;
  const excerpt = source.length > 60 ? `${source.slice(Math.max(0, at - 20), at + 40)}` : source;
  return `${first}, at character ${at + 1} of ${JSON.stringify(excerpt)}`;
}

/**
 * Parses and type-checks `source`. Pure (no I/O); throws {@link CelCompileError} with a one-line
 * message saying what is wrong and where.
 */
export function compileCel(source: string, result: CelResult): CelProgram {
  const env = environment();
  let program: ReturnType<Environment['parse']>;
  try {
    program = env.parse(source);
  } catch (err) {
    throw new CelCompileError(`CEL syntax error: ${located(source, err)}`, offsetOf(err));
  }
  let checked: TypeCheckResult;
  try {
    checked = program.check(); // the parsed expression, not parsed again
  } catch (err) {
    throw new CelCompileError(`CEL error: ${located(source, err)}`, offsetOf(err));
  }
  if (!checked.valid)
    throw new CelCompileError(`CEL type error: ${located(source, checked.error)}`, offsetOf(checked.error));
  const type = String(checked.type);
  if (result === 'bool' && type !== 'bool' && type !== 'dyn')
    throw new CelCompileError(`the expression must produce a bool (true keeps the event), but it produces ${type}`);
  if (result === 'attribute' && !ATTRIBUTE_TYPES.test(type))
    throw new CelCompileError(
      `the expression must produce a string, number or bool for an event attribute, but it produces ${type}; convert it, e.g. string(...)`,
    );
  if (result === 'string' && !STRING_TYPES.test(type))
    throw new CelCompileError(
      `the expression must produce a string, but it produces ${type}; convert it, e.g. string(...)`,
    );
  return { source, type, evaluate: (vars) => program(vars as unknown as Record<string, unknown>) };
}

/** The problem with `source`, or undefined when it compiles; for pipeline validation. */
export function celProblem(source: string, result: CelResult): string | undefined {
  try {
    compileCel(source, result);
    return undefined;
  } catch (err) {
    return err instanceof CelCompileError ? err.message : `CEL error: ${String(err)}`;
  }
}

/**
 * A string expression's result: the string, or null for "none" (null, an empty optional, "").
 * Throws for any other kind of value.
 */
export function toStringValue(v: unknown): string | null {
  if (v instanceof Optional) return v.hasValue() ? toStringValue(v.value()) : null;
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'string') return v;
  throw new TypeError(
    `it produced a ${Array.isArray(v) ? 'list' : typeof v === 'object' ? 'map' : typeof v}, not a string; convert it, e.g. string(...)`,
  );
}

/**
 * A CEL result as a CloudEvents extension value (string, 32-bit integer or boolean; other
 * numbers become strings), or null for "no value" (null, an empty optional). Throws for lists,
 * maps and other kinds, which no attribute can carry.
 */
export function toAttributeValue(v: unknown): string | number | boolean | null {
  if (v instanceof Optional) return v.hasValue() ? toAttributeValue(v.value()) : null;
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return v;
    case 'bigint':
      return isCloudEventsInteger(Number(v)) ? Number(v) : v.toString();
    case 'number':
      return isCloudEventsInteger(v) ? v : String(v);
  }
  // a CEL uint (an object holding a bigint)
  if (typeof (v as { value?: unknown }).value === 'bigint') return toAttributeValue((v as { value: bigint }).value);
  if (v instanceof Date) return v.toISOString();
  throw new TypeError(
    `a ${Array.isArray(v) ? 'list' : typeof v === 'object' ? 'map' : typeof v} cannot be an event attribute; produce a string, number or bool`,
  );
}
