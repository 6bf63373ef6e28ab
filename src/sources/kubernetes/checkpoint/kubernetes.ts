/**
 * The `kubernetes` checkpoint backend, for Deployments without a volume: the checkpoint lives in
 * ConfigMaps in a given namespace. An index ConfigMap `<name>-<hash>` holds the source key, the
 * bucket count and the `initialized` flag; entries are spread by uid hash over bucket ConfigMaps
 * `<name>-<hash>-<i>`, each a gzip of `{uid: object}` in `binaryData`, kept under ~900 KB (the
 * bucket count doubles when one outgrows it). A flush rewrites only the buckets that changed.
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
import { type CheckpointState, type CheckpointStore, parseConsumers, Staging } from './types.ts';

export interface KubernetesCheckpointOptions {
  namespace: string;
  /** Name prefix of the ConfigMaps. */
  name: string;
  /** The source key the checkpoint belongs to. */
  key: string;
  /** Largest base64 payload of one bucket; default 900 000 bytes. */
  maxBucketBytes?: number;
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

export class KubernetesCheckpointStore implements CheckpointStore {
  readonly description: string;
  private readonly api: KubeApi;
  private readonly o: KubernetesCheckpointOptions;
  private readonly base: string;
  private readonly staging = new Staging();
  private readonly entries = new Map<string, KubeObject>();
  private buckets = 1;
  private initialized = false;
  private consumers: string[] | undefined;
  /** ConfigMap name → last known resourceVersion (absent: does not exist). */
  private readonly versions = new Map<string, string>();
  private loaded = false;

  constructor(api: KubeApi, o: KubernetesCheckpointOptions) {
    this.api = api;
    this.o = o;
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
      const cm = (await this.api.request('GET', this.path(name))) as ConfigMap;
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
  private async write(name: string, content: { data?: Record<string, string>; binaryData?: Record<string, string> }) {
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
          ? await this.api.request('POST', this.path(), undefined, cm)
          : await this.api.request('PUT', this.path(name), undefined, cm)
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

  async load(): Promise<CheckpointState> {
    try {
      this.entries.clear();
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
          for (const [uid, obj] of Object.entries(parsed)) this.entries.set(uid, obj);
        }
      }
      this.loaded = true;
      return {
        initialized: this.initialized,
        ...(this.consumers && { consumers: [...this.consumers] }),
        entries: new Map(this.entries),
      };
    } catch (err) {
      if (err instanceof CrbridgeError) throw err;
      throw new CrbridgeError(ErrorCode.Checkpoint, `cannot read checkpoint ${this.description}: ${errorMessage(err)}`);
    }
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

  private encode(bucket: number, buckets: number): string {
    const obj: Record<string, KubeObject> = {};
    for (const [uid, o] of this.entries) if (bucketOf(uid, buckets) === bucket) obj[uid] = o;
    return gzipSync(Buffer.from(JSON.stringify(obj))).toString('base64');
  }

  async flush(): Promise<void> {
    if (this.pending === 0) return;
    if (!this.loaded) await this.load();
    const taken = this.staging.take();
    const before = new Map<string, KubeObject | undefined>();
    try {
      const dirty = new Set<number>();
      for (const [uid, obj] of taken.changes) {
        before.set(uid, this.entries.get(uid));
        if (obj === null) this.entries.delete(uid);
        else this.entries.set(uid, obj);
        dirty.add(bucketOf(uid, this.buckets));
      }
      const max = this.o.maxBucketBytes ?? 900_000;
      let buckets = this.buckets;
      let encoded = new Map<number, string>();
      for (const b of dirty) encoded.set(b, this.encode(b, buckets));
      while ([...encoded.values()].some((s) => s.length > max)) {
        buckets *= 2;
        encoded = new Map();
        for (let b = 0; b < buckets; b++) encoded.set(b, this.encode(b, buckets));
      }
      for (const [b, payload] of encoded)
        await this.write(`${this.base}-${b}`, { binaryData: { [DATA_KEY]: payload } });
      const init = this.initialized || taken.initialized !== undefined;
      const consumers = taken.initialized ?? this.consumers;
      if (
        buckets !== this.buckets ||
        init !== this.initialized ||
        taken.initialized !== undefined ||
        !this.versions.has(this.base)
      ) {
        await this.write(this.base, {
          data: {
            key: this.o.key,
            buckets: String(buckets),
            initialized: String(init),
            ...(consumers && { consumers: JSON.stringify(consumers) }),
          },
        });
      }
      this.buckets = buckets;
      this.initialized = init;
      this.consumers = consumers;
    } catch (err) {
      for (const [uid, obj] of before) {
        if (obj === undefined) this.entries.delete(uid);
        else this.entries.set(uid, obj);
      }
      this.staging.restore(taken);
      if (err instanceof CrbridgeError) throw err;
      throw new CrbridgeError(
        ErrorCode.Checkpoint,
        `cannot write checkpoint ${this.description}: ${errorMessage(err)}`,
      );
    }
  }

  async close(): Promise<void> {}
}
