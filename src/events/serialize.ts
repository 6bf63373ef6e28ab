/**
 * The CloudEvents JSON event format (structured mode): one event per line, no trailing newline,
 * and the batch format (a JSON array). Attribute order is the event's own (data last when the
 * builder made it).
 */
import type { CloudEvent } from './cloudevent.ts';

export const STRUCTURED_CONTENT_TYPE = 'application/cloudevents+json; charset=utf-8';
export const BATCH_CONTENT_TYPE = 'application/cloudevents-batch+json; charset=utf-8';

/** Structured JSON of one event; one line, no trailing newline. */
export function toStructuredJson(event: CloudEvent): string {
  return JSON.stringify(event);
}

/** JSON batch format: an array of structured events. */
export function toBatchJson(events: readonly CloudEvent[]): string {
  return JSON.stringify(events);
}

/** The CloudEvents context attributes of an event (everything but `data`), in the event's order. */
export function attributesOf(event: CloudEvent): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const k in event) {
    if (k === 'data' || k === 'data_base64' || !Object.hasOwn(event, k)) continue;
    const v = event[k];
    if (v === undefined || v === null) continue;
    out.push([k, v]);
  }
  return out;
}

/** CloudEvents canonical string form of an attribute value (Boolean → true/false, Integer → decimal). */
export function attributeString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v instanceof Date) return v.toISOString();
  return JSON.stringify(v);
}
