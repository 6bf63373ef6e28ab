/**
 * The delivery queue in front of every sink: an in-memory FIFO bounded by events and by bytes, with
 * back-pressure; a dispatcher that hands up to `concurrency` batches at once to `sink.send`, never
 * two holding events of one object (lanes per object: order per object, not globally); retry per
 * object with exponential backoff and full jitter, a sink-wide pause for Retry-After, a maximum
 * age per event that only counts while the endpoint answers, a loud report of an endpoint down for
 * long; and the dead-letter destination for permanent failures and exhausted retries (written
 * durably: a failing write is retried and holds its objects back). Sinks only deliver; everything
 * about "again, later, or never" lives here once (after the OpenTelemetry Collector's exporterhelper
 * sending_queue + retry_on_failure and Vector's sinks/util). With `delivery.outbox.enabled` every
 * event is also stored in the sink's durable outbox (`outbox.ts`; its SQLite work on a worker
 * thread, `outbox-thread.ts`) before it counts as settled, is removed once delivered or
 * dead-lettered, and what a previous process left there is replayed first.
 */
import { backoffDelay } from '../backoff.ts';
import type { DeliveryResult, Lifecycle, OutboundEvent, Sink } from '../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import { approxEventBytes } from '../events/build.ts';
import type { CloudEvent } from '../events/cloudevent.ts';
import { toStructuredJsonKeep } from '../events/serialize.ts';
import type { Logger } from '../telemetry/logger.ts';
import { componentMetrics, type Metrics, secondsSince } from '../telemetry/metrics.ts';
import { type DeliveryConfig, type RetryConfig, retryAfterWait } from './config.ts';
import { type DeadLetter, type DeadLetterRetry, DurableDeadLetter } from './dead-letter.ts';
import { type Outbox, type OutboxEntry, outboxPath } from './outbox.ts';
import { ThreadedOutbox } from './outbox-thread.ts';

export interface DeliveryQueueContext {
  /** `<pipeline>/<sink name>`: the `component` label of metrics and dead letters. */
  id: string;
  logger: Logger;
  metrics: Metrics;
  deadLetter: DeadLetter;
  /** Bytes an event counts against `queueBytes`; default the builder's measured size. */
  sizeOf?: (event: CloudEvent) => number;
  /** Backoff of failed dead-letter writes (first and longest wait); defaults in `dead-letter.ts`. */
  deadLetterRetry?: DeadLetterRetry;
  /**
   * The process's --state-dir: with `delivery.outbox.enabled` the outbox lives at
   * `<stateDir>/outbox/<pipeline>/<sink>.sqlite` (pipeline and sink from `id`). Required then.
   */
  stateDir?: string;
  /**
   * Whether an event stored in the outbox counts as settled (default true). False when the outbox
   * is not durable for whoever resumes (a standby taking over does not see this pod's disk): the
   * event then settles only when delivered or dead-lettered; the outbox still replays after a
   * restart of this process.
   */
  outboxSettles?: boolean;
}

interface Item {
  event: CloudEvent;
  /** The object it belongs to (see {@link objectKey}): its lane. */
  key: string;
  seq: number;
  /** What it counts against `queueBytes`. */
  bytes: number;
  attempts: number;
  /** When this event first failed retryably (for maxElapsedMs). */
  firstFailureAt: number | undefined;
  /** The sink's accumulated down time at `firstFailureAt` (down time does not age an event). */
  downAtFirstFailure: number;
  /** Settled, dead-lettered or failed: nothing more happens to it. */
  done: boolean;
  /** Its seq in the outbox once stored (replayed events have it from the start). */
  stored: number | undefined;
  settle: () => void;
  fail: (err: CrbridgeError) => void;
}

/**
 * One object's lane: its events not in flight (seq order) and its retry state while they fail
 * (its own streak, not the sink's). A lane is in at most one of the dispatcher's two heaps: `ready`
 * (not busy, not backing off, has events; ordered by its oldest event) or `backoff` (ordered by
 * when its wait ends); busy or empty lanes are in neither.
 */
interface Lane {
  key: string;
  /** Its events not in flight, in seq order (retried ones go back to the front). */
  items: Item[];
  /** A batch holding its events is in flight. */
  busy: boolean;
  streak: number;
  /** Not sent again before this time (epoch ms). */
  until: number;
  /** Which heap it is in, and where. */
  heap: LaneHeap | undefined;
  pos: number;
}

