/**
 * The delivery queue in front of every sink: an in-memory FIFO bounded by events and by bytes, with
 * back-pressure, one worker that hands batches to `sink.send`, retry with exponential backoff and
 * jitter (honouring Retry-After), and the dead-letter destination for permanent failures and
 * exhausted retries (written durably: a failing write is retried and blocks the worker). Sinks only
 * deliver; everything about "again, later, or never" lives here once (after the OpenTelemetry
 * Collector's exporterhelper sending_queue + retry_on_failure and Vector's sinks/util). A durable
 * spool will slot in behind the same interface later.
 */
import { backoffDelay, sleep } from '../backoff.ts';
import type { DeliveryResult, Lifecycle, OutboundEvent, Sink } from '../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import { approxEventBytes } from '../events/build.ts';
import type { CloudEvent } from '../events/cloudevent.ts';
import type { Logger } from '../telemetry/logger.ts';
import { componentMetrics, type Metrics } from '../telemetry/metrics.ts';
import type { DeliveryConfig, RetryConfig } from './config.ts';
import { type DeadLetter, type DeadLetterRetry, DurableDeadLetter } from './dead-letter.ts';

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
}

interface Item {
  event: CloudEvent;
  seq: number;
  /** What it counts against `queueBytes`. */
  bytes: number;
  attempts: number;
  /** When this event first failed retryably (for maxElapsedMs). */
  firstFailureAt: number | undefined;
  settle: () => void;
  fail: (err: CrbridgeError) => void;
}

interface RoomWaiter {
  bytes: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** How long past its deadline shutdown waits for a worker or sink that ignores the abort signal. */
const SHUTDOWN_GRACE_MS = 100;

/**
 * The wait before retry number `streak` (1-based) of a failure streak: exponential growth capped
 * at maxIntervalMs, jittered by ± randomizationFactor, and never shorter than `retryAfterMs`.
 */
export function retryDelay(retry: RetryConfig, streak: number, retryAfterMs = 0, random = Math.random): number {
  const rf = retry.randomizationFactor;
  const wait = backoffDelay(streak, retry.initialIntervalMs, retry.maxIntervalMs, random, retry.multiplier, [
    1 - rf,
    1 + rf,
  ]);
  return Math.max(wait, retryAfterMs);
}

/**
 * One sink's queue and delivery worker.
 *
 * Ordering: events are sent in `enqueue` order in batches of at most
 * `min(sink.maxBatch, config.maxBatch)`; `send` is never concurrent. Events that failed retryably
 * stay at the head of the queue and are re-sent, in order, before anything queued after them. An
 * event refused for good leaves the queue only once its dead letter is written; until then the
 * worker sends nothing else (so `settled` promises resolve in queue order).
 * Idempotency: an event may be sent more than once (retries); its `id` stays the same.
 */
export class DeliveryQueue implements Lifecycle {
  private readonly sink: Sink;
  private readonly config: DeliveryConfig;
  private readonly ctx: DeliveryQueueContext;
  private readonly m: ReturnType<typeof componentMetrics>;
  private readonly labels: { component: string };
  private readonly dead: DurableDeadLetter;
  private readonly sizeOf: (event: CloudEvent) => number;
  private readonly items: Item[] = [];
  private queuedBytes = 0;
  private readonly roomWaiters: RoomWaiter[] = [];
  /** Aborted at the shutdown deadline or when the start signal aborts: stops sends and backoff waits. */
  private readonly stop = new AbortController();
  private nextSeq = 1;
  private wakeWorker: (() => void) | undefined;
  private closing = false;
  /** Set once shutdown has given up on what is left: a late worker step changes nothing. */
  private finished = false;
  private worker: Promise<void> | undefined;
  private shutdownPromise: Promise<void> | undefined;
  /** Consecutive sends that left retryable failures; 0 when the last send fully succeeded. */
  private streak = 0;
  private streakStart = 0;

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
  }

  /** Events waiting or in flight. */
  get depth(): number {
    return this.items.length;
  }

  /** Bytes of the events waiting or in flight (as counted against `queueBytes`). */
  get bytes(): number {
    return this.queuedBytes;
  }

  private get batchLimit(): number {
    return Math.max(1, Math.min(this.sink.maxBatch, this.config.maxBatch));
  }

