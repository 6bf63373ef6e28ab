/**
 * Wires validated pipelines into running components and owns their lifecycle: sinks (delivery
 * queues) start before sources; on shutdown sources stop first, then the pipelines drain their
 * sinks. Pipelines whose sources share a key share one source instance (one LIST + one WATCH), and
 * pipelines checking objects against the same schema share one validator (the source factory's
 * `objectSchema`, memoized per process through `ctx.shared`; for Kubernetes, one CRD watch).
 * Components get one per-process memo (`shared`) and the command line's connection `settings`.
 * With an elector (`--leader-elect`) a standby is ready and emits nothing (no delivery, no
 * checkpoint, no state): its sinks are not started, and only sources whose factory declares
 * `warmStandby` run, keeping their caches warm through `ctx.leadership`; once elected, the sinks
 * start, then the sources resume from the checkpoint the old leader left (the others start then).
 * Losing the leadership is the CLI's to act on (it exits).
 */
import { join } from 'node:path';
import type {
  ComponentContext,
  ComponentStatus,
  ObjectSchemaContext,
  ObjectSchemaValidator,
  SinkFactory,
  Source,
  SourceConsumer,
  SourceFactory,
  StageFactory,
} from '../component.ts';
import type { LoadedPipeline } from '../config/types.ts';
import { resolveDeliveryConfig } from '../delivery/config.ts';
import { type DeadLetter, fileDeadLetter, sinkDeadLetter } from '../delivery/dead-letter.ts';
import { DeliveryQueue } from '../delivery/queue.ts';
import type { Elector, Leadership } from '../election.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import { traceContextOption } from '../events/trace-context.ts';
import { createEventValidator } from '../events/validate.ts';
import type { Registry } from '../registry.ts';
import { fileStateOpener, type StateOpener } from '../state/store.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import { fanOut, PipelineRunner } from './pipeline.ts';

export interface RuntimeOptions {
  stateDir: string;
  clusterName: string;
  logger: Logger;
  metrics: Metrics;
  /**
   * The command line's connection settings handed to every component as `ctx.settings`
   * (`kubeconfig`: the `--kubeconfig` file).
   */
  settings?: Readonly<Record<string, string | undefined>>;
  /**
   * Makes the level-3 validator of a source config instead of the source factory's `objectSchema`
   * (tests inject). Calls that return the same instance share it.
   */
  crdSchemaFor?: (source: Record<string, unknown>, ctx: ObjectSchemaContext) => ObjectSchemaValidator;
  /** Where components' durable state lives (`ctx.state`); default a file per store under `stateDir`. */
  state?: StateOpener;
  /**
   * Leader election: when given, components start only once this process leads (see the class
   * comment), and `shutdown` releases the leadership after the sinks drained.
   */
  elector?: Elector;
  /**
   * False when whoever resumes after this process may not find its local outboxes (a standby
   * taking over does not see this pod's disk): an event stored in a sink's outbox then settles
   * only once delivered or dead-lettered, so the checkpoint never passes it (see DeliveryQueue's
   * `outboxSettles`). Default true.
   */
  outboxDurable?: boolean;
}

/** The part of a level-3 validator a pipeline uses. */
type CrdSchemaHandle = ObjectSchemaValidator;

/**
 * One level-3 validator per CRD and version, shared by every pipeline that checks it (one fetch,
 * one CRD watch). Each pipeline gets a handle: the first `start` starts the validator and every
 * start returns its first fetch; it stops when the last handle that started stops. A handle's
 * `stop` is idempotent.
 */
function sharedCrdSchemas(v: ObjectSchemaValidator): () => CrdSchemaHandle {
  let started: Promise<void> | undefined;
  let users = 0;
  return () => {
    let mine = false;
    return {
      validate: (object) => v.validate(object),
      start: () => {
        if (!mine) {
          mine = true;
          users++;
        }
        started ??= v.start();
        return started;
      },
      stop: () => {
        if (!mine) return;
        mine = false;
        if (--users === 0) {
          v.stop();
          started = undefined;
        }
      },
    };
  };
}

