/**
 * The `kubernetes` source factory: watches any resource (group/version/plural) in all namespaces
 * or a list of them, with label and field selectors, and hands on its changes gap-free across
 * restarts (see `source.ts`). Pipelines with the same watch share one source (`shareKey`).
 */
import type { Permission, SourceFactory } from '../../component.ts';
import { errorMessage } from '../../errors.ts';
import { crdNameFor } from '../../events/crd-schema.ts';
import { kubernetesObjectSchema } from './crd-schema.ts';
import { KUBERNETES_SOURCE_DEFAULTS } from './defaults.ts';
import { parseFieldSelector, parseLabelSelector } from './selector.ts';
import { KubernetesSource, type KubernetesSourceConfig, sharedSettings, sourceKey } from './source.ts';

export type { KubernetesSourceConfig } from './source.ts';
export { KubernetesSource, sourceKey } from './source.ts';

const D = KUBERNETES_SOURCE_DEFAULTS;

export const kubernetesSourceSchema = {
  type: 'object',
  description: 'Which Kubernetes resource to watch, and how.',
  additionalProperties: false,
  required: ['version', 'resource'],
  properties: {
    group: {
      type: 'string',
      default: D.group,
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
      default: D.namespaces,
      description:
        'Namespaces to watch (one LIST+WATCH each); empty means all namespaces. Ignored for cluster-scoped resources.',
    },
    labelSelector: { type: 'string', description: 'Kubernetes label selector, e.g. `tier=prod,app!=test`.' },
    fieldSelector: { type: 'string', description: 'Kubernetes field selector, e.g. `metadata.name=orders`.' },
    pageSize: {
      type: 'integer',
      minimum: 1,
      maximum: 10000,
      default: D.pageSize,
      description: 'Objects per LIST page (`limit`).',
    },
    watchTimeoutSeconds: {
      type: 'integer',
      minimum: 10,
      default: D.watchTimeoutSeconds,
      description:
        'Server-side timeout of one WATCH request; the stream is then reopened from the last resourceVersion.',
    },
    stallTimeoutSeconds: {
      type: 'number',
      exclusiveMinimum: 0,
      default: D.stallTimeoutSeconds,
      description:
        'Restart a watch stream that delivered no event and no bookmark for this long (a silently stalled connection).',
    },
    backoffInitialMs: {
      type: 'integer',
      minimum: 1,
      default: D.backoffInitialMs,
      description:
        'First retry delay in milliseconds after a LIST/WATCH error; doubles per attempt with jitter, up to backoffMaxMs.',
    },
    backoffMaxMs: {
      type: 'integer',
      minimum: 1,
      default: D.backoffMaxMs,
      description: 'Largest retry delay in milliseconds; at least backoffInitialMs.',
    },
    dropFields: {
      type: 'array',
      items: { type: 'string', pattern: '^/' },
      default: D.dropFields,
      description: 'JSON pointers of fields removed from objects before caching, checkpointing and emitting.',
    },
    initial: {
      type: 'string',
      enum: ['emit', 'skip'],
      default: D.initial,
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
          default: D.checkpoint.backend,
          description: '`file`: a SQLite database in --state-dir; `kubernetes`: ConfigMaps (no volume needed).',
        },
        namespace: {
          type: 'string',
          default: D.checkpoint.namespace,
          description: 'Namespace of the checkpoint ConfigMaps (backend `kubernetes`).',
        },
        name: {
          type: 'string',
          pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
          maxLength: 200,
          default: D.checkpoint.name,
          description: 'Name prefix of the checkpoint ConfigMaps (backend `kubernetes`).',
        },
        flushIntervalMs: {
          type: 'integer',
          minimum: 10,
          default: D.checkpoint.flushIntervalMs,
          description: 'How often acknowledged changes are written to the checkpoint (batched).',
        },
      },
    },
  },
} as const;

/**
 * Combinations of settings the schema cannot refuse but that would misbehave silently. `config` is
 * the block as written (defaults not applied): a message says which value is a default and points
 * at the field the user wrote. Fields of the wrong type are left to the schema's errors.
 */
