/**
 * CloudEvents HTTP protocol binding 1.0: binary mode (`ce-<attribute>` headers, the data as the
 * body, `content-type` = datacontenttype), structured mode (`application/cloudevents+json`) and
 * batch mode (`application/cloudevents-batch+json`, a JSON array). Header values are
 * percent-encoded where the binding requires it (space, `"`, `%` and anything outside printable
 * ASCII), so any string attribute survives the trip. The distributed-tracing extension also goes
 * as the W3C `traceparent` / `tracestate` headers (binary and structured), as the extension's spec asks. Pure: the same event gives the same message.
 */
import type { CloudEvent } from '../cloudevent.ts';
import {
  attributeString,
  attributesOf,
  BATCH_CONTENT_TYPE,
  dataJson,
  STRUCTURED_CONTENT_TYPE,
  toBatchJson,
  toStructuredJson,
} from '../serialize.ts';
import { traceHeaders } from '../trace-context.ts';

/** An HTTP request to send (method POST is the sink's business); header names are lower case. */
export interface HttpMessage {
  headers: Record<string, string>;
  body: string;
}

const NEEDS_ENCODING = /[^\x21\x23\x24\x26-\x7e]/;

/** Percent-encodes a header value per the HTTP binding §3.1.3.2 (UTF-8 bytes of each such character). */
export function encodeHeaderValue(v: string): string {
  if (!NEEDS_ENCODING.test(v)) return v;
  let out = '';
  for (const ch of v) {
    if (NEEDS_ENCODING.test(ch)) {
      for (const b of Buffer.from(ch, 'utf8')) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
    } else out += ch;
  }
  return out;
}

/** Inverse of {@link encodeHeaderValue}. */
export function decodeHeaderValue(v: string): string {
  if (!v.includes('%')) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return v; // not percent-encoded after all
  }
}

export function toHttpBinary(event: CloudEvent): HttpMessage {
  const headers: Record<string, string> = {};
  for (const [name, v] of attributesOf(event)) {
    if (name === 'datacontenttype') headers['content-type'] = attributeString(v);
    else headers[`ce-${name}`] = encodeHeaderValue(attributeString(v));
  }
  Object.assign(headers, traceHeaders(event));
  return { headers, body: dataJson(event) ?? '' };
}

export function toHttpStructured(event: CloudEvent): HttpMessage {
  return {
    headers: { 'content-type': STRUCTURED_CONTENT_TYPE, ...traceHeaders(event) },
    body: toStructuredJson(event),
  };
}

export function toHttpBatch(events: readonly CloudEvent[]): HttpMessage {
  return { headers: { 'content-type': BATCH_CONTENT_TYPE }, body: toBatchJson(events) };
}
