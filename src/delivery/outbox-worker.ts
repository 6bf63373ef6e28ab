/**
 * The worker thread of a sink's outbox (`outbox-thread.ts` holds the protocol): it hosts one
 * {@link SqliteOutbox} and runs the calls the main thread posts, in the order posted, so SQLite's
 * transactions, the rows' CRCs and the replay reads run beside the pipeline's thread instead of
 * on it. It decides nothing of its own: the outbox's logic stays in `outbox.ts`. What it posts
 * back — results, the outbox's state after every change, its log lines and metric updates — goes
 * in one message per turn of its event loop (gauges: the last value of the turn).
 */
import { fdatasync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { CrbridgeError, ErrorCode, toWire } from '../errors.ts';
import { type Level, type Logger, serializeError } from '../telemetry/logger.ts';
import { type Counter, type Gauge, type Histogram, Metrics } from '../telemetry/metrics.ts';
import { type OutboxEntry, type OutboxRecord, type OutboxReplay, SqliteOutbox } from './outbox.ts';
import type {
  AppendResult,
  OutboxRequest,
  OutboxResponse,
  OutboxThreadInit,
  OutboxThreadState,
  WireError,
} from './outbox-thread.ts';

const port = parentPort;
if (!port) throw new Error('outbox-worker.ts runs as a worker thread only');
const init = workerData as OutboxThreadInit;

// ---- what goes back: one message per turn ----

let out: OutboxResponse[] = [];
const gauges = new Map<string, OutboxResponse>();
let sendScheduled = false;
let lastState = '';

function send(): void {
  sendScheduled = false;
  const state: OutboxThreadState = {
    depth: outbox.depth,
    bytes: outbox.bytes,
    status: outbox.status(),
    overBound: outbox.refusingForBounds,
  };
  const msgs: OutboxResponse[] = [];
  const key = `${state.depth} ${state.bytes} ${state.overBound} ${state.status.reasons.join('\n')}`;
  if (key !== lastState) {
    lastState = key;
    msgs.push({ op: 'state', state });
  }
  msgs.push(...gauges.values(), ...out);
  gauges.clear();
  out = [];
  if (msgs.length > 0) port?.postMessage(msgs);
}

function schedule(): void {
  if (sendScheduled) return;
  sendScheduled = true;
  setImmediate(send);
}

function emit(m: OutboxResponse): void {
  out.push(m);
  schedule();
}

// ---- the outbox's logger and metrics, forwarded ----

function wireFields(fields: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!fields) return undefined;
  const f: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) f[k] = v instanceof Error ? serializeError(v) : v;
  return f;
}

function forwardLogger(base: Record<string, unknown> = {}): Logger {
  const log = (level: Level, msg: string, fields?: Record<string, unknown>, once?: string) =>
    emit({ op: 'log', level, msg, fields: wireFields({ ...base, ...fields }), ...(once !== undefined && { once }) });
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    child: (fields) => forwardLogger({ ...base, ...fields }),
    once: (level, key, m, f) => log(level, m, f, key),
  };
}

/** A registry whose updates are posted to the main thread's (which renders them). */
class ForwardMetrics extends Metrics {
  override counter(name: string, help: string): Counter {
    return {
      inc: (labels = {}, by = 1) => emit({ op: 'metric', kind: 'counter', name, help, labels, value: by }),
      get: () => 0,
    };
  }
  override gauge(name: string, help: string): Gauge {
    const set = (labels: Record<string, string>, value: number) =>
      gauges.set(`${name}\0${JSON.stringify(labels)}`, { op: 'metric', kind: 'gauge', name, help, labels, value });
    return {
      set: (labels, v) => {
        set(labels, v);
        schedule();
      },
      inc: () => {
        throw new Error('outbox gauges are set, not incremented, across the thread');
      },
      get: () => 0,
      delete: () => {},
    };
  }
  override histogram(name: string, help: string): Histogram {
    return { observe: (labels, value) => emit({ op: 'metric', kind: 'histogram', name, help, labels, value }) };
  }
}

// ---- the outbox ----

