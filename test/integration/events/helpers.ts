import { after, before } from 'node:test';
import type { KubeObject } from '../../../src/events/delta.ts';
import type { RunningCrbridge } from '../../support/crbridge.ts';
import { installBackupCrd, kubectl } from '../../support/stack.ts';

export { fileEvents, type KafkaSeen, publishedSchemas, readTopic } from '../../support/events.ts';

/**
 * kubectl create of a JSON object. Not `apply`: its last-applied-configuration annotation would
 * repeat every field (a redacted one included) in the object.
 */
export function create(obj: unknown): void {
  kubectl(['create', '-f', '-'], { input: JSON.stringify(obj) });
}

/** A merge patch of a namespaced object (of its status subresource when `status`); returns the object. */
export function patch(resource: string, ns: string, name: string, body: unknown, status = false): KubeObjectJson {
  return JSON.parse(
    kubectl([
      '-n',
      ns,
      'patch',
      resource,
      name,
      ...(status ? ['--subresource=status'] : []),
      '--type=merge',
      '-p',
      JSON.stringify(body),
      '-o',
      'json',
    ]),
  ) as KubeObjectJson;
}

/** An object as kubectl prints it (`-o json`). */
export type KubeObjectJson = KubeObject;

export function getObject(resource: string, ns: string, name: string): KubeObjectJson {
  return JSON.parse(kubectl(['-n', ns, 'get', resource, name, '-o', 'json'])) as KubeObjectJson;
}

/** crbridge's JSON log records (stderr) so far. */
export function logs(proc: RunningCrbridge): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of proc.stderr().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {}
  }
  return out;
}

/** Value of one Prometheus sample on crbridge's /metrics, or 0. */
export async function metric(port: number, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const parts = inner.split(',');
    if (want.every((w) => parts.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

/** Before the file's tests: the Backup CRD installed and Established, and `ns` created; after: `ns` deleted. */
export function withBackupNamespace(ns: string): void {
  before(() => {
    installBackupCrd();
    kubectl(['create', 'namespace', ns]);
  });
  after(() => {
    try {
      kubectl(['delete', 'namespace', ns, '--wait=false']);
    } catch {}
  });
}
