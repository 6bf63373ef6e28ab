/**
 * The component model: every source, stage and sink is a plain factory
 * `{ kind, type, description, configSchema, create(config, ctx) }` listed in `src/registry.ts`.
 * This file holds those contracts and the lifecycle and delivery-result types they share.
 */

import type { Leadership } from './election.ts';
import type { CloudEvent } from './events/cloudevent.ts';
import type { Delta, KubeObject } from './events/delta.ts';
import type { StateStore } from './state/store.ts';
import type { Logger } from './telemetry/logger.ts';
import type { Metrics } from './telemetry/metrics.ts';

/** A JSON Schema (draft 2020-12) object; every property must carry a `description`. */
export type JsonSchema = Record<string, unknown>;

/**
 * The lifecycle every component follows.
 *
 * Ordering: the runtime starts sinks before stages before sources and shuts down in the reverse
 * order (sources first, so nothing new arrives while sinks drain).
 */
export interface Lifecycle {
  /**
   * Begins work and returns quickly (it must not wait for remote systems to become reachable:
   * connection attempts continue in the background with backoff). `signal` aborts at shutdown.
   * Called once.
   */
  start(signal: AbortSignal): Promise<void>;
  /**
   * Stops taking new work and drains what is in flight until `deadline` (epoch milliseconds).
   * Idempotent: a second call returns the same promise as the first.
   */
  shutdown(deadline: number): Promise<void>;
}

/** What every factory receives besides its own config. */
export interface ComponentContext {
  /** `<pipeline>/<component name>`, used as the `component` label of shared metrics. */
  id: string;
  pipeline: string;
  logger: Logger;
  metrics: Metrics;
  /** Folder for local state (checkpoints, dead letters); `--state-dir`. */
  stateDir: string;
  /** Logical cluster name (`--cluster-name`), used in event `source` and extensions. */
  clusterName: string;
  /**
   * A per-process memo: returns the one instance for `key`, built by `make` on first use (never
   * when the context is built), so components that need the same thing (a Kubernetes client,
   * credentials loaded once) share it. A `make` that throws caches nothing: the next call tries
   * again. Keys are namespaced by the component type (`kubernetes:client`). Absent (a context
   * built by hand in a test): build your own instance.
   */
  shared?<T>(key: string, make: () => T): T;
  /**
   * The process's connection settings from the command line, by name (`kubeconfig`: the
   * `--kubeconfig` file), for the components that connect somewhere; undefined when not given.
   */
  settings?: Readonly<Record<string, string | undefined>>;
  /**
   * Opens this component's durable store `name` (Slack threads, open trace spans): a file under
   * `stateDir` by default, or the backend the process is configured with, so the state survives a
   * restart and a leader change. Call `load` before use. Absent (a context built by hand in a
   * test): keep the state in memory or build a `FileStateStore` yourself.
   */
  state?(name: string): StateStore;
}

export interface ComponentFactory<
  Config,
  Instance,
  Kind extends 'source' | 'stage' | 'sink',
  Ctx extends ComponentContext = ComponentContext,
> {
  kind: Kind;
  /** The `type:` value that selects this component in a pipeline file. */
  type: string;
  /** One sentence for the generated docs. */
  description: string;
  /** JSON Schema of the component's config block; the single source of validation and docs. */
  configSchema: JsonSchema;
  /**
   * Checks the schema cannot express (e.g. compiling an expression), run by `crbridge validate`
   * after the schema check on every block of this type. Pure: no I/O. Pointers are relative to
   * the component's block (`/expression`); messages say what to do. `offset`, for a problem inside
   * a string value (a template placeholder), is its 0-based character index in that string, so
   * `crbridge validate` names the exact line and column.
   */
  check?(config: Config): { pointer: string; message: string; offset?: number }[];
  /**
   * The Kubernetes API access this component needs with `config` (defaults not applied: the block
   * as written, after `${env:...}` references are resolved), for `crbridge rbac` and the Helm
   * chart's least-privilege Role/ClusterRole. Pure: no I/O. Absent or empty: it reads nothing from
   * the cluster. Every request the component makes must be covered, and nothing more: the
   * real-stack test runs crbridge with exactly these grants.
   */
  permissions?(config: Config): Permission[];
  /** Builds the component from validated config. Must not perform I/O; `start` does. */
  create(config: Config, ctx: Ctx): Instance;
}

