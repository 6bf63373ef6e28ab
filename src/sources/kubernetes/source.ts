/**
 * The Kubernetes source: one shared cache and one reflector per scope (each listed namespace, or
 * one for all namespaces / cluster-scoped resources), a checkpoint, and the decisions of which
 * deltas to hand on.
 *
 * Start-up: load the checkpoint into the cache, wait for the resource to be served (discovery),
 * then each scope's first LIST is diffed against the cache (= the checkpoint): the deltas carry
 * `reason: 'resync'`. Later relists (410, reconnect after a 404) are diffed against the cache
 * (`relist`); watch events are `live`.
 *
 * Ordering: deltas are pushed one at a time in observation order and each push is awaited
 * (back-pressure). Checkpoint: an object's entry advances to a state only once that delta and
 * every earlier delta of the same object have settled (every destination delivered, durably
 * stored or dead-lettered them; see `commits.ts`); entries are flushed in batches every
 * `flushIntervalMs` and at shutdown. The checkpoint therefore never runs ahead of delivery; after a
 * crash, changes handed on but not yet committed are emitted again (as the net change since the
 * committed state) with deterministic ids (at-least-once, duplicates recognisable by id).
 *
 * Warm standby (`ctx.leadership`, not leading at start): the reflectors list and watch into a
 * per-scope map of the current objects, and nothing is handed on, checkpointed or read from the
 * checkpoint. Once elected, handlers wait while the checkpoint the old leader left is loaded and
 * each listed scope's current objects are diffed against it exactly like a restart's first LIST
 * (`reason: 'resync'`); later events are handed on as usual.
 */

import { createHash } from 'node:crypto';
import { backoffDelay, sleep } from '../../backoff.ts';
import type { ComponentStatus, Source, SourceConsumer, SourceContext } from '../../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import type { Delta, DeltaReason, KubeObject, ResourceRef } from '../../events/delta.ts';
import { componentMetrics } from '../../telemetry/metrics.ts';
import { FileCheckpointStore } from './checkpoint/file.ts';
import { KubernetesCheckpointStore } from './checkpoint/kubernetes.ts';
import type { CheckpointStore } from './checkpoint/types.ts';
import { type KubeApi, type KubeCredentials, KubeHttpError, kubeApi } from './client.ts';
import { OrderedCommits } from './commits.ts';
import { KUBERNETES_SOURCE_DEFAULTS } from './defaults.ts';
import {
  applyChange,
  type Change,
  changeFromWatch,
  diffListItem,
  leftOrDeleted,
  listDeletions,
  type WatchEventType,
} from './diff.ts';
import { collectionPath, discover, discoveryError, gvrString } from './discovery.ts';
import { FailureLog, type ListPages, Reflector } from './reflector.ts';
import { compileSelection, escapeFieldValue, type Selection } from './selector.ts';
import { sharedKubeApi } from './shared-client.ts';
import { parsePointers, stripFields } from './strip.ts';

export interface KubernetesSourceConfig {
  group?: string;
  version: string;
  resource: string;
  namespaces?: string[];
  labelSelector?: string;
  fieldSelector?: string;
  pageSize?: number;
  watchTimeoutSeconds?: number;
  stallTimeoutSeconds?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  dropFields?: string[];
  initial?: 'emit' | 'skip';
  checkpoint?: {
    backend?: 'file' | 'kubernetes';
    namespace?: string;
    name?: string;
    flushIntervalMs?: number;
  };
}

/** Identity of a watch: pipelines with equal keys share one source, and the checkpoint is keyed by it. */
export function sourceKey(c: KubernetesSourceConfig): string {
  const ns = [...new Set(c.namespaces ?? [])].sort();
  return JSON.stringify([c.group ?? '', c.version, c.resource, ns, c.labelSelector ?? '', c.fieldSelector ?? '']);
}

/**
 * What pipelines sharing one source must agree on (JSON pointer → value, defaults applied): how the
 * one LIST+WATCH runs and where its one checkpoint lives. `initial` is per pipeline.
 */
