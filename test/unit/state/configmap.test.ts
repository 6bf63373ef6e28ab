/**
 * The ConfigMap backend of component state (`--state-backend kubernetes`) against a fake
 * ConfigMap API with resourceVersions: a store written by one process is read by the next (a new
 * leader), one ConfigMap per component and store, a store over its bound fails with CRB_STATE and
 * keeps its changes staged, and a conflicting writer fails one flush but not the next.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ErrorCode } from '../../../src/errors.ts';
import { KubeHttpError } from '../../../src/sources/kubernetes/client.ts';
import { configMapStateOpener, stateConfigMapName } from '../../../src/sources/kubernetes/state-configmap.ts';

interface Cm {
  metadata: { name: string; resourceVersion?: string };
  data?: Record<string, string>;
}

class FakeConfigMaps {
  readonly objects = new Map<string, Cm>();
  rv = 1;
  async request(method: string, path: string, _q?: unknown, body?: unknown): Promise<unknown> {
    const m = /^\/api\/v1\/namespaces\/ns\/configmaps(?:\/([^/]+))?$/.exec(path);
    assert.ok(m, `unexpected path ${path}`);
    const b = body as Cm | undefined;
    if (method === 'GET') {
      const o = this.objects.get(m[1] as string);
      if (!o) throw new KubeHttpError(404, 'NotFound', 'not found');
      return structuredClone(o);
    }
    const name = (m[1] ?? b?.metadata.name) as string;
    const cur = this.objects.get(name);
    if (method === 'POST' && cur) throw new KubeHttpError(409, 'AlreadyExists', 'exists');
    if (method === 'PUT' && (!cur || cur.metadata.resourceVersion !== b?.metadata.resourceVersion))
      throw new KubeHttpError(cur ? 409 : 404, 'Conflict', 'conflict');
    const stored = { ...structuredClone(b as Cm), metadata: { name, resourceVersion: String(++this.rv) } };
    this.objects.set(name, stored);
    return structuredClone(stored);
  }
}

describe('ConfigMap state store', () => {
  test('what one process flushed the next one loads; one ConfigMap per component and store', async () => {
    const api = new FakeConfigMaps();
    const open = configMapStateOpener(api, 'ns');
    const a = open('p/slack', 'threads');
    await a.load();
    a.set('uid-1', { ts: '1.2' });
    a.set('uid-2', { ts: '3.4' });
    await a.flush();
    a.delete('uid-2');
    await a.flush();
    const other = open('p/otlp', 'threads');
    await other.load();
    other.set('x', 1);
    await other.flush();
    assert.equal(api.objects.size, 2);
    assert.match(stateConfigMapName('p/slack', 'threads'), /^crbridge-state-[0-9a-f]{16}$/);
    assert.notEqual(stateConfigMapName('p/slack', 'threads'), stateConfigMapName('p/otlp', 'threads'));

    const next = configMapStateOpener(api, 'ns')('p/slack', 'threads');
    await next.load();
    assert.deepEqual([...next.entries()], [['uid-1', { ts: '1.2' }]]);
    const cm = api.objects.get(stateConfigMapName('p/slack', 'threads'));
    assert.equal(cm?.data?.component, 'p/slack');
    assert.equal(cm?.data?.store, 'threads');
  });

  test('a store over its bound fails with CRB_STATE naming it; its changes stay staged', async () => {
    const api = new FakeConfigMaps();
    const s = configMapStateOpener(api, 'ns', 100)('p/slack', 'threads');
    await s.load();
    s.set('big', 'x'.repeat(200));
    await assert.rejects(s.flush(), (e: { code?: string; message: string }) => {
      assert.equal(e.code, ErrorCode.State);
      assert.match(e.message, /state "threads" of p\/slack.*more than a ConfigMap can keep \(100\)/);
      return true;
    });
    assert.equal(api.objects.size, 0);
    s.set('big', 'small');
    await s.flush();
    assert.equal(api.objects.size, 1, 'the staged change is written once it fits');
  });

  test('another writer fails one flush (CRB_STATE); the next flush writes this view', async () => {
    const api = new FakeConfigMaps();
    const open = configMapStateOpener(api, 'ns');
    const a = open('p/s', 'st');
    await a.load();
    a.set('k', 'a1');
    await a.flush();
    const b = open('p/s', 'st');
    await b.load();
    b.set('k', 'b1');
    await b.flush();
    a.set('k', 'a2');
    await assert.rejects(a.flush(), /changed by another writer/);
    await a.flush();
    const c = open('p/s', 'st');
    await c.load();
    assert.equal(c.get('k'), 'a2');
  });

  test('a ConfigMap of another store under the same name is refused on load', async () => {
    const api = new FakeConfigMaps();
    const name = stateConfigMapName('p/s', 'st');
    api.objects.set(name, { metadata: { name, resourceVersion: '1' }, data: { component: 'q/x', store: 'y' } });
    await assert.rejects(configMapStateOpener(api, 'ns')('p/s', 'st').load(), /belongs to state "y" of q\/x/);
  });
});
