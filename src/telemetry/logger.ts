/**
 * JSON-lines logger on standard error (standard output is reserved for the stdout sink).
 * One object per line: time, level, msg, component and any fields. No per-event info logs.
 */

export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
  /** Logs at most once per `key` per process (for repeated errors of one kind). */
  once(level: Level, key: string, msg: string, fields?: Record<string, unknown>): void;
}

export interface LoggerOptions {
  level?: Level;
  write?: (line: string) => void;
}

export function createLogger(
  opts: LoggerOptions = {},
  base: Record<string, unknown> = {},
  seen = new Set<string>(),
): Logger {
  const min = order[opts.level ?? (process.env.CRBRIDGE_LOG_LEVEL as Level | undefined) ?? 'info'] ?? 20;
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < min) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level, msg, ...base, ...fields };
    for (const [k, v] of Object.entries(rec))
      if (v instanceof Error) rec[k] = { message: v.message, code: (v as { code?: string }).code };
    write(`${JSON.stringify(rec)}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(opts, { ...base, ...fields }, seen),
    once: (level, key, m, f) => {
      if (seen.has(key)) return;
      seen.add(key);
      emit(level, m, f);
    },
  };
}

/** A logger that discards everything (unit tests). */
export const silentLogger: Logger = createLogger({ write: () => {} });
