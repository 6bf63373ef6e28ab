/**
 * One running pipeline: turns each delta into a CloudEvent, validates it, runs the stages in
 * order and enqueues the result on every sink's delivery queue. An event a stage changed is
 * checked again before any sink sees it (envelope, data when replaced, size). Invalid events and
 * stage errors are dead-lettered, counted and logged once per kind; the pipeline goes on. A dead letter is
 * written durably (retried until stored, `DurableDeadLetter`): the delta settles only then.
 *
 * Level-3 validation (`spec.validation.crdSchema`): the runner starts the object-schema validator
 * (the source factory's `objectSchema`: for Kubernetes, a reflector of the CRD) with its sinks and holds the first delta until the
 * first fetch has finished (at most `CRD_FIRST_FETCH_WAIT_MS`), so the initial list is checked too.
 *
 * Ordering: `push` is called in source order and enqueues in that order, so every sink sees one
 * object's events in the order they happened. A delta with `targets` goes to those sinks only; an
 * event a stage limited to some sinks (`withDestinations`) goes to those only and settles at once
 * for the others.
 */
import { type DeltaReceiver, destinationsOf, type Lifecycle, type Stage, withoutDestinations } from '../component.ts';
import { type DeadLetter, type DeadLetterRetry, DurableDeadLetter } from '../delivery/dead-letter.ts';
import type { DeliveryQueue } from '../delivery/queue.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import { approxEventBytes, buildEvent, DEFAULT_MAX_BYTES, type EventOptions } from '../events/build.ts';
import type { CloudEvent } from '../events/cloudevent.ts';
import type { CrdSchemaValidator } from '../events/crd-schema.ts';
import type { Delta } from '../events/delta.ts';
import { errorKind } from '../events/validate.ts';
import type { Logger } from '../telemetry/logger.ts';
import { componentMetrics, type Metrics } from '../telemetry/metrics.ts';

export interface EventValidator {
  validate(e: CloudEvent): { ok: true } | { ok: false; level: string; errors: string[] };
  /** What a stage changed in an event that passed `validate` (see events/validate.ts); default: `validate`. */
  validateChanged?(e: CloudEvent, checked: CloudEvent): { ok: true } | { ok: false; level: string; errors: string[] };
}

export interface PipelineParts {
  name: string;
  eventOptions: EventOptions;
  validator: EventValidator;
  stages: { id: string; stage: Stage }[];
  sinks: { id: string; queue: DeliveryQueue }[];
  deadLetter: DeadLetter;
  logger: Logger;
  metrics: Metrics;
  /**
   * The level-3 schema source when `spec.validation.crdSchema` is on (the `validator` then checks
   * objects with it): started with the pipeline, stopped at shutdown.
   */
  crdSchema?: Pick<CrdSchemaValidator, 'start' | 'stop'>;
  /** Backoff of failed dead-letter writes (first and longest wait); defaults in `dead-letter.ts`. */
  deadLetterRetry?: DeadLetterRetry;
}

const settledNow = Promise.resolve();
/** How long the first delta waits for the first CRD fetch before going on without level 3. */
export const CRD_FIRST_FETCH_WAIT_MS = 10_000;
/**
 * Most of the pipeline's own dead letters (invalid events, stage errors) being written at once;
 * while the destination fails and this many wait, `push` waits too (back-pressure).
 */
export const MAX_PENDING_DEAD_LETTERS = 1000;

export class PipelineRunner implements DeltaReceiver, Lifecycle {
  readonly name: string;
  private readonly parts: PipelineParts;
  private readonly m: ReturnType<typeof componentMetrics>;
  private readonly invalid: ReturnType<Metrics['counter']>;
  private shutdownPromise: Promise<void> | undefined;
  /** Until the first CRD fetch finished (or `CRD_FIRST_FETCH_WAIT_MS` passed). */
  private crdReady: Promise<void> | undefined;
  private readonly dead: DurableDeadLetter;
  /**
   * The pipeline's own dead letters not yet written. Every delta pushed meanwhile settles only after
   * them, so deltas settle in push order (a checkpoint never passes an unwritten dead letter).
   */
  private readonly pendingDeadLetters = new Set<Promise<void>>();
  private readonly deadLetterRoom: (() => void)[] = [];
  /** Sink id (`<pipeline>/<sink>`) → its name in the pipeline file, which stages route by. */
  private readonly sinkNames: Map<string, string>;

  constructor(parts: PipelineParts) {
    this.parts = parts;
    this.name = parts.name;
    this.sinkNames = new Map(
      parts.sinks.map((s) => [s.id, s.id.startsWith(`${parts.name}/`) ? s.id.slice(parts.name.length + 1) : s.id]),
    );
    this.dead = new DurableDeadLetter(parts.deadLetter, {
      id: parts.name,
      logger: parts.logger,
      metrics: parts.metrics,
      retry: parts.deadLetterRetry,
    });
    this.m = componentMetrics(parts.metrics);
    this.invalid = parts.metrics.counter(
      'crbridge_events_invalid_total',
      'Events that failed validation and were dead-lettered, by pipeline and level (envelope, data, object).',
    );
  }

