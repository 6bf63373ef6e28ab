/**
 * Leader election as the runtime and the CLI see it: a generic {@link Elector}, whatever it is
 * built on (a Kubernetes Lease in `src/sources/kubernetes/lease.ts`). With one, only the leader
 * emits; standbys wait, ready, and take over from the checkpoint the old leader left.
 */

/** Who leads now, as this process last observed it. */
export interface LeadershipState {
  /** This process's identity. */
  identity: string;
  /** True while this process holds the leadership. */
  leading: boolean;
  /** The identity of the current leader, if any is known. */
  leader: string | undefined;
}

/**
 * One process's participation in a leader election.
 *
 * Ordering: `onChange` listeners are called synchronously, in registration order, once per change
 * of `isLeader` (false → true when acquired, true → false when lost or released), never twice in a
 * row with the same value. Once lost, leadership is never re-acquired by the same elector (like
 * client-go: the process restarts as a standby). A lost leadership is reported no later than the
 * renew deadline after the last successful renewal, even while requests hang.
 * Idempotency: `start` and `shutdown` may be called more than once; `shutdown` releases the
 * leadership if held (so a standby can take over at once) and honours its deadline.
 */
export interface Elector {
  readonly identity: string;
  readonly isLeader: boolean;
  /** The current state for probes, logs and metrics. */
  state(): LeadershipState;
  /** Starts campaigning in the background; returns at once. `signal` stops it (without releasing). */
  start(signal: AbortSignal): Promise<void>;
  /** Registers a listener of leadership changes; returns its removal. */
  onChange(listener: (leading: boolean) => void): () => void;
  /** Stops campaigning and releases the leadership if held, by `deadline` (epoch ms). */
  shutdown(deadline: number): Promise<void>;
}

/**
 * What a source sees of the election (`SourceContext.leadership`): a standby source may keep its
 * cache warm (list and watch) but hands on nothing, writes no checkpoint and no state until
 * `whenLeading` resolves; then it resumes from the checkpoint as a restart does. `whenLeading`
 * resolves once this process leads and its sinks are started (at once if it already does); it
 * never resolves on a process that stops leading first, and resolves early, with `leading` still
 * false, when `signal` aborts.
 */
export interface Leadership {
  readonly leading: boolean;
  whenLeading(signal: AbortSignal): Promise<void>;
}
