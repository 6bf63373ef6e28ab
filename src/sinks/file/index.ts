/**
 * The `file` sink: appends each event as one structured-mode CloudEvent JSON object per line to
 * `path` (one write per batch, fsync'd by default). Parent folders are created; the file is opened
 * for appending on first use, so `start` never touches the disk.
 */

import type { FileHandle } from 'node:fs/promises';
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ComponentContext, DeliveryResult, OutboundEvent, Sink, SinkFactory } from '../../component.ts';
import { errorMessage } from '../../errors.ts';
import { serializeLines } from '../util/lines.ts';

/** The file sink's defaults: one constant for the schema and the code. */
export const FILE_SINK_DEFAULTS = { fsync: true } as const;

export interface FileSinkConfig {
  path: string;
  fsync?: boolean;
}

/** Error codes after which retrying cannot help (the path itself is wrong). */
const PERMANENT_CODES = new Set(['EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'EROFS', 'ENAMETOOLONG', 'ELOOP']);

class FileSink implements Sink {
  readonly maxBatch = 1000;
  /** One handle and its size: overlapping appends would interleave and break the cut-back on failure. */
  readonly maxConcurrency = 1;
  private readonly path: string;
  private readonly fsync: boolean;
  private handle: FileHandle | undefined;
  /** File size after our last complete write: a failed partial append is cut back to it. */
  private size = 0;
  private shutdownPromise: Promise<void> | undefined;

  constructor(config: FileSinkConfig) {
    this.path = config.path;
    this.fsync = config.fsync ?? FILE_SINK_DEFAULTS.fsync;
  }

  async start(_signal: AbortSignal): Promise<void> {}

  async send(batch: readonly OutboundEvent[], _signal: AbortSignal): Promise<DeliveryResult[]> {
    const { text, results } = serializeLines(batch);
    if (text === '') return results;
    try {
      if (!this.handle) {
        await mkdir(dirname(this.path), { recursive: true });
        this.handle = await open(this.path, 'a');
        this.size = (await this.handle.stat()).size;
      }
      const bytes = Buffer.from(text, 'utf8');
      await this.handle.appendFile(bytes);
      if (this.fsync) await this.handle.sync();
      this.size += bytes.length;
      return results;
    } catch (err) {
      await this.reset();
      const code = (err as NodeJS.ErrnoException).code ?? '';
      const failed: DeliveryResult = PERMANENT_CODES.has(code)
        ? { status: 'permanent', error: `cannot append to ${this.path}: ${code} ${errorMessage(err)}` }
        : { status: 'retryable', error: `cannot append to ${this.path}: ${code} ${errorMessage(err)}` };
      return results.map((r) => (r.status === 'ok' ? failed : r));
    }
  }

  /** Drops the handle after a failure, cutting off a partial line so a retry leaves valid JSON lines. */
  private async reset(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    if (!h) return;
    try {
      if ((await h.stat()).size > this.size) await h.truncate(this.size);
    } catch {
      // the next open re-reads the size; nothing more to do
    }
    await h.close().catch(() => {});
  }

  shutdown(_deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      const h = this.handle;
      this.handle = undefined;
      await h?.close();
    })();
    return this.shutdownPromise;
  }
}

export const fileSink: SinkFactory<FileSinkConfig> = {
  kind: 'sink',
  type: 'file',
  description: 'Appends each event as one structured-mode CloudEvent JSON object per line to a file.',
  configSchema: {
    type: 'object',
    required: ['path'],
    properties: {
      path: {
        type: 'string',
        minLength: 1,
        description: 'File to append to; parent folders are created. Opened for appending, never truncated.',
      },
      fsync: {
        type: 'boolean',
        default: FILE_SINK_DEFAULTS.fsync,
        description: 'Flush each batch to stable storage (fsync) before it counts as delivered.',
      },
    },
  },
  create(config: FileSinkConfig, _ctx: ComponentContext): Sink {
    return new FileSink(config);
  },
};
