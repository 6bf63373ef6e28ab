/**
 * A sink's outbox whose SQLite connection lives on a worker thread (`outbox-worker.ts`, hosting
 * the {@link SqliteOutbox} unchanged: bounds, CRCs, the corrupt-file set-aside, the fsync
 * policies, the WAL fdatasync, the exclusive lock), so the insert transactions, the CRCs and the
 * replay reads leave the pipeline's thread; this side only posts the rows and the acks.
 *
 * Ordering: every call of one turn of the event loop is posted in one message, in call order, and
 * the worker runs them in that order, so seqs, flushes and replay pages keep the order they have
 * in process (acks go before the next call that is not an append: they concern seqs already
 * returned). Consecutive `append` calls are posted as one message entry (their records and
 * counts) and made again one by one in the worker, so each keeps its own bounds check, seqs and
 * error. `depth`, `bytes`, `status()` and `whenRoom()` follow the state the worker posts
 * after every change (before the results of the same turn, so a refusal is seen with its state).
 * Errors come back with their code (CRB_OUTBOX_FULL, CRB_OUTBOX_IO, CRB_SHUTDOWN, …) and message.
 * The worker's logs and metrics are forwarded to this thread's logger and registry (same names
 * and labels). The worker starts with the first call, holds the process open only while a call is
 * pending, and is terminated by `close`. If it dies, pending calls reject with CRB_OUTBOX_IO (the
 * queue stores those events again) and the next call starts a new worker, which re-opens the file;
 * acks it had not committed are lost, so those events are replayed again at the next start (same
 * ids: at least once).
 */
import { Worker } from 'node:worker_threads';
import { CrbridgeError, ErrorCode, fromWire } from '../errors.ts';
import type { Level, Logger } from '../telemetry/logger.ts';
import { type Metrics, outboxMetrics } from '../telemetry/metrics.ts';
import {
  type Outbox,
  type OutboxConfig,
  type OutboxEntry,
  type OutboxRecord,
  type OutboxReplay,
  type OutboxStatus,
  RoomWaiters,
} from './outbox.ts';

/** The worker's start-up data: what a {@link SqliteOutbox} is made of, minus logger and metrics. */
export interface OutboxThreadInit {
  path: string;
  id: string;
  config?: Partial<OutboxConfig>;
  maxPageCount?: number;
  /** Tests: every WAL sync (`per-batch`) takes at least this long. */
  syncDelayMs?: number;
}

export interface ThreadedOutboxOptions extends OutboxThreadInit {
  logger: Logger;
  metrics: Metrics;
}

/** A call for the worker; `id` pairs it with its result (`ack` has none). */
export type OutboxCall =
  | { op: 'open' }
  /** Several `append` calls: `counts[i]` records of `records` each, in order; the result is one {@link AppendResult} per call. */
  | { op: 'append'; records: readonly OutboxRecord[]; counts: number[] }
  | { op: 'ack'; seqs: number[] }
  | { op: 'flush' }
  | { op: 'page'; cursor: number; after: number; lastSeq: number; size: number }
  | { op: 'endPage'; cursor: number }
  | { op: 'close'; deadline: number };
export type OutboxRequest = OutboxCall & { id: number };

/** The outbox's state as the worker last saw it. */
export interface OutboxThreadState {
  depth: number;
  bytes: number;
  status: OutboxStatus;
  /** Refusing appends for its bounds (what `whenRoom` waits out). */
  overBound: boolean;
}

/** What one merged `append` call got. */
export type AppendResult = { ok: true; seqs: number[] } | { ok: false; error: WireError };

/** An error as it crosses the thread ({@link toWire}'s form of it). */
export type WireError = { message?: string } & Record<string, unknown>;

