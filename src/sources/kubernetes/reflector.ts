/**
 * The reflector: one LIST + WATCH loop over one scope (a namespace, or all namespaces /
 * cluster-scoped), modelled on client-go's `tools/cache/reflector.go`:
 *
 * - paginated LIST (`limit`/`continue`) as a consistent read, handed to the handler page by page
 *   as it arrives (only one page is held at a time), then WATCH from the list's resourceVersion
 *   with `allowWatchBookmarks=true` and a server-side `timeoutSeconds` drawn uniformly from
 *   [t, 2t] (t = `watchTimeoutSeconds`), so the watches of many namespaces do not reconnect in lockstep;
 * - a client-side inactivity watchdog: no event and no bookmark for `stallTimeoutMs` aborts the
 *   stream, which is reopened from the last resourceVersion (a proxy that stops forwarding without
 *   closing is otherwise never noticed);
 * - a cleanly closed stream (server timeout) is reopened at once from the last resourceVersion;
 *   errors back off exponentially with jitter, and the backoff starts over after a LIST or a healthy
 *   watch (one that delivered an event or stayed open `healthyWatchMs`); `410 Gone` (HTTP or an ERROR
 *   event) relists;
 *   `404` means the resource is no longer served: the reflector reports it, waits for it to come
 *   back and relists.
 *
 * Ordering: events are handed to the handler strictly in stream order, one at a time, each awaited
 * (back-pressure); the resume point advances only after the handler accepted the event. When more
 * than `maxQueued` events, or more than `maxQueuedBytes` of their JSON, are waiting, the stream is
 * closed and later reopened from the resume point, so memory stays bounded without losing anything.
 *
 * Failures are reported once per cause (a {@link FailureLog}: the first LIST/WATCH refused with 403
 * logs what to grant, the retries log at debug level, the first success logs the recovery), each
 * failed attempt is counted through `onError`, and {@link Reflector.status} says whether the scope
 * is readable now (`ready`) and whether the loop is still getting anywhere (`live`).
 */
import { backoffDelay, sleep } from '../../backoff.ts';
import type { ComponentStatus } from '../../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import type { KubeObject } from '../../events/delta.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { type KubeApi, KubeHttpError, type Query, type WatchHandle } from './client.ts';
import type { WatchEventType } from './diff.ts';
import { accessError, describeScope, type GroupVersionResource, type Scope } from './discovery.ts';

/** The pages of one LIST, and the resourceVersion it was read at. */
export interface ListPages extends AsyncIterable<KubeObject[]> {
  /** The LIST's resourceVersion once its first page arrived (`''` before). */
  readonly resourceVersion: string;
}

export interface ReflectorHandler {
  /**
   * The complete state of the scope, as the pages of one LIST (`first` for the reflector's first
   * list). Awaited. The handler reads every page; fetching a page fails by throwing from the
   * iteration (also when the reflector is stopped), and the handler must let that propagate: a list
   * it did not read to the end is incomplete (no deletions may be concluded from it).
   */
  onList(pages: ListPages, first: boolean): Promise<void>;
  /** One watch event (ADDED/MODIFIED/DELETED). Awaited. */
  onEvent(type: WatchEventType, object: KubeObject): Promise<void>;
  /** The resource answered 404: report it and resolve once it is served again (or the signal aborts). */
  waitForResource(signal: AbortSignal): Promise<void>;
}

export type RestartReason = 'timeout' | 'stall' | 'gone' | 'error' | 'overflow' | 'not_found';

