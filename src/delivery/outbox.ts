/**
 * The durable outbox of one sink: every event a sink is to deliver is stored here before the
 * source's checkpoint may advance past it, and removed when the sink acknowledges it; after a crash
 * (kill -9, power loss) what is left is replayed first, in enqueue order, with the same ids.
 *
 * Storage: one node:sqlite database per sink, `<state-dir>/outbox/<pipeline>/<sink>.sqlite`, in WAL
 * mode with an exclusive lock (a second process on the same state dir fails to open it instead of
 * interleaving), one row per event keyed by its sequence number. Chosen over an append-only segment
 * log because SQLite already gives what such a log would have to build: atomic multi-row commits
 * (one transaction per flush), a torn WAL tail discarded by the WAL's own frame checksums, deletes
 * by key without compaction, and keyset reads in sequence order; the checkpoint store uses the same
 * engine. Each row also carries a CRC-32 of its event, so damage SQLite cannot see (a garbled
 * payload) is found at open. A damaged file is set aside (renamed `*.corrupt-<time>`), counted and
 * logged once, and the rows that could be read and verified are written to a fresh file: the
 * process never crashes for it.
 *
 * The fsync policy (`fsync`), and what each loses; an append that has resolved survives a crash of
 * the process (kill -9, OOM) under every policy, as SQLite has written it to the OS:
 * - `per-batch` (default): each flush (the append and ack calls made since the last one, normally
 *   the appends of one turn of the event loop) is one transaction whose WAL is fdatasync'd before
 *   `append` resolves. Power loss or a kernel crash loses nothing that was acknowledged as appended.
 *   The fdatasync runs on libuv's thread pool, not the event loop: SQLite runs with `synchronous =
 *   NORMAL` (commits not synced, checkpoints synced: the WAL before it is copied, the database
 *   after), and the outbox syncs the WAL file itself after each commit, one sync at a time, every
 *   commit made meanwhile riding on the next one (group commit). Same durability as SQLite's FULL,
 *   without the event loop waiting for the disk.
 * - `interval`: `synchronous = NORMAL`, commits are not fsync'd; a WAL checkpoint every
 *   `fsyncIntervalMs` (100 ms) syncs the WAL and the database. Power loss loses at most the appends
 *   of the last interval (the source re-emits them only if its checkpoint had not advanced, so they
 *   may be lost for good); far fewer fsyncs.
 * - `off`: `synchronous = OFF`, never fsync'd; the OS writes back when it likes. Power loss may lose
 *   any recent appends and may damage the file (then set aside at the next open). For tests and
 *   throw-away setups.
 *
 * The node:sqlite API is synchronous: a flush's SQLite work runs on the event loop of the thread
 * that owns the outbox (its fsync, with `per-batch`, does not); the delivery queue runs it on a
 * worker thread (`outbox-thread.ts`), off the pipeline's. Appends made in one turn of the event loop are committed
 * together (group commit); acks wait up to {@link ACK_FLUSH_MS} to share a transaction.
 */
