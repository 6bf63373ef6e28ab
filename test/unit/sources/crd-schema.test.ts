/**
 * The Kubernetes source's level-3 validator: the CRD read and followed by a Reflector (LIST +
 * WATCH of the CRD collection by field selector, resumed from the last resourceVersion, 410
 * relists), the process's one client through `ctx.shared`, and one validator per CRD and version.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KubeObject } from '../../../src/events/delta.ts';
import { type KubeApi, KubeHttpError, type Query } from '../../../src/sources/kubernetes/client.ts';
import { CRD_COLLECTION, crdSchemaFor, kubernetesObjectSchema } from '../../../src/sources/kubernetes/crd-schema.ts';
import { kubernetesSource } from '../../../src/sources/kubernetes/index.ts';
import { KUBE_CLIENT_KEY } from '../../../src/sources/kubernetes/shared-client.ts';
import { captureLogger, tick } from '../delivery/helpers.ts';

const NAME = 'widgets.example.com';

function crd(max: number, rv: number): KubeObject {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: NAME, uid: 'crd-uid', resourceVersion: String(rv) },
    spec: {
      versions: [
        {
          name: 'v1',
          schema: {
            openAPIV3Schema: {
              type: 'object',
              properties: { spec: { type: 'object', properties: { n: { type: 'integer', maximum: max } } } },
            },
          },
        },
      ],
    },
  } as KubeObject;
}

const widget = (n: number) =>
  ({
    apiVersion: 'example.com/v1',
    kind: 'Widget',
    metadata: { name: 'w', uid: 'u', resourceVersion: '1' },
    spec: { n },
  }) as KubeObject;

/** A fake API server holding at most one CRD (and others not selected), with its LISTs and WATCHes recorded. */
class FakeCrdApi implements KubeApi {
  rv = 10;
  crd: KubeObject | undefined;
  lists: Query[] = [];
  gets: string[] = [];
  failLists = 0;
  watches: {
    query: Query;
    onEvent: (type: string, object: unknown) => void;
    onDone: (err: unknown) => void;
    aborted: boolean;
  }[] = [];

  constructor(crd?: KubeObject) {
    this.crd = crd;
  }

  async request(_method: string, path: string, query: Query = {}): Promise<unknown> {
    await Promise.resolve();
    if (path !== CRD_COLLECTION) {
      this.gets.push(path);
      if (!this.crd) throw new KubeHttpError(404, 'NotFound', `GET ${path}: HTTP 404`);
      return structuredClone(this.crd);
    }
    this.lists.push(query);
    if (this.failLists > 0) {
      this.failLists--;
      throw new KubeHttpError(403, 'Forbidden', `GET ${path}: HTTP 403: cannot list customresourcedefinitions`);
    }
    const other = { ...crd(1, 1), metadata: { name: 'others.example.com', uid: 'x', resourceVersion: '1' } };
    const selected = query.fieldSelector === `metadata.name=${NAME}`;
    const items = [...(this.crd ? [this.crd] : []), ...(selected ? [] : [other])];
    return { metadata: { resourceVersion: String(this.rv) }, items: structuredClone(items) };
  }

  async watch(
    _path: string,
    query: Query,
    onEvent: (type: string, object: unknown) => void,
    onDone: (err: unknown) => void,
    onOpen?: () => void,
  ) {
    const w = { query, onEvent, onDone, aborted: false };
    this.watches.push(w);
    onOpen?.();
    return {
      abort() {
        w.aborted = true;
      },
    };
  }

  get open() {
    return this.watches.filter((w) => !w.aborted);
  }

  /** Writes the CRD (undefined: deletes it) and tells the open watches. */
  set(next: KubeObject | undefined): void {
    this.rv++;
    const type = next ? (this.crd ? 'MODIFIED' : 'ADDED') : 'DELETED';
    const object = next
      ? { ...next, metadata: { ...next.metadata, resourceVersion: String(this.rv) } }
      : {
          ...(this.crd as KubeObject),
          metadata: { ...(this.crd as KubeObject).metadata, resourceVersion: String(this.rv) },
        };
    this.crd = next && object;
    for (const w of this.open) w.onEvent(type, structuredClone(object));
  }
}

function validatorOn(api: FakeCrdApi, watch = {}) {
  const { logger, lines } = captureLogger();
  const v = crdSchemaFor({ group: 'example.com', version: 'v1', resource: 'widgets' }, { logger }, () => api, {
    backoffInitialMs: 10,
    backoffMaxMs: 20,
    ...watch,
  });
  return { v, lines };
}

