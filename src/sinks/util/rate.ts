/**
 * The one token bucket the HTTP sinks pace with (a webhook endpoint's `WebHook-Allowed-Rate`,
 * Slack's per-channel and workspace budgets).
 */
import { sleep } from '../../backoff.ts';

/**
 * `perMs` tokens per millisecond up to `capacity`. `reserve` takes a token now (the balance may go
 * negative) and says how long the caller must wait for it, so concurrent callers are served in
 * call order; `refund` gives back a token whose call was not made.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly perMs: number;
  private readonly capacity: number;
  private readonly now: () => number;

  constructor(perMs: number, capacity: number, now: () => number = Date.now) {
    this.perMs = perMs;
    this.capacity = capacity;
    this.now = now;
    this.tokens = capacity;
    this.last = now();
  }

  /** `perMinute` requests a minute, holding one second's worth (at least one token). */
  static perMinute(perMinute: number, now: () => number = Date.now): TokenBucket {
    return new TokenBucket(perMinute / 60_000, Math.max(1, perMinute / 60), now);
  }

  /** Milliseconds until the reserved token is due (0: now). */
  reserve(): number {
    const t = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + (t - this.last) * this.perMs);
    this.last = t;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil(-this.tokens / this.perMs);
  }

  /** Gives back a reserved token (its call was not made). */
  refund(): void {
    this.tokens = Math.min(this.capacity, this.tokens + 1);
  }

  /** Reserves a token and waits until it is due (rejects when `signal` aborts). */
  async take(signal: AbortSignal): Promise<void> {
    const wait = this.reserve();
    if (wait > 0) await sleep(wait, signal);
  }
}