import { closeSync, fdatasync, fsyncSync, mkdirSync, openSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { crc32 } from 'node:zlib';
import type { JsonSchema } from '../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import type { Logger } from '../telemetry/logger.ts';
import { type Metrics, outboxMetrics } from '../telemetry/metrics.ts';

export type FsyncPolicy = 'per-batch' | 'interval' | 'off';

export interface OutboxConfig {
  /** When stored events are forced to the disk; see the file header for what each policy loses. */
  fsync: FsyncPolicy;
  /** With `fsync: interval`: milliseconds between syncs (WAL checkpoints). */
  fsyncIntervalMs: number;
  /** Most bytes (the events' structured JSON) stored; `append` beyond it rejects with CRB_OUTBOX_FULL. */
  maxBytes: number;
  /** Most events stored; `append` beyond it rejects with CRB_OUTBOX_FULL. */
  maxEntries: number;
}

export const DEFAULT_OUTBOX_CONFIG: Readonly<OutboxConfig> = Object.freeze({
  fsync: 'per-batch',
  fsyncIntervalMs: 100,
  maxBytes: 2 ** 30,
  maxEntries: 1_000_000,
});

const d = DEFAULT_OUTBOX_CONFIG;

/** JSON Schema fragment of the `outbox:` block (to be merged into the `delivery:` block). */
export const outboxConfigSchema: JsonSchema = {
  type: 'object',
  description:
    "The sink's durable outbox under --state-dir: events are stored before the source's checkpoint advances past them, removed when the sink acknowledges them, and replayed first after a restart.",
  additionalProperties: false,
  properties: {
    fsync: {
      type: 'string',
      enum: ['per-batch', 'interval', 'off'],
      default: d.fsync,
      description:
        "per-batch: every batch of appended events is fsync'd before it counts as stored (survives power loss). interval: synced every fsyncIntervalMs (power loss may lose that last interval). off: never synced (power loss may lose recent events or damage the file). All three survive a crash of the process.",
    },
    fsyncIntervalMs: {
      type: 'integer',
      minimum: 1,
      maximum: 60_000,
      default: d.fsyncIntervalMs,
      description: 'With fsync: interval, milliseconds between syncs.',
    },
    maxBytes: {
      type: 'integer',
      minimum: 1024,
      default: d.maxBytes,
      description: `Most bytes (the events' structured JSON size) the outbox holds; ${d.maxBytes / 2 ** 30} GiB by default. When reached, the source pauses (readiness says why) and catches up from its checkpoint once the sink has drained part of it.`,
    },
    maxEntries: {
      type: 'integer',
      minimum: 1,
      default: d.maxEntries,
      description: 'Most events the outbox holds; when reached, the source pauses as when maxBytes is reached.',
    },
  },
};

/** Fills in defaults for every missing field. Pure; never throws (the schema has validated already). */
export function resolveOutboxConfig(partial: Partial<OutboxConfig> = {}): OutboxConfig {
  const out = { ...d };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** Where the outbox of sink `sink` of pipeline `pipeline` lives under the state dir. */
export function outboxPath(stateDir: string, pipeline: string, sink: string): string {
  return join(stateDir, 'outbox', encodeURIComponent(pipeline), `${encodeURIComponent(sink)}.sqlite`);
}

/**
 * Once refused for its bound, the outbox takes appends again only when it is back under this
 * fraction of both bounds (so a paused source resumes with room to spare rather than flapping).
 */
export const RESUME_FRACTION = 0.9;
/**
 * SQLite page size of new outbox files. Every page a transaction touches is written whole to the
 * WAL, so with SQLite's default 4 KiB a batch of 2 KB events costs one write per two events and
 * the automatic checkpoints copy them again; 16 KiB pages cut append + ack of 2 KB events in
 * batches of 500 from ~40 to ~10-15 µs (`npm run bench -- outbox`). Larger pages (64 KiB) help big
 * batches a little more but make each small commit rewrite 64 KiB pages (3-10× slower at batch 1).
 */
export const PAGE_SIZE = 16_384;
/** WAL size at which SQLite copies it into the database file (its automatic checkpoint). */
export const WAL_CHECKPOINT_BYTES = 16 * 2 ** 20;
/** SQLite page cache per outbox (allocated as used). */
export const CACHE_BYTES = 8 * 2 ** 20;
/** How long an ack waits for other acks or an append to share its transaction. */
export const ACK_FLUSH_MS = 10;
/** After a failed transaction, when its acks are committed again (unless an append comes first). */
export const ACK_RETRY_MS = 1000;

/** One event to store, as the sink will send it. */
export interface OutboxRecord {
  /** The object the event is about (its uid): the unit of ordering. */
  key: string;
  /** The CloudEvent id (the receiver's deduplication key; unchanged by replay). */
  id: string;
  /** The CloudEvent in structured JSON, as built (so already redacted). */
  body: string;
}

/** A stored event. */
export interface OutboxEntry extends OutboxRecord {
  /** Position in the outbox: strictly increasing in append order, across restarts. */
  seq: number;
  /** Bytes it counts against `maxBytes` (UTF-8 length of `body`). */
  bytes: number;
}

/** What an outbox held when it was opened: the events to deliver before any new one. */
export interface OutboxReplay {
  /** Events left from before (after setting aside a damaged file: those that could be recovered). */
  readonly count: number;
  readonly bytes: number;
  /** Highest seq of the replay (0 when empty); every later append gets a higher one. */
  readonly lastSeq: number;
  /** Files set aside at this open because they were damaged (0 or 1). */
  readonly setAside: number;
  /**
   * The replayed events in seq order, read lazily `size` at a time; entries acknowledged meanwhile
   * are skipped. Call while the outbox is open.
   */
  batches(size?: number): AsyncGenerator<OutboxEntry[]>;
}

/** Readiness of an outbox (for /readyz): not ready while it refuses appends, with why. */
export interface OutboxStatus {
  ready: boolean;
  reasons: string[];
}

/**
 * A sink's durable outbox.
 *
 * Ordering: every appended event gets a seq, strictly increasing in the order of `append` calls
 * and within a call in array order, also across reopen. `open` replays what is left in seq order,
 * so the events of one key come back in the order they were appended — per-object order holds if
 * the caller appends an object's events in order (and the events of several sinks each in their own
 * outbox).
 * Durability: when `append` resolves, its events are stored as the fsync policy promises (always
 * surviving a crash of the process; with `per-batch`, power loss too), and only then may the
 * source's checkpoint advance past them. A rejected `append` stored none of its events.
 * Idempotency: `ack` is idempotent (unknown or repeated seqs are ignored); acknowledged events are
 * deleted in batches, so after a crash a few acknowledged events may be replayed again, with the
 * same ids (at least once).
 * Secrets: the outbox stores the events exactly as the sink sends them, built and redacted by the
 * event builder; it adds nothing to them and logs no event contents.
 *
 * Use by a delivery queue: `open()` at start, and queue the replayed events (`JSON.parse(body)`)
 * before any new one; `enqueue` appends `{ key: uid, id, body: toStructuredJson(event) }` and
 * lets the source's checkpoint advance once `append` resolves; on CRB_OUTBOX_FULL the source pauses
 * until `whenRoom()` (or retries later after a full disk); `ack([seq])` once the event is delivered
 * or its dead letter written; `status()` feeds /readyz; `close(deadline)` after the queue's shutdown.
 */
export interface Outbox {
  /** Opens (creates) the file, sets aside a damaged one, and returns what is left to deliver. Once. */
  open(): Promise<OutboxReplay>;
  /**
   * Stores `records` (all or none) and resolves with their seqs, in order. Rejects with a
   * CrbridgeError: CRB_OUTBOX_FULL when a bound would be exceeded or the disk is full (the caller
   * pauses its source and tries again after {@link Outbox.whenRoom}), CRB_OUTBOX_IO for other write
   * failures, CRB_SHUTDOWN after `close`. An outbox holding nothing admits one call beyond the bounds.
   */
  append(records: readonly OutboxRecord[]): Promise<number[]>;
  /** Marks events delivered (or dead-lettered): they no longer count and are deleted at the next flush. */
  ack(seqs: Iterable<number>): void;
  /** Commits pending acks now (appends are committed without being asked). */
  flush(): Promise<void>;
  /** Events stored and not acknowledged. */
  readonly depth: number;
  /** Their bytes. */
  readonly bytes: number;
  status(): OutboxStatus;
  /** Resolves when the outbox takes appends again after refusing one for its bounds (or at once). */
  whenRoom(signal?: AbortSignal): Promise<void>;
  /**
   * Commits what is pending (pending appends resolve or reject), stops the sync timer and closes the
   * file, within `deadline` (epoch ms: every step is a bounded local commit). Idempotent.
   */
  close(deadline: number): Promise<void>;
}

/** Callers of an outbox's `whenRoom`, woken all at once when it takes appends again. */
export class RoomWaiters {
  private list: (() => void)[] = [];

  /** Resolves at the next {@link wake}; rejects with the signal's reason when it aborts first. */
  wait(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.list = this.list.filter((w) => w !== done);
        reject(signal?.reason);
      };
      const done = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.list.push(done);
    });
  }

  wake(): void {
    const waiters = this.list;
    this.list = [];
    for (const w of waiters) w();
  }
}