export class Runtime {
  readonly pipelines: PipelineRunner[] = [];
  readonly sources: { key: string; id: string; source: Source; pipelines: string[]; warm: boolean }[] = [];
  /** Every sink's delivery queue (their outboxes' state is part of readiness). */
  private readonly queues: DeliveryQueue[] = [];
  private readonly opts: RuntimeOptions;
  private shutdownPromise: Promise<void> | undefined;
  /** Set once the components were started (at once, or when elected). */
  private started: Promise<void> | undefined;
  /** Set once the warm-standby sources were started (with an elector). */
  private warmStarted = false;
  /** True once this process leads and its sinks are started; what `ctx.leadership` shows. */
  private leadingNow = false;
  private readonly leadWaiters = new Set<() => void>();
  private readonly leadership: Leadership = {
    leading: false,
    whenLeading: (signal) => {
      if (this.leadingNow || signal.aborted) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const done = () => {
          this.leadWaiters.delete(done);
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.leadWaiters.add(done);
        signal.addEventListener('abort', done, { once: true });
      });
    },
  };

  /** Builds every component; performs no I/O (that happens in `start`). */
  constructor(loaded: readonly LoadedPipeline[], registry: Registry, opts: RuntimeOptions) {
    this.opts = opts;
    Object.defineProperty(this.leadership, 'leading', { get: () => this.leadingNow });
    // one instance per key for the whole process (this runtime), built on first use
    const memo = new Map<string, unknown>();
    const shared = <T>(key: string, make: () => T): T => {
      if (!memo.has(key)) memo.set(key, make());
      return memo.get(key) as T;
    };
    const settings = Object.freeze({ ...opts.settings });
    const openState = opts.state ?? fileStateOpener(opts.stateDir);
    const ctxFor = (pipeline: string, name: string): ComponentContext => ({
      id: `${pipeline}/${name}`,
      pipeline,
      logger: opts.logger.child({ component: `${pipeline}/${name}` }),
      metrics: opts.metrics,
      stateDir: opts.stateDir,
      clusterName: opts.clusterName,
      shared,
      settings,
      state: (store: string) => openState(`${pipeline}/${name}`, store),
    });
    /** `spec.deadLetter`: a sink (`<pipeline>/dead-letter`), else the JSON-lines file. */
    const deadLetterOf = (dl: LoadedPipeline['config']['spec']['deadLetter'], pipeline: string): DeadLetter => {
      if (dl?.sink) {
        const { type, ...own } = dl.sink;
        const ctx = ctxFor(pipeline, 'dead-letter');
        return sinkDeadLetter(find<SinkFactory>(registry.sinks, type, 'sink').create(own, ctx), {
          id: ctx.id,
          metrics: opts.metrics,
        });
      }
      return fileDeadLetter(dl?.path ?? join(opts.stateDir, 'dead-letter', `${pipeline}.jsonl`));
    };
    const validator = createEventValidator();
    // one handle set per validator instance: the factory returns the same one for the same schema
    const crdSchemas = new Map<ObjectSchemaValidator, () => CrdSchemaHandle>();
    const crdSchemaHandle = (
      loaded: LoadedPipeline,
      factory: SourceFactory,
      source: Record<string, unknown>,
    ): CrdSchemaHandle => {
      const ctx: ObjectSchemaContext = { logger: opts.logger, shared, settings };
      let v: ObjectSchemaValidator;
      if (opts.crdSchemaFor) v = opts.crdSchemaFor(source, ctx);
      else if (factory.objectSchema) v = factory.objectSchema(source, ctx);
      else
        throw new CrbridgeError(
          ErrorCode.ConfigInvalid,
          `${loaded.file}: pipeline "${loaded.config.metadata.name}" sets spec.validation.crdSchema, but source type "${factory.type}" declares no object schema; remove validation.crdSchema or use a source that has one (kubernetes)`,
          { file: loaded.file, pipeline: loaded.config.metadata.name, source: factory.type },
        );
      let share = crdSchemas.get(v);
      if (!share) {
        share = sharedCrdSchemas(v);
        crdSchemas.set(v, share);
      }
      return share();
    };
    const bySource = new Map<
      string,
      {
        factory: SourceFactory;
        config: Record<string, unknown>;
        runners: PipelineRunner[];
        redact: Set<string>;
        consumers: SourceConsumer[];
      }
    >();
    for (const item of loaded) {
      const { config } = item;
      const name = config.metadata.name;
      const { type: sourceType, ...sourceConfig } = config.spec.source;
      const factory = sourceType
        ? find<SourceFactory>(registry.sources, sourceType, 'source')
        : (registry.sources[0] as SourceFactory);
      const sinks = config.spec.sinks.map((sc) => {
        const factory = find<SinkFactory>(registry.sinks, sc.type, 'sink');
        const { name: sinkName, type: _t, delivery, ...own } = sc;
        const ctx = ctxFor(name, sinkName);
        const sink = factory.create(own, ctx);
        return { id: ctx.id, queue: null as unknown as DeliveryQueue, sink, delivery, ctx };
      });
      const deadLetter = deadLetterOf(config.spec.deadLetter, name);
      for (const s of sinks) {
        s.queue = new DeliveryQueue(s.sink, resolveDeliveryConfig(s.delivery as never), {
          id: s.id,
          logger: s.ctx.logger,
          metrics: opts.metrics,
          deadLetter,
          stateDir: opts.stateDir,
          outboxSettles: opts.outboxDurable ?? true,
        });
        this.queues.push(s.queue);
      }
      const stages = (config.spec.stages ?? []).map((st, i) => {
        const factory = find<StageFactory>(registry.stages, st.type, 'stage');
        const { name: stageName, type: _t, ...own } = st;
        const ctx = ctxFor(name, stageName ?? `${st.type}-${i}`);
        return { id: ctx.id, stage: factory.create(own, ctx) };
      });
      const ev = config.spec.events ?? {};
      // level 3: the object against its CRD's schema (fetched and watched on start, once per CRD)
      const crdSchema = config.spec.validation?.crdSchema ? crdSchemaHandle(item, factory, sourceConfig) : undefined;
      const runner = new PipelineRunner({
        name,
        eventOptions: {
          clusterName: opts.clusterName,
          ...(ev.typePrefix !== undefined && { typePrefix: ev.typePrefix }),
          ...(ev.phasePath !== undefined && { phasePath: ev.phasePath }),
          ...(ev.redact !== undefined && { redact: ev.redact }),
          ...(ev.maxBytes !== undefined && { maxBytes: ev.maxBytes }),
          ...(ev.traceContext?.enabled !== false && { traceContext: traceContextOption(ev.traceContext ?? {}) }),
        },
        validator: crdSchema ? createEventValidator({ objectSchema: crdSchema }) : validator,
        ...(crdSchema && { crdSchema }),
        stages,
        sinks: sinks.map((s) => ({ id: s.id, queue: s.queue })),
        deadLetter,
        logger: opts.logger.child({ pipeline: name }),
        metrics: opts.metrics,
      });
      this.pipelines.push(runner);
      const key = `${factory.type}:${factory.shareKey(sourceConfig)}`;
      let group = bySource.get(key);
      if (group) group.runners.push(runner);
      else {
        group = { factory, config: sourceConfig, runners: [runner], redact: new Set(), consumers: [] };
        bySource.set(key, group);
      }
      for (const r of ev.redact ?? []) group.redact.add(r);
      // `initial` is each pipeline's own: a pipeline added later gets (or skips) the existing objects
      const initial = sourceConfig.initial === 'skip' ? 'skip' : 'emit';
      for (const s of sinks) group.consumers.push({ id: s.id, initial });
    }
    for (const [key, { factory, config, runners, redact, consumers }] of bySource) {
      const names = runners.map((r) => r.name);
      const label = names.length === 1 ? `${names[0]}/source` : `shared/${factory.type}-${this.sources.length}`;
      const ctx = {
        ...ctxFor(names[0] as string, 'source'),
        id: label,
        logger: opts.logger.child({ component: label, pipelines: names }),
        receiver: fanOut(runners),
        redact: [...redact].sort(),
        consumers,
        ...(opts.elector && { leadership: this.leadership }),
      };
      const warm = opts.elector !== undefined && factory.warmStandby === true;
      this.sources.push({ key, id: label, source: factory.create(config, ctx), pipelines: names, warm });
    }
  }

  /**
   * The sources' state now: ready when every source is ready, live when every source is live;
   * each reason is prefixed with the source's component id (and its pipelines when shared). Not
   * ready either while a sink's outbox refuses events (full, or its disk is): its source is paused.
   */
  status(): ComponentStatus {
    const el = this.opts.elector;
    if (el && !this.started) {
      const { identity, leader } = el.state();
      return { ready: true, live: true, reasons: [`standby (${identity}): ${leader ?? 'no one'} leads`] };
    }
    let ready = true;
    let live = true;
    const reasons: string[] = [];
    for (const { id, source, pipelines } of this.sources) {
      const st = source.status();
      ready &&= st.ready;
      live &&= st.live;
      const who = pipelines.length > 1 ? `${id} (pipelines ${pipelines.join(', ')})` : id;
      for (const r of st.reasons) reasons.push(`${who}: ${r}`);
    }
    for (const q of this.queues) {
      const st = q.status();
      ready &&= st.ready;
      reasons.push(...st.reasons);
    }
    return { ready, live, reasons };
  }

  /**
   * Starts sinks (via the pipelines) and then sources; returns quickly. With an elector: starts
   * the warm-standby sources and campaigns; the rest once this process leads.
   */
  async start(signal: AbortSignal): Promise<void> {
    const el = this.opts.elector;
    if (!el) return this.startComponents(signal);
    el.onChange((leading) => {
      if (!leading || this.started || this.shutdownPromise) return;
      this.opts.logger.info('elected leader: starting the sinks, then resuming from the checkpoint', {
        identity: el.identity,
      });
      void this.startComponents(signal).catch((err: unknown) =>
        this.opts.logger.error('start after the election failed', {
          code: ErrorCode.Internal,
          error: errorMessage(err),
        }),
      );
    });
    this.warmStarted = true;
    for (const s of this.sources) if (s.warm) await s.source.start(signal);
    await el.start(signal);
    this.opts.logger.info('crbridge started as a candidate; emitting nothing until elected', {
      identity: el.identity,
      pipelines: this.pipelines.map((p) => p.name),
      warmSources: this.sources.filter((s) => s.warm).length,
    });
  }

  private startComponents(signal: AbortSignal): Promise<void> {
    this.started ??= (async () => {
      for (const p of this.pipelines) await p.start(signal);
      // the sinks are up: the warm sources may hand on now
      this.leadingNow = true;
      for (const w of [...this.leadWaiters]) w();
      for (const s of this.sources) if (!s.warm) await s.source.start(signal);
      this.opts.logger.info('crbridge started', {
        pipelines: this.pipelines.map((p) => p.name),
        sources: this.sources.length,
      });
    })();
    return this.started;
  }

  /**
   * Stops sources, then drains and stops the pipelines' sinks, then releases the leadership (so
   * the next leader starts only after this one stopped delivering). Idempotent.
   */
  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      await this.started?.catch(() => {});
      const running = this.sources.filter((s) => this.started || (this.warmStarted && s.warm));
      await Promise.allSettled(running.map((s) => s.source.shutdown(deadline))).then((rs) => this.report(rs, 'source'));
      if (this.started)
        await Promise.allSettled(this.pipelines.map((p) => p.shutdown(deadline))).then((rs) =>
          this.report(rs, 'pipeline'),
        );
      await this.opts.elector?.shutdown(deadline);
    })();
    return this.shutdownPromise;
  }

  private report(results: PromiseSettledResult<void>[], what: string): void {
    for (const r of results)
      if (r.status === 'rejected') this.opts.logger.error(`${what} shutdown failed`, { error: errorMessage(r.reason) });
  }
}

function find<F extends { type: string }>(list: readonly F[], type: string, kind: string): F {
  const f = list.find((x) => x.type === type);
  if (!f) throw new CrbridgeError(ErrorCode.ConfigInvalid, `unknown ${kind} type "${type}"`);
  return f;
}
