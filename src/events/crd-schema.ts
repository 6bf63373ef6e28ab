/**
 * Level-3 validation: the object against its CRD's own `openAPIV3Schema`. Pure: the CRD JSON and
 * its change notifications come from functions the caller gives (`fetchCrd`, `subscribe`; the
 * Kubernetes source supplies them, `src/sources/kubernetes/crd-schema.ts`), and this module names
 * no client and no watch. `refresh()` re-fetches and recompiles only when the CRD's resourceVersion
 * moved, and a failed fetch or compile keeps the previous validator. Until one schema compiled,
 * objects are not checked (`validate` returns undefined).
 *
 * The OpenAPI v3 structural schema is converted to JSON Schema draft-07 for ajv:
 * `nullable` → adds "null" to the type; `x-kubernetes-int-or-string` → integer or string;
 * `x-kubernetes-preserve-unknown-fields` → unknown fields allowed; otherwise an object with
 * `properties` rejects unknown fields (the API server prunes them, so an unknown field means the
 * object does not match this schema); `x-kubernetes-embedded-resource` → apiVersion, kind and
 * metadata allowed; `x-kubernetes-list-type: set` → uniqueItems; boolean `exclusiveMinimum` /
 * `exclusiveMaximum` (OpenAPI 3.0) → draft-07 numbers; Kubernetes formats (int32, int64, float,
 * double, byte, ...) are checked or ignored; patterns JavaScript cannot compile (RE2-only syntax)
 * and CEL rules (`x-kubernetes-validations`) are skipped and listed in `skipped`. The root always
 * allows apiVersion, kind and metadata, as the API server does.
 */

import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { errorMessage } from '../errors.ts';
import type { KubeObject } from './delta.ts';

type Schema = Record<string, unknown>;

const KNOWN_FORMATS = new Set([
  'date-time',
  'date',
  'time',
  'duration',
  'uri',
  'uri-reference',
  'email',
  'hostname',
  'ipv4',
  'ipv6',
  'uuid',
  'regex',
  'byte',
  'int32',
  'int64',
  'float',
  'double',
  'password',
  'binary',
]);

const PASSING_KEYS = new Set([
  'type',
  'required',
  'enum',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
  'multipleOf',
  'pattern',
  'format',
  'description',
]);