export interface SqliteOutboxOptions {
  /** The database file, usually {@link outboxPath}. */
  path: string;
  /** `<pipeline>/<sink>`: the `component` label of metrics and logs. */
  id: string;
  logger: Logger;
  metrics: Metrics;
  config?: Partial<OutboxConfig>;
  /** SQLite `max_page_count`: a hard cap on the file in pages (tests use it to simulate a full disk). */
  maxPageCount?: number;
  /** How the WAL is synced with `per-batch` (default `fs.fdatasync`; tests slow it down or fail it). */
  fdatasync?: (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void;
}

interface PendingAppend {
  rows: OutboxEntry[];
  resolve: (seqs: number[]) => void;
  reject: (err: unknown) => void;
}

const SQLITE_CORRUPT = 11;
const SQLITE_FULL = 13;
const SQLITE_NOTADB = 26;
const SQLITE_BUSY = 5;

/** The primary SQLite result code of an error from node:sqlite, if it is one. */
function sqliteCode(err: unknown): number | undefined {
  const c = (err as { errcode?: unknown } | null)?.errcode;
  return typeof c === 'number' ? c & 0xff : undefined;
}

const isCorruption = (err: unknown) => {
  const c = sqliteCode(err);
  return c === SQLITE_CORRUPT || c === SQLITE_NOTADB;
};

const isDiskFull = (err: unknown) =>
  sqliteCode(err) === SQLITE_FULL || (err as { code?: unknown } | null)?.code === 'ENOSPC';

/** Damage found while reading a file at open. */
class Damage extends Error {}

export class SqliteOutbox implements Outbox {
  private readonly path: string;
  private readonly id: string;
  private readonly logger: Logger;
  private readonly config: OutboxConfig;
  private readonly maxPageCount: number | undefined;
  private readonly m: ReturnType<typeof outboxMetrics>;
  private readonly labels: { component: string };
  private db: DatabaseSync | undefined;
  private insert: StatementSync | undefined;
  private del: StatementSync | undefined;
  /** Bytes of every stored, unacknowledged event by seq (what `ack` subtracts). */
  private readonly sizes = new Map<number, number>();
  private storedBytes = 0;
  private nextSeq = 1;
  private pending: PendingAppend[] = [];
  private pendingAcks: number[] = [];
  private flushScheduled = false;
  private ackTimer: NodeJS.Timeout | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  /** Refusing appends for the bounds until back under RESUME_FRACTION of them. */
  private overBound = false;
  /** The last commit failed for a full disk (cleared by the next successful commit). */
  private diskFull = false;
  private readonly roomWaiters = new RoomWaiters();
  private opened = false;
  private closed = false;
  private closePromise: Promise<void> | undefined;
  /** `per-batch`: committed transactions (their appends, when each began) waiting for the next WAL sync. */
  private unsynced: { appends: PendingAppend[]; started: number }[] = [];
  /** `per-batch`: a WAL sync is running (resolves when it and every one chained after it are done). */
  private syncing: Promise<void> | undefined;
  /** `per-batch`: the WAL file, opened for syncing after the first commit. */
  private walFd: number | undefined;
  private readonly fdatasync: NonNullable<SqliteOutboxOptions['fdatasync']>;

