/**
 * Credential loading order and errors: explicit path, KUBECONFIG, in-cluster, ~/.kube/config, and
 * a clear CRB_KUBE_AUTH error when nothing works; what each kind of credential adds to a request;
 * the HTTP client (requests, watch streams split into lines) against a plain-HTTP fake server.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { CrbridgeError } from '../../../src/errors.ts';
import { KubeHttpError, kubeApi, LineSplitter, loadKubeConfig } from '../../../src/sources/kubernetes/client.ts';

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
  assert.equal(loadKubeConfig(f).server, 'https://explicit:6443');
  assert.throws(
    () => loadKubeConfig(join(home, 'missing')),
    (e: unknown) => isAuth(e) && /missing/.test(String(e)),
  );
});

test('KUBECONFIG (first existing file of the list), then ~/.kube/config', () => {
  const f = join(home, 'kc2');
  writeFileSync(f, kubeconfig('https://from-env:6443'));
  process.env.KUBECONFIG = `${join(home, 'nope')}:${f}`;
  assert.equal(loadKubeConfig().server, 'https://from-env:6443');
  delete process.env.KUBECONFIG;
  mkdirSync(join(home, '.kube'));
  writeFileSync(join(home, '.kube', 'config'), kubeconfig('https://from-home:6443'));
  assert.equal(loadKubeConfig().server, 'https://from-home:6443');
});

test('nothing available: a clear KubeAuth error', () => {
  assert.throws(
    () => loadKubeConfig(),
    (e: unknown) => isAuth(e) && /no Kubernetes credentials found/.test((e as Error).message),
  );
});

test('kubeconfig credentials: token, token file (relative, trimmed), client certificate, basic auth, TLS options', async () => {
  writeFileSync(join(home, 'tok'), 'from-file\n');
  writeFileSync(join(home, 'ca.crt'), 'CA-PEM');
  const f = join(home, 'kc');
  writeFileSync(
    f,
    `apiVersion: v1
kind: Config
clusters:
- {name: a, cluster: {server: "https://a:6443/", certificate-authority: ca.crt, tls-server-name: api.a, insecure-skip-tls-verify: true}}
- {name: b, cluster: {server: "https://b:6443", certificate-authority-data: ${Buffer.from('CA-B').toString('base64')}}}
users:
- {name: tf, user: {tokenFile: tok, as: someone}}
- {name: cert, user: {client-certificate-data: ${Buffer.from('CERT').toString('base64')}, client-key-data: ${Buffer.from('KEY').toString('base64')}}}
- {name: basic, user: {username: me, password: pw}}
contexts:
- {name: x, context: {cluster: a, user: tf}}
- {name: y, context: {cluster: b, user: cert}}
- {name: z, context: {cluster: b, user: basic}}
current-context: x
`,
  );
  const x = loadKubeConfig(f);
  assert.equal(x.server, 'https://a:6443');
  const o: Record<string, unknown> = {};
  await x.apply(o);
  assert.equal(String(o.ca), 'CA-PEM');
  assert.equal(o.servername, 'api.a');
  assert.equal(o.rejectUnauthorized, false);
  assert.deepEqual(o.headers, { Authorization: 'Bearer from-file', 'Impersonate-User': 'someone' });
  const text = readFileSync(f, 'utf8');
  writeFileSync(f, text.replace('current-context: x', 'current-context: y'));
  const y: Record<string, unknown> = { headers: { accept: 'application/json' } };
  await loadKubeConfig(f).apply(y);
  assert.deepEqual([String(y.ca), String(y.cert), String(y.key)], ['CA-B', 'CERT', 'KEY']);
  assert.deepEqual(y.headers, { accept: 'application/json' });
  assert.equal(y.rejectUnauthorized, undefined);
  writeFileSync(f, text.replace('current-context: x', 'current-context: z'));
  const z: Record<string, unknown> = {};
  await loadKubeConfig(f).apply(z);
  assert.equal(z.auth, 'me:pw');
  writeFileSync(f, text.replace('current-context: x', 'current-context: nope'));
  assert.throws(
    () => loadKubeConfig(f),
    (e: unknown) => isAuth(e) && /no context named "nope"/.test(String(e)),
  );
});

test("an exec plugin is applied by client-node's KubeConfig (imported on the first request)", async () => {
  const f = join(home, 'kc-exec');
  writeFileSync(
    f,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://exec:6443"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/echo, interactiveMode: Never, args: ['{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-exec"}}']}}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  const c = loadKubeConfig(f);
  assert.equal(c.server, 'https://exec:6443');
  const o: { headers?: Record<string, string> } = {};
  await c.apply(o);
  assert.equal(o.headers?.Authorization, 'Bearer from-exec');
});

test('LineSplitter: lines split across chunks, several per chunk, CRLF-free, unterminated last line on flush', () => {
  const got: string[] = [];
  const s = new LineSplitter((l) => got.push(l.toString('utf8')));
  s.push(Buffer.from('{"a":1}\n{"b"'));
  s.push(Buffer.from(':2'));
  s.push(Buffer.from('}\n\n{"c":"é'));
  s.push(Buffer.from('"}\n{"d":4}'));
  assert.deepEqual(got, ['{"a":1}', '{"b":2}', '{"c":"é"}']);
  s.flush();
  assert.deepEqual(got.at(-1), '{"d":4}');
  // a multi-byte character split between chunks is reassembled before decoding
  const bytes = Buffer.from('{"e":"ü"}\n');
  const got2: string[] = [];
  const s2 = new LineSplitter((l) => got2.push(l.toString('utf8')));
  s2.push(bytes.subarray(0, 7));
  s2.push(bytes.subarray(7));
  assert.deepEqual(got2, ['{"e":"ü"}']);
});

/** A plain-HTTP API server on loopback answering with `handler`. */
async function fakeServer(handler: http.RequestListener): Promise<{ url: string; close: () => void }> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

