/**
 * A local Slack for tests and the demo: a node:http server speaking the subset of Slack crbridge
 * uses — incoming webhooks (`POST /hooks/<id>`, answers a bare `ok`) and the Web API methods
 * `chat.postMessage` and `chat.update` (`POST /api/<method>`, bot token as `Authorization: Bearer`).
 * Like Slack it enforces about one message per second per channel (a token bucket with a short
 * burst; over it: HTTP 429 with `Retry-After` in seconds and `{ok:false,error:"ratelimited"}`), a
 * workspace limit over every call, and Block Kit's limits (header ≤ 150, section text ≤ 3,000,
 * ≤ 10 fields of ≤ 2,000, ≤ 50 blocks, blocks JSON ≤ 13,200 characters, text ≤ 40,000): a message
 * over them is refused with `invalid_blocks` / `msg_blocks_too_long` / `msg_too_long`, as Slack
 * does. It records every request, every 429 it sent and any request on a channel before that
 * channel's `Retry-After` ran out, keeps each channel's messages (threads, edits applied), and can
 * be told to answer a Slack error (`invalid_auth`, `channel_not_found`, ...) for a while, or a 429
 * for the next posts to a channel (`throttle`).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One block as Slack receives it (only what the checks read). */
type Block = {
  type?: string;
  text?: { type?: string; text?: string };
  fields?: { text?: string }[];
  elements?: unknown[];
};

/** Why Slack would refuse these blocks and text, or undefined when it would take them. */
export function blockKitProblem(blocks: unknown, text: unknown): string | undefined {
  if (typeof text === 'string' && text.length > 40_000) return 'msg_too_long';
  if (blocks === undefined) return typeof text === 'string' && text !== '' ? undefined : 'no_text';
  if (!Array.isArray(blocks)) return 'invalid_blocks_format';
  if (blocks.length > 50) return 'invalid_blocks: no more than 50 items allowed [json-pointer:/blocks]';
  for (const [i, raw] of blocks.entries()) {
    const b = raw as Block;
    const at = `[json-pointer:/blocks/${i}`;
    if (b.type === 'header') {
      if (b.text?.type !== 'plain_text') return `invalid_blocks: must be plain_text ${at}/text]`;
      if ((b.text.text ?? '').length > 150) return `invalid_blocks: must be less than 151 characters ${at}/text]`;
      if ((b.text.text ?? '') === '') return `invalid_blocks: must be more than 0 characters ${at}/text]`;
    } else if (b.type === 'section') {
      if (b.text === undefined && b.fields === undefined) return `invalid_blocks: missing text or fields ${at}]`;
      if (b.text && (b.text.text ?? '').length > 3000)
        return `invalid_blocks: must be less than 3001 characters ${at}/text]`;
      if (b.text && (b.text.text ?? '') === '') return `invalid_blocks: must be more than 0 characters ${at}/text]`;
      if (b.fields) {
        if (b.fields.length > 10) return `invalid_blocks: no more than 10 items allowed ${at}/fields]`;
        for (const [j, f] of b.fields.entries())
          if ((f.text ?? '').length > 2000 || (f.text ?? '') === '')
            return `invalid_blocks: must be between 1 and 2000 characters ${at}/fields/${j}]`;
      }
    } else if (b.type === 'context') {
      if (!Array.isArray(b.elements) || b.elements.length === 0 || b.elements.length > 10)
        return `invalid_blocks: must have 1 to 10 elements ${at}/elements]`;
      for (const [j, e] of b.elements.entries())
        if (((e as { text?: string }).text ?? '').length > 3000)
          return `invalid_blocks: must be less than 3001 characters ${at}/elements/${j}]`;
    } else if (b.type !== 'divider') return `invalid_blocks: unsupported type ${String(b.type)} ${at}/type]`;
  }
  if (JSON.stringify(blocks).length > 13_200) return 'msg_blocks_too_long';
  return undefined;
}

/** One request the server received, whatever it answered. */
export interface SlackRequest {
  n: number;
  at: number;
  /** `webhook`, `chat.postMessage`, `chat.update`, or the path for anything else. */
  method: string;
  authorization: string | undefined;
  channel: string | undefined;
  body: Record<string, unknown>;
  status: number;
  /** The Slack error answered (`ok:false`), if any. */
  error: string | undefined;
}

/** A message as the channel shows it now (edits applied). */
export interface SlackMessage {
  channel: string;
  ts: string;
  /** The parent's ts for a reply in a thread. */
  threadTs: string | undefined;
  broadcast: boolean;
  text: string;
  blocks: unknown[] | undefined;
  /** Earlier versions (before each chat.update), oldest first. */
  edits: { text: string; blocks: unknown[] | undefined }[];
  at: number;
}

