/**
 * The `stdout` sink: the same lines as the `file` sink (one structured-mode CloudEvent JSON object
 * per line) on standard output. Respects back-pressure: a batch counts as delivered once the
 * stream has taken it (after 'drain' when its buffer was full). Logs go to standard error, so
 * standard output carries events only.
 */
import type { Writable } from 'node:stream';
import type { ComponentContext, DeliveryResult, OutboundEvent, Sink, SinkFactory } from '../../component.ts';
import { errorMessage } from '../../errors.ts';
import { serializeLines } from '../util/lines.ts';

export type StdoutSinkConfig = Record<string, never>;

/** Codes after which the stream will never take data again (the reader went away). */
const PERMANENT_CODES = new Set(['EPIPE', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

/** A sink writing JSON lines to any writable stream (process.stdout in production, a fake in tests). */
export function createStreamSink(stream: Writable): Sink {
  let shutdownPromise: Promise<void> | undefined;
  // An error the stream raised between sends (EPIPE when the reader went away). Without this
  // listener such an error would be unhandled and end the process.
  let broken: Error | undefined;
  stream.on('error', (err: Error) => {
    broken ??= err;
  });
  const write = (text: string) =>
    new Promise<void>((resolve, reject) => {
      if (broken) {
        reject(broken);
        return;
      }
      if (stream.destroyed || stream.writableEnded) {
        reject(Object.assign(new Error('the output stream is closed'), { code: 'ERR_STREAM_DESTROYED' }));
        return;
      }
      let wrote = false;
      let drained = false;
      const cleanup = () => {
        stream.off('drain', onDrain);
        stream.off('error', onError);
        stream.off('close', onClose);
      };
      const maybeDone = () => {
        if (wrote && drained) {
          cleanup();
          resolve();
        }
      };
      const onDrain = () => {
        drained = true;
        maybeDone();
      };
      const onError = (err: Error) => {
        cleanup();
        reject(err);
      };
      const onClose = () => {
        cleanup();
        reject(Object.assign(new Error('the output stream closed'), { code: 'ERR_STREAM_DESTROYED' }));
      };
      stream.on('error', onError);
      stream.on('close', onClose);
      stream.on('drain', onDrain);
      // Wait for both: the write callback (taken by the OS or failed) and, when the buffer was
      // full, 'drain' (room again) before the next batch.
      drained = stream.write(text, (err) => {
        if (err) onError(err);
        else {
          wrote = true;
          maybeDone();
        }
      });
    });
  return {
    maxBatch: 1000,
    // one stream with its drain wait: overlapping writes are not safe
    maxConcurrency: 1,
    async start() {},
    async send(batch: readonly OutboundEvent[]): Promise<DeliveryResult[]> {
      const { text, results } = serializeLines(batch);
      if (text === '') return results;
      try {
        await write(text);
        return results;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        const error = `cannot write to standard output: ${errorMessage(err)}`;
        const failed: DeliveryResult = PERMANENT_CODES.has(code)
          ? { status: 'permanent', error }
          : { status: 'retryable', error };
        return results.map((r) => (r.status === 'ok' ? failed : r));
      }
    },
    shutdown() {
      shutdownPromise ??= Promise.resolve();
      return shutdownPromise;
    },
  };
}

export const stdoutSink: SinkFactory<StdoutSinkConfig> = {
  kind: 'sink',
  type: 'stdout',
  description:
    'Writes each event as one structured-mode CloudEvent JSON object per line to standard output (logs go to standard error).',
  configSchema: { type: 'object', properties: {}, required: [] },
  create(_config: StdoutSinkConfig, _ctx: ComponentContext): Sink {
    return createStreamSink(process.stdout);
  },
};
