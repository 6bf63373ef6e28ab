/**
 * The `slack` sink: CR changes as Slack messages people want to read.
 *
 * - Bot-token mode (`token` + `channel`, Web API): one thread per object (uid). Its first change
 *   posts the parent message; later changes reply in the thread and update the parent in place to
 *   the current state; replies entering a failure phase may also go to the channel
 *   (`broadcast`). The uid → {channel, ts} map lives in `ctx.state('threads')`, so threads survive
 *   restarts and leader changes; a deleted object's entry is forgotten after `threadTtlHours`.
 * - Incoming-webhook mode (`webhookUrl`): one message per object change, no threads.
 *
 * Batches: the delivery queue hands at most `maxBatch` events, one object's in order. An object
 * with several changes in a batch gets one message (the latest state, "N changes coalesced"); a
 * batch touching more than `digestThreshold` objects becomes one digest message listing them all
 * (the parents of those that have a thread are then updated in the background, at the workspace
 * rate, between sends).
 * What was coalesced is counted (`crbridge_slack_coalesced_events_total`) and said in the message;
 * nothing is dropped silently. `maxConcurrency` is 1: one batch at a time, so the pacing (token
 * buckets per channel and workspace, shared in the process; a 429 pauses the channel for its
 * Retry-After) is exact and bursts queue up into digests instead of racing.
 *
 * Errors: Slack refusing the configuration (invalid_auth, channel_not_found, not_in_channel) keeps
 * the events (retryable, after `configErrorRetryMs`), logs once naming the channel and what to do,
 * and makes the sink not ready (`status`); a rate limit is retried after its Retry-After; a payload
 * Slack refuses (invalid_blocks, msg_too_long) is a permanent failure whose dead letter holds the
 * payload. Neither the token nor the webhook URL's path is ever logged, counted or dead-lettered.
 */
import { createHash } from 'node:crypto';
import { sleep } from '../../backoff.ts';
import { compileTemplate, templateRenderer } from '../../cel/template.ts';
import type {
  ComponentContext,
  ComponentStatus,
  DeliveryResult,
  OutboundEvent,
  Sink,
  SinkFactory,
} from '../../component.ts';
import { ErrorCode, errorMessage } from '../../errors.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import type { StateStore } from '../../state/store.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { Counter, Gauge } from '../../telemetry/metrics.ts';
import { safeOrigin } from '../util/http.ts';
import { SlackApi, type SlackOutcome } from './api.ts';
import { checkSlackConfig, SLACK_SINK_DEFAULTS, type SlackSinkConfig, slackConfigSchema } from './config.ts';
import {
  digestMessage,
  factsOf,
  isFailure,
  type MessageOptions,
  parentMessage,
  type Render,
  replyMessage,
  type SlackMessage,
  standaloneMessage,
} from './message.ts';
import { Bucket, Pacer } from './pacing.ts';

export { SLACK_SINK_DEFAULTS, type SlackSinkConfig } from './config.ts';

const D = SLACK_SINK_DEFAULTS;

/** The sink's own metric names. */
export const SLACK_METRICS = Object.freeze({
  messages: 'crbridge_slack_messages_total',
  coalesced: 'crbridge_slack_coalesced_events_total',
  rateLimited: 'crbridge_slack_rate_limited_total',
  threads: 'crbridge_slack_threads',
});

/** One object's thread, as stored (no secret; JSON). */
export interface ThreadEntry {
  /** Channel ID Slack answered with. */
  ch: string;
  /** The parent message's ts. */
  ts: string;
  /** Changes shown in the thread so far. */
  n: number;
  /** Id of the last event fully delivered (reply and parent update). */
  last: string;
  /** Id of the last event whose reply was posted (so a retry of the update does not post it again). */
  rep?: string;
  /** When the object was deleted (epoch ms): forgotten `threadTtlHours` later. */
  del?: number;
}

/** The payload kept in a dead letter of a refused message: at most this many characters. */
const MAX_PAYLOAD_IN_ERROR = 16_000;
/** How often forgotten threads are pruned, at most. */
const PRUNE_EVERY_MS = 60_000;