export interface ReflectorOptions {
  api: KubeApi;
  /** Collection path (see `collectionPath`). */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  pageSize: number;
  watchTimeoutSeconds: number;
  stallTimeoutMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Most watch events buffered ahead of the handler before the stream is closed and resumed. */
  maxQueued?: number;
  /** Most bytes (of the events' JSON lines) buffered ahead of the handler, likewise. Default 16 MiB. */
  maxQueuedBytes?: number;
  /** What `path` reads: named in messages and status reasons. */
  target: { resource: GroupVersionResource; scope: Scope };
  /**
   * How long the watch may be down (reconnecting after an error or a stall, relisting after 410)
   * before the scope counts as not ready. Default 10 s.
   */
  reconnectGraceMs?: number;
  /**
   * How long the loop may go without progress (an answer of the API server: a LIST page, an open
   * watch, an event, a bookmark, an HTTP error) before it counts as not live; time spent waiting
   * for the handler (back-pressure) or for the resource to be served does not count.
   * Default max(3 × stallTimeoutMs, 60 s): the stall watchdog reconnects long before.
   */
  progressTimeoutMs?: number;
  handler: ReflectorHandler;
  logger: Logger;
  /** Called on every watch (re)start with why the previous stream ended. */
  onRestart?: (reason: RestartReason) => void;
  /** Called on every LIST after the first, with why. */
  onRelist?: (reason: RestartReason) => void;
  /** Called on every failed LIST or WATCH attempt (each retry too) with the error's stable code. */
  onError?: (code: ErrorCode) => void;
  /**
   * A watch that stayed open this long (or delivered an event) was healthy: the reconnect backoff
   * starts over from `backoffInitialMs` after it. Default 10 s.
   */
  healthyWatchMs?: number;
  /** Random numbers in [0, 1): backoff jitter and the watch timeout spread. Default Math.random. */
  random?: () => number;
}

/**
 * The failures of one retried operation, logged once per cause: the first failure of each cause
 * in an episode (a run of failures without a success between them) is logged with its message
 * (error for 401/403, warn otherwise), repeats at debug level; `recover` ends the episode and, if
 * anything was logged, logs the recovery once. `current` is the latest failure of the episode.
 */
export class FailureLog {
  private readonly logger: Logger;
  private readonly what: string;
  private readonly seen = new Set<string>();
  private since: number | undefined;
  private failures = 0;
  current: CrbridgeError | undefined;

  constructor(logger: Logger, what: string) {
    this.logger = logger;
    this.what = what;
  }

  fail(err: CrbridgeError, fields: Record<string, unknown> = {}): void {
    this.since ??= Date.now();
    this.failures++;
    this.current = err;
    const { cause, ...details } = err.details;
    const key = `${err.code}:${String(cause ?? '')}`;
    const f = { code: err.code, ...details, ...fields };
    if (this.seen.has(key)) {
      this.logger.debug(`${this.what} failed again; retrying`, { error: err.message, ...f });
      return;
    }
    this.seen.add(key);
    const level = err.code === ErrorCode.Forbidden || err.code === ErrorCode.Unauthorized ? 'error' : 'warn';
    this.logger[level](err.message, f);
  }

  /** Ends the episode; logs once that it recovered if a failure was logged. */
  recover(): void {
    if (this.since === undefined) return;
    this.logger.info(`${this.what}: recovered`, {
      afterMs: Date.now() - this.since,
      failedAttempts: this.failures,
      codes: [...new Set([...this.seen].map((k) => k.split(':')[0]))],
    });
    this.seen.clear();
    this.since = undefined;
    this.failures = 0;
    this.current = undefined;
  }
}

type Outcome =
  | { kind: 'closed' }
  | { kind: 'stall' }
  | { kind: 'overflow' }
  | { kind: 'gone' }
  | { kind: 'aborted' }
  | { kind: 'error'; error: unknown };

interface ListResponse {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: KubeObject[];
}

function statusOf(err: unknown): number | undefined {
  if (err instanceof KubeHttpError) return err.status;
  const s = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === 'number' ? s : undefined;
}

export class Reflector {
  private readonly o: ReflectorOptions;
  /** The resume point: resourceVersion of the last list, event or bookmark handed on. */
  resourceVersion: string | undefined;
  private listed = false;
  /** `backups.example.com/v1 in namespace "a"`: names the scope in messages. */
  private readonly target: string;
  private readonly failures: FailureLog;
  /** Errors that came from the API server or the network (not from the handler). */
  private readonly apiErrors = new WeakSet<object>();
  /** Since when the watch is down (after an error, a stall, a 410), and why; undefined while it runs. */
  private downSince: number | undefined;
  private downWhy = '';
  private notServed = false;
  private lastProgress = Date.now();
  /** >0 while waiting for the handler or for the resource: not a lack of progress. */
  private waiting = 0;
  /** Whether the latest watch was healthy (delivered an event or stayed open `healthyWatchMs`). */
  private watchHealthy = false;

  constructor(opts: ReflectorOptions) {
    this.o = opts;
    this.target = describeScope(opts.target.resource, opts.target.scope);
    this.failures = new FailureLog(opts.logger, `list/watch of ${this.target}`);
  }

