/**
 * A Delta is what a source observed: one object added, modified or deleted, with the state before
 * it when known. The event builder turns it into a CloudEvent.
 */

/**
 * Marks a state a source read back from what it persisted (its checkpoint) rather than from the
 * API server: the value is its {@link StoredState}. A symbol, set as a non-enumerable property, so
 * it never appears in JSON, in copies or in comparisons.
 */
export const STORED: unique symbol = Symbol('crbridge.stored');

/** How a state read back from a source's checkpoint differs from the object the API server served. */
export interface StoredState {
  /**
   * The `events.redact` pointers (of every pipeline sharing the source) masked before it was
   * stored: the event builder masks them in the new state too before diffing, so an unchanged
   * value never shows as a change and the event never holds more than what was stored.
   */
  readonly redacted: readonly string[];
  /**
   * Only the identity and metadata were stored (the object was larger than the checkpoint's
   * per-entry bound): the builder emits no `oldObject`, `patch`, `changedPaths` or `transition`
   * from it, rather than a patch that would show the whole spec and status as added.
   */
  readonly partial: boolean;
}

/** A Kubernetes object as JSON (apiVersion, kind, metadata, spec, status, ...). */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid: string;
    resourceVersion: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    managedFields?: unknown[];
    [k: string]: unknown;
  };
  /** Set on a state read back from a checkpoint (see {@link STORED}). */
  readonly [STORED]?: StoredState;
  [k: string]: unknown;
}

/** The resource a source watches. */
export interface ResourceRef {
  group: string;
  version: string;
  /** Plural, as in the API path. */
  resource: string;
  /** Kind, from discovery. */
  kind: string;
  namespaced: boolean;
}

export type DeltaKind = 'added' | 'modified' | 'deleted';

/**
 * How the change was observed: `live` from the watch stream, `relist` from comparing a fresh LIST
 * with the cache (after a 410 or a reconnect), `resync` from comparing the first LIST after a
 * restart with the checkpoint.
 */
export type DeltaReason = 'live' | 'relist' | 'resync';

/**
 * A `deleted` delta of an object that still exists but no longer matches the source's label or
 * field selector: `left`. Its `object` is the last state handed on (the state that left).
 */
export type SelectorChange = 'left';

export interface Delta {
  kind: DeltaKind;
  /** New state; for deletes the last known state. */
  object: KubeObject;
  /** Previous state for `modified` (and for `deleted` when it differs from `object`). */
  oldObject?: KubeObject;
  reason: DeltaReason;
  /**
   * Set on a `deleted` delta when the object was not deleted but left the source's selector
   * (`left`). An object entering the selector is an `added` delta without a marker: a source
   * cannot tell an entry from a creation.
   */
  selector?: SelectorChange;
  /**
   * With `selector: 'left'`: the resourceVersion of the write that took the object out of the
   * selector (the object as it is outside). The departure's id is made from it, so the live event,
   * a relist and a resume after a crash give the same departure the same id.
   */
  leftAt?: string;
  resource: ResourceRef;
  /** When crbridge observed the change (epoch ms). */
  observedAt: number;
  /**
   * The consumers (`<pipeline>/<sink>` ids) this delta is for; absent: every consumer of the source.
   * Set for the initial treatment of a consumer added later (it alone gets the existing objects).
   */
  targets?: readonly string[];
}
