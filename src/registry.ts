/**
 * The explicit list of every component crbridge ships. Adding a sink means one folder under
 * `src/sinks/` and one line here.
 */
import type { AnyFactory, SinkFactory, SourceFactory, StageFactory } from './component.ts';
import { fileSink } from './sinks/file/index.ts';
import { kafkaSink } from './sinks/kafka/index.ts';
import { metricsSink } from './sinks/metrics/index.ts';
import { otlpTracesSink } from './sinks/otlp-traces/index.ts';
import { slackSink } from './sinks/slack/index.ts';
import { stdoutSink } from './sinks/stdout/index.ts';
import { webhookSink } from './sinks/webhook/index.ts';
import { kubernetesSource } from './sources/kubernetes/index.ts';
import { dedupeStage } from './stages/dedupe/index.ts';
import { enrichStage } from './stages/enrich/index.ts';
import { filterStage } from './stages/filter/index.ts';
import { routeStage } from './stages/route/index.ts';
import { transformStage } from './stages/transform/index.ts';

export interface Registry {
  /** The first source is the default when a pipeline's source names no `type`. */
  sources: readonly SourceFactory[];
  stages: readonly StageFactory[];
  sinks: readonly SinkFactory[];
}

export const registry: Registry = {
  sources: [kubernetesSource],
  stages: [filterStage, enrichStage, transformStage, dedupeStage, routeStage],
  sinks: [kafkaSink, fileSink, stdoutSink, webhookSink, slackSink, metricsSink, otlpTracesSink],
};

export function allFactories(r: Registry = registry): AnyFactory[] {
  return [...r.sources, ...r.stages, ...r.sinks];
}
