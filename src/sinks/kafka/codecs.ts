/**
 * Snappy and LZ4 record-batch compression for kafkajs through pure-JS codecs (`snappyjs`, `lz4js`;
 * no native addon), registered once with kafkajs' `CompressionCodecs`. Both write what the Java
 * client writes, so every consumer reads them: snappy in the xerial framing (`SnappyOutputStream`,
 * 32 KiB chunks), LZ4 as an LZ4 frame of independent 64 KiB blocks (`KafkaLZ4BlockOutputStream`).
 * Decompression accepts xerial-framed and raw snappy, and any LZ4 frame.
 */
import { createRequire } from 'node:module';
import kafkajs from 'kafkajs';

// kafkajs is CommonJS: `CompressionCodecs` is reachable through the default export only
const { CompressionCodecs, CompressionTypes } = kafkajs;

const require = createRequire(import.meta.url);
const snappy = require('snappyjs') as {
  compress(b: Uint8Array): Uint8Array;
  uncompress(b: Uint8Array): Uint8Array;
};
const lz4 = require('lz4js') as {
  compressBlock(src: Uint8Array, dst: Uint8Array, sIndex: number, sLength: number, hashTable: Uint32Array): number;
  compressBound(n: number): number;
  decompress(src: Uint8Array): Uint8Array;
};
const xxh32 = (require('lz4js/xxh32.js') as { hash(seed: number, src: Uint8Array, index: number, len: number): number })
  .hash;

/** The codec object kafkajs calls: `compress` gets its encoder (the raw records in `buffer`). */
export interface KafkaCodec {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>;
  decompress(buffer: Buffer): Promise<Buffer>;
}

const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]); // "\x82SNAPPY\0"
const XERIAL_CHUNK = 32 * 1024;

/** Snappy in the xerial framing: magic, version 1, compatible version 1, then (length, block) chunks. */
export function snappyCompress(raw: Buffer): Buffer {
  const parts: Buffer[] = [XERIAL_MAGIC, Buffer.from([0, 0, 0, 1, 0, 0, 0, 1])];
  for (let i = 0; i < raw.length; i += XERIAL_CHUNK) {
    const block = snappy.compress(raw.subarray(i, i + XERIAL_CHUNK));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(block.length);
    parts.push(len, Buffer.from(block.buffer, block.byteOffset, block.length));
  }
  return Buffer.concat(parts);
}

/** Xerial-framed or raw snappy. */
export function snappyDecompress(buf: Buffer): Buffer {
  if (buf.length < 16 || !buf.subarray(0, 8).equals(XERIAL_MAGIC)) return Buffer.from(snappy.uncompress(buf));
  const parts: Buffer[] = [];
  for (let i = 16; i < buf.length; ) {
    const len = buf.readUInt32BE(i);
    i += 4;
    if (i + len > buf.length) throw new Error('truncated xerial snappy chunk');
    parts.push(Buffer.from(snappy.uncompress(buf.subarray(i, i + len))));
    i += len;
  }
  return Buffer.concat(parts);
}

const LZ4_MAGIC = 0x184d2204;
const LZ4_BLOCK = 64 * 1024;
/** FLG: version 01, block independence; no checksums, no content size (as the Java client). */
const LZ4_FLG = 0x60;
/** BD: 64 KiB maximum block size. */
const LZ4_BD = 4 << 4;

/** An LZ4 frame of independent blocks; a block that does not shrink is stored uncompressed. */
export function lz4Compress(raw: Buffer): Buffer {
  const header = Buffer.alloc(7);
  header.writeUInt32LE(LZ4_MAGIC, 0);
  header[4] = LZ4_FLG;
  header[5] = LZ4_BD;
  header[6] = (xxh32(0, header, 4, 2) >>> 8) & 0xff;
  const parts: Buffer[] = [header];
  const src = new Uint8Array(raw.buffer, raw.byteOffset, raw.length);
  const dst = new Uint8Array(lz4.compressBound(LZ4_BLOCK));
  const hashTable = new Uint32Array(1 << 16);
  for (let i = 0; i < raw.length; i += LZ4_BLOCK) {
    const n = Math.min(LZ4_BLOCK, raw.length - i);
    hashTable.fill(0); // independent blocks: no match reaches into an earlier block
    const size = lz4.compressBlock(src, dst, i, n, hashTable);
    const len = Buffer.alloc(4);
    if (size === 0 || size >= n) {
      len.writeUInt32LE((0x80000000 | n) >>> 0);
      parts.push(len, raw.subarray(i, i + n));
    } else {
      len.writeUInt32LE(size);
      parts.push(len, Buffer.from(dst.subarray(0, size)));
    }
  }
  parts.push(Buffer.alloc(4)); // end mark
  return Buffer.concat(parts);
}

export function lz4Decompress(buf: Buffer): Buffer {
  const out = lz4.decompress(new Uint8Array(buf.buffer, buf.byteOffset, buf.length));
  return Buffer.from(out.buffer, out.byteOffset, out.length);
}

const CODECS: Record<'snappy' | 'lz4', KafkaCodec> = {
  snappy: {
    compress: async (encoder) => snappyCompress(encoder.buffer),
    decompress: async (buffer) => snappyDecompress(buffer),
  },
  lz4: {
    compress: async (encoder) => lz4Compress(encoder.buffer),
    decompress: async (buffer) => lz4Decompress(buffer),
  },
};

/** Compression names of the config and their kafkajs types. */
export const COMPRESSION_TYPES = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
} as const;

export type KafkaCompression = keyof typeof COMPRESSION_TYPES;

/** Registers the snappy and LZ4 codecs with kafkajs (process-wide, for producers and consumers). Idempotent. */
export function registerKafkaCodecs(): void {
  CompressionCodecs[CompressionTypes.Snappy] = () => CODECS.snappy;
  CompressionCodecs[CompressionTypes.LZ4] = () => CODECS.lz4;
}
