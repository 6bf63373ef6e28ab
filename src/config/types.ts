/**
 * The validated shape of a pipeline file (`apiVersion: crbridge.io/v1alpha1`, `kind: Pipeline`).
 * Component blocks stay loosely typed here; each factory's configSchema is their contract.
 */

export const PIPELINE_API_VERSION = 'crbridge.io/v1alpha1';

export interface SinkConfig {
  name: string;
  type: string;
  delivery?: Record<string, unknown>;
  [k: string]: unknown;
}

export interface StageConfig {
  name?: string;
  type: string;
  [k: string]: unknown;
}

export interface SourceConfig {
  type?: string;
  [k: string]: unknown;
}

export interface EventsConfig {
  typePrefix?: string;
  phasePath?: string;
  redact?: string[];
  maxBytes?: number;
  /** The CloudEvents distributed-tracing extension (`traceparent`) pointing at each object's lifecycle trace. */
  traceContext?: { enabled?: boolean; perGeneration?: boolean; sampleRatio?: number };
}

/** Optional validation beyond the envelope and data checks that always run. */
export interface ValidationConfig {
  /** Level 3: check each event's object against the watched CRD's openAPIV3Schema. */
  crdSchema?: boolean;
}

/** Where a pipeline's dead letters go: a JSON-lines file (`path`) or any sink (`sink`); not both. */
export interface DeadLetterConfig {
  path?: string;
  /** A sink block without `name` or `delivery`: its `type` and that sink's own config. */
  sink?: { type: string; [k: string]: unknown };
}

export interface PipelineConfig {
  apiVersion: typeof PIPELINE_API_VERSION;
  kind: 'Pipeline';
  metadata: { name: string; labels?: Record<string, string> };
  spec: {
    source: SourceConfig;
    stages: StageConfig[];
    sinks: SinkConfig[];
    events?: EventsConfig;
    validation?: ValidationConfig;
    deadLetter?: DeadLetterConfig;
  };
}

/** A pipeline with where it came from, for error messages. */
export interface LoadedPipeline {
  file: string;
  /** Index of the YAML document within the file. */
  document: number;
  config: PipelineConfig;
}
