/**
 * The `webhook` sink's configuration: the interface, the defaults (one constant feeds the schema
 * and the code), the JSON Schema and the checks the schema cannot express (a secret without the
 * `whsec_` prefix, a URL that is not http(s), auth given two ways, a custom header that would
 * replace one the sink sets). Pure. No message ever quotes a secret's value.
 */
import type { JsonSchema } from '../../component.ts';
import { DEFAULT_HTTP_TIMEOUT_MS, type TlsOptions, tlsSchema } from '../util/http.ts';
import { secretProblem } from './signing.ts';

export type WebhookMode = 'binary' | 'structured' | 'batch';

export interface WebhookSinkConfig {
  url: string;
  mode?: WebhookMode;
  /** Events per request in batch mode. */
  batchSize?: number;
  /** Standard Webhooks signing; absent: requests are not signed. */
  signing?: { secrets: string[] };
  auth?: { bearerToken?: string; username?: string; password?: string };
  headers?: Record<string, string>;
  tls?: TlsOptions;
  timeoutMs?: number;
  abuseProtection?: { enabled?: boolean; origin?: string; requestRate?: number };
}

/** Default of every optional `webhook` sink setting: read by the schema (`default`) and the sink alike. */
export const WEBHOOK_SINK_DEFAULTS = Object.freeze({
  mode: 'binary' as WebhookMode,
  batchSize: 100,
  timeoutMs: DEFAULT_HTTP_TIMEOUT_MS,
  abuseProtection: Object.freeze({ enabled: false, origin: 'crbridge' }),
});

const D = WEBHOOK_SINK_DEFAULTS;

/** How a description names the secret references. */
const REF = `\${env:NAME} / \${file:PATH}`;

/** Headers the sink sets itself; a custom header may not replace them. */
export const RESERVED_HEADERS = new Set([
  'content-type',
  'content-length',
  'host',
  'authorization',
  'webhook-id',
  'webhook-timestamp',
  'webhook-signature',
  'transfer-encoding',
  'connection',
]);