  async start(signal: AbortSignal): Promise<void> {
    // a dead-letter sink is up before any queue may give an event up to it
    await this.parts.deadLetter.start?.(signal);
    for (const s of this.parts.sinks) await s.queue.start(signal);
    const crd = this.parts.crdSchema;
    if (crd) {
      let timer: NodeJS.Timeout | undefined;
      const waited = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CRD_FIRST_FETCH_WAIT_MS);
        timer.unref?.();
      });
      const first = crd
        .start()
        .catch(() => {}) // refresh reports its own errors
        .finally(() => clearTimeout(timer));
      this.crdReady = Promise.race([first, waited]).then(() => {
        this.crdReady = undefined;
      });
    }
  }

  async push(delta: Delta, signal?: AbortSignal): Promise<{ settled: Promise<void> }> {
    const { logger } = this.parts;
    const id = this.name;
    const sinks = delta.targets ? this.parts.sinks.filter((s) => delta.targets?.includes(s.id)) : this.parts.sinks;
    if (sinks.length === 0) return { settled: settledNow }; // for other consumers only
    if (this.crdReady) await this.crdReady;
    this.m.received.inc({ component: id });
    let event: CloudEvent;
    try {
      event = buildEvent(delta, this.parts.eventOptions);
    } catch (err) {
      // A builder failure is a bug or truly malformed object: keep the delta in the dead letters.
      this.m.errors.inc({ component: id, code: ErrorCode.EventInvalid });
      logger.once('error', `build:${errorMessage(err)}`, 'could not build an event; dead-lettered', {
        code: ErrorCode.EventInvalid,
        error: errorMessage(err),
        object: `${delta.object.metadata?.namespace ?? ''}/${delta.object.metadata?.name ?? ''}`,
      });
      await this.deadLetter(
        signal,
        {
          specversion: '1.0',
          id: `unbuilt-${delta.object.metadata?.uid}`,
          source: 'crbridge',
          type: 'io.crbridge.unbuilt',
          datacontenttype: 'application/json',
          data: { object: delta.object, reason: delta.reason },
        } as CloudEvent,
        ErrorCode.EventInvalid,
        [errorMessage(err)],
      );
      return { settled: this.settledAfter([]) };
    }
    if (!(await this.valid(event, this.parts.validator.validate(event), '', signal)))
      return { settled: this.settledAfter([]) };
    let events: CloudEvent[] = [event];
    for (const { id: stageId, stage } of this.parts.stages) {
      if (events.length === 0) break;
      const next: CloudEvent[] = [];
      for (const e of events) {
        this.m.received.inc({ component: stageId });
        try {
          const out = stage.process(e);
          const produced = Array.isArray(out) ? out : await out;
          for (const x of produced) next.push(x);
          if (produced.length === 0) this.m.dropped.inc({ component: stageId });
        } catch (err) {
          // a CEL failure (onError: deadLetter) carries its code; anything else is a bug
          const code = err instanceof CrbridgeError ? err.code : ErrorCode.Internal;
          this.m.errors.inc({ component: stageId, code });
          logger.once(
            code === ErrorCode.Internal ? 'error' : 'warn',
            `stage:${stageId}:${errorMessage(err)}`,
            'stage failed; event dead-lettered',
            { code, stage: stageId, error: errorMessage(err), subject: e.subject, id: e.id },
          );
          await this.deadLetter(signal, e, code, [`stage ${stageId}: ${errorMessage(err)}`]);
        }
      }
      this.m.sent.inc({ component: stageId }, next.length);
      events = next;
    }
    const settled: Promise<void>[] = [];
    let handed = 0;
    for (const routed of events) {
      // a stage may have limited the event to some sinks: the others never see it, and it
      // settles for them at once (it must not hold back their checkpoint)
      const names = destinationsOf(routed);
      const to = names ? sinks.filter((s) => names.includes(this.sinkNames.get(s.id) ?? '')) : sinks;
      if (to.length === 0) continue;
      const e = withoutDestinations(routed);
      // what a stage changed is checked again before any sink sees it: the envelope (a new
      // attribute), the data when it was replaced, and the size
      if (e !== event && !(await this.valid(e, this.afterStages(e, event), ' after the stages', signal))) continue;
      for (const s of to) settled.push((await s.queue.enqueue(e, signal)).settled);
      handed++;
    }
    this.m.sent.inc({ component: id }, handed);
    return { settled: this.settledAfter(settled) };
  }

  /** The verdict on an event a stage produced from `built`: envelope, data if replaced, size. */
  private afterStages(e: CloudEvent, built: CloudEvent): ReturnType<EventValidator['validate']> {
    const { validator } = this.parts;
    const verdict = validator.validateChanged ? validator.validateChanged(e, built) : validator.validate(e);
    if (!verdict.ok) return verdict;
    const max = this.parts.eventOptions.maxBytes ?? DEFAULT_MAX_BYTES;
    const bytes = e.data === built.data ? approxEventBytes(built) : approxEventBytes(e);
    if (bytes > max)
      return { ok: false, level: 'size', errors: [`the event is ${bytes} bytes, over events.maxBytes (${max})`] };
    return verdict;
  }

  /** True when `verdict` is ok; else counts, logs once per kind and dead-letters the event. */
  private async valid(
    event: CloudEvent,
    verdict: ReturnType<EventValidator['validate']>,
    where: string,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    if (verdict.ok) return true;
    const id = this.name;
    this.m.errors.inc({ component: id, code: ErrorCode.EventInvalid });
    this.invalid.inc({ component: id, level: verdict.level });
    // once per kind of error: array indices in the pointer do not make a new kind
    const kind = errorKind(verdict.errors[0] ?? '');
    this.parts.logger.once(
      'warn',
      `invalid:${id}:${verdict.level}${where}:${kind}`,
      `event failed validation${where}; dead-lettered`,
      {
        code: ErrorCode.EventInvalid,
        validationLevel: verdict.level, // not `level`: that is the log record's own
        kind,
        errors: verdict.errors.slice(0, 5),
        subject: event.subject,
        id: event.id,
      },
    );
    await this.deadLetter(
      signal,
      event,
      ErrorCode.EventInvalid,
      verdict.errors.map((e) => `${verdict.level}${where}: ${e}`),
    );
    return false;
  }

  /**
   * Settles once `own` and every dead letter of this pipeline still being written have; rejects
   * (CRB_SHUTDOWN) when one of them could not be finished before the shutdown deadline.
   */
  private settledAfter(own: Promise<void>[]): Promise<void> {
    const all = this.pendingDeadLetters.size === 0 ? own : [...own, ...this.pendingDeadLetters];
    if (all.length === 0) return settledNow;
    const settled = Promise.all(all).then(() => undefined);
    settled.catch(() => {}); // the source handles it; a dropped one must not become unhandled
    return settled;
  }

  /**
   * Starts writing a dead letter (durably: retried until stored) and counts it once written; the
   * delta being pushed settles only after it. Waits first while too many are still being written
   * (`signal` aborts that wait: the push then rejects and the delta counts as not handed on).
   */
  private async deadLetter(
    signal: AbortSignal | undefined,
    event: CloudEvent,
    code: string,
    errors: string[],
  ): Promise<void> {
    while (this.pendingDeadLetters.size >= MAX_PENDING_DEAD_LETTERS) {
      signal?.throwIfAborted();
      await new Promise<void>((resolve) => {
        const done = () => {
          signal?.removeEventListener('abort', done);
          const i = this.deadLetterRoom.indexOf(done);
          if (i >= 0) this.deadLetterRoom.splice(i, 1);
          resolve();
        };
        this.deadLetterRoom.push(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    }
    const written = this.dead
      .write(
        { event, component: this.name, code, errors, time: new Date().toISOString(), attempts: 0 },
        undefined, // retried until the shutdown deadline (`close`), not cut short by the source stopping
      )
      .then(() => this.m.deadLettered.inc({ component: this.name }));
    this.pendingDeadLetters.add(written);
    written
      .catch(() => {})
      .finally(() => {
        this.pendingDeadLetters.delete(written);
        this.deadLetterRoom.shift()?.();
      });
  }

  /** What is still in flight: per sink queue events and bytes, and dead letters being written. */
  pendingReport(): {
    pipeline: string;
    queues: { sink: string; events: number; bytes: number }[];
    deadLetters: number;
  } {
    return {
      pipeline: this.name,
      queues: this.parts.sinks.map((s) => ({ sink: s.id, events: s.queue.depth, bytes: s.queue.bytes })),
      deadLetters: this.dead.pending,
    };
  }

  /**
   * Drains the sinks' queues, then lets pending dead letters finish until `deadline`, closes the
   * file and, last, shuts down a dead-letter sink.
   */
  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.parts.crdSchema?.stop();
      await Promise.all(this.parts.sinks.map((s) => s.queue.shutdown(deadline)));
      await this.dead.close(deadline);
      await this.parts.deadLetter.shutdown?.(deadline);
    })();
    return this.shutdownPromise;
  }
}

/**
 * Hands each delta of one shared source to every pipeline that uses it, in order; the delta is
 * settled when every pipeline has settled it.
 */
export function fanOut(receivers: readonly DeltaReceiver[]): DeltaReceiver {
  if (receivers.length === 1) return receivers[0] as DeltaReceiver;
  return {
    async push(delta, signal) {
      const settled: Promise<void>[] = [];
      for (const r of receivers) settled.push((await r.push(delta, signal)).settled);
      return { settled: Promise.all(settled).then(() => undefined) };
    },
  };
}
