/**
 * Builds the pipeline JSON Schema from the registry: the envelope here plus each component
 * factory's configSchema. The same schema validates pipeline files, is published as
 * `schemas/pipeline.schema.json`, and feeds the docs.
 */
import type { AnyFactory, JsonSchema } from '../component.ts';
import { DEFAULT_MAX_BYTES, DEFAULT_PHASE_PATH, DEFAULT_TYPE_PREFIX } from '../events/build.ts';
import { PIPELINE_API_VERSION } from './types.ts';

export const PIPELINE_SCHEMA_ID = 'https://crbridge.io/schemas/pipeline.schema.json';

/** Extra fields the runtime adds to every sink config. */
export function commonSinkProperties(deliverySchema: JsonSchema): Record<string, JsonSchema> {
  return {
    name: {
      type: 'string',
      pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
      maxLength: 63,
      description:
        'Name of the sink, unique within the pipeline (lower-case letters, digits and dashes). Used in metrics and logs.',
    },
    type: { type: 'string', description: 'Which sink to use.' },
    delivery: deliverySchema,
  };
}

const eventsSchema: JsonSchema = {
  type: 'object',
  description: 'How changes become CloudEvents for this pipeline.',
  additionalProperties: false,
  properties: {
    typePrefix: {
      type: 'string',
      description: 'Prefix of the CloudEvents `type` attribute.',
      default: DEFAULT_TYPE_PREFIX,
    },
    phasePath: {
      type: 'string',
      description: 'Dotted path of the phase field whose changes produce a `transition` block.',
      default: DEFAULT_PHASE_PATH,
    },
    redact: {
      type: 'array',
      description: 'JSON pointers into the object whose values are masked before the event leaves.',
      items: { type: 'string', pattern: '^(/.*)?$', description: 'An RFC 6901 JSON pointer, e.g. /spec/password.' },
    },
    maxBytes: {
      type: 'integer',
      minimum: 1024,
      description: 'Largest serialized event; bigger ones drop oldObject, then object (keeping the patch).',
      default: DEFAULT_MAX_BYTES,
    },
    traceContext: {
      type: 'object',
      additionalProperties: false,
      description:
        "The CloudEvents distributed-tracing extension: every event gets a `traceparent` pointing at the root span of its object's lifecycle trace (the trace the otlp-traces sink exports; give both the same perGeneration and sampleRatio). See docs/traces.md.",
      properties: {
        enabled: {
          type: 'boolean',
          default: true,
          description: 'Set `traceparent` on every event (on by default; false leaves the extension out).',
        },
        perGeneration: {
          type: 'boolean',
          default: false,
          description: 'A new trace per metadata.generation (a spec change starts a new lifecycle trace).',
        },
        sampleRatio: {
          type: 'number',
          minimum: 0,
          maximum: 1,
          default: 1,
          description: 'Share of lifecycles (by trace id) marked sampled in the traceparent flags.',
        },
      },
    },
  },
};

const validationSchema: JsonSchema = {
  type: 'object',
  description:
    "Checks every event passes before any sink sees it. The envelope (CloudEvents 1.0) and the data (crbridge's published schema) are always checked; failures go to the dead-letter destination (spec.deadLetter).",
  additionalProperties: false,
  properties: {
    crdSchema: {
      type: 'boolean',
      default: false,
      description:
        "Also check each event's object against the openAPIV3Schema of the watched resource's CRD (for its version), read from the cluster at start and recompiled whenever the CRD changes. Needs get and watch on customresourcedefinitions; only for Custom Resources (a non-empty source group).",
    },
  },
};