  constructor(opts: SqliteOutboxOptions) {
    this.path = opts.path;
    this.id = opts.id;
    this.logger = opts.logger;
    this.config = resolveOutboxConfig(opts.config);
    this.maxPageCount = opts.maxPageCount;
    this.fdatasync = opts.fdatasync ?? fdatasync;
    this.m = outboxMetrics(opts.metrics);
    this.labels = { component: opts.id };
  }

  get depth(): number {
    return this.sizes.size;
  }

  get bytes(): number {
    return this.storedBytes;
  }

  /** Refusing appends for its bounds, until back under {@link RESUME_FRACTION} of them (what `whenRoom` waits out). */
  get refusingForBounds(): boolean {
    return this.overBound;
  }

  async open(): Promise<OutboxReplay> {
    if (this.opened) throw new CrbridgeError(ErrorCode.Internal, `outbox ${this.path} opened twice`);
    this.opened = true;
    mkdirSyncSafe(dirname(this.path));
    let setAside = 0;
    let lastSeq: number;
    try {
      lastSeq = this.scan(this.connect());
    } catch (err) {
      if (!(err instanceof Damage) && !isCorruption(err)) {
        this.closeDb();
        throw this.ioError('open', err);
      }
      const recovered = this.salvage();
      this.closeDb();
      const aside = this.setAside();
      setAside = 1;
      try {
        const db = this.connect();
        this.writeRows(db, recovered.rows);
        lastSeq = this.scan(db);
      } catch (again) {
        this.closeDb();
        throw this.ioError('recreate the', again);
      }
      this.m.corrupt.inc(this.labels);
      if (recovered.badEntries > 0) this.m.corruptEntries.inc(this.labels, recovered.badEntries);
      this.logger.error('outbox file is damaged: set aside, the events that could be read are kept', {
        code: ErrorCode.OutboxCorrupt,
        component: this.id,
        file: this.path,
        setAsideAs: aside,
        recovered: recovered.rows.length,
        badEntries: recovered.badEntries,
        error: errorMessage(err),
        hint: 'events of the damaged part may be missing at the sink; the file set aside can be inspected with sqlite3',
      });
    }
    this.nextSeq = lastSeq + 1;
    if (this.config.fsync === 'interval') {
      this.syncTimer = setInterval(() => this.checkpoint(), this.config.fsyncIntervalMs);
      this.syncTimer.unref();
    }
    this.gauges();
    const count = this.sizes.size;
    const bytes = this.storedBytes;
    return {
      count,
      bytes,
      lastSeq,
      setAside,
      batches: (size = 500) => this.replayBatches(lastSeq, size),
    };
  }

