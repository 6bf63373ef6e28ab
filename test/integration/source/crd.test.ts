/**
 * Resource resolution on the real stack, with a CRD unique to this test (so deleting it disturbs
 * nobody): the source waits for a CRD that does not exist yet, watches a served version that is not
 * the storage version across all namespaces with a label selector, reports the CRD's deletion
 * (its objects' deletes arrive) and resumes when it comes back.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { kubectl, waitFor } from '../../support/stack.ts';
import { adminApi, startSource, uniqueName } from './helpers.ts';

const api = adminApi();
const suffix = uniqueName('w').replace(/[^a-z0-9]/g, '');
const group = `${suffix}.crbridge.test`;
const crdName = `widgets.${group}`;
const crd = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: crdName },
  spec: {
    group,
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
    versions: ['v1', 'v1beta1'].map((name) => ({
      name,
      served: true,
      storage: name === 'v1',
      schema: {
        openAPIV3Schema: {
          type: 'object',
          properties: { spec: { type: 'object', properties: { size: { type: 'integer' } } } },
        },
      },
    })),
  },
};

const createCrd = () => {
  kubectl(['apply', '-f', '-'], { input: JSON.stringify(crd) });
  kubectl(['wait', '--for=condition=Established', '--timeout=60s', `crd/${crdName}`]);
};
const widget = (ns: string, name: string, size: number, tier: string) =>
  api.request('POST', `/apis/${group}/v1/namespaces/${ns}/widgets`, undefined, {
    apiVersion: `${group}/v1`,
    kind: 'Widget',
    metadata: { name, namespace: ns, labels: { tier } },
    spec: { size },
  });

after(() => {
  try {
    kubectl(['delete', 'crd', crdName, '--ignore-not-found', '--wait=false']);
  } catch {}
});

describe('kubernetes source: resource resolution on the real stack', () => {
  test('waits for a missing CRD, watches a non-storage version, survives CRD deletion and re-creation', async () => {
    const ns1 = uniqueName('it-crd-a');
    const ns2 = uniqueName('it-crd-b');
    kubectl(['create', 'namespace', ns1]);
    kubectl(['create', 'namespace', ns2]);
    const s = await startSource({
      group,
      version: 'v1beta1',
      resource: 'widgets',
      namespaces: [],
      labelSelector: 'tier=prod',
    });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(s.source.synced, false, 'not synced while the CRD does not exist');
      assert.equal(
        s.metrics
          .counter('crbridge_component_errors_total', '')
          .get({ component: 'it/source', code: 'CRB_RESOURCE_NOT_FOUND' }),
        1,
      );
      createCrd();
      await widget(ns1, 'w1', 1, 'prod');
      await widget(ns2, 'w2', 2, 'prod');
      await widget(ns2, 'w3', 3, 'dev');
      await waitFor(() => s.source.synced && s.receiver.deltas.length >= 2, 30_000, 'synced with two prod widgets');
      const names = () =>
        s.receiver.deltas.map(
          (d) => `${d.kind} ${d.object.metadata.namespace === ns1 ? 'ns1' : 'ns2'}/${d.object.metadata.name}`,
        );
      assert.deepEqual(names().sort(), ['added ns1/w1', 'added ns2/w2']);
      const first = s.receiver.deltas[0];
      assert.equal(first?.object.apiVersion, `${group}/v1beta1`, 'objects come in the watched version');
      assert.deepEqual(first?.resource, {
        group,
        version: 'v1beta1',
        resource: 'widgets',
        kind: 'Widget',
        namespaced: true,
      });
      // a label change moves w3 into the selector
      await api.request('PATCH', `/apis/${group}/v1beta1/namespaces/${ns2}/widgets/w3`, undefined, {
        metadata: { labels: { tier: 'prod' } },
      });
      await waitFor(() => s.receiver.deltas.length >= 3, 10_000, 'w3 enters the selector');
      assert.equal(names()[2], 'added ns2/w3');
      // the CRD is deleted: its objects' deletes arrive, the loss of the resource is reported
      kubectl(['delete', 'crd', crdName, '--wait=true'], { timeoutMs: 90_000 });
      await waitFor(() => s.receiver.deltas.length >= 6, 30_000, 'deletes of all widgets');
      assert.deepEqual(names().slice(3).sort(), ['deleted ns1/w1', 'deleted ns2/w2', 'deleted ns2/w3']);
      await waitFor(
        () => s.metrics.gauge('crbridge_source_resource_served', '').get({ component: 'it/source' }) === 0,
        30_000,
        'the resource reported as not served',
      );
      // ...and comes back
      createCrd();
      await widget(ns1, 'w4', 4, 'prod');
      await waitFor(() => s.receiver.deltas.length >= 7, 60_000, 'the new widget after re-creation');
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(names().slice(6), ['added ns1/w4']);
      assert.ok(['relist', 'live'].includes(s.receiver.deltas[6]?.reason as string));
    } finally {
      await s.stop();
    }
  });
});