/**
 * One grant of Kubernetes API access (an RBAC rule) a component or the process needs. Rules of
 * the same namespace, group, resource and names are merged (their verbs united) by `src/rbac.ts`.
 */
export interface Permission {
  /** API group; "" for the core group. */
  apiGroup: string;
  /** Plural resource name, e.g. `backups`, `configmaps`, `leases`. */
  resource: string;
  /** RBAC verbs, e.g. `get`, `list`, `watch`, `create`, `update`, `delete`. */
  verbs: readonly string[];
  /** Where: null for all namespaces or a cluster-scoped resource (a ClusterRole), else a Role in this namespace. */
  namespace: string | null;
  /**
   * Restricts the rule to these object names. Only for verbs the API server authorizes by name:
   * get/update/patch/delete, and list/watch when the request has `fieldSelector=metadata.name=<name>`
   * — never create (the name is not known at authorization time).
   */
  resourceNames?: readonly string[];
  /** Why it is needed, one phrase (shown as a comment in the printed YAML). */
  reason: string;
}

// ---------------------------------------------------------------------------------------------
// Sources

/**
 * Receives the deltas of a source, in order per object. `push` resolves when the delta has been
 * accepted (applies back-pressure); the returned `settled` resolves when every destination has
 * acknowledged it, durably stored it or dead-lettered it — only then may a checkpoint advance past
 * it — and rejects when that can no longer happen in this process (shutdown): the checkpoint then
 * stays before it and a restart hands it on again.
 *
 * `signal` aborts a push still waiting for room: it then rejects with the signal's reason and the
 * delta counts as not handed on (the source forgets it and re-reads it later).
 */
export interface DeltaReceiver {
  push(delta: Delta, signal?: AbortSignal): Promise<{ settled: Promise<void> }>;
}

/**
 * What a component says about itself to the probes (`/readyz`, `/healthz`; docs/probes.md). A
 * snapshot of the current state, cheap to compute (called on every probe), never "once true".
 */
export interface ComponentStatus {
  /**
   * Doing its job now: for a source, every scope has a current LIST and a running WATCH (or is
   * within a short reconnect). False while a watched resource cannot be read (forbidden, not
   * served, unreachable), before the initial list is handed on, and during a long reconnect.
   */
  ready: boolean;
  /**
   * Not stuck: false only when the component has made no progress for far longer than its own
   * watchdogs allow, i.e. when only a restart can help. A failure that retrying may clear (a 403,
   * a missing CRD, a sink that is down) leaves it live.
   */
  live: boolean;
  /**
   * One line per cause of `ready` or `live` being false, naming what (resource, namespace) and why
   * and, where known, what to do; empty when both are true.
   */
  reasons: string[];
}

export interface Source extends Lifecycle {
  /** True once the initial list (and checkpoint catch-up) has been handed on. */
  readonly synced: boolean;
  /** The current state for the probes; see {@link ComponentStatus}. */
  status(): ComponentStatus;
}

// ---------------------------------------------------------------------------------------------
// Stages

/** A stage maps one event to zero or more events (filter drops, route annotates, ...). Pure and synchronous where possible. */
export interface Stage {
  process(event: CloudEvent): CloudEvent[] | Promise<CloudEvent[]>;
}

/**
 * The annotation a stage puts on an event to name the pipeline's sinks it goes to (by sink
 * `name`); an event without it goes to every sink. The pipeline removes it before any sink or
 * validator sees the event, delivers the event to those sinks only and counts it as settled for
 * the others, so an event routed away never holds back another sink's checkpoint. Later stages
 * keep it (it is an own enumerable symbol property: `{ ...event }` copies it, JSON drops it).
 */
export const DESTINATIONS: unique symbol = Symbol('crbridge.destinations');

/**
 * `event` (a shallow copy) going to `sinks` only; an event already limited to some sinks (an
 * earlier routing stage) goes to those of `sinks` it was already going to.
 */