function discriminated(
  kind: string,
  factories: readonly AnyFactory[],
  common: Record<string, JsonSchema>,
  opts: { nameRequired?: boolean } = {},
): JsonSchema {
  const types = factories.map((f) => f.type);
  const typeOptional = kind === 'source';
  // sinks need a name (metrics, dead letters, delivery state); a stage's is optional, and the
  // dead-letter sink has a fixed one (`<pipeline>/dead-letter`)
  const nameRequired = opts.nameRequired ?? kind === 'sink';
  if (factories.length === 0)
    return { description: `No ${kind} types exist in this build; leave this list empty.`, not: {} };
  return {
    type: 'object',
    description: typeOptional
      ? `Where changes come from; \`type\` selects which (${types.join(', ')}; default ${types[0]}).`
      : `A ${kind}; \`type\` selects which (${types.join(', ')}).`,
    required: typeOptional ? [] : ['type', ...(nameRequired ? ['name'] : [])],
    properties: { ...common, type: { type: 'string', enum: types, description: `Which ${kind} to use.` } },
    ...(factories.length > 0 && {
      allOf: factories.map((f, i) => {
        const own = f.configSchema as { properties?: Record<string, unknown>; required?: string[] };
        const selected = { properties: { type: { const: f.type } }, required: ['type'] };
        return {
          // a source block may omit `type`: it then means the first (default) source
          if: typeOptional && i === 0 ? { anyOf: [{ not: { required: ['type'] } }, selected] } : selected,
          then: {
            properties: { ...common, type: { const: f.type, description: f.description }, ...(own.properties ?? {}) },
            required: [...(own.required ?? []), ...(nameRequired ? ['name'] : [])],
            additionalProperties: false,
          },
        };
      }),
    }),
  };
}

/** The JSON Schema of one pipeline document. */
export function pipelineSchema(factories: readonly AnyFactory[], deliverySchema: JsonSchema): JsonSchema {
  const sources = factories.filter((f) => f.kind === 'source');
  const stages = factories.filter((f) => f.kind === 'stage');
  const sinks = factories.filter((f) => f.kind === 'sink');
  const sourceSchema = discriminated('source', sources, {});
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: PIPELINE_SCHEMA_ID,
    title: 'crbridge Pipeline',
    description: 'One crbridge pipeline: a source of Custom Resource changes, stages, and sinks.',
    type: 'object',
    additionalProperties: false,
    required: ['apiVersion', 'kind', 'metadata', 'spec'],
    properties: {
      apiVersion: { const: PIPELINE_API_VERSION, description: `Always ${PIPELINE_API_VERSION}.` },
      kind: { const: 'Pipeline', description: 'Always Pipeline.' },
      metadata: {
        type: 'object',
        description: 'Identity of the pipeline.',
        required: ['name'],
        additionalProperties: false,
        properties: {
          name: {
            type: 'string',
            pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
            maxLength: 63,
            description: 'Unique pipeline name (DNS label); part of metric labels and state keys.',
          },
          labels: {
            type: 'object',
            description: 'Free-form labels.',
            additionalProperties: { type: 'string', description: 'A label value.' },
          },
        },
      },
      spec: {
        type: 'object',
        description: 'What the pipeline watches and where its events go.',
        required: ['source', 'sinks'],
        additionalProperties: false,
        properties: {
          source: sourceSchema,
          stages: {
            type: 'array',
            description: 'Stages applied in order to every event (filter, enrich, transform, route).',
            default: [],
            items: discriminated('stage', stages, {
              name: { type: 'string', description: 'Optional name of the stage, for metrics and logs.' },
            }),
          },
          sinks: {
            type: 'array',
            minItems: 1,
            description: 'Where events are delivered; each sink has its own queue and retries.',
            items: discriminated('sink', sinks, commonSinkProperties(deliverySchema)),
          },
          events: eventsSchema,
          validation: validationSchema,
          deadLetter: {
            type: 'object',
            description:
              'Where events that cannot be delivered or fail validation are kept: a JSON-lines file (`path`) or any sink (`sink`), not both. While the destination cannot take a dead letter it is retried with backoff and the event stays unsettled (never lost).',
            additionalProperties: false,
            properties: {
              path: {
                type: 'string',
                description:
                  'JSON-lines file for dead letters (one DeadLetterEntry per line); default <state-dir>/dead-letter/<pipeline>.jsonl.',
              },
              sink: {
                ...discriminated(
                  'sink',
                  sinks,
                  { type: { type: 'string', description: 'Which sink to use.' } },
                  { nameRequired: false },
                ),
                description: `A sink that receives each dead letter as a CloudEvent of its own (type io.crbridge.deadletter, id "<event id>.dead.<pipeline>/<sink>", data: the event, the errors, the attempt count, the component it failed for, the code and the time). \`type\` selects the sink (${sinks.map((f) => f.type).join(', ')}); the other fields are that sink's own config (no name or delivery block). Its metrics and logs are those of the component <pipeline>/dead-letter.`,
              },
            },
          },
        },
      },
    },
  };
}