const delay = init.syncDelayMs;
const outbox = new SqliteOutbox({
  path: init.path,
  id: init.id,
  logger: forwardLogger(),
  metrics: new ForwardMetrics(),
  ...(init.config && { config: init.config }),
  ...(init.maxPageCount !== undefined && { maxPageCount: init.maxPageCount }),
  ...(delay !== undefined && {
    fdatasync: (fd: number, done: (err: NodeJS.ErrnoException | null) => void) =>
      setTimeout(() => fdatasync(fd, done), delay),
  }),
});
let replay: OutboxReplay | undefined;
/** Why the file could not be opened (appends reject with it). */
let openError: CrbridgeError | undefined;
let openAsked = false;
let closing = false;
const cursors = new Map<number, AsyncGenerator<OutboxEntry[]>>();

function reply(id: number, p: Promise<unknown>): void {
  p.then(
    (value) => emit({ op: 'result', id, ok: true, value }),
    (err: unknown) => emit({ op: 'result', id, ok: false, error: toWire(err) as WireError }),
  );
}

/** The next page of replay `cursor` after seq `after` (none past `lastSeq`): non-empty, or [] at the end. */
async function page(cursor: number, after: number, lastSeq: number, size: number): Promise<OutboxEntry[]> {
  if (!replay) throw openError ?? new CrbridgeError(ErrorCode.Shutdown, `outbox ${init.path} is not open`);
  let gen = cursors.get(cursor);
  if (!gen) {
    // also after a new worker re-opened the file: read from the start, skip what was paged already
    gen = replay.batches(size);
    cursors.set(cursor, gen);
  }
  for (;;) {
    const next = await gen.next();
    if (next.done) break;
    const rows = next.value.filter((e) => e.seq > after && e.seq <= lastSeq);
    if (rows.length > 0) return rows;
    if ((next.value[next.value.length - 1] as OutboxEntry).seq >= lastSeq) break;
  }
  cursors.delete(cursor);
  return [];
}

/** The merged `append` calls, made one by one as the main thread made them; one result per call. */
function appendEach(records: readonly OutboxRecord[], counts: number[]): Promise<AppendResult[]> {
  let at = 0;
  const calls = counts.map((n) => {
    const slice = records.slice(at, at + n);
    at += n;
    return openError ? Promise.reject(openError) : outbox.append(slice);
  });
  return Promise.allSettled(calls).then((settled) =>
    settled.map((r) =>
      r.status === 'fulfilled'
        ? { ok: true, seqs: r.value }
        : { ok: false, error: toWire(notOpen(r.reason)) as WireError },
    ),
  );
}

/**
 * "Not open" after an open that failed is a write failure (CRB_OUTBOX_IO: the queue stores the
 * events again later), not the CRB_SHUTDOWN it is after `close`.
 */
function notOpen(err: unknown): unknown {
  if (closing || !openAsked || !(err instanceof CrbridgeError) || err.code !== ErrorCode.Shutdown) return err;
  return (
    openError ??
    new CrbridgeError(ErrorCode.OutboxIo, `outbox ${init.path} could not be opened`, { component: init.id })
  );
}

function handle(req: OutboxRequest): void {
  switch (req.op) {
    case 'open':
      openAsked = true;
      reply(
        req.id,
        outbox.open().then(
          (r) => {
            replay = r;
            return { count: r.count, bytes: r.bytes, lastSeq: r.lastSeq, setAside: r.setAside };
          },
          (err: unknown) => {
            openError =
              err instanceof CrbridgeError && err.code !== ErrorCode.Shutdown
                ? err
                : new CrbridgeError(ErrorCode.OutboxIo, `cannot open outbox ${init.path}: ${String(err)}`);
            throw err;
          },
        ),
      );
      return;
    case 'append':
      reply(req.id, appendEach(req.records, req.counts));
      return;
    case 'ack':
      outbox.ack(req.seqs);
      return;
    case 'flush':
      reply(req.id, outbox.flush());
      return;
    case 'page':
      reply(req.id, page(req.cursor, req.after, req.lastSeq, req.size));
      return;
    case 'endPage': {
      const gen = cursors.get(req.cursor);
      cursors.delete(req.cursor);
      void gen?.return(undefined);
      return;
    }
    case 'close':
      closing = true;
      reply(req.id, outbox.close(req.deadline));
      return;
  }
}

port.on('message', (reqs: OutboxRequest[]) => {
  for (const r of reqs) handle(r);
  schedule();
});
