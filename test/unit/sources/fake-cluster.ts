/**
 * An in-memory fake of the parts of the Kubernetes API the source uses (discovery, paginated LIST,
 * WATCH with bookmarks and 410, ConfigMap GET/POST/PUT with optimistic concurrency), for unit
 * tests. Every write bumps a global resourceVersion like etcd; `compact(rv)` makes older watches
 * and exact LISTs expire. LIST and WATCH honour `labelSelector` and `fieldSelector` as the
 * kube-apiserver does: an object entering the selection is ADDED, one leaving it is DELETED with
 * its previous content and the resourceVersion of the change; a LIST with
 * `resourceVersionMatch=Exact` reads the objects as they were at that resourceVersion.
 * `forbid` answers 403 like kube-apiserver's RBAC to the verbs it holds.
 */
import type { KubeObject } from '../../../src/events/delta.ts';
import { type KubeApi, KubeHttpError, type Query, type WatchHandle } from '../../../src/sources/kubernetes/client.ts';
import { compileSelection } from '../../../src/sources/kubernetes/selector.ts';

interface Ev {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
  /** The state before (updates and deletes). */
  prev?: KubeObject;
  rv: number;
}

type Inside = (o: KubeObject) => boolean;

function insideOf(q: Query): Inside {
  const s = compileSelection(String(q.labelSelector ?? ''), String(q.fieldSelector ?? ''));
  return (o) => s.matches(o) !== false;
}

/** What a watch with selection `inside` gets for `ev`, or nothing. */
function filtered(ev: Ev, inside: Inside): { type: Ev['type']; object: KubeObject } | undefined {
  const cur = ev.type !== 'DELETED' && inside(ev.object);
  const old = ev.prev !== undefined && inside(ev.prev);
  if (cur && old) return { type: 'MODIFIED', object: ev.object };
  if (cur) return { type: 'ADDED', object: ev.object };
  if (old) {
    const p = ev.prev as KubeObject;
    return { type: 'DELETED', object: { ...p, metadata: { ...p.metadata, resourceVersion: String(ev.rv) } } };
  }
  return undefined;
}

interface Watcher {
  inside: Inside;
  ns: string | null;
  onEvent: (type: string, obj: unknown, bytes?: number) => void;
  onDone: (err: unknown) => void;
  stalled: boolean;
  closed: boolean;
}

export class FakeCluster implements KubeApi {
  rv = 100;
  served = true;
  compactedRv = 0;
  objects = new Map<string, KubeObject>(); // ns/name → object
  events: Ev[] = [];
  watchers = new Set<Watcher>();
  configMaps = new Map<string, Record<string, unknown>>();
  lists = 0;
  watches = 0;
  /** LISTs without `limit`: the source's look-ups of one object by name (the reflector pages). */
  lookups = 0;
  /** Look-ups that fail with HTTP 500 before one succeeds. */
  failLookups = 0;
  /** Every write of a Backup, in order: its key and the object after it (undefined: deleted). */
  private history: { rv: number; key: string; obj: KubeObject | undefined }[] = [];
  /** Query of the most recent WATCH request. */
  lastWatchQuery: Query = {};
  /** Queries of every WATCH request opened, in order. */
  watchQueries: Query[] = [];
  /** WATCH requests that fail with HTTP 500 before one opens. */
  failNewWatches = 0;
  /** LIST requests of a continuation page (not the first page) that fail with HTTP 500 before one succeeds. */
  failContinuePages = 0;
  /** When set, ConfigMap writes never answer (until the request's signal aborts). */
  hangConfigMapWrites = false;
  /** When set, new watches deliver nothing (a stalled proxy). */
  stallNewWatches = false;
  /** Verbs answered with 403 Forbidden (as for a user without RBAC bindings). */
  forbid = new Set<'discovery' | 'list' | 'watch'>();
  /** 403 answers given so far. */
  forbidden = 0;
  private uidSeq = 0;

  private k(ns: string, name: string) {
    return `${ns}/${name}`;
  }

  create(ns: string, name: string, spec: Record<string, unknown> = {}, labels?: Record<string, string>): KubeObject {
    const obj: KubeObject = {
      apiVersion: 'example.com/v1',
      kind: 'Backup',
      metadata: {
        name,
        namespace: ns,
        uid: `uid-${++this.uidSeq}`,
        resourceVersion: String(++this.rv),
        ...(labels && { labels }),
        managedFields: [{ manager: 'test' }],
      },
      spec,
    };
    this.objects.set(this.k(ns, name), obj);
    this.history.push({ rv: this.rv, key: this.k(ns, name), obj });
    this.publish({ type: 'ADDED', object: obj, rv: this.rv });
    return obj;
  }

