/**
 * The checkpoint: per watched object (by uid) the last state handed on AND acknowledged by every
 * destination. It is what lets a restarted crbridge emit exactly the changes made while it was
 * down. Backends: `file` (node:sqlite in the state dir) and `kubernetes` (ConfigMaps), both on the
 * shared staging and flush protocol of `base.ts`.
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
  /**
   * uid → last acknowledged (stripped) object as stored: redacted, possibly reduced, and marked
   * with the `STORED` symbol (see `src/events/delta.ts`). Its resourceVersion is the checkpointed one.
   */
  entries: Map<string, KubeObject>;
}

/**
 * One source's checkpoint (keyed by the source's share key).
 *
 * Ordering and durability: `put`/`remove`/`markInitialized` only stage changes in memory; `flush`
 * writes everything staged so far atomically (all or nothing) and may be called concurrently with
 * staging (later changes go to the next flush); a failed flush keeps what it took staged for the
 * next one. Idempotent: putting the same state twice is harmless. Nothing is persisted unredacted:
 * the values at the source's redaction pointers are masked before they are written.
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
  /** `signal` aborts the write (e.g. at the shutdown deadline); what it took then stays staged. */
  flush(signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
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