  /**
   * The scope's state now. Ready: the first LIST was handed on and the watch is running, or down
   * for less than `reconnectGraceMs`. Live: progress (see `progressTimeoutMs`) within the timeout.
   * Reasons name the scope and the cause (a failure's message says what to do).
   */
  status(now = Date.now()): ComponentStatus {
    const reasons: string[] = [];
    const grace = this.o.reconnectGraceMs ?? 10_000;
    const problem = this.failures.current?.message;
    let ready = true;
    if (this.notServed) {
      ready = false;
      reasons.push(`${this.target}: the resource is no longer served (CRD deleted?); waiting for it to return`);
    } else if (!this.listed) {
      ready = false;
      reasons.push(problem ?? `${this.target}: the first LIST is not handed on yet`);
    } else if (this.downSince !== undefined && now - this.downSince >= grace) {
      ready = false;
      reasons.push(problem ?? `${this.target}: ${this.downWhy} for ${Math.round((now - this.downSince) / 1000)} s`);
    }
    const limit = this.o.progressTimeoutMs ?? Math.max(3 * this.o.stallTimeoutMs, 60_000);
    const live = this.waiting > 0 || now - this.lastProgress <= limit;
    if (!live)
      reasons.push(
        `${this.target}: stuck: no answer from the API server for ${Math.round((now - this.lastProgress) / 1000)} s ` +
          `(the stall watchdog reconnects after ${Math.round(this.o.stallTimeoutMs / 1000)} s)${problem ? `; last failure: ${problem}` : ''}`,
      );
    return { ready, live, reasons };
  }

  private progress(): void {
    this.lastProgress = Date.now();
  }

  /** The watch is down from now (unless it already was). */
  private down(why: string): void {
    if (this.downSince === undefined) {
      this.downSince = Date.now();
      this.downWhy = why;
    }
  }

  /** The scope is readable again: a LIST completed or a watch opened. */
  private up(): void {
    this.progress();
    this.downSince = undefined;
    this.failures.recover();
  }

  private async waitFor<T>(p: () => Promise<T>): Promise<T> {
    this.waiting++;
    try {
      return await p();
    } finally {
      this.waiting--;
      this.progress();
    }
  }

  private markApi(err: unknown): unknown {
    if (typeof err === 'object' && err !== null) this.apiErrors.add(err);
    return err;
  }

  /** The error to report for a failed attempt (`verb`: what the loop was doing). */
  private failure(err: unknown, verb: 'list' | 'watch'): CrbridgeError {
    const fromApi = typeof err !== 'object' || err === null || this.apiErrors.has(err);
    if (fromApi) return accessError(err, verb, this.o.target.resource, this.o.target.scope);
    const code = err instanceof CrbridgeError ? err.code : ErrorCode.Internal;
    return new CrbridgeError(code, `${this.target}: handing a change on failed: ${errorMessage(err)}; retrying`, {
      cause: `handler:${code}`,
    });
  }