describe('kubernetes CRD schema (Reflector of the CRD)', () => {
  it('LISTs the CRD by field selector, WATCHes from the list resourceVersion with bookmarks; a change recompiles', async () => {
    const api = new FakeCrdApi(crd(10, 7));
    const { v, lines } = validatorOn(api);
    assert.equal(v.validate(widget(50)), undefined, 'nothing compiled yet: not checked');
    await v.start();
    assert.deepEqual(
      api.lists.map((q) => q.fieldSelector),
      [`metadata.name=${NAME}`],
    );
    assert.deepEqual(api.gets, [], 'no GET beside the LIST');
    assert.deepEqual(v.validate(widget(50)), ['/spec/n must be <= 10']);
    await tick(5);
    assert.equal(api.watches.length, 1);
    assert.equal(api.watches[0]?.query.resourceVersion, '10', 'resumes from the LIST');
    assert.equal(api.watches[0]?.query.allowWatchBookmarks, true);
    assert.equal(api.watches[0]?.query.fieldSelector, `metadata.name=${NAME}`);

    api.set(crd(100, 0));
    await tick(5);
    assert.deepEqual(v.validate(widget(50)), [], 'recompiled with the new schema');
    assert.equal(v.resourceVersion, '11');
    assert.ok(lines.some((l) => l.msg === 'CRD schema compiled for level-3 validation' && l.resourceVersion === '11'));
    v.stop();
    assert.equal(api.watches[0]?.aborted, true, 'stop ends the watch');
  });

  it('a watch closed by the server resumes from the last resourceVersion; a 410 relists and catches up', async () => {
    const api = new FakeCrdApi(crd(10, 7));
    const { v } = validatorOn(api);
    await v.start();
    await tick(5);
    api.set(crd(20, 0)); // rv 11
    await tick(5);
    api.watches[0]?.onDone(null);
    await tick(5);
    assert.equal(api.watches.length, 2);
    assert.equal(api.watches[1]?.query.resourceVersion, '11', 'resumed, not relisted');
    assert.equal(api.lists.length, 1);
    // a change made while the watch cannot resume: the relist brings it
    api.crd = { ...crd(30, 0), metadata: { ...crd(30, 0).metadata, resourceVersion: '12' } };
    api.rv = 12;
    api.watches[1]?.onEvent('ERROR', { code: 410, reason: 'Expired', message: 'too old resource version' });
    await tick(20);
    assert.equal(api.lists.length, 2, 'relisted after 410');
    assert.equal(v.resourceVersion, '12');
    assert.deepEqual(v.validate(widget(25)), []);
    assert.deepEqual(v.validate(widget(35)), ['/spec/n must be <= 30']);
    v.stop();
  });

  it('a missing CRD is logged once and skips level 3; the CRD created later loads; a deletion keeps the last schema', async () => {
    const api = new FakeCrdApi();
    const { v, lines } = validatorOn(api);
    await v.start();
    assert.equal(v.validate(widget(50)), undefined);
    const warns = lines.filter((l) => String(l.msg).startsWith('cannot read the CRD schema'));
    assert.equal(warns.length, 1);
    assert.match(String(warns[0]?.error), /CustomResourceDefinition widgets\.example\.com not found/);
    await tick(5);
    api.set(crd(10, 0));
    await tick(5);
    assert.deepEqual(v.validate(widget(50)), ['/spec/n must be <= 10'], 'created later: loaded');
    api.set(undefined);
    await tick(5);
    assert.deepEqual(v.validate(widget(50)), ['/spec/n must be <= 10'], 'deleted: the last schema stays');
    v.stop();
  });

  it('a first LIST that fails does not hold start; the retry loads', async () => {
    const api = new FakeCrdApi(crd(10, 7));
    api.failLists = 1;
    const { v, lines } = validatorOn(api);
    await v.start();
    assert.equal(v.validate(widget(50)), undefined, 'nothing yet');
    assert.ok(lines.some((l) => l.level === 'error' && String(l.msg).includes('customresourcedefinitions')));
    await tick(50);
    assert.equal(api.lists.length, 2);
    assert.deepEqual(v.validate(widget(50)), ['/spec/n must be <= 10']);
    v.stop();
  });

  it('credentials that cannot be loaded yet do not hold start; loading them is retried with backoff', async () => {
    const api = new FakeCrdApi(crd(10, 7));
    let calls = 0;
    const { logger, lines } = captureLogger();
    const v = crdSchemaFor(
      { group: 'example.com', version: 'v1', resource: 'widgets' },
      { logger },
      () => {
        calls++;
        if (calls === 1) throw new Error('cannot load kubeconfig /x (explicit path): ENOENT');
        return api;
      },
      { backoffInitialMs: 10, backoffMaxMs: 20 },
    );
    const started = Date.now();
    await v.start();
    assert.ok(Date.now() - started < 500, 'start did not wait for the retry');
    assert.equal(v.validate(widget(50)), undefined);
    assert.ok(lines.some((l) => String(l.error).includes('cannot load kubeconfig /x')));
    await tick(60);
    assert.ok(calls >= 2);
    assert.deepEqual(v.validate(widget(50)), ['/spec/n must be <= 10'], 'loaded once the client could be made');
    v.stop();
  });

  it('one validator per CRD and version per process, and one client, through ctx.shared', async () => {
    const memo = new Map<string, unknown>();
    const made: string[] = [];
    const shared = <T>(key: string, make: () => T): T => {
      if (!memo.has(key)) {
        made.push(key);
        memo.set(key, key === KUBE_CLIENT_KEY ? new FakeCrdApi(crd(10, 7)) : make());
      }
      return memo.get(key) as T;
    };
    const { logger } = captureLogger();
    const ctx = { logger, shared, settings: { kubeconfig: '/nonexistent/kubeconfig' } };
    const a = kubernetesSource.objectSchema?.(
      { group: 'example.com', version: 'v1', resource: 'widgets', namespaces: ['a'] },
      ctx,
    );
    const b = kubernetesObjectSchema(
      { group: 'example.com', version: 'v1', resource: 'widgets', namespaces: ['b'] } as never,
      ctx,
    );
    const c = kubernetesObjectSchema({ group: 'example.com', version: 'v2', resource: 'widgets' }, ctx);
    assert.ok(a);
    assert.equal(a, b, 'same CRD and version: the same validator');
    assert.notEqual(a, c);
    assert.deepEqual(made, [
      'kubernetes:crd-schema:widgets.example.com/v1',
      'kubernetes:crd-schema:widgets.example.com/v2',
    ]);
    await a.start();
    await c.start();
    assert.deepEqual(v1(a), ['/spec/n must be <= 10']);
    assert.equal(made.filter((k) => k === KUBE_CLIENT_KEY).length, 1, 'one client for both');
    a.stop();
    c.stop();
    function v1(x: typeof a) {
      return x?.validate(widget(50));
    }
  });
});
