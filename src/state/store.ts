/**
 * Component state that must survive a restart (and, with a cluster backend, a leader change):
 * Slack thread ids per object, open trace spans per lifecycle. A small key → JSON value map per
 * component, staged in memory and written durably by `flush`. The runtime hands each component a
 * `ctx.state(name)` opener; where the bytes live (a file under `--state-dir`, or a backend the CLI
 * wires in) is not the component's business.
 */

import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/**
 * One component's durable map.
 *
 * Ordering: `set`/`delete` apply to the in-memory view at once (`get` sees them); `flush` writes
 * every change staged before the call and resolves once they are durably stored. Concurrent
 * flushes are serialized; a flush that fails keeps the changes staged for the next one.
 * Idempotency: `load` may be called more than once; each call replaces the in-memory view with
 * what is stored (discarding staged changes). Values must be JSON-serializable and hold no secrets.
 */
export interface StateStore {
  /** Human-readable location, for logs and errors. */
  readonly description: string;
  /** Reads what is stored. Call before the first `get`. */
  load(signal?: AbortSignal): Promise<void>;
  get<T = unknown>(key: string): T | undefined;
  /** Every stored or staged entry. */
  entries(): IterableIterator<[string, unknown]>;
  set(key: string, value: unknown): void;
  delete(key: string): void;
  /** Writes staged changes durably; a no-op when nothing changed. */
  flush(signal?: AbortSignal): Promise<void>;
}

/** Opens the store named `name` of the component `componentId` (`<pipeline>/<component>`). */
export type StateOpener = (componentId: string, name: string) => StateStore;

/** Where a file store keeps `<componentId>/<name>`. */
export function stateFilePath(stateDir: string, componentId: string, name: string): string {
  const parts = componentId.split('/').map((p) => encodeURIComponent(p));
  return join(stateDir, 'state', ...parts, `${encodeURIComponent(name)}.json`);
}

/**
 * What every backend shares: the in-memory view, staging, and flushes run one at a time (a failed
 * one keeps its changes staged). A backend reads in `load` (handing the entries to `replace`) and
 * writes a snapshot of every entry in `persist`.
 */
export abstract class StagedStateStore implements StateStore {
  abstract readonly description: string;
  private map = new Map<string, unknown>();
  private dirty = false;
  private writing: Promise<void> = Promise.resolve();

  abstract load(signal?: AbortSignal): Promise<void>;

  /** Stores `entries` (every entry, not a delta) durably; throws to keep them staged. */
  protected abstract persist(entries: Record<string, unknown>, signal?: AbortSignal): Promise<void>;

  /** Replaces the in-memory view with what `load` read (staged changes are dropped). */
  protected replace(entries: Record<string, unknown>): void {
    this.map = new Map(Object.entries(entries));
    this.dirty = false;
  }

  /** Number of entries in the view. */
  protected get size(): number {
    return this.map.size;
  }

  get<T = unknown>(key: string): T | undefined {
    return this.map.get(key) as T | undefined;
  }

  entries(): IterableIterator<[string, unknown]> {
    return this.map.entries();
  }

  set(key: string, value: unknown): void {
    this.map.set(key, value);
    this.dirty = true;
  }

  delete(key: string): void {
    if (this.map.delete(key)) this.dirty = true;
  }

  flush(signal?: AbortSignal): Promise<void> {
    const next = this.writing.then(() => this.write(signal));
    this.writing = next.catch(() => {});
    return next;
  }

  private async write(signal?: AbortSignal): Promise<void> {
    if (!this.dirty) return;
    signal?.throwIfAborted();
    // changes made while this write runs set `dirty` again and go with the next flush
    this.dirty = false;
    try {
      await this.persist(Object.fromEntries(this.map), signal);
    } catch (err) {
      this.dirty = true;
      throw err;
    }
  }
}

/** A store in one JSON file, replaced atomically (write to a temporary file, fsync, rename). */
export class FileStateStore extends StagedStateStore {
  readonly description: string;
  private readonly path: string;

  constructor(path: string) {
    super();
    this.path = path;
    this.description = path;
  }

  async load(signal?: AbortSignal): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, { encoding: 'utf8', signal });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.replace({});
        return;
      }
      throw err;
    }
    const parsed = JSON.parse(text) as { entries?: Record<string, unknown> };
    this.replace(parsed.entries ?? {});
  }

  protected async persist(entries: Record<string, unknown>): Promise<void> {
    const body = JSON.stringify({ version: 1, entries });
    const tmp = `${this.path}.tmp`;
    await mkdir(dirname(this.path), { recursive: true });
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(body);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.path);
  }
}

/** The default opener: one file per store under `<stateDir>/state/`. */
export function fileStateOpener(stateDir: string): StateOpener {
  return (componentId, name) => new FileStateStore(stateFilePath(stateDir, componentId, name));
}
