/**
 * The CloudEvents 1.0 event crbridge emits, in its structured JSON form. Extension attribute names
 * are lowercase alphanumeric, at most 20 characters.
 */
import type { KubeObject } from './delta.ts';

export interface EventData {
  /**
   * New state; for deletes the last known state. Absent only when the size policy dropped it
   * (then `truncated.dropped` includes "object").
   */
  object: KubeObject;
  oldObject?: KubeObject;
  /** RFC 6902 JSON Patch from oldObject to object (updates only). */
  patch?: unknown[];
  /** Changed top-level paths, e.g. ["/spec", "/status"]. */
  changedPaths?: string[];
  reason: 'live' | 'relist' | 'resync';
  /** `left` on a deleted event whose object still exists but left the source's selector. */
  selector?: 'left';
  /** Phase change of an update: from, to, and how long the old phase lasted when the object tells. */
  transition?: { field: string; from: string | null; to: string | null; since?: string; durationSeconds?: number };
  /** JSON pointers whose values were masked before the event left. */
  redacted?: string[];
  /** Set when the size policy dropped parts of the data. */
  truncated?: { dropped: ('oldObject' | 'object' | 'patch')[]; originalBytes: number; maxBytes: number };
  [k: string]: unknown;
}

export interface CloudEvent {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  subject?: string;
  time?: string;
  datacontenttype: 'application/json';
  dataschema?: string;
  data: EventData;
  /** Extension attributes (all strings, numbers or booleans). */
  [extension: string]: unknown;
}

/** True for a CloudEvents Integer: a whole number in the signed 32-bit range. */
export function isCloudEventsInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= -2147483648 && v <= 2147483647;
}