/** What to do about a configuration error, by Slack's code. */
function advice(code: string, webhook: boolean): string {
  if (webhook) return 'check webhookUrl: the incoming webhook may have been revoked or its channel removed';
  switch (code) {
    case 'channel_not_found':
      return 'check channel: give a channel ID (C0123...) or a name the bot can see';
    case 'not_in_channel':
      return 'invite the bot to the channel (/invite @your-app)';
    case 'is_archived':
    case 'channel_is_archived':
      return 'the channel is archived: unarchive it or choose another channel';
    case 'missing_scope':
    case 'no_permission':
      return 'give the app the chat:write scope and reinstall it';
    default:
      return 'check the token (an xoxb- bot token from a secret reference) and that the app is installed in the workspace';
  }
}

type Group = { key: string; items: OutboundEvent[] };

/** An object's key within a batch: its uid, else its subject (what the queue orders by). */
function objectOf(e: CloudEvent): string {
  const x = e as Record<string, unknown>;
  for (const k of ['k8suid', 'partitionkey', 'subject'] as const)
    if (typeof x[k] === 'string' && x[k] !== '') return String(x[k]);
  return e.id;
}

function groupsOf(batch: readonly OutboundEvent[]): Group[] {
  const by = new Map<string, Group>();
  for (const o of batch) {
    const key = objectOf(o.event);
    let g = by.get(key);
    if (!g) {
      g = { key, items: [] };
      by.set(key, g);
    }
    g.items.push(o);
  }
  return [...by.values()];
}

class SlackSink implements Sink {
  readonly maxBatch = 100;
  /** One batch at a time: the pacing is per channel and a burst should queue up into a digest. */
  readonly defaultConcurrency = 1;
  readonly maxConcurrency = 1;
  private readonly mode: 'bot' | 'webhook';
  private readonly channel: string;
  /** What logs and errors call the destination. */
  private readonly where: string;
  private readonly api: SlackApi;
  private readonly pacer: Pacer;
  private readonly store: StateStore | undefined;
  private readonly logger: Logger;
  private readonly labels: { component: string };
  private readonly opts: MessageOptions;
  private readonly broadcast: NonNullable<SlackSinkConfig['broadcast']>;
  private readonly digestThreshold: number;
  private readonly ttlMs: number;
  private readonly configRetryMs: number;
  private readonly m: { messages: Counter; coalesced: Counter; rateLimited: Counter; threads: Gauge };
  private loading: Promise<void> = Promise.resolve();
  private lastPrune = 0;
  /** The configuration error Slack last answered, until a call succeeds. */
  private problem: string | undefined;
  /**
   * Thread parents a digest covered (their objects changed, but got no reply of their own): updated
   * to their latest state in the background, at the workspace rate, between sends.
   */
  private readonly stale = new Map<string, { ch: string; ts: string; n: number; events: CloudEvent[] }>();
  private wakeRefresher: (() => void) | undefined;
  private refresher: Promise<void> | undefined;
  /** Aborted at shutdown: stops the parent refresher. */
  private readonly stopping = new AbortController();
  /** Serializes sends and background parent updates (one object's parent is never updated twice at once). */
  private lock: Promise<unknown> = Promise.resolve();
  private shutdownPromise: Promise<void> | undefined;

