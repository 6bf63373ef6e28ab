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

/** kafkajs' byte encoder (what its record batch expects each record as). */
interface KafkaEncoder {
  writeVarInt(v: number): KafkaEncoder;
  writeInt8(v: number): KafkaEncoder;
  writeVarLong(v: unknown): KafkaEncoder;
  writeVarIntBytes(v: unknown): KafkaEncoder;
  writeVarIntString(v: string): KafkaEncoder;
  buffer: Buffer;
}
interface KafkaEncoderClass {
  new (initialSize?: number): KafkaEncoder;
  sizeOfVarInt(v: number): number;
  sizeOfVarLong(v: unknown): number;
  sizeOfVarIntBytes(v: unknown): number;
}

type HeaderValue = string | Buffer | null | undefined;

/** A record as kafkajs' record batch hands it to its record encoder. */
export interface RecordInput {
  offsetDelta?: number;
  timestampDelta?: unknown;
  key?: Buffer | string | null;
  value?: Buffer | string | null;
  headers?: Record<string, HeaderValue | HeaderValue[]>;
}

/**
 * kafkajs' record v0 encoding (length, attributes, timestamp and offset deltas, key, value,
 * headers, all varint-prefixed) into one encoder of the record's exact size.
 */
export function makeRecordEncoder(Encoder: KafkaEncoderClass): (r: RecordInput) => KafkaEncoder {
  const bytesOf = (v: HeaderValue) => (Buffer.isBuffer(v) ? v.length : Buffer.byteLength(String(v), 'utf8'));
  return ({ offsetDelta = 0, timestampDelta = 0, key, value, headers = {} }) => {
    const hk: string[] = [];
    const hv: HeaderValue[] = [];
    for (const k of Object.keys(headers)) {
      const v = headers[k];
      if (Array.isArray(v))
        for (const x of v) {
          hk.push(k);
          hv.push(x);
        }
      else {
        hk.push(k);
        hv.push(v);
      }
    }
    let size =
      1 +
      Encoder.sizeOfVarLong(timestampDelta) +
      Encoder.sizeOfVarInt(offsetDelta) +
      Encoder.sizeOfVarIntBytes(key) +
      Encoder.sizeOfVarIntBytes(value) +
      Encoder.sizeOfVarInt(hk.length);
    for (let i = 0; i < hk.length; i++) {
      const kl = Buffer.byteLength(hk[i] as string, 'utf8');
      size += Encoder.sizeOfVarInt(kl) + kl;
      const v = hv[i];
      if (v === null || v === undefined) size += Encoder.sizeOfVarInt(-1);
      else {
        const vl = bytesOf(v);
        size += Encoder.sizeOfVarInt(vl) + vl;
      }
    }
    const enc = new Encoder(size + Encoder.sizeOfVarInt(size));
    enc
      .writeVarInt(size)
      .writeInt8(0)
      .writeVarLong(timestampDelta)
      .writeVarInt(offsetDelta)
      .writeVarIntBytes(key)
      .writeVarIntBytes(value)
      .writeVarInt(hk.length);
    for (let i = 0; i < hk.length; i++) enc.writeVarIntString(hk[i] as string).writeVarIntBytes(hv[i]);
    return enc;
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
 * Puts {@link crc32c} and the exact-size record encoder in place of kafkajs' own. True when
 * done; false when kafkajs' record batch encoder is already loaded in this thread (it keeps what
 * it has) or kafkajs is not laid out as expected.
 */
export function installFastEncoding(): boolean {
  let paths: { crc: string; record: string; batch: string; encoder: string };
  try {
    paths = {
      crc: require.resolve(KAFKAJS_CRC),
      record: require.resolve(KAFKAJS_RECORD),
      batch: require.resolve(KAFKAJS_BATCH),
      encoder: require.resolve(KAFKAJS_ENCODER),
    };
  } catch {
    return false;
  }
  if (require.cache[paths.batch]) return require.cache[paths.crc]?.exports === crc32c;
  provide(paths.crc, crc32c);
  provide(paths.record, makeRecordEncoder(require(paths.encoder) as KafkaEncoderClass));
  return true;
}