export function sharedSettings(c: KubernetesSourceConfig): Record<string, unknown> {
  const cp = c.checkpoint ?? {};
  return {
    '/pageSize': c.pageSize ?? DEFAULTS.pageSize,
    '/watchTimeoutSeconds': c.watchTimeoutSeconds ?? DEFAULTS.watchTimeoutSeconds,
    '/stallTimeoutSeconds': c.stallTimeoutSeconds ?? DEFAULTS.stallTimeoutSeconds,
    '/backoffInitialMs': c.backoffInitialMs ?? DEFAULTS.backoffInitialMs,
    '/backoffMaxMs': c.backoffMaxMs ?? DEFAULTS.backoffMaxMs,
    '/dropFields': c.dropFields ?? DEFAULT_DROP_FIELDS,
    '/checkpoint/backend': cp.backend ?? DEFAULTS.checkpoint.backend,
    '/checkpoint/namespace': cp.namespace ?? DEFAULTS.checkpoint.namespace,
    '/checkpoint/name': cp.name ?? DEFAULTS.checkpoint.name,
    '/checkpoint/flushIntervalMs': cp.flushIntervalMs ?? DEFAULTS.flushIntervalMs,
  };
}

/** Whether an object belongs to a scope (a namespace, or null for all). */
function scopeFilter(ns: string | null): (o: KubeObject) => boolean {
  return ns === null ? () => true : (o) => o.metadata.namespace === ns;
}

/** Short stable hash of a key, for names (ConfigMaps, logs). */
export function keyHash(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 12);
}

/** Optional replacements for tests: a given API/kubeconfig/checkpoint store instead of the real ones. */
export interface SourceDeps {
  api?: KubeApi;
  kubeConfig?: KubeCredentials;
  checkpoint?: CheckpointStore;
}

const DEFAULT_DROP_FIELDS = KUBERNETES_SOURCE_DEFAULTS.dropFields;
const DEFAULTS = {
  ...KUBERNETES_SOURCE_DEFAULTS,
  flushIntervalMs: KUBERNETES_SOURCE_DEFAULTS.checkpoint.flushIntervalMs,
};

export class KubernetesSource implements Source {
  private readonly config: KubernetesSourceConfig;
  private readonly ctx: SourceContext;
  private readonly deps: SourceDeps;
  private readonly key: string;
  private readonly drop: string[][];
  private readonly cache = new Map<string, KubeObject>();
  private readonly controller = new AbortController();
  private api: KubeApi | undefined;
  private store: CheckpointStore | undefined;
  private resource: ResourceRef | undefined;
  /** Every consumer of this source (the runtime's list, or one named after the source). */
  private readonly consumers: readonly SourceConsumer[];
  /**
   * Until the first listing is handed on: the consumers the checkpoint already knows (they get the
   * diff against it) and the new ones (they get their `initial` treatment).
   */
  private known: string[] = [];
  private fresh: SourceConsumer[] = [];
  private scopesPending = 0;
  /** Per uid, in observation order: which handed-on states may reach the checkpoint (commits.ts). */
  private readonly commits = new OrderedCommits<KubeObject | null>((uid, object) => {
    if (object === null) this.store?.remove(uid);
    else this.store?.put(uid, object);
  });
  /** Each resolves when its delta settled and rejects when it cannot settle in this process. */
  private readonly pendingSettles = new Set<Promise<void>>();
  private runPromise: Promise<void> | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private shutdownPromise: Promise<void> | undefined;
  private _synced = false;
  private readonly m;
  /** True while a warm standby (see the file comment). */
  private standby = false;
  /** A standby's view per scope (namespace, or null for all): current objects by uid, once listed. */
  private readonly warm = new Map<string | null, { objects: Map<string, KubeObject>; resourceVersion: string }>();
  /** Standby handler calls running (a LIST is one call until its last page). */
  private busy = 0;
  private idle: (() => void) | undefined;
  /** Set while taking over: handlers wait for it. */
  private takingOver: Promise<void> | undefined;