export function withDestinations(event: CloudEvent, sinks: readonly string[]): CloudEvent {
  const before = destinationsOf(event);
  const names = before ? sinks.filter((s) => before.includes(s)) : [...new Set(sinks)];
  return { ...event, [DESTINATIONS]: Object.freeze(names) };
}

/** The sinks a stage limited `event` to, or undefined for all of them. */
export function destinationsOf(event: CloudEvent): readonly string[] | undefined {
  return (event as { [DESTINATIONS]?: readonly string[] })[DESTINATIONS];
}

/** `event` without its {@link DESTINATIONS} annotation (the same object when it has none). */
export function withoutDestinations(event: CloudEvent): CloudEvent {
  if (!Object.hasOwn(event, DESTINATIONS)) return event;
  const { [DESTINATIONS]: _, ...rest } = event as CloudEvent & { [DESTINATIONS]?: unknown };
  return rest as CloudEvent;
}

// ---------------------------------------------------------------------------------------------
// Sinks and delivery

/** The outcome of delivering one event. */
export type DeliveryResult =
  | { status: 'ok' }
  | { status: 'retryable'; error: string; retryAfterMs?: number }
  | { status: 'permanent'; error: string };

/** An event on its way to one sink, with the bytes-independent fields the sink needs. */
export interface OutboundEvent {
  event: CloudEvent;
  /** Sequence number within the sink's queue; strictly increasing. */
  seq: number;
  attempts: number;
}

/**
 * A sink only delivers. Queueing, batching, concurrency, retry with backoff, Retry-After and dead
 * letters live once in `src/delivery`.
 *
 * Ordering: `send` may be called concurrently, up to the queue's `concurrency` (default
 * `defaultConcurrency`, never above `maxConcurrency`), but never with two events of one object in
 * flight at once: an object's events (same `partitionkey`, else `k8suid`, else `subject`) are in at
 * most one batch at a time, in queue order within it, and its later events wait until that batch
 * is answered; a retried event is re-sent before the object's later events. Batches of different
 * objects may complete in any order. Within a batch the sink delivers one object's events in
 * their batch order; if it reports one of them not `ok`, the queue re-sends that object's later
 * events of the batch after it too (whatever their result), so the object's newest state is the
 * one delivered last.
 * Idempotency: a batch may be sent more than once (after a retryable result or a crash), so a sink
 * should make duplicates harmless where its destination allows (the event `id` is stable).
 */
export interface Sink extends Lifecycle {
  /** Most events `send` accepts at once. */
  readonly maxBatch: number;
  /**
   * How many `send` calls may be in flight at once when the pipeline's `delivery.concurrency` does
   * not say; absent = 1. HTTP sinks declare 16 (one request per send waits on the network).
   */
  readonly defaultConcurrency?: number;
  /**
   * The most concurrent `send` calls this sink can take (absent = no limit): a sink whose `send`
   * is not safe to overlap (one file handle, one stream) declares 1 and a higher configured
   * `concurrency` is cut to it.
   */
  readonly maxConcurrency?: number;
  /**
   * Optional: what the sink knows about its destination for the probes (a configuration the remote
   * refuses, e.g. Slack's invalid_auth). Only `ready` and `reasons` count: not ready makes
   * `/readyz` fail with the reasons; a sink is never the cause of a restart. Cheap; no I/O.
   */
  status?(): ComponentStatus;
  /** Returns one result per event, in the order of `batch`. Must not throw for per-event failures. */
  send(batch: readonly OutboundEvent[], signal: AbortSignal): Promise<DeliveryResult[]>;
}

/**
 * One destination of a source's deltas: a sink of a pipeline using the source. The source's
 * checkpoint remembers which consumers have had their initial treatment, so a pipeline or sink
 * added later gets the objects that already exist (or skips them) without anything being
 * re-emitted to the consumers that already had them.
 */
export interface SourceConsumer {
  /** `<pipeline>/<sink>`: stable across restarts. */
  id: string;
  /** What a consumer the checkpoint does not know yet gets of the existing objects: an `added` each, or nothing. */
  initial: 'emit' | 'skip';
}

