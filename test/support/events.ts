/**
 * Checking the events crbridge produced in integration tests: the PUBLISHED schemas compiled fresh
 * with ajv (independent of crbridge's own validator object), a Kafka topic read back through the
 * cloudevents SDK, and a file sink's events.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { type CloudEventV1, Kafka as KafkaBinding } from 'cloudevents';
import { Kafka, logLevel } from 'kafkajs';
import { CLOUDEVENTS_SCHEMA } from '../../src/events/schemas/cloudevents.ts';
import { waitFor as eventually, repoRoot } from './stack.ts';

/** The published schemas: the official CloudEvents 1.0 JSON schema and schemas/event-data.schema.json. */
export function publishedSchemas(): (event: Record<string, unknown>) => string[] {
  const ajv = new Ajv({ allErrors: true, strict: false });
  (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
  const envelope = ajv.compile(CLOUDEVENTS_SCHEMA as unknown as object);
  const data = ajv.compile(JSON.parse(readFileSync(join(repoRoot, 'schemas', 'event-data.schema.json'), 'utf8')));
  return (event) => {
    const problems: string[] = [];
    if (!envelope(event))
      problems.push(...(envelope.errors ?? []).map((e) => `envelope ${e.instancePath} ${e.message}`));
    if (!data(event.data)) problems.push(...(data.errors ?? []).map((e) => `data ${e.instancePath} ${e.message}`));
    // the extension naming rule of CloudEvents 1.0 (level 1 checks it beside the schema)
    for (const k of Object.keys(event)) {
      if (k !== 'data' && !/^[a-z0-9]{1,20}$/.test(k)) problems.push(`attribute name ${k}`);
    }
    return problems;
  };
}

export interface KafkaSeen {
  key: string | null;
  headers: Record<string, string>;
  value: string | null;
  event: CloudEventV1<unknown>;
}

/** Reads `want` records of `topic` from the beginning, each parsed back with the cloudevents SDK. */
export async function readTopic(
  brokers: string,
  topic: string,
  want: number,
  timeoutMs = 60_000,
): Promise<KafkaSeen[]> {
  const kafka = new Kafka({ clientId: 'it-events', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await eventually(async () => (await admin.listTopics()).includes(topic), timeoutMs, `topic ${topic} created`);
  } finally {
    await admin.disconnect();
  }
  const consumer = kafka.consumer({ groupId: `it-${topic}-${Math.random()}` });
  const seen: KafkaSeen[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
        const value = message.value ? message.value.toString('utf8') : null;
        const event = KafkaBinding.toEvent({
          key: message.key?.toString() ?? '',
          headers,
          value: value as never,
          body: value as never,
        } as never) as CloudEventV1<unknown>;
        seen.push({ key: message.key?.toString() ?? null, headers, value, event });
      },
    });
    await eventually(() => seen.length >= want, timeoutMs, `${want} records on ${topic} (have ${seen.length})`);
    await new Promise((r) => setTimeout(r, 1500)); // nothing extra may follow
  } finally {
    await consumer.disconnect();
  }
  return seen;
}

/** The events of a file sink (structured JSON, one per line). */
export function fileEvents(path: string): Record<string, unknown>[] {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