  constructor(config: KubernetesSourceConfig, ctx: SourceContext, deps: SourceDeps = {}) {
    this.config = config;
    this.ctx = ctx;
    this.deps = deps;
    this.key = sourceKey(config);
    this.consumers = ctx.consumers ?? [{ id: ctx.id, initial: config.initial ?? DEFAULTS.initial }];
    this.drop = parsePointers(config.dropFields ?? DEFAULT_DROP_FIELDS);
    const mm = ctx.metrics;
    this.m = {
      shared: componentMetrics(mm),
      restarts: mm.counter('crbridge_source_watch_restarts_total', 'Watch streams restarted, by reason.'),
      relists: mm.counter('crbridge_source_relists_total', 'LISTs after the first, by reason.'),
      objects: mm.gauge('crbridge_source_objects', 'Objects in the source cache.'),
      deltas: mm.counter('crbridge_source_deltas_total', 'Deltas handed on, by kind and reason.'),
      synced: mm.gauge('crbridge_source_synced', '1 once the initial list and checkpoint catch-up are handed on.'),
      checkpointWrites: mm.counter('crbridge_source_checkpoint_flushes_total', 'Checkpoint flushes, by result.'),
      resourceServed: mm.gauge('crbridge_source_resource_served', '1 while the watched resource is served.'),
    };
  }

  get synced(): boolean {
    return this._synced;
  }

  // Probes: the reflectors' states, and discovery's while there are none (or the resource is gone).
  private readonly reflectors: Reflector[] = [];
  /** Discovery failures, logged once per cause. */
  private discoveryLog: FailureLog | undefined;
  /** Set while discovery finds the resource not served. */
  private notServed: string | undefined;

  /** Ready when every scope's reflector is; reasons name the resource, namespace and cause. */
  status(): ComponentStatus {
    const problem = this.discoveryLog?.current?.message;
    if (this.reflectors.length === 0) {
      const what = gvrString({
        group: this.config.group ?? '',
        version: this.config.version,
        resource: this.config.resource,
      });
      const why = problem ?? this.notServed ?? `${what}: starting (loading the checkpoint, discovering the resource)`;
      return { ready: false, live: true, reasons: [why] };
    }
    const all = this.reflectors.map((r) => r.status());
    const reasons = all.flatMap((st) => st.reasons);
    if (problem) reasons.unshift(problem);
    return { ready: !problem && all.every((st) => st.ready), live: all.every((st) => st.live), reasons };
  }

  private discoveryFailed(err: unknown, gvr: { group: string; version: string; resource: string }): void {
    const e = discoveryError(err, gvr);
    this.m.shared.errors.inc({ component: this.ctx.id, code: e.code });
    this.discoveryLog ??= new FailureLog(this.ctx.logger, `discovery of ${gvrString(gvr)}`);
    this.discoveryLog.fail(e);
  }

  /** The resource once discovered (tests, diagnostics). */
  get resourceRef(): ResourceRef | undefined {
    return this.resource;
  }

