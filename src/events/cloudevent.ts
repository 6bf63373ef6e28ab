/**
 * The CloudEvents 1.0 event crbridge emits, in its structured JSON form. Extension attribute names
 * are lowercase alphanumeric, at most 20 characters.
 */
import type { KubeObject } from './delta.ts';

export interface EventData {
  object: KubeObject;
  oldObject?: KubeObject;
  /** RFC 6902 JSON Patch from oldObject to object (updates only). */
  patch?: unknown[];
  /** Changed top-level paths, e.g. ["/spec", "/status"]. */
  changedPaths?: string[];
  reason: 'live' | 'relist' | 'resync';
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
