/**
 * The delivery queue in front of every sink: a bounded in-memory FIFO with back-pressure, one
 * worker that hands batches to `sink.send`, retry with exponential backoff and jitter (honouring
 * Retry-After), and the dead-letter destination for permanent failures and exhausted retries.
 * Sinks only deliver; everything about "again, later, or never" lives here once (after the
 * OpenTelemetry Collector's exporterhelper sending_queue + retry_on_failure and Vector's
 * sinks/util). A durable spool will slot in behind the same interface later.
 */
import type { DeliveryResult, Lifecycle, OutboundEvent, Sink } from '../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import type { CloudEvent } from '../events/cloudevent.ts';
import type { Logger } from '../telemetry/logger.ts';
import { componentMetrics, type Metrics } from '../telemetry/metrics.ts';
import type { DeliveryConfig, RetryConfig } from './config.ts';
import type { DeadLetter } from './dead-letter.ts';

export interface DeliveryQueueContext {
  /** `<pipeline>/<sink name>`: the `component` label of metrics and dead letters. */
  id: string;
  logger: Logger;
  metrics: Metrics;
  deadLetter: DeadLetter;
}

interface Item {
  event: CloudEvent;
  seq: number;
  attempts: number;
  /** When this event first failed retryably (for maxElapsedMs). */
  firstFailureAt: number | undefined;
  settle: () => void;
}

/**
 * The wait before retry number `streak` (1-based) of a failure streak: exponential growth capped
 * at maxIntervalMs, jittered by ± randomizationFactor, and never shorter than `retryAfterMs`.
 */
export function backoffDelay(retry: RetryConfig, streak: number, retryAfterMs = 0, random = Math.random): number {
  const base = Math.min(retry.maxIntervalMs, retry.initialIntervalMs * retry.multiplier ** Math.max(0, streak - 1));
  const rf = retry.randomizationFactor;
  const jittered = base * (1 - rf + 2 * rf * random());
  return Math.max(Math.round(jittered), retryAfterMs);
}

/**
 * One sink's queue and delivery worker.
 *
 * Ordering: events are sent in `enqueue` order in batches of at most
 * `min(sink.maxBatch, config.maxBatch)`; `send` is never concurrent. Events that failed retryably
 * stay at the head of the queue and are re-sent, in order, before anything queued after them.
 * Idempotency: an event may be sent more than once (retries); its `id` stays the same.
 */
