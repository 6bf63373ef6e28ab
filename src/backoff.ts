/**
 * Exponential backoff with jitter for reconnect loops (the Kubernetes source's watches, the CRD
 * schema watch). Delivery retries have their own, configurable policy in `src/delivery/queue.ts`.
 */

/** Attempt 1 waits ~initial, doubling up to max; 50–100 % of it (jitter spreads reconnect storms). */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random = Math.random): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base / 2 + (random() * base) / 2);
}
