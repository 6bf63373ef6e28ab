/**
 * The CloudEvents JSON event format (structured mode): one event per line, no trailing newline,
 * and the batch format (a JSON array). Attributes come in the event's own order, `data` last.
 *
 * The JSON text of an event's data is made once and reused (`dataJson`): the builder's size
 * policy measures it and every sink and binding sends the same text, instead of each
 * re-serializing the objects. This is correct because event data is immutable once built: stages
 * copy the envelope and share the data, and the size policy, the one place that removes fields,
 * calls `forgetDataJson` when it does.
 */
import type { CloudEvent } from './cloudevent.ts';

export const STRUCTURED_CONTENT_TYPE = 'application/cloudevents+json; charset=utf-8';
export const BATCH_CONTENT_TYPE = 'application/cloudevents-batch+json; charset=utf-8';

const dataTexts = new WeakMap<object, string>();

/** The JSON text of event data, made on first use and then reused for the same data object. */
export function dataJson(data: unknown): string {
  if (data === null || typeof data !== 'object') return JSON.stringify(data) ?? 'null';
  let text = dataTexts.get(data);
  if (text === undefined) {
    text = JSON.stringify(data);
    dataTexts.set(data, text);
  }
  return text;
}

/** Drops the reused text of `data` after it was changed (only the builder's size policy does). */
export function forgetDataJson(data: object): void {
  dataTexts.delete(data);
}

/** The structured JSON without data (`{"specversion":...}`), and the data's text if any. */
function parts(event: CloudEvent): { head: string; data: string | undefined } {
  if (event.data === undefined) return { head: JSON.stringify(event), data: undefined };
  const { data, ...attributes } = event;
  return { head: JSON.stringify(attributes), data: dataJson(data) };
}

/** Structured JSON of one event; one line, no trailing newline. */
export function toStructuredJson(event: CloudEvent): string {
  const { head, data } = parts(event);
  if (data === undefined) return head;
  return head === '{}' ? `{"data":${data}}` : `${head.slice(0, -1)},"data":${data}}`;
}

/** Exact UTF-8 size of `toStructuredJson(event)`, without building the whole text. */
export function structuredBytes(event: CloudEvent): number {
  const { head, data } = parts(event);
  const h = Buffer.byteLength(head, 'utf8');
  if (data === undefined) return h;
  return h + (head === '{}' ? 7 : 8) + Buffer.byteLength(data, 'utf8');
}

/** JSON batch format: an array of structured events. */
export function toBatchJson(events: readonly CloudEvent[]): string {
  return `[${events.map(toStructuredJson).join(',')}]`;
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
