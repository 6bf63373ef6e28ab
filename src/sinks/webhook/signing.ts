/**
 * Standard Webhooks v1 signing (standard-webhooks spec 1.0.0): `webhook-id`, `webhook-timestamp`
 * (Unix seconds, per attempt) and `webhook-signature` = a space-separated list of
 * `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, one per secret (several secrets sign
 * at once during a rotation). The key is the base64 part of a `whsec_` secret, decoded. Pure.
 */
import { createHash, createHmac, createSecretKey, type KeyObject } from 'node:crypto';

export const SECRET_PREFIX = 'whsec_';

/** Why `secret` cannot sign (no `whsec_` prefix, not base64, too short), or undefined when it can. Never quotes the secret. */
export function secretProblem(secret: string): string | undefined {
  if (!secret.startsWith(SECRET_PREFIX))
    return `is not a Standard Webhooks secret: it must start with "${SECRET_PREFIX}" followed by base64 (generate one with: echo "whsec_$(openssl rand -base64 32)")`;
  const b64 = secret.slice(SECRET_PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0)
    return `is not valid: after "${SECRET_PREFIX}" must come base64 (A-Z, a-z, 0-9, +, /, = padding)`;
  const bytes = Buffer.from(b64, 'base64').length;
  if (bytes < 24 || bytes > 64)
    return `decodes to ${bytes} bytes; Standard Webhooks secrets are 24 to 64 bytes (generate one with: echo "whsec_$(openssl rand -base64 32)")`;
  return undefined;
}

/**
 * The HMAC key of a `whsec_` secret, as a KeyObject made once: `createHmac` with a KeyObject costs
 * about a quarter of what it costs with the raw bytes (which it turns into a key on every call).
 */
export function secretKey(secret: string): KeyObject {
  return createSecretKey(Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64'));
}

/** The `webhook-signature` header value: one `v1,<sig>` per key, space-separated, over the exact body bytes. */
export function signatureHeader(keys: readonly KeyObject[], id: string, timestampSec: number, body: Buffer): string {
  return keys
    .map((key) => {
      const h = createHmac('sha256', key);
      h.update(`${id}.${timestampSec}.`);
      h.update(body);
      return `v1,${h.digest('base64')}`;
    })
    .join(' ');
}

/**
 * The `webhook-id` of a batch request: `batch_` + the first 32 hex digits of SHA-256 over the
 * events' ids joined by newlines. The same events in the same order give the same id on every
 * retry and after a restart, so a receiver can deduplicate whole batches by it (and single events
 * by their CloudEvent `id` inside the batch).
 */
export function batchId(eventIds: readonly string[]): string {
  return `batch_${createHash('sha256').update(eventIds.join('\n')).digest('hex').slice(0, 32)}`;
}
