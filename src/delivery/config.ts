/**
 * The `delivery:` block every sink config may carry: queue bounds (events and bytes, like the
 * OpenTelemetry Collector's `sending_queue` with its items and bytes sizers, blocking on overflow),
 * batch size, how many batches may be in flight at once (`concurrency`, never two of one object),
 * the retry policy (exponential backoff with full jitter, per object, like its `retry_on_failure`)
 * and when a continuously failing endpoint is reported (`outageAlertMs`), and the sink's durable
 * outbox (`outbox`, off by default; see {@link OutboxDeliveryConfig}).
 * The schema here is the single source of validation, defaults and docs for it.
 */
import type { JsonSchema } from '../component.ts';
import { DEFAULT_OUTBOX_CONFIG, type OutboxConfig, outboxConfigSchema } from './outbox.ts';

/**
 * The `outbox:` block: whether the sink's events are stored under --state-dir before the source's
 * checkpoint advances past them (see `src/delivery/outbox.ts`), and how.
 */
export interface OutboxDeliveryConfig extends OutboxConfig {
  /**
   * Off by default: a local outbox is only durable where the next process finds it again, i.e. on
   * a persistent volume (not an emptyDir or a container's own layer). Without it the source's
   * checkpoint advances only past delivered events, so a restart re-emits the rest from the cluster.
   */
  enabled: boolean;
}

/** Retry policy for retryable failures. */
export interface RetryConfig {
  /** Wait after the first failure of a streak. */
  initialIntervalMs: number;
  /** Upper bound of one backoff wait (a larger Retry-After from the destination still wins). */
  maxIntervalMs: number;
  /** Factor by which the wait grows after each further failure. */
  multiplier: number;
  /**
   * Jitter: each wait is drawn uniformly from `[wait × (1 − randomizationFactor), wait]`, so
   * `maxIntervalMs` is a true cap; 1 (the default) is "full jitter" (uniform in `[0, wait]`).
   */
  randomizationFactor: number;
  /**
   * How long one event may keep failing before it is dead-lettered; 0 = retry forever. Only time
   * while the endpoint answers counts (see `DeliveryQueue`): an endpoint that is down keeps its
   * events rather than dead-lettering them by age.
   */
  maxElapsedMs: number;
  /** Longest wait a destination's `Retry-After` may impose on the whole sink; a longer one is cut to this. */
  maxRetryAfterMs: number;
}

export interface DeliveryConfig {
  /** Most events waiting in the queue; `enqueue` waits for room beyond that (back-pressure). */
  queueCapacity: number;
  /**
   * Most bytes (structured-JSON size) of the events waiting in the queue; `enqueue` waits for room
   * beyond that. One event larger than this is still admitted into an empty queue.
   */
  queueBytes: number;
  /** Most events in one `send` (also bounded by the sink's own `maxBatch`). */
  maxBatch: number;
  /**
   * Most `send` calls in flight at once; undefined = the sink's `defaultConcurrency` (1 when it
   * declares none). Never more than the sink's `maxConcurrency`.
   */
  concurrency?: number;
  /** After this long with no send answered, the endpoint is reported as failing (metric, one error log). */
  outageAlertMs: number;
  retry: RetryConfig;
  outbox: OutboxDeliveryConfig;
}

/**
 * The wait before a retry after the destination answered with a `Retry-After`: the backoff's own
 * wait or the Retry-After cut to `maxRetryAfterMs`, whichever is longer. The one rule for every
 * retry of a delivery: the queue's per-object and sink-wide waits and the dead-letter writer's.
 */
export function retryAfterWait(backoffMs: number, retryAfterMs: number | undefined, maxRetryAfterMs: number): number {
  return Math.max(backoffMs, Math.min(Math.max(0, retryAfterMs ?? 0), maxRetryAfterMs));
}

