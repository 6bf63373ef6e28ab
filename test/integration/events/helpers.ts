/**
 * Helpers of the event-contract tests on the real stack: the PUBLISHED schemas compiled fresh with
 * ajv (independent of crbridge's own validator object), reading a Kafka topic back through the
 * cloudevents SDK, kubectl shortcuts and waiting for crbridge's JSON logs.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { type CloudEventV1, Kafka as KafkaBinding } from 'cloudevents';
import { Kafka, logLevel } from 'kafkajs';
import { CLOUDEVENTS_SCHEMA } from '../../../src/events/schemas/cloudevents.ts';
import type { RunningCrbridge } from '../../support/crbridge.ts';
import { waitFor as eventually, kubectl, repoRoot } from '../../support/stack.ts';

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

/**
 * kubectl create of a JSON object. Not `apply`: its last-applied-configuration annotation would
 * repeat every field (a redacted one included) in the object.
 */
export function create(obj: unknown): void {
  kubectl(['create', '-f', '-'], { input: JSON.stringify(obj) });
}

/** A merge patch of a namespaced object (of its status subresource when `status`); returns the object. */
export function patch(resource: string, ns: string, name: string, body: unknown, status = false): KubeObjectJson {
  return JSON.parse(
    kubectl([
      '-n',
      ns,
      'patch',
      resource,
      name,
      ...(status ? ['--subresource=status'] : []),
      '--type=merge',
      '-p',
      JSON.stringify(body),
      '-o',
      'json',
    ]),
  ) as KubeObjectJson;
}

export interface KubeObjectJson {
  metadata: {
    name: string;
    namespace?: string;
    uid: string;
    resourceVersion: string;
    generation?: number;
    creationTimestamp?: string;
  };
  [k: string]: unknown;
}

export function getObject(resource: string, ns: string, name: string): KubeObjectJson {
  return JSON.parse(kubectl(['-n', ns, 'get', resource, name, '-o', 'json'])) as KubeObjectJson;
}

/** crbridge's JSON log records (stderr) so far. */
export function logs(proc: RunningCrbridge): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of proc.stderr().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {}
  }
  return out;
}

/** Value of one Prometheus sample on crbridge's /metrics, or 0. */
export async function metric(port: number, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const parts = inner.split(',');
    if (want.every((w) => parts.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}