export const webhookConfigSchema: JsonSchema = {
  type: 'object',
  required: ['url'],
  properties: {
    url: {
      type: 'string',
      minLength: 1,
      description: `http(s) URL the events are POSTed to. May hold ${REF} references (a token in the path stays out of logs: only the origin is ever shown). Redirects are never followed.`,
    },
    mode: {
      enum: ['binary', 'structured', 'batch'],
      default: D.mode,
      description:
        'CloudEvents HTTP binding: binary (ce-* headers, the data as the body; one event per request), structured (application/cloudevents+json; one event per request) or batch (application/cloudevents-batch+json, up to batchSize events per request).',
    },
    batchSize: {
      type: 'integer',
      minimum: 1,
      maximum: 10_000,
      default: D.batchSize,
      description: 'Most events in one request in batch mode (the delivery block`s maxBatch may lower it).',
    },
    signing: {
      type: 'object',
      additionalProperties: false,
      required: ['secrets'],
      description:
        'Standard Webhooks v1 signatures (webhook-id, webhook-timestamp, webhook-signature headers). Every secret signs, so a receiver can rotate keys.',
      properties: {
        secrets: {
          type: 'array',
          minItems: 1,
          items: {
            type: 'string',
            minLength: 1,
            description: `A whsec_ secret; give it as ${REF}.`,
          },
          description: 'One or more whsec_<base64> secrets (24 to 64 bytes each), from secret references.',
        },
      },
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      description: `HTTP authentication: bearerToken, or username and password (basic). Give values as ${REF} references.`,
      properties: {
        bearerToken: { type: 'string', minLength: 1, description: 'Sent as "Authorization: Bearer <token>".' },
        username: { type: 'string', minLength: 1, description: 'Basic auth user name.' },
        password: { type: 'string', description: 'Basic auth password.' },
      },
    },
    headers: {
      type: 'object',
      additionalProperties: { type: 'string', description: 'Header value (may hold a secret reference).' },
      description:
        'Extra request headers, by name. They cannot replace the headers the sink sets (content-type, authorization, webhook-*, ce-*).',
    },
    tls: tlsSchema,
    timeoutMs: {
      type: 'integer',
      minimum: 1,
      default: D.timeoutMs,
      description: 'Milliseconds to wait for an answer; a request without one within this time is retried.',
    },
    abuseProtection: {
      type: 'object',
      additionalProperties: false,
      description:
        'The CloudEvents webhook abuse-protection handshake: an OPTIONS request with WebHook-Request-Origin before the first delivery; WebHook-Allowed-Rate in the answer caps the requests per minute.',
      properties: {
        enabled: { type: 'boolean', default: D.abuseProtection.enabled, description: 'Do the handshake.' },
        origin: {
          type: 'string',
          minLength: 1,
          default: D.abuseProtection.origin,
          description: 'The WebHook-Request-Origin value: a DNS name identifying this sender.',
        },
        requestRate: {
          type: 'integer',
          minimum: 1,
          description: 'Requests per minute asked for (WebHook-Request-Rate); absent: not asked.',
        },
      },
    },
  },
};

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The checks the schema cannot express; pointers relative to the sink block. Pure. */
export function checkWebhookConfig(c: WebhookSinkConfig): { pointer: string; message: string }[] {
  const out: { pointer: string; message: string }[] = [];
  if (typeof c.url === 'string') {
    let url: URL | undefined;
    try {
      url = new URL(c.url);
    } catch {
      out.push({ pointer: '/url', message: 'is not a URL: write an absolute http:// or https:// URL' });
    }
    if (url && url.protocol !== 'http:' && url.protocol !== 'https:')
      out.push({
        pointer: '/url',
        message: `uses ${url.protocol.replace(/:$/, '')}: the webhook sink POSTs to http:// or https:// URLs only`,
      });
    if (url && (url.username || url.password))
      out.push({
        pointer: '/url',
        message: 'holds credentials: give them as auth.username and auth.password (secret references) instead',
      });
  }
  (c.signing?.secrets ?? []).forEach((s, i) => {
    if (typeof s !== 'string') return;
    const p = secretProblem(s);
    if (p) out.push({ pointer: `/signing/secrets/${i}`, message: `the signing secret ${p}` });
  });
  const a = c.auth;
  if (a) {
    const basic = a.username !== undefined || a.password !== undefined;
    if (a.bearerToken !== undefined && basic)
      out.push({ pointer: '/auth', message: 'gives both bearerToken and username/password: choose one' });
    else if (basic && (a.username === undefined || a.password === undefined))
      out.push({
        pointer: a.username === undefined ? '/auth' : '/auth/username',
        message: 'basic auth needs both username and password',
      });
    else if (a.username?.includes(':'))
      out.push({ pointer: '/auth/username', message: 'a basic-auth user name may not contain ":"' });
  }
  for (const [name, value] of Object.entries(c.headers ?? {})) {
    const ptr = `/headers/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`;
    const lower = name.toLowerCase();
    if (!HEADER_NAME.test(name)) out.push({ pointer: ptr, message: `"${name}" is not a valid HTTP header name` });
    else if (RESERVED_HEADERS.has(lower) || lower.startsWith('ce-'))
      out.push({
        pointer: ptr,
        message: `header ${name} is set by the sink itself${lower === 'authorization' ? ' (use auth.bearerToken or auth.username/password)' : ''}: remove it`,
      });
    if (typeof value === 'string' && /[\r\n\0]/.test(value))
      out.push({ pointer: ptr, message: `the value of header ${name} holds a line break or NUL: remove it` });
  }
  const mode = c.mode ?? D.mode;
  if (mode !== 'batch' && c.batchSize !== undefined)
    out.push({
      pointer: '/batchSize',
      message: `applies to mode batch only (mode is ${mode}${c.mode === undefined ? ' by default' : ''}): remove it or set mode: batch`,
    });
  return out;
}
