/**
 * The checkpoint: per watched object (by uid) the last state handed on AND acknowledged by every
 * destination. It is what lets a restarted crbridge emit exactly the changes made while it was
 * down. Backends: `file` (node:sqlite in the state dir) and `kubernetes` (ConfigMaps).
 */
import type { KubeObject } from '../../../events/delta.ts';

export interface CheckpointState {
  /** True once a start-up has finished its first complete listing (see `initial: skip`). */
  initialized: boolean;
  /**
   * The consumers (`<pipeline>/<sink>`) whose initial treatment that listing completed; absent in a
   * checkpoint written before consumers were recorded (then every current consumer counts as done).
   */
  consumers?: string[];
  /** uid → last acknowledged (stripped) object; its resourceVersion is the checkpointed one. */
  entries: Map<string, KubeObject>;
}

/**
 * One source's checkpoint (keyed by the source's share key).
 *
 * Ordering and durability: `put`/`remove`/`markInitialized` only stage changes in memory; `flush`
 * writes everything staged so far atomically (all or nothing) and may be called concurrently with
 * staging (later changes go to the next flush). Idempotent: putting the same state twice is harmless.
 */
export interface CheckpointStore {
  /** Human-readable location for logs. */
  readonly description: string;
  load(): Promise<CheckpointState>;
  put(uid: string, object: KubeObject): void;
  remove(uid: string): void;
  /** Records that the first complete listing was handed on to, and settled by, these consumers. */
  markInitialized(consumers?: readonly string[]): void;
  /** Number of staged, unwritten changes. */
  readonly pending: number;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Shared staging logic of the backends. */
export class Staging {
  changes = new Map<string, KubeObject | null>();
  /** Staged `markInitialized` (its consumer list), or undefined. */
  initialized: string[] | undefined;
  put(uid: string, object: KubeObject): void {
    this.changes.set(uid, object);
  }
  remove(uid: string): void {
    this.changes.set(uid, null);
  }
  markInitialized(consumers: readonly string[] = []): void {
    this.initialized = [...consumers].sort();
  }
  get pending(): number {
    return this.changes.size + (this.initialized ? 1 : 0);
  }
  /** Takes everything staged so far (the caller writes it). */
  take(): { changes: Map<string, KubeObject | null>; initialized: string[] | undefined } {
    const out = { changes: this.changes, initialized: this.initialized };
    this.changes = new Map();
    this.initialized = undefined;
    return out;
  }
  /** Puts back what a failed write took, without overriding newer staged changes. */
  restore(taken: { changes: Map<string, KubeObject | null>; initialized: string[] | undefined }): void {
    for (const [uid, v] of taken.changes) if (!this.changes.has(uid)) this.changes.set(uid, v);
    this.initialized ??= taken.initialized;
  }
}

/** The stored consumer list (a JSON array of strings); anything else counts as not recorded. */
export function parseConsumers(text: string | null | undefined): { consumers?: string[] } {
  if (!text) return {};
  try {
    const v: unknown = JSON.parse(text);
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return { consumers: v };
  } catch {}
  return {};
}
