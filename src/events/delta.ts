/**
 * A Delta is what a source observed: one object added, modified or deleted, with the state before
 * it when known. The event builder turns it into a CloudEvent.
 */

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

export interface Delta {
  kind: DeltaKind;
  /** New state; for deletes the last known state. */
  object: KubeObject;
  /** Previous state for `modified` (and for `deleted` when it differs from `object`). */
  oldObject?: KubeObject;
  reason: DeltaReason;
  resource: ResourceRef;
  /** When crbridge observed the change (epoch ms). */
  observedAt: number;
  /**
   * The consumers (`<pipeline>/<sink>` ids) this delta is for; absent: every consumer of the source.
   * Set for the initial treatment of a consumer added later (it alone gets the existing objects).
   */
  targets?: readonly string[];
}
