/**
 * Pipeline files for tests, benchmarks and the demo: a pipeline watching Backups
 * (`backups.example.com/v1`, or another group) in the given namespaces, with the given sinks.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BackupsPipeline {
  name: string;
  namespaces: string[];
  /** The sinks as YAML list items indented by four spaces (`    - name: out\n      type: stdout\n`). */
  sinks: string;
  group?: string;
  /** Extra lines under `spec.source`, indented by four spaces. */
  sourceExtra?: string;
  /** Extra lines under `spec` before the sinks (e.g. an `events:` block), indented by two spaces. */
  specExtra?: string;
}

/** A `kafka` sink named `events` with quick retries and a `file` sink named `audit`. */
export function kafkaAndFileSinks(brokers: string, topic: string, file: string): string {
  return `    - name: events
      type: kafka
      brokers: ["${brokers}"]
      topic: ${topic}
      delivery:
        retry:
          initialIntervalMs: 200
          maxIntervalMs: 2000
    - name: audit
      type: file
      path: ${file}
`;
}

/** The YAML text of the pipeline. */
export function backupsPipelineYaml(p: BackupsPipeline): string {
  return `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: ${p.name}
spec:
  source:
    group: ${p.group ?? 'example.com'}
    version: v1
    resource: backups
    namespaces: [${p.namespaces.join(', ')}]
${p.sourceExtra ?? ''}${p.specExtra ?? ''}  sinks:
${p.sinks}`;
}

/** Writes the pipeline to `<dir>/<name>.yaml` and returns the path. */
export function writeBackupsPipeline(dir: string, p: BackupsPipeline): string {
  const file = join(dir, `${p.name}.yaml`);
  writeFileSync(file, backupsPipelineYaml(p));
  return file;
}
