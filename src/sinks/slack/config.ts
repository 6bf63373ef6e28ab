/**
 * The `slack` sink's configuration: the interface, the defaults (one constant feeds the schema and
 * the code), the JSON Schema and the checks the schema cannot express (exactly one of webhookUrl /
 * token, a channel with a token, URLs that are http(s), template placeholders that compile). Pure.
 * No message ever quotes a secret's value.
 */
import { checkTemplate } from '../../cel/template.ts';
import type { JsonSchema } from '../../component.ts';
import { DEFAULT_HTTP_TIMEOUT_MS, type TlsOptions, tlsSchema } from '../util/http.ts';

export type BroadcastPolicy = 'never' | 'failures' | 'always';

export interface SlackSinkConfig {
  /** Incoming-webhook mode: the hook URL (a secret reference). No threads. */
  webhookUrl?: string;
  /** Bot-token mode: an `xoxb-` token (a secret reference); needs `channel`. Threads per object. */
  token?: string;
  channel?: string;
  /** Web API base URL. */
  apiUrl?: string;
  /** Which replies are also sent to the channel (`reply_broadcast`). */
  broadcast?: BroadcastPolicy;
  /** Phases that count as a failure (for `broadcast: failures` and the message's colour mark). */
  failurePhases?: string[];
  /** Dotted path of the phase in the object, when the event carries no transition. */
  phaseField?: string;
  /** A link shown in every message, as a template: `https://console/backups/{{ object.metadata.name }}`. */
  linkTemplate?: string;
  /** Templates replacing parts of the default message. */
  templates?: { header?: string; text?: string; summary?: string };
  /** A batch holding more objects than this becomes one digest message. */
  digestThreshold?: number;
  rate?: { channelPerSecond?: number; workspacePerMinute?: number; workspaceBurst?: number };
  /** How long a deleted object's thread is remembered. */
  threadTtlHours?: number;
  /** How long events wait before a retry when Slack refuses the configuration (invalid_auth, channel_not_found). */
  configErrorRetryMs?: number;
  timeoutMs?: number;
  tls?: TlsOptions;
}

/** Default of every optional `slack` sink setting: read by the schema (`default`) and the sink alike. */
export const SLACK_SINK_DEFAULTS = Object.freeze({
  apiUrl: 'https://slack.com/api',
  broadcast: 'failures' as BroadcastPolicy,
  failurePhases: Object.freeze(['Failed', 'Error']) as readonly string[],
  phaseField: 'status.phase',
  digestThreshold: 5,
  rate: Object.freeze({ channelPerSecond: 1, workspacePerMinute: 100, workspaceBurst: 10 }),
  threadTtlHours: 168,
  configErrorRetryMs: 60_000,
  timeoutMs: DEFAULT_HTTP_TIMEOUT_MS,
});

const D = SLACK_SINK_DEFAULTS;
const REF = `\${env:NAME} / \${file:PATH}`;
const TEMPLATE =
  'A template: text with `{{ CEL expression }}` placeholders (variables object, oldObject, change, patch, event).';