function kubeconfigFor(url: string): string {
  const f = join(home, 'kc-fake');
  writeFileSync(f, kubeconfig(url));
  return f;
}

test('kubeApi.request: JSON answer, query string, bearer token; a Status error becomes KubeHttpError', async () => {
  const seen: { url?: string; auth?: string }[] = [];
  const srv = await fakeServer((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization });
    if (req.url?.startsWith('/missing')) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', reason: 'NotFound', message: 'backups "x" not found' }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ items: [1, 2] }));
  });
  try {
    const api = kubeApi(loadKubeConfig(kubeconfigFor(srv.url)));
    assert.deepEqual(await api.request('GET', '/apis/x', { limit: 5, continue: undefined }), { items: [1, 2] });
    assert.deepEqual(seen[0], { url: '/apis/x?limit=5', auth: 'Bearer t' });
    await assert.rejects(
      api.request('GET', '/missing'),
      (e: unknown) =>
        e instanceof KubeHttpError && e.status === 404 && e.reason === 'NotFound' && /not found/.test(e.message),
    );
  } finally {
    srv.close();
  }
});

test('kubeApi.watch: events in order across chunk boundaries, clean close, HTTP errors, abort', async () => {
  const srv = await fakeServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/gone') {
      res.writeHead(410, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', reason: 'Expired', message: 'too old' }));
      return;
    }
    assert.equal(u.searchParams.get('watch'), 'true');
    assert.equal(u.searchParams.get('resourceVersion'), '7');
    res.writeHead(200, { 'content-type': 'application/json' });
    const body = `${[1, 2, 3].map((i) => JSON.stringify({ type: 'ADDED', object: { n: i, pad: 'x'.repeat(3000) } })).join('\n')}\nnot json\n`;
    res.write(body.slice(0, 100));
    setTimeout(() => {
      res.write(body.slice(100, 4000));
      if (u.pathname === '/forever') return; // stays open
      res.end(body.slice(4000));
    }, 20);
  });
  try {
    const api = kubeApi(loadKubeConfig(kubeconfigFor(srv.url)));
    const events: number[] = [];
    const done = await new Promise<unknown>((resolve) => {
      void api.watch('/w', { resourceVersion: '7' }, (_t, o) => events.push((o as { n: number }).n), resolve);
    });
    assert.equal(done, null);
    assert.deepEqual(events, [1, 2, 3]);
    const err = await new Promise<unknown>((resolve) => {
      void api.watch('/gone', { resourceVersion: '7' }, () => {}, resolve);
    });
    assert.ok(err instanceof KubeHttpError && err.status === 410 && err.reason === 'Expired');
    // abort: no onDone afterwards, no more events
    let doneCalls = 0;
    const got: number[] = [];
    const h = await api.watch(
      '/forever',
      { resourceVersion: '7' },
      (_t, o) => got.push((o as { n: number }).n),
      () => doneCalls++,
    );
    await new Promise((r) => setTimeout(r, 100));
    h.abort();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(doneCalls, 0);
    assert.deepEqual(got, [1]);
  } finally {
    srv.close();
  }
});
