/**
 * A local OTLP/HTTP trace receiver for the otlp-traces unit tests: it decodes what the exporter
 * sent — OTLP/JSON or OTLP protobuf (a small wire-format reader, so the test does not trust the
 * encoder it checks), gzip or not — into one shape (the OTLP JSON mapping: hex ids, nanosecond
 * strings, `{ key, value: { stringValue | intValue | boolValue | doubleValue } }` attributes), and
 * answers as scripted (then 200), or not at all while `hang` is set.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export interface OtlpAttribute {
  key: string;
  value: Record<string, unknown>;
}
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: OtlpAttribute[];
  links?: { traceId: string; spanId: string; attributes?: OtlpAttribute[] }[];
  status: { code?: number; message?: string };
}
export interface OtlpRequest {
  headers: http.IncomingHttpHeaders;
  /** The body's size as sent (compressed when gzip). */
  bytes: number;
  resource: Record<string, unknown>;
  scope: { name?: string; version?: string };
  spans: OtlpSpan[];
}

interface Field {
  n: number;
  /** varint and fixed32 as bigint; length-delimited and fixed64 as bytes. */
  v: bigint | Buffer;
}

/** The fields of one protobuf message, in order. */
function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = (): bigint => {
    let r = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++] as number;
      r |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if ((b & 0x80) === 0) return r;
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    const n = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0) out.push({ n, v: varint() });
    else if (wire === 1) {
      out.push({ n, v: buf.subarray(i, i + 8) });
      i += 8;
    } else if (wire === 2) {
      const len = Number(varint());
      out.push({ n, v: buf.subarray(i, i + len) });
      i += len;
    } else if (wire === 5) {
      out.push({ n, v: BigInt(buf.readUInt32LE(i)) });
      i += 4;
    } else throw new Error(`protobuf wire type ${wire} at ${i}`);
  }
  return out;
}
const bytesOf = (fs: Field[], n: number): Buffer[] => fs.filter((f) => f.n === n).map((f) => f.v as Buffer);
const one = (fs: Field[], n: number): Field['v'] | undefined => fs.find((f) => f.n === n)?.v;
const text = (v: Field['v'] | undefined) => (v === undefined ? undefined : (v as Buffer).toString('utf8'));
const hex = (v: Field['v'] | undefined) => (v === undefined ? undefined : (v as Buffer).toString('hex'));
const nanos = (v: Field['v'] | undefined) => (v === undefined ? '0' : (v as Buffer).readBigUInt64LE(0).toString());

function anyValue(buf: Buffer): Record<string, unknown> {
  const [f] = fields(buf);
  if (!f) return {};
  switch (f.n) {
    case 1:
      return { stringValue: text(f.v) };
    case 2:
      return { boolValue: f.v === 1n };
    case 3:
      return { intValue: Number(BigInt.asIntN(64, f.v as bigint)) };
    case 4:
      return { doubleValue: (f.v as Buffer).readDoubleLE(0) };
    default:
      throw new Error(`AnyValue field ${f.n} not decoded here`);
  }
}
const keyValues = (list: Buffer[]): OtlpAttribute[] =>
  list.map((kv) => {
    const fs = fields(kv);
    return { key: text(one(fs, 1)) as string, value: anyValue((one(fs, 2) as Buffer) ?? Buffer.alloc(0)) };
  });

function protoSpan(buf: Buffer): OtlpSpan {
  const fs = fields(buf);
  const status = fields((one(fs, 15) as Buffer) ?? Buffer.alloc(0));
  const code = one(status, 3);
  const message = text(one(status, 2));
  const parent = hex(one(fs, 4));
  const links = bytesOf(fs, 13).map((l) => {
    const lf = fields(l);
    const attributes = keyValues(bytesOf(lf, 4));
    return {
      traceId: hex(one(lf, 1)) as string,
      spanId: hex(one(lf, 2)) as string,
      ...(attributes.length > 0 && { attributes }),
    };
  });
  return {
    traceId: hex(one(fs, 1)) as string,
    spanId: hex(one(fs, 2)) as string,
    ...(parent && { parentSpanId: parent }),
    name: text(one(fs, 5)) as string,
    kind: Number(one(fs, 6) ?? 0n),
    startTimeUnixNano: nanos(one(fs, 7)),
    endTimeUnixNano: nanos(one(fs, 8)),
    attributes: keyValues(bytesOf(fs, 9)),
    ...(links.length > 0 && { links }),
    status: { ...(code !== undefined && { code: Number(code) }), ...(message !== undefined && { message }) },
  };
}