export const DEFAULT_DELIVERY_CONFIG: Readonly<DeliveryConfig> = Object.freeze({
  queueCapacity: 10_000,
  queueBytes: 16 * 1024 * 1024,
  maxBatch: 500,
  outageAlertMs: 5 * 60_000,
  retry: Object.freeze({
    initialIntervalMs: 500,
    maxIntervalMs: 30_000,
    multiplier: 2,
    randomizationFactor: 1,
    maxElapsedMs: 6 * 3_600_000,
    maxRetryAfterMs: 15 * 60_000,
  }),
  outbox: Object.freeze({ enabled: false, ...DEFAULT_OUTBOX_CONFIG }),
});

const d = DEFAULT_DELIVERY_CONFIG;

/** JSON Schema fragment of the `delivery:` block (merged into every sink by the config schema). */
export const deliveryConfigSchema: JsonSchema = {
  type: 'object',
  description:
    'How events reach this sink: a bounded in-memory queue, batching, concurrent sends in order per object, and retry per object with exponential backoff and full jitter. Events that fail permanently or exhaust their retries go to the pipeline dead-letter file.',
  additionalProperties: false,
  properties: {
    queueCapacity: {
      type: 'integer',
      minimum: 1,
      default: d.queueCapacity,
      description:
        'Most events waiting for this sink. When full, the pipeline waits (back-pressure reaches the source, whose checkpoint then stops advancing).',
    },
    queueBytes: {
      type: 'integer',
      minimum: 1024,
      default: d.queueBytes,
      description: `Most bytes (the events' structured JSON size) waiting for this sink; ${d.queueBytes / 2 ** 20} MiB by default. When reached, the pipeline waits as when queueCapacity is reached. One event larger than this still enters an empty queue.`,
    },
    maxBatch: {
      type: 'integer',
      minimum: 1,
      default: d.maxBatch,
      description: "Most events handed to the sink in one send (the sink's own limit may be lower).",
    },
    concurrency: {
      type: 'integer',
      minimum: 1,
      maximum: 1024,
      description:
        "Most batches sent at once. Events of one object (its partitionkey, k8suid or subject) are never in flight together and are sent in order; an object whose event is being retried holds back only its own later events. Default: the sink's own (16 for HTTP sinks, 4 for Kafka, 1 for file and stdout, which never send concurrently).",
    },
    outageAlertMs: {
      type: 'integer',
      minimum: 1000,
      default: d.outageAlertMs,
      description:
        'Milliseconds without any send answered (every attempt failed retryably) after which the endpoint is reported as failing: the crbridge_component_failing gauge turns 1 and one error is logged. Its events stay queued; they are not dead-lettered by age while it is down.',
    },
    retry: {
      type: 'object',
      description: 'Retry policy for failures that may succeed later (connection errors, timeouts, 5xx, 429).',
      additionalProperties: false,
      properties: {
        initialIntervalMs: {
          type: 'integer',
          minimum: 1,
          default: d.retry.initialIntervalMs,
          description: 'Milliseconds to wait after the first failure of a streak.',
        },
        maxIntervalMs: {
          type: 'integer',
          minimum: 1,
          default: d.retry.maxIntervalMs,
          description:
            'Upper bound in milliseconds of one backoff wait. A longer Retry-After from the destination is still honoured.',
        },
        multiplier: {
          type: 'number',
          minimum: 1,
          default: d.retry.multiplier,
          description: 'Factor by which the wait grows after each further failure.',
        },
        randomizationFactor: {
          type: 'number',
          minimum: 0,
          maximum: 1,
          default: d.retry.randomizationFactor,
          description:
            'Jitter: each wait is drawn uniformly from [wait × (1 − randomizationFactor), wait], so maxIntervalMs is a true cap; 1 is full jitter.',
        },
        maxElapsedMs: {
          type: 'integer',
          minimum: 0,
          default: d.retry.maxElapsedMs,
          description: `Milliseconds an event may keep failing before it is dead-lettered (code CRB_DELIVERY_RETRYABLE); ${d.retry.maxElapsedMs / 3_600_000} hours by default; 0 retries forever. Only time while the endpoint answers other sends counts: while every send fails (the endpoint is down) events are kept, not dead-lettered by age.`,
        },
        maxRetryAfterMs: {
          type: 'integer',
          minimum: 0,
          default: d.retry.maxRetryAfterMs,
          description:
            'Longest pause in milliseconds a Retry-After from the destination may impose; a Retry-After pauses every send of this sink, and a longer one is cut to this.',
        },
      },
    },
    outbox: {
      ...outboxConfigSchema,
      description: `${outboxConfigSchema.description} Off by default: a local outbox is only durable where the next process finds it, so enable it only with --state-dir on a persistent volume (not an emptyDir). Without it, the source's checkpoint advances only past delivered events and a restart re-emits the rest from the cluster.`,
      properties: {
        enabled: {
          type: 'boolean',
          default: false,
          description:
            'Store every event of this sink in <state-dir>/outbox/<pipeline>/<sink>.sqlite before the checkpoint advances past it; replayed first after a restart.',
        },
        ...(outboxConfigSchema.properties as Record<string, JsonSchema>),
      },
    },
  },
};

