/**
 * Event validation before any sink sees an event, at three levels:
 * 1. envelope: the official CloudEvents 1.0 JSON schema, plus crbridge's rules for attributes
 *    (specversion "1.0"; every attribute name lowercase alphanumeric, at most 20 characters;
 *    extension values strings, booleans or 32-bit integers);
 * 2. data: crbridge's published JSON Schema (`schemas/event-data.schema.json`);
 * 3. object (optional, per pipeline): the object against the CRD's own openAPIV3Schema.
 * Validators compile once per process (levels 1 and 2) and are shared. The first failing level is
 * reported; its errors are stable strings (`<pointer> <message>`) that group well in logs.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { fullFormats } from 'ajv-formats/dist/formats.js';
import { type CloudEvent, isCloudEventsInteger } from './cloudevent.ts';
import { formatAjvErrors } from './crd-schema.ts';
import type { KubeObject } from './delta.ts';
import { CLOUDEVENTS_SCHEMA } from './schemas/cloudevents.ts';
import { EVENT_DATA_SCHEMA } from './schemas/event-data.ts';

export type ValidationLevel = 'envelope' | 'data' | 'object';
export type ValidationResult = { ok: true } | { ok: false; level: ValidationLevel; errors: string[] };

/** Level-3 checker; `createCrdSchemaValidator` (crd-schema.ts) makes one from the cluster's CRD. */
export interface ObjectSchemaValidator {
  /** Problems of `object` ([] when valid), or undefined when it cannot be checked (yet). */
  validate(object: KubeObject): string[] | undefined;
}

export interface EventValidatorOptions {
  /** Level 3: check `data.object` against the CRD schema. */
  objectSchema?: ObjectSchemaValidator;
  /** Skip level 2 (for events whose data is not crbridge's, e.g. replayed foreign events). */
  skipData?: boolean;
}

export const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;
const CORE = new Set(['specversion', 'id', 'source', 'type', 'datacontenttype', 'dataschema', 'subject', 'time']);

let shared: { envelope: ValidateFunction; data: ValidateFunction } | undefined;

function compiled(): { envelope: ValidateFunction; data: ValidateFunction } {
  if (shared) return shared;
  const ajv = new Ajv({ allErrors: true, strict: false });
  (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
  // `source` and `dataschema` repeat on every event of a pipeline: check each URI once.
  for (const name of ['uri', 'uri-reference'] as const) ajv.addFormat(name, memoized(fullFormats[name]));
  shared = {
    envelope: ajv.compile(CLOUDEVENTS_SCHEMA as unknown as object),
    data: ajv.compile(EVENT_DATA_SCHEMA as unknown as object),
  };
  return shared;
}

/** A string format check that remembers its last few hundred answers. */
function memoized(format: unknown): (s: string) => boolean {
  const check =
    format instanceof RegExp ? (s: string) => format.test(s) : (format as (s: string) => boolean).bind(undefined);
  const seen = new Map<string, boolean>();
  return (s) => {
    let ok = seen.get(s);
    if (ok === undefined) {
      ok = check(s);
      if (seen.size >= 256) seen.clear();
      seen.set(s, ok);
    }
    return ok;
  };
}

/**
 * The kind of a validation error, for "log once per kind": each array index in the error's JSON
 * pointer becomes a `*` token (`/data/patch/3/path` and `/data/patch/7/path` group together).
 */
export function errorKind(error: string): string {
  const sp = error.indexOf(' ');
  const ptr = sp === -1 ? error : error.slice(0, sp);
  return ptr.replace(/\/(0|[1-9][0-9]*)(?=\/|$)/g, '/*') + (sp === -1 ? '' : error.slice(sp));
}

/**
 * crbridge's envelope rules beyond the official schema. With `unchangedFrom`, attributes whose
 * value is the same as there (an event that already passed) are not checked again.
 */
export function attributeProblems(e: Record<string, unknown>, unchangedFrom?: Record<string, unknown>): string[] {
  const out: string[] = [];
  if (e.specversion !== '1.0') out.push('/specversion must be "1.0"');
  for (const k in e) {
    if (!Object.hasOwn(e, k) || k === 'data' || k === 'data_base64') continue;
    if (unchangedFrom !== undefined && e[k] === unchangedFrom[k]) continue;
    if (!EXTENSION_NAME.test(k)) {
      out.push(`/${k} attribute name must be lowercase alphanumeric, at most 20 characters`);
      continue;
    }
    if (CORE.has(k)) continue;
    const v = e[k];
    const t = typeof v;
    if (t === 'string' || t === 'boolean') continue;
    if (isCloudEventsInteger(v)) continue;
    out.push(`/${k} extension value must be a string, a boolean or a 32-bit integer`);
  }
  if (e.data !== undefined && e.data_base64 !== undefined) out.push('/data and /data_base64 are exclusive');
  return out;
}

/** Validates events; see {@link createEventValidator}. */
export interface EventValidator {
  /** Every level, or level 1 alone with `envelopeOnly` (the data unchanged since a full check). */
  validate(e: CloudEvent, envelopeOnly?: boolean): ValidationResult;
  /**
   * An event a stage made from `checked` (which passed `validate`): only what changed is checked
   * again — extension attributes alone when the core attributes and the data are the same objects,
   * the envelope when only the data is, everything otherwise.
   */
  validateChanged(e: CloudEvent, checked: CloudEvent): ValidationResult;
}

/** Creates a validator; levels 1 and 2 are compiled once per process and shared. */
export function createEventValidator(opts: EventValidatorOptions = {}): EventValidator {
  const { envelope, data } = compiled();
  const self: EventValidator = {
    validateChanged(e, checked) {
      if (e.data !== checked.data) return self.validate(e);
      for (const k of CORE)
        if ((e as Record<string, unknown>)[k] !== (checked as Record<string, unknown>)[k])
          return self.validate(e, true);
      const rules = attributeProblems(e as Record<string, unknown>, checked as Record<string, unknown>);
      return rules.length > 0 ? { ok: false, level: 'envelope', errors: rules } : { ok: true };
    },
    validate(e, envelopeOnly = false) {
      if (e === null || typeof e !== 'object') return { ok: false, level: 'envelope', errors: ['/ must be object'] };
      if (!envelope(e)) return { ok: false, level: 'envelope', errors: formatAjvErrors(envelope.errors) };
      const rules = attributeProblems(e);
      if (rules.length > 0) return { ok: false, level: 'envelope', errors: rules };
      if (envelopeOnly) return { ok: true };
      if (!opts.skipData && !data(e.data))
        return { ok: false, level: 'data', errors: formatAjvErrors(data.errors, '/data') };
      // Level 3 checks the new state of living objects only: oldObject may predate a schema change,
      // and a delete must reach consumers whatever its last state looked like.
      if (opts.objectSchema && e.data?.object && !e.type.endsWith('.deleted')) {
        let problems = opts.objectSchema.validate(e.data.object);
        // A masked value ("[REDACTED]") may not match its schema type: errors there are expected.
        const masked = e.data.redacted;
        if (problems && problems.length > 0 && Array.isArray(masked) && masked.length > 0) {
          problems = problems.filter((p) => !masked.some((m) => p.startsWith(`${m} `) || p.startsWith(`${m}/`)));
        }
        if (problems && problems.length > 0) {
          const errors = problems.map((p) => (p.startsWith('/ ') ? `/data/object${p.slice(1)}` : `/data/object${p}`));
          return { ok: false, level: 'object', errors };
        }
      }
      return { ok: true };
    },
  };
  return self;
}
