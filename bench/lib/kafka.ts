/**
 * Kafka helpers for the benchmarks: a client on the stack's broker, topic creation, and a consumer
 * that timestamps each record on arrival and identifies the object change it carries
 * (namespace/name@resourceVersion), whether the record is a structured or a binary CloudEvent.
 */
import { Kafka, logLevel } from 'kafkajs';
import { loadStackEnv } from '../../test/support/stack.ts';

export function kafkaClient(clientId: string): Kafka {
  const env = loadStackEnv();
  return new Kafka({ clientId, brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
}

export async function createTopic(kafka: Kafka, topic: string, partitions = 1): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }],
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
}

export async function deleteTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics: [topic] });
  } catch {
    // best effort
  } finally {
    await admin.disconnect();
  }
}

export interface Arrival {
  /** `name@resourceVersion` of the object the event carries ('' when it cannot be told). */
  key: string;
  /** performance.now() when the consumer received the record. */
  at: number;
  bytes: number;
  /** CloudEvent type (ce_type header or structured `type`). */
  type: string;
}

interface Obj {
  metadata?: { name?: string; resourceVersion?: string };
}

/** Identifies the object change in a record: structured mode has the event in the value, binary mode the data. */
export function recordKey(value: Buffer | null): { key: string; type: string } {
  if (!value) return { key: '', type: '' };
  try {
    const v = JSON.parse(value.toString('utf8')) as {
      specversion?: string;
      type?: string;
      data?: { object?: Obj };
      object?: Obj;
    };
    const obj = v.specversion ? v.data?.object : v.object;
    const md = obj?.metadata;
    return { key: md ? `${md.name}@${md.resourceVersion}` : '', type: v.type ?? '' };
  } catch {
    return { key: '', type: '' };
  }
}

/** Consumes `topic` from the beginning, calling `onRecord` per record; resolves once it is consuming. */
export async function consume(
  kafka: Kafka,
  topic: string,
  onRecord: (a: Arrival) => void,
): Promise<{ stop: () => Promise<void> }> {
  const consumer = kafka.consumer({
    groupId: `bench-${topic}-${Math.random().toString(36).slice(2)}`,
    maxWaitTimeInMs: 20,
    minBytes: 1,
    maxBytes: 64 * 1024 * 1024,
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let joined = false;
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined = true;
  });
  await consumer.run({
    eachBatch: async ({ batch }) => {
      const at = performance.now();
      for (const m of batch.messages) {
        const { key, type } = recordKey(m.value);
        const ceType = m.headers?.ce_type;
        onRecord({ key, at, bytes: m.value?.length ?? 0, type: type || (ceType ? String(ceType) : '') });
      }
    },
  });
  for (let i = 0; i < 300 && !joined; i++) await new Promise((r) => setTimeout(r, 100));
  return { stop: () => consumer.disconnect() };
}