export interface LocalSlackOptions {
  /** Bot token the Web API accepts (default `xoxb-local-test-token`). */
  token?: string;
  /** Path of the incoming webhook under `/hooks/` (default `T000/B000/local`); its channel is `webhookChannel`. */
  webhookPath?: string;
  webhookChannel?: string;
  /** Channels that exist (default: any channel exists). */
  channels?: string[];
  /** Messages per second per channel (default 1) and the burst allowed (default 2). */
  perChannelPerSecond?: number;
  burst?: number;
  /** Every call of the workspace per minute (default 120) and its burst (default 20). */
  workspacePerMinute?: number;
  workspaceBurst?: number;
}

class Bucket {
  tokens: number;
  last: number;
  private readonly perMs: number;
  private readonly capacity: number;
  constructor(perMs: number, capacity: number) {
    this.perMs = perMs;
    this.capacity = capacity;
    this.tokens = capacity;
    this.last = Date.now();
  }
  /** Takes a token now, or says how many ms until one is due. */
  take(now: number): number {
    this.tokens = Math.min(this.capacity, this.tokens + (now - this.last) * this.perMs);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.tokens) / this.perMs);
  }
}

export class LocalSlack {
  readonly token: string;
  readonly requests: SlackRequest[] = [];
  /** Every message posted, in arrival order. */
  readonly messages: SlackMessage[] = [];
  /** Each 429 sent: channel, when, and the Retry-After asked for. */
  readonly rateLimited: { channel: string; at: number; retryAfterMs: number }[] = [];
  /** Requests on a channel that came before that channel's Retry-After had run out. */
  readonly earlyRetries: { channel: string; at: number; until: number }[] = [];
  /** Answers `error` (HTTP 200, ok:false; for a webhook its HTTP status) to calls `match` selects; null = normal. */
  failWith: { error: string; match?: (r: SlackRequest) => boolean } | null = null;
  /** Posts to these channels answered 429 + Retry-After (seconds) whatever the buckets say, `count` times. */
  private readonly forced = new Map<string, { seconds: number; count: number }>();
  private readonly opts: Required<Omit<LocalSlackOptions, 'channels'>> & { channels?: Set<string> };
  private readonly buckets = new Map<string, Bucket>();
  private readonly workspace: Bucket;
  private readonly retryUntil = new Map<string, number>();
  private readonly server: http.Server;
  private seq = 0;
  url = '';

