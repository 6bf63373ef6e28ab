/**
 * Fakes for delivery-layer unit tests: events, a scriptable sink that records every batch, an
 * in-memory dead letter and a logger that keeps its lines.
 */
import type { DeliveryResult, OutboundEvent, Sink } from '../../../src/component.ts';
import type { DeadLetter, DeadLetterEntry } from '../../../src/delivery/dead-letter.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { createLogger, type Logger } from '../../../src/telemetry/logger.ts';

export function ev(id: string, uid = 'uid-1'): CloudEvent {
  return {
    specversion: '1.0',
    id,
    source: 'test',
    type: 'io.crbridge.example.com.backup.updated',
    subject: `ns/${id}`,
    datacontenttype: 'application/json',
    partitionkey: uid,
    data: {
      object: { apiVersion: 'example.com/v1', kind: 'Backup', metadata: { name: id, uid, resourceVersion: '1' } },
      reason: 'live',
    },
  } as CloudEvent;
}

export interface Call {
  ids: string[];
  attempts: number[];
  at: number;
}

/** A sink whose `send` answers through `respond` and records each call. */
export class FakeSink implements Sink {
  readonly maxBatch: number;
  readonly calls: Call[] = [];
  started = 0;
  shutdowns = 0;
  respond: (batch: readonly OutboundEvent[], call: number) => DeliveryResult[] | Promise<DeliveryResult[]>;
  constructor(maxBatch = 100, respond?: FakeSink['respond']) {
    this.maxBatch = maxBatch;
    this.respond = respond ?? ((b) => b.map(() => ({ status: 'ok' })));
  }
  async start(): Promise<void> {
    this.started++;
  }
  async send(batch: readonly OutboundEvent[]): Promise<DeliveryResult[]> {
    this.calls.push({ ids: batch.map((o) => o.event.id), attempts: batch.map((o) => o.attempts), at: Date.now() });
    return this.respond(batch, this.calls.length);
  }
  async shutdown(): Promise<void> {
    this.shutdowns++;
  }
  /** Every id in the order of successful... every call, flattened. */
  get sentIds(): string[] {
    return this.calls.flatMap((c) => c.ids);
  }
}

export class MemoryDeadLetter implements DeadLetter {
  readonly entries: DeadLetterEntry[] = [];
  async write(entry: DeadLetterEntry): Promise<void> {
    this.entries.push(entry);
  }
  async close(): Promise<void> {}
}

export function captureLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', write: (l) => lines.push(JSON.parse(l)) });
  return { logger, lines };
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** Resolves to true if `p` settles within `ms`. */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let done = false;
  void p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await tick(ms);
  return done;
}
