/**
 * The `kubernetes` checkpoint backend, for Deployments without a volume: the checkpoint lives in
 * ConfigMaps in a given namespace. An index ConfigMap `<name>-<hash>` holds the source key, the
 * bucket count and the `initialized` flag; entries (the stored form of `base.ts`: redacted, and
 * reduced when larger than a per-entry bound of at most half a bucket) are spread by uid hash over
 * bucket ConfigMaps `<name>-<hash>-<i>`, each a gzip of `{uid: object}` in `binaryData`, kept under
 * `maxBucketBytes` (~900 KB): the bucket count doubles when one outgrows it, up to `maxBuckets`;
 * beyond, the flush fails with a CRB_CHECKPOINT error saying what to do. A flush rewrites only the
 * buckets that changed.
 *
 * A flush is several writes, so it is ordered to lose nothing when interrupted: buckets, then the
 * index; when the count grows, first the new buckets, then the index, then the old buckets. A
 * reader takes each entry only from the bucket its uid belongs to under the index's count, so a
 * leftover copy in an old bucket (an interrupted growth) is ignored, and such buckets are
 * rewritten by the next flush.
 *
 * Every write is a PUT carrying the resourceVersion last read or written (optimistic concurrency):
 * a conflict means another writer touched the checkpoint; the flush fails (nothing is lost: the
 * staged changes stay staged), the error is reported, and the next flush re-reads and retries.
 */
import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { CrbridgeError, ErrorCode, errorMessage } from '../../../errors.ts';
import type { KubeObject } from '../../../events/delta.ts';
import { type KubeApi, KubeHttpError } from '../client.ts';
import { type Batch, DEFAULT_MAX_ENTRY_BYTES, type EntryOptions, StagedCheckpointStore } from './base.ts';
import { type CheckpointState, parseConsumers } from './types.ts';

export const DEFAULT_MAX_BUCKET_BYTES = 900_000;
/** 128 buckets of ~900 KB: ~115 MB of etcd, far beyond the checkpoint of 100,000 typical objects. */
export const DEFAULT_MAX_BUCKETS = 128;

export interface KubernetesCheckpointOptions extends EntryOptions {
  namespace: string;
  /** Name prefix of the ConfigMaps. */
  name: string;
  /** The source key the checkpoint belongs to. */
  key: string;
  /** Largest base64 payload of one bucket; default 900 000 bytes. */
  maxBucketBytes?: number;
  /** Most bucket ConfigMaps (a power of two); a checkpoint that needs more fails to flush. Default 128. */
  maxBuckets?: number;
}

interface ConfigMap {
  apiVersion: 'v1';
  kind: 'ConfigMap';
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

const DATA_KEY = 'entries.json.gz';

/** FNV-1a of a uid: the bucket spread. */
function bucketOf(uid: string, buckets: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < uid.length; i++) {
    h ^= uid.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % buckets;
}

export class KubernetesCheckpointStore extends StagedCheckpointStore {
  readonly description: string;
  private readonly api: KubeApi;
  private readonly o: KubernetesCheckpointOptions;
  private readonly base: string;
  private readonly maxBucketBytes: number;
  private readonly maxBuckets: number;
  /** uid → stored form of each entry: what the buckets hold once the current flush is written. */
  private readonly entries = new Map<string, KubeObject>();
  /** Bucket count of the index ConfigMap (entries are placed by it). */
  private buckets = 1;
  private initialized = false;
  private consumers: readonly string[] | undefined;
  /** The signal of the write in progress: every request of a flush takes it. */
  private signal: AbortSignal | undefined;
  /** Buckets holding leftovers of an interrupted growth: rewritten by the next flush. */
  private readonly stale = new Set<number>();
  /** ConfigMap name → last known resourceVersion (absent: does not exist). */
  private readonly versions = new Map<string, string>();
  private loaded = false;

  constructor(api: KubeApi, o: KubernetesCheckpointOptions) {
    const maxBucketBytes = o.maxBucketBytes ?? DEFAULT_MAX_BUCKET_BYTES;
    // any entry fits in a bucket of its own: gzip+base64 of n bytes is at most ~4n/3 + a few
    super({
      ...o,
      maxEntryBytes: Math.min(o.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES, Math.floor(maxBucketBytes / 2)),
    });
    this.api = api;
    this.o = o;
    this.maxBucketBytes = maxBucketBytes;
    this.maxBuckets = o.maxBuckets ?? DEFAULT_MAX_BUCKETS;
    const hash = createHash('sha256').update(o.key).digest('hex').slice(0, 10);
    this.base = `${o.name}-${hash}`;
    this.description = `configmaps ${o.namespace}/${this.base}*`;
  }

