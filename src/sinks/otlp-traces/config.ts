/**
 * The `otlp-traces` sink's configuration: the interface, the defaults (one constant feeds the
 * schema and the code), the JSON Schema and the checks the schema cannot express (a URL that is not
 * http(s), a CEL expression that does not compile, a header the sink sets itself), the export URL
 * and the header values the exporter takes from the environment. Pure. No message ever quotes a
 * header's value.
 */
import { celProblem } from '../../cel/index.ts';
import type { JsonSchema } from '../../component.ts';
import { DEFAULT_HTTP_TIMEOUT_MS, type TlsOptions, tlsSchema } from '../util/http.ts';

export interface OtlpTracesSinkConfig {
  /** Base URL of the OTLP/HTTP receiver (`/v1/traces` is appended); default `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  endpoint?: string;
  headers?: Record<string, string>;
  tls?: TlsOptions;
  timeoutMs?: number;
  compression?: 'gzip' | 'none';
  /** OTLP/HTTP body encoding: JSON or protobuf (OpenTelemetry JS's `-http` or `-proto` trace exporter). */
  encoding?: 'json' | 'protobuf';
  serviceName?: string;
  resourceAttributes?: Record<string, string>;
  /** Spans per export request. */
  batchSize?: number;
  /** A trace per generation (a spec change starts a new one, linked to the previous trace). */
  perGeneration?: boolean;
  sampleRatio?: number;
  /** CEL (string) giving the phase of an object; a change of its value starts a phase span. */
  phase?: string;
  /** Phases that end the lifecycle (the root span ends there). */
  terminalPhases?: string[];
  /** CEL (bool): the object is failed — its phase span and the root get error status. */
  failed?: string;
  /** CEL (string): the failure's reason, as the error status message. */
  failureReason?: string;
}

/** Default of every optional setting: read by the schema (`default`) and the sink alike. */
export const OTLP_TRACES_DEFAULTS = Object.freeze({
  timeoutMs: DEFAULT_HTTP_TIMEOUT_MS,
  compression: 'gzip' as const,
  encoding: 'json' as const,
  serviceName: 'crbridge',
  batchSize: 200,
  perGeneration: false,
  sampleRatio: 1,
  phase: 'object.status.phase',
  terminalPhases: Object.freeze(['Completed', 'Succeeded', 'Failed']) as readonly string[],
  failed: "object.status.phase == 'Failed'",
  failureReason: 'object.status.message',
});

const D = OTLP_TRACES_DEFAULTS;
const REF = `\${env:NAME} / \${file:PATH}`;

/** Headers the sink sets itself. */
const RESERVED = new Set(['content-type', 'content-encoding', 'content-length', 'host', 'transfer-encoding']);

