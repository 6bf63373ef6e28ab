/**
 * Per-object ordered commits: the rule that keeps a checkpoint from overtaking delivery.
 *
 * Every change handed on is registered, in observation order, under its object's key. A change
 * settles when every destination has delivered, durably stored or dead-lettered it — in any order
 * across changes, pipelines and sinks. An object's checkpoint entry is committed only up to the
 * newest change all of whose earlier changes of the same object have settled too: a later change
 * that settles at once (dropped by a filter, dead-lettered, or delivered by a faster pipeline)
 * never moves the entry past an earlier one still being retried. A change that can no longer
 * settle in this process (rejected at shutdown) blocks its object's entry until the restart, which
 * then hands the net change on again from the last committed state.
 */

/** One registered change; exactly one of its methods is called, once. */
export interface TrackedChange {
  /** Every destination settled it. */
  settled(): void;
  /** It will not settle in this process: the object's entry stays before it. */
  failed(): void;
  /** It was never handed on (the push was refused): as if it had not been registered. */
  forget(): void;
}

interface Entry<S> {
  state: S;
  status: 'pending' | 'ok' | 'failed';
}

/**
 * Ordering: `track` is called in observation order per key; `commit` is called per key with
 * states in that order, each at most once, and only for a state whose earlier changes all
 * settled. Memory: per key, settled entries behind an unsettled one are folded into the newest,
 * so a key holds at most about twice its number of unsettled changes.
 */
export class OrderedCommits<S> {
  private readonly queues = new Map<string, Entry<S>[]>();
  private readonly commit: (key: string, state: S) => void;
  private open = 0;

  constructor(commit: (key: string, state: S) => void) {
    this.commit = commit;
  }

  /** Changes registered and not yet settled, failed or forgotten. */
  get pending(): number {
    return this.open;
  }

  /** Keys with changes not yet committed. */
  get keys(): number {
    return this.queues.size;
  }

  track(key: string, state: S): TrackedChange {
    let q = this.queues.get(key);
    if (!q) {
      q = [];
      this.queues.set(key, q);
    }
    const entry: Entry<S> = { state, status: 'pending' };
    q.push(entry);
    this.open++;
    let done = false;
    const once = (fn: () => void) => () => {
      if (done) return;
      done = true;
      this.open--;
      fn();
    };
    return {
      settled: once(() => {
        entry.status = 'ok';
        this.advance(key);
      }),
      failed: once(() => {
        entry.status = 'failed';
      }),
      forget: once(() => {
        const list = this.queues.get(key);
        if (!list) return;
        const i = list.indexOf(entry);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0) this.queues.delete(key);
        else this.advance(key);
      }),
    };
  }

  /** Commits the longest settled prefix of the key's changes (its newest state), then folds. */
  private advance(key: string): void {
    const q = this.queues.get(key);
    if (!q) return;
    let last: Entry<S> | undefined;
    while (q.length > 0 && q[0]?.status === 'ok') last = q.shift();
    if (last) this.commit(key, last.state);
    if (q.length === 0) {
      this.queues.delete(key);
      return;
    }
    // settled entries after an unsettled one: only the newest of each run can ever be committed
    for (let i = q.length - 1; i > 1; i--) {
      if (q[i]?.status === 'ok' && q[i - 1]?.status === 'ok') q.splice(i - 1, 1);
    }
  }
}