interface RoomWaiter {
  bytes: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** After the outbox's disk was full, how long before storing is tried again. */
const OUTBOX_RETRY_MS = 1000;

/**
 * The failed attempts in a row of one object before "delivery failing" is logged at warn: a first
 * failure that its retry clears (a partition leader moving, a reset connection) stays at debug.
 */
export const FAILING_WARN_STREAK = 2;

/** How long past its deadline shutdown waits for a worker or sink that ignores the abort signal. */
const SHUTDOWN_GRACE_MS = 100;

/**
 * The object an event belongs to, whose events are delivered in order: its `partitionkey` (the
 * object's uid as the builder sets it), else its `k8suid`, else its `subject`; events with none of
 * them share one lane (kept in order among themselves).
 */
export function objectKey(event: CloudEvent): string {
  const e = event as Record<string, unknown>;
  for (const k of ['partitionkey', 'k8suid', 'subject'] as const) {
    const v = e[k];
    if (typeof v === 'string' && v !== '') return `${k[0]}:${v}`;
  }
  return '';
}

/**
 * The wait before retry number `streak` (1-based) of one object's failure streak: exponential
 * growth capped at maxIntervalMs, drawn uniformly from [wait × (1 − randomizationFactor), wait]
 * (randomizationFactor 1 = full jitter, so maxIntervalMs is a true cap), and never shorter than
 * `retryAfterMs` cut to `retry.maxRetryAfterMs` ({@link retryAfterWait}).
 */
export function retryDelay(retry: RetryConfig, streak: number, retryAfterMs = 0, random = Math.random): number {
  const rf = Math.min(1, Math.max(0, retry.randomizationFactor));
  const wait = backoffDelay(streak, retry.initialIntervalMs, retry.maxIntervalMs, random, retry.multiplier, [
    1 - rf,
    1,
  ]);
  return retryAfterWait(wait, retryAfterMs, retry.maxRetryAfterMs);
}

/**
 * One sink's queue and its dispatcher.
 *
 * Ordering: one FIFO in `enqueue` order; up to `concurrency` batches of at most
 * `min(sink.maxBatch, config.maxBatch)` events are in flight at once. A batch never holds an event
 * of an object (see {@link objectKey}) that is in flight, waiting out its backoff, or queued
 * before an event left out; so each object's events are sent in queue order, one batch at a time.
 * An event that failed retryably goes back to its place and its object waits out its own backoff
 * (its own streak): later events of that object wait behind it, other objects keep flowing. A
 * `Retry-After` pauses the whole sink (the endpoint asked), capped at `retry.maxRetryAfterMs`.
 * Back-pressure: held-back events stay counted against `queueCapacity`/`queueBytes`, so a failing
 * object (or endpoint) eventually makes `enqueue` wait.
 * Settling: each event settles on its own, in any order across objects (and within one object, an
 * event after a dead-lettered one may settle before that dead letter is written). That is enough:
 * the source's checkpoint rule (`OrderedCommits` in `src/sources/kubernetes/commits.ts`) commits
 * an object's entry only past changes whose earlier changes of the same object all settled.
 * Age: an event is dead-lettered once it has failed for `retry.maxElapsedMs` counting only time
 * while the endpoint answers (some send got an `ok` or `permanent`); while every send fails, the
 * endpoint is down: nothing ages, and past `outageAlertMs` it is reported (gauge, one error log).
 * Idempotency: an event may be sent more than once (retries); its `id` stays the same.
 * Outbox (`delivery.outbox.enabled`): `start` opens it and queues what it holds (seq order, so per
 * object in order, the same ids) before any new event; `enqueue` appends each event and its
 * `settled` resolves once stored (or delivered, if that comes first); an event is acked when
 * delivered or its dead letter written. A full outbox (bounds or disk) makes `enqueue` wait until
 * it has room again, and events refused meanwhile are stored again in seq order before any later
 * one. Shutdown closes it: what is not delivered stays there for the next process.
 */
export class DeliveryQueue implements Lifecycle {
  private readonly sink: Sink;
  private readonly config: DeliveryConfig;
  private readonly ctx: DeliveryQueueContext;
  private readonly m: ReturnType<typeof componentMetrics>;
  private readonly labels: { component: string };
  private readonly dead: DurableDeadLetter;
  private readonly sizeOf: (event: CloudEvent) => number;
  /** Batches handed to the sink and not yet applied. */
  private readonly inFlight = new Set<Item[]>();
  /** Objects with events waiting, in flight or in a failure streak (the others have no lane). */
  private readonly lanes = new Map<string, Lane>();
  /** Lanes whose oldest event may be sent now, oldest first: taking a batch never walks blocked objects. */
  private readonly ready = new LaneHeap((a, b) => (a.items[0] as Item).seq - (b.items[0] as Item).seq);
  /** Lanes waiting out a backoff, the one whose wait ends first on top. */
  private readonly backoff = new LaneHeap((a, b) => a.until - b.until);
  /** Lanes in a failure streak. */
  private failingLanes = 0;
  /** Events waiting or in flight. */
  private count = 0;
  private queuedBytes = 0;
  private readonly roomWaiters: RoomWaiter[] = [];
  /** Aborted at the shutdown deadline or when the start signal aborts: stops sends and backoff waits. */
  private readonly stop = new AbortController();
  private nextSeq = 1;
  private wakeWorker: (() => void) | undefined;
  private closing = false;
  /** Set once shutdown has given up on what is left: a late send result changes nothing. */
  private finished = false;
  private worker: Promise<void> | undefined;
  private shutdownPromise: Promise<void> | undefined;
  /** No send before this (a Retry-After). */
  private pausedUntil = 0;
  /** Since when no send has been answered (every one failed retryably); undefined while it answers. */
  private downSince: number | undefined;
  /** Down time of past outages, ms. */
  private downTotal = 0;
  private outageReported = false;
  /** When the first object of the current failure episode failed (for the recovery log). */
  private failingSince = 0;
  /** Whether the current failure episode was warned of (its retry failed too). */
  private failingWarned = false;
  private readonly concurrency: number;
  private readonly outbox: Outbox | undefined;
  /** Resolves once the outbox's replay is all queued (at once without an outbox). */
  private replayed: Promise<void> = Promise.resolve();
  /** Events whose append was refused (outbox full), in seq order, to be stored before any later one. */
  private unstored: Item[] = [];
  private storing: Promise<void> | undefined;

