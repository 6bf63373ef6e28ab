/**
 * Every config interface agrees with its JSON Schema: the same keys, the same required ones. Each
 * interface gets an exhaustive record of its keys typed `Presence<Config>` (tsc refuses a missing
 * or extra key and a wrong optional/required), which this test compares with the schema at runtime.
 * Every factory of the registry must have one, so a new component cannot skip the check.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import type { JsonSchema } from '../../../src/component.ts';
import type { EventsConfig, ValidationConfig } from '../../../src/config/types.ts';
import { deliveryConfigSchema, type PartialDeliveryConfig, type RetryConfig } from '../../../src/delivery/config.ts';
import { allFactories } from '../../../src/registry.ts';
import type { FileSinkConfig } from '../../../src/sinks/file/index.ts';
import type { KafkaSinkConfig } from '../../../src/sinks/kafka/index.ts';
import type { MetricsSinkConfig } from '../../../src/sinks/metrics/index.ts';
import type { OtlpTracesSinkConfig } from '../../../src/sinks/otlp-traces/index.ts';
import type { SlackSinkConfig } from '../../../src/sinks/slack/index.ts';
import type { StdoutSinkConfig } from '../../../src/sinks/stdout/index.ts';
import type { WebhookSinkConfig } from '../../../src/sinks/webhook/index.ts';
import type { KubernetesSourceConfig } from '../../../src/sources/kubernetes/index.ts';
import type { DedupeStageConfig } from '../../../src/stages/dedupe/index.ts';
import type { EnrichStageConfig } from '../../../src/stages/enrich/index.ts';
import type { FilterStageConfig } from '../../../src/stages/filter/index.ts';
import type { RouteConfig, RouteStageConfig } from '../../../src/stages/route/index.ts';
import type { TransformStageConfig } from '../../../src/stages/transform/index.ts';

/** One entry per key of `T`, saying whether `T` requires it. */
type Presence<T> = { [K in keyof T]-?: Pick<Partial<T>, K> extends Pick<T, K> ? 'optional' : 'required' };

interface ObjectSchema {
  properties?: Record<string, JsonSchema>;
  required?: string[];
}

function assertAgrees(what: string, presence: Record<string, 'optional' | 'required'>, schema: unknown): void {
  const s = schema as ObjectSchema;
  assert.deepEqual(
    Object.keys(s.properties ?? {}).sort(),
    Object.keys(presence).sort(),
    `${what}: the interface's keys differ from the schema's properties`,
  );
  assert.deepEqual(
    [...(s.required ?? [])].sort(),
    Object.entries(presence)
      .filter(([, p]) => p === 'required')
      .map(([k]) => k)
      .sort(),
    `${what}: the interface's required keys differ from the schema's required`,
  );
}

const kubernetes: Presence<KubernetesSourceConfig> = {
  group: 'optional',
  version: 'required',
  resource: 'required',
  namespaces: 'optional',
  labelSelector: 'optional',
  fieldSelector: 'optional',
  pageSize: 'optional',
  watchTimeoutSeconds: 'optional',
  stallTimeoutSeconds: 'optional',
  backoffInitialMs: 'optional',
  backoffMaxMs: 'optional',
  dropFields: 'optional',
  initial: 'optional',
  checkpoint: 'optional',
};
const kubernetesCheckpoint: Presence<NonNullable<KubernetesSourceConfig['checkpoint']>> = {
  backend: 'optional',
  namespace: 'optional',
  name: 'optional',
  flushIntervalMs: 'optional',
};
const kafka: Presence<KafkaSinkConfig> = {
  brokers: 'required',
  topic: 'required',
  clientId: 'optional',
  mode: 'optional',
  tombstones: 'optional',
  thread: 'optional',
  compression: 'optional',
  acks: 'optional',
  idempotent: 'optional',
  autoCreateTopics: 'optional',
  connectionTimeoutMs: 'optional',
  requestTimeoutMs: 'optional',
  maxBatchBytes: 'optional',
  topicExpression: 'optional',
  tls: 'optional',
  sasl: 'optional',
};
const file: Presence<FileSinkConfig> = { path: 'required', fsync: 'optional' };
// StdoutSinkConfig is Record<string, never>: it has no keys, and neither may the schema
const stdout: Presence<StdoutSinkConfig> = {};
const webhook: Presence<WebhookSinkConfig> = {
  url: 'required',
  mode: 'optional',
  batchSize: 'optional',
  signing: 'optional',
  auth: 'optional',
  headers: 'optional',
  tls: 'optional',
  timeoutMs: 'optional',
  abuseProtection: 'optional',
};
const slack: Presence<SlackSinkConfig> = {
  webhookUrl: 'optional',
  token: 'optional',
  channel: 'optional',
  apiUrl: 'optional',
  broadcast: 'optional',
  failurePhases: 'optional',
  phaseField: 'optional',
  linkTemplate: 'optional',
  templates: 'optional',
  digestThreshold: 'optional',
  rate: 'optional',
  threadTtlHours: 'optional',
  configErrorRetryMs: 'optional',
  timeoutMs: 'optional',
  tls: 'optional',
};
const metricsSinkConfig: Presence<MetricsSinkConfig> = { phase: 'optional', maxSeries: 'optional' };
const otlpTraces: Presence<OtlpTracesSinkConfig> = {
  endpoint: 'optional',
  headers: 'optional',
  tls: 'optional',
  timeoutMs: 'optional',
  compression: 'optional',
  encoding: 'optional',
  serviceName: 'optional',
  resourceAttributes: 'optional',
  batchSize: 'optional',
  perGeneration: 'optional',
  sampleRatio: 'optional',
  phase: 'optional',
  terminalPhases: 'optional',
  failed: 'optional',
  failureReason: 'optional',
};
const filter: Presence<FilterStageConfig> = { expression: 'required', onError: 'optional' };
const enrich: Presence<EnrichStageConfig> = { attributes: 'required', onError: 'optional' };
const transform: Presence<TransformStageConfig> = {
  keep: 'optional',
  drop: 'optional',
  rename: 'optional',
  set: 'optional',
};
const dedupe: Presence<DedupeStageConfig> = { paths: 'optional', ignore: 'optional' };
const route: Presence<RouteStageConfig> = {
  routes: 'required',
  default: 'optional',
  mode: 'optional',
  onError: 'optional',
};
const routeEntry: Presence<RouteConfig> = { when: 'required', sinks: 'required', name: 'optional' };