/** A source is also given where to push its deltas. */
export interface SourceContext extends ComponentContext {
  receiver: DeltaReceiver;
  /**
   * Everyone the receiver delivers to; a delta's `targets` names a subset of these ids. Absent: one
   * consumer named after the source whose `initial` comes from the source's own config.
   */
  consumers?: readonly SourceConsumer[];
  /**
   * JSON pointers (`*` matches any key or index) whose values the source masks in everything it
   * persists (its checkpoint): the union of the `events.redact` lists of the pipelines sharing it,
   * so no secret reaches the disk or the cluster's ConfigMaps.
   */
  redact?: readonly string[];
  /**
   * Under leader election (`--leader-elect`): until `leadership.whenLeading` resolves the source is
   * a warm standby (see {@link Leadership}); absent, it leads from the start.
   */
  leadership?: Leadership;
}

/**
 * Level-3 validation: checks a source's objects against the schema their producer declares (for
 * Kubernetes, the CRD's openAPIV3Schema), kept current while started (a schema change recompiles).
 */
export interface ObjectSchemaValidator {
  /**
   * The problems of `object` (empty when valid), or undefined when it cannot be checked (no schema
   * loaded yet, or none for its version). Synchronous; no I/O.
   */
  validate(object: KubeObject): string[] | undefined;
  /** Loads the schema and follows its changes; resolves once the first load finished (or failed). */
  start(): Promise<void>;
  /** Stops following changes; idempotent. The last schema stays in force. */
  stop(): void;
}

/** What a source factory's `objectSchema` gets: a logger and the process's memo and settings. */
export type ObjectSchemaContext = Pick<ComponentContext, 'logger' | 'shared' | 'settings'>;

export interface SourceFactory<C = unknown> extends ComponentFactory<C, Source, 'source', SourceContext> {
  /**
   * Pipelines whose source configs give the same key share one source instance (one LIST and one
   * WATCH); its deltas fan out to all of them.
   */
  shareKey(config: C): string;
  /**
   * The settings (by JSON pointer into the source block, defaults applied) that every pipeline
   * sharing one instance must give alike: the watch and checkpoint behaviour one instance can only
   * have once. A disagreement is a configuration error naming both files. Settings not listed here
   * and not in the share key are per pipeline (e.g. `initial`).
   */
  sharedSettings?(config: C): Record<string, unknown>;
  /**
   * A validator of the source's objects against their declared schema (`spec.validation.crdSchema`),
   * started and stopped with the pipelines that use it. Performs no I/O (`start` does). Pipelines
   * whose configs name the same schema get the same instance (the factory memoizes it with
   * `ctx.shared`), so one schema is fetched and watched once per process; the runtime starts it
   * with the first such pipeline and stops it with the last. A source type without it cannot serve
   * `validation.crdSchema`.
   */
  objectSchema?(config: C, ctx: ObjectSchemaContext): ObjectSchemaValidator;
  /**
   * The access {@link objectSchema}'s validator needs (for Kubernetes: reading the one CRD), added
   * to {@link ComponentFactory.permissions} for pipelines that set `spec.validation.crdSchema`.
   * Pure, like `permissions`.
   */
  objectSchemaPermissions?(config: C): Permission[];
  /**
   * True when the source honours `SourceContext.leadership` (a warm standby that hands on nothing
   * until elected): the runtime then starts it on a standby too. Other sources start only once
   * this process leads.
   */
  warmStandby?: boolean;
  /**
   * Where the source keeps what a successor must resume from (its checkpoint) when that is on this
   * process's local disk (`--state-dir`), as a JSON pointer into the source config and a sentence
   * for the user; undefined when it lives where another process finds it. Pure.
   */
  localState?(config: C): { pointer: string; message: string } | undefined;
}
export interface StageFactory<C = unknown> extends ComponentFactory<C, Stage, 'stage'> {
  /**
   * For a stage that limits events to some sinks ({@link withDestinations}): every sink name its
   * config can send an event to, each with the pointer (into the stage's block) where it is named.
   * `crbridge validate` refuses a name that is no sink of the pipeline, and a sink of the
   * pipeline that no entry names (it would never receive anything). Pure.
   */
  destinations?(config: C): { pointer: string; sink: string }[];
}
export type SinkFactory<C = unknown> = ComponentFactory<C, Sink, 'sink'>;
export type AnyFactory = SourceFactory | StageFactory | SinkFactory;