  constructor(config: SlackSinkConfig, ctx: ComponentContext) {
    this.mode = config.token !== undefined ? 'bot' : 'webhook';
    this.channel = config.channel ?? 'webhook';
    const apiUrl = config.apiUrl ?? D.apiUrl;
    this.where =
      this.mode === 'bot' ? `channel ${this.channel}` : `incoming webhook ${safeOrigin(config.webhookUrl ?? '')}`;
    this.logger = ctx.logger;
    this.labels = { component: ctx.id };
    this.api = new SlackApi({
      ...(config.webhookUrl !== undefined && { webhookUrl: config.webhookUrl }),
      ...(config.token !== undefined && { token: config.token }),
      apiUrl,
      timeoutMs: config.timeoutMs ?? D.timeoutMs,
      ...(config.tls && { tls: config.tls }),
      logger: ctx.logger,
    });
    const rate = { ...D.rate, ...config.rate };
    // the buckets are per workspace (credentials) and channel, shared by the process's slack sinks
    const workspace = createHash('sha256')
      .update(config.token ?? config.webhookUrl ?? '')
      .update(apiUrl)
      .digest('hex')
      .slice(0, 16);
    const shared = <T>(key: string, make: () => T): T => (ctx.shared ? ctx.shared(key, make) : make());
    const wsBucket = shared(
      `slack:workspace:${workspace}`,
      () => new Bucket(rate.workspacePerMinute / 60_000, rate.workspaceBurst),
    );
    this.pacer = shared(
      `slack:channel:${workspace}:${this.channel}`,
      () => new Pacer(new Bucket(rate.channelPerSecond / 1000, 1), wsBucket),
    );
    this.store = this.mode === 'bot' ? ctx.state?.('threads') : undefined;
    this.broadcast = config.broadcast ?? D.broadcast;
    this.digestThreshold = config.digestThreshold ?? D.digestThreshold;
    this.ttlMs = (config.threadTtlHours ?? D.threadTtlHours) * 3_600_000;
    this.configRetryMs = config.configErrorRetryMs ?? D.configErrorRetryMs;
    // templates: the one {{ CEL }} engine of the pipeline; a failing placeholder renders a marker,
    // counted and logged once (the message still goes out)
    const render = templateRenderer(ctx);
    const bind = (source: string): Render => {
      const t = compileTemplate(source);
      return (event) => render(t, event);
    };
    this.opts = {
      failurePhases: config.failurePhases ?? D.failurePhases,
      phaseField: config.phaseField ?? D.phaseField,
      ...(config.linkTemplate !== undefined && { link: bind(config.linkTemplate) }),
      templates: Object.fromEntries(Object.entries(config.templates ?? {}).map(([k, v]) => [k, bind(v as string)])),
    };
    this.m = {
      messages: ctx.metrics.counter(SLACK_METRICS.messages, 'Slack messages posted or updated, by method.'),
      coalesced: ctx.metrics.counter(
        SLACK_METRICS.coalesced,
        'Events delivered folded together with others into one Slack message, by how (update: one object, digest: many objects).',
      ),
      rateLimited: ctx.metrics.counter(
        SLACK_METRICS.rateLimited,
        'Slack calls answered 429 (each waits out its Retry-After).',
      ),
      threads: ctx.metrics.gauge(SLACK_METRICS.threads, 'Object threads the slack sink remembers.'),
    };
  }