  constructor(sink: Sink, config: DeliveryConfig, ctx: DeliveryQueueContext) {
    this.sink = sink;
    this.config = config;
    this.ctx = ctx;
    this.m = componentMetrics(ctx.metrics);
    this.labels = { component: ctx.id };
    this.sizeOf = ctx.sizeOf ?? approxEventBytes;
    this.dead = new DurableDeadLetter(ctx.deadLetter, {
      id: ctx.id,
      logger: ctx.logger,
      metrics: ctx.metrics,
      retry: ctx.deadLetterRetry,
    });
    if (config.outbox.enabled) {
      if (!ctx.stateDir)
        throw new CrbridgeError(ErrorCode.DeliveryConfig, `${ctx.id}: delivery.outbox needs a state dir`);
      const slash = ctx.id.indexOf('/');
      // its SQLite work on a worker thread, off the pipeline's
      this.outbox = new ThreadedOutbox({
        path: outboxPath(ctx.stateDir, ctx.id.slice(0, slash), ctx.id.slice(slash + 1)),
        id: ctx.id,
        logger: ctx.logger,
        metrics: ctx.metrics,
        config: config.outbox,
      });
    }
    const wanted = Math.max(1, config.concurrency ?? sink.defaultConcurrency ?? 1);
    this.concurrency = Math.min(wanted, Math.max(1, sink.maxConcurrency ?? wanted));
    if (this.concurrency < wanted)
      ctx.logger.warn('delivery.concurrency is above what this sink can take; using its limit', {
        code: ErrorCode.DeliveryConfig,
        concurrency: wanted,
        limit: this.concurrency,
      });
    // a sink's series exist from the start (at 0), for dashboards, alerts and `crbridge top`
    this.gauges();
  }

  /** Events waiting or in flight. */
  get depth(): number {
    return this.count;
  }

  /** Bytes of the events waiting or in flight (as counted against `queueBytes`). */
  get bytes(): number {
    return this.queuedBytes;
  }

  /** Most sends in flight at once: `delivery.concurrency`, else the sink's default, within its limit. */
  get maxInFlight(): number {
    return this.concurrency;
  }

  private get batchLimit(): number {
    return Math.max(1, Math.min(this.sink.maxBatch, this.config.maxBatch));
  }

  /** Room for one more event of `bytes`: under both bounds, or the queue is empty (never a deadlock). */
  private fits(count: number, queued: number, bytes: number): boolean {
    return count === 0 || (count < this.config.queueCapacity && queued + bytes <= this.config.queueBytes);
  }

  /**
   * Accepts an event. Resolves when there is room in the queue, by count and by bytes, and (with
   * the outbox) in the outbox (back-pressure); the returned `settled` resolves once the event is
   * delivered or its dead letter is written, or, with the outbox, once it is stored there (whichever
   * comes first), and rejects with a CrbridgeError of code CRB_SHUTDOWN when the shutdown deadline
   * comes first (the source then keeps its checkpoint before it). Never rejects for delivery
   * failures. `enqueue` itself rejects only when the queue is shutting down or `signal` aborts while
   * waiting for room (with the signal's reason).
   */
  async enqueue(event: CloudEvent, signal?: AbortSignal): Promise<{ settled: Promise<void> }> {
    await this.replayed;
    const bytes = this.sizeOf(event);
    await this.room(bytes, signal);
    // back-pressure from the outbox: wait while earlier events are still refused
    while (!this.closing && this.storing) {
      signal?.throwIfAborted();
      await abortable(this.storing, signal);
      await this.room(bytes, signal);
    }
    if (this.closing) throw this.shutdownError('the delivery queue is shut down');
    let settle!: () => void;
    let fail!: (err: CrbridgeError) => void;
    const settled = new Promise<void>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    // A caller that drops `settled` must not turn a shutdown rejection into an unhandled one.
    settled.catch(() => {});
    const item: Item = {
      event,
      key: objectKey(event),
      seq: this.nextSeq++,
      bytes,
      attempts: 0,
      firstFailureAt: undefined,
      downAtFirstFailure: 0,
      done: false,
      stored: undefined,
      settle,
      fail,
    };
    this.add(item);
    if (this.outbox) this.store([item]);
    return { settled };
  }

  /** Waits until an event of `bytes` fits the in-memory bounds (or the queue is closing). */
  private async room(bytes: number, signal?: AbortSignal): Promise<void> {
    while (!this.closing && !this.fits(this.count, this.queuedBytes, bytes)) {
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const waiter: RoomWaiter = { bytes, resolve: done, reject: fail };
        function done() {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        }
        function fail(e: unknown) {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        }
        const onAbort = () => {
          const i = this.roomWaiters.indexOf(waiter);
          if (i >= 0) this.roomWaiters.splice(i, 1);
          fail(signal?.reason);
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        this.roomWaiters.push(waiter);
      });
    }
  }

  private add(item: Item): void {
    let lane = this.lanes.get(item.key);
    if (!lane) {
      lane = { key: item.key, items: [], busy: false, streak: 0, until: 0, heap: undefined, pos: -1 };
      this.lanes.set(item.key, lane);
    }
    lane.items.push(item);
    if (lane.items.length === 1) this.place(lane, Date.now());
    this.count++;
    this.queuedBytes += item.bytes;
    this.m.received.inc(this.labels);
    this.gauges();
    this.wake();
  }