/** Converts an OpenAPI v3 (Kubernetes structural) schema to JSON Schema draft-07. */
export function openApiToJsonSchema(s: unknown, skipped: string[] = [], at = '', root = true): Schema {
  if (s === null || typeof s !== 'object' || Array.isArray(s)) return {};
  const src = s as Schema;
  const out: Schema = {};
  for (const [k, v] of Object.entries(src)) {
    if (!PASSING_KEYS.has(k)) continue;
    if (k === 'pattern') {
      try {
        new RegExp(v as string, 'u');
        out.pattern = v;
      } catch {
        skipped.push(`${at || '/'}: pattern ${JSON.stringify(v)} (not a JavaScript regular expression)`);
      }
    } else if (k === 'format') {
      if (typeof v === 'string' && KNOWN_FORMATS.has(v)) out.format = v;
    } else out[k] = v;
  }
  if (src.exclusiveMinimum === true && typeof src.minimum === 'number') {
    out.exclusiveMinimum = src.minimum;
    delete out.minimum;
  }
  if (src.exclusiveMaximum === true && typeof src.maximum === 'number') {
    out.exclusiveMaximum = src.maximum;
    delete out.maximum;
  }
  if (src['x-kubernetes-validations'] !== undefined) skipped.push(`${at || '/'}: x-kubernetes-validations (CEL)`);
  if (src['x-kubernetes-int-or-string'] === true) {
    delete out.type;
    delete out.format;
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  if (src['x-kubernetes-list-type'] === 'set') out.uniqueItems = true;
  if (src.properties && typeof src.properties === 'object') {
    const props: Schema = {};
    for (const [name, sub] of Object.entries(src.properties as Schema)) {
      props[name] = openApiToJsonSchema(sub, skipped, `${at}/${name}`, false);
    }
    if (root || src['x-kubernetes-embedded-resource'] === true) {
      props.apiVersion ??= { type: 'string' };
      props.kind ??= { type: 'string' };
      props.metadata = props.metadata ? loosen(props.metadata as Schema) : { type: 'object' };
    }
    out.properties = props;
  }
  if (src.items !== undefined) out.items = openApiToJsonSchema(src.items, skipped, `${at}/items`, false);
  if (src.additionalProperties !== undefined) {
    out.additionalProperties =
      typeof src.additionalProperties === 'boolean'
        ? src.additionalProperties
        : openApiToJsonSchema(src.additionalProperties, skipped, `${at}/*`, false);
  } else if (out.properties && src['x-kubernetes-preserve-unknown-fields'] !== true) {
    out.additionalProperties = false;
  }
  for (const k of ['allOf', 'anyOf', 'oneOf'] as const) {
    if (!Array.isArray(src[k])) continue;
    // Structural schemas only use these to add value validations; the types come from outside.
    const subs = (src[k] as unknown[]).map((x, i) => loosen(openApiToJsonSchema(x, skipped, `${at}/${k}/${i}`, false)));
    if (k === 'anyOf' && Array.isArray(out.anyOf)) out.allOf = [...((out.allOf as unknown[]) ?? []), { anyOf: subs }];
    else out[k] = subs;
  }
  if (src.not !== undefined) out.not = loosen(openApiToJsonSchema(src.not, skipped, `${at}/not`, false));
  if (src.nullable === true) {
    if (typeof out.type === 'string') out.type = [out.type, 'null'];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    if (out.anyOf) out.anyOf = [...(out.anyOf as unknown[]), { type: 'null' }];
  }
  return out;
}

/** Inside allOf/anyOf/oneOf/not, a structural schema must not forbid what the outer schema allows. */
function loosen(s: Schema): Schema {
  delete s.additionalProperties;
  return s;
}

/** Name of the CRD that defines a resource: `<plural>.<group>`, e.g. `backups.example.com`. */
export function crdNameFor(resource: { resource: string; group: string }): string {
  return `${resource.resource}.${resource.group}`;
}

/** The openAPIV3Schema of `version` in a CRD (v1, or v1beta1's spec.validation). */
export function crdVersionSchema(crd: unknown, version: string): unknown {
  const spec = (crd as { spec?: Record<string, unknown> } | null)?.spec;
  if (!spec) return undefined;
  const versions = Array.isArray(spec.versions) ? (spec.versions as Record<string, unknown>[]) : [];
  const v = versions.find((x) => x && x.name === version);
  const own = (v?.schema as { openAPIV3Schema?: unknown } | undefined)?.openAPIV3Schema;
  if (own !== undefined) return own;
  return (spec.validation as { openAPIV3Schema?: unknown } | undefined)?.openAPIV3Schema;
}

function newAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true });
  const addFormats = addFormatsModule as unknown as (a: Ajv) => void;
  addFormats(ajv);
  const int = (min: number, max: number) => ({
    type: 'number' as const,
    validate: (n: number) => Number.isInteger(n) && n >= min && n <= max,
  });
  ajv.addFormat('int32', int(-2147483648, 2147483647));
  ajv.addFormat('int64', int(Number.MIN_SAFE_INTEGER * 1024, Number.MAX_SAFE_INTEGER * 1024));
  ajv.addFormat('float', { type: 'number', validate: () => true });
  ajv.addFormat('double', { type: 'number', validate: () => true });
  ajv.addFormat('byte', /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/);
  ajv.addFormat('password', true);
  ajv.addFormat('binary', true);
  return ajv;
}

/** ajv errors as stable strings: `<pointer> <message>` (no values, so they group well in logs). */
export function formatAjvErrors(errors: readonly ErrorObject[] | null | undefined, prefix = ''): string[] {
  if (!errors) return [];
  return errors.map((e) => {
    const where = `${prefix}${e.instancePath}` || '/';
    let msg = e.message ?? e.keyword;
    if (e.keyword === 'additionalProperties')
      msg += `: ${(e.params as { additionalProperty: string }).additionalProperty}`;
    return `${where} ${msg}`;
  });
}