  append(records: readonly OutboxRecord[]): Promise<number[]> {
    if (this.closed || !this.db)
      return Promise.reject(
        new CrbridgeError(ErrorCode.Shutdown, `outbox ${this.path} is ${this.closed ? 'closed' : 'not open'}`),
      );
    if (records.length === 0) return Promise.resolve([]);
    const rows: OutboxEntry[] = [];
    let add = 0;
    for (const r of records) {
      const bytes = Buffer.byteLength(r.body);
      add += bytes;
      rows.push({ seq: 0, key: r.key, id: r.id, body: r.body, bytes });
    }
    const count = this.sizes.size;
    const empty = count === 0;
    if (
      !empty &&
      (this.overBound || count + rows.length > this.config.maxEntries || this.storedBytes + add > this.config.maxBytes)
    ) {
      this.overBound = true;
      this.m.refused.inc({ ...this.labels, reason: 'bound' });
      this.gauges();
      return Promise.reject(
        new CrbridgeError(
          ErrorCode.OutboxFull,
          `outbox of ${this.id} is full: ${count} events, ${this.storedBytes} bytes stored (maxEntries ${this.config.maxEntries}, maxBytes ${this.config.maxBytes}); the source pauses until the sink has delivered part of it`,
          { component: this.id, entries: count, bytes: this.storedBytes, reason: 'bound' },
        ),
      );
    }
    for (const row of rows) {
      row.seq = this.nextSeq++;
      this.sizes.set(row.seq, row.bytes);
    }
    this.storedBytes += add;
    return new Promise<number[]>((resolve, reject) => {
      this.pending.push({ rows, resolve, reject });
      this.scheduleFlush();
    });
  }

  ack(seqs: Iterable<number>): void {
    let any = false;
    for (const seq of seqs) {
      const size = this.sizes.get(seq);
      if (size === undefined) continue;
      this.sizes.delete(seq);
      this.storedBytes -= size;
      this.pendingAcks.push(seq);
      any = true;
    }
    if (!any) return;
    if (
      this.overBound &&
      this.sizes.size <= this.config.maxEntries * RESUME_FRACTION &&
      this.storedBytes <= this.config.maxBytes * RESUME_FRACTION
    ) {
      this.overBound = false;
      this.wakeRoomWaiters();
    }
    this.gauges();
    this.scheduleAckFlush(ACK_FLUSH_MS);
  }