  /**
   * Appends `items` (in seq order) to the outbox; once stored they count as settled. Refused ones
   * (outbox full, disk full, a write error) go to `unstored` and are stored again, in order, by
   * {@link storeLater}, while `enqueue` waits.
   */
  private store(items: Item[]): void {
    const outbox = this.outbox as Outbox;
    if (this.storing || !outbox.status().ready) {
      this.refused(items);
      return;
    }
    outbox.append(items.map((it) => ({ key: it.key, id: it.event.id, body: toStructuredJsonKeep(it.event) }))).then(
      (seqs) => {
        for (let i = 0; i < items.length; i++) this.stored(items[i] as Item, seqs[i] as number);
      },
      (err: unknown) => {
        if (err instanceof CrbridgeError && err.code === ErrorCode.Shutdown) return; // shutdown rejects them
        this.refused(items, err);
      },
    );
  }

  private stored(it: Item, seq: number): void {
    it.stored = seq;
    if (it.done) this.outbox?.ack([seq]);
    else if (this.ctx.outboxSettles !== false) it.settle();
  }

  private refused(items: Item[], err?: unknown): void {
    for (const it of items) insertBySeq(this.unstored, it);
    if (err !== undefined && !(err instanceof CrbridgeError && err.code === ErrorCode.OutboxFull))
      this.ctx.logger.once('error', `${this.ctx.id}:outbox-store`, 'cannot store events in the outbox; retrying', {
        code: err instanceof CrbridgeError ? err.code : ErrorCode.OutboxIo,
        error: errorMessage(err),
      });
    this.storing ??= this.storeLater().finally(() => {
      this.storing = undefined;
    });
  }

  /** Stores the refused events again, oldest first, once the outbox has room; until shutdown. */
  private async storeLater(): Promise<void> {
    const outbox = this.outbox as Outbox;
    while (this.unstored.length > 0 && !this.stop.signal.aborted) {
      try {
        await outbox.whenRoom(this.stop.signal);
        if (!outbox.status().ready) await sleep(OUTBOX_RETRY_MS, this.stop.signal);
      } catch {
        return; // the deadline: what is left is rejected by shutdown
      }
      // delivered (or dead-lettered) meanwhile: nothing to store
      const items = this.unstored.splice(0).filter((it) => !it.done);
      if (items.length === 0) return;
      try {
        const seqs = await outbox.append(
          items.map((it) => ({ key: it.key, id: it.event.id, body: toStructuredJsonKeep(it.event) })),
        );
        for (let i = 0; i < items.length; i++) this.stored(items[i] as Item, seqs[i] as number);
      } catch (err) {
        if (err instanceof CrbridgeError && err.code === ErrorCode.Shutdown) return;
        this.unstored = items.concat(this.unstored);
        if (!(err instanceof CrbridgeError && err.code === ErrorCode.OutboxFull))
          await sleep(OUTBOX_RETRY_MS, this.stop.signal).catch(() => {});
      }
    }
  }

  /**
   * Readiness for /readyz: not ready while the outbox refuses events (full, or its disk is), or
   * while the sink's own `status()` says its destination refuses it, with why. Otherwise ready (a
   * full in-memory queue is ordinary back-pressure).
   */
  status(): { ready: boolean; reasons: string[] } {
    const sink = this.sink.status?.();
    const reasons = (sink?.reasons ?? []).map((r) => `${this.ctx.id}: ${r}`);
    if (!this.outbox) return { ready: sink?.ready ?? true, reasons };
    const st = this.outbox.status();
    return { ready: st.ready && (sink?.ready ?? true), reasons: [...st.reasons, ...reasons] };
  }

  /** Opens the outbox and queues what it holds, in order, before any new event (as room allows). */
  private async replay(): Promise<void> {
    const outbox = this.outbox as Outbox;
    const replay = await outbox.open();
    if (replay.count === 0) return;
    this.ctx.logger.info('replaying the outbox', { events: replay.count, bytes: replay.bytes });
    let done!: () => void;
    this.replayed = new Promise<void>((r) => {
      done = r;
    });
    void (async () => {
      try {
        for await (const batch of replay.batches()) {
          for (const entry of batch) {
            if (this.closing) return;
            const item = this.fromEntry(entry);
            if (!item) continue;
            await this.room(item.bytes);
            if (this.closing) return;
            this.add(item);
          }
        }
      } catch (err) {
        if (!this.closing)
          this.ctx.logger.error('outbox replay failed', { code: ErrorCode.OutboxIo, error: errorMessage(err) });
      } finally {
        done();
      }
    })();
  }

  /** A queue item of a stored event (its CloudEvent rebuilt from the structured JSON, same id). */
  private fromEntry(entry: OutboxEntry): Item | undefined {
    let event: CloudEvent;
    try {
      event = JSON.parse(entry.body) as CloudEvent;
    } catch (err) {
      // the row's checksum held, so this is not damage on disk: leave it there, report it once
      this.ctx.logger.once('error', `${this.ctx.id}:outbox-parse`, 'outbox entry is not JSON; left in the outbox', {
        code: ErrorCode.OutboxCorrupt,
        seq: entry.seq,
        error: errorMessage(err),
      });
      return undefined;
    }
    return {
      event,
      key: entry.key,
      seq: this.nextSeq++,
      bytes: this.sizeOf(event),
      attempts: 0,
      firstFailureAt: undefined,
      downAtFirstFailure: 0,
      done: false,
      stored: entry.seq,
      settle: () => {},
      fail: () => {},
    };
  }