export const slackConfigSchema: JsonSchema = {
  type: 'object',
  properties: {
    webhookUrl: {
      type: 'string',
      minLength: 1,
      description: `Incoming-webhook mode: the hook URL, as ${REF} (it is a secret: only its origin is ever shown). No threads: one message per object change, digests for bursts.`,
    },
    token: {
      type: 'string',
      minLength: 1,
      description: `Bot-token mode: an xoxb- token with chat:write, as ${REF}. One thread per object (chat.postMessage / chat.update); needs channel.`,
    },
    channel: {
      type: 'string',
      minLength: 1,
      description: 'Bot-token mode: the channel ID (C0123...) or name the bot posts to; the bot must be in it.',
    },
    apiUrl: {
      type: 'string',
      minLength: 1,
      default: D.apiUrl,
      description: 'Base URL of the Slack Web API (a local Slack in tests).',
    },
    broadcast: {
      enum: ['never', 'failures', 'always'],
      default: D.broadcast,
      description:
        'Which thread replies are also shown in the channel (reply_broadcast): none, those entering a failure phase, or all.',
    },
    failurePhases: {
      type: 'array',
      items: { type: 'string', minLength: 1, description: 'A phase value.' },
      default: [...D.failurePhases],
      description: 'Phases that count as a failure (broadcast, the red mark in the header).',
    },
    phaseField: {
      type: 'string',
      minLength: 1,
      default: D.phaseField,
      description: 'Dotted path of the phase in the object, used when the event carries no phase transition.',
    },
    linkTemplate: {
      type: 'string',
      minLength: 1,
      description: `A link added to every message (e.g. to a console). ${TEMPLATE}`,
    },
    templates: {
      type: 'object',
      additionalProperties: false,
      description:
        'Replace parts of the default message; each a template. Long results are truncated to Block Kit limits.',
      properties: {
        header: {
          type: 'string',
          minLength: 1,
          description: `The header line (plain text, ≤ 150 characters). ${TEMPLATE}`,
        },
        text: {
          type: 'string',
          minLength: 1,
          description: `The fallback text (notifications, screen readers). ${TEMPLATE}`,
        },
        summary: { type: 'string', minLength: 1, description: `A mrkdwn section shown above the fields. ${TEMPLATE}` },
      },
    },
    digestThreshold: {
      type: 'integer',
      minimum: 1,
      default: D.digestThreshold,
      description: 'A batch holding changes of more objects than this is posted as one digest message listing them.',
    },
    rate: {
      type: 'object',
      additionalProperties: false,
      description:
        'Pacing, shared by every slack sink of the process using the same workspace credentials and channel.',
      properties: {
        channelPerSecond: {
          type: 'number',
          exclusiveMinimum: 0,
          default: D.rate.channelPerSecond,
          description: 'Messages per second per channel (Slack allows about 1).',
        },
        workspacePerMinute: {
          type: 'number',
          exclusiveMinimum: 0,
          default: D.rate.workspacePerMinute,
          description: 'Web API calls per minute for the whole workspace (posts and updates).',
        },
        workspaceBurst: {
          type: 'integer',
          minimum: 1,
          default: D.rate.workspaceBurst,
          description: 'Calls the workspace bucket allows at once.',
        },
      },
    },
    threadTtlHours: {
      type: 'number',
      exclusiveMinimum: 0,
      default: D.threadTtlHours,
      description:
        'Hours a deleted object`s thread is remembered (a re-created object with the same uid cannot exist; this bounds the state).',
    },
    configErrorRetryMs: {
      type: 'integer',
      minimum: 1000,
      default: D.configErrorRetryMs,
      description:
        'Milliseconds events wait before the next try when Slack refuses the configuration (invalid_auth, channel_not_found, not_in_channel); the events are kept.',
    },
    timeoutMs: {
      type: 'integer',
      minimum: 1,
      default: D.timeoutMs,
      description: 'Milliseconds to wait for Slack to answer; a call without an answer is retried.',
    },
    tls: tlsSchema,
  },
};

/** The checks the schema cannot express; pointers relative to the sink block. Pure. */
export function checkSlackConfig(c: SlackSinkConfig): { pointer: string; message: string }[] {
  const out: { pointer: string; message: string }[] = [];
  if (c.webhookUrl === undefined && c.token === undefined)
    out.push({ pointer: '', message: 'needs webhookUrl (incoming webhook) or token and channel (bot, with threads)' });
  if (c.webhookUrl !== undefined && c.token !== undefined)
    out.push({ pointer: '/token', message: 'gives both webhookUrl and token: choose one mode' });
  if (c.token !== undefined && c.channel === undefined)
    out.push({ pointer: '/channel', message: 'is required with token: the channel ID or name the bot posts to' });
  if (c.webhookUrl !== undefined && c.channel !== undefined)
    out.push({
      pointer: '/channel',
      message: 'cannot be set with webhookUrl (the hook posts to its own channel): remove it',
    });
  if (typeof c.token === 'string' && !/^xox[bpa]-/.test(c.token) && !c.token.startsWith('${'))
    out.push({
      pointer: '/token',
      message: 'is not a Slack token (xoxb-...): give the bot token as a secret reference',
    });
  for (const key of ['webhookUrl', 'apiUrl'] as const) {
    const v = c[key];
    if (typeof v !== 'string') continue;
    let url: URL | undefined;
    try {
      url = new URL(v);
    } catch {
      out.push({ pointer: `/${key}`, message: 'is not a URL: write an absolute http:// or https:// URL' });
    }
    if (url && url.protocol !== 'http:' && url.protocol !== 'https:')
      out.push({
        pointer: `/${key}`,
        message: `uses ${url.protocol.replace(/:$/, '')}: only http:// or https:// work`,
      });
  }
  if (c.webhookUrl !== undefined && c.broadcast !== undefined && c.broadcast !== 'never')
    out.push({ pointer: '/broadcast', message: 'applies to bot-token mode only (an incoming webhook has no threads)' });
  out.push(...checkTemplate('/linkTemplate', c.linkTemplate));
  for (const [k, v] of Object.entries(c.templates ?? {})) out.push(...checkTemplate(`/templates/${k}`, v));
  return out;
}
