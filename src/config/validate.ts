/**
 * Validates parsed pipeline documents against the generated schema (all errors at once) and runs
 * the checks a schema cannot express (unique sink names; `validation.crdSchema` only for Custom
 * Resources; `deadLetter` a file or a sink; each factory's `check`, the dead-letter sink's too,
 * each sink's `delivery` rules across fields, on the blocks as written; the sinks a routing stage
 * names exist and every sink is reachable). Turns ajv errors into readable issues.
 */
import { Ajv2020, type ErrorObject } from 'ajv/dist/2020.js';
import type { AnyFactory, JsonSchema } from '../component.ts';
import { checkDeliveryConfig, type PartialDeliveryConfig } from '../delivery/config.ts';
import type { ConfigIssue } from '../errors.ts';
import { escapeToken } from '../events/patch.ts';
import type { PositionedDocument } from './load.ts';

export interface SchemaError {
  pointer: string;
  message: string;
  /** A 0-based character index into the string value at `pointer` where the problem is (a template placeholder). */
  offset?: number;
}

export interface PipelineValidator {
  validate(value: unknown): SchemaError[];
  /**
   * For a pipeline that passed `validate`: which shared source instance it uses (`key`) and the
   * settings (pointer into `spec.source` → value) all pipelines sharing it must give alike.
   */
  sharing?(value: unknown): { key: string; settings: Record<string, unknown> } | undefined;
}

function describe(e: ErrorObject): SchemaError | null {
  const p = e.params as Record<string, unknown>;
  const propertyName = (e as { propertyName?: string }).propertyName;
  switch (e.keyword) {
    case 'if':
    case 'propertyNames':
      return null; // the `then` branch and property-name errors say what is wrong
    case 'pattern':
      if (propertyName !== undefined)
        return {
          pointer: `${e.instancePath}/${escapeToken(propertyName)}`,
          message: `the name "${propertyName}" must match pattern "${String(p.pattern)}"`,
        };
      return { pointer: e.instancePath, message: e.message ?? e.keyword };
    case 'required':
      return {
        pointer: `${e.instancePath}/${String(p.missingProperty)}`,
        message: `required field "${String(p.missingProperty)}" is missing`,
      };
    case 'additionalProperties':
      return {
        pointer: `${e.instancePath}/${String(p.additionalProperty)}`,
        message: `unknown field "${String(p.additionalProperty)}"; check the spelling against the docs (crbridge schema prints every field)`,
      };
    case 'enum':
      return { pointer: e.instancePath, message: `must be one of: ${(p.allowedValues as unknown[]).join(', ')}` };
    case 'const':
      return { pointer: e.instancePath, message: `must be ${JSON.stringify(p.allowedValue)}` };
    default:
      return { pointer: e.instancePath, message: e.message ?? e.keyword };
  }
}

/**
 * Validates pipelines against `schema`, then runs the `check` of each component block's factory
 * (`factories`, usually the registry's) so CEL expressions and the like are checked too.
 */
export function createPipelineValidator(schema: JsonSchema, factories: readonly AnyFactory[] = []): PipelineValidator {
  const ajv = new Ajv2020({ allErrors: true, strict: false, useDefaults: true });
  const check = ajv.compile(schema);
  return {
    validate(value) {
      const out: SchemaError[] = [];
      // the checks across fields see the blocks as written: ajv fills in defaults (useDefaults)
      const written = structuredClone(value);
      if (!check(value)) {
        const seen = new Set<string>();
        for (const e of check.errors ?? []) {
          const d = describe(e);
          if (!d) continue;
          // a `then` branch re-checks `type` with const; the enum error already says it
          if (e.keyword === 'const' && d.pointer.endsWith('/type')) continue;
          const k = `${d.pointer}\0${d.message}`;
          if (!seen.has(k)) {
            seen.add(k);
            out.push(d);
          }
        }
      }
      const sinks = (value as { spec?: { sinks?: unknown } })?.spec?.sinks;
      if (Array.isArray(sinks)) {
        const first = new Map<string, number>();
        sinks.forEach((s: { name?: unknown }, i) => {
          if (typeof s?.name !== 'string') return;
          const j = first.get(s.name);
          if (j === undefined) first.set(s.name, i);
          else
            out.push({
              pointer: `/spec/sinks/${i}/name`,
              message: `sink name "${s.name}" is already used by /spec/sinks/${j}; names must be unique in a pipeline`,
            });
        });
      }
      out.push(...crdSchemaProblems(value));
      out.push(...deadLetterProblems(value));
      out.push(...componentProblems(written, factories));
      out.push(...deliveryProblems(written));
      out.push(...destinationProblems(written, factories));
      return out;
    },
    sharing(value) {
      const source = (value as { spec?: { source?: Record<string, unknown> } })?.spec?.source;
      if (!source) return undefined;
      const { type, ...config } = source;
      const f = factories.find((x) => x.kind === 'source' && (x.type === type || type === undefined));
      if (f?.kind !== 'source') return undefined;
      return { key: `${f.type}:${f.shareKey(config)}`, settings: f.sharedSettings?.(config) ?? {} };
    },
  };
}

/**
 * The `check` of every stage and sink factory on its blocks (the source's too), located by pointer.
 * `value` is the pipeline as written (no defaults filled in), so a check can tell a value the user
 * wrote from a default and point at what to change.
 */
