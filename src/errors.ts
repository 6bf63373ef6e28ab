/**
 * Typed errors with stable codes. Every error crbridge reports to a person or a metric carries a
 * code from {@link ErrorCode}; codes never change meaning once released.
 */

export const ErrorCode = {
  /** A pipeline file could not be read or parsed (YAML syntax, unknown file). */
  ConfigParse: 'CRB_CONFIG_PARSE',
  /** A pipeline file parsed but does not match the schema (missing field, wrong type, unknown type). */
  ConfigInvalid: 'CRB_CONFIG_INVALID',
  /** A `${env:X}` / `${file:X}` reference could not be resolved. */
  ConfigReference: 'CRB_CONFIG_REFERENCE',
  /** Kubernetes credentials could not be loaded. */
  KubeAuth: 'CRB_KUBE_AUTH',
  /** The watched resource is not served by the API server (CRD missing). */
  ResourceNotFound: 'CRB_RESOURCE_NOT_FOUND',
  /** The API server refused a request for lack of permission (HTTP 403: an RBAC grant is missing). */
  Forbidden: 'CRB_FORBIDDEN',
  /** The API server refused the credentials (HTTP 401: an expired, revoked or wrong token or certificate). */
  Unauthorized: 'CRB_UNAUTHORIZED',
  /** A Kubernetes API request failed in a way that may pass on retry (network, timeout, HTTP 429 or 5xx). */
  KubeApi: 'CRB_KUBE_API',
  /** An event failed CloudEvents envelope or data validation. */
  EventInvalid: 'CRB_EVENT_INVALID',
  /** A sink refused an event permanently. */
  DeliveryPermanent: 'CRB_DELIVERY_PERMANENT',
  /** A sink failed in a way that may succeed later. */
  DeliveryRetryable: 'CRB_DELIVERY_RETRYABLE',
  /**
   * A sink's destination refuses every event because of how it is configured (not authorized,
   * authentication failed, the topic does not exist): retried until fixed, never dead-lettered.
   */
  DeliveryConfig: 'CRB_DELIVERY_CONFIG',
  /** A dead letter could not be written; retried with backoff, the event stays unsettled meanwhile. */
  DeadLetterWrite: 'CRB_DEAD_LETTER_WRITE',
  /**
   * The shutdown deadline passed before an event was delivered or dead-lettered: its `settled`
   * rejects with this code, and the source keeps its checkpoint before it.
   */
  Shutdown: 'CRB_SHUTDOWN',
  /**
   * A sink's durable outbox refused an append: it holds `maxBytes` or `maxEntries` already, or the
   * disk is full. Nothing was stored; the caller pauses its source and resumes from its checkpoint.
   */
  OutboxFull: 'CRB_OUTBOX_FULL',
  /** A sink's outbox could not be opened, read or written (other than full); nothing of the call was stored. */
  OutboxIo: 'CRB_OUTBOX_IO',
  /** A sink's outbox file was found damaged at open: set aside (renamed), what could be read is kept. */
  OutboxCorrupt: 'CRB_OUTBOX_CORRUPT',
  /** The checkpoint store could not be read or written. */
  Checkpoint: 'CRB_CHECKPOINT',
  /** A stage's CEL expression failed for one event (a missing field, a value of the wrong type). */
  Expression: 'CRB_EXPRESSION',
  /**
   * Leader election could not read or write its Lease, or this process lost the leadership (it
   * could not renew within the renew deadline, or another holder took the Lease).
   */
  LeaderElection: 'CRB_LEADER_ELECTION',
  /** A component's state store (`ctx.state`) could not be read or written, or outgrew its bound. */
  State: 'CRB_STATE',
  /** Command-line usage error. */
  Usage: 'CRB_USAGE',
  /** Something that should not happen; a bug. */
  Internal: 'CRB_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base class of every error crbridge raises on purpose. */
export class CrbridgeError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CrbridgeError';
    this.code = code;
    this.details = details;
  }
}

/** One problem found in a pipeline file, located by file, line and JSON pointer. */
export interface ConfigIssue {
  file: string;
  line: number;
  column: number;
  /** RFC 6901 JSON pointer into the document, e.g. `/spec/sinks/0/type`. */
  pointer: string;
  message: string;
}

/** All problems of one validation run, reported together. */
export class ConfigError extends CrbridgeError {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: ConfigIssue[], code: ErrorCode = ErrorCode.ConfigInvalid) {
    super(code, issues.map(formatIssue).join('\n'), { count: issues.length });
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatIssue(i: ConfigIssue): string {
  // Line 0: the problem is the file as a whole (it cannot be read), not a place in it.
  const where = i.line > 0 ? `${i.file}:${i.line}:${i.column}` : i.file;
  return i.pointer ? `${where}: ${i.pointer}: ${i.message}` : `${where}: ${i.message}`;
}

/** Message of any thrown value, for logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The causes an error's chain is walked by (the standard one and kafkajs'): they cross a thread too. */
const CAUSES = ['cause', 'originalError'] as const;

/**
 * A value as a structured clone (a worker thread's message) carries it faithfully: errors become
 * plain objects marked `__error` with their name, message, stack, own fields (a CrbridgeError's
 * code and details, kafkajs' type and retriable) and causes; functions are left out.
 */
export function toWire(v: unknown, depth = 0): unknown {
  if (v === null || typeof v !== 'object') return typeof v === 'function' ? undefined : v;
  if (depth > 6) return undefined;
  if (Array.isArray(v)) return v.map((x) => toWire(x, depth + 1));
  if (v instanceof Uint8Array) return v;
  const o = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  if (v instanceof Error) {
    out.__error = true;
    out.name = v.name;
    out.message = v.message;
    if (v.stack) out.stack = v.stack;
  }
  for (const k of Object.keys(o)) if (!(k in out)) out[k] = toWire(o[k], depth + 1);
  for (const k of CAUSES) if (o[k] !== undefined && !(k in out)) out[k] = toWire(o[k], depth + 1);
  return out;
}

/**
 * The inverse of {@link toWire}: objects marked `__error` become Errors again with their fields —
 * a CrbridgeError with its code and details, so callers branch on `code` as on the original.
 */
export function fromWire(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(fromWire);
  const o = v as Record<string, unknown>;
  if (o.__error !== true) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o)) out[k] = fromWire(o[k]);
    return out;
  }
  const crb = o.name === 'CrbridgeError' && typeof o.code === 'string';
  const err = crb
    ? new CrbridgeError(
        o.code as ErrorCode,
        String(o.message ?? ''),
        (fromWire(o.details) ?? {}) as Record<string, unknown>,
      )
    : new Error(String(o.message ?? ''));
  for (const k of Object.keys(o)) {
    if (k === '__error' || k === 'message' || (crb && (k === 'name' || k === 'code' || k === 'details'))) continue;
    Object.defineProperty(err, k, {
      value: fromWire(o[k]),
      enumerable: k !== 'stack',
      writable: true,
      configurable: true,
    });
  }
  return err;
}
