/**
 * The reflector: one LIST + WATCH loop over one scope (a namespace, or all namespaces /
 * cluster-scoped), modelled on client-go's `tools/cache/reflector.go`:
 *
 * - paginated LIST (`limit`/`continue`) as a consistent read, handed to the handler page by page
 *   as it arrives (only one page is held at a time), then WATCH from the list's resourceVersion
 *   with `allowWatchBookmarks=true` and a server-side `timeoutSeconds`;
 * - a client-side inactivity watchdog: no event and no bookmark for `stallTimeoutMs` aborts the
 *   stream, which is reopened from the last resourceVersion (a proxy that stops forwarding without
 *   closing is otherwise never noticed);
 * - a cleanly closed stream (server timeout) is reopened at once from the last resourceVersion;
 *   errors back off exponentially with jitter; `410 Gone` (HTTP or an ERROR event) relists;
 *   `404` means the resource is no longer served: the reflector reports it, waits for it to come
 *   back and relists.
 *
 * Ordering: events are handed to the handler strictly in stream order, one at a time, each awaited
 * (back-pressure); the resume point advances only after the handler accepted the event. When more
 * than `maxQueued` events are waiting, the stream is closed and later reopened from the resume
 * point, so memory stays bounded without losing anything.
 */
import { backoffDelay } from '../../backoff.ts';
import type { KubeObject } from '../../events/delta.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { type KubeApi, KubeHttpError, type Query, type WatchHandle } from './client.ts';
import type { WatchEventType } from './diff.ts';

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
  handler: ReflectorHandler;
  logger: Logger;
  /** Called on every watch (re)start with why the previous stream ended. */
  onRestart?: (reason: RestartReason) => void;
  /** Called on every LIST after the first, with why. */
  onRelist?: (reason: RestartReason) => void;
  random?: () => number;
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

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

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

  constructor(opts: ReflectorOptions) {
    this.o = opts;
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
        }
        const out = await this.watchOnce(signal);
        if (out.kind === 'aborted') break;
        if (out.kind === 'error') throw out.error;
        this.o.onRestart?.(out.kind === 'closed' ? 'timeout' : out.kind);
        if (out.kind === 'gone') {
          logger.info('watch resourceVersion expired (410 Gone); relisting', { resourceVersion: this.resourceVersion });
          needList = true;
          relistReason = 'gone';
        }
        if (out.kind === 'stall') logger.warn('watch stream stalled; reconnecting', { stallMs: this.o.stallTimeoutMs });
      } catch (err) {
        if (signal.aborted) break;
        const status = statusOf(err);
        if (status === 404) {
          this.o.onRestart?.('not_found');
          await this.o.handler.waitForResource(signal);
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
          continue;
        }
        attempt++;
        this.o.onRestart?.('error');
        if (!needList) relistReason = 'error';
        const delay = backoffDelay(attempt, this.o.backoffInitialMs, this.o.backoffMaxMs, this.o.random);
        logger.warn('list/watch failed; retrying', {
          error: err instanceof Error ? err.message : String(err),
          status,
          attempt,
          delayMs: delay,
          phase: needList ? 'list' : 'watch',
        });
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
    async function* pages(): AsyncGenerator<KubeObject[]> {
      let cont: string | undefined;
      do {
        if (signal.aborted) throw new Error('list aborted');
        const page = (await api.request('GET', path, query(cont), undefined, signal)) as ListResponse;
        if (signal.aborted) throw new Error('list aborted');
        cont = page.metadata?.continue || undefined;
        rv = page.metadata?.resourceVersion ?? rv;
        yield page.items ?? [];
      } while (cont);
      complete = true;
    }
    const it = pages();
    await handler.onList(
      {
        [Symbol.asyncIterator]: () => it,
        get resourceVersion() {
          return rv;
        },
      },
      !this.listed,
    );
    // pages the handler did not read are still fetched: the resume point is the last page's
    for await (const _ of it) {
    }
    if (!complete) throw new Error('LIST was not read to the end');
    return rv;
  }

  private watchOnce(signal: AbortSignal): Promise<Outcome> {
    const { api, handler } = this.o;
    const maxQueued = this.o.maxQueued ?? 10_000;
    return new Promise<Outcome>((resolve) => {
      const queue: { type: WatchEventType | 'BOOKMARK'; obj: KubeObject }[] = [];
      let ended: Outcome | undefined;
      let processing = false;
      let handle: WatchHandle | undefined;
      let stallTimer: NodeJS.Timeout | undefined;
      let resolved = false;
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
        handle?.abort();
        settle();
      };
      const arm = () => {
        clearTimeout(stallTimer);
        stallTimer = setTimeout(() => finish({ kind: 'stall' }), this.o.stallTimeoutMs);
      };
      const onAbort = () => finish({ kind: 'aborted' });
      const pump = async () => {
        if (processing) return;
        processing = true;
        try {
          for (let e = queue.shift(); e; e = queue.shift()) {
            if (ended?.kind === 'aborted') {
              queue.length = 0;
              break;
            }
            if (e.type !== 'BOOKMARK') await handler.onEvent(e.type, e.obj);
            const rv = e.obj?.metadata?.resourceVersion;
            if (rv) this.resourceVersion = rv;
          }
        } catch (err) {
          queue.length = 0;
          finish({ kind: 'error', error: err });
        } finally {
          processing = false;
          settle();
        }
      };
      const onEvent = (type: string, raw: unknown) => {
        if (ended) return;
        arm();
        const obj = raw as KubeObject;
        switch (type) {
          case 'ADDED':
          case 'MODIFIED':
          case 'DELETED':
            if (!obj?.metadata?.uid) return;
            queue.push({ type, obj });
            if (queue.length > maxQueued) finish({ kind: 'overflow' });
            void pump();
            return;
          case 'BOOKMARK': {
            const rv = obj?.metadata?.resourceVersion;
            // a bookmark is ordered after everything before it: apply it once they are handed on
            if (rv && queue.length === 0 && !processing) this.resourceVersion = rv;
            else if (rv) queue.push({ type: 'BOOKMARK', obj });
            return;
          }
          case 'ERROR': {
            const st = raw as { code?: number; reason?: string; message?: string };
            if (st?.code === 410 || st?.reason === 'Expired' || st?.reason === 'Gone') finish({ kind: 'gone' });
            else
              finish({
                kind: 'error',
                error: new KubeHttpError(st?.code ?? 500, st?.reason ?? '', `watch ERROR event: ${st?.message ?? ''}`),
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
        finish({ kind: 'error', error: err });
      };
      if (signal.aborted) return finish({ kind: 'aborted' });
      signal.addEventListener('abort', onAbort, { once: true });
      arm();
      const q: Query = {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: this.o.watchTimeoutSeconds,
        labelSelector: this.o.labelSelector,
        fieldSelector: this.o.fieldSelector,
      };
      api.watch(this.o.path, q, onEvent, onDone).then(
        (h) => {
          handle = h;
          if (ended) h.abort();
        },
        (err: unknown) => onDone(err ?? new Error('watch failed')),
      );
    });
  }
}