export class DeliveryQueue implements Lifecycle {
  private readonly sink: Sink;
  private readonly config: DeliveryConfig;
  private readonly ctx: DeliveryQueueContext;
  private readonly m: ReturnType<typeof componentMetrics>;
  private readonly labels: { component: string };
  private readonly items: Item[] = [];
  private readonly roomWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  /** Aborted at the shutdown deadline or when the start signal aborts: stops sends and backoff waits. */
  private readonly stop = new AbortController();
  private nextSeq = 1;
  private wakeWorker: (() => void) | undefined;
  private closing = false;
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
  }

  /** Events waiting or in flight. */
  get depth(): number {
    return this.items.length;
  }

  private get batchLimit(): number {
    return Math.max(1, Math.min(this.sink.maxBatch, this.config.maxBatch));
  }

  /**
   * Accepts an event. Resolves when there is room in the queue (back-pressure); the returned
   * `settled` resolves once the event is delivered or dead-lettered (never for an event still
   * undelivered at the shutdown deadline). Never rejects for delivery failures; rejects only when
   * the queue is shutting down or `signal` aborts while waiting for room.
   */
  async enqueue(event: CloudEvent, signal?: AbortSignal): Promise<{ settled: Promise<void> }> {
    while (!this.closing && this.items.length >= this.config.queueCapacity) {
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const waiter = { resolve: done, reject: fail };
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
    if (this.closing) throw new CrbridgeError(ErrorCode.Internal, `${this.ctx.id}: the delivery queue is shut down`);
    let settle!: () => void;
    const settled = new Promise<void>((r) => {
      settle = r;
    });
    this.items.push({ event, seq: this.nextSeq++, attempts: 0, firstFailureAt: undefined, settle });
    this.m.received.inc(this.labels);
    this.m.queueDepth.set(this.labels, this.items.length);
    this.wake();
    return { settled };
  }

  /** Starts the sink, then the worker loop. Returns quickly. */
  async start(signal: AbortSignal): Promise<void> {
    if (signal.aborted) this.stop.abort();
    else signal.addEventListener('abort', () => this.stop.abort(), { once: true });
    await this.sink.start(signal);
    this.worker = this.run().catch((err) => {
      this.ctx.logger.error('delivery worker failed', { code: ErrorCode.Internal, error: errorMessage(err) });
    });
  }

  /**
   * Stops taking new events, keeps delivering until the queue is empty or `deadline` passes, then
   * shuts the sink down. Events still undelivered are logged (their `settled` never resolves, so a
   * source checkpoint does not move past them). Idempotent.
   */
  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.closing = true;
      for (const w of this.roomWaiters.splice(0))
        w.reject(new CrbridgeError(ErrorCode.Internal, `${this.ctx.id}: the delivery queue is shut down`));
      this.wake();
      const timer = setTimeout(() => this.stop.abort(), Math.max(0, deadline - Date.now()));
      try {
        if (this.worker) {
          // A sink that ignores the abort signal must not hold the shutdown past the deadline.
          let grace: NodeJS.Timeout | undefined;
          await Promise.race([
            this.worker,
            new Promise<void>((r) => {
              grace = setTimeout(r, Math.max(0, deadline - Date.now()) + 250);
            }),
          ]);
          clearTimeout(grace);
        }
      } finally {
        clearTimeout(timer);
        this.stop.abort();
      }
      if (this.items.length > 0) {
        this.ctx.logger.warn('shutdown deadline reached with events undelivered', {
          code: ErrorCode.DeliveryRetryable,
          undelivered: this.items.length,
          firstSeq: this.items[0]?.seq,
        });
      }
      await this.sink.shutdown(deadline);
    })();
    return this.shutdownPromise;
  }

  private wake(): void {
    const w = this.wakeWorker;
    this.wakeWorker = undefined;
    w?.();
  }

  private releaseRoom(): void {
    let free = this.config.queueCapacity - this.items.length;
    while (free-- > 0 && this.roomWaiters.length > 0) this.roomWaiters.shift()?.resolve();
  }

  private async run(): Promise<void> {
    for (;;) {
      if (this.stop.signal.aborted) return;
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
   * Settles delivered events, dead-letters refused and exhausted ones, and keeps retryable ones
   * at the head of the queue. Returns the retry info when some stay for another attempt.
   */
  private async apply(
    batch: Item[],
    results: DeliveryResult[],
  ): Promise<{ failed: number; error: string; retryAfterMs: number } | undefined> {
    const now = Date.now();
    const keep: Item[] = [];
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
          keep.push(item);
          lastError = r.error;
          retryAfterMs = Math.max(retryAfterMs, r.retryAfterMs ?? 0);
        }
      }
    }
    this.items.splice(0, batch.length, ...keep);
    if (keep.length === 0 && this.streak > 0) {
      this.ctx.logger.info('delivery recovered', { attempts: this.streak + 1, failingMs: now - this.streakStart });
      this.streak = 0;
    }
    this.m.queueDepth.set(this.labels, this.items.length);
    if (delivered.length > 0) this.m.sent.inc(this.labels, delivered.length);
    for (const it of delivered) it.settle();
    if (dead.length > 0) await this.deadLetter(dead);
    this.releaseRoom();
    return keep.length > 0 ? { failed: keep.length, error: lastError, retryAfterMs } : undefined;
  }

  private async deadLetter(dead: { item: Item; code: string; error: string }[]): Promise<void> {
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
    await Promise.all(
      dead.map(async ({ item, code, error }) => {
        try {
          await this.ctx.deadLetter.write({
            event: item.event,
            component: this.ctx.id,
            code,
            errors: [error],
            time,
            attempts: item.attempts,
          });
          this.m.deadLettered.inc(this.labels);
          item.settle();
        } catch (err) {
          // Not settled: the source checkpoint stays before it, so a restart delivers it again.
          this.m.errors.inc({ ...this.labels, code: ErrorCode.Internal });
          this.ctx.logger.error('could not write a dead letter; the event stays unsettled', {
            code: ErrorCode.Internal,
            error: errorMessage(err),
            id: item.event.id,
          });
        }
      }),
    );
  }

  private async backoff(retry: { failed: number; error: string; retryAfterMs: number }): Promise<void> {
    this.streak++;
    this.m.retries.inc(this.labels, retry.failed);
    const wait = backoffDelay(this.config.retry, this.streak, retry.retryAfterMs);
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

/** Resolves after `ms` or as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