  update(ns: string, name: string, spec: Record<string, unknown>): KubeObject {
    const old = this.get(ns, name);
    return this.write(old, { ...old, metadata: { ...old.metadata, resourceVersion: String(++this.rv) }, spec });
  }

  /** Replaces the labels (an empty object removes them all). */
  label(ns: string, name: string, labels: Record<string, string>): KubeObject {
    const old = this.get(ns, name);
    return this.write(old, { ...old, metadata: { ...old.metadata, labels, resourceVersion: String(++this.rv) } });
  }

  delete(ns: string, name: string): KubeObject {
    const old = this.get(ns, name);
    this.objects.delete(this.k(ns, name));
    const obj: KubeObject = { ...old, metadata: { ...old.metadata, resourceVersion: String(++this.rv) } };
    this.history.push({ rv: this.rv, key: this.k(ns, name), obj: undefined });
    this.publish({ type: 'DELETED', object: obj, prev: old, rv: this.rv });
    return obj;
  }

  private get(ns: string, name: string): KubeObject {
    const o = this.objects.get(this.k(ns, name));
    if (!o) throw new Error(`no ${ns}/${name}`);
    return o;
  }

  private write(old: KubeObject, obj: KubeObject): KubeObject {
    const key = this.k(obj.metadata.namespace as string, obj.metadata.name);
    this.objects.set(key, obj);
    this.history.push({ rv: this.rv, key, obj });
    this.publish({ type: 'MODIFIED', object: obj, prev: old, rv: this.rv });
    return obj;
  }

  /** Forgets history up to the current revision: watches from older resourceVersions get 410. */
  compact(): void {
    this.compactedRv = this.rv;
    this.events = [];
  }

  /** Closes every open watch cleanly (like a server timeout). */
  closeWatches(): void {
    for (const w of this.watchers) {
      w.closed = true;
      w.onDone(null);
    }
    this.watchers.clear();
  }

  /** Ends every open watch with an error (a connection reset mid-stream). */
  breakWatches(): void {
    for (const w of this.watchers) {
      w.closed = true;
      w.onDone(new Error('injected reset of a watch'));
    }
    this.watchers.clear();
  }

  /** Sends a bookmark at the current revision to every live watch. */
  bookmark(): void {
    for (const w of this.watchers)
      if (!w.stalled) w.onEvent('BOOKMARK', { metadata: { resourceVersion: String(this.rv) } });
  }

  private publish(ev: Ev): void {
    this.events.push(ev);
    for (const w of this.watchers) {
      if (w.stalled || w.closed) continue;
      this.send(w, ev);
    }
  }

  private send(w: Watcher, ev: Ev): void {
    if (w.ns !== null && ev.object.metadata.namespace !== w.ns) return;
    const out = filtered(ev, w.inside);
    if (!out) return;
    const object = structuredClone(out.object);
    w.onEvent(out.type, object, Buffer.byteLength(JSON.stringify({ type: out.type, object })));
  }

  private deny(verb: 'discovery' | 'list' | 'watch', path: string): KubeHttpError {
    this.forbidden++;
    const ns = this.nsOf(path);
    const what =
      verb === 'discovery'
        ? `forbidden: User "crbridge-restricted" cannot get path "${path}"`
        : `backups.example.com is forbidden: User "crbridge-restricted" cannot ${verb} resource "backups" in API group "example.com" ${ns === null ? 'at the cluster scope' : `in the namespace "${ns}"`}`;
    return new KubeHttpError(403, 'Forbidden', `GET ${path}: HTTP 403: ${what}`);
  }

  private nsOf(path: string): string | null {
    const m = /\/namespaces\/([^/]+)\/backups$/.exec(path);
    return m ? (m[1] as string) : null;
  }

