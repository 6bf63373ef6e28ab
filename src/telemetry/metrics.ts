/**
 * A small Prometheus metrics registry: counters, gauges and histograms with labels, rendered in
 * the text exposition format at /metrics. Names are shared by all components and told apart by
 * the `component` label, e.g. `crbridge_component_received_events_total{component="p/kafka"}`.
 */

type Labels = Record<string, string>;
const seriesKey = (l: Labels) =>
  Object.keys(l)
    .sort()
    .map((k) => `${k}="${String(l[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
    .join(',');
/**
 * The series key of a label set, kept per label object: components pass the same object on
 * every event (a queue's `{ component }`), so the key is made once, not sorted and escaped per
 * call. A label object is never changed once used (they are built for the call or held frozen).
 */
const keys = new WeakMap<Labels, string>();
/** The label set of a series without labels: one object, so its key is made once too. */
const NO_LABELS: Labels = Object.freeze({});
const key = (l: Labels) => {
  let k = keys.get(l);
  if (k === undefined) {
    k = seriesKey(l);
    keys.set(l, k);
  }
  return k;
};

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}
export interface Gauge {
  set(labels: Labels, v: number): void;
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
  /** Removes the series (e.g. of a deleted object), so it is no longer exported. */
  delete(labels: Labels): void;
}
export interface Histogram {
  observe(labels: Labels, v: number): void;
}

/** What the registry knows of one metric family (for docs and checks). */
export interface FamilyInfo {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
}

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  render(): string[];
}

const DEFAULT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  private families = new Map<string, Family & { impl: unknown }>();
  private readonly collectors: (() => void)[] = [];

  /**
   * Runs `collect` before every render, to set gauges whose value is read at scrape time (process
   * memory, seconds since a time). It must be cheap and must not throw.
   */
  onCollect(collect: () => void): void {
    this.collectors.push(collect);
  }

  /** The registered families, in registration order. */
  list(): FamilyInfo[] {
    return [...this.families.values()].map(({ name, help, type }) => ({ name, help, type }));
  }

  counter(name: string, help: string): Counter {
    return this.family(name, help, 'counter', () => {
      const values = new Map<string, number>();
      const impl: Counter = {
        inc: (l = NO_LABELS, by = 1) => {
          const k = key(l);
          values.set(k, (values.get(k) ?? 0) + by);
        },
        get: (l = NO_LABELS) => values.get(key(l)) ?? 0,
      };
      return { impl, render: () => [...values].map(([k, v]) => `${name}${k ? `{${k}}` : ''} ${v}`) };
    });
  }

  gauge(name: string, help: string): Gauge {
    return this.family(name, help, 'gauge', () => {
      const values = new Map<string, number>();
      const impl: Gauge = {
        set: (l, v) => values.set(key(l), v),
        inc: (l = NO_LABELS, by = 1) => {
          const k = key(l);
          values.set(k, (values.get(k) ?? 0) + by);
        },
        get: (l = NO_LABELS) => values.get(key(l)) ?? 0,
        delete: (l) => {
          values.delete(key(l));
        },
      };
      return { impl, render: () => [...values].map(([k, v]) => `${name}${k ? `{${k}}` : ''} ${v}`) };
    });
  }

  histogram(name: string, help: string, buckets = DEFAULT_BUCKETS): Histogram {
    return this.family(name, help, 'histogram', () => {
      const series = new Map<string, { counts: number[]; sum: number; count: number }>();
      const impl: Histogram = {
        observe: (l, v) => {
          const k = key(l);
          let s = series.get(k);
          if (!s) {
            s = { counts: buckets.map(() => 0), sum: 0, count: 0 };
            series.set(k, s);
          }
          for (let i = 0; i < buckets.length; i++) if (v <= (buckets[i] as number)) (s.counts[i] as number)++;
          s.sum += v;
          s.count++;
        },
      };
      const render = () => {
        const out: string[] = [];
        for (const [k, s] of series) {
          const sep = k ? `${k},` : '';
          for (let i = 0; i < buckets.length; i++) out.push(`${name}_bucket{${sep}le="${buckets[i]}"} ${s.counts[i]}`);
          out.push(`${name}_bucket{${sep}le="+Inf"} ${s.count}`);
          out.push(`${name}_sum${k ? `{${k}}` : ''} ${s.sum}`);
          out.push(`${name}_count${k ? `{${k}}` : ''} ${s.count}`);
        }
        return out;
      };
      return { impl, render };
    });
  }

  private family<T>(
    name: string,
    help: string,
    type: Family['type'],
    make: () => { impl: T; render: () => string[] },
  ): T {
    const existing = this.families.get(name);
    if (existing) {
      if (existing.type !== type) throw new Error(`metric ${name} registered twice with different types`);
      return existing.impl as T;
    }
    const { impl, render } = make();
    this.families.set(name, { name, help, type, render, impl });
    return impl;
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    for (const c of this.collectors) c();
    const lines: string[] = [];
    for (const f of this.families.values()) {
      lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`, ...f.render());
    }
    return `${lines.join('\n')}\n`;
  }
}

