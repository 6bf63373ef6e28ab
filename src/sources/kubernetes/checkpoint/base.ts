/**
 * What both checkpoint backends share: staging of acknowledged changes, the form an entry is
 * stored in (masked with the pipelines' `events.redact`, reduced to its identity and metadata
 * when larger than the per-entry bound) and the flush protocol (take what is staged, write it
 * atomically, put it back when the write fails). A backend implements only `load`, `write` and
 * `close`, and turns what it reads back into objects with {@link EntryCodec.decode}.
 */
import { CrbridgeError, ErrorCode, errorMessage } from '../../../errors.ts';
import { type KubeObject, STORED, type StoredState } from '../../../events/delta.ts';
import { compileRedaction, redact } from '../../../events/redact.ts';
import type { CheckpointState, CheckpointStore } from './types.ts';

/** Default largest stored entry (UTF-8 JSON bytes): well under a ConfigMap bucket, small in SQLite. */
export const DEFAULT_MAX_ENTRY_BYTES = 256 * 1024;

/** Top-level key that marks a reduced entry in its stored JSON; {@link EntryCodec.decode} removes it. */
export const PARTIAL_KEY = 'crbridge.io/partial';

export interface EntryOptions {
  /**
   * JSON pointers (`*` matches any key or index) whose values are masked before anything is
   * stored, exactly as the event builder masks them (kubectl's last-applied annotation included
   * whenever the list is not empty).
   */
  redact?: readonly string[];
  /** Largest UTF-8 JSON size of one stored entry; a larger object is stored reduced. */
  maxEntryBytes?: number;
}

/** One staged change as a backend writes it: the stored form and its JSON, or null for a removal. */
export interface StoredEntry {
  object: KubeObject;
  json: string;
}

/**
 * What one flush writes: every change taken from staging, and — when `markInitialized` was staged —
 * the consumers to record as initialized (the backend then sets `initialized` and stores the list).
 */
export interface Batch {
  changes: ReadonlyMap<string, StoredEntry | null>;
  initialized: readonly string[] | undefined;
  /** Aborts the write's requests (the shutdown deadline): the batch then stays staged. */
  signal?: AbortSignal;
}

/** kubectl apply's copy of every applied field (see `LAST_APPLIED_POINTER` of the redaction). */
const LAST_APPLIED_KEY = 'kubectl.kubernetes.io/last-applied-configuration';

const IDENTITY = [
  'name',
  'namespace',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
];

function pick(m: KubeObject['metadata'], keys: readonly string[]): KubeObject['metadata'] {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (m[k] !== undefined) out[k] = m[k];
  return out as KubeObject['metadata'];
}

/**
 * The stored form of an (already redacted) object: the object itself when its JSON fits in
 * `maxBytes`, else the first that fits of — its metadata without managedFields and kubectl's
 * last-applied copy; its identity (name, namespace, uid, resourceVersion, generation, timestamps)
 * with labels; its identity alone — with apiVersion, kind and {@link PARTIAL_KEY}. The identity
 * is all the resume diff needs (it compares resourceVersions); the rest serves filters and routes
 * of a delete found on resume, which carries this last known state.
 */
export function reduceEntry(obj: KubeObject, maxBytes: number): StoredEntry {
  if (obj[STORED]?.partial) {
    // a reduced entry read back and put again stays marked as reduced
    const object: KubeObject = { ...obj, [PARTIAL_KEY]: true };
    return { object, json: JSON.stringify(object) };
  }
  const json = JSON.stringify(obj);
  if (Buffer.byteLength(json) <= maxBytes) return { object: obj, json };
  const m = obj.metadata;
  const metadata: KubeObject['metadata'] = { ...m };
  delete metadata.managedFields;
  if (m.annotations && LAST_APPLIED_KEY in m.annotations) {
    const { [LAST_APPLIED_KEY]: _, ...rest } = m.annotations;
    metadata.annotations = rest;
  }
  const candidates: KubeObject['metadata'][] = [
    metadata,
    pick(m, m.labels ? [...IDENTITY, 'labels'] : IDENTITY),
    pick(m, IDENTITY),
  ];
  let out: StoredEntry | undefined;
  for (const md of candidates) {
    const object: KubeObject = { apiVersion: obj.apiVersion, kind: obj.kind, metadata: md, [PARTIAL_KEY]: true };
    out = { object, json: JSON.stringify(object) };
    if (Buffer.byteLength(out.json) <= maxBytes) break;
  }
  return out as StoredEntry;
}