  /** Room for one more event of `bytes`: under both bounds, or the queue is empty (never a deadlock). */
  private fits(count: number, queued: number, bytes: number): boolean {
    return count === 0 || (count < this.config.queueCapacity && queued + bytes <= this.config.queueBytes);
  }

  /**
   * Accepts an event. Resolves when there is room in the queue, by count and by bytes
   * (back-pressure); the returned `settled` resolves once the event is delivered or its dead letter
   * is written, and rejects with a CrbridgeError of code CRB_SHUTDOWN when the shutdown deadline
   * comes first (the source then keeps its checkpoint before it). Never rejects for delivery
   * failures. `enqueue` itself rejects only when the queue is shutting down or `signal` aborts while
   * waiting for room (with the signal's reason).
   */
  async enqueue(event: CloudEvent, signal?: AbortSignal): Promise<{ settled: Promise<void> }> {
    const bytes = this.sizeOf(event);
    while (!this.closing && !this.fits(this.items.length, this.queuedBytes, bytes)) {
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
    if (this.closing) throw this.shutdownError('the delivery queue is shut down');
    let settle!: () => void;
    let fail!: (err: CrbridgeError) => void;
    const settled = new Promise<void>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    // A caller that drops `settled` must not turn a shutdown rejection into an unhandled one.
    settled.catch(() => {});
    this.items.push({ event, seq: this.nextSeq++, bytes, attempts: 0, firstFailureAt: undefined, settle, fail });
    this.queuedBytes += bytes;
    this.m.received.inc(this.labels);
    this.gauges();
    this.wake();
    return { settled };
  }

  /** Starts the sink, then the worker loop. Returns quickly. */
  async start(signal: AbortSignal): Promise<void> {
    if (signal.aborted) this.stop.abort();
    else signal.addEventListener('abort', () => this.stop.abort(), { once: true });
    await this.sink.start(signal);
    this.worker = this.run().catch((err) => {
      this.ctx.logger.error('delivery worker failed', { code: ErrorCode.Internal, error: err });
    });
  }

  /**
   * Stops taking new events, keeps delivering until the queue is empty or `deadline` passes, then
   * shuts the sink down. Events still undelivered at the deadline are logged and their `settled`
   * rejects (CRB_SHUTDOWN), so a source checkpoint does not move past them. Never waits much past
   * the deadline, even for a sink that ignores its abort signal. Idempotent.
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
      const left = this.items.splice(0);
      this.queuedBytes = 0;
      this.gauges();
      if (left.length > 0) {
        this.ctx.logger.warn('shutdown deadline reached with events undelivered', {
          code: ErrorCode.Shutdown,
          undelivered: left.length,
          firstSeq: left[0]?.seq,
        });
        const err = this.shutdownError(`shut down with ${left.length} events undelivered`);
        for (const it of left) it.fail(err);
      }
      const sinkDown = this.sink.shutdown(deadline).catch((err: unknown) => {
        this.ctx.logger.error('sink shutdown failed', { code: ErrorCode.Internal, error: err });
      });
      if (!(await within(sinkDown, deadline + SHUTDOWN_GRACE_MS)))
        this.ctx.logger.warn('the sink did not shut down by the deadline; going on without it', {
          code: ErrorCode.Shutdown,
        });
    })();
    return this.shutdownPromise;
  }

  private shutdownError(message: string): CrbridgeError {
    return new CrbridgeError(ErrorCode.Shutdown, `${this.ctx.id}: ${message}`);
  }

  private gauges(): void {
    this.m.queueDepth.set(this.labels, this.items.length);
    this.m.queueBytes.set(this.labels, this.queuedBytes);
  }

  private wake(): void {
    const w = this.wakeWorker;
    this.wakeWorker = undefined;
    w?.();
  }

  /** Admits waiting enqueuers in order while they fit (the first that does not fit waits on). */
  private releaseRoom(): void {
    let count = this.items.length;
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

  private async run(): Promise<void> {
    for (;;) {
      if (this.stop.signal.aborted || this.finished) return;
      if (this.items.length === 0) {
        if (this.closing) return;
        await new Promise<void>((r) => {
          this.wakeWorker = r;
        });
        continue;
      }
      const batch = this.items.slice(0, Math.min(this.items.length, this.batchLimit));
      for (const it of batch) it.attempts++;
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
      const retry = await this.apply(batch, results);
      if (retry) await this.backoff(retry);
    }
  }

  /**
   * Settles delivered events, dead-letters refused and exhausted ones (waiting until their dead
   * letters are written), and keeps retryable ones at the head of the queue. Returns the retry
   * info when some stay for another attempt.
   */
  private async apply(
    batch: Item[],
    results: DeliveryResult[],
  ): Promise<{ failed: number; error: string; retryAfterMs: number } | undefined> {
    if (this.finished) return undefined;
    const now = Date.now();
    const again = new Set<Item>();
    const delivered: Item[] = [];
    const dead: { item: Item; code: string; error: string }[] = [];
    let retryAfterMs = 0;
    let lastError = '';
    const maxElapsed = this.config.retry.maxElapsedMs;
    for (let i = 0; i < batch.length; i++) {
      const item = batch[i] as Item;
      const r = results[i] as DeliveryResult;
      if (r.status === 'ok') delivered.push(item);
      else if (r.status === 'permanent') {
        this.m.errors.inc({ ...this.labels, code: ErrorCode.DeliveryPermanent });
        dead.push({ item, code: ErrorCode.DeliveryPermanent, error: r.error });
      } else {
        this.m.errors.inc({ ...this.labels, code: ErrorCode.DeliveryRetryable });
        item.firstFailureAt ??= now;
        const elapsed = now - item.firstFailureAt;
        if (maxElapsed > 0 && elapsed >= maxElapsed) {
          dead.push({
            item,
            code: ErrorCode.DeliveryRetryable,
            error: `retries exhausted after ${item.attempts} attempts in ${elapsed} ms: ${r.error}`,
          });
        } else {
          again.add(item);
          lastError = r.error;
          retryAfterMs = Math.max(retryAfterMs, r.retryAfterMs ?? 0);
        }
      }
    }
    if (delivered.length > 0) this.m.sent.inc(this.labels, delivered.length);
    // Events settle in queue order: delivered ones behind a dead one once its dead letter is written.
    const firstDead = dead.length > 0 ? (dead[0] as { item: Item }).item.seq : Number.POSITIVE_INFINITY;
    const early = new Set<Item>();
    if (dead.length > 0) for (const it of delivered) if (it.seq < firstDead) early.add(it);
    for (const it of early) it.settle();
    // Dead items stay queued (and counted) until their dead letters are written.
    const unwritten = dead.length > 0 ? await this.deadLetter(dead) : undefined;
    if (this.finished) return undefined;
    // A dead letter not written (the deadline came): it and what follows stay for shutdown to reject.
    const stays = (it: Item) => again.has(it) || (unwritten !== undefined && unwritten.size > 0 && !early.has(it));
    const keep = batch.filter(stays);
    this.items.splice(0, batch.length, ...keep);
    for (const it of batch) if (!stays(it)) this.queuedBytes -= it.bytes;
    for (const it of batch) if (!stays(it) && !early.has(it)) it.settle();
    if (again.size === 0 && this.streak > 0) {
      this.ctx.logger.info('delivery recovered', { attempts: this.streak + 1, failingMs: now - this.streakStart });
      this.streak = 0;
    }
    this.gauges();
    this.releaseRoom();
    return again.size > 0 ? { failed: again.size, error: lastError, retryAfterMs } : undefined;
  }

  /**
   * Writes the dead letters through the durable writer, which retries failed writes with backoff:
   * the worker waits (back-pressure) rather than dropping anything. Settles nothing; returns the
   * items whose dead letter was not written because the shutdown deadline came first.
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

  private async backoff(retry: { failed: number; error: string; retryAfterMs: number }): Promise<void> {
    this.streak++;
    this.m.retries.inc(this.labels, retry.failed);
    const wait = retryDelay(this.config.retry, this.streak, retry.retryAfterMs);
    if (this.streak === 1) {
      this.streakStart = Date.now();
      this.ctx.logger.warn('delivery failing; retrying with backoff', {
        code: ErrorCode.DeliveryRetryable,
        error: retry.error,
        events: retry.failed,
        waitMs: wait,
      });
    } else {
      this.ctx.logger.debug('delivery still failing', { error: retry.error, attempt: this.streak, waitMs: wait });
    }
    await sleep(wait, this.stop.signal);
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