  /** Number of cached objects. */
  get size(): number {
    return this.cache.size;
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.runPromise) return;
    signal.addEventListener('abort', () => this.controller.abort(), { once: true });
    // the process's one client (ctx.shared), unless a test gave its own API or credentials
    this.api = this.deps.api ?? (this.deps.kubeConfig ? kubeApi(this.deps.kubeConfig) : sharedKubeApi(this.ctx));
    this.store = this.deps.checkpoint ?? this.makeStore();
    this.standby = this.ctx.leadership !== undefined && !this.ctx.leadership.leading;
    this.runPromise = this.run(this.controller.signal).catch((err: unknown) => {
      this.error(err, 'source stopped on an unexpected error');
    });
  }

  private makeStore(): CheckpointStore {
    const cp = this.config.checkpoint ?? {};
    const redact = this.ctx.redact ?? [];
    if (cp.backend === 'kubernetes') {
      return new KubernetesCheckpointStore(this.api as KubeApi, {
        namespace: cp.namespace ?? DEFAULTS.checkpoint.namespace,
        name: cp.name ?? DEFAULTS.checkpoint.name,
        key: this.key,
        redact,
      });
    }
    return new FileCheckpointStore(this.ctx.stateDir, this.key, { redact });
  }

  private error(err: unknown, msg: string): void {
    const code = err instanceof CrbridgeError ? err.code : ErrorCode.Internal;
    this.m.shared.errors.inc({ component: this.ctx.id, code });
    this.ctx.logger.error(msg, { error: errorMessage(err), code });
  }

  private async run(signal: AbortSignal): Promise<void> {
    // 1. the checkpoint becomes the cache (a standby reads it once elected)
    if (this.standby) void this.takeOverWhenLeading(signal);
    else await this.loadCheckpoint(signal);
    // 2. discovery: wait for the resource to be served
    await this.waitForResource(signal);
    const ref = this.resource;
    if (!ref || signal.aborted) return;
    // 3. one reflector per scope
    const namespaces = [...new Set(this.config.namespaces ?? [])].sort();
    if (!ref.namespaced && namespaces.length > 0) {
      this.ctx.logger.warn('resource is cluster-scoped; `namespaces` is ignored', { resource: gvrString(ref) });
    }
    const scopes: (string | null)[] = ref.namespaced && namespaces.length > 0 ? namespaces : [null];
    this.scopesPending = scopes.length;
    const c = this.config;
    await Promise.all(
      scopes.map((ns) => {
        const inScope = scopeFilter(ns);
        const r = new Reflector({
          api: this.api as KubeApi,
          path: collectionPath(ref, ns),
          labelSelector: c.labelSelector,
          fieldSelector: c.fieldSelector,
          pageSize: c.pageSize ?? DEFAULTS.pageSize,
          watchTimeoutSeconds: c.watchTimeoutSeconds ?? DEFAULTS.watchTimeoutSeconds,
          stallTimeoutMs: (c.stallTimeoutSeconds ?? DEFAULTS.stallTimeoutSeconds) * 1000,
          backoffInitialMs: c.backoffInitialMs ?? DEFAULTS.backoffInitialMs,
          backoffMaxMs: c.backoffMaxMs ?? DEFAULTS.backoffMaxMs,
          target: { resource: ref, scope: { namespace: ns, namespaced: ref.namespaced } },
          logger: this.ctx.logger.child(ns === null ? {} : { namespace: ns }),
          onRestart: (reason) => this.m.restarts.inc({ component: this.ctx.id, reason }),
          onRelist: (reason) => this.m.relists.inc({ component: this.ctx.id, reason }),
          onError: (code) => this.m.shared.errors.inc({ component: this.ctx.id, code }),
          handler: {
            onList: (items, first) =>
              this.handle(
                () => this.onList(items, first, inScope),
                () => this.standbyList(ns, items),
              ),
            onEvent: (type, obj) =>
              this.handle(
                () => this.onEvent(type, obj),
                async () => this.standbyEvent(ns, type, obj),
              ),
            waitForResource: async (s) => {
              this.m.resourceServed.set({ component: this.ctx.id }, 0);
              this.ctx.logger.warn('watched resource is no longer served (CRD deleted?); waiting for it to return', {
                resource: gvrString(ref),
              });
              await this.waitForResource(s);
            },
          },
        });
        this.reflectors.push(r);
        return r.run(signal);
      }),
    );
  }

  /** Runs a reflector callback as the leader (`lead`) or, while a standby, as `follow`. */
  private async handle(lead: () => Promise<void>, follow: () => Promise<void>): Promise<void> {
    while (this.takingOver) await this.takingOver;
    if (!this.standby) return lead();
    this.busy++;
    try {
      await follow();
    } finally {
      if (--this.busy === 0) this.idle?.();
    }
  }

  /** A standby's LIST: the scope's objects are replaced once every page is read. */
  private async standbyList(ns: string | null, pages: ListPages): Promise<void> {
    const objects = new Map<string, KubeObject>();
    for await (const page of pages)
      for (let i = 0; i < page.length; i++) {
        const obj = this.normalize(page[i] as KubeObject);
        page[i] = undefined as never;
        objects.set(obj.metadata.uid, obj);
      }
    this.warm.set(ns, { objects, resourceVersion: pages.resourceVersion });
    this.warmGauge();
  }

  private standbyEvent(ns: string | null, type: WatchEventType, raw: KubeObject): void {
    const w = this.warm.get(ns);
    if (!w) return; // a watch starts after its LIST
    const obj = this.normalize(raw);
    if (type === 'DELETED') w.objects.delete(obj.metadata.uid);
    else w.objects.set(obj.metadata.uid, obj);
    w.resourceVersion = obj.metadata.resourceVersion;
    this.warmGauge();
  }

  private warmGauge(): void {
    let n = 0;
    for (const w of this.warm.values()) n += w.objects.size;
    this.m.objects.set({ component: this.ctx.id }, n);
  }

  /**
   * Once elected: with the reflectors held, loads the checkpoint and diffs each listed scope's
   * current objects against it as a restart's first LIST would; then the source leads. A diff that
   * fails (a lookup of a vanished object) is retried with backoff: what it handed on is already in
   * the cache, so a retry repeats nothing.
   */
  private async takeOverWhenLeading(signal: AbortSignal): Promise<void> {
    await this.ctx.leadership?.whenLeading(signal);
    if (signal.aborted) return;
    let release = () => {};
    this.takingOver = new Promise<void>((r) => {
      release = r;
    });
    try {
      while (this.busy > 0)
        await new Promise<void>((r) => {
          this.idle = r;
        });
      await this.loadCheckpoint(signal);
      if (signal.aborted) return;
      this.standby = false;
      const warm = [...this.warm];
      this.warm.clear();
      for (const [ns, w] of warm)
        for (let attempt = 1; !signal.aborted; attempt++) {
          try {
            const items = [...w.objects.values()];
            const pages: ListPages = {
              resourceVersion: w.resourceVersion,
              async *[Symbol.asyncIterator]() {
                yield items;
              },
            };
            await this.onList(pages, true, scopeFilter(ns));
            break;
          } catch (err) {
            if (signal.aborted) return;
            this.error(err, 'taking over: cannot hand on the changes since the checkpoint; retrying');
            await sleep(backoffDelay(attempt, 1000, 30_000), signal);
          }
        }
      this.ctx.logger.info('leading: resumed from the checkpoint', {
        checkpoint: this.store?.description,
        scopesListed: warm.length,
      });
    } finally {
      this.takingOver = undefined;
      release();
    }
  }

  /** The checkpoint becomes the cache: what was handed on and acknowledged last time. */
  private async loadCheckpoint(signal: AbortSignal): Promise<void> {
    const store = this.store as CheckpointStore;
    for (let attempt = 1; !signal.aborted; attempt++) {
      try {
        const state = await store.load();
        for (const [uid, obj] of state.entries) this.cache.set(uid, obj);
        // a checkpoint from before consumers were recorded: every current consumer had its start
        const done = new Set(state.initialized ? (state.consumers ?? this.consumers.map((c) => c.id)) : []);
        this.known = this.consumers.filter((c) => done.has(c.id)).map((c) => c.id);
        this.fresh = this.consumers.filter((c) => !done.has(c.id));
        this.ctx.logger.info('checkpoint loaded', {
          checkpoint: store.description,
          objects: state.entries.size,
          initialized: state.initialized,
          ...(this.fresh.length > 0 && { newConsumers: this.fresh.map((c) => `${c.id} (initial: ${c.initial})`) }),
        });
        break;
      } catch (err) {
        this.error(err, 'cannot load the checkpoint; retrying');
        await sleep(backoffDelay(attempt, 1000, 30_000), signal);
      }
    }
    this.m.objects.set({ component: this.ctx.id }, this.cache.size);
    this.flushTimer = setInterval(
      () => void this.flush(this.controller.signal),
      this.config.checkpoint?.flushIntervalMs ?? DEFAULTS.flushIntervalMs,
    );
    this.flushTimer.unref();
  }

  private async waitForResource(signal: AbortSignal): Promise<void> {
    const gvr = { group: this.config.group ?? '', version: this.config.version, resource: this.config.resource };
    let warned = false;
    for (let attempt = 1; !signal.aborted; attempt++) {
      try {
        const ref = await discover(this.api as KubeApi, gvr, signal);
        if (ref) {
          if (this.resource && (ref.kind !== this.resource.kind || ref.namespaced !== this.resource.namespaced)) {
            this.ctx.logger.warn('resource came back with a different kind or scope; keeping the first one', {
              resource: gvrString(gvr),
            });
          }
          this.resource ??= ref;
          this.notServed = undefined;
          this.discoveryLog?.recover();
          this.m.resourceServed.set({ component: this.ctx.id }, 1);
          if (warned) this.ctx.logger.info('watched resource is served', { resource: gvrString(gvr) });
          return;
        }
        this.m.resourceServed.set({ component: this.ctx.id }, 0);
        if (!warned) {
          const err = new CrbridgeError(
            ErrorCode.ResourceNotFound,
            `resource ${gvrString(gvr)} is not served by the API server (is its CRD installed?); waiting for it`,
          );
          this.m.shared.errors.inc({ component: this.ctx.id, code: err.code });
          this.ctx.logger.warn(err.message, { code: err.code, resource: gvrString(gvr) });
          warned = true;
          this.notServed = err.message;
        }
        this.discoveryLog?.recover();
      } catch (err) {
        if (signal.aborted) return;
        this.discoveryFailed(err, gvr);
      }
      await sleep(Math.min(backoffDelay(attempt, 1000, 10_000), 10_000), signal);
    }
  }

  /** Fills in apiVersion/kind (LIST items of built-in types lack them) and drops unneeded fields. */
  private normalize(obj: KubeObject): KubeObject {
    const ref = this.resource as ResourceRef;
    let o = obj;
    if (!o.apiVersion || !o.kind) {
      o = { ...o, apiVersion: ref.group ? `${ref.group}/${ref.version}` : ref.version, kind: ref.kind };
    }
    return stripFields(o, this.drop);
  }

  /**
   * One LIST of a scope, page by page: each item's addition or modification is handed on as its
   * page arrives (only one page is held), the deletions once the last page has been read.
   *
   * The first listing after start-up compares with the checkpoint: consumers the checkpoint knows
   * get the differences; consumers it does not know yet (a first start, or a pipeline or sink
   * added since) get an `added` for every existing object (`initial: emit`) or nothing (`skip`).
   */
  private async onList(pages: ListPages, first: boolean, inScope: (o: KubeObject) => boolean): Promise<void> {
    const reason: DeltaReason = first ? 'resync' : 'relist';
    const all = this.consumers.map((c) => c.id);
    const known = first ? this.known : all;
    const emitTo = first ? this.fresh.filter((c) => c.initial === 'emit').map((c) => c.id) : [];
    const seen = new Set<string>();
    let changes = 0;
    const hand = async (ch: Change | undefined, object: KubeObject | undefined) => {
      if (ch) changes++;
      if (ch?.kind === 'added') return this.emit(ch, reason, [...known, ...emitTo]);
      if (ch) await this.emit(ch, reason, known);
      // an object the new consumers have not had: an addition for them alone
      if (object && emitTo.length > 0) await this.emit({ kind: 'added', object }, reason, emitTo);
    };
    for await (const page of pages) {
      for (let i = 0; i < page.length; i++) {
        const obj = this.normalize(page[i] as KubeObject);
        page[i] = undefined as never; // the raw item (with managedFields) can go now
        if (seen.has(obj.metadata.uid)) continue;
        await hand(diffListItem(this.cache, obj, seen), obj);
      }
      this.m.objects.set({ component: this.ctx.id }, this.cache.size);
    }
    for (const ch of listDeletions(this.cache, seen, inScope))
      await hand(await this.leftOrDeleted(ch, pages.resourceVersion), undefined);
    this.m.objects.set({ component: this.ctx.id }, this.cache.size);
    if (first && --this.scopesPending === 0) {
      this._synced = true;
      this.m.synced.set({ component: this.ctx.id }, 1);
      this.known = all;
      this.fresh = [];
      // the first complete listing is recorded once everything it produced is settled
      const settles = [...this.pendingSettles];
      Promise.all(settles).then(
        () => this.store?.markInitialized(all),
        () => {}, // not all settled: the next start gives the new consumers their start again
      );
      this.ctx.logger.info('initial list handed on', { objects: this.cache.size, changes, reason });
    }
  }

  private async onEvent(type: WatchEventType, raw: KubeObject): Promise<void> {
    const ch = changeFromWatch(this.cache, type, this.normalize(raw), this.selection.matches);
    if (!ch) return;
    await this.emit(await this.leftOrDeleted(ch, ch.object.metadata.resourceVersion), 'live');
    this.m.objects.set({ component: this.ctx.id }, this.cache.size);
  }

  private selectionCache: Selection | undefined;

  /** The source's label and field selectors; a selector this cannot parse is treated as one that can be left. */
  private get selection(): Selection {
    if (this.selectionCache) return this.selectionCache;
    const { labelSelector = '', fieldSelector = '' } = this.config;
    try {
      this.selectionCache = compileSelection(labelSelector, fieldSelector);
    } catch (err) {
      this.ctx.logger.warn('selector not understood here; every vanished object is looked up to tell a departure', {
        error: errorMessage(err),
      });
      this.selectionCache = { canLeave: labelSelector !== '' || fieldSelector !== '', matches: () => undefined };
    }
    return this.selectionCache;
  }

  /**
   * A known object vanished (watch DELETED, or missing from a LIST): deleted, or did it leave the
   * selector? Only a source whose selection can be left asks, with one LIST of the object by name
   * at `rv` exactly (`resourceVersionMatch=Exact`), the revision of the DELETED or of the LIST: the
   * same uid there means it left, none (or another uid) that it was deleted. Not a GET: it reads
   * the object now, and one that left and was deleted since would pass for a deletion. When `rv`
   * has been compacted away (410), the object as it is now decides. A failed read throws, so the
   * reflector retries the event or the LIST; nothing is guessed.
   */
  private async leftOrDeleted(ch: Change, rv: string): Promise<Change> {
    if (ch.kind !== 'deleted' || ch.selector !== undefined || !this.selection.canLeave) return ch;
    const ref = this.resource as ResourceRef;
    const m = (ch.oldObject ?? ch.object).metadata;
    const path = collectionPath(ref, ref.namespaced ? (m.namespace ?? null) : null);
    const read = (exact: boolean) =>
      (this.api as KubeApi).request(
        'GET',
        path,
        {
          fieldSelector: `metadata.name=${escapeFieldValue(m.name)}`,
          ...(exact && rv && { resourceVersion: rv, resourceVersionMatch: 'Exact' }),
        },
        undefined,
        this.controller.signal,
      ) as Promise<{ items?: KubeObject[] } | undefined>;
    let found: { items?: KubeObject[] } | undefined;
    try {
      found = await read(true).catch((err: unknown) => {
        if (err instanceof KubeHttpError && err.status === 410) return read(false);
        throw err;
      });
    } catch (err) {
      // 404: the resource is no longer served, its objects are gone
      if (err instanceof KubeHttpError && err.status === 404) found = undefined;
      else if (err instanceof KubeHttpError)
        throw new KubeHttpError(
          err.status,
          err.reason,
          `cannot tell whether ${m.namespace ? `${m.namespace}/` : ''}${m.name} was deleted or left the selector: ${err.message}`,
        );
      else throw err;
    }
    const same = found?.items?.find((o) => o?.metadata?.uid === m.uid);
    return leftOrDeleted(ch, same);
  }

  /**
   * Applies a change to the cache and hands it on to `targets` (consumer ids; default all). With
   * no target it is recorded only: it reaches the checkpoint in its turn, like a settled delta.
   */
  private async emit(ch: Change, reason: DeltaReason, targets?: readonly string[]): Promise<void> {
    const uid = ch.object.metadata.uid;
    const previous = this.cache.get(uid);
    applyChange(this.cache, ch);
    const change = this.commits.track(uid, ch.kind === 'deleted' ? null : ch.object);
    if (targets?.length === 0) {
      change.settled();
      return;
    }
    const delta: Delta = {
      kind: ch.kind,
      object: ch.object,
      ...(ch.oldObject !== undefined && { oldObject: ch.oldObject }),
      ...(ch.selector !== undefined && { selector: ch.selector }),
      ...(ch.leftAt !== undefined && { leftAt: ch.leftAt }),
      reason,
      resource: this.resource as ResourceRef,
      observedAt: Date.now(),
      ...(targets && targets.length < this.consumers.length && { targets }),
    };
    let settled: Promise<void>;
    try {
      ({ settled } = await this.ctx.receiver.push(delta, this.controller.signal));
    } catch (err) {
      // not accepted: forget it, so that the replay after the reflector's retry is not a repeat
      change.forget();
      if (previous === undefined) this.cache.delete(uid);
      else this.cache.set(uid, previous);
      throw err;
    }
    this.m.deltas.inc({ component: this.ctx.id, kind: ch.kind, reason });
    const p: Promise<void> = settled.then(
      () => change.settled(),
      (err: unknown) => {
        change.failed();
        this.error(err, 'a delta was not settled; the checkpoint entry of its object stays before it until restart');
        throw err;
      },
    );
    this.pendingSettles.add(p);
    p.then(
      () => this.pendingSettles.delete(p),
      () => this.pendingSettles.delete(p),
    );
  }

  /**
   * Writes staged checkpoint changes; one flush at a time. `signal` aborts its requests (what it
   * took stays staged for the next flush). A failing flush is counted every time and logged once
   * per cause and time window, not every interval.
   */
  flush(signal?: AbortSignal): Promise<void> {
    if (this.flushing) return this.flushing;
    const store = this.store;
    if (!store || store.pending === 0) return Promise.resolve();
    this.flushing = store
      .flush(signal)
      .then(
        () => this.m.checkpointWrites.inc({ component: this.ctx.id, result: 'ok' }),
        (err: unknown) => {
          this.m.checkpointWrites.inc({ component: this.ctx.id, result: 'error' });
          const code = err instanceof CrbridgeError ? err.code : ErrorCode.Checkpoint;
          this.m.shared.errors.inc({ component: this.ctx.id, code });
          const error = errorMessage(err);
          this.ctx.logger.once(
            'error',
            `${this.ctx.id}:checkpoint:${error.slice(0, 160)}`,
            'checkpoint flush failed; will retry',
            {
              code,
              error,
            },
          );
        },
      )
      .finally(() => {
        this.flushing = undefined;
      });
    return this.flushing;
  }

  /**
   * Stops the reflectors, then waits for deltas still in flight to settle — for at most half of the
   * time left, because the runtime drains the sinks only after the sources have stopped — and
   * flushes the checkpoint. Deltas that settle later (while the sinks drain) are still written: the
   * store stays open until they all settled or `deadline` passed, then it is flushed and closed.
   */
  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.controller.abort();
      // every request and queue wait takes the abort signal; never wait past the deadline anyway
      const ran = new AbortController();
      await Promise.race([this.runPromise, sleep(Math.max(0, deadline - Date.now()), ran.signal)]);
      ran.abort();
      const stop = new AbortController();
      const half = Math.max(0, (deadline - Date.now()) / 2);
      await Promise.race([Promise.allSettled([...this.pendingSettles]), sleep(half, stop.signal)]);
      stop.abort();
      clearInterval(this.flushTimer);
      // the periodic flush was aborted with the watches; the final ones get until just past the deadline
      const flushBy = () => AbortSignal.timeout(Math.max(100, deadline + 500 - Date.now()));
      await this.flushing;
      await this.flush(flushBy());
      if (this.pendingSettles.size === 0) {
        await this.store?.close();
        return;
      }
      const late = new AbortController();
      const final = async () => {
        late.abort();
        await this.flushing;
        await this.flush(flushBy());
        await this.store?.close();
      };
      void Promise.race([
        Promise.allSettled([...this.pendingSettles]),
        sleep(Math.max(0, deadline - Date.now()), late.signal),
      ]).then(final);
    })();
    return this.shutdownPromise;
  }
}
