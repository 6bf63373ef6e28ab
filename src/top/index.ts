/**
 * `crbridge top`: a live terminal view of a running crbridge (like `vector top`), read from its
 * `/metrics` endpoint every second and drawn with ANSI escapes on the terminal's alternate screen;
 * `q` (or Ctrl-C) quits and restores the terminal. No dependency beyond Node. A failed scrape is
 * shown on the screen and retried; the view keeps running.
 */
import type { Readable, Writable } from 'node:stream';
import { errorMessage } from '../errors.ts';
import { parseMetrics, Snapshot } from './prom.ts';
import { buildModel, renderTop, type TopModel } from './view.ts';

export interface TopOptions {
  url: string;
  /** Milliseconds between scrapes; default 1000. */
  intervalMs?: number;
  input: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  output: Writable & { isTTY?: boolean; columns?: number };
  /** Stops the view (as `q` does). */
  signal?: AbortSignal;
  /** How long one scrape may take (ms); default 2000. */
  timeoutMs?: number;
}

const ESC = '\x1b[';

/** One scrape of `url`. */
async function scrape(url: string, timeoutMs: number): Promise<Snapshot> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  const text = await res.text();
  return new Snapshot(parseMetrics(text), Date.now());
}

/** Runs the view until `q`, Ctrl-C (raw terminal input) or `signal`; resolves with the exit code (0). */
export async function runTop(opts: TopOptions): Promise<number> {
  const { input, output } = opts;
  const interval = opts.intervalMs ?? 1000;
  const tty = output.isTTY === true;
  const color = tty && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';
  let prev: Snapshot | undefined;
  let model: TopModel | undefined;
  let error: string | undefined;
  let stopped = false;
  let wake: (() => void) | undefined;
  const stop = () => {
    stopped = true;
    wake?.();
  };

  const onData = (d: Buffer | string) => {
    const s = d.toString();
    if (s.includes('q') || s.includes('Q') || s.includes('\x03')) stop();
  };
  const rawBefore = input.isTTY === true && typeof input.setRawMode === 'function';
  if (rawBefore) input.setRawMode?.(true);
  input.on('data', onData);
  // the end of a piped input is not a request to quit (Ctrl-C or the signal is)
  input.resume();
  opts.signal?.addEventListener('abort', stop, { once: true });
  const onResize = () => wake?.();
  output.on('resize', onResize);

  if (tty) output.write(`${ESC}?1049h${ESC}?25l`);
  const draw = () => {
    const width = output.columns && output.columns > 0 ? output.columns : 120;
    const lines = renderTop(model, { url: opts.url, width, color, error });
    if (tty) output.write(`${ESC}H${lines.map((l) => `${l}${ESC}K`).join('\r\n')}\r\n${ESC}J`);
    else output.write(`${lines.join('\n')}\n\n`);
  };
  try {
    while (!stopped) {
      const started = Date.now();
      try {
        const cur = await scrape(opts.url, opts.timeoutMs ?? 2000);
        model = buildModel(cur, prev);
        prev = cur;
        error = undefined;
      } catch (err) {
        error = errorMessage(err);
      }
      if (stopped) break;
      draw();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(0, interval - (Date.now() - started)));
        function done() {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        }
        wake = done;
      });
    }
  } finally {
    input.off('data', onData);
    output.off('resize', onResize);
    if (rawBefore) input.setRawMode?.(false);
    input.pause();
    if (tty) output.write(`${ESC}?25h${ESC}?1049l`);
  }
  return 0;
}
