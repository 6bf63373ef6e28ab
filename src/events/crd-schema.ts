/**
 * Level-3 validation: the object against its CRD's own `openAPIV3Schema`. The CRD JSON comes from
 * a function the runtime gives (this module imports no source); `refresh()` re-fetches and
 * recompiles only when the CRD's resourceVersion moved, and a failed fetch or compile keeps the
 * previous validator. Until one schema compiled, objects are not checked (`validate` returns
 * undefined). `crdFromApi` supplies the fetch and a watch of the CRD on a real API server.
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
import { backoffDelay } from '../backoff.ts';
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
  /** Fetches and loads; errors go to onError. Concurrent calls share one fetch. */
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
    inflight ??= (async () => {
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

/** Path of the CustomResourceDefinition collection. */
export const CRD_COLLECTION = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

/**
 * What {@link crdFromApi} needs of a Kubernetes client (the source's `KubeApi` fits; this module
 * imports no source).
 */
export interface CrdApi {
  request(method: 'GET', path: string): Promise<unknown>;
  watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (type: string, object: unknown) => void,
    onDone: (err: unknown) => void,
  ): Promise<{ abort(): void }>;
}

export interface CrdFromApiOptions {
  /** Server-side timeout of one WATCH; the watch is then reopened. Default 300. */
  watchTimeoutSeconds?: number;
  /** First reopen delay after a failed watch (50–100 % of it, jittered); doubles up to `retryMaxMs`. Default 1000. */
  retryInitialMs?: number;
  /** Default 30000. */
  retryMaxMs?: number;
  /** Told when a watch fails (it is reopened after a delay). */
  onError?: (err: unknown) => void;
}

/**
 * `fetchCrd` and `subscribe` for {@link createCrdSchemaValidator} on a real API server: GET the CRD
 * by name, and WATCH it (field selector on its name). The watch is opened without a
 * resourceVersion, so every (re)connection first reports the CRD's current state as ADDED: a change
 * missed while disconnected is caught up on reconnect. Every ADDED or MODIFIED event tells the
 * validator to refresh (which recompiles only when the resourceVersion moved). `api` may be a
 * function so that credentials are loaded on first use, not when the validator is built.
 */
export function crdFromApi(
  api: CrdApi | (() => CrdApi),
  crdName: string,
  opts: CrdFromApiOptions = {},
): Pick<CrdSchemaValidatorOptions, 'fetchCrd' | 'subscribe'> {
  const client = typeof api === 'function' ? api : () => api;
  const initial = opts.retryInitialMs ?? 1000;
  const max = opts.retryMaxMs ?? 30_000;
  return {
    fetchCrd: () => client().request('GET', `${CRD_COLLECTION}/${encodeURIComponent(crdName)}`),
    subscribe(onChange) {
      let stopped = false;
      let handle: { abort(): void } | undefined;
      let timer: NodeJS.Timeout | undefined;
      let failures = 0;
      const reopen = (failed: boolean) => {
        if (stopped) return;
        failures = failed ? failures + 1 : 0;
        const delay = failed ? backoffDelay(failures, initial, max) : 50;
        timer = setTimeout(() => void open(), delay);
        timer.unref?.();
      };
      const open = async () => {
        if (stopped) return;
        let done = false;
        try {
          const h = await client().watch(
            CRD_COLLECTION,
            { fieldSelector: `metadata.name=${crdName}`, timeoutSeconds: opts.watchTimeoutSeconds ?? 300 },
            (type) => {
              if (type === 'ADDED' || type === 'MODIFIED') {
                failures = 0;
                onChange();
              }
            },
            (err) => {
              done = true;
              handle = undefined;
              if (err) opts.onError?.(new Error(`CRD watch: ${errorMessage(err)}`, { cause: err }));
              reopen(Boolean(err));
            },
          );
          if (stopped) h.abort();
          else if (!done) handle = h;
        } catch (err) {
          opts.onError?.(new Error(`CRD watch: ${errorMessage(err)}`, { cause: err }));
          reopen(true);
        }
      };
      void open();
      return () => {
        stopped = true;
        clearTimeout(timer);
        handle?.abort();
        handle = undefined;
      };
    },
  };
}