/** A partial `delivery:` block as written in a pipeline file. */
export interface PartialDeliveryConfig {
  queueCapacity?: number;
  queueBytes?: number;
  maxBatch?: number;
  concurrency?: number;
  outageAlertMs?: number;
  retry?: Partial<RetryConfig>;
  outbox?: Partial<OutboxDeliveryConfig>;
}

/** Fills in defaults for every missing field. Pure; never throws (the schema has validated already). */
export function resolveDeliveryConfig(partial: PartialDeliveryConfig = {}): DeliveryConfig {
  return {
    queueCapacity: partial.queueCapacity ?? d.queueCapacity,
    queueBytes: partial.queueBytes ?? d.queueBytes,
    maxBatch: partial.maxBatch ?? d.maxBatch,
    ...(partial.concurrency !== undefined && { concurrency: partial.concurrency }),
    outageAlertMs: partial.outageAlertMs ?? d.outageAlertMs,
    retry: { ...d.retry, ...stripUndefined(partial.retry ?? {}) },
    outbox: { ...d.outbox, ...stripUndefined(partial.outbox ?? {}) },
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** A problem of one `delivery:` block, by JSON pointer relative to the block. */
export interface DeliveryConfigProblem {
  pointer: string;
  message: string;
}

/**
 * The rules across fields the schema cannot express, on a block as written (defaults not yet
 * applied, so a message can say which value is a default and point at the field the user wrote).
 * Pure; fields of the wrong type are left to the schema's errors.
 */
export function checkDeliveryConfig(written: PartialDeliveryConfig = {}): DeliveryConfigProblem[] {
  const out: DeliveryConfigProblem[] = [];
  const num = (v: unknown, fallback: number): number | undefined =>
    v === undefined ? fallback : typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  const note = (v: unknown) => (v === undefined ? ' by default' : '');

  const retry = written.retry ?? {};
  if (typeof retry === 'object' && retry !== null) {
    const initial = num(retry.initialIntervalMs, d.retry.initialIntervalMs);
    const max = num(retry.maxIntervalMs, d.retry.maxIntervalMs);
    if (initial !== undefined && max !== undefined && max < initial)
      out.push({
        pointer: retry.maxIntervalMs !== undefined ? '/retry/maxIntervalMs' : '/retry/initialIntervalMs',
        message: `retry.maxIntervalMs (${max}${note(retry.maxIntervalMs)}) is less than retry.initialIntervalMs (${initial}${note(retry.initialIntervalMs)}): every wait would be cut to ${max} ms; raise maxIntervalMs to at least ${initial} or lower initialIntervalMs`,
      });
  }

  // a default maxBatch above a small queueCapacity is fine (batches simply hold what is queued);
  // one written out promises batches the queue can never fill
  if (written.maxBatch !== undefined) {
    const batch = num(written.maxBatch, d.maxBatch);
    const capacity = num(written.queueCapacity, d.queueCapacity);
    if (batch !== undefined && capacity !== undefined && batch > capacity)
      out.push({
        pointer: '/maxBatch',
        message: `maxBatch (${batch}) is larger than queueCapacity (${capacity}${note(written.queueCapacity)}): no batch can hold more than the queue, so at most ${capacity} events go per send; lower maxBatch to at most ${capacity} or raise queueCapacity`,
      });
  }
  return out;
}