/** Buckets of end-to-end latencies: from tens of milliseconds to an hour (a sink down, a restart). */
export const LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/** Seconds from the RFC 3339 `time` to `now` (epoch ms); 0 for a time in the future or unreadable. */
export function secondsSince(time: string | undefined, now: number): number {
  const t = time === undefined ? Number.NaN : Date.parse(time);
  return Number.isFinite(t) && now > t ? (now - t) / 1000 : 0;
}

/** The metric names every component shares. */
export function componentMetrics(m: Metrics) {
  return {
    received: m.counter('crbridge_component_received_events_total', 'Events a component received.'),
    sent: m.counter('crbridge_component_sent_events_total', 'Events a component delivered or passed on.'),
    dropped: m.counter('crbridge_component_dropped_events_total', 'Events a component dropped on purpose (filters).'),
    errors: m.counter('crbridge_component_errors_total', 'Errors by component and error code.'),
    retries: m.counter('crbridge_component_retries_total', 'Delivery attempts that failed and were retried.'),
    deadLettered: m.counter(
      'crbridge_component_dead_lettered_events_total',
      'Events sent to the dead-letter destination.',
    ),
    queueDepth: m.gauge('crbridge_component_queue_depth', 'Events waiting in a sink queue.'),
    queueBytes: m.gauge(
      'crbridge_component_queue_bytes',
      'Approximate bytes (structured JSON size) of the events waiting in a sink queue.',
    ),
    deadLetterWriteFailures: m.counter(
      'crbridge_dead_letter_write_failures_total',
      'Failed attempts to write a dead letter (each is retried; the event stays unsettled until written).',
    ),
    deliveryLatency: m.histogram(
      'crbridge_component_delivery_latency_seconds',
      "Seconds from a change's time (the event's time attribute: when Kubernetes recorded the change, else when the source saw it) to the sink acknowledging its event.",
      LATENCY_BUCKETS,
    ),
    sendDuration: m.histogram('crbridge_component_send_duration_seconds', 'Duration of one sink send call.'),
    inFlight: m.gauge(
      'crbridge_component_in_flight_sends',
      'Sink send calls in flight (at most the delivery concurrency).',
    ),
    failing: m.gauge(
      'crbridge_component_failing',
      '1 while a sink has answered no send for longer than its delivery.outageAlertMs (its events stay queued), else 0.',
    ),
    failingSeconds: m.gauge(
      'crbridge_component_failing_seconds',
      'Seconds since a sink last answered a send, while every send since has failed retryably; 0 when it answers.',
    ),
  };
}

/** The metric names of the durable per-sink outboxes (`src/delivery/outbox.ts`), by `component`. */
export function outboxMetrics(m: Metrics) {
  return {
    entries: m.gauge('crbridge_outbox_entries', 'Events stored in a sink outbox and not yet acknowledged.'),
    bytes: m.gauge('crbridge_outbox_bytes', 'Bytes (structured JSON) of the events stored in a sink outbox.'),
    full: m.gauge(
      'crbridge_outbox_full',
      '1 while a sink outbox refuses appends (its byte or entry bound reached, or the disk full); the source pauses.',
    ),
    refused: m.counter(
      'crbridge_outbox_refused_appends_total',
      'Outbox append calls refused, by reason (bound, disk-full, io).',
    ),
    corrupt: m.counter(
      'crbridge_outbox_corrupt_total',
      'Outbox files found damaged at open and set aside (renamed *.corrupt-<time>).',
    ),
    corruptEntries: m.counter(
      'crbridge_outbox_corrupt_entries_total',
      'Outbox entries dropped because their checksum did not match (entries of unreadable pages are not counted).',
    ),
    commitDuration: m.histogram(
      'crbridge_outbox_commit_duration_seconds',
      'Duration of one outbox transaction (appends and acks since the last one), fsync included.',
    ),
  };
}

/** The metric names of leader election (`--leader-elect`), by this process's `identity`. */
export function leaderMetrics(m: Metrics) {
  return {
    leader: m.gauge('crbridge_leader', '1 while this process (identity) leads the election and emits, else 0.'),
    transitions: m.counter(
      'crbridge_leader_transitions_total',
      'Changes of the election leader this process observed (including its own acquiring and losing).',
    ),
  };
}
