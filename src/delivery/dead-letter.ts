/**
 * The dead-letter destination: where events go that a sink refused permanently, that exhausted
 * their retries, or that failed validation. `fileDeadLetter` appends one JSON object per line;
 * writes that arrive while a flush is running are coalesced into the next append + fsync, so a
 * burst of failures costs one fsync per batch, not per event.
 */

import type { FileHandle } from 'node:fs/promises';
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { CloudEvent } from '../events/cloudevent.ts';

/** One dead-lettered event with why it was given up. */
export interface DeadLetterEntry {
  event: CloudEvent;
  /** The component (`<pipeline>/<name>`) that gave up on it. */
  component: string;
  /** Stable error code, e.g. CRB_DELIVERY_PERMANENT. */
  code: string;
  errors: string[];
  /** When it was dead-lettered (RFC 3339). */
  time: string;
  /** Delivery attempts made (0 when it never reached a sink). */
  attempts: number;
}

/**
 * Ordering: entries are stored in the order `write` was called. `write` resolves once the entry is
 * durably stored and rejects if it could not be. Safe to share between several queues.
 */
export interface DeadLetter {
  write(entry: DeadLetterEntry): Promise<void>;
  /** Waits for pending writes and releases the file. A later `write` opens it again. Idempotent. */
  close(): Promise<void>;
}

interface Pending {
  line: string;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A dead-letter file of JSON lines at `path` (parent folders are created), appended and fsync'd per batch. */
export function fileDeadLetter(path: string): DeadLetter {
  let handle: FileHandle | undefined;
  let pending: Pending[] = [];
  let flushing: Promise<void> | undefined;

  const flush = async (): Promise<void> => {
    while (pending.length > 0) {
      const batch = pending;
      pending = [];
      try {
        if (!handle) {
          await mkdir(dirname(path), { recursive: true });
          handle = await open(path, 'a');
        }
        await handle.write(batch.map((p) => p.line).join(''));
        await handle.sync();
        for (const p of batch) p.resolve();
      } catch (err) {
        const h = handle;
        handle = undefined;
        await h?.close().catch(() => {});
        for (const p of batch) p.reject(err);
      }
    }
  };

  const kick = (): void => {
    flushing ??= flush().finally(() => {
      flushing = undefined;
      if (pending.length > 0) kick();
    });
  };

  return {
    write(entry) {
      return new Promise<void>((resolve, reject) => {
        pending.push({ line: `${JSON.stringify(entry)}\n`, resolve, reject });
        kick();
      });
    },
    async close() {
      while (flushing) await flushing;
      const h = handle;
      handle = undefined;
      await h?.close();
    },
  };
}
