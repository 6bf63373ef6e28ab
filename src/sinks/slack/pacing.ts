/**
 * Pacing for the `slack` sink: token buckets (about one message per second per channel, and a
 * workspace bucket over every call) and a pause per channel that a 429's `Retry-After` sets, so no
 * call reaches Slack before the time it asked for. One {@link Pacer} per workspace and channel is
 * shared by every slack sink of the process (through `ctx.shared`), so two pipelines posting to one
 * channel share its budget.
 */
import { sleep } from '../../backoff.ts';

import { TokenBucket as Bucket } from '../util/rate.ts';

/** The shared token bucket (`src/sinks/util/rate.ts`), under the name the slack sink uses. */
export { Bucket };

/**
 * The pacing of one channel: its post bucket, the shared workspace bucket and its Retry-After pause.
 *
 * Ordering: callers of `acquire` are served in call order per bucket. `pause` moves the earliest
 * next call to `until` (never earlier than a pause already set).
 */
export class Pacer {
  private pausedUntil = 0;
  private readonly channel: Bucket;
  private readonly workspace: Bucket;
  private readonly now: () => number;

  constructor(channel: Bucket, workspace: Bucket, now: () => number = Date.now) {
    this.channel = channel;
    this.workspace = workspace;
    this.now = now;
  }

  /** Epoch ms before which no call may go to this channel. */
  get until(): number {
    return this.pausedUntil;
  }

  /** A 429 asked to wait `ms`. */
  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, this.now() + ms);
  }

  /**
   * Waits until a call may go: past any pause, with a workspace token and, for a post
   * (`posting`), a channel token. Rejects when `signal` aborts.
   */
  async acquire(posting: boolean, signal: AbortSignal): Promise<void> {
    for (;;) {
      signal.throwIfAborted();
      const paused = this.pausedUntil - this.now();
      if (paused > 0) await sleep(paused, signal);
      const w = Math.max(this.workspace.reserve(), posting ? this.channel.reserve() : 0);
      if (w > 0) await sleep(w, signal);
      signal.throwIfAborted();
      if (this.pausedUntil <= this.now()) return;
      // a 429 came while we waited: our tokens are spent, wait out the pause and take new ones
    }
  }
}