/** What the worker posts (always as an array, its state first when it changed). */
export type OutboxResponse =
  | { op: 'result'; id: number; ok: true; value: unknown }
  | { op: 'result'; id: number; ok: false; error: WireError }
  | { op: 'state'; state: OutboxThreadState }
  | { op: 'log'; level: Level; msg: string; fields?: Record<string, unknown>; once?: string }
  | {
      op: 'metric';
      kind: 'counter' | 'gauge' | 'histogram';
      name: string;
      help: string;
      labels: Record<string, string>;
      value: number;
    };

/** Where the worker's module is: next to this one, `.ts` when run from source, `.js` when built. */
const WORKER_URL = new URL(`./outbox-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

/** The request id of the re-open a new worker gets first (after one died). */
const REOPEN_ID = -1;
/** How often a replay page is asked for when the worker dies under it. */
const PAGE_ATTEMPTS = 3;

interface Pending {
  op: OutboxCall['op'];
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** One `append` call merged into the turn's append request. */
interface AppendWaiter {
  resolve: (seqs: number[]) => void;
  reject: (err: unknown) => void;
}

export class ThreadedOutbox implements Outbox {
  private readonly init: OutboxThreadInit;
  private readonly logger: Logger;
  private readonly metrics: Metrics;
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  /** Calls of this turn, posted together. */
  private outgoing: OutboxRequest[] = [];
  /** Acks of this turn (posted as one call, in order with the others). */
  private acks: number[] = [];
  private postScheduled = false;
  /** The append request at the end of `outgoing`, which later appends of the turn join. */
  private openAppend:
    | { req: { op: 'append'; id: number; records: OutboxRecord[]; counts: number[] }; waiters: AppendWaiter[] }
    | undefined;
  private nextId = 1;
  private nextCursor = 1;
  private state: OutboxThreadState = { depth: 0, bytes: 0, status: { ready: true, reasons: [] }, overBound: false };
  private readonly roomWaiters = new RoomWaiters();
  private opened = false;
  /** Workers started so far (a later one re-opens the file first). */
  private spawned = 0;
  private closed = false;
  private closePromise: Promise<void> | undefined;
  private readonly metricCache = new Map<string, { inc?: unknown; set?: unknown; observe?: unknown }>();

  constructor(opts: ThreadedOutboxOptions) {
    const { logger, metrics, ...init } = opts;
    this.init = init;
    this.logger = logger;
    this.metrics = metrics;
    // the families exist from the start (docs/metrics.md is checked against the registry)
    outboxMetrics(metrics);
  }

  get depth(): number {
    return this.state.depth;
  }

  get bytes(): number {
    return this.state.bytes;
  }

  /** Tests: the worker thread, if one is running (to kill it). */
  get thread(): Worker | undefined {
    return this.worker;
  }

  async open(): Promise<OutboxReplay> {
    if (this.opened) throw new CrbridgeError(ErrorCode.Internal, `outbox ${this.init.path} opened twice`);
    this.opened = true;
    const r = (await this.call({ op: 'open' })) as Omit<OutboxReplay, 'batches'>;
    const { lastSeq } = r;
    return {
      count: r.count,
      bytes: r.bytes,
      lastSeq,
      setAside: r.setAside,
      batches: (size = 500) => this.pages(lastSeq, size),
    };
  }

  append(records: readonly OutboxRecord[]): Promise<number[]> {
    if (this.closed) return Promise.reject(new CrbridgeError(ErrorCode.Shutdown, `outbox ${this.init.path} is closed`));
    if (records.length === 0) return Promise.resolve([]);
    return new Promise<number[]>((resolve, reject) => {
      let open = this.openAppend;
      if (!open || this.outgoing[this.outgoing.length - 1] !== open.req) {
        const waiters: AppendWaiter[] = [];
        const req = { op: 'append' as const, id: this.nextId++, records: [] as OutboxRecord[], counts: [] as number[] };
        open = { req, waiters };
        this.openAppend = open;
        this.pending.set(req.id, {
          op: 'append',
          resolve: (results) => {
            (results as AppendResult[]).forEach((r, i) => {
              const w = waiters[i] as AppendWaiter;
              if (r.ok) w.resolve(r.seqs);
              else w.reject(fromWire(r.error) as Error);
            });
          },
          reject: (err) => {
            for (const w of waiters) w.reject(err);
          },
        });
        this.queue(req);
      }
      for (const r of records) open.req.records.push(r);
      open.req.counts.push(records.length);
      open.waiters.push({ resolve, reject });
    });
  }

  ack(seqs: Iterable<number>): void {
    if (this.closed) return;
    for (const s of seqs) this.acks.push(s);
    this.schedulePost();
  }

  async flush(): Promise<void> {
    if (this.closed) return;
    await this.call({ op: 'flush' });
  }

  status(): OutboxStatus {
    return this.state.status;
  }

  whenRoom(signal?: AbortSignal): Promise<void> {
    if (!this.state.overBound || this.closed) return Promise.resolve();
    return this.roomWaiters.wait(signal);
  }

  /**
   * Posts what is pending, closes the outbox in the worker (its pending appends resolve or
   * reject), then terminates the worker; never waits past `deadline` (calls still pending then
   * reject with CRB_SHUTDOWN). Idempotent.
   */
  close(deadline: number): Promise<void> {
    this.closePromise ??= this.doClose(deadline);
    return this.closePromise;
  }

  private async doClose(deadline: number): Promise<void> {
    const hasWork = this.worker !== undefined || this.outgoing.length > 0 || this.acks.length > 0;
    const closing = hasWork ? this.call({ op: 'close', deadline }) : undefined;
    this.closed = true;
    this.post();
    const w = this.worker;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => {
      timer = setTimeout(r, Math.max(0, deadline - Date.now()));
    });
    try {
      if (closing)
        await Promise.race([
          closing.then(
            () => {},
            (err: unknown) => {
              this.logger.warn('outbox close in its thread failed', {
                code: ErrorCode.OutboxIo,
                error: err instanceof Error ? err.message : String(err),
              });
            },
          ),
          timeout,
        ]);
      this.worker = undefined;
      this.fail(new CrbridgeError(ErrorCode.Shutdown, `outbox ${this.init.path} is closed`));
      if (w)
        await Promise.race([
          w.terminate().then(
            () => {},
            () => {},
          ),
          timeout,
        ]);
    } finally {
      clearTimeout(timer);
      this.wakeRoomWaiters();
    }
  }

  // ---- internals ----

  /** Replay pages from the worker, `size` at a time, in seq order; only one page is held at once. */
  private async *pages(lastSeq: number, size: number): AsyncGenerator<OutboxEntry[]> {
    const cursor = this.nextCursor++;
    let after = 0;
    try {
      while (after < lastSeq) {
        if (this.closed) throw new CrbridgeError(ErrorCode.Shutdown, `outbox ${this.init.path} is closed`);
        const rows = await this.page(cursor, after, lastSeq, size);
        if (rows.length === 0) return;
        after = (rows[rows.length - 1] as OutboxEntry).seq;
        yield rows;
      }
    } finally {
      if (!this.closed && this.worker) this.queue({ op: 'endPage', cursor, id: 0 });
    }
  }

  /** One replay page; asked again (of a new worker, which reads on after `after`) if the worker died meanwhile. */
  private async page(cursor: number, after: number, lastSeq: number, size: number): Promise<OutboxEntry[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.call({ op: 'page', cursor, after, lastSeq, size })) as OutboxEntry[];
      } catch (err) {
        const died = err instanceof CrbridgeError && err.code === ErrorCode.OutboxIo && !this.closed;
        if (!died || attempt >= PAGE_ATTEMPTS) throw err;
      }
    }
  }

  private call(req: OutboxCall): Promise<unknown> {
    if (this.closed) return Promise.reject(new CrbridgeError(ErrorCode.Shutdown, `outbox ${this.init.path} is closed`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { op: req.op, resolve, reject });
      this.queue({ ...req, id } as OutboxRequest);
    });
  }

  private queue(req: OutboxRequest): void {
    if (this.acks.length > 0) {
      this.outgoing.push({ op: 'ack', seqs: this.acks, id: 0 });
      this.acks = [];
    }
    this.outgoing.push(req);
    this.schedulePost();
  }

  private schedulePost(): void {
    if (this.postScheduled) return;
    this.postScheduled = true;
    setImmediate(() => {
      this.postScheduled = false;
      this.post();
    });
  }

  /** Posts this turn's calls in one message (starting a worker if none runs). */
  private post(): void {
    if (this.acks.length > 0) {
      this.outgoing.push({ op: 'ack', seqs: this.acks, id: 0 });
      this.acks = [];
    }
    if (this.outgoing.length === 0) return;
    const batch = this.outgoing;
    this.outgoing = [];
    const w = this.spawn();
    if (this.pending.size > 0) w.ref();
    w.postMessage(batch);
  }

  private spawn(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(WORKER_URL, { workerData: this.init, name: 'crbridge-outbox' });
    w.unref();
    w.on('message', (msgs: OutboxResponse[]) => {
      let reopenFailed: WireError | undefined;
      for (const m of msgs)
        if (m.op === 'result' && m.id === REOPEN_ID) reopenFailed = m.ok ? undefined : m.error;
        else this.receive(m);
      if (reopenFailed && this.worker === w) {
        // it cannot serve: the next call starts another one, which tries again
        gone(`it could not re-open the file: ${reopenFailed.message}`);
        void w.terminate();
        return;
      }
      if (this.pending.size === 0 && this.worker === w) w.unref();
    });
    const gone = (why: string) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.logger.error('outbox thread stopped; its pending appends are stored again by a new one', {
        code: ErrorCode.OutboxIo,
        component: this.init.id,
        error: why,
      });
      this.fail(
        new CrbridgeError(ErrorCode.OutboxIo, `the outbox thread of ${this.init.id} stopped: ${why}`, {
          component: this.init.id,
        }),
      );
    };
    w.on('error', (err) => gone(err.message));
    w.on('exit', (code) => gone(`exit code ${code}`));
    this.worker = w;
    // a new worker after one died: it re-opens the file before anything else
    if (this.opened && this.spawned > 0) w.postMessage([{ op: 'open', id: REOPEN_ID } satisfies OutboxRequest]);
    this.spawned++;
    return w;
  }

  private receive(m: OutboxResponse): void {
    switch (m.op) {
      case 'result': {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.ok) p.resolve(m.value);
        else p.reject(fromWire(m.error) as Error);
        return;
      }
      case 'state': {
        this.state = m.state;
        if (!m.state.overBound) this.wakeRoomWaiters();
        return;
      }
      case 'log': {
        if (m.once !== undefined) this.logger.once(m.level, m.once, m.msg, m.fields);
        else this.logger[m.level](m.msg, m.fields);
        return;
      }
      case 'metric': {
        const k = `${m.kind}\0${m.name}`;
        let impl = this.metricCache.get(k);
        if (!impl) {
          impl = this.metrics[m.kind](m.name, m.help) as { inc?: unknown; set?: unknown; observe?: unknown };
          this.metricCache.set(k, impl);
        }
        if (m.kind === 'counter') (impl.inc as (l: Record<string, string>, by: number) => void)(m.labels, m.value);
        else if (m.kind === 'gauge') (impl.set as (l: Record<string, string>, v: number) => void)(m.labels, m.value);
        else (impl.observe as (l: Record<string, string>, v: number) => void)(m.labels, m.value);
        return;
      }
    }
  }

  private fail(err: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
  }

  private wakeRoomWaiters(): void {
    this.roomWaiters.wake();
  }
}