/** An `ExportTraceServiceRequest` (protobuf) as the JSON mapping's shape; one resource and scope expected. */
function decodeProtobuf(buf: Buffer): Omit<OtlpRequest, 'headers' | 'bytes'> {
  const resourceSpans = bytesOf(fields(buf), 1);
  if (resourceSpans.length !== 1) throw new Error(`${resourceSpans.length} resourceSpans`);
  const rs = fields(resourceSpans[0] as Buffer);
  const resource = keyValues(bytesOf(fields((one(rs, 1) as Buffer) ?? Buffer.alloc(0)), 1));
  const scopeSpans = bytesOf(rs, 2);
  if (scopeSpans.length !== 1) throw new Error(`${scopeSpans.length} scopeSpans`);
  const ss = fields(scopeSpans[0] as Buffer);
  const scope = fields((one(ss, 1) as Buffer) ?? Buffer.alloc(0));
  return {
    resource: Object.fromEntries(resource.map((a) => [a.key, Object.values(a.value)[0]])),
    scope: { name: text(one(scope, 1)), ...(one(scope, 2) !== undefined && { version: text(one(scope, 2)) }) },
    spans: bytesOf(ss, 2).map(protoSpan),
  };
}

function decodeJson(raw: Buffer): Omit<OtlpRequest, 'headers' | 'bytes'> {
  const body = JSON.parse(raw.toString('utf8'));
  if (body.resourceSpans.length !== 1) throw new Error(`${body.resourceSpans.length} resourceSpans`);
  const rs = body.resourceSpans[0];
  if (rs.scopeSpans.length !== 1) throw new Error(`${rs.scopeSpans.length} scopeSpans`);
  return {
    resource: Object.fromEntries(rs.resource.attributes.map((a: OtlpAttribute) => [a.key, Object.values(a.value)[0]])),
    scope: rs.scopeSpans[0].scope,
    spans: rs.scopeSpans[0].spans,
  };
}

export class Receiver {
  readonly requests: OtlpRequest[] = [];
  /** Decoding failures (a test asserts none). */
  readonly errors: string[] = [];
  answers: { status: number; headers?: Record<string, string>; body?: string }[] = [];
  /** While true, requests are read and never answered. */
  hang = false;
  private server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const sent = Buffer.concat(chunks);
      const raw = req.headers['content-encoding'] === 'gzip' ? gunzipSync(sent) : sent;
      try {
        const decoded =
          req.headers['content-type'] === 'application/x-protobuf' ? decodeProtobuf(raw) : decodeJson(raw);
        this.requests.push({ headers: req.headers, bytes: sent.length, ...decoded });
      } catch (err) {
        this.errors.push(String(err));
      }
      if (this.hang) return;
      const a = this.answers.shift() ?? { status: 200 };
      res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
      res.end(a.body ?? (a.status === 200 ? '{}' : '{"message":"no"}'));
    });
  });
  url = '';
  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }
  get spans(): OtlpSpan[] {
    return this.requests.flatMap((r) => r.spans);
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** An attribute's value, whatever its type. */
export const attr = (s: { attributes: OtlpAttribute[] }, key: string): unknown => {
  const a = s.attributes.find((x) => x.key === key);
  return a ? Object.values(a.value)[0] : undefined;
};

/** Nanoseconds (a decimal string) as epoch milliseconds. */
export const ms = (nanos: string): number => Number(BigInt(nanos) / 1_000_000n);
