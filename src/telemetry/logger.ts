/**
 * JSON-lines logger on standard error (standard output is reserved for the stdout sink).
 * One object per line: time, level, msg, component and any fields. No per-event info logs.
 * An Error in a field is logged with its name, message, code, stack and `cause` chain.
 * `once` logs a repeated problem once per key per time window (then again, with the count of
 * what it swallowed meanwhile); it remembers a bounded number of keys.
 */

export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
  /**
   * Logs at most once per `key` per window (`onceWindowMs`, default 10 minutes) for a repeated
   * problem of one kind. The first call after the window logs again with `suppressed`: how many
   * calls of that key were swallowed since the last line. Shared by a logger and its children.
   */
  once(level: Level, key: string, msg: string, fields?: Record<string, unknown>): void;
}

export interface LoggerOptions {
  level?: Level;
  write?: (line: string) => void;
  /** How long `once` stays quiet for one key; default {@link ONCE_WINDOW_MS}. */
  onceWindowMs?: number;
  /** Most keys `once` remembers; the oldest is forgotten first. Default {@link ONCE_MAX_KEYS}. */
  onceMaxKeys?: number;
  /** Clock (tests). */
  now?: () => number;
}

export const ONCE_WINDOW_MS = 10 * 60_000;
export const ONCE_MAX_KEYS = 1000;
/** How deep a `cause` chain is followed. */
const MAX_CAUSE_DEPTH = 5;

/** The remembered state of one `once` key. */
interface Seen {
  at: number;
  suppressed: number;
}

/** An Error as a plain object: name, message, code, stack and its `cause` chain (bounded). */
export function serializeError(e: Error, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = { name: e.name, message: e.message };
  const code = (e as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (e.stack) out.stack = e.stack;
  const cause = (e as { cause?: unknown }).cause;
  if (cause !== undefined && cause !== e) {
    if (depth >= MAX_CAUSE_DEPTH) out.cause = '…';
    else out.cause = cause instanceof Error ? serializeError(cause, depth + 1) : String(cause);
  }
  return out;
}

export function createLogger(
  opts: LoggerOptions = {},
  base: Record<string, unknown> = {},
  seen = new Map<string, Seen>(),
): Logger {
  const min = order[opts.level ?? (process.env.CRBRIDGE_LOG_LEVEL as Level | undefined) ?? 'info'] ?? 20;
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const windowMs = opts.onceWindowMs ?? ONCE_WINDOW_MS;
  const maxKeys = Math.max(1, opts.onceMaxKeys ?? ONCE_MAX_KEYS);
  const now = opts.now ?? Date.now;
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < min) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level, msg, ...base, ...fields };
    for (const [k, v] of Object.entries(rec)) if (v instanceof Error) rec[k] = serializeError(v);
    write(`${JSON.stringify(rec)}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(opts, { ...base, ...fields }, seen),
    once: (level, key, m, f) => {
      const t = now();
      const s = seen.get(key);
      if (s && t - s.at < windowMs) {
        s.suppressed++;
        return;
      }
      // Map order is insertion order: re-inserting keeps the most recently logged keys last.
      seen.delete(key);
      seen.set(key, { at: t, suppressed: 0 });
      while (seen.size > maxKeys) seen.delete(seen.keys().next().value as string);
      emit(level, m, s && s.suppressed > 0 ? { ...f, suppressed: s.suppressed } : f);
    },
  };
}

/** A logger that discards everything (unit tests). */
export const silentLogger: Logger = createLogger({ write: () => {} });