/** Encodes objects into their stored form and decodes what a backend read back. */
export class EntryCodec {
  private readonly pointers: string[][];
  private readonly maxBytes: number;
  private readonly full: StoredState;
  private readonly partial: StoredState;

  constructor(o: EntryOptions = {}) {
    const redacted = Object.freeze([...(o.redact ?? [])]);
    this.pointers = compileRedaction(redacted);
    this.maxBytes = o.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES;
    this.full = Object.freeze({ redacted, partial: false });
    this.partial = Object.freeze({ redacted, partial: true });
  }

  /** The stored form of `obj`: redacted, then reduced if too large. `obj` is never modified. */
  encode(obj: KubeObject): StoredEntry {
    const masked = this.pointers.length > 0 ? redact(obj, this.pointers).object : obj;
    return reduceEntry(masked, this.maxBytes);
  }

  /**
   * The object handed to the source for an entry read back: marked {@link STORED} (how it was
   * stored), without {@link PARTIAL_KEY}. `stored` itself is left as stored (the ConfigMap backend
   * keeps it to rewrite its bucket) but for the non-enumerable mark.
   */
  decode(stored: KubeObject): KubeObject {
    let obj = stored;
    const partial = stored[PARTIAL_KEY] === true;
    if (partial) {
      const { [PARTIAL_KEY]: _, ...rest } = stored;
      obj = rest as KubeObject;
    }
    Object.defineProperty(obj, STORED, { value: partial ? this.partial : this.full, configurable: true });
    return obj;
  }
}

/**
 * The staging and flush protocol of every backend. Ordering and durability: `put`/`remove`/
 * `markInitialized` only stage (the latest change per uid wins); `flush` takes everything staged,
 * encodes it and hands it to `write`, which must write it atomically as far as a later `load`
 * sees; when `write` throws, what was taken is staged again (unless a newer change was staged
 * meanwhile) and the next flush retries it. Flushes run one at a time, in call order.
 */
export abstract class StagedCheckpointStore implements CheckpointStore {
  abstract readonly description: string;
  protected readonly codec: EntryCodec;
  private staged = new Map<string, KubeObject | null>();
  private stagedInitialized: string[] | undefined;
  private flushing: Promise<void> | undefined;

  protected constructor(o: EntryOptions) {
    this.codec = new EntryCodec(o);
  }

  abstract load(): Promise<CheckpointState>;
  /** Writes one batch: all of it, or — when it throws — nothing a later `load` would see. */
  protected abstract write(batch: Batch): Promise<void>;
  abstract close(): Promise<void>;

  put(uid: string, object: KubeObject): void {
    this.staged.set(uid, object);
  }
  remove(uid: string): void {
    this.staged.set(uid, null);
  }
  markInitialized(consumers: readonly string[] = []): void {
    this.stagedInitialized = [...consumers].sort();
  }
  get pending(): number {
    return this.staged.size + (this.stagedInitialized ? 1 : 0);
  }

  flush(signal?: AbortSignal): Promise<void> {
    const prev = this.flushing;
    // with none running, what is staged is taken right away (changes staged after this call go to the next)
    const p = prev ? prev.then(noop, noop).then(() => this.flushNow(signal)) : this.flushNow(signal);
    this.flushing = p;
    const clear = () => {
      if (this.flushing === p) this.flushing = undefined;
    };
    p.then(clear, clear);
    return p;
  }

  private async flushNow(signal?: AbortSignal): Promise<void> {
    if (this.pending === 0) return;
    const taken = this.staged;
    const initialized = this.stagedInitialized;
    this.staged = new Map();
    this.stagedInitialized = undefined;
    try {
      const changes = new Map<string, StoredEntry | null>();
      for (const [uid, obj] of taken) changes.set(uid, obj === null ? null : this.codec.encode(obj));
      await this.write({ changes, initialized, ...(signal && { signal }) });
    } catch (err) {
      for (const [uid, v] of taken) if (!this.staged.has(uid)) this.staged.set(uid, v);
      this.stagedInitialized ??= initialized;
      if (err instanceof CrbridgeError) throw err;
      throw new CrbridgeError(
        ErrorCode.Checkpoint,
        `cannot write checkpoint ${this.description}: ${errorMessage(err)}`,
      );
    }
  }
}

function noop(): void {}
