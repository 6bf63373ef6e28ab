/**
 * The dead-letter destination: where events go that a sink refused permanently, that exhausted
 * their retries, or that failed validation. `fileDeadLetter` appends one JSON object per line;
 * writes that arrive while a flush is running are coalesced into the next append + fsync, so a
 * burst of failures costs one fsync per batch, not per event. `sinkDeadLetter` sends each entry
 * as a CloudEvent of its own (`io.crbridge.deadletter`) through any sink (`spec.deadLetter.sink`).
 *
 * `DurableDeadLetter` is the one place that makes a dead letter stick: a write that fails (disk
 * full, folder gone, read-only volume) is retried with backoff until it is written, counted and
 * logged once per cause; the event it carries is settled only then. The delivery queues and the
 * pipeline runner both write through it.
 */

import type { FileHandle } from 'node:fs/promises';
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { backoffDelay, sleep } from '../backoff.ts';
import type { Lifecycle, OutboundEvent, Sink } from '../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import type { CloudEvent, EventData } from '../events/cloudevent.ts';
import type { Logger } from '../telemetry/logger.ts';
import { componentMetrics, type Metrics } from '../telemetry/metrics.ts';
import { DEFAULT_DELIVERY_CONFIG, retryAfterWait } from './config.ts';

/** One dead-lettered event with why it was given up. */
export interface DeadLetterEntry {
  event: CloudEvent;
  /** The component (`<pipeline>/<name>`) that gave up on it. */
  component: string;
  /** Stable error code, e.g. CRB_DELIVERY_PERMANENT. */
  code: string;
  errors: string[];
  /** When it was dead-lettered (RFC 3339). */
  time: string;
  /** Delivery attempts made (0 when it never reached a sink). */
  attempts: number;
}

/**
 * Ordering: entries are stored in the order `write` was called. `write` resolves once the entry is
 * durably stored and rejects if it could not be. Safe to share between several queues.
 */
export interface DeadLetter {
  write(entry: DeadLetterEntry): Promise<void>;
  /** Waits for pending writes and releases the file. A later `write` opens it again. Idempotent. */
  close(): Promise<void>;
  /**
   * A destination with a lifecycle of its own (a sink): the pipeline starts it before its sinks
   * and shuts it down after them (after every queue's dead letters are written or given up).
   */
  start?(signal: AbortSignal): Promise<void>;
  shutdown?(deadline: number): Promise<void>;
}