  /** Starts the sink, then the dispatcher. Returns quickly. */
  async start(signal: AbortSignal): Promise<void> {
    if (signal.aborted) this.stop.abort();
    else signal.addEventListener('abort', () => this.stop.abort(), { once: true });
    if (this.outbox) await this.replay();
    await this.sink.start(signal);
    this.worker = this.run().catch((err) => {
      this.ctx.logger.error('delivery worker failed', { code: ErrorCode.Internal, error: err });
    });
  }

  /**
   * Stops taking new events, keeps delivering until the queue is empty or `deadline` passes (then
   * in-flight sends are aborted), then shuts the sink down. Events still undelivered at the
   * deadline are logged and their `settled` rejects (CRB_SHUTDOWN), so a source checkpoint does not
   * move past them. Never waits much past the deadline, even for a sink that ignores its abort
   * signal. Idempotent.
   */
  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.closing = true;
      for (const w of this.roomWaiters.splice(0)) w.reject(this.shutdownError('the delivery queue is shut down'));
      this.wake();
      const timer = setTimeout(() => this.stop.abort(), Math.max(0, deadline - Date.now()));
      try {
        if (this.worker && !(await within(this.worker, deadline + SHUTDOWN_GRACE_MS)))
          this.ctx.logger.warn('the sink did not return from send by the shutdown deadline', {
            code: ErrorCode.Shutdown,
          });
      } finally {
        clearTimeout(timer);
        this.stop.abort();
      }
      this.finished = true;
      const left = [...[...this.lanes.values()].flatMap((l) => l.items), ...[...this.inFlight].flat()].filter(
        (it) => !it.done,
      );
      this.lanes.clear();
      this.ready.clear();
      this.backoff.clear();
      left.sort((a, b) => a.seq - b.seq);
      this.inFlight.clear();
      this.count = 0;
      this.queuedBytes = 0;
      this.gauges();
      const kept = this.outbox && this.ctx.outboxSettles !== false && left.every((it) => it.stored !== undefined);
      if (left.length > 0 && kept)
        this.ctx.logger.info('shut down with events undelivered; they stay in the outbox for the next start', {
          stored: left.length,
          firstSeq: left[0]?.seq,
        });
      else if (left.length > 0) {
        this.ctx.logger.warn('shutdown deadline reached with events undelivered', {
          code: ErrorCode.Shutdown,
          undelivered: left.length,
          firstSeq: left[0]?.seq,
        });
        const err = this.shutdownError(`shut down with ${left.length} events undelivered`);
        for (const it of left) {
          it.done = true;
          it.fail(err);
        }
      }
      const sinkDown = this.sink.shutdown(deadline).catch((err: unknown) => {
        this.ctx.logger.error('sink shutdown failed', { code: ErrorCode.Internal, error: err });
      });
      if (!(await within(sinkDown, deadline + SHUTDOWN_GRACE_MS)))
        this.ctx.logger.warn('the sink did not shut down by the deadline; going on without it', {
          code: ErrorCode.Shutdown,
        });
      // what is not delivered stays stored for the next process (every step is a bounded local commit)
      await this.outbox?.close(deadline).catch((err: unknown) => {
        this.ctx.logger.error('outbox close failed', { code: ErrorCode.OutboxIo, error: errorMessage(err) });
      });
    })();
    return this.shutdownPromise;
  }

  private shutdownError(message: string): CrbridgeError {
    return new CrbridgeError(ErrorCode.Shutdown, `${this.ctx.id}: ${message}`);
  }

  private gauges(): void {
    this.m.queueDepth.set(this.labels, this.count);
    this.m.queueBytes.set(this.labels, this.queuedBytes);
    this.m.inFlight.set(this.labels, this.inFlight.size);
  }

  private wake(): void {
    const w = this.wakeWorker;
    this.wakeWorker = undefined;
    w?.();
  }

  /** Admits waiting enqueuers in order while they fit (the first that does not fit waits on). */
  private releaseRoom(): void {
    let count = this.count;
    let queued = this.queuedBytes;
    while (this.roomWaiters.length > 0) {
      const w = this.roomWaiters[0] as RoomWaiter;
      if (!this.fits(count, queued, w.bytes)) break;
      this.roomWaiters.shift();
      count++;
      queued += w.bytes;
      w.resolve();
    }
  }

  /** The dispatcher: starts batches while there is a free slot and something sendable, else waits. */
  private async run(): Promise<void> {
    for (;;) {
      if (this.stop.signal.aborted || this.finished) break;
      if (this.closing && (this.count === 0 || this.restStored())) break;
      const now = Date.now();
      let nextAt = Number.POSITIVE_INFINITY;
      if (now < this.pausedUntil) nextAt = this.pausedUntil;
      else
        while (this.inFlight.size < this.concurrency) {
          const { batch, retryAt } = this.take(now);
          nextAt = Math.min(nextAt, retryAt);
          if (batch.length === 0) break;
          this.launch(batch);
        }
      await this.idle(nextAt);
    }
    // at the deadline the in-flight sends were aborted; wait for them to return (bounded by shutdown)
    await Promise.allSettled([...this.inFlight].map((b) => this.pending.get(b)));
  }

  private readonly pending = new Map<Item[], Promise<void>>();

  /**
   * At shutdown: every event still waiting (not in flight) is in the outbox and settled by it, so
   * the next start replays it and there is nothing left to drain: the dispatcher stops starting
   * sends (a sink that is down is not retried until the deadline) and only the in-flight ones
   * finish. Not so when stored events do not settle (`outboxSettles: false`).
   */
  private restStored(): boolean {
    if (!this.outbox || this.ctx.outboxSettles === false || this.unstored.length > 0) return false;
    for (const l of this.lanes.values())
      for (const it of l.items) if (!it.done && it.stored === undefined) return false;
    return true;
  }

  /** Waits for a wake (enqueue, a send answered, shutdown), the time `until`, or the stop signal. */
  private idle(until: number): Promise<void> {
    if (this.stop.signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        this.stop.signal.removeEventListener('abort', done);
        if (this.wakeWorker === done) this.wakeWorker = undefined;
        resolve();
      };
      if (Number.isFinite(until)) timer = setTimeout(done, Math.max(0, until - Date.now()));
      this.stop.signal.addEventListener('abort', done, { once: true });
      this.wakeWorker = done;
    });
  }

  /**
   * The next batch: the oldest waiting events whose objects are neither in flight nor waiting out
   * a backoff, in queue order, at most `batchLimit`. An object left out is left out entirely (its
   * later events never overtake it). `retryAt` is the earliest time a backoff ends. Costs
   * O(batch × log ready objects): blocked objects are in no heap it looks at.
   */
  private take(now: number): { batch: Item[]; retryAt: number } {
    for (let top = this.backoff.peek(); top && top.until <= now; top = this.backoff.peek()) {
      this.backoff.remove(top);
      this.place(top, now);
    }
    const batch: Item[] = [];
    const limit = this.batchLimit;
    const taken: Lane[] = [];
    // a k-way merge of the ready lanes by seq: the top lane gives its oldest event, then re-sorts
    for (let lane = this.ready.peek(); lane && batch.length < limit; lane = this.ready.peek()) {
      if (!lane.busy) {
        lane.busy = true;
        taken.push(lane);
      }
      batch.push(lane.items.shift() as Item);
      if (lane.items.length === 0) this.ready.remove(lane);
      else this.ready.sift(lane);
    }
    // the lanes it took from are busy now: out of the ready heap, even with events left
    for (const lane of taken) if (lane.heap) lane.heap.remove(lane);
    return { batch, retryAt: this.backoff.peek()?.until ?? Number.POSITIVE_INFINITY };
  }

  /**
   * Puts a lane where it belongs after a change: the ready heap when it can send now, the backoff
   * heap while its wait runs, neither while busy or empty (an empty lane not failing is dropped).
   */
  private place(lane: Lane, now: number): void {
    const want = lane.busy || lane.items.length === 0 ? undefined : lane.until > now ? this.backoff : this.ready;
    if (lane.heap !== want) {
      lane.heap?.remove(lane);
      want?.push(lane);
    }
    if (!want && !lane.busy && lane.streak === 0) this.lanes.delete(lane.key);
  }

  private launch(batch: Item[]): void {
    this.inFlight.add(batch);
    for (const it of batch) it.attempts++;
    this.gauges();
    const p = this.deliver(batch).finally(() => {
      this.pending.delete(batch);
      this.inFlight.delete(batch);
      if (!this.finished) {
        const now = Date.now();
        for (const it of batch) {
          const lane = this.lanes.get(it.key);
          if (lane?.busy) {
            lane.busy = false;
            this.place(lane, now);
          }
        }
      }
      this.gauges();
      this.wake();
    });
    this.pending.set(batch, p);
  }

  private async deliver(batch: Item[]): Promise<void> {
    const outbound: OutboundEvent[] = batch.map((it) => ({ event: it.event, seq: it.seq, attempts: it.attempts }));
    const t0 = performance.now();
    let results: DeliveryResult[];
    try {
      results = await this.sink.send(outbound, this.stop.signal);
      if (results.length !== batch.length) {
        const error = `sink returned ${results.length} results for ${batch.length} events`;
        results = batch.map(() => ({ status: 'retryable', error }));
      }
    } catch (err) {
      const error = errorMessage(err);
      results = batch.map(() => ({ status: 'retryable', error }));
    }
    this.m.sendDuration.observe(this.labels, (performance.now() - t0) / 1000);
    try {
      await this.apply(batch, results);
    } catch (err) {
      this.ctx.logger.error('delivery worker failed', { code: ErrorCode.Internal, error: err });
    }
  }

  /** The sink's accumulated down time up to `now`. */
  private downTime(now: number): number {
    return this.downTotal + (this.downSince === undefined ? 0 : now - this.downSince);
  }

  /**
   * Settles delivered events, dead-letters refused and exhausted ones (waiting until their dead
   * letters are written), and puts retryable ones back in their place with their object's backoff.
   */
  private async apply(batch: Item[], results: DeliveryResult[]): Promise<void> {
    if (this.finished) return;
    const now = Date.now();
    const answered = results.some((r) => r.status !== 'retryable');
    this.endpoint(now, answered, results);
    const again: Item[] = [];
    const failedKeys = new Set<string>();
    const delivered: Item[] = [];
    const dead: { item: Item; code: string; error: string }[] = [];
    let retryAfterMs = 0;
    let lastError = '';
    const maxElapsed = this.config.retry.maxElapsedMs;
    for (let i = 0; i < batch.length; i++) {
      const item = batch[i] as Item;
      const r = results[i] as DeliveryResult;
      if (failedKeys.has(item.key)) {
        // an earlier event of its object stays: this one is re-sent after it, whatever its result
        again.push(item);
        continue;
      }
      if (r.status === 'ok') delivered.push(item);
      else if (r.status === 'permanent') {
        this.m.errors.inc({ ...this.labels, code: ErrorCode.DeliveryPermanent });
        dead.push({ item, code: ErrorCode.DeliveryPermanent, error: r.error });
      } else {
        this.m.errors.inc({ ...this.labels, code: ErrorCode.DeliveryRetryable });
        if (item.firstFailureAt === undefined) {
          item.firstFailureAt = now;
          item.downAtFirstFailure = this.downTime(now);
        }
        const elapsed = now - item.firstFailureAt;
        const age = elapsed - (this.downTime(now) - item.downAtFirstFailure);
        if (maxElapsed > 0 && age >= maxElapsed) {
          dead.push({
            item,
            code: ErrorCode.DeliveryRetryable,
            error: `retries exhausted after ${item.attempts} attempts in ${elapsed} ms: ${r.error}`,
          });
        } else {
          again.push(item);
          failedKeys.add(item.key);
          lastError = r.error;
          retryAfterMs = Math.max(retryAfterMs, r.retryAfterMs ?? 0);
        }
      }
    }
    if (delivered.length > 0) this.m.sent.inc(this.labels, delivered.length);
    for (const it of delivered) this.m.deliveryLatency.observe(this.labels, secondsSince(it.event.time, now));
    for (const it of delivered) this.release(it, true);
    // retryable ones go back to their place (their objects stay busy until this batch is done)
    if (again.length > 0) {
      this.m.retries.inc(this.labels, again.length);
      for (const it of again) this.putBack(it);
    }
    const firstFailing = this.failingLanes === 0 && failedKeys.size > 0;
    for (const it of batch) {
      const lane = this.lanes.get(it.key);
      if (lane && lane.streak > 0 && !failedKeys.has(it.key)) {
        lane.streak = 0;
        lane.until = 0;
        this.failingLanes--;
      }
    }
    let longest = 0;
    for (const key of failedKeys) {
      const lane = this.lanes.get(key) as Lane;
      if (lane.streak === 0) this.failingLanes++;
      lane.streak++;
      lane.until = now + retryDelay(this.config.retry, lane.streak);
      longest = Math.max(longest, lane.streak);
    }
    if (retryAfterMs > 0)
      this.pausedUntil = Math.max(
        this.pausedUntil,
        now + retryAfterWait(0, retryAfterMs, this.config.retry.maxRetryAfterMs),
      );
    if (firstFailing) this.failingSince = now;
    // A failure its own retry clears (a partition leader moving, a connection reset) is a blip:
    // counted in the metrics, logged at debug. The warning comes once an object's retry fails too.
    if (failedKeys.size > 0 && !this.failingWarned && longest >= FAILING_WARN_STREAK) {
      this.failingWarned = true;
      this.ctx.logger.warn('delivery failing; retrying with backoff', {
        code: ErrorCode.DeliveryRetryable,
        error: lastError,
        events: again.length,
        failingMs: now - this.failingSince,
        ...(retryAfterMs > 0 && { retryAfterMs }),
      });
    } else if (failedKeys.size > 0)
      this.ctx.logger.debug('delivery still failing', {
        error: lastError,
        attempt: longest,
        objects: this.failingLanes,
      });
    else if (this.failingLanes === 0 && this.failingSince > 0) {
      const failingMs = now - this.failingSince;
      if (this.failingWarned) this.ctx.logger.info('delivery recovered', { failingMs });
      else this.ctx.logger.debug('delivery recovered at the first retry', { failingMs });
      this.failingSince = 0;
      this.failingWarned = false;
    }
    this.gauges();
    this.releaseRoom();
    if (dead.length > 0) {
      // its objects stay busy (this batch in flight) until the dead letters are written
      const unwritten = await this.deadLetter(dead);
      if (this.finished) return;
      for (const { item } of dead) if (!unwritten.has(item)) this.release(item, true);
      // a dead letter not written (the deadline came): it stays for shutdown to reject
      for (const it of unwritten) this.putBack(it);
      this.gauges();
      this.releaseRoom();
    }
  }

  /** An event of a batch in flight goes back to its place in its lane (the lane is busy until the batch is done). */
  private putBack(it: Item): void {
    const lane = this.lanes.get(it.key);
    if (lane) insertBySeq(lane.items, it);
  }

  /** An event leaves the queue: settled (delivered or dead-lettered). */
  private release(it: Item, settle: boolean): void {
    if (it.done) return;
    it.done = true;
    this.count--;
    this.queuedBytes -= it.bytes;
    if (it.stored !== undefined) this.outbox?.ack([it.stored]);
    if (settle) it.settle();
  }

  /**
   * Tracks whether the endpoint answers: after `outageAlertMs` with no send answered it is reported
   * once (error log, `crbridge_component_failing` 1) and reported recovered when one is.
   */
  private endpoint(now: number, answered: boolean, results: DeliveryResult[]): void {
    if (answered) {
      if (this.downSince !== undefined) {
        this.downTotal += now - this.downSince;
        if (this.outageReported) this.ctx.logger.info('endpoint answering again', { failingMs: now - this.downSince });
        this.downSince = undefined;
        this.outageReported = false;
        this.m.failing.set(this.labels, 0);
        this.m.failingSeconds.set(this.labels, 0);
      }
      return;
    }
    this.downSince ??= now;
    const down = now - this.downSince;
    this.m.failingSeconds.set(this.labels, down / 1000);
    if (!this.outageReported && down >= this.config.outageAlertMs) {
      this.outageReported = true;
      this.m.failing.set(this.labels, 1);
      const r = results.find((x) => x.status === 'retryable');
      this.ctx.logger.error('endpoint failing continuously; its events stay queued', {
        code: ErrorCode.DeliveryRetryable,
        failingMs: down,
        queued: this.count,
        error: r && r.status === 'retryable' ? r.error : '',
      });
    }
  }

  /**
   * Writes the dead letters through the durable writer, which retries failed writes with backoff:
   * the batch's objects stay held back (and counted) rather than anything being dropped. Settles
   * nothing; returns the items whose dead letter was not written because the shutdown deadline
   * came first.
   */
  private async deadLetter(dead: { item: Item; code: string; error: string }[]): Promise<Set<Item>> {
    const time = new Date().toISOString();
    const first = dead[0] as { code: string; error: string };
    this.ctx.logger.once(
      'warn',
      `${this.ctx.id}:dead:${first.code}:${first.error.slice(0, 120)}`,
      'events dead-lettered',
      {
        code: first.code,
        error: first.error,
        events: dead.length,
      },
    );
    const unwritten = new Set<Item>();
    await Promise.all(
      dead.map(async ({ item, code, error }) => {
        try {
          await this.dead.write(
            { event: item.event, component: this.ctx.id, code, errors: [error], time, attempts: item.attempts },
            this.stop.signal,
          );
          this.m.deadLettered.inc(this.labels);
        } catch {
          // Only at the deadline (CRB_SHUTDOWN): not settled, the shutdown rejects it.
          unwritten.add(item);
        }
      }),
    );
    return unwritten;
  }
}

