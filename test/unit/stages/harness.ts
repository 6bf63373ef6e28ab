/**
 * A real pipeline runner (event builder, validator, delivery queues, dead letters) with stages
 * built from the registry's factories and fake sinks that record what they got, for the stage
 * tests: one or more named sinks, each of which can be held (its sends wait until released).
 */
import type { ComponentContext, DeliveryResult, StageFactory } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import type { Delta } from '../../../src/events/delta.ts';
import { createEventValidator } from '../../../src/events/validate.ts';
import { PipelineRunner } from '../../../src/runtime/pipeline.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { captureLogger, FakeSink, MemoryDeadLetter } from '../delivery/helpers.ts';

export interface StageHarness {
  /** Pushes a delta; resolves once it is accepted, with its `settled` promise (not awaited). */
  push(d: Delta): Promise<{ settled: Promise<void> }>;
  /** Pushes a delta and waits until it settled. */
  settle(d: Delta): Promise<void>;
  /** What each sink received, by sink name, in order. */
  delivered: Record<string, CloudEvent[]>;
  /** Makes a sink's sends wait until `release()` (or answer at once again). */
  hold(sink: string): () => void;
  deadLetters: MemoryDeadLetter;
  metrics: Metrics;
  logs: Record<string, unknown>[];
  ctx(name: string): ComponentContext;
  close(): Promise<void>;
}

export async function stageHarness(
  stages: { factory: StageFactory; config: Record<string, unknown> }[],
  sinkNames: readonly string[] = ['out'],
): Promise<StageHarness> {
  const metrics = new Metrics();
  const { logger, lines } = captureLogger();
  const deadLetters = new MemoryDeadLetter();
  const delivered: Record<string, CloudEvent[]> = {};
  const gates = new Map<string, Promise<void>>();
  const ctx = (name: string): ComponentContext => ({
    id: `p/${name}`,
    pipeline: 'p',
    logger,
    metrics,
    stateDir: '/nonexistent',
    clusterName: 'prod-eu',
  });
  const sinks = sinkNames.map((name) => {
    delivered[name] = [];
    const sink = new FakeSink(100, async (b) => {
      await gates.get(name);
      for (const o of b) delivered[name]?.push(o.event);
      return b.map((): DeliveryResult => ({ status: 'ok' }));
    });
    const queue = new DeliveryQueue(sink, resolveDeliveryConfig(undefined as never), {
      id: `p/${name}`,
      logger,
      metrics,
      deadLetter: deadLetters,
    });
    return { id: `p/${name}`, queue };
  });
  const runner = new PipelineRunner({
    name: 'p',
    eventOptions: { clusterName: 'prod-eu' },
    validator: createEventValidator(),
    stages: stages.map((s, i) => ({
      id: `p/${s.factory.type}-${i}`,
      stage: s.factory.create(s.config, ctx(`${s.factory.type}-${i}`)),
    })),
    sinks,
    deadLetter: deadLetters,
    logger,
    metrics,
  });
  const ac = new AbortController();
  await runner.start(ac.signal);
  return {
    push(d) {
      return runner.push(d);
    },
    async settle(d) {
      await (await runner.push(d)).settled;
    },
    delivered,
    hold(sink) {
      let release = () => {};
      gates.set(
        sink,
        new Promise<void>((r) => {
          release = r;
        }),
      );
      return () => {
        gates.delete(sink);
        release();
      };
    },
    deadLetters,
    metrics,
    logs: lines,
    ctx,
    async close() {
      for (const name of sinkNames) gates.delete(name);
      await runner.shutdown(Date.now() + 1000);
      ac.abort();
    },
  };
}

export const counter = (m: Metrics, name: string, component: string, extra: Record<string, string> = {}) =>
  m.counter(name, '').get({ component, ...extra });