  private path(name?: string): string {
    const coll = `/api/v1/namespaces/${this.o.namespace}/configmaps`;
    return name ? `${coll}/${name}` : coll;
  }

  private async get(name: string): Promise<ConfigMap | undefined> {
    try {
      const cm = (await this.api.request('GET', this.path(name), undefined, undefined, this.signal)) as ConfigMap;
      if (cm.metadata.resourceVersion) this.versions.set(name, cm.metadata.resourceVersion);
      return cm;
    } catch (err) {
      if (err instanceof KubeHttpError && err.status === 404) {
        this.versions.delete(name);
        return undefined;
      }
      throw err;
    }
  }

  /** Creates or replaces (with the known resourceVersion) one ConfigMap. */
  private async put1(name: string, content: { data?: Record<string, string>; binaryData?: Record<string, string> }) {
    const rv = this.versions.get(name);
    const cm: ConfigMap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name,
        namespace: this.o.namespace,
        labels: { 'app.kubernetes.io/managed-by': 'crbridge', 'crbridge.io/checkpoint': this.base },
        ...(rv !== undefined && { resourceVersion: rv }),
      },
      ...content,
    };
    try {
      const out = (
        rv === undefined
          ? await this.api.request('POST', this.path(), undefined, cm, this.signal)
          : await this.api.request('PUT', this.path(name), undefined, cm, this.signal)
      ) as ConfigMap;
      if (out?.metadata?.resourceVersion) this.versions.set(name, out.metadata.resourceVersion);
    } catch (err) {
      if (err instanceof KubeHttpError && (err.status === 409 || err.status === 404)) {
        // someone else wrote or deleted it: learn its current version so the next flush can proceed
        await this.get(name).catch(() => undefined);
        throw new CrbridgeError(
          ErrorCode.Checkpoint,
          `checkpoint ConfigMap ${this.o.namespace}/${name} was changed by another writer (HTTP ${err.status}); is a second crbridge running without leader election?`,
        );
      }
      throw err;
    }
  }

  private writeBucket(b: number, payload: string): Promise<void> {
    return this.put1(`${this.base}-${b}`, { binaryData: { [DATA_KEY]: payload } });
  }

  private writeIndex(buckets: number, initialized: boolean, consumers = this.consumers): Promise<void> {
    return this.put1(this.base, {
      data: {
        key: this.o.key,
        buckets: String(buckets),
        initialized: String(initialized),
        ...(consumers && { consumers: JSON.stringify(consumers) }),
      },
    });
  }

  async load(): Promise<CheckpointState> {
    try {
      this.entries.clear();
      this.stale.clear();
      this.buckets = 1;
      this.initialized = false;
      this.consumers = undefined;
      const out = new Map<string, KubeObject>();
      const index = await this.get(this.base);
      if (index) {
        if (index.data?.key !== undefined && index.data.key !== this.o.key) {
          throw new CrbridgeError(ErrorCode.Checkpoint, `checkpoint ${this.description} belongs to another source key`);
        }
        this.buckets = Math.max(1, Number(index.data?.buckets ?? '1') || 1);
        this.initialized = index.data?.initialized === 'true';
        this.consumers = parseConsumers(index.data?.consumers).consumers;
        for (let i = 0; i < this.buckets; i++) {
          const cm = await this.get(`${this.base}-${i}`);
          const b64 = cm?.binaryData?.[DATA_KEY];
          if (!b64) continue;
          const parsed = JSON.parse(gunzipSync(Buffer.from(b64, 'base64')).toString('utf8')) as Record<
            string,
            KubeObject
          >;
          for (const [uid, obj] of Object.entries(parsed)) {
            // a copy outside its bucket is a leftover of an interrupted growth: its own bucket has the current one
            if (bucketOf(uid, this.buckets) !== i) {
              this.stale.add(i);
              continue;
            }
            this.entries.set(uid, obj);
            out.set(uid, this.codec.decode(obj));
          }
        }
        // buckets beyond the count, left by an interrupted growth, are not read; only their versions
        // are learnt, so that the next growth replaces them instead of failing on them
        for (let i = this.buckets; i < 2 * this.maxBuckets; i++) if (!(await this.get(`${this.base}-${i}`))) break;
      }
      this.loaded = true;
      return {
        initialized: this.initialized,
        ...(this.consumers && { consumers: [...this.consumers] }),
        entries: out,
      };
    } catch (err) {
      if (err instanceof CrbridgeError) throw err;
      throw new CrbridgeError(ErrorCode.Checkpoint, `cannot read checkpoint ${this.description}: ${errorMessage(err)}`);
    }
  }

  /** gzip+base64 payload of each of `which` buckets under `buckets`, in one pass over the entries. */
  private encode(which: Iterable<number>, buckets: number): Map<number, string> {
    const groups = new Map<number, Record<string, KubeObject>>();
    for (const b of which) groups.set(b, {});
    for (const [uid, o] of this.entries) {
      const g = groups.get(bucketOf(uid, buckets));
      if (g) g[uid] = o;
    }
    const out = new Map<number, string>();
    for (const [b, g] of groups) out.set(b, gzipSync(Buffer.from(JSON.stringify(g))).toString('base64'));
    return out;
  }

  protected async write(batch: Batch): Promise<void> {
    this.signal = batch.signal;
    try {
      await this.writeBatch(batch);
    } finally {
      this.signal = undefined;
    }
  }

  private async writeBatch(batch: Batch): Promise<void> {
    if (!this.loaded) await this.load();
    const before = new Map<string, KubeObject | undefined>();
    const dirty = new Set(this.stale);
    for (const [uid, e] of batch.changes) {
      before.set(uid, this.entries.get(uid));
      if (e === null) this.entries.delete(uid);
      else this.entries.set(uid, e.object);
      dirty.add(bucketOf(uid, this.buckets));
    }
    try {
      const old = this.buckets;
      let buckets = old;
      let encoded = this.encode(dirty, buckets);
      while (largest(encoded) > this.maxBucketBytes) {
        if (buckets * 2 > this.maxBuckets) throw this.tooLarge(largest(encoded));
        buckets *= 2;
        encoded = this.encode(range(buckets), buckets);
      }
      if (buckets > old) {
        for (let b = old; b < buckets; b++) await this.writeBucket(b, encoded.get(b) as string);
        await this.writeIndex(buckets, this.initialized);
        this.buckets = buckets;
        for (let b = 0; b < old; b++) this.stale.add(b);
      }
      for (const [b, payload] of encoded) {
        if (buckets > old && b >= old) continue; // written before the index
        await this.writeBucket(b, payload);
        this.stale.delete(b);
      }
      const init = this.initialized || batch.initialized !== undefined;
      if (init !== this.initialized || batch.initialized !== undefined || !this.versions.has(this.base)) {
        const consumers = batch.initialized ?? this.consumers;
        await this.writeIndex(buckets, init, consumers);
        this.initialized = init;
        this.consumers = consumers;
      }
    } catch (err) {
      for (const [uid, obj] of before) {
        if (obj === undefined) this.entries.delete(uid);
        else this.entries.set(uid, obj);
      }
      throw err;
    }
  }

  private tooLarge(bucketBytes: number): CrbridgeError {
    const names = `${this.base} and ${this.base}-0 … ${this.base}-${this.maxBuckets - 1}`;
    return new CrbridgeError(
      ErrorCode.Checkpoint,
      `checkpoint ${this.description} does not fit in ${this.maxBuckets} ConfigMaps of ${this.maxBucketBytes} bytes ` +
        `(${this.entries.size} objects; ConfigMaps ${names} in namespace ${this.o.namespace}): ` +
        'use checkpoint.backend "file" with a persistent volume for the state dir, or watch fewer objects ' +
        '(namespaces, labelSelector) or keep less of each (dropFields)',
      {
        namespace: this.o.namespace,
        configMaps: names,
        objects: this.entries.size,
        maxBuckets: this.maxBuckets,
        bucketBytes,
      },
    );
  }

  async close(): Promise<void> {}
}

function largest(encoded: Map<number, string>): number {
  let n = 0;
  for (const s of encoded.values()) n = Math.max(n, s.length);
  return n;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
