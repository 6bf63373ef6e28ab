/**
 * Credential loading order and errors: explicit path, KUBECONFIG, in-cluster, ~/.kube/config, and
 * a clear CRB_KUBE_AUTH error when nothing works.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { CrbridgeError } from '../../../src/errors.ts';
import { loadKubeConfig } from '../../../src/sources/kubernetes/client.ts';

const kubeconfig = (server: string) => `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "${server}"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`;

const saved = { ...process.env };
let home: string;
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), 'crbridge-home-'));
  process.env.HOME = home;
  delete process.env.KUBECONFIG;
  delete process.env.KUBERNETES_SERVICE_HOST;
});
afterEach(() => {
  for (const k of ['HOME', 'KUBECONFIG', 'KUBERNETES_SERVICE_HOST']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

const isAuth = (e: unknown) => e instanceof CrbridgeError && e.code === 'CRB_KUBE_AUTH';

test('explicit path wins; a broken explicit path is a KubeAuth error naming the file', () => {
  const f = join(home, 'kc');
  writeFileSync(f, kubeconfig('https://explicit:6443'));
  process.env.KUBECONFIG = join(home, 'other');
  assert.equal(loadKubeConfig(f).getCurrentCluster()?.server, 'https://explicit:6443');
  assert.throws(
    () => loadKubeConfig(join(home, 'missing')),
    (e: unknown) => isAuth(e) && /missing/.test(String(e)),
  );
});

test('KUBECONFIG (first existing file of the list), then ~/.kube/config', () => {
  const f = join(home, 'kc2');
  writeFileSync(f, kubeconfig('https://from-env:6443'));
  process.env.KUBECONFIG = `${join(home, 'nope')}:${f}`;
  assert.equal(loadKubeConfig().getCurrentCluster()?.server, 'https://from-env:6443');
  delete process.env.KUBECONFIG;
  mkdirSync(join(home, '.kube'));
  writeFileSync(join(home, '.kube', 'config'), kubeconfig('https://from-home:6443'));
  assert.equal(loadKubeConfig().getCurrentCluster()?.server, 'https://from-home:6443');
});

test('nothing available: a clear KubeAuth error', () => {
  assert.throws(
    () => loadKubeConfig(),
    (e: unknown) => isAuth(e) && /no Kubernetes credentials found/.test((e as Error).message),
  );
});