/** Inserts `it` into `items` (sorted by seq) at its place; retried events are old, so search from the front. */
function insertBySeq(items: Item[], it: Item): void {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((items[mid] as Item).seq < it.seq) lo = mid + 1;
    else hi = mid;
  }
  items.splice(lo, 0, it);
}

/**
 * A binary min-heap of lanes under `before` that knows each lane's place (`lane.pos`), so a lane
 * can be re-sorted or removed in O(log n) wherever it is.
 */
class LaneHeap {
  private readonly a: Lane[] = [];
  private readonly before: (x: Lane, y: Lane) => number;

  constructor(before: (x: Lane, y: Lane) => number) {
    this.before = before;
  }

  peek(): Lane | undefined {
    return this.a[0];
  }

  push(lane: Lane): void {
    lane.heap = this;
    lane.pos = this.a.length;
    this.a.push(lane);
    this.up(lane.pos);
  }

  remove(lane: Lane): void {
    const i = lane.pos;
    const last = this.a.pop() as Lane;
    lane.heap = undefined;
    lane.pos = -1;
    if (last === lane) return;
    this.a[i] = last;
    last.pos = i;
    this.down(this.up(i));
  }

  /** Restores the order after `lane`'s key changed. */
  sift(lane: Lane): void {
    this.down(this.up(lane.pos));
  }