export const otlpTracesConfigSchema: JsonSchema = {
  type: 'object',
  properties: {
    endpoint: {
      type: 'string',
      minLength: 1,
      description:
        'Base http(s) URL of the OTLP/HTTP receiver, e.g. http://jaeger:4318 (`/v1/traces` is appended unless the URL ends with it). Default: the OTEL_EXPORTER_OTLP_ENDPOINT environment variable.',
    },
    headers: {
      type: 'object',
      additionalProperties: { type: 'string', description: `Header value; give secrets as ${REF}.` },
      description: 'Extra request headers (e.g. an API key), by name. Values never appear in logs or errors.',
    },
    tls: tlsSchema,
    timeoutMs: {
      type: 'integer',
      minimum: 1,
      default: D.timeoutMs,
      description:
        "Bound of one export, the OpenTelemetry exporter's own retries of 429/502/503/504 and network errors included; an export still failing then is retried by the delivery queue.",
    },
    compression: { enum: ['gzip', 'none'], default: D.compression, description: 'Request body compression.' },
    encoding: {
      enum: ['json', 'protobuf'],
      default: D.encoding,
      description:
        'OTLP/HTTP body: `json` (application/json, @opentelemetry/exporter-trace-otlp-http) or `protobuf` (application/x-protobuf, @opentelemetry/exporter-trace-otlp-proto; about half the bytes before gzip).',
    },
    serviceName: {
      type: 'string',
      minLength: 1,
      default: D.serviceName,
      description: 'The `service.name` resource attribute.',
    },
    resourceAttributes: {
      type: 'object',
      additionalProperties: { type: 'string', description: 'Attribute value.' },
      description: 'More resource attributes (e.g. deployment.environment.name).',
    },
    batchSize: {
      type: 'integer',
      minimum: 1,
      maximum: 10_000,
      default: D.batchSize,
      description: 'Most events whose spans go in one export request.',
    },
    perGeneration: {
      type: 'boolean',
      default: D.perGeneration,
      description:
        "A new trace per metadata.generation, linked to the previous generation's trace (set the pipeline's events.traceContext.perGeneration alike).",
    },
    sampleRatio: {
      type: 'number',
      minimum: 0,
      maximum: 1,
      default: D.sampleRatio,
      description:
        'Head sampling by trace id: the share of lifecycles exported; a sampled lifecycle keeps all its spans (set events.traceContext.sampleRatio alike).',
    },
    phase: {
      type: 'string',
      minLength: 1,
      default: D.phase,
      description:
        'CEL expression (string or null) giving the phase; each new value starts a phase span. An evaluation error (a missing field) means no phase.',
    },
    terminalPhases: {
      type: 'array',
      items: { type: 'string', description: 'A phase value.' },
      default: [...D.terminalPhases],
      description: 'Phases that end the lifecycle: the root span ends when one begins (or at deletion).',
    },
    failed: {
      type: 'string',
      minLength: 1,
      default: D.failed,
      description:
        'CEL expression (bool): the object has failed; its phase span and the root get error status. An evaluation error means not failed.',
    },
    failureReason: {
      type: 'string',
      minLength: 1,
      default: D.failureReason,
      description:
        'CEL expression (string): the error status message of a failed phase; on an evaluation error the phase name is used.',
    },
  },
};

/** The checks the schema cannot express; pointers relative to the sink block. Pure. */
export function checkOtlpTracesConfig(c: OtlpTracesSinkConfig): { pointer: string; message: string }[] {
  const out: { pointer: string; message: string }[] = [];
  if (typeof c.endpoint === 'string') {
    let url: URL | undefined;
    try {
      url = new URL(c.endpoint);
    } catch {
      out.push({ pointer: '/endpoint', message: 'is not a URL: write an absolute http:// or https:// URL' });
    }
    if (url && url.protocol !== 'http:' && url.protocol !== 'https:')
      out.push({ pointer: '/endpoint', message: 'must be an http:// or https:// URL (OTLP/HTTP)' });
  }
  for (const [field, result] of [
    ['phase', 'string'],
    ['failed', 'bool'],
    ['failureReason', 'string'],
  ] as const) {
    const src = c[field];
    if (typeof src !== 'string') continue;
    const p = celProblem(src, result);
    if (p) out.push({ pointer: `/${field}`, message: p });
  }
  for (const name of Object.keys(c.headers ?? {}))
    if (RESERVED.has(name.toLowerCase()))
      out.push({
        pointer: `/headers/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`,
        message: `header ${name} is set by the sink itself: remove it`,
      });
  return out;
}

/** The export URL: `endpoint` (else the environment's) with `/v1/traces`, or undefined when neither is set. */
export function exportUrl(endpoint: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const full = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (endpoint === undefined && full) return full;
  const base = endpoint ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!base) return undefined;
  const trimmed = base.replace(/\/+$/, '');
  return trimmed.endsWith('/v1/traces') ? trimmed : `${trimmed}/v1/traces`;
}

/**
 * The values of the headers the OpenTelemetry exporter adds from the environment
 * (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`: `key=value,…`, values
 * URL-encoded), to be scrubbed from errors like the configured ones.
 */
export function envHeaderValues(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const name of ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS'])
    for (const pair of (env[name] ?? '').split(',')) {
      const at = pair.indexOf('=');
      if (at < 0) continue;
      const raw = pair.slice(at + 1).trim();
      out.push(raw);
      try {
        out.push(decodeURIComponent(raw));
      } catch {
        // not URL-encoded: the raw value is enough
      }
    }
  return out;
}
