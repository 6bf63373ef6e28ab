/**
 * The producer thread's faster kafkajs encoding (`src/sinks/kafka/encoding.ts`) makes the very
 * bytes kafkajs' own modules make: the CRC-32C of random buffers, each record (keys, values and
 * headers of every shape kafkajs takes), and — installed in a fresh process before kafkajs loads —
 * a whole record batch, compressed and not; installing after kafkajs loaded changes nothing.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { crc32c, makeRecordBatch, makeRecordEncoder, type RecordInput } from '../../../src/sinks/kafka/encoding.ts';

const require = createRequire(import.meta.url);
const kafkajsCrc = require('kafkajs/src/protocol/recordBatch/crc32C/index.js') as (b: Buffer) => number;
const kafkajsRecord = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as (r: RecordInput) => {
  buffer: Buffer;
};
const Encoder = require('kafkajs/src/protocol/encoder.js');
const Long = require('kafkajs/src/utils/long.js');
const { lookupCodec } = require('kafkajs/src/protocol/message/compression/index.js');
const { RecordBatch: kafkajsBatch } = require('kafkajs/src/protocol/recordBatch/v0/index.js') as {
  RecordBatch: (b: Record<string, unknown>) => Promise<{ buffer: Buffer; size(): number }>;
};
const fastRecord = makeRecordEncoder(Encoder);
const fastBatch = makeRecordBatch(Encoder, Long, lookupCodec);

const bytesOrString = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
  fc.string({ unit: 'grapheme', maxLength: 80 }),
);
const header = fc.oneof(bytesOrString, fc.array(bytesOrString, { minLength: 1, maxLength: 3 }));
const record = fc.record({
  offsetDelta: fc.integer({ min: 0, max: 100_000 }),
  timestampDelta: fc.integer({ min: 0, max: 2 ** 40 }),
  key: fc.option(bytesOrString, { nil: null }),
  value: fc.option(bytesOrString, { nil: null }),
  headers: fc.dictionary(fc.string({ minLength: 1, maxLength: 20 }), header, { maxKeys: 14 }),
});

describe('kafka producer encoding', () => {
  test('crc32c equals kafkajs CRC-32C on random buffers of every length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (u) => {
        const b = Buffer.from(u);
        assert.equal(crc32c(b), kafkajsCrc(b));
      }),
      { numRuns: 500 },
    );
  });

  test("each record's bytes equal kafkajs' own record encoder's", () => {
    fc.assert(
      fc.property(record, (r) => {
        assert.equal(fastRecord(r).buffer.toString('hex'), kafkajsRecord(r).buffer.toString('hex'));
      }),
      { numRuns: 500 },
    );
  });

  test("whole record batches (none and gzip; producer id, epoch, sequence, timestamps) equal kafkajs' own", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(record, { maxLength: 12 }),
        fc.constantFrom(0, 1),
        fc.record({
          firstTimestamp: fc.integer({ min: 0, max: 2 ** 45 }),
          producerId: fc.integer({ min: -1, max: 2 ** 40 }),
          producerEpoch: fc.integer({ min: 0, max: 30000 }),
          firstSequence: fc.integer({ min: 0, max: 2 ** 30 }),
          transactional: fc.boolean(),
        }),
        async (recs, compression, fields) => {
          const input = {
            ...fields,
            maxTimestamp: fields.firstTimestamp + 5,
            producerId: Long.fromValue(fields.producerId),
            lastOffsetDelta: Math.max(0, recs.length - 1),
            compression,
          };
          const mine = await fastBatch({ ...input, records: recs.map(fastRecord) });
          const theirs = await kafkajsBatch({ ...input, records: recs.map(kafkajsRecord) });
          assert.equal(mine.buffer.toString('hex'), theirs.buffer.toString('hex'));
          assert.equal((mine as unknown as { size(): number }).size(), theirs.size());
        },
      ),
      { numRuns: 200 },
    );
  });

  test('installed before kafkajs loads, whole record batches come out byte for byte the same; after, nothing changes', () => {
    const encoding = fileURLToPath(new URL('../../../src/sinks/kafka/encoding.ts', import.meta.url));
    const script = (install: boolean) => `
      import { installFastEncoding } from ${JSON.stringify(encoding)};
      const installed = ${install} ? installFastEncoding() : false;
      const { createRequire } = await import('node:module');
      const require = createRequire(${JSON.stringify(encoding)});
      const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0/index.js');
      const Record = require('kafkajs/src/protocol/recordBatch/record/v0/index.js');
      const out = [];
      for (const compression of [0, 1]) {
        const records = Array.from({ length: 50 }, (_, i) => Record({
          offsetDelta: i, timestampDelta: i * 3, key: 'uid-' + (i % 7), value: JSON.stringify({ n: i, s: 'é'.repeat(i) }),
          headers: { ce_id: 'id-' + i, ce_type: 'io.crbridge.t', 'content-type': 'application/json', multi: ['a', 'b'] },
        }));
        const batch = await RecordBatch({ compression, records, firstTimestamp: 1, maxTimestamp: 2, lastOffsetDelta: 49 });
        out.push(batch.buffer.toString('hex'));
      }
      console.log(JSON.stringify({ installed, again: installFastEncoding(), out }));`;
    const run = (install: boolean) =>
      JSON.parse(
        execFileSync(process.execPath, ['--input-type=module', '-e', script(install)], { encoding: 'utf8' }),
      ) as { installed: boolean; again: boolean; out: string[] };
    const fast = run(true);
    const plain = run(false);
    assert.equal(fast.installed, true);
    assert.equal(fast.again, true, 'installing again is a no-op that says it is in place');
    assert.equal(plain.again, false, 'after kafkajs loaded its record batch, installing changes nothing');
    assert.deepEqual(fast.out, plain.out);
  });
});
