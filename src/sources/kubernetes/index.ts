/**
 * The `kubernetes` source factory: watches any resource (group/version/plural) in all namespaces
 * or a list of them, with label and field selectors, and hands on its changes gap-free across
 * restarts (see `source.ts`). Pipelines with the same watch share one source (`shareKey`).
 */
import type { SourceFactory } from '../../component.ts';
import { errorMessage } from '../../errors.ts';
import { kubernetesObjectSchema } from './crd-schema.ts';
import { parseFieldSelector, parseLabelSelector } from './selector.ts';
import { KubernetesSource, type KubernetesSourceConfig, sharedSettings, sourceKey } from './source.ts';

export type { KubernetesSourceConfig } from './source.ts';
export { KubernetesSource, sourceKey } from './source.ts';

export const kubernetesSourceSchema = {
  type: 'object',
  description: 'Which Kubernetes resource to watch, and how.',
  additionalProperties: false,
  required: ['version', 'resource'],
  properties: {
    group: {
      type: 'string',
      default: '',
      description: 'API group of the resource, e.g. `example.com`; empty for the core group.',
    },
    version: { type: 'string', minLength: 1, description: 'API version to watch, e.g. `v1` (any served version).' },
    resource: {
      type: 'string',
      minLength: 1,
      pattern: '^[a-z0-9.-]+$',
      description: 'Plural resource name as in the API path, e.g. `backups`.',
    },
    namespaces: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      uniqueItems: true,
      default: [],
      description:
        'Namespaces to watch (one LIST+WATCH each); empty means all namespaces. Ignored for cluster-scoped resources.',
    },
    labelSelector: { type: 'string', description: 'Kubernetes label selector, e.g. `tier=prod,app!=test`.' },
    fieldSelector: { type: 'string', description: 'Kubernetes field selector, e.g. `metadata.name=orders`.' },
    pageSize: {
      type: 'integer',
      minimum: 1,
      maximum: 10000,
      default: 500,
      description: 'Objects per LIST page (`limit`).',
    },
    watchTimeoutSeconds: {
      type: 'integer',
      minimum: 10,
      default: 300,
      description:
        'Server-side timeout of one WATCH request; the stream is then reopened from the last resourceVersion.',
    },
    stallTimeoutSeconds: {
      type: 'number',
      exclusiveMinimum: 0,
      default: 150,
      description:
        'Restart a watch stream that delivered no event and no bookmark for this long (a silently stalled connection).',
    },
    backoffInitialMs: {
      type: 'integer',
      minimum: 1,
      default: 1000,
      description: 'First retry delay after a LIST/WATCH error; doubles per attempt with jitter.',
    },
    backoffMaxMs: { type: 'integer', minimum: 1, default: 30000, description: 'Largest retry delay.' },
    dropFields: {
      type: 'array',
      items: { type: 'string', pattern: '^/' },
      default: ['/metadata/managedFields'],
      description: 'JSON pointers of fields removed from objects before caching, checkpointing and emitting.',
    },
    initial: {
      type: 'string',
      enum: ['emit', 'skip'],
      default: 'emit',
      description:
        "What this pipeline gets of the objects that exist when it first starts (no checkpoint, or one that does not know this pipeline's sinks yet): `emit` an added event per existing object, or `skip` them. Per pipeline, also when several share one watch.",
    },
    checkpoint: {
      type: 'object',
      additionalProperties: false,
      description: 'Where the per-object checkpoint that makes restarts gap-free is kept.',
      properties: {
        backend: {
          type: 'string',
          enum: ['file', 'kubernetes'],
          default: 'file',
          description: '`file`: a SQLite database in --state-dir; `kubernetes`: ConfigMaps (no volume needed).',
        },
        namespace: {
          type: 'string',
          default: 'default',
          description: 'Namespace of the checkpoint ConfigMaps (backend `kubernetes`).',
        },
        name: {
          type: 'string',
          pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
          maxLength: 200,
          default: 'crbridge-checkpoint',
          description: 'Name prefix of the checkpoint ConfigMaps (backend `kubernetes`).',
        },
        flushIntervalMs: {
          type: 'integer',
          minimum: 10,
          default: 500,
          description: 'How often acknowledged changes are written to the checkpoint (batched).',
        },
      },
    },
  },
} as const;

export const kubernetesSource: SourceFactory<KubernetesSourceConfig> = {
  kind: 'source',
  type: 'kubernetes',
  description:
    'Watches a Kubernetes resource (any Custom Resource or built-in type) and hands on every change at least once, in order per object, across restarts, relists and outages (a duplicate carries the same event id).',
  configSchema: kubernetesSourceSchema,
  shareKey: sourceKey,
  sharedSettings,
  check(config) {
    // the API server would refuse a malformed selector with a 400 on every retry: say it up front
    const out: { pointer: string; message: string }[] = [];
    for (const [field, parse, example] of [
      ['labelSelector', parseLabelSelector, 'tier=prod,app!=test, env in (a,b), !legacy'],
      ['fieldSelector', parseFieldSelector, 'metadata.name=orders,metadata.namespace!=kube-system'],
    ] as const) {
      const value = config[field];
      if (!value) continue;
      try {
        parse(value);
      } catch (err) {
        out.push({ pointer: `/${field}`, message: `not a valid ${field}: ${errorMessage(err)} (e.g. ${example})` });
      }
    }
    return out;
  },
  create: (config, ctx) => new KubernetesSource(config, ctx),
  // level 3: the CRD's openAPIV3Schema, read and followed by a reflector of the CRD (crd-schema.ts)
  objectSchema: (config, ctx) => kubernetesObjectSchema(config, ctx),
};