export interface CrdSchemaValidatorOptions {
  /** Returns the CustomResourceDefinition JSON (apiextensions.k8s.io/v1). */
  fetchCrd: () => Promise<unknown>;
  /**
   * Lets the validator be told the CRD changed (e.g. a watch on the CRD); the validator then
   * refreshes. Returns an unsubscribe function.
   */
  subscribe?: (onChange: () => void) => () => void;
  /** Told when a fetch or compile fails; the previous schema stays in force. */
  onError?: (err: unknown) => void;
  /** Told after a CRD (a new resourceVersion) compiled: its versions and the rules skipped. */
  onLoad?: (info: {
    resourceVersion: string | undefined;
    versions: string[];
    skipped: ReadonlyMap<string, readonly string[]>;
  }) => void;
}

/**
 * Validates objects against their CRD's openAPIV3Schema. `validate` is synchronous and returns
 * undefined when no schema has compiled yet or the object's version is not in the CRD, else the
 * list of problems (empty when valid).
 */
export interface CrdSchemaValidator {
  validate(object: KubeObject): string[] | undefined;
  /** Compiles from a CRD JSON now (when its resourceVersion changed). Throws on a bad schema. */
  load(crd: unknown): void;
  /**
   * Fetches and loads; errors go to onError. Calls during a fetch share one more fetch after it
   * (so a change signalled while a fetch was under way is never missed).
   */
  refresh(): Promise<void>;
  /** Fetch once and follow changes via `subscribe`. */
  start(): Promise<void>;
  stop(): void;
  /** Rules the conversion could not apply (RE2-only patterns, CEL), by version. */
  readonly skipped: ReadonlyMap<string, readonly string[]>;
  /** resourceVersion of the CRD the validators were compiled from. */
  readonly resourceVersion: string | undefined;
}

export function createCrdSchemaValidator(opts: CrdSchemaValidatorOptions): CrdSchemaValidator {
  let compiled = new Map<string, ValidateFunction>();
  let skipped = new Map<string, string[]>();
  let rv: string | undefined;
  let inflight: Promise<void> | undefined;
  let again: Promise<void> | undefined;
  let unsubscribe: (() => void) | undefined;

  function load(crd: unknown): void {
    const meta = (crd as { metadata?: { resourceVersion?: string } } | null)?.metadata;
    const nextRv = meta?.resourceVersion;
    if (nextRv !== undefined && nextRv === rv && compiled.size > 0) return;
    const spec = (crd as { spec?: { versions?: { name?: unknown }[] } } | null)?.spec;
    const names = (spec?.versions ?? []).map((v) => v?.name).filter((n): n is string => typeof n === 'string');
    if (names.length === 0) throw new Error('CRD has no spec.versions');
    const ajv = newAjv();
    const nextCompiled = new Map<string, ValidateFunction>();
    const nextSkipped = new Map<string, string[]>();
    for (const name of names) {
      const raw = crdVersionSchema(crd, name);
      if (raw === undefined) continue;
      const sk: string[] = [];
      nextCompiled.set(name, ajv.compile(openApiToJsonSchema(raw, sk)));
      nextSkipped.set(name, sk);
    }
    compiled = nextCompiled;
    skipped = nextSkipped;
    rv = nextRv;
    opts.onLoad?.({ resourceVersion: rv, versions: [...nextCompiled.keys()], skipped });
  }

  function refresh(): Promise<void> {
    if (inflight) {
      again ??= inflight.then(() => {
        again = undefined;
        return refresh();
      });
      return again;
    }
    inflight = (async () => {
      try {
        load(await opts.fetchCrd());
      } catch (err) {
        opts.onError?.(new Error(`CRD schema: ${errorMessage(err)}`, { cause: err }));
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  }

  return {
    validate(object) {
      const apiVersion = typeof object.apiVersion === 'string' ? object.apiVersion : '';
      const version = apiVersion.slice(apiVersion.lastIndexOf('/') + 1);
      const fn = compiled.get(version);
      if (!fn) return undefined;
      return fn(object) ? [] : formatAjvErrors(fn.errors);
    },
    load,
    refresh,
    async start() {
      unsubscribe ??= opts.subscribe?.(() => {
        void refresh();
      });
      await refresh();
    },
    stop() {
      unsubscribe?.();
      unsubscribe = undefined;
    },
    get skipped() {
      return skipped;
    },
    get resourceVersion() {
      return rv;
    },
  };
}
