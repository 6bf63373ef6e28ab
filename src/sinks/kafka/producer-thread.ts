/**
 * The worker thread of a `kafka` sink (`thread: true`, the default): it hosts the kafkajs client
 * and its producers, so the record-batch encoding, CRCs, compression and socket I/O — most of a
 * produce request's CPU — run beside the pipeline's thread instead of on it. It does only what
 * the main thread asks, in the order asked (`thread.ts` holds the protocol and every decision:
 * when to connect, what to send, when to drop a producer). kafkajs' log lines go back to the
 * main thread, which scrubs and logs them. kafkajs here encodes records and computes its record
 * batches' CRC-32C with `encoding.ts` (the same bytes, with far less copying and CPU).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { KafkaConfig, Message, Producer, ProducerBatch } from 'kafkajs';
import { toWire } from '../../errors.ts';
import { installFastEncoding } from './encoding.ts';
import type { ProducerThreadInit, ThreadRequest, ThreadResponse } from './thread.ts';

const port = parentPort;
if (!port) throw new Error('producer-thread.ts runs as a worker thread only');
const init = workerData as ProducerThreadInit;
// the faster CRC and record encoder go in before kafkajs is loaded (hence the dynamic imports below)
installFastEncoding();
const { Kafka, Partitioners } = (await import('kafkajs')).default;
(await import('./codecs.ts')).registerKafkaCodecs();

const config: KafkaConfig = {
  ...init.client,
  logCreator: () => (entry) => {
    const { message, timestamp: _t, logger: _l, ...rest } = entry.log;
    const fields = toWire(rest) as Record<string, unknown>;
    port.postMessage({ op: 'log', level: entry.level, log: { ...fields, message } } satisfies ThreadResponse);
  },
};
const kafka = new Kafka(config);
const producers = new Map<number, Producer>();

/** Record values arrive as Uint8Array (a Buffer's structured clone): kafkajs writes Buffers or strings. */
function asBuffers(batch: ProducerBatch): ProducerBatch {
  for (const tm of batch.topicMessages ?? [])
    for (const m of tm.messages as Message[]) {
      const v = m.value as unknown;
      if (v instanceof Uint8Array && !Buffer.isBuffer(v)) m.value = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    }
  return batch;
}

async function handle(req: ThreadRequest): Promise<unknown> {
  switch (req.op) {
    case 'connect': {
      const producer = kafka.producer({ ...req.options, createPartitioner: Partitioners.DefaultPartitioner });
      producers.set(req.producer, producer);
      await producer.connect();
      return undefined;
    }
    case 'send': {
      const producer = producers.get(req.producer);
      if (!producer) throw new Error(`producer ${req.producer} is not connected`);
      return producer.sendBatch(asBuffers(req.batch));
    }
    case 'disconnect': {
      const producer = producers.get(req.producer);
      producers.delete(req.producer);
      await producer?.disconnect();
      return undefined;
    }
  }
}

port.on('message', (req: ThreadRequest) => {
  handle(req).then(
    (value) => port.postMessage({ op: 'result', id: req.id, ok: true, value } satisfies ThreadResponse),
    (err: unknown) =>
      port.postMessage({ op: 'result', id: req.id, ok: false, error: toWire(err) } satisfies ThreadResponse),
  );
});
