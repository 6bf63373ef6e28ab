/**
 * A local webhook receiver for tests and demos: a node:http server that records every request
 * (method, headers, exact body bytes, arrival time), verifies Standard Webhooks signatures with
 * the `standardwebhooks` npm library, decodes the CloudEvents it received (binary, structured or
 * batch mode) and misbehaves on a schedule: a status (with headers such as Retry-After), a stall
 * (no answer for a while), or a connection reset. Actions are taken from `schedule` first (one per
 * POST), then from `respond` (per request, e.g. a 400 for one object), else 200. A
 * {@link misbehaviourPlan} builds such a `respond` from rules and steps by POST number, and
 * {@link retryAfterViolations} checks afterwards that no retry came before its Retry-After.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

/** What the receiver does with one request. */
export type ReceiverAction =
  | { status: number; headers?: Record<string, string>; body?: string }
  | { stallMs: number }
  | { reset: true };

export interface ReceivedEvent {
  id: string;
  [attr: string]: unknown;
}

export interface ReceivedRequest {
  /** 1-based arrival number. */
  n: number;
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  at: number;
  /** What the receiver did. */
  action: ReceiverAction;
  /** True when the signature verified with one of the secrets; undefined when no secret is set. */
  verified: boolean | undefined;
  /** The events the request carried (parsed whatever the answer). */
  events: ReceivedEvent[];
}

export interface ReceiverOptions {
  /** `whsec_` secrets any one of which must verify each POST (absent: no verification). */
  secrets?: string[];
  /** Actions for the next POSTs, in order. */
  schedule?: ReceiverAction[];
  /** An action per request once the schedule is used up; undefined = 200. */
  respond?: (req: ReceivedRequest) => ReceiverAction | undefined;
  /** Answer to OPTIONS (the abuse-protection handshake); default 405. */
  options?: (req: ReceivedRequest) => ReceiverAction;
}

/** The CloudEvents of one request, by its content type. */
export function decodeEvents(headers: http.IncomingHttpHeaders, body: Buffer): ReceivedEvent[] {
  const type = String(headers['content-type'] ?? '');
  const text = body.toString('utf8');
  if (type.startsWith('application/cloudevents-batch+json')) return JSON.parse(text) as ReceivedEvent[];
  if (type.startsWith('application/cloudevents+json')) return [JSON.parse(text) as ReceivedEvent];
  if (!headers['ce-id']) return [];
  const event: ReceivedEvent = { id: '' };
  for (const [k, v] of Object.entries(headers))
    if (k.startsWith('ce-')) event[k.slice(3)] = decodeURIComponent(String(v));
  if (type) event.datacontenttype = type;
  if (text !== '') event.data = JSON.parse(text);
  return event.id ? [event] : [];
}

/** An action, or one made when the request comes (e.g. a Retry-After HTTP date relative to now). */
export type PlannedAction = ReceiverAction | ((req: ReceivedRequest) => ReceiverAction);

/** One step of a misbehaviour plan: what to do with the POSTs numbered `from`..`to` (1-based, inclusive). */
export interface PlanStep {
  from: number;
  to?: number;
  action: PlannedAction;
}

/** A rule that applies to any request it matches, before the steps (e.g. a 400 for one object). */
export type PlanRule = (req: ReceivedRequest) => ReceiverAction | undefined;

/** A reusable misbehaviour schedule; pass `respond` to the receiver. */
export interface MisbehaviourPlan {
  respond: (req: ReceivedRequest) => ReceiverAction | undefined;
  /** POSTs counted so far (not those the rules or `down` answered). */
  readonly posts: number;
  /** While set, every POST gets this (the receiver is "down"); steps are neither used nor counted. */
  down: ReceiverAction | undefined;
}

/**
 * Builds a plan: `down` (when set) answers everything; else the first rule that matches answers;
 * else the step covering this POST's number; else 200. The other POSTs are numbered in arrival
 * order (so every step is taken, and hits whatever event the sink happens to send then).
 */
export function misbehaviourPlan(steps: readonly PlanStep[], rules: readonly PlanRule[] = []): MisbehaviourPlan {
  let posts = 0;
  const plan: MisbehaviourPlan = {
    down: undefined,
    get posts() {
      return posts;
    },
    respond: (req) => {
      if (req.method !== 'POST') return undefined;
      if (plan.down) return plan.down;
      for (const rule of rules) {
        const a = rule(req);
        if (a) return a;
      }
      posts++;
      const step = steps.find((s) => posts >= s.from && posts <= (s.to ?? s.from));
      if (!step) return undefined;
      return typeof step.action === 'function' ? step.action(req) : step.action;
    },
  };
  return plan;
}

