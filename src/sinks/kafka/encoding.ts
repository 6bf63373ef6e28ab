/**
 * Faster versions of the two parts of kafkajs' produce-request encoding that a CPU profile of
 * the producer thread put on top: the record batch's CRC-32C (kafkajs loops a byte at a time:
 * a fifth of the thread's busy time; here eight bytes a step, "slicing-by-8") and the encoding
 * of each record (kafkajs makes an encoder with a 511-byte buffer for the record and one for
 * each header, then copies them together: with the dozen `ce_*` headers of a binary-mode event,
 * ~7 KB allocated per record; here one buffer of the record's exact size). Same bytes as
 * kafkajs' (property tests compare both with kafkajs' own modules).
 *
 * `installFastEncoding` puts them in place of kafkajs' modules (`kafkajs/src/protocol/
 * recordBatch/crc32C` and `…/record/v0`, kafkajs 2.x) in the CommonJS module cache. It must run
 * before kafkajs is first loaded in the thread (the producer thread runs it first and loads
 * kafkajs after), and changes nothing — it says so — when kafkajs is already loaded there or
 * laid out differently.
 */
import { createRequire, Module } from 'node:module';

/** The eight tables: T[0] is the classic byte table, T[k][n] = CRC of byte n followed by k zero bytes. */
const T: Int32Array[] = (() => {
  const tables = Array.from({ length: 8 }, () => new Int32Array(256));
  const t0 = tables[0] as Int32Array;
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t0[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t0[n] as number;
    for (let k = 1; k < 8; k++) {
      c = (t0[c & 0xff] as number) ^ (c >>> 8);
      (tables[k] as Int32Array)[n] = c;
    }
  }
  return tables;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = T as [
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
];

/** CRC-32C of `buf`, unsigned. */
export function crc32c(buf: Uint8Array): number {
  let crc = -1;
  let i = 0;
  const end8 = buf.length - (buf.length % 8);
  while (i < end8) {
    const a =
      crc ^
      ((buf[i] as number) |
        ((buf[i + 1] as number) << 8) |
        ((buf[i + 2] as number) << 16) |
        ((buf[i + 3] as number) << 24));
    crc =
      (T7[a & 0xff] as number) ^
      (T6[(a >>> 8) & 0xff] as number) ^
      (T5[(a >>> 16) & 0xff] as number) ^
      (T4[a >>> 24] as number) ^
      (T3[buf[i + 4] as number] as number) ^
      (T2[buf[i + 5] as number] as number) ^
      (T1[buf[i + 6] as number] as number) ^
      (T0[buf[i + 7] as number] as number);
    i += 8;
  }
  while (i < buf.length) crc = (T0[(crc ^ (buf[i++] as number)) & 0xff] as number) ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}

const require = createRequire(import.meta.url);

/** kafkajs' modules replaced, and the one whose being loaded means it is too late. */
const KAFKAJS_CRC = 'kafkajs/src/protocol/recordBatch/crc32C/index.js';
const KAFKAJS_RECORD = 'kafkajs/src/protocol/recordBatch/record/v0/index.js';
const KAFKAJS_BATCH = 'kafkajs/src/protocol/recordBatch/v0/index.js';
const KAFKAJS_ENCODER = 'kafkajs/src/protocol/encoder.js';
const KAFKAJS_LONG = 'kafkajs/src/utils/long.js';
const KAFKAJS_COMPRESSION = 'kafkajs/src/protocol/message/compression/index.js';

/** kafkajs' byte encoder: its record batch and produce request take records and batches as these. */
interface KafkaEncoder {
  buf: Buffer;
  offset: number;
  readonly buffer: Buffer;
}
type KafkaEncoderClass = new (initialSize?: number) => KafkaEncoder;

/** kafkajs' Long (its `utils/long`): what 64-bit fields arrive as. */
interface KafkaLong {
  getHighBits(): number;
  getLowBits(): number;
}
interface KafkaLongClass {
  fromValue(v: unknown): KafkaLong;
  fromInt(v: number): KafkaLong;
}

type HeaderValue = string | Buffer | null | undefined;

/** A record as kafkajs' produce request hands it to its record encoder. */
export interface RecordInput {
  offsetDelta?: number;
  timestampDelta?: number;
  key?: Buffer | string | null;
  value?: Buffer | string | null;
  headers?: Record<string, HeaderValue | HeaderValue[]>;
}

/** A kafkajs encoder holding exactly `buf` (kafkajs reads `buf`, `offset`, `buffer` and `size()`). */
function encoderOf(Encoder: KafkaEncoderClass, buf: Buffer): KafkaEncoder {
  const enc = new Encoder(0);
  enc.buf = buf;
  enc.offset = buf.length;
  return enc;
}

/** Zig-zag of an integer (safe up to 2^52), as Kafka's varint and varlong write it. */
const zigzag = (v: number) => (v >= 0 ? v * 2 : -v * 2 - 1);
/** Bytes of the unsigned varint `u`. */
function uvarintSize(u: number): number {
  let n = 1;
  while (u >= 128) {
    u = Math.floor(u / 128);
    n++;
  }
  return n;
}
/** Writes the unsigned varint `u` at `o`; returns the offset after it. */
function writeUvarint(buf: Buffer, o: number, u: number): number {
  while (u >= 128) {
    buf[o++] = (u % 128) | 128;
    u = Math.floor(u / 128);
  }
  buf[o++] = u;
  return o;
}

/**
 * kafkajs' record v0 encoding — length, attributes, timestamp and offset deltas, key, value,
 * headers, all zig-zag varint-prefixed — written straight into one buffer of the record's exact
 * size (byte lengths measured once).
 */
export function makeRecordEncoder(Encoder: KafkaEncoderClass): (r: RecordInput) => KafkaEncoder {
  return ({ offsetDelta = 0, timestampDelta = 0, key, value, headers = {} }) => {
    const parts: (string | Buffer | null)[] = [];
    const lens: number[] = [];
    const add = (v: HeaderValue) => {
      if (v === null || v === undefined) {
        parts.push(null);
        lens.push(-1);
      } else if (Buffer.isBuffer(v)) {
        parts.push(v);
        lens.push(v.length);
      } else {
        const text = String(v);
        parts.push(text);
        lens.push(Buffer.byteLength(text, 'utf8'));
      }
    };
    add(key);
    add(value);
    let count = 0;
    for (const k of Object.keys(headers)) {
      const v = headers[k];
      if (!Array.isArray(v)) {
        add(k);
        add(v);
        count++;
      } else
        for (const x of v) {
          add(k);
          add(x);
          count++;
        }
    }
    const ts = Number(timestampDelta);
    let size = 1 + uvarintSize(zigzag(ts)) + uvarintSize(zigzag(offsetDelta)) + uvarintSize(zigzag(count));
    for (const l of lens) size += l < 0 ? 1 : uvarintSize(zigzag(l)) + l;
    const buf = Buffer.allocUnsafe(size + uvarintSize(zigzag(size)));
    let o = writeUvarint(buf, 0, zigzag(size));
    buf[o++] = 0; // attributes: none used
    o = writeUvarint(buf, o, zigzag(ts));
    o = writeUvarint(buf, o, zigzag(offsetDelta));
    const part = (i: number) => {
      const p = parts[i] as string | Buffer | null;
      const l = lens[i] as number;
      if (p === null)
        buf[o++] = 1; // zig-zag -1: null
      else {
        o = writeUvarint(buf, o, zigzag(l));
        o += typeof p === 'string' ? buf.write(p, o, l, 'utf8') : p.copy(buf, o);
      }
    };
    part(0);
    part(1);
    o = writeUvarint(buf, o, zigzag(count));
    for (let i = 2; i < parts.length; i++) part(i);
    return encoderOf(Encoder, buf);
  };
}

/** What kafkajs' record batch takes (`recordBatch/v0`). */
export interface RecordBatchInput {
  compression?: number;
  firstOffset?: unknown;
  firstTimestamp?: number;
  maxTimestamp?: number;
  partitionLeaderEpoch?: number;
  lastOffsetDelta?: number;
  transactional?: boolean;
  producerId?: unknown;
  producerEpoch?: number;
  firstSequence?: number;
  records?: KafkaEncoder[];
}

type Codec = { compress(encoder: { buffer: Buffer }): Promise<Buffer> } | null;

/**
 * kafkajs' record batch v0 (magic 2) — first offset, then the length-prefixed batch: leader
 * epoch, magic, CRC-32C of the rest, attributes, deltas, timestamps, producer id and epoch, first
 * sequence, the record count and the records (compressed by the codec when asked) — into one
 * buffer of its exact size, instead of encoders that grow by doubling and are copied into each
 * other three times.
 */
export function makeRecordBatch(
  Encoder: KafkaEncoderClass,
  Long: KafkaLongClass,
  lookupCodec: (compression: number) => Codec,
): (b: RecordBatchInput) => Promise<KafkaEncoder> {
  const int64 = (buf: Buffer, o: number, v: unknown) => {
    const l = Long.fromValue(v);
    buf.writeInt32BE(l.getHighBits(), o);
    buf.writeInt32BE(l.getLowBits(), o + 4);
  };
  return async ({
    compression = 0,
    firstOffset = Long.fromInt(0),
    firstTimestamp = Date.now(),
    maxTimestamp = Date.now(),
    partitionLeaderEpoch = 0,
    lastOffsetDelta = 0,
    transactional = false,
    producerId = Long.fromValue(-1),
    producerEpoch = 0,
    firstSequence = 0,
    records = [],
  }) => {
    const raw =
      records.length === 1 ? (records[0] as KafkaEncoder).buffer : Buffer.concat(records.map((r) => r.buffer));
    let payload = raw;
    if (compression !== 0) {
      const codec = lookupCodec(compression);
      if (!codec) throw new Error(`kafkajs has no codec for compression ${compression}`);
      payload = await codec.compress({ buffer: raw });
    }
    // firstOffset(8) length(4) | leaderEpoch(4) magic(1) crc(4) | body: attributes(2) lastOffsetDelta(4)
    // firstTimestamp(8) maxTimestamp(8) producerId(8) producerEpoch(2) firstSequence(4) count(4) payload
    const bodyStart = 8 + 4 + 4 + 1 + 4;
    const total = bodyStart + 40 + payload.length;
    const buf = Buffer.allocUnsafe(total);
    int64(buf, 0, firstOffset);
    buf.writeInt32BE(total - 12, 8);
    buf.writeInt32BE(partitionLeaderEpoch, 12);
    buf.writeInt8(2, 16); // magic
    let o = bodyStart;
    buf.writeInt16BE((compression & 0x07) | (transactional ? 16 : 0), o);
    buf.writeInt32BE(lastOffsetDelta, o + 2);
    int64(buf, o + 6, firstTimestamp);
    int64(buf, o + 14, maxTimestamp);
    int64(buf, o + 22, producerId);
    buf.writeInt16BE(producerEpoch, o + 30);
    buf.writeInt32BE(firstSequence, o + 32);
    buf.writeInt32BE(records.length, o + 36);
    o += 40;
    payload.copy(buf, o);
    buf.writeUInt32BE(crc32c(buf.subarray(bodyStart)), 17);
    return encoderOf(Encoder, buf);
  };
}

/** Sets `exports` as the module at `path` in the CommonJS cache. */
function provide(path: string, exports: unknown): void {
  const m = new Module(path);
  m.filename = path;
  m.loaded = true;
  m.exports = exports;
  require.cache[path] = m;
}

/**
 * Puts {@link crc32c}, the exact-size record encoder and record batch in place of kafkajs' own.
 * True when done; false when kafkajs' record batch encoder is already loaded in this thread (it
 * keeps what it has) or kafkajs is not laid out as expected.
 */
export function installFastEncoding(): boolean {
  let paths: Record<'crc' | 'record' | 'batch' | 'encoder' | 'long' | 'compression', string>;
  try {
    paths = {
      crc: require.resolve(KAFKAJS_CRC),
      record: require.resolve(KAFKAJS_RECORD),
      batch: require.resolve(KAFKAJS_BATCH),
      encoder: require.resolve(KAFKAJS_ENCODER),
      long: require.resolve(KAFKAJS_LONG),
      compression: require.resolve(KAFKAJS_COMPRESSION),
    };
  } catch {
    return false;
  }
  if (require.cache[paths.batch]) return require.cache[paths.crc]?.exports === crc32c;
  const Encoder = require(paths.encoder) as KafkaEncoderClass;
  const Long = require(paths.long) as KafkaLongClass;
  const { lookupCodec } = require(paths.compression) as { lookupCodec: (c: number) => Codec };
  provide(paths.crc, crc32c);
  provide(paths.record, makeRecordEncoder(Encoder));
  provide(paths.batch, { RecordBatch: makeRecordBatch(Encoder, Long, lookupCodec), MAGIC_BYTE: 2 });
  return true;
}