/** Keyed `<kind>:<type>`: one entry per factory of the registry. */
const factoryConfigs: Record<string, Record<string, 'optional' | 'required'>> = {
  'source:kubernetes': kubernetes,
  'sink:kafka': kafka,
  'sink:file': file,
  'sink:webhook': webhook,
  'sink:slack': slack,
  'sink:otlp-traces': otlpTraces,
  'sink:stdout': stdout,
  'sink:metrics': metricsSinkConfig,
  'stage:filter': filter,
  'stage:enrich': enrich,
  'stage:transform': transform,
  'stage:dedupe': dedupe,
  'stage:route': route,
};

test("every factory's config interface has the keys and required fields of its configSchema", () => {
  const factories = allFactories();
  assert.deepEqual(
    factories.map((f) => `${f.kind}:${f.type}`).sort(),
    Object.keys(factoryConfigs).sort(),
    'every factory of the registry needs a Presence record here',
  );
  for (const f of factories) {
    const presence = factoryConfigs[`${f.kind}:${f.type}`];
    assert.ok(presence);
    assertAgrees(`${f.kind} ${f.type}`, presence, f.configSchema);
  }
  const k8s = factories.find((f) => f.type === 'kubernetes')?.configSchema as ObjectSchema;
  assertAgrees('kubernetes checkpoint', kubernetesCheckpoint, k8s.properties?.checkpoint);
  const routes = factories.find((f) => f.type === 'route')?.configSchema as ObjectSchema;
  assertAgrees('route routes[]', routeEntry, (routes.properties?.routes as { items?: unknown } | undefined)?.items);
});

test('the delivery block and the pipeline-level blocks agree with their schemas', () => {
  const delivery: Presence<PartialDeliveryConfig> = {
    queueCapacity: 'optional',
    queueBytes: 'optional',
    maxBatch: 'optional',
    concurrency: 'optional',
    outageAlertMs: 'optional',
    retry: 'optional',
    outbox: 'optional',
  };
  // every retry field has a default, so a written block may omit any of them
  const retry: Presence<Partial<RetryConfig>> = {
    initialIntervalMs: 'optional',
    maxIntervalMs: 'optional',
    multiplier: 'optional',
    randomizationFactor: 'optional',
    maxElapsedMs: 'optional',
    maxRetryAfterMs: 'optional',
  };
  assertAgrees('delivery', delivery, deliveryConfigSchema);
  assertAgrees('delivery.retry', retry, (deliveryConfigSchema as ObjectSchema).properties?.retry);
  // the resolved retry policy has every field the schema has
  const resolvedRetry: Presence<RetryConfig> = {
    initialIntervalMs: 'required',
    maxIntervalMs: 'required',
    multiplier: 'required',
    randomizationFactor: 'required',
    maxElapsedMs: 'required',
    maxRetryAfterMs: 'required',
  };
  assert.deepEqual(Object.keys(resolvedRetry).sort(), Object.keys(retry).sort());

  const pipeline = currentSchema() as ObjectSchema;
  const spec = (pipeline.properties?.spec as ObjectSchema | undefined)?.properties ?? {};
  const events: Presence<EventsConfig> = {
    typePrefix: 'optional',
    phasePath: 'optional',
    redact: 'optional',
    maxBytes: 'optional',
    traceContext: 'optional',
  };
  const validation: Presence<ValidationConfig> = { crdSchema: 'optional' };
  assertAgrees('spec.events', events, spec.events);
  assertAgrees('spec.validation', validation, spec.validation);
});
