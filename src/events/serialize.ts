/**
 * The CloudEvents JSON event format (structured mode): one event per line, no trailing newline,
 * and the batch format (a JSON array). Attribute order is the event's own (data last when the
 * builder made it).
 *
 * The JSON of an event's `data` (the bulk of its bytes) can be made once and shared: the delivery
 * queue's outbox stores the structured JSON with {@link toStructuredJsonKeep}, which keeps the
 * data's JSON for as long as the data object lives, and the sink's binding then takes it from
 * {@link dataJson} instead of serializing the data again. This relies on the rule the builder's
 * size bookkeeping already relies on: an event's `data` is never changed once built (a stage that
 * changes it makes a new data object, which has no kept JSON).
 */
import type { CloudEvent } from './cloudevent.ts';

export const STRUCTURED_CONTENT_TYPE = 'application/cloudevents+json; charset=utf-8';
export const BATCH_CONTENT_TYPE = 'application/cloudevents-batch+json; charset=utf-8';

/** Data JSON kept by {@link toStructuredJsonKeep}, per data object (dies with it). */
const keptData = new WeakMap<object, string>();

/** The JSON of `event.data` (undefined without data): the kept one if there is one. */
export function dataJson(event: CloudEvent): string | undefined {
  const d = event.data as unknown;
  if (d === undefined) return undefined;
  if (d !== null && typeof d === 'object') {
    const kept = keptData.get(d);
    if (kept !== undefined) return kept;
  }
  return JSON.stringify(d);
}

/** Structured JSON of one event; one line, no trailing newline. Uses the data's kept JSON if any. */
export function toStructuredJson(event: CloudEvent): string {
  const d = event.data as unknown;
  const kept = d !== null && typeof d === 'object' ? keptData.get(d) : undefined;
  return kept === undefined ? JSON.stringify(event) : compose(event, kept);
}

/**
 * Structured JSON of one event, keeping the JSON of its data (an object) so that the sink's
 * binding ({@link dataJson}, {@link toStructuredJson}) does not serialize it again. For who
 * serializes an event before its sink does (the outbox); the same text as {@link toStructuredJson}.
 */
export function toStructuredJsonKeep(event: CloudEvent): string {
  const d = event.data as unknown;
  if (d === null || typeof d !== 'object') return JSON.stringify(event);
  let json = keptData.get(d);
  if (json === undefined) {
    json = JSON.stringify(d);
    keptData.set(d, json);
  }
  return compose(event, json);
}

/** `JSON.stringify(event)` with the data's JSON given: the envelope, then `"data"` where it stands. */
function compose(event: CloudEvent, data: string): string {
  let last: string | undefined;
  for (const k in event) if (Object.hasOwn(event, k)) last = k;
  if (last !== 'data') return JSON.stringify(event);
  const { data: _, ...envelope } = event;
  const head = JSON.stringify(envelope);
  return head === '{}' ? `{"data":${data}}` : `${head.slice(0, -1)},"data":${data}}`;
}

/** JSON batch format: an array of structured events (what `JSON.stringify(events)` makes). */
export function toBatchJson(events: readonly CloudEvent[]): string {
  let out = '[';
  for (let i = 0; i < events.length; i++) out += (i === 0 ? '' : ',') + toStructuredJson(events[i] as CloudEvent);
  return `${out}]`;
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
