/**
 * The test's own view of what changed in the cluster: `kubectl get --watch --output-watch-events`
 * on a namespace, recorded per object (uid → resourceVersions in order, a delete as `deleted`),
 * so a test compares what crbridge delivered against what the apiserver itself reported.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { loadStackEnv, waitFor } from './stack.ts';
import type { Changes } from './webhook-run.ts';

/** The marker of a delete in a {@link Changes} list (deleted events carry id `<uid>.deleted`). */
export const DELETED = 'deleted';

export class ClusterWatch {
  /** uid → resourceVersions (then `deleted`) in the order the watch reported them. */
  readonly changes: Changes = new Map();
  /** Every event the watch reported. */
  count = 0;
  private readonly child: ChildProcess;
  private buf = '';

  /** Starts watching `resource` (e.g. `backups.example.com`) in `namespace`; call `ready()` before changing anything else. */
  constructor(resource: string, namespace: string) {
    const env = loadStackEnv();
    this.child = spawn(
      join(env.CRBRIDGE_STACK_BIN, 'kubectl'),
      [
        'get',
        resource,
        '-n',
        namespace,
        '--watch',
        '--output-watch-events',
        '-o',
        'jsonpath={.type} {.object.metadata.uid} {.object.metadata.resourceVersion}{"\\n"}',
      ],
      { env: { ...process.env, KUBECONFIG: env.KUBECONFIG }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child.stdout?.setEncoding('utf8').on('data', (d: string) => this.take(d));
  }

  private take(d: string): void {
    this.buf += d;
    let i = this.buf.indexOf('\n');
    while (i >= 0) {
      const [type, uid, rv] = this.buf.slice(0, i).trim().split(' ');
      this.buf = this.buf.slice(i + 1);
      i = this.buf.indexOf('\n');
      if (!type || !uid || !rv) continue;
      this.count++;
      const list = this.changes.get(uid) ?? [];
      this.changes.set(uid, list);
      const change = type === 'DELETED' ? DELETED : rv;
      if (list.at(-1) !== change) list.push(change);
    }
  }

  /**
   * Resolves once kubectl is watching: runs `firstChange` (e.g. creates one object) and waits until
   * the watch reports it (an empty namespace lists nothing, so there is no other sign).
   */
  async ready(firstChange: () => Promise<unknown>, timeoutMs = 30_000): Promise<void> {
    await firstChange();
    await waitFor(() => this.count > 0 || this.child.exitCode !== null, timeoutMs, 'the kubectl watch');
    if (this.child.exitCode !== null) throw new Error(`kubectl watch exited (${this.child.exitCode})`);
  }

  /** Waits until the watch has reported at least `n` events. */
  async until(n: number, timeoutMs = 60_000): Promise<void> {
    await waitFor(() => this.count >= n, timeoutMs, `${n} watch events (have ${this.count})`);
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}