  async request(
    method: string,
    path: string,
    query: Query = {},
    body?: unknown,
    signal?: AbortSignal,
  ): Promise<unknown> {
    await Promise.resolve();
    if (this.hangConfigMapWrites && method !== 'GET' && path.includes('/configmaps'))
      return new Promise((_, reject) => {
        // a wedged API server: only the caller's signal ends the request
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
    if (path === '/apis/example.com/v1') {
      if (this.forbid.has('discovery')) throw this.deny('discovery', path);
      if (!this.served) throw new KubeHttpError(404, 'NotFound', 'not found');
      return { resources: [{ name: 'backups', kind: 'Backup', namespaced: true }] };
    }
    if (path.startsWith('/api/v1/namespaces/') && path.includes('/configmaps')) return this.cm(method, path, body);
    if (path.endsWith('/backups')) {
      if (!this.served) throw new KubeHttpError(404, 'NotFound', 'not found');
      if (this.forbid.has('list')) throw this.deny('list', path);
      if (query.limit === undefined) {
        this.lookups++;
        if (this.failLookups > 0) {
          this.failLookups--;
          throw new KubeHttpError(500, 'InternalError', 'injected failure of a look-up');
        }
      } else this.lists++;
      if (query.continue && this.failContinuePages > 0) {
        this.failContinuePages--;
        throw new KubeHttpError(500, 'InternalError', 'injected failure of a continuation page');
      }
      const ns = this.nsOf(path);
      const inside = insideOf(query);
      let objects: Iterable<KubeObject> = this.objects.values();
      if (query.resourceVersionMatch === 'Exact') {
        const at = Number(query.resourceVersion);
        if (at < this.compactedRv) throw new KubeHttpError(410, 'Expired', 'too old resource version');
        const then = new Map<string, KubeObject | undefined>();
        for (const h of this.history) if (h.rv <= at) then.set(h.key, h.obj);
        objects = [...then.values()].filter((o) => o !== undefined);
      }
      const all = [...objects]
        .filter((o) => (ns === null || o.metadata.namespace === ns) && inside(o))
        .sort((a, b) => a.metadata.uid.localeCompare(b.metadata.uid));
      const limit = Number(query.limit ?? all.length) || all.length;
      const start = query.continue ? Number(String(query.continue).split(':')[1]) : 0;
      const listRv = query.continue ? String(query.continue).split(':')[0] : String(this.rv);
      const items = all.slice(start, start + limit).map((o) => structuredClone(o));
      const next = start + limit < all.length ? `${listRv}:${start + limit}` : undefined;
      return { metadata: { resourceVersion: listRv, ...(next && { continue: next }) }, items };
    }
    throw new KubeHttpError(404, 'NotFound', `no route ${path}`);
  }

  private cm(method: string, path: string, body: unknown): unknown {
    const name = path.split('/configmaps')[1]?.replace(/^\//, '') ?? '';
    const input = body as { metadata: { name: string; resourceVersion?: string } } | undefined;
    if (method === 'GET') {
      const cm = this.configMaps.get(name);
      if (!cm) throw new KubeHttpError(404, 'NotFound', 'not found');
      return structuredClone(cm);
    }
    if (method === 'POST' && input) {
      if (this.configMaps.has(input.metadata.name)) throw new KubeHttpError(409, 'AlreadyExists', 'exists');
      const cm = { ...input, metadata: { ...input.metadata, resourceVersion: String(++this.rv) } };
      this.configMaps.set(input.metadata.name, cm);
      return structuredClone(cm);
    }
    if (method === 'PUT' && input) {
      const cur = this.configMaps.get(name) as { metadata: { resourceVersion: string } } | undefined;
      if (!cur) throw new KubeHttpError(404, 'NotFound', 'not found');
      if (cur.metadata.resourceVersion !== input.metadata.resourceVersion)
        throw new KubeHttpError(409, 'Conflict', 'conflict');
      const cm = { ...input, metadata: { ...input.metadata, resourceVersion: String(++this.rv) } };
      this.configMaps.set(name, cm);
      return structuredClone(cm);
    }
    throw new KubeHttpError(405, 'MethodNotAllowed', method);
  }

  async watch(
    path: string,
    query: Query,
    onEvent: (type: string, object: unknown, bytes?: number) => void,
    onDone: (err: unknown) => void,
    onOpen?: () => void,
  ): Promise<WatchHandle> {
    await Promise.resolve();
    if (!this.served) {
      onDone(Object.assign(new Error('Not Found'), { statusCode: 404 }));
      return { abort() {} };
    }
    if (this.forbid.has('watch')) {
      const err = this.deny('watch', path);
      queueMicrotask(() => onDone(err));
      return { abort() {} };
    }
    if (this.failNewWatches > 0) {
      this.failNewWatches--;
      queueMicrotask(() => onDone(new KubeHttpError(500, 'InternalError', 'injected failure of a watch')));
      return { abort() {} };
    }
    this.watches++;
    this.lastWatchQuery = query;
    this.watchQueries.push(query);
    const from = Number(query.resourceVersion ?? 0);
    const w: Watcher = {
      inside: insideOf(query),
      ns: this.nsOf(path),
      onEvent,
      onDone,
      stalled: this.stallNewWatches,
      closed: false,
    };
    if (!w.stalled) onOpen?.(); // a stalled proxy never answers
    if (from < this.compactedRv) {
      queueMicrotask(() => {
        onEvent('ERROR', { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version' });
        onDone(null);
      });
      return { abort() {} };
    }
    this.watchers.add(w);
    if (!w.stalled) for (const ev of this.events) if (ev.rv > from) this.send(w, ev);
    return {
      abort: () => {
        w.closed = true;
        this.watchers.delete(w);
      },
    };
  }
}

/** Hands an event to a watcher with the length of its JSON line, as the real client does. */