function crossFieldProblems(config: KubernetesSourceConfig): { pointer: string; message: string }[] {
  const out: { pointer: string; message: string }[] = [];
  const num = (v: unknown, fallback: number) =>
    v === undefined ? fallback : typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  const note = (v: unknown) => (v === undefined ? ' by default' : '');
  const initial = num(config.backoffInitialMs, D.backoffInitialMs);
  const max = num(config.backoffMaxMs, D.backoffMaxMs);
  if (initial !== undefined && max !== undefined && max < initial)
    out.push({
      pointer: config.backoffMaxMs !== undefined ? '/backoffMaxMs' : '/backoffInitialMs',
      message: `backoffMaxMs (${max}${note(config.backoffMaxMs)}) is less than backoffInitialMs (${initial}${note(config.backoffInitialMs)}): every retry delay would be cut to ${max} ms; raise backoffMaxMs to at least ${initial} or lower backoffInitialMs`,
    });
  const cp = config.checkpoint;
  if (cp && typeof cp === 'object' && (cp.backend ?? D.checkpoint.backend) !== 'kubernetes')
    for (const field of ['namespace', 'name'] as const)
      if (cp[field] !== undefined)
        out.push({
          pointer: `/checkpoint/${field}`,
          message: `checkpoint.${field} applies only to checkpoint.backend kubernetes, but the backend is ${JSON.stringify(cp.backend ?? D.checkpoint.backend)}${note(cp.backend)} (the checkpoint is a file in --state-dir); set checkpoint.backend: kubernetes to keep it in ConfigMaps, or remove checkpoint.${field}`,
        });
  return out;
}

/**
 * What the source reads and writes: get/list/watch on the watched resource in each listed
 * namespace (else in all), and with the `kubernetes` checkpoint backend get/create/update on
 * ConfigMaps in the checkpoint namespace (the store never lists or deletes; the names cannot be
 * listed ahead, as the bucket count grows). Discovery (`GET /apis/<group>/<version>`) is granted to
 * every authenticated user by the default ClusterRoleBinding `system:discovery`.
 */
export function kubernetesSourcePermissions(config: KubernetesSourceConfig): Permission[] {
  const group = config.group ?? D.group;
  const what = `${config.resource}${group ? `.${group}` : ''}`;
  const namespaces = [...new Set(config.namespaces ?? D.namespaces)].sort();
  const out: Permission[] = (namespaces.length > 0 ? namespaces : [null]).map((namespace) => ({
    apiGroup: group,
    resource: config.resource,
    verbs: ['get', 'list', 'watch'],
    namespace,
    reason: `watch ${what}`,
  }));
  const cp = config.checkpoint ?? {};
  if ((cp.backend ?? D.checkpoint.backend) === 'kubernetes')
    out.push({
      apiGroup: '',
      resource: 'configmaps',
      verbs: ['get', 'create', 'update'],
      namespace: cp.namespace ?? D.checkpoint.namespace,
      reason: `checkpoint ConfigMaps ${cp.name ?? D.checkpoint.name}-* of ${what}`,
    });
  return out;
}

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
    out.push(...crossFieldProblems(config));
    return out;
  },
  create: (config, ctx) => new KubernetesSource(config, ctx),
  // a standby lists and watches but hands on nothing until elected (source.ts)
  warmStandby: true,
  localState: (config) =>
    (config.checkpoint?.backend ?? D.checkpoint.backend) === 'file'
      ? {
          pointer: '/checkpoint/backend',
          message: `the checkpoint is a file in --state-dir (checkpoint.backend ${config.checkpoint?.backend === undefined ? '"file" by default' : '"file"'}), which the next leader does not see`,
        }
      : undefined,
  // level 3: the CRD's openAPIV3Schema, read and followed by a reflector of the CRD (crd-schema.ts)
  objectSchema: (config, ctx) => kubernetesObjectSchema(config, ctx),
  permissions: kubernetesSourcePermissions,
  // the CRD reflector lists and watches with fieldSelector metadata.name=<crd>: grantable by name
  objectSchemaPermissions: (config) => [
    {
      apiGroup: 'apiextensions.k8s.io',
      resource: 'customresourcedefinitions',
      verbs: ['get', 'list', 'watch'],
      namespace: null,
      resourceNames: [crdNameFor({ resource: config.resource, group: config.group ?? D.group })],
      reason: 'validation.crdSchema: read the CRD schema',
    },
  ],
};