/** A 429 whose Retry-After is an HTTP date `ms` from when the request comes. */
export const retryAfterDate =
  (ms: number, status = 429): PlannedAction =>
  (req) => ({ status, headers: { 'retry-after': new Date(req.at + ms).toUTCString() } });

/** The earliest time (epoch ms) a Retry-After answered at `at` allows the next attempt, or undefined. */
export function retryAfterUntil(action: ReceiverAction, at: number): number | undefined {
  if (!('status' in action)) return undefined;
  const v = action.headers?.['retry-after'];
  if (v === undefined) return undefined;
  if (/^\d+$/.test(v.trim())) return at + Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Every request answered with a Retry-After whose next attempt of the same event (`webhook-id`)
 * came before the time it allowed (more than `slackMs` early), as readable lines; also those never
 * retried at all when `mustRetry`. Empty when timing was respected.
 */
export function retryAfterViolations(requests: readonly ReceivedRequest[], slackMs = 20, mustRetry = true): string[] {
  const out: string[] = [];
  const posts = requests.filter((r) => r.method === 'POST');
  for (const [i, r] of posts.entries()) {
    const until = retryAfterUntil(r.action, r.at);
    if (until === undefined) continue;
    const id = r.headers['webhook-id'];
    const again = posts.slice(i + 1).find((q) => q.headers['webhook-id'] === id);
    if (!again) {
      if (mustRetry) out.push(`request ${r.n} (${String(id)}) answered with Retry-After was never retried`);
    } else if (again.at < until - slackMs)
      out.push(`request ${r.n} (${String(id)}): retried ${until - again.at} ms before its Retry-After allowed`);
  }
  return out;
}

export class WebhookReceiver {
  readonly requests: ReceivedRequest[] = [];
  readonly schedule: ReceiverAction[];
  respond: ReceiverOptions['respond'];
  private readonly server: http.Server;
  private readonly verifiers: Webhook[];
  private readonly options: ReceiverOptions['options'];
  url = '';

  constructor(opts: ReceiverOptions = {}) {
    this.schedule = [...(opts.schedule ?? [])];
    this.respond = opts.respond;
    this.options = opts.options;
    this.verifiers = (opts.secrets ?? []).map((s) => new Webhook(s));
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.handle(req, res, Buffer.concat(chunks)));
    });
  }

  /** Listens on 127.0.0.1 (a free port unless given) and returns the base URL. */
  async start(port = 0): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): void {
    const r: ReceivedRequest = {
      n: this.requests.length + 1,
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      body,
      at: Date.now(),
      action: { status: 200 },
      verified: undefined,
      events: [],
    };
    try {
      r.events = req.method === 'POST' ? decodeEvents(req.headers, body) : [];
    } catch {
      r.events = [];
    }
    if (this.verifiers.length > 0 && req.method === 'POST') r.verified = this.verify(req.headers, body);
    if (req.method === 'OPTIONS') r.action = this.options?.(r) ?? { status: 405 };
    else r.action = this.schedule.shift() ?? this.respond?.(r) ?? { status: 200 };
    this.requests.push(r);
    const a = r.action;
    if ('reset' in a) {
      req.socket.destroy();
      return;
    }
    if ('stallMs' in a) {
      const t = setTimeout(() => {
        if (!res.destroyed) res.writeHead(200).end();
      }, a.stallMs);
      res.on('close', () => clearTimeout(t));
      return;
    }
    res.writeHead(a.status, a.headers).end(a.body ?? '');
  }

  private verify(headers: http.IncomingHttpHeaders, body: Buffer): boolean {
    const h = {
      'webhook-id': String(headers['webhook-id'] ?? ''),
      'webhook-timestamp': String(headers['webhook-timestamp'] ?? ''),
      'webhook-signature': String(headers['webhook-signature'] ?? ''),
    };
    return this.verifiers.some((v) => {
      try {
        v.verify(body.toString('utf8'), h);
        return true;
      } catch {
        return false;
      }
    });
  }

  /** POSTs answered 2xx. */
  get accepted(): ReceivedRequest[] {
    return this.requests.filter((r) => r.method === 'POST' && 'status' in r.action && r.action.status < 300);
  }

  /** The events of the accepted POSTs, in arrival order. */
  get acceptedEvents(): ReceivedEvent[] {
    return this.accepted.flatMap((r) => r.events);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
