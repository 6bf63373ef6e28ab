/**
 * The `metrics` sink: the state of the watched objects as Prometheus series on crbridge's own
 * `/metrics` (what kube-state-metrics does for built-in kinds, for any CR): one
 * `crbridge_cr_status_phase{...,phase} 1` per object for its current phase (a CEL expression,
 * `object.status.phase` by default), the seconds it has been in that phase, and counters of changes
 * by kind and change type. "Delivering" an event updates the series; it is acknowledged once the
 * objects' phases are durably stored (`ctx.state`), so after a restart — when only changed objects
 * are emitted — the unchanged ones keep their series. A bound (`maxSeries`) keeps a huge or runaway
 * resource from flooding the scrape: objects beyond it are not tracked, with one warning and a metric.
 * A sink (not a pipeline option) so it gets exactly the events the pipeline's filters let through,
 * and needs nothing new of the runtime.
 */
import { type CelProgram, celProblem, celVariables, changeOf, compileCel, toStringValue } from '../../cel/index.ts';
import type { ComponentContext, DeliveryResult, OutboundEvent, Sink, SinkFactory } from '../../component.ts';
import { ErrorCode, errorMessage } from '../../errors.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import type { StateStore } from '../../state/store.ts';
import { componentMetrics } from '../../telemetry/metrics.ts';

export interface MetricsSinkConfig {
  /** CEL string expression giving the object's phase; null, "" or a missing field = no phase. */
  phase?: string;
  /** Most objects with a phase series (each has one phase and one seconds series). */
  maxSeries?: number;
}

/** The defaults: one constant for the schema and the code. */
export const METRICS_SINK_DEFAULTS = { phase: 'object.status.phase', maxSeries: 10000 } as const;

/** What is remembered (and stored) of one object with a phase. */
interface Tracked {
  group: string;
  kind: string;
  namespace: string;
  name: string;
  phase: string;
  /** When the object entered `phase` (epoch ms): the event time of the change that set it. */
  since: number;
}

/** The series of the CR state metrics; shared by every `metrics` sink, told apart by `component`. */
export function crStateMetrics(ctx: Pick<ComponentContext, 'metrics'>) {
  const m = ctx.metrics;
  return {
    phase: m.gauge(
      'crbridge_cr_status_phase',
      "1 for an object's current phase (the metrics sink's phase expression, object.status.phase by default); removed when the object is deleted or has no phase.",
    ),
    phaseSeconds: m.gauge(
      'crbridge_cr_status_phase_seconds',
      'Seconds an object has been in its current phase (since the event time of the change that set it).',
    ),
    changes: m.counter('crbridge_cr_changes_total', 'Changes of watched objects, by group, kind and change type.'),
    tracked: m.gauge('crbridge_cr_tracked_objects', 'Objects with a phase series, at most the sink maxSeries.'),
    limitReached: m.gauge(
      'crbridge_cr_series_limit_reached',
      '1 while the metrics sink has refused to track an object because maxSeries objects are tracked, else 0.',
    ),
    untracked: m.counter(
      'crbridge_cr_untracked_changes_total',
      'Changes of objects not tracked because the metrics sink reached its maxSeries bound.',
    ),
  };
}

const objectKeyOf = (t: Pick<Tracked, 'group' | 'kind' | 'namespace' | 'name'>) =>
  `${t.group}/${t.kind}/${t.namespace}/${t.name}`;

/**
 * Ordering: events are applied in batch order (the queue keeps one object's events in order), so
 * an object's series show its latest delivered state. Idempotency: re-applying an event leaves the
 * phase series and the phase start as they are; only the change counters count it again.
 */