  constructor(opts: LocalSlackOptions = {}) {
    this.opts = {
      token: opts.token ?? 'xoxb-local-test-token',
      webhookPath: opts.webhookPath ?? 'T000/B000/local',
      webhookChannel: opts.webhookChannel ?? 'webhook',
      perChannelPerSecond: opts.perChannelPerSecond ?? 1,
      burst: opts.burst ?? 2,
      workspacePerMinute: opts.workspacePerMinute ?? 120,
      workspaceBurst: opts.workspaceBurst ?? 20,
      ...(opts.channels && { channels: new Set(opts.channels) }),
    };
    this.token = this.opts.token;
    this.workspace = new Bucket(this.opts.workspacePerMinute / 60_000, this.opts.workspaceBurst);
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.handle(req, Buffer.concat(chunks).toString('utf8'), res));
    });
  }

  /** Listens on a free loopback port; resolves with the base URL. */
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }
  /** The Web API base, for the sink's `apiUrl`. */
  get apiUrl(): string {
    return `${this.url}/api`;
  }
  get webhookUrl(): string {
    return `${this.url}/hooks/${this.opts.webhookPath}`;
  }

  /** Answers the next `count` posts to `channel` with 429 and `Retry-After: seconds` (as Slack under load). */
  throttle(channel: string, seconds: number, count = 1): void {
    this.forced.set(channel, { seconds, count });
  }

  /** A channel's top-level messages (thread parents and digests), in order. */
  parents(channel: string): SlackMessage[] {
    return this.messages.filter((m) => m.channel === channel && m.threadTs === undefined);
  }
  /** The replies in the thread of `ts`, in order. */
  replies(channel: string, ts: string): SlackMessage[] {
    return this.messages.filter((m) => m.channel === channel && m.threadTs === ts);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, raw: string, res: http.ServerResponse): undefined {
    const now = Date.now();
    const path = (req.url ?? '').split('?')[0] ?? '';
    const webhook = path === `/hooks/${this.opts.webhookPath}`;
    const method = webhook ? 'webhook' : path.startsWith('/api/') ? path.slice('/api/'.length) : path;
    let body: Record<string, unknown> = {};
    try {
      body = raw === '' ? {} : (JSON.parse(raw) as Record<string, unknown>);
    } catch {
      body = {};
    }
    const channel = webhook ? this.opts.webhookChannel : typeof body.channel === 'string' ? body.channel : undefined;
    const rec: SlackRequest = {
      n: this.requests.length + 1,
      at: now,
      method,
      authorization: req.headers.authorization,
      channel,
      body,
      status: 200,
      error: undefined,
    };
    this.requests.push(rec);
    const answer = (
      status: number,
      payload: Record<string, unknown> | string,
      headers: Record<string, string> = {},
    ) => {
      rec.status = status;
      if (typeof payload === 'string') {
        if (payload !== 'ok') rec.error = payload;
        res.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(payload);
      } else {
        if (payload.ok === false) rec.error = String(payload.error);
        res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(payload));
      }
      return undefined;
    };
    const fail = (error: string, status = 200): undefined =>
      webhook ? answer(webhookStatus(error), error) : answer(status, { ok: false, error });

    if (req.method !== 'POST') return answer(405, 'method_not_allowed');
    if (!webhook && method !== 'chat.postMessage' && method !== 'chat.update') return answer(404, 'not_found');
    if (!webhook && req.headers.authorization !== `Bearer ${this.opts.token}`) return fail('invalid_auth');
    if (this.failWith && (this.failWith.match?.(rec) ?? true)) return fail(this.failWith.error);
    if (!channel) return fail('channel_not_found');
    if (!webhook && this.opts.channels && !this.opts.channels.has(channel)) return fail('channel_not_found');

    // rate limits: a request before an earlier Retry-After ran out is recorded
    const until = this.retryUntil.get(channel) ?? 0;
    if (now < until) this.earlyRetries.push({ channel, at: now, until });
    const posting = method !== 'chat.update';
    let wait = this.workspace.take(now);
    if (wait === 0 && posting) {
      let b = this.buckets.get(channel);
      if (!b) {
        b = new Bucket(this.opts.perChannelPerSecond / 1000, this.opts.burst);
        this.buckets.set(channel, b);
      }
      wait = b.take(now);
    }
    const forced = posting ? this.forced.get(channel) : undefined;
    if (forced && forced.count > 0) {
      forced.count--;
      wait = forced.seconds * 1000;
    }
    if (wait > 0) {
      const seconds = Math.max(1, Math.ceil(wait / 1000));
      this.retryUntil.set(channel, now + seconds * 1000);
      this.rateLimited.push({ channel, at: now, retryAfterMs: seconds * 1000 });
      return webhook
        ? answer(429, 'rate_limited', { 'retry-after': String(seconds) })
        : answer(429, { ok: false, error: 'ratelimited' }, { 'retry-after': String(seconds) });
    }

    const problem = blockKitProblem(body.blocks, body.text);
    if (problem) return fail(problem);
    const text = typeof body.text === 'string' ? body.text : '';
    const blocks = Array.isArray(body.blocks) ? (body.blocks as unknown[]) : undefined;

    if (method === 'chat.update') {
      const m = this.messages.find((x) => x.channel === channel && x.ts === body.ts);
      if (!m) return fail('message_not_found');
      m.edits.push({ text: m.text, blocks: m.blocks });
      m.text = text;
      m.blocks = blocks;
      return answer(200, { ok: true, channel, ts: m.ts, text });
    }
    const threadTs = typeof body.thread_ts === 'string' ? body.thread_ts : undefined;
    if (threadTs !== undefined && !this.messages.some((x) => x.channel === channel && x.ts === threadTs))
      return fail('thread_not_found');
    const ts = `${Math.floor(now / 1000)}.${String(++this.seq).padStart(6, '0')}`;
    this.messages.push({
      channel,
      ts,
      threadTs,
      broadcast: body.reply_broadcast === true,
      text,
      blocks,
      edits: [],
      at: now,
    });
    if (webhook) return answer(200, 'ok');
    return answer(200, { ok: true, channel, ts, message: { text, ts } });
  }
}

/** The HTTP status an incoming webhook answers a Slack error with. */
function webhookStatus(error: string): number {
  if (error === 'invalid_token' || error === 'invalid_auth' || error === 'action_prohibited') return 403;
  if (error === 'channel_not_found' || error === 'no_service') return 404;
  if (error === 'channel_is_archived') return 410;
  if (error.startsWith('internal') || error === 'service_unavailable') return 500;
  return 400;
}
