/**
 * Smoke test of the real kube-apiserver + etcd: the Backup CRD is applied with the stack's kubectl and
 * becomes Established; a Backup created in a fresh namespace comes back through a client-node WATCH;
 * the non-admin token user is refused with HTTP 403 (RBAC is really enforced).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApiException, CustomObjectsApi, KubeConfig, Watch } from '@kubernetes/client-node';
import { installBackupCrd, type KubectlError, kubectl, loadStackEnv, waitFor } from '../../support/stack.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const group = 'example.com';
const version = 'v1';
const plural = 'backups';

function kubeConfig(file: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return kc;
}

describe('smoke: kube-apiserver', () => {
  test('the apiserver is the pinned release, built from k8s.io/kubernetes', () => {
    const v = JSON.parse(kubectl(['version', '-o', 'json'])) as { serverVersion: { gitVersion: string } };
    assert.match(v.serverVersion.gitVersion, /^v1\.\d+\.\d+$/);
  });

  test('the Backup CRD becomes Established and a Backup CR comes back through a watch', async () => {
    installBackupCrd();
    const ns = `smoke-kube-${suffix}`;
    kubectl(['create', 'namespace', ns]);

    const kc = kubeConfig(env.KUBECONFIG);
    const seen: { phase: string; name: string; db: string; rv: string }[] = [];
    let watchError: unknown;
    // A just-Established CRD can answer a watch with 429 until its watch cache is ready: retry then.
    const controller = await waitFor(
      async () => {
        let failed: unknown;
        const c = await new Watch(kc).watch(
          `/apis/${group}/${version}/namespaces/${ns}/${plural}`,
          {},
          (phase, obj: { metadata: { name: string; resourceVersion: string }; spec: { databaseName: string } }) => {
            seen.push({ phase, name: obj.metadata.name, db: obj.spec.databaseName, rv: obj.metadata.resourceVersion });
          },
          (err) => {
            failed = err ?? new Error('watch closed');
            watchError = failed;
          },
        );
        if (failed) throw failed;
        return c;
      },
      30_000,
      'an established watch on backups',
      500,
    );
    watchError = undefined;
    try {
      const api = kc.makeApiClient(CustomObjectsApi);
      const created = (await api.createNamespacedCustomObject({
        group,
        version,
        namespace: ns,
        plural,
        body: {
          apiVersion: `${group}/${version}`,
          kind: 'Backup',
          metadata: { name: 'orders', namespace: ns },
          spec: { databaseName: 'orders-db', schedule: '0 3 * * *' },
        },
      })) as { metadata: { resourceVersion: string } };
      kubectl(['-n', ns, 'delete', 'backups.example.com', 'orders', '--wait=true']);

      await waitFor(() => seen.length >= 2 || watchError !== undefined, 20_000, 'ADDED and DELETED from the watch');
      assert.equal(watchError ?? null, null);
      assert.deepEqual(
        seen.map((e) => [e.phase, e.name, e.db]),
        [
          ['ADDED', 'orders', 'orders-db'],
          ['DELETED', 'orders', 'orders-db'],
        ],
      );
      assert.equal(seen[0]?.rv, created.metadata.resourceVersion);
    } finally {
      controller.abort();
    }
  });

  test('the restricted user is refused with 403 listing backups, the admin is not', async () => {
    const restricted = kubeConfig(env.KUBECONFIG_RESTRICTED).makeApiClient(CustomObjectsApi);
    const err = await restricted.listNamespacedCustomObject({ group, version, namespace: 'default', plural }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ApiException, `expected an ApiException, got ${String(err)}`);
    assert.equal(err.code, 403);
    assert.match(String(err.body), /crbridge-restricted/);

    const admin = kubeConfig(env.KUBECONFIG).makeApiClient(CustomObjectsApi);
    const list = (await admin.listNamespacedCustomObject({ group, version, namespace: 'default', plural })) as {
      kind: string;
    };
    assert.equal(list.kind, 'BackupList');

    // kubectl says "no" and exits 1 for the restricted user, "yes" for the admin
    assert.throws(
      () => kubectl(['auth', 'can-i', 'list', 'backups.example.com'], { restricted: true }),
      (e: KubectlError) => e.status === 1 && e.stdout.trim() === 'no',
    );
    assert.equal(kubectl(['auth', 'can-i', 'list', 'backups.example.com']).trim(), 'yes');
  });
});