export function createMetricsSink(config: MetricsSinkConfig, ctx: ComponentContext): Sink {
  const expression = config.phase ?? METRICS_SINK_DEFAULTS.phase;
  const maxSeries = config.maxSeries ?? METRICS_SINK_DEFAULTS.maxSeries;
  const program: CelProgram = compileCel(expression, 'string');
  const s = crStateMetrics(ctx);
  const errors = componentMetrics(ctx.metrics).errors;
  const component = ctx.id;
  const objects = new Map<string, Tracked>();
  const store: StateStore | undefined = ctx.state?.('phases');
  let refusing = false;
  let shutdownPromise: Promise<void> | undefined;

  const phaseLabels = (t: Tracked) => ({
    component,
    group: t.group,
    kind: t.kind,
    namespace: t.namespace,
    name: t.name,
    phase: t.phase,
  });
  const untrack = (key: string) => {
    const t = objects.get(key);
    if (!t) return;
    s.phase.delete(phaseLabels(t));
    s.phaseSeconds.delete(phaseLabels(t));
    objects.delete(key);
    store?.delete(key);
  };
  const track = (t: Tracked) => {
    objects.set(objectKeyOf(t), t);
    s.phase.set(phaseLabels(t), 1);
    s.phaseSeconds.set(phaseLabels(t), 0);
  };
  const counts = () => {
    s.tracked.set({ component }, objects.size);
    if (refusing && objects.size < maxSeries) refusing = false;
    s.limitReached.set({ component }, refusing ? 1 : 0);
  };

  /** The event's phase: a string, null for none, or undefined when the expression failed (keep the last). */
  const phaseOf = (event: CloudEvent): string | null | undefined => {
    try {
      return toStringValue(program.evaluate(celVariables(event)));
    } catch (err) {
      const message = errorMessage(err).split('\n')[0] ?? '';
      // a field the object does not have (yet): no phase
      if (message.startsWith('No such key')) return null;
      errors.inc({ component, code: ErrorCode.Expression });
      ctx.logger.once('warn', `${component}:phase:${message}`, 'phase expression failed; the last phase stays', {
        code: ErrorCode.Expression,
        expression,
        error: message,
        subject: event.subject,
      });
      return undefined;
    }
  };

  const apply = (event: CloudEvent) => {
    const group = String(event.k8sgroup ?? '');
    const kind = String(event.k8skind ?? '');
    const change = changeOf(event.type);
    s.changes.inc({ component, group, kind, change });
    const id = { group, kind, namespace: String(event.k8snamespace ?? ''), name: String(event.k8sname ?? '') };
    const key = objectKeyOf(id);
    if (change === 'deleted') {
      untrack(key);
      return;
    }
    const phase = phaseOf(event);
    if (phase === undefined) return;
    const known = objects.get(key);
    if (phase === null) {
      untrack(key);
      return;
    }
    if (known?.phase === phase) return;
    if (!known && objects.size >= maxSeries) {
      s.untracked.inc({ component });
      if (!refusing)
        ctx.logger.warn(
          'metrics sink: maxSeries objects tracked; further objects get no phase series (raise maxSeries or filter the pipeline)',
          { code: ErrorCode.DeliveryConfig, maxSeries, object: key },
        );
      refusing = true;
      return;
    }
    untrack(key);
    const t = Date.parse(event.time ?? '');
    const since = Number.isFinite(t) ? Math.min(t, Date.now()) : Date.now();
    const entry: Tracked = { ...id, phase, since };
    track(entry);
    store?.set(key, entry);
  };

  ctx.metrics.onCollect(() => {
    const now = Date.now();
    for (const t of objects.values()) s.phaseSeconds.set(phaseLabels(t), Math.max(0, (now - t.since) / 1000));
  });

  return {
    maxBatch: 1000,
    // one map, one store: applied in order
    maxConcurrency: 1,
    async start(signal) {
      if (!store) return;
      await store.load(signal);
      for (const [, v] of store.entries()) {
        const t = v as Tracked;
        if (objects.size >= maxSeries) break;
        if (typeof t?.phase === 'string' && typeof t.since === 'number') track(t);
      }
      counts();
    },
    async send(batch: readonly OutboundEvent[]): Promise<DeliveryResult[]> {
      for (const o of batch) apply(o.event);
      counts();
      try {
        await store?.flush();
      } catch (err) {
        const error = `cannot store the phases (${store?.description}): ${errorMessage(err)}`;
        return batch.map(() => ({ status: 'retryable', error }));
      }
      return batch.map(() => ({ status: 'ok' }));
    },
    shutdown() {
      shutdownPromise ??= Promise.resolve();
      return shutdownPromise;
    },
  };
}

export const metricsSink: SinkFactory<MetricsSinkConfig> = {
  kind: 'sink',
  type: 'metrics',
  description:
    "Exports the watched objects' state as Prometheus series on crbridge's /metrics: crbridge_cr_status_phase, seconds in the phase, changes by kind (docs/metrics.md).",
  configSchema: {
    type: 'object',
    properties: {
      phase: {
        type: 'string',
        minLength: 1,
        default: METRICS_SINK_DEFAULTS.phase,
        description:
          'CEL expression producing the object\'s phase as a string, e.g. `object.status.phase` or `object.status.conditions.exists(c, c.type == "Ready" && c.status == "True") ? "Ready" : "NotReady"`. null, "" or a missing field means no phase (no series).',
      },
      maxSeries: {
        type: 'integer',
        minimum: 1,
        default: METRICS_SINK_DEFAULTS.maxSeries,
        description:
          'Most objects with a phase series. Beyond it new objects get none; a warning is logged once and crbridge_cr_series_limit_reached is 1.',
      },
    },
    required: [],
  },
  check(config) {
    if (typeof config.phase !== 'string') return [];
    const problem = celProblem(config.phase, 'string');
    return problem ? [{ pointer: '/phase', message: problem }] : [];
  },
  create: createMetricsSink,
};
