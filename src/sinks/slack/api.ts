/**
 * Talking to Slack for the `slack` sink: an incoming-webhook POST or a Web API call
 * (`chat.postMessage`, `chat.update`) through the shared {@link HttpClient}, and the mapping of
 * Slack's answer to what the sink does:
 *
 * - `ok`: done (the Web API's `ts` returned);
 * - `ratelimited`: HTTP 429, retry after its `Retry-After` (the channel pauses);
 * - `config`: Slack refuses the configuration — `invalid_auth`, `channel_not_found`,
 *   `not_in_channel`, `is_archived`, `missing_scope`, ... — every event alike: kept and retried
 *   after a long wait, logged naming the channel;
 * - `permanent`: this payload is refused — `invalid_blocks`, `msg_too_long`, `msg_blocks_too_long`,
 *   `no_text`, `invalid_arguments`, ... — a bug to report: dead-lettered with the payload;
 * - `stale`: the message to update or reply to is gone (`message_not_found`, `thread_not_found`,
 *   `cant_update_message`): the sink starts a new thread;
 * - `retryable`: anything else (5xx, `internal_error`, a timeout, a reset).
 *
 * No outcome's text ever holds the token or the webhook URL's path (only its origin).
 */
import { errorMessage } from '../../errors.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { HttpClient, parseRetryAfter, resultOfStatus, safeOrigin, type TlsOptions } from '../util/http.ts';

export type SlackOutcome =
  | { kind: 'ok'; ts?: string; channel?: string }
  | { kind: 'ratelimited'; error: string; retryAfterMs: number }
  | { kind: 'config'; error: string; code: string }
  | { kind: 'permanent'; error: string; code: string }
  | { kind: 'stale'; error: string; code: string }
  | { kind: 'retryable'; error: string; retryAfterMs?: number };

/** Slack errors that mean the sink's configuration (token, channel, scopes) is wrong. */
export const CONFIG_ERRORS = new Set([
  'invalid_auth',
  'not_authed',
  'invalid_token',
  'account_inactive',
  'token_revoked',
  'token_expired',
  'no_permission',
  'missing_scope',
  'not_allowed_token_type',
  'channel_not_found',
  'not_in_channel',
  'is_archived',
  'channel_is_archived',
  'no_service',
  'no_service_id',
  'action_prohibited',
  'restricted_action',
  'team_access_not_granted',
  'ekm_access_denied',
  'posting_to_general_channel_denied',
]);

/** Slack errors that mean this payload is wrong (a bug: dead-lettered with the payload). */
export const PAYLOAD_ERRORS = new Set([
  'invalid_blocks',
  'invalid_blocks_format',
  'invalid_attachments',
  'msg_too_long',
  'msg_blocks_too_long',
  'no_text',
  'invalid_arguments',
  'invalid_payload',
  'too_many_attachments',
  'invalid_json',
  'json_not_object',
  'invalid_form_data',
  'invalid_charset',
]);

/** Slack errors that mean the message to update or reply to no longer exists. */
export const STALE_ERRORS = new Set([
  'message_not_found',
  'thread_not_found',
  'cant_update_message',
  'edit_window_closed',
]);

/** The outcome of a Slack error code (its first word: `invalid_blocks: must be less than ...`). */
export function outcomeOfSlackError(raw: string, where: string): SlackOutcome {
  const code = raw.trim().split(/[\s:]/)[0] ?? raw;
  const error = `${where}: Slack answered ${raw.trim().slice(0, 300)}`;
  if (CONFIG_ERRORS.has(code)) return { kind: 'config', error, code };
  if (PAYLOAD_ERRORS.has(code)) return { kind: 'permanent', error, code };
  if (STALE_ERRORS.has(code)) return { kind: 'stale', error, code };
  if (code === 'ratelimited' || code === 'rate_limited') return { kind: 'ratelimited', error, retryAfterMs: 1000 };
  return { kind: 'retryable', error };
}

export interface SlackApiOptions {
  webhookUrl?: string;
  token?: string;
  apiUrl: string;
  timeoutMs: number;
  tls?: TlsOptions;
  logger: Logger;
}

/** One sink's connection to Slack. */
export class SlackApi {
  private readonly client: HttpClient;
  private readonly o: SlackApiOptions;