function componentProblems(value: unknown, factories: readonly AnyFactory[]): SchemaError[] {
  const spec = (value as { spec?: Record<string, unknown> })?.spec;
  if (!spec || typeof spec !== 'object') return [];
  const out: SchemaError[] = [];
  const run = (kind: AnyFactory['kind'], block: unknown, at: string) => {
    if (!block || typeof block !== 'object') return;
    const type = (block as { type?: unknown }).type;
    const f = factories.find((x) => x.kind === kind && (x.type === type || (type === undefined && kind === 'source')));
    if (!f?.check) return;
    let problems: { pointer: string; message: string; offset?: number }[];
    try {
      problems = f.check(block as never);
    } catch {
      return; // a block the schema already rejected can trip a check; its schema errors say why
    }
    for (const q of problems)
      out.push({
        pointer: `${at}${q.pointer}`,
        message: q.message,
        ...(q.offset !== undefined && { offset: q.offset }),
      });
  };
  run('source', spec.source, '/spec/source');
  run('sink', (spec.deadLetter as { sink?: unknown } | undefined)?.sink, '/spec/deadLetter/sink');
  for (const [kind, list] of [
    ['stage', spec.stages],
    ['sink', spec.sinks],
  ] as const)
    if (Array.isArray(list))
      list.forEach((b, i) => {
        run(kind, b, `/spec/${kind}s/${i}`);
      });
  return out;
}

/**
 * Stages that send events to named sinks (a factory's `destinations`: `route`): each name must be
 * a sink of the pipeline, and each sink of the pipeline must be named by every such stage, or it
 * would never receive anything.
 */
function destinationProblems(value: unknown, factories: readonly AnyFactory[]): SchemaError[] {
  const spec = (value as { spec?: { stages?: unknown; sinks?: unknown } })?.spec;
  if (!spec || !Array.isArray(spec.stages) || !Array.isArray(spec.sinks)) return [];
  const sinks = spec.sinks.map((s: { name?: unknown }) => (typeof s?.name === 'string' ? s.name : undefined));
  const known = sinks.filter((n): n is string => n !== undefined);
  const out: SchemaError[] = [];
  spec.stages.forEach((block: { type?: unknown }, i) => {
    const f = factories.find((x) => x.kind === 'stage' && x.type === block?.type);
    if (f?.kind !== 'stage' || !f.destinations) return;
    let named: { pointer: string; sink: string }[];
    try {
      named = f.destinations(block as never);
    } catch {
      return; // a block the schema already rejected; its schema errors say why
    }
    for (const d of named)
      if (!known.includes(d.sink))
        out.push({
          pointer: `/spec/stages/${i}${d.pointer}`,
          message: `no sink of this pipeline is named "${d.sink}" (its sinks: ${known.join(', ')}); fix the name or add the sink`,
        });
    const type = String(block.type);
    sinks.forEach((name, j) => {
      if (name === undefined || named.some((d) => d.sink === name)) return;
      out.push({
        pointer: `/spec/sinks/${j}/name`,
        message: `sink "${name}" would receive nothing: the ${type} stage at /spec/stages/${i} sends events only to the sinks it names and does not name it; name it there (in a route or the default) or remove the sink`,
      });
    });
  });
  return out;
}

/** The cross-field rules of every sink's `delivery:` block (`checkDeliveryConfig`), located by pointer. */
function deliveryProblems(value: unknown): SchemaError[] {
  const sinks = (value as { spec?: { sinks?: unknown } })?.spec?.sinks;
  if (!Array.isArray(sinks)) return [];
  const out: SchemaError[] = [];
  sinks.forEach((s: { delivery?: unknown }, i) => {
    const block = s?.delivery;
    if (!block || typeof block !== 'object' || Array.isArray(block)) return;
    for (const q of checkDeliveryConfig(block as PartialDeliveryConfig))
      out.push({ pointer: `/spec/sinks/${i}/delivery${q.pointer}`, message: q.message });
  });
  return out;
}

/** `deadLetter` is a file or a sink, not both; a dead-letter sink takes the component name `dead-letter`. */
function deadLetterProblems(value: unknown): SchemaError[] {
  const spec = (value as { spec?: { deadLetter?: { path?: unknown; sink?: unknown }; sinks?: unknown } })?.spec;
  const dl = spec?.deadLetter;
  if (!spec || !dl?.sink) return [];
  const out: SchemaError[] = [];
  if (dl.path !== undefined)
    out.push({
      pointer: '/spec/deadLetter/path',
      message: 'set either deadLetter.path (a file) or deadLetter.sink, not both; remove one',
    });
  if (Array.isArray(spec.sinks))
    spec.sinks.forEach((s: { name?: unknown }, i) => {
      if (s?.name === 'dead-letter')
        out.push({
          pointer: `/spec/sinks/${i}/name`,
          message:
            'the name "dead-letter" is taken by deadLetter.sink (its metrics and logs are <pipeline>/dead-letter); rename this sink',
        });
    });
  return out;
}

/** `validation.crdSchema` needs a Custom Resource: the core group has no CRD to read a schema from. */
function crdSchemaProblems(value: unknown): SchemaError[] {
  const spec = (value as { spec?: { validation?: { crdSchema?: unknown }; source?: { group?: unknown } } })?.spec;
  if (spec?.validation?.crdSchema !== true) return [];
  const group = spec.source?.group;
  if (typeof group === 'string' && group !== '') return [];
  return [
    {
      pointer: '/spec/validation/crdSchema',
      message:
        'needs a Custom Resource: the source watches the core group (source.group is empty), which has no CRD to read a schema from',
    },
  ];
}

export function locateError(
  d: PositionedDocument,
  e: SchemaError,
  positionOf: (d: PositionedDocument, pointer: string, offset?: number) => { line: number; column: number },
): ConfigIssue {
  const pos = positionOf(d, e.pointer, e.offset);
  const docNote = d.index > 0 ? ` (document ${d.index + 1})` : '';
  return {
    file: d.file,
    line: pos.line,
    column: pos.column,
    pointer: e.pointer || '/',
    message: `${e.message}${docNote}`,
  };
}