  /** Runs until `signal` aborts; never throws. */
  async run(signal: AbortSignal): Promise<void> {
    const { logger } = this.o;
    let needList = true;
    let attempt = 0;
    let relistReason: RestartReason = 'error';
    while (!signal.aborted) {
      try {
        if (needList) {
          if (this.listed) this.o.onRelist?.(relistReason);
          const resourceVersion = await this.list(signal);
          if (signal.aborted) break;
          this.listed = true;
          this.resourceVersion = resourceVersion;
          needList = false;
          attempt = 0;
          this.up();
        }
        const out = await this.watchOnce(signal);
        if (out.kind === 'aborted') break;
        if (this.watchHealthy) attempt = 0; // client-go resets its backoff after a good stretch too
        if (out.kind === 'error') throw out.error;
        this.o.onRestart?.(out.kind === 'closed' ? 'timeout' : out.kind);
        if (out.kind === 'gone') {
          this.progress();
          logger.info('watch resourceVersion expired (410 Gone); relisting', { resourceVersion: this.resourceVersion });
          needList = true;
          relistReason = 'gone';
          this.down('relisting after 410 Gone');
        }
        if (out.kind === 'stall') {
          this.down('reconnecting after a stalled watch');
          this.failures.fail(
            new CrbridgeError(
              ErrorCode.KubeApi,
              `watch of ${this.target} stalled (no event or bookmark for ${this.o.stallTimeoutMs / 1000} s); reconnecting`,
              { verb: 'watch', cause: 'watch:stall' },
            ),
            { stallMs: this.o.stallTimeoutMs },
          );
        }
        if (out.kind === 'closed' || out.kind === 'overflow') this.progress();
      } catch (err) {
        if (signal.aborted) break;
        const status = statusOf(err);
        if (status !== undefined) this.progress(); // an answer, if not the one wanted
        if (status === 404) {
          this.o.onRestart?.('not_found');
          this.down('waiting for the resource to be served again');
          this.notServed = true;
          await this.waitFor(() => this.o.handler.waitForResource(signal));
          this.notServed = false;
          needList = true;
          relistReason = 'not_found';
          attempt = 0;
          continue;
        }
        if (status === 410) {
          // an expired `continue` token or a watch refused with HTTP 410
          needList = true;
          relistReason = 'gone';
          this.o.onRestart?.('gone');
          this.down('relisting after 410 Gone');
          continue;
        }
        attempt++;
        this.o.onRestart?.('error');
        if (!needList) relistReason = 'error';
        const delay = backoffDelay(attempt, this.o.backoffInitialMs, this.o.backoffMaxMs, this.o.random);
        const failure = this.failure(err, needList ? 'list' : 'watch');
        this.o.onError?.(failure.code);
        this.down(needList ? 'retrying the LIST' : 'reconnecting the watch');
        this.failures.fail(failure, { attempt, delayMs: delay, phase: needList ? 'list' : 'watch' });
        await sleep(delay, signal);
      }
    }
  }

  /** One paginated LIST handed to the handler page by page; returns the list's resourceVersion. */
  private async list(signal: AbortSignal): Promise<string> {
    const { api, handler } = this.o;
    let rv = '';
    let complete = false;
    const query = (cont: string | undefined): Query => ({
      limit: this.o.pageSize,
      continue: cont,
      labelSelector: this.o.labelSelector,
      fieldSelector: this.o.fieldSelector,
    });
    const path = this.o.path;
    // while the handler reads, the loop waits for it, except during the page requests themselves
    let handing = false;
    const fetchPage = async (cont: string | undefined): Promise<ListResponse> => {
      if (handing) this.waiting--;
      try {
        const page = (await api.request('GET', path, query(cont), undefined, signal)) as ListResponse;
        this.progress();
        return page;
      } catch (err) {
        throw this.markApi(err);
      } finally {
        if (handing) this.waiting++;
      }
    };
    async function* pages(): AsyncGenerator<KubeObject[]> {
      let cont: string | undefined;
      do {
        if (signal.aborted) throw new Error('list aborted');
        const page = await fetchPage(cont);
        if (signal.aborted) throw new Error('list aborted');
        cont = page.metadata?.continue || undefined;
        rv = page.metadata?.resourceVersion ?? rv;
        yield page.items ?? [];
      } while (cont);
      complete = true;
    }
    const it = pages();
    await this.waitFor(async () => {
      handing = true;
      try {
        await handler.onList(
          {
            [Symbol.asyncIterator]: () => it,
            get resourceVersion() {
              return rv;
            },
          },
          !this.listed,
        );
      } finally {
        handing = false;
      }
    });
    // pages the handler did not read are still fetched: the resume point is the last page's
    for await (const _ of it) {
    }
    if (!complete) throw new Error('LIST was not read to the end');
    return rv;
  }

  /** The server-side timeout of the next WATCH: uniform in [t, 2t], as client-go's reflector draws it. */
  private watchTimeoutSeconds(): number {
    const t = this.o.watchTimeoutSeconds;
    return Math.floor(t * ((this.o.random ?? Math.random)() + 1));
  }