  /** Commits pending acks after `ms` unless an append's transaction takes them first. */
  private scheduleAckFlush(ms: number): void {
    if (this.ackTimer || this.closed) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      this.flushNow();
    }, ms);
    this.ackTimer.unref();
  }

  async flush(): Promise<void> {
    this.flushNow();
  }

  status(): OutboxStatus {
    const reasons: string[] = [];
    if (this.overBound)
      reasons.push(
        `outbox of ${this.id} is full (${this.sizes.size} events, ${this.storedBytes} bytes; maxEntries ${this.config.maxEntries}, maxBytes ${this.config.maxBytes}): reading paused until the sink catches up`,
      );
    if (this.diskFull)
      reasons.push(
        `outbox of ${this.id} cannot write: the disk holding ${this.path} is full; reading paused, free space there`,
      );
    return { ready: reasons.length === 0, reasons };
  }

  whenRoom(signal?: AbortSignal): Promise<void> {
    if (!this.overBound || this.closed) return Promise.resolve();
    return this.roomWaiters.wait(signal);
  }

  close(deadline: number): Promise<void> {
    this.closePromise ??= this.doClose(deadline);
    return this.closePromise;
  }

  private async doClose(_deadline: number): Promise<void> {
    // Every step below is a bounded, local, synchronous commit: the deadline cannot be overrun by
    // waiting on anything, so nothing is cut short (cutting would only lose acks, never events).
    this.closed = true;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.syncTimer) clearInterval(this.syncTimer);
    this.ackTimer = undefined;
    this.syncTimer = undefined;
    this.flushNow();
    if (this.config.fsync === 'interval') this.checkpoint();
    // a WAL sync is a bounded local call; the file must stay open until it is done
    while (this.syncing) await this.syncing;
    this.closeDb();
    this.wakeRoomWaiters();
  }

  // ---- internals ----

  /** Opens the file with the pragmas of the fsync policy and the schema; throws SQLite's errors. */
  private connect(): DatabaseSync {
    const db = new DatabaseSync(this.path, { timeout: 2000 });
    try {
      // before the first table exists (so for new files): see PAGE_SIZE
      db.exec(`PRAGMA page_size = ${PAGE_SIZE}`);
      db.exec('PRAGMA locking_mode = EXCLUSIVE');
      db.exec('PRAGMA journal_mode = WAL');
      db.exec(`PRAGMA wal_autocheckpoint = ${Math.round(WAL_CHECKPOINT_BYTES / PAGE_SIZE)}`);
      db.exec(`PRAGMA journal_size_limit = ${2 * WAL_CHECKPOINT_BYTES}`);
      db.exec(`PRAGMA cache_size = -${CACHE_BYTES / 1024}`); // KiB: the WAL's pages stay cached until checkpointed
      // per-batch: the outbox syncs the WAL itself after each commit, off the event loop (see the header)
      const sync = { 'per-batch': 'NORMAL', interval: 'NORMAL', off: 'OFF' }[this.config.fsync];
      db.exec(`PRAGMA synchronous = ${sync}`);
      if (this.maxPageCount !== undefined) db.exec(`PRAGMA max_page_count = ${Math.floor(this.maxPageCount)}`);
      db.exec(`CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY, key TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
        bytes INTEGER NOT NULL, crc INTEGER NOT NULL)`);
    } catch (err) {
      db.close();
      throw err;
    }
    this.db = db;
    this.insert = db.prepare('INSERT INTO outbox (seq, key, id, body, bytes, crc) VALUES (?, ?, ?, ?, ?, ?)');
    this.del = db.prepare('DELETE FROM outbox WHERE seq BETWEEN ? AND ?');
    return db;
  }

  /**
   * Verifies the whole file (SQLite's quick_check, then every row's checksum) and fills the size
   * index; returns the highest seq. Throws Damage (or SQLite's corruption error) if anything is off.
   */
  private scan(db: DatabaseSync): number {
    this.sizes.clear();
    this.storedBytes = 0;
    const check = db.prepare('PRAGMA quick_check').all() as { quick_check: string }[];
    if (check.length !== 1 || check[0]?.quick_check !== 'ok')
      throw new Damage(`quick_check: ${check.map((r) => r.quick_check).join('; ')}`);
    let last = 0;
    const rows = db.prepare('SELECT seq, key, id, body, bytes, crc FROM outbox ORDER BY seq').iterate();
    for (const row of rows as Iterable<RawRow>) {
      if (!validRow(row)) throw new Damage(`entry ${String(row.seq)} fails its checksum`);
      this.sizes.set(row.seq, row.bytes);
      this.storedBytes += row.bytes;
      last = row.seq;
    }
    return last;
  }

  /** Reads whatever valid rows a damaged file still yields, in seq order, tolerating every error. */
  private salvage(): { rows: OutboxEntry[]; badEntries: number } {
    this.closeDb();
    const rows: OutboxEntry[] = [];
    let badEntries = 0;
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(this.path, { timeout: 2000 });
      for (const row of db
        .prepare('SELECT seq, key, id, body, bytes, crc FROM outbox ORDER BY seq')
        .iterate() as Iterable<RawRow>) {
        if (validRow(row)) rows.push({ seq: row.seq, key: row.key, id: row.id, body: row.body, bytes: row.bytes });
        else badEntries++;
      }
    } catch {
      // the rest is unreadable: keep what came before
    } finally {
      try {
        db?.close();
      } catch {}
    }
    return { rows, badEntries };
  }

  /** Renames the file and its WAL/SHM companions to `*.corrupt-<time>`; returns the new name. */
  private setAside(): string {
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const aside = `${this.path}.corrupt-${stamp}`;
    try {
      renameSync(this.path, aside);
      for (const suffix of ['-wal', '-shm']) {
        try {
          renameSync(this.path + suffix, aside + suffix);
        } catch {
          rmSync(this.path + suffix, { force: true });
        }
      }
    } catch (err) {
      throw this.ioError('set aside the damaged', err);
    }
    return aside;
  }

  private writeRows(db: DatabaseSync, rows: readonly OutboxEntry[]): void {
    const insert = this.insert as StatementSync;
    db.exec('BEGIN IMMEDIATE');
    try {
      for (const r of rows) insert.run(r.seq, r.key, r.id, r.body, r.bytes, crcOf(r));
      db.exec('COMMIT');
    } catch (err) {
      db.exec('ROLLBACK');
      throw this.ioError('write the recovered events to', err);
    }
  }

  private async *replayBatches(lastSeq: number, size: number): AsyncGenerator<OutboxEntry[]> {
    let after = 0;
    while (after < lastSeq) {
      const db = this.db;
      if (!db) throw new CrbridgeError(ErrorCode.Shutdown, `outbox ${this.path} is closed`);
      const rows = db
        .prepare('SELECT seq, key, id, body, bytes FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?')
        .all(after, lastSeq, size) as unknown as OutboxEntry[];
      if (rows.length === 0) return;
      after = (rows[rows.length - 1] as OutboxEntry).seq;
      const live = rows
        .filter((r) => this.sizes.has(r.seq))
        .map((r) => ({ seq: r.seq, key: r.key, id: r.id, body: r.body, bytes: r.bytes }));
      if (live.length > 0) yield live;
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushNow();
    });
  }

  /** One transaction: every pending append, then every pending ack. */
  private flushNow(): void {
    const appends = this.pending;
    const acks = this.pendingAcks;
    if (appends.length === 0 && acks.length === 0) return;
    this.pending = [];
    this.pendingAcks = [];
    if (this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
    }
    const db = this.db;
    const insert = this.insert;
    const del = this.del;
    const started = performance.now();
    try {
      if (!db || !insert || !del) throw new CrbridgeError(ErrorCode.Shutdown, `outbox ${this.path} is closed`);
      db.exec('BEGIN IMMEDIATE');
      try {
        for (const a of appends) for (const r of a.rows) insert.run(r.seq, r.key, r.id, r.body, r.bytes, crcOf(r));
        for (const [from, to] of ranges(acks)) del.run(from, to);
        db.exec('COMMIT');
      } catch (err) {
        try {
          db.exec('ROLLBACK');
        } catch {}
        throw err;
      }
    } catch (err) {
      this.failFlush(appends, acks, err);
      return;
    }
    const durable = this.config.fsync !== 'per-batch' || appends.length === 0;
    // per-batch: observed once its WAL sync is done (the duration includes the fsync)
    if (durable) this.m.commitDuration.observe(this.labels, (performance.now() - started) / 1000);
    if (this.diskFull) {
      this.diskFull = false;
      this.logger.info('outbox writes again', { component: this.id, file: this.path });
    }
    this.gauges();
    if (durable) for (const a of appends) a.resolve(a.rows.map((r) => r.seq));
    else {
      this.unsynced.push({ appends, started });
      this.syncWal();
    }
  }

  /**
   * `per-batch`: fdatasyncs the WAL on the thread pool, then resolves the appends committed before
   * it started; appends committed meanwhile wait for the next sync (one at a time, in order).
   */
  private syncWal(): void {
    if (this.syncing || this.unsynced.length === 0) return;
    const txs = this.unsynced;
    this.unsynced = [];
    let finished!: () => void;
    const syncing = new Promise<void>((resolve) => {
      finished = resolve;
    });
    this.syncing = syncing;
    const done = (err: unknown) => {
      if (this.syncing === syncing) this.syncing = undefined;
      if (err)
        this.failSync(
          txs.flatMap((t) => t.appends),
          err,
        );
      else
        for (const t of txs) {
          this.m.commitDuration.observe(this.labels, (performance.now() - t.started) / 1000);
          for (const a of t.appends) a.resolve(a.rows.map((r) => r.seq));
        }
      finished();
      this.syncWal();
    };
    let fd: number;
    try {
      fd = this.openWal();
    } catch (err) {
      done(err);
      return;
    }
    this.fdatasync(fd, (err) => done(err));
  }

  /** The WAL's file descriptor (opened once, with its folder synced so the file itself is durable). */
  private openWal(): number {
    if (this.walFd !== undefined) return this.walFd;
    const fd = openSync(`${this.path}-wal`, 'r');
    try {
      const dir = openSync(dirname(this.path), 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.walFd = fd;
    return fd;
  }

  /** The WAL sync failed: its appends are not known to be durable, so they reject (the caller stores them again). */
  private failSync(appends: PendingAppend[], err: unknown): void {
    this.uncount(appends);
    const failure = this.ioError('sync', err);
    this.refused(appends.length, 'io', 'sync', 'outbox sync (fdatasync of its WAL) failed', failure, err);
    this.gauges();
    for (const a of appends) a.reject(failure);
  }

  /** Forgets the sizes of appends that were not stored. */
  private uncount(appends: PendingAppend[]): void {
    for (const a of appends) for (const r of a.rows) if (this.sizes.delete(r.seq)) this.storedBytes -= r.bytes;
  }

  /** Counts `n` refused appends and logs the cause once per kind (`key`). */
  private refused(n: number, reason: string, key: string, msg: string, failure: CrbridgeError, err: unknown): void {
    this.m.refused.inc({ ...this.labels, reason }, n);
    this.logger.once('error', `outbox-write:${this.id}:${key}`, msg, {
      code: failure.code,
      component: this.id,
      file: this.path,
      error: errorMessage(err),
    });
  }

  /** Nothing of the failed transaction is stored: its appends reject and un-count; its acks are retried. */
  private failFlush(appends: PendingAppend[], acks: number[], err: unknown): void {
    this.uncount(appends);
    if (!this.closed && acks.length > 0) {
      this.pendingAcks = acks.concat(this.pendingAcks);
      this.scheduleAckFlush(ACK_RETRY_MS);
    }
    const full = isDiskFull(err);
    const closedErr = err instanceof CrbridgeError && err.code === ErrorCode.Shutdown;
    const reason = full ? 'disk-full' : 'io';
    let failure: CrbridgeError;
    if (closedErr) failure = err;
    else if (full) {
      this.diskFull = true;
      failure = new CrbridgeError(
        ErrorCode.OutboxFull,
        `outbox of ${this.id} cannot store events: the disk holding ${this.path} is full (${errorMessage(err)}); the source pauses, free space there`,
        { component: this.id, reason },
      );
    } else failure = this.ioError('write', err);
    if (!closedErr && appends.length > 0)
      this.refused(appends.length, reason, reason, 'outbox write failed', failure, err);
    this.gauges();
    for (const a of appends) a.reject(failure);
  }

  private checkpoint(): void {
    try {
      this.db?.exec('PRAGMA wal_checkpoint(PASSIVE)');
    } catch (err) {
      this.logger.once('warn', `outbox-sync:${this.id}`, 'outbox sync (WAL checkpoint) failed', {
        code: ErrorCode.OutboxIo,
        component: this.id,
        file: this.path,
        error: errorMessage(err),
      });
    }
  }

  private closeDb(): void {
    if (this.walFd !== undefined) {
      try {
        closeSync(this.walFd);
      } catch {}
      this.walFd = undefined;
    }
    const db = this.db;
    this.db = undefined;
    this.insert = undefined;
    this.del = undefined;
    try {
      db?.close();
    } catch (err) {
      this.logger.warn('outbox close failed', {
        code: ErrorCode.OutboxIo,
        component: this.id,
        error: errorMessage(err),
      });
    }
  }

  private wakeRoomWaiters(): void {
    this.roomWaiters.wake();
  }

  private gauges(): void {
    this.m.entries.set(this.labels, this.sizes.size);
    this.m.bytes.set(this.labels, this.storedBytes);
    this.m.full.set(this.labels, this.overBound || this.diskFull ? 1 : 0);
  }

  private ioError(what: string, err: unknown): CrbridgeError {
    if (err instanceof CrbridgeError) return err;
    const busy = sqliteCode(err) === SQLITE_BUSY;
    return new CrbridgeError(
      ErrorCode.OutboxIo,
      busy
        ? `cannot ${what} outbox ${this.path}: it is in use by another process (another crbridge with the same --state-dir?); stop it or give this one its own --state-dir`
        : `cannot ${what} outbox ${this.path}: ${errorMessage(err)}; check that the state dir is writable`,
      { component: this.id, file: this.path },
      { cause: err },
    );
  }
}

/** Sorted seqs as runs of consecutive numbers (`[from, to]`): one range delete each. */
function ranges(seqs: number[]): [number, number][] {
  const out: [number, number][] = [];
  if (seqs.length === 0) return out;
  const sorted = seqs.length > 1 ? Float64Array.from(seqs).sort() : seqs;
  let from = sorted[0] as number;
  let to = from;
  for (let i = 1; i < sorted.length; i++) {
    const s = sorted[i] as number;
    if (s === to + 1) to = s;
    else if (s !== to) {
      out.push([from, to]);
      from = s;
      to = s;
    }
  }
  out.push([from, to]);
  return out;
}

interface RawRow {
  seq: number;
  key: string;
  id: string;
  body: string;
  bytes: number;
  crc: number;
}

/** CRC-32 over key, id and body, each NUL-terminated (so moving bytes between fields is caught). */
function crcOf(r: { key: string; id: string; body: string }): number {
  return crc32(r.body, crc32(`${r.id}\0`, crc32(`${r.key}\0`)));
}

function validRow(row: RawRow): boolean {
  return (
    typeof row.seq === 'number' &&
    typeof row.key === 'string' &&
    typeof row.id === 'string' &&
    typeof row.body === 'string' &&
    typeof row.bytes === 'number' &&
    crcOf(row) === row.crc &&
    Buffer.byteLength(row.body) === row.bytes
  );
}

function mkdirSyncSafe(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new CrbridgeError(
      ErrorCode.OutboxIo,
      `cannot create the outbox folder ${dir}: ${errorMessage(err)}; check that --state-dir is writable`,
      { dir },
      { cause: err },
    );
  }
}
