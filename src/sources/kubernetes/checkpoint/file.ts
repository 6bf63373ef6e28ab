/**
 * The `file` checkpoint backend: a node:sqlite database `checkpoints.sqlite` in the state dir
 * (WAL mode), one row per (source key, uid) holding the last acknowledged object, plus one meta row
 * per source key. Writes are batched: each `flush` is one transaction.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CrbridgeError, ErrorCode, errorMessage } from '../../../errors.ts';
import type { KubeObject } from '../../../events/delta.ts';
import { type CheckpointState, type CheckpointStore, parseConsumers, Staging } from './types.ts';

export const CHECKPOINT_FILE = 'checkpoints.sqlite';

export class FileCheckpointStore implements CheckpointStore {
  readonly description: string;
  private readonly key: string;
  private readonly dir: string;
  private db: DatabaseSync | undefined;
  private readonly staging = new Staging();

  constructor(stateDir: string, key: string) {
    this.dir = stateDir;
    this.key = key;
    this.description = `${join(stateDir, CHECKPOINT_FILE)} [${key}]`;
  }

  private open(): DatabaseSync {
    if (this.db) return this.db;
    try {
      mkdirSync(this.dir, { recursive: true });
      const db = new DatabaseSync(join(this.dir, CHECKPOINT_FILE), { timeout: 5000 });
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = NORMAL');
      db.exec(`CREATE TABLE IF NOT EXISTS checkpoint_entries (
        source_key TEXT NOT NULL, uid TEXT NOT NULL, resource_version TEXT NOT NULL, object TEXT NOT NULL,
        PRIMARY KEY (source_key, uid)) WITHOUT ROWID`);
      db.exec(`CREATE TABLE IF NOT EXISTS checkpoint_meta (
        source_key TEXT PRIMARY KEY, initialized INTEGER NOT NULL, updated_at TEXT NOT NULL)`);
      const cols = db.prepare('PRAGMA table_info(checkpoint_meta)').all() as { name: string }[];
      if (!cols.some((c) => c.name === 'consumers')) db.exec('ALTER TABLE checkpoint_meta ADD COLUMN consumers TEXT'); // JSON array; NULL: written before
      this.db = db;
      return db;
    } catch (err) {
      throw new CrbridgeError(
        ErrorCode.Checkpoint,
        `cannot open checkpoint ${this.description}: ${errorMessage(err)}`,
        {
          dir: this.dir,
        },
      );
    }
  }

  async load(): Promise<CheckpointState> {
    const db = this.open();
    const meta = db.prepare('SELECT initialized, consumers FROM checkpoint_meta WHERE source_key = ?').get(this.key) as
      | { initialized: number; consumers: string | null }
      | undefined;
    const entries = new Map<string, KubeObject>();
    const rows = db.prepare('SELECT uid, object FROM checkpoint_entries WHERE source_key = ?').iterate(this.key);
    for (const row of rows as Iterable<{ uid: string; object: string }>) {
      try {
        entries.set(row.uid, JSON.parse(row.object) as KubeObject);
      } catch {
        // a corrupt row is treated as unknown: the object is then re-announced, never lost
      }
    }
    return { initialized: meta?.initialized === 1, ...parseConsumers(meta?.consumers), entries };
  }

  put(uid: string, object: KubeObject): void {
    this.staging.put(uid, object);
  }
  remove(uid: string): void {
    this.staging.remove(uid);
  }
  markInitialized(consumers?: readonly string[]): void {
    this.staging.markInitialized(consumers);
  }
  get pending(): number {
    return this.staging.pending;
  }

  async flush(): Promise<void> {
    if (this.pending === 0) return;
    const db = this.open();
    const taken = this.staging.take();
    try {
      const upsert = db.prepare(
        'INSERT INTO checkpoint_entries (source_key, uid, resource_version, object) VALUES (?, ?, ?, ?) ' +
          'ON CONFLICT (source_key, uid) DO UPDATE SET resource_version = excluded.resource_version, object = excluded.object',
      );
      const del = db.prepare('DELETE FROM checkpoint_entries WHERE source_key = ? AND uid = ?');
      db.exec('BEGIN IMMEDIATE');
      try {
        for (const [uid, obj] of taken.changes) {
          if (obj === null) del.run(this.key, uid);
          else upsert.run(this.key, uid, obj.metadata.resourceVersion, JSON.stringify(obj));
        }
        if (taken.initialized) {
          db.prepare(
            'INSERT INTO checkpoint_meta (source_key, initialized, updated_at, consumers) VALUES (?, 1, ?, ?) ' +
              'ON CONFLICT (source_key) DO UPDATE SET initialized = 1, updated_at = excluded.updated_at, consumers = excluded.consumers',
          ).run(this.key, new Date().toISOString(), JSON.stringify(taken.initialized));
        }
        db.exec('COMMIT');
      } catch (err) {
        db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      this.staging.restore(taken);
      throw new CrbridgeError(
        ErrorCode.Checkpoint,
        `cannot write checkpoint ${this.description}: ${errorMessage(err)}`,
      );
    }
  }

  async close(): Promise<void> {
    this.db?.close();
    this.db = undefined;
  }
}