  private watchOnce(signal: AbortSignal): Promise<Outcome> {
    const { api, handler } = this.o;
    const maxQueued = this.o.maxQueued ?? 10_000;
    const maxBytes = this.o.maxQueuedBytes ?? 16 * 1024 * 1024;
    return new Promise<Outcome>((resolve) => {
      const queue: { type: WatchEventType | 'BOOKMARK'; obj: KubeObject; bytes: number }[] = [];
      let queuedBytes = 0;
      let ended: Outcome | undefined;
      let processing = false;
      let handle: WatchHandle | undefined;
      let stallTimer: NodeJS.Timeout | undefined;
      let resolved = false;
      let opened = false;
      let healthyTimer: NodeJS.Timeout | undefined;
      this.watchHealthy = false;
      const settle = () => {
        if (ended && !processing && queue.length === 0 && !resolved) {
          resolved = true;
          signal.removeEventListener('abort', onAbort);
          resolve(ended);
        }
      };
      const finish = (o: Outcome) => {
        if (!ended) ended = o;
        clearTimeout(stallTimer);
        clearTimeout(healthyTimer);
        handle?.abort();
        settle();
      };
      const arm = () => {
        clearTimeout(stallTimer);
        stallTimer = setTimeout(() => finish({ kind: 'stall' }), this.o.stallTimeoutMs);
      };
      const onAbort = () => finish({ kind: 'aborted' });
      const onOpen = () => {
        if (ended || opened) return;
        opened = true;
        this.up();
        healthyTimer = setTimeout(() => {
          this.watchHealthy = true;
        }, this.o.healthyWatchMs ?? 10_000);
      };
      const pump = async () => {
        if (processing) return;
        processing = true;
        try {
          for (let e = queue.shift(); e; e = queue.shift()) {
            queuedBytes -= e.bytes;
            if (ended?.kind === 'aborted') {
              queue.length = 0;
              break;
            }
            if (e.type !== 'BOOKMARK') {
              const { type, obj } = e;
              await this.waitFor(() => handler.onEvent(type, obj));
            }
            const rv = e.obj?.metadata?.resourceVersion;
            if (rv) this.resourceVersion = rv;
          }
        } catch (err) {
          queue.length = 0;
          finish({ kind: 'error', error: err });
        } finally {
          queuedBytes = queue.length === 0 ? 0 : queuedBytes;
          processing = false;
          settle();
        }
      };
      const onEvent = (type: string, raw: unknown, bytes = 0) => {
        if (ended) return;
        arm();
        onOpen(); // an event proves the stream open (for an API without onOpen)
        this.progress();
        const obj = raw as KubeObject;
        switch (type) {
          case 'ADDED':
          case 'MODIFIED':
          case 'DELETED':
            if (!obj?.metadata?.uid) return;
            this.watchHealthy = true;
            queue.push({ type, obj, bytes });
            queuedBytes += bytes;
            if (queue.length > maxQueued || queuedBytes > maxBytes) finish({ kind: 'overflow' });
            void pump();
            return;
          case 'BOOKMARK': {
            const rv = obj?.metadata?.resourceVersion;
            // a bookmark is ordered after everything before it: apply it once they are handed on
            if (rv && queue.length === 0 && !processing) this.resourceVersion = rv;
            else if (rv) {
              queue.push({ type: 'BOOKMARK', obj, bytes });
              queuedBytes += bytes;
            }
            return;
          }
          case 'ERROR': {
            const st = raw as { code?: number; reason?: string; message?: string };
            if (st?.code === 410 || st?.reason === 'Expired' || st?.reason === 'Gone') finish({ kind: 'gone' });
            else
              finish({
                kind: 'error',
                error: this.markApi(
                  new KubeHttpError(st?.code ?? 500, st?.reason ?? '', `watch ERROR event: ${st?.message ?? ''}`),
                ),
              });
            return;
          }
          default:
            return;
        }
      };
      const onDone = (err: unknown) => {
        if (ended) return;
        if (!err) return finish({ kind: 'closed' });
        const status = statusOf(err);
        if (status === 410) return finish({ kind: 'gone' });
        finish({ kind: 'error', error: this.markApi(err) });
      };
      if (signal.aborted) return finish({ kind: 'aborted' });
      signal.addEventListener('abort', onAbort, { once: true });
      arm();
      const q: Query = {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: this.watchTimeoutSeconds(),
        labelSelector: this.o.labelSelector,
        fieldSelector: this.o.fieldSelector,
      };
      api.watch(this.o.path, q, onEvent, onDone, onOpen).then(
        (h) => {
          handle = h;
          if (ended) h.abort();
        },
        (err: unknown) => onDone(err ?? new Error('watch failed')),
      );
    });
  }
}