  clear(): void {
    for (const l of this.a) {
      l.heap = undefined;
      l.pos = -1;
    }
    this.a.length = 0;
  }

  private up(i: number): number {
    const a = this.a;
    const x = a[i] as Lane;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const y = a[p] as Lane;
      if (this.before(x, y) >= 0) break;
      a[i] = y;
      y.pos = i;
      i = p;
    }
    a[i] = x;
    x.pos = i;
    return i;
  }

  private down(i: number): void {
    const a = this.a;
    const n = a.length;
    const x = a[i] as Lane;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && this.before(a[c + 1] as Lane, a[c] as Lane) < 0) c++;
      const y = a[c] as Lane;
      if (this.before(y, x) >= 0) break;
      a[i] = y;
      y.pos = i;
      i = c;
    }
    a[i] = x;
    x.pos = i;
  }
}

/** True once `p` settled, false when the clock reaches `until` first. */
async function within(p: Promise<unknown>, until: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((r) => {
    timer = setTimeout(() => r(false), Math.max(0, until - Date.now()));
  });
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      timedOut,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for `p`, or rejects with the signal's reason when `signal` aborts first. */
function abortable(p: Promise<unknown>, signal?: AbortSignal): Promise<void> {
  if (!signal) return p.then(() => undefined);
  signal.throwIfAborted();
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
    );
  });
}

/** Resolves after `ms`, or rejects when `signal` aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
