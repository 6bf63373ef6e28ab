/**
 * Component state (`ctx.state`, `src/state/store.ts`) in ConfigMaps, so Slack threads and trace
 * state survive a leader change (`--state-backend kubernetes`): one ConfigMap per store,
 * `crbridge-state-<hash of component id and store name>` in the state namespace, holding the
 * component id, the store name and the entries as JSON. A store is bounded (`maxBytes`, 900 KB by
 * default, under the API server's 1 MiB object limit): a flush that would exceed it fails with a
 * CRB_STATE error naming the store and what to do, and keeps its changes staged.
 *
 * Every write is a PUT with the resourceVersion last read or written: a 409 means another writer
 * (a previous leader still flushing) wrote meanwhile; the flush fails, its changes stay staged, the
 * current version is learnt, and the next flush writes this process's view over it.
 */
import { createHash } from 'node:crypto';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import { StagedStateStore, type StateOpener } from '../../state/store.ts';
import { type KubeApi, KubeHttpError } from './client.ts';

export const DEFAULT_STATE_MAX_BYTES = 900_000;
const DATA_KEY = 'entries.json';

interface ConfigMap {
  apiVersion: 'v1';
  kind: 'ConfigMap';
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
}

export interface ConfigMapStateOptions {
  api: Pick<KubeApi, 'request'>;
  namespace: string;
  componentId: string;
  name: string;
  /** Largest JSON of the entries; default 900 000 bytes. */
  maxBytes?: number;
}

/** The ConfigMap name of a store: `crbridge-state-<first 16 hex of sha256(componentId NUL name)>`. */
export function stateConfigMapName(componentId: string, name: string): string {
  return `crbridge-state-${createHash('sha256').update(`${componentId}\0${name}`).digest('hex').slice(0, 16)}`;
}

export class ConfigMapStateStore extends StagedStateStore {
  readonly description: string;
  private readonly o: ConfigMapStateOptions;
  private readonly cm: string;
  private version: string | undefined;

  constructor(o: ConfigMapStateOptions) {
    super();
    this.o = o;
    this.cm = stateConfigMapName(o.componentId, o.name);
    this.description = `configmap ${o.namespace}/${this.cm} (state "${o.name}" of ${o.componentId})`;
  }

  private path(name?: string): string {
    const coll = `/api/v1/namespaces/${this.o.namespace}/configmaps`;
    return name ? `${coll}/${name}` : coll;
  }

  private fail(what: string, err: unknown): CrbridgeError {
    return new CrbridgeError(ErrorCode.State, `cannot ${what} ${this.description}: ${errorMessage(err)}`, {
      namespace: this.o.namespace,
      configMap: this.cm,
    });
  }

  async load(signal?: AbortSignal): Promise<void> {
    let cm: ConfigMap | undefined;
    try {
      cm = (await this.o.api.request('GET', this.path(this.cm), undefined, undefined, signal)) as ConfigMap;
    } catch (err) {
      if (!(err instanceof KubeHttpError && err.status === 404)) throw this.fail('read', err);
    }
    this.version = cm?.metadata.resourceVersion;
    const data = cm?.data ?? {};
    if (cm && (data.component !== this.o.componentId || data.store !== this.o.name))
      throw new CrbridgeError(
        ErrorCode.State,
        `${this.description}: the ConfigMap belongs to state "${data.store}" of ${data.component}; delete it or use another --state-namespace`,
      );
    let entries: Record<string, unknown> = {};
    try {
      entries = data[DATA_KEY] ? (JSON.parse(data[DATA_KEY]) as Record<string, unknown>) : {};
    } catch (err) {
      throw this.fail('parse', err);
    }
    this.replace(entries);
  }

  protected async persist(entries: Record<string, unknown>, signal?: AbortSignal): Promise<void> {
    const json = JSON.stringify(entries);
    const max = this.o.maxBytes ?? DEFAULT_STATE_MAX_BYTES;
    const bytes = Buffer.byteLength(json);
    if (bytes > max)
      throw new CrbridgeError(
        ErrorCode.State,
        `${this.description} holds ${bytes} bytes (${this.size} entries), more than a ConfigMap can keep (${max}); the changes stay unsaved: keep less state in it (fewer or smaller entries, e.g. remove entries of finished objects) or use --state-backend file with a persistent --state-dir`,
        { namespace: this.o.namespace, configMap: this.cm, bytes, maxBytes: max },
      );
    const cm: ConfigMap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: this.cm,
        namespace: this.o.namespace,
        labels: { 'app.kubernetes.io/managed-by': 'crbridge', 'crbridge.io/state': 'true' },
        ...(this.version !== undefined && { resourceVersion: this.version }),
      },
      data: { component: this.o.componentId, store: this.o.name, [DATA_KEY]: json },
    };
    try {
      const out = (
        this.version === undefined
          ? await this.o.api.request('POST', this.path(), undefined, cm, signal)
          : await this.o.api.request('PUT', this.path(this.cm), undefined, cm, signal)
      ) as ConfigMap | undefined;
      this.version = out?.metadata?.resourceVersion;
    } catch (err) {
      if (err instanceof KubeHttpError && (err.status === 409 || err.status === 404)) {
        // another writer: learn its version, so that the next flush writes this view over it
        await this.o.api
          .request('GET', this.path(this.cm), undefined, undefined, signal)
          .then((c) => {
            this.version = (c as ConfigMap).metadata.resourceVersion;
          })
          .catch((e: unknown) => {
            if (e instanceof KubeHttpError && e.status === 404) this.version = undefined;
          });
        throw new CrbridgeError(
          ErrorCode.State,
          `${this.description} was changed by another writer (HTTP ${err.status}); is a second crbridge running without leader election? The next flush writes this process's state`,
        );
      }
      throw this.fail('write', err);
    }
  }
}

/** `--state-backend kubernetes`: every store a ConfigMap in `namespace`. */
export function configMapStateOpener(api: Pick<KubeApi, 'request'>, namespace: string, maxBytes?: number): StateOpener {
  return (componentId, name) =>
    new ConfigMapStateStore({ api, namespace, componentId, name, ...(maxBytes !== undefined && { maxBytes }) });
}
