/**
 * Waiting, written once: exponential backoff with jitter (the Kubernetes source's reconnects, the
 * CRD schema watch, dead-letter write retries, and — with its configured policy — the delivery
 * queue's retries) and an abortable sleep.
 */

/**
 * The wait before attempt `attempt` (1-based): `initialMs × multiplier^(attempt-1)`, capped at
 * `maxMs`, times a random factor in `jitter` (default 50–100 %: jitter spreads reconnect storms).
 */
export function backoffDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random = Math.random,
  multiplier = 2,
  jitter: readonly [number, number] = [0.5, 1],
): number {
  const base = Math.min(maxMs, initialMs * multiplier ** Math.max(0, attempt - 1));
  const [lo, hi] = jitter;
  return Math.round(base * (lo + (hi - lo) * random()));
}

/** Resolves after `ms`, or as soon as `signal` aborts (at once when it already has). Never rejects. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