interface Pending {
  line: string;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Runs `drain` on `kick` unless a run is in flight, and once more after a run when `more()` says
 * work arrived meanwhile: one run at a time, nothing left behind. `idle` resolves when no run is
 * in flight.
 */
function drainer(drain: () => Promise<void>, more: () => boolean): { kick(): void; idle(): Promise<void> } {
  let running: Promise<void> | undefined;
  const kick = (): void => {
    running ??= drain().finally(() => {
      running = undefined;
      if (more()) kick();
    });
  };
  return {
    kick,
    async idle() {
      while (running) await running;
    },
  };
}

/** A dead-letter file of JSON lines at `path` (parent folders are created), appended and fsync'd per batch. */
export function fileDeadLetter(path: string): DeadLetter {
  let handle: FileHandle | undefined;
  let pending: Pending[] = [];

  const flush = async (): Promise<void> => {
    while (pending.length > 0) {
      const batch = pending;
      pending = [];
      try {
        if (!handle) {
          await mkdir(dirname(path), { recursive: true });
          handle = await open(path, 'a');
        }
        await handle.write(batch.map((p) => p.line).join(''));
        await handle.sync();
        for (const p of batch) p.resolve();
      } catch (err) {
        const h = handle;
        handle = undefined;
        await h?.close().catch(() => {});
        for (const p of batch) p.reject(err);
      }
    }
  };

  const { kick, idle } = drainer(flush, () => pending.length > 0);

  return {
    write(entry) {
      return new Promise<void>((resolve, reject) => {
        pending.push({ line: `${JSON.stringify(entry)}\n`, resolve, reject });
        kick();
      });
    },
    async close() {
      await idle();
      const h = handle;
      handle = undefined;
      await h?.close();
    },
  };
}

/** The CloudEvents `type` of a dead letter sent through a sink. */
export const DEAD_LETTER_EVENT_TYPE = 'io.crbridge.deadletter';

/**
 * The dead letter of `entry` as a CloudEvent of its own: id `<original id>.dead.<component>`
 * (the same for every retry and restart), the original's source, subject and partition key (so a
 * keyed sink keeps one object's dead letters together), time = when it was dead-lettered, and
 * data = the entry (the event as it was, already redacted; the errors; the attempt count; the
 * component and code).
 */
export function deadLetterEvent(entry: DeadLetterEntry): CloudEvent {
  const e = entry.event;
  const key = e.partitionkey ?? e.k8suid;
  return {
    specversion: '1.0',
    id: `${e.id}.dead.${entry.component}`,
    source: typeof e.source === 'string' && e.source !== '' ? e.source : 'crbridge',
    type: DEAD_LETTER_EVENT_TYPE,
    ...(typeof e.subject === 'string' && { subject: e.subject }),
    time: entry.time,
    datacontenttype: 'application/json',
    ...(typeof key === 'string' && { partitionkey: key }),
    data: entry as unknown as EventData,
  };
}

export interface SinkDeadLetterOptions {
  /** `<pipeline>/dead-letter`: the component label of its metrics and the prefix of its errors. */
  id: string;
  metrics?: Metrics | undefined;
  /** Longest pause a `Retry-After` of the sink may impose; default the delivery default (`retry.maxRetryAfterMs`). */
  maxRetryAfterMs?: number | undefined;
}

interface SinkPending {
  event: CloudEvent;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Dead letters sent through `sink` (the pipeline's `spec.deadLetter.sink`), each as
 * {@link deadLetterEvent}. `write` resolves when the sink answered `ok` for it and rejects on any
 * other answer or a throw, so {@link DurableDeadLetter} retries it: while the destination is down
 * the event stays unsettled, never lost.
 *
 * Ordering: writes are coalesced into batches of at most `sink.maxBatch`, in call order, one batch
 * in flight at a time. Idempotency: a retried dead letter carries the same id.
 * Retry-After: as in the delivery queue, a `retryAfterMs` from the sink pauses the whole destination
 * (no send before it, capped at `maxRetryAfterMs`) and rides on the rejection
 * (`details.retryAfterMs`), so {@link DurableDeadLetter} waits max(backoff, Retry-After) for it.
 * Lifecycle: `start`/`shutdown` are the sink's (the pipeline calls them); `close` only waits for
 * the batch in flight, since several queues share one destination.
 * Metrics (component `opts.id`, `<pipeline>/dead-letter`): received, sent, errors by code, send
 * duration.
 */
export function sinkDeadLetter(sink: Sink, opts: SinkDeadLetterOptions): DeadLetter & Lifecycle {
  const m = opts.metrics && componentMetrics(opts.metrics);
  const labels = { component: opts.id };
  let pending: SinkPending[] = [];
  let seq = 0;
  /** No send before this (a Retry-After from the sink). */
  let pausedUntil = 0;
  const maxRetryAfterMs = opts.maxRetryAfterMs ?? DEFAULT_DELIVERY_CONFIG.retry.maxRetryAfterMs;
  /** Aborted at the shutdown deadline: a send still in flight is cut. */
  const stop = new AbortController();
  let shutdownPromise: Promise<void> | undefined;

  const flush = async (): Promise<void> => {
    while (pending.length > 0) {
      if (Date.now() < pausedUntil) await sleep(pausedUntil - Date.now(), stop.signal);
      const batch = pending.slice(0, Math.max(1, sink.maxBatch));
      pending = pending.slice(batch.length);
      const out: OutboundEvent[] = batch.map((p) => ({ event: p.event, seq: ++seq, attempts: 1 }));
      m?.received.inc(labels, batch.length);
      const t0 = performance.now();
      try {
        const results = await sink.send(out, stop.signal);
        m?.sendDuration.observe(labels, (performance.now() - t0) / 1000);
        let retryAfterMs = 0;
        for (const r of results)
          if (r?.status === 'retryable') retryAfterMs = Math.max(retryAfterMs, r.retryAfterMs ?? 0);
        const pause = retryAfterWait(0, retryAfterMs, maxRetryAfterMs);
        if (pause > 0) pausedUntil = Math.max(pausedUntil, Date.now() + pause);
        batch.forEach((p, i) => {
          const r = results[i];
          if (r?.status === 'ok') {
            m?.sent.inc(labels);
            p.resolve();
          } else {
            m?.errors.inc({
              ...labels,
              code: r?.status === 'permanent' ? ErrorCode.DeliveryPermanent : ErrorCode.DeliveryRetryable,
            });
            p.reject(
              new CrbridgeError(
                ErrorCode.DeadLetterWrite,
                `${opts.id}: the dead-letter sink did not take ${p.event.id}: ${r ? `${r.status}: ${r.error}` : 'no answer'}`,
                {
                  id: p.event.id,
                  ...(r?.status === 'retryable' && r.retryAfterMs !== undefined && { retryAfterMs: pause }),
                },
              ),
            );
          }
        });
      } catch (err) {
        m?.errors.inc({ ...labels, code: ErrorCode.DeadLetterWrite }, batch.length);
        for (const p of batch)
          p.reject(
            new CrbridgeError(
              ErrorCode.DeadLetterWrite,
              `${opts.id}: the dead-letter sink failed for ${p.event.id}: ${errorMessage(err)}`,
              { id: p.event.id },
            ),
          );
      }
    }
  };

  const { kick, idle } = drainer(flush, () => pending.length > 0);

  return {
    write(entry) {
      const event = deadLetterEvent(entry);
      return new Promise<void>((resolve, reject) => {
        pending.push({ event, resolve, reject });
        kick();
      });
    },
    async close() {
      await idle();
    },
    start: (signal) => sink.start(signal),
    shutdown(deadline) {
      shutdownPromise ??= (async () => {
        const timer = setTimeout(() => stop.abort(), Math.max(0, deadline - Date.now()));
        try {
          await sink.shutdown(deadline);
        } finally {
          clearTimeout(timer);
        }
      })();
      return shutdownPromise;
    },
  };
}

export interface DurableDeadLetterOptions {
  /** `<pipeline>/<name>`: the `component` label of the failure counter. */
  id: string;
  logger: Logger;
  metrics: Metrics;
  /** Backoff between attempts (`src/backoff.ts`); default 200 ms to 30 s. */
  retry?: DeadLetterRetry | undefined;
}

/** The first wait between dead-letter write attempts and the longest. */
export interface DeadLetterRetry {
  initialMs: number;
  maxMs: number;
}

export const DEAD_LETTER_RETRY_INITIAL_MS = 200;
export const DEAD_LETTER_RETRY_MAX_MS = 30_000;

/**
 * Writes dead letters until they are durably stored.
 *
 * Retry: a failed write waits `backoffDelay(attempt)`, or the destination's Retry-After when the
 * failure carries one (`details.retryAfterMs`, already cut by the destination's `maxRetryAfterMs`;
 * never beyond the delivery default) and it is longer: the same
 * rule as the delivery queue's ({@link retryAfterWait}).
 *
 * Ordering: concurrent writes reach the underlying destination in call order on their first
 * attempt; a retried entry may land after entries written meanwhile.
 * Idempotency: a retried entry may be stored twice (when the append succeeded but the fsync
 * failed); readers tell copies apart by `event.id`.
 */
export class DurableDeadLetter {
  private readonly inner: DeadLetter;
  private readonly opts: DurableDeadLetterOptions;
  private readonly retry: DeadLetterRetry;
  private readonly m: ReturnType<typeof componentMetrics>;
  /** Aborted at the `close` deadline: pending writes stop retrying and reject. */
  private readonly stop = new AbortController();
  private inFlight = 0;
  /** A failure streak is on (for the one "recovered" line). */
  private failing = false;
  private closePromise: Promise<void> | undefined;

  constructor(inner: DeadLetter, opts: DurableDeadLetterOptions) {
    this.inner = inner;
    this.opts = opts;
    this.retry = opts.retry ?? { initialMs: DEAD_LETTER_RETRY_INITIAL_MS, maxMs: DEAD_LETTER_RETRY_MAX_MS };
    this.m = componentMetrics(opts.metrics);
  }

  /** Writes not yet stored. */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Resolves once `entry` is durably stored, retrying a failed write with backoff for as long as
   * it takes. Rejects only with a {@link CrbridgeError} of code CRB_SHUTDOWN, when `signal` aborts
   * or the `close` deadline passes first: the entry is then not (known to be) stored.
   */
  async write(entry: DeadLetterEntry, signal?: AbortSignal): Promise<void> {
    const stop = signal ? AbortSignal.any([signal, this.stop.signal]) : this.stop.signal;
    this.inFlight++;
    try {
      for (let attempt = 1; ; attempt++) {
        if (stop.aborted) throw this.shutdownError(entry);
        try {
          await untilAborted(this.inner.write(entry), stop);
          if (this.failing) {
            this.failing = false;
            this.opts.logger.info('dead letters are written again', { attempts: attempt });
          }
          return;
        } catch (err) {
          if (stop.aborted) throw this.shutdownError(entry);
          this.failed(err);
          const wait = retryAfterWait(
            backoffDelay(attempt, this.retry.initialMs, this.retry.maxMs),
            retryAfterOf(err),
            DEFAULT_DELIVERY_CONFIG.retry.maxRetryAfterMs,
          );
          await sleep(wait, stop);
        }
      }
    } finally {
      this.inFlight--;
    }
  }

  /**
   * Lets pending writes retry until `deadline`, then rejects them (CRB_SHUTDOWN) and closes the
   * underlying destination, never waiting past the deadline. Idempotent. Writes after the deadline
   * reject at once.
   */
  close(deadline: number): Promise<void> {
    this.closePromise ??= (async () => {
      const timer = setTimeout(() => this.stop.abort(), Math.max(0, deadline - Date.now()));
      try {
        while (this.inFlight > 0 && !this.stop.signal.aborted) await sleep(20, this.stop.signal);
        await untilAborted(this.inner.close(), this.stop.signal).catch((err: unknown) => {
          if (!this.stop.signal.aborted)
            this.opts.logger.error('could not close the dead-letter destination', {
              code: ErrorCode.DeadLetterWrite,
              error: err,
            });
        });
      } finally {
        clearTimeout(timer);
      }
    })();
    return this.closePromise;
  }

  private failed(err: unknown): void {
    this.failing = true;
    this.m.deadLetterWriteFailures.inc({ component: this.opts.id });
    this.m.errors.inc({ component: this.opts.id, code: ErrorCode.DeadLetterWrite });
    const code = (err as { code?: unknown })?.code;
    const cause = typeof code === 'string' ? code : errorMessage(err).slice(0, 120);
    this.opts.logger.once(
      'error',
      `dead-letter:${this.opts.id}:${cause}`,
      'cannot write a dead letter; retrying with backoff, the event stays unsettled until it is written',
      { code: ErrorCode.DeadLetterWrite, error: err instanceof Error ? err : errorMessage(err) },
    );
  }

  private shutdownError(entry: DeadLetterEntry): CrbridgeError {
    return new CrbridgeError(
      ErrorCode.Shutdown,
      `${this.opts.id}: shut down before the dead letter of ${entry.event.id} was written`,
      { id: entry.event.id },
    );
  }
}

/** The Retry-After a failed write carries (`details.retryAfterMs` of a CrbridgeError), if any. */
function retryAfterOf(err: unknown): number | undefined {
  const ms = err instanceof CrbridgeError ? err.details.retryAfterMs : undefined;
  return typeof ms === 'number' && Number.isFinite(ms) ? ms : undefined;
}

/** `p`, or a rejection as soon as `signal` aborts (p keeps running; its outcome is ignored). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
