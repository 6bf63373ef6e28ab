/**
 * CloudEvents Kafka protocol binding 1.0: binary mode (default: `ce_<attribute>` headers, the data
 * as the value, `content-type` header = datacontenttype) and structured mode (the JSON event format
 * as the value, `content-type: application/cloudevents+json; charset=utf-8`). The record key is the
 * `partitionkey` extension (the object's uid), so every change of one object lands in one
 * partition, in order. `tombstoneFor` makes the null-value record that lets a compacted topic
 * forget a deleted object.
 */
import type { CloudEvent } from '../cloudevent.ts';
import { attributeString, attributesOf, dataJson, STRUCTURED_CONTENT_TYPE, toStructuredJson } from '../serialize.ts';
import { traceHeaders } from '../trace-context.ts';

/**
 * One Kafka record. Headers are UTF-8 strings. A `value` of null is a tombstone. The same event
 * always maps to the same record (idempotent), so a retried send is a duplicate consumers can drop
 * by the `ce_id` header.
 */
export interface KafkaRecord {
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

const headerNames = new Map<string, string>([['datacontenttype', 'content-type']]);

/** `ce_<attribute>` (`content-type` for datacontenttype), made once per attribute name. */
function headerName(attribute: string): string {
  let h = headerNames.get(attribute);
  if (h === undefined) {
    h = `ce_${attribute}`;
    if (headerNames.size < 1024) headerNames.set(attribute, h);
  }
  return h;
}

function keyOf(event: CloudEvent): string | null {
  const k = event.partitionkey ?? event.k8suid;
  return typeof k === 'string' && k !== '' ? k : null;
}

/** Maps an event to a Kafka record; `binary` (default) or `structured`. */
export function toKafkaRecord(event: CloudEvent, mode: 'binary' | 'structured' = 'binary'): KafkaRecord {
  const key = keyOf(event);
  if (mode === 'structured') {
    return {
      key,
      value: Buffer.from(toStructuredJson(event), 'utf8'),
      headers: { 'content-type': STRUCTURED_CONTENT_TYPE, ...traceHeaders(event) },
    };
  }
  const headers: Record<string, string> = {};
  for (const [name, v] of attributesOf(event)) {
    // partitionkey is carried by the record key (Kafka binding §3.1) but kept as a header too so
    // that a consumer that only reads headers sees the whole event.
    headers[headerName(name)] = attributeString(v);
  }
  Object.assign(headers, traceHeaders(event));
  const data = dataJson(event);
  const value = data === undefined ? null : Buffer.from(data, 'utf8');
  return { key, value, headers };
}

/** True for the event of a deleted object (`type` ends with `.deleted`). */
export function isDeleteEvent(event: CloudEvent): boolean {
  return typeof event.type === 'string' && event.type.endsWith('.deleted');
}

/**
 * For a delete event: a tombstone (key = uid, value null, no headers) to send after it on a
 * compacted topic. Undefined for any other event or an event without a key.
 */
export function tombstoneFor(event: CloudEvent): KafkaRecord | undefined {
  if (!isDeleteEvent(event)) return undefined;
  const key = keyOf(event);
  if (key === null) return undefined;
  return { key, value: null, headers: {} };
}