  constructor(o: SlackApiOptions) {
    this.o = o;
    this.client = new HttpClient({ ...(o.tls && { tls: o.tls }), timeoutMs: o.timeoutMs, logger: o.logger });
  }

  /** Posts `payload` to the incoming webhook. */
  async webhook(payload: Record<string, unknown>, signal: AbortSignal): Promise<SlackOutcome> {
    const url = this.o.webhookUrl as string;
    const where = `incoming webhook ${safeOrigin(url)}`;
    let res: Awaited<ReturnType<HttpClient['request']>>;
    try {
      res = await this.client.request({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/json; charset=utf-8', 'user-agent': 'crbridge' },
        body: JSON.stringify(payload),
        signal,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      return { kind: 'retryable', error: `${where}: ${scrub(errorMessage(err), url)}` };
    }
    const body = res.body.toString('utf8').trim();
    if (res.status >= 200 && res.status < 300) return { kind: 'ok' };
    if (res.status === 429)
      return {
        kind: 'ratelimited',
        error: `${where}: HTTP 429`,
        retryAfterMs: parseRetryAfter(res.headers['retry-after']) ?? 1000,
      };
    if (res.status >= 400 && res.status < 500 && /^[a-z_]+/.test(body)) return outcomeOfSlackError(body, where);
    const r = resultOfStatus(res.status, res.headers, scrub(body, url));
    if (r.status === 'retryable')
      return {
        kind: 'retryable',
        error: `${where}: ${r.error}`,
        ...(r.retryAfterMs !== undefined && { retryAfterMs: r.retryAfterMs }),
      };
    return r.status === 'ok'
      ? { kind: 'ok' }
      : { kind: 'permanent', error: `${where}: ${r.error}`, code: `http_${res.status}` };
  }

  /** Calls a Web API method with a JSON body. */
  async call(
    method: 'chat.postMessage' | 'chat.update',
    body: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<SlackOutcome> {
    const where = `${method} to channel ${String(body.channel)}`;
    let res: Awaited<ReturnType<HttpClient['request']>>;
    try {
      res = await this.client.request({
        method: 'POST',
        url: `${this.o.apiUrl.replace(/\/+$/, '')}/${method}`,
        headers: {
          'content-type': 'application/json; charset=utf-8',
          authorization: `Bearer ${this.o.token}`,
          'user-agent': 'crbridge',
        },
        body: JSON.stringify(body),
        signal,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      return { kind: 'retryable', error: `${where}: ${scrub(errorMessage(err), this.o.token)}` };
    }
    const text = res.body.toString('utf8');
    if (res.status === 429)
      return {
        kind: 'ratelimited',
        error: `${where}: HTTP 429`,
        retryAfterMs: parseRetryAfter(res.headers['retry-after']) ?? 1000,
      };
    if (res.status < 200 || res.status >= 300) {
      const r = resultOfStatus(res.status, res.headers, scrub(text, this.o.token));
      if (r.status === 'retryable')
        return {
          kind: 'retryable',
          error: `${where}: ${r.error}`,
          ...(r.retryAfterMs !== undefined && { retryAfterMs: r.retryAfterMs }),
        };
      return r.status === 'ok' ? { kind: 'ok' } : { kind: 'retryable', error: `${where}: ${r.error}` };
    }
    let parsed: {
      ok?: boolean;
      error?: string;
      ts?: string;
      channel?: string;
      response_metadata?: { messages?: string[] };
    };
    try {
      parsed = JSON.parse(text);
    } catch {
      return { kind: 'retryable', error: `${where}: the answer is not JSON` };
    }
    if (parsed.ok === true)
      return { kind: 'ok', ...(parsed.ts && { ts: parsed.ts }), ...(parsed.channel && { channel: parsed.channel }) };
    const detail = parsed.response_metadata?.messages?.join('; ');
    return outcomeOfSlackError(`${parsed.error ?? 'unknown_error'}${detail ? `: ${detail}` : ''}`, where);
  }

  close(): void {
    this.client.close();
  }
}

/** Removes a secret (and a URL's path) from a text. */
function scrub(text: string, secret: string | undefined): string {
  if (!secret || secret.length < 4) return text;
  let out = text.split(secret).join('[redacted]');
  try {
    const u = new URL(secret);
    if (u.pathname.length > 1) out = out.split(u.pathname).join('[redacted]');
  } catch {
    // not a URL
  }
  return out;
}