  /** In-memory threads when the context offers no state store (tests built by hand). */
  private readonly memory = new Map<string, ThreadEntry>();
  private getThread(key: string): ThreadEntry | undefined {
    return this.store ? this.store.get<ThreadEntry>(key) : this.memory.get(key);
  }
  private setThread(key: string, e: ThreadEntry): void {
    if (this.store) this.store.set(key, e);
    else this.memory.set(key, e);
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.mode === 'bot') this.refresher = this.refreshParents();
    if (!this.store) return;
    const store = this.store;
    this.loading = store.load(signal).then(
      () => this.prune(Date.now()),
      (err) => {
        // an unreadable thread map costs threads (new parents are posted), not events
        this.logger.error(`cannot read the Slack thread map ${store.description}; new threads will be started`, {
          code: ErrorCode.Checkpoint,
          error: errorMessage(err),
        });
      },
    );
  }

  /** Not ready while Slack refuses the configuration. */
  status(): ComponentStatus {
    if (this.problem === undefined) return { ready: true, live: true, reasons: [] };
    return { ready: false, live: true, reasons: [this.problem] };
  }

  send(batch: readonly OutboundEvent[], signal: AbortSignal): Promise<DeliveryResult[]> {
    if (batch.length === 0) return Promise.resolve([]);
    return this.locked(() => this.sendNow(batch, signal));
  }

  /** Runs `fn` after every send and parent update started before it. */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }

  private async sendNow(batch: readonly OutboundEvent[], signal: AbortSignal): Promise<DeliveryResult[]> {
    await this.loading;
    const results = new Map<OutboundEvent, DeliveryResult>();
    const groups = groupsOf(batch);
    if (groups.length > this.digestThreshold) {
      const r = await this.digest(groups, signal);
      for (const o of batch) results.set(o, r);
    } else {
      let stop: DeliveryResult | undefined;
      for (const g of groups) {
        const r = stop ?? (this.mode === 'bot' ? await this.thread(g, signal) : await this.standalone(g, signal));
        // a rate limit or a refused configuration holds for every object: do not try the others now
        if (r.status === 'retryable' && r.retryAfterMs !== undefined) stop = r;
        for (const o of g.items) results.set(o, r);
      }
    }
    await this.persist(signal);
    return batch.map((o) => results.get(o) as DeliveryResult);
  }

  /** Many objects at once: one message listing them all. */
  private async digest(groups: Group[], signal: AbortSignal): Promise<DeliveryResult> {
    const msg = digestMessage(
      groups.map((g) => g.items.map((o) => o.event)),
      this.opts,
    );
    const out =
      this.mode === 'bot'
        ? await this.post('chat.postMessage', { channel: this.channel, ...msg }, signal)
        : await this.postWebhook(msg, signal);
    const r = this.result(out, msg);
    if (r.status === 'ok') {
      this.m.coalesced.inc(
        { ...this.labels, into: 'digest' },
        groups.reduce((n, g) => n + g.items.length, 0),
      );
      // objects with a thread: the thread records the changes (a redelivery is not posted again),
      // the parent is brought to the latest state in the background; a deleted object's thread is
      // forgotten after the TTL
      for (const g of groups) {
        const events = g.items.map((o) => o.event);
        const last = events[events.length - 1] as CloudEvent;
        const t = this.getThread(g.key);
        if (!t || t.del !== undefined) continue;
        const n = t.n + events.length;
        const deleted = last.type.endsWith('.deleted');
        this.setThread(g.key, { ch: t.ch, ts: t.ts, n, last: last.id, ...(deleted && { del: Date.now() }) });
        this.stale.set(g.key, { ch: t.ch, ts: t.ts, n, events });
      }
      if (this.stale.size > 0) this.wakeRefresher?.();
    }
    return r;
  }

  /** Incoming-webhook mode: one message for the object's changes. */
  private async standalone(g: Group, signal: AbortSignal): Promise<DeliveryResult> {
    const events = g.items.map((o) => o.event);
    const msg = standaloneMessage(events, this.opts);
    const r = this.result(await this.postWebhook(msg, signal), msg);
    if (r.status === 'ok' && events.length > 1) this.m.coalesced.inc({ ...this.labels, into: 'update' }, events.length);
    return r;
  }

  /** Bot mode: the object's thread — a new parent, or a reply and the parent updated. */
  private async thread(g: Group, signal: AbortSignal, fresh = false): Promise<DeliveryResult> {
    let events = g.items.map((o) => o.event);
    this.stale.delete(g.key); // this send brings the parent up to date itself
    let entry = fresh ? undefined : this.getThread(g.key);
    if (entry) {
      // events already delivered (a retry after a crash or a failed update) are not shown again
      const done = events.findIndex((e) => e.id === entry?.last);
      if (done >= 0) events = events.slice(done + 1);
      if (events.length === 0) return { status: 'ok' };
    }
    const last = events[events.length - 1] as CloudEvent;
    const deleted = last.type.endsWith('.deleted');
    const fold = () => {
      if (events.length > 1) this.m.coalesced.inc({ ...this.labels, into: 'update' }, events.length);
    };
    if (!entry || entry.del !== undefined) {
      const msg = parentMessage(events, this.opts, events.length);
      const out = await this.post('chat.postMessage', { channel: this.channel, ...msg }, signal);
      const r = this.result(out, msg);
      if (r.status !== 'ok' || out.kind !== 'ok') return r;
      this.setThread(g.key, {
        ch: out.channel ?? this.channel,
        ts: out.ts ?? '',
        n: events.length,
        last: last.id,
        ...(deleted && { del: Date.now() }),
      });
      fold();
      return r;
    }
    if (entry.rep !== last.id) {
      const msg = replyMessage(events, this.opts);
      const f = factsOf(events, this.opts.phaseField);
      const broadcast =
        this.broadcast === 'always' ||
        (this.broadcast === 'failures' && isFailure(f, this.opts.failurePhases) && f.fromPhase !== undefined);
      const out = await this.post(
        'chat.postMessage',
        { channel: entry.ch, thread_ts: entry.ts, ...(broadcast && { reply_broadcast: true }), ...msg },
        signal,
      );
      if (out.kind === 'stale') {
        this.logger.once(
          'warn',
          `slack-thread-gone:${this.labels.component}`,
          'a Slack thread is gone; a new one is started',
          {
            code: ErrorCode.DeliveryRetryable,
            error: out.error,
          },
        );
        return this.thread(g, signal, true);
      }
      const r = this.result(out, msg);
      if (r.status !== 'ok') return r;
      entry = { ...entry, rep: last.id };
      this.setThread(g.key, entry);
    }
    const n = entry.n + events.length;
    const parent = parentMessage(events, this.opts, n);
    const out = await this.post('chat.update', { channel: entry.ch, ts: entry.ts, ...parent }, signal);
    if (out.kind !== 'stale') {
      const r = this.result(out, parent);
      if (r.status !== 'ok') return r;
    }
    this.setThread(g.key, { ch: entry.ch, ts: entry.ts, n, last: last.id, ...(deleted && { del: Date.now() }) });
    fold();
    return { status: 'ok' };
  }

  private async post(
    method: 'chat.postMessage' | 'chat.update',
    body: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<SlackOutcome> {
    await this.pacer.acquire(method === 'chat.postMessage', signal);
    const out = await this.api.call(method, body, signal);
    this.count(out, method === 'chat.postMessage' ? (body.thread_ts ? 'reply' : 'post') : 'update');
    return out;
  }

  private async postWebhook(msg: SlackMessage, signal: AbortSignal): Promise<SlackOutcome> {
    await this.pacer.acquire(true, signal);
    const out = await this.api.webhook({ ...msg }, signal);
    this.count(out, 'webhook');
    return out;
  }

  private count(out: SlackOutcome, method: string): void {
    if (out.kind === 'ok') this.m.messages.inc({ ...this.labels, method });
    if (out.kind === 'ratelimited') {
      this.m.rateLimited.inc(this.labels);
      this.pacer.pause(out.retryAfterMs);
    }
  }

  /** A Slack outcome as a delivery result; sets or clears the configuration problem. */
  private result(out: SlackOutcome, payload: SlackMessage): DeliveryResult {
    switch (out.kind) {
      case 'ok':
        if (this.problem !== undefined) {
          this.logger.info(`Slack accepts the sink's messages again (${this.where})`);
          this.problem = undefined;
        }
        return { status: 'ok' };
      case 'ratelimited':
        return { status: 'retryable', error: out.error, retryAfterMs: out.retryAfterMs };
      case 'config': {
        const why = `Slack refuses the configuration for ${this.where}: ${out.code}; ${advice(out.code, this.mode === 'webhook')} (events are kept and retried every ${Math.round(this.configRetryMs / 1000)} s)`;
        if (this.problem !== why)
          this.logger.once('error', `slack-config:${this.labels.component}:${out.code}`, why, {
            code: ErrorCode.DeliveryConfig,
          });
        this.problem = why;
        return { status: 'retryable', error: why, retryAfterMs: this.configRetryMs };
      }
      case 'permanent': {
        const json = JSON.stringify({ text: payload.text, blocks: payload.blocks });
        const shown = json.length > MAX_PAYLOAD_IN_ERROR ? `${json.slice(0, MAX_PAYLOAD_IN_ERROR)}… (truncated)` : json;
        return {
          status: 'permanent',
          error: `${out.error} — a message crbridge built was refused (please report it); payload: ${shown}`,
        };
      }
      case 'stale':
        return { status: 'retryable', error: out.error };
      default:
        return {
          status: 'retryable',
          error: out.error,
          ...(out.retryAfterMs !== undefined && { retryAfterMs: out.retryAfterMs }),
        };
    }
  }

  /** The background updates of parents a digest covered; ends at shutdown. */
  private async refreshParents(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      const next = this.stale.entries().next();
      if (next.done) {
        await new Promise<void>((resolve) => {
          this.wakeRefresher = resolve;
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
        this.wakeRefresher = undefined;
        continue;
      }
      const [key, job] = next.value;
      let again = false;
      try {
        await this.locked(async () => {
          if (this.stale.get(key) !== job) return; // a send updated it meanwhile
          this.stale.delete(key);
          const parent = parentMessage(job.events, this.opts, job.n);
          const out = await this.post('chat.update', { channel: job.ch, ts: job.ts, ...parent }, signal);
          if (out.kind === 'ratelimited' || out.kind === 'retryable') {
            if (!this.stale.has(key)) this.stale.set(key, job);
            again = out.kind === 'retryable';
          } else if (out.kind !== 'stale') this.result(out, parent);
        });
      } catch {
        return; // aborted at shutdown: a parent left stale costs display, not events
      }
      if (again) await sleep(1000, signal);
    }
  }

  /** Writes the thread map (and prunes forgotten threads now and then). */
  private async persist(signal: AbortSignal): Promise<void> {
    if (!this.store) {
      this.m.threads.set(this.labels, this.memory.size);
      return;
    }
    const now = Date.now();
    if (now - this.lastPrune > PRUNE_EVERY_MS) this.prune(now);
    try {
      await this.store.flush(signal);
    } catch (err) {
      if (signal.aborted) return;
      this.logger.once(
        'warn',
        `slack-state:${this.labels.component}`,
        `cannot write the Slack thread map ${this.store.description}`,
        {
          code: ErrorCode.Checkpoint,
          error: errorMessage(err),
        },
      );
    }
  }

  private prune(now: number): void {
    this.lastPrune = now;
    if (!this.store) return;
    let n = 0;
    for (const [k, v] of [...this.store.entries()]) {
      const e = v as ThreadEntry;
      if (e?.del !== undefined && now - e.del > this.ttlMs) this.store.delete(k);
      else n++;
    }
    this.m.threads.set(this.labels, n);
  }

  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.stopping.abort();
      // the refresher stops at once (its call is aborted); a send still running ends by the deadline
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([this.refresher, this.lock]),
        new Promise<void>((r) => {
          timer = setTimeout(r, Math.max(0, deadline - Date.now()));
        }),
      ]);
      clearTimeout(timer);
      if (this.store) {
        const ac = new AbortController();
        const t = setTimeout(() => ac.abort(), Math.max(0, deadline - Date.now()));
        try {
          await this.store.flush(ac.signal);
        } catch {
          // logged by persist already; what is not written costs threads, not events
        } finally {
          clearTimeout(t);
        }
      }
      this.api.close();
    })();
    return this.shutdownPromise;
  }
}

export const slackSink: SinkFactory<SlackSinkConfig> = {
  kind: 'sink',
  type: 'slack',
  description:
    'Posts CR changes to Slack: one thread per object with a bot token (parent updated in place), or messages to an incoming webhook; paced, coalesced and within Block Kit limits.',
  configSchema: slackConfigSchema,
  check: checkSlackConfig,
  create(config: SlackSinkConfig, ctx: ComponentContext): Sink {
    return new SlackSink(config, ctx);
  },
};
