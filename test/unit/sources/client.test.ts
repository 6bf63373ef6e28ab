/**
 * Credential loading order and errors: explicit path, KUBECONFIG (all files merged as kubectl
 * does), in-cluster (always HTTPS, its CA required, its token rotating), ~/.kube/config, and a
 * clear CRB_KUBE_AUTH error when nothing works; what each kind of credential adds to a request;
 * the HTTP client (requests, watch streams split into lines) against a plain-HTTP fake server; TLS
 * with a client certificate and the proxy (`proxy-url`, the proxy environment) against a TLS fake
 * server behind a local CONNECT proxy.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, before, beforeEach, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { CrbridgeError } from '../../../src/errors.ts';
import {
  inClusterCredentials,
  KubeHttpError,
  kubeApi,
  LineSplitter,
  loadKubeConfig,
} from '../../../src/sources/kubernetes/client.ts';

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

test('KUBECONFIG: all files merged as kubectl does (first file wins per name and for current-context; later files add entries)', async () => {
  const d1 = join(home, 'one');
  const d2 = join(home, 'two');
  mkdirSync(d1);
  mkdirSync(d2);
  writeFileSync(join(d2, 'tok'), 'from-two-file\n');
  const f1 = join(d1, 'config');
  const f2 = join(d2, 'config');
  // file 1: the current context and its cluster, but not its user
  writeFileSync(
    f1,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://one:6443"}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  // file 2: another current-context, the same names with other content (ignored), and the user (added;
  // its relative token file resolved against file 2's directory)
  writeFileSync(
    f2,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://two:6443"}}, {name: c2, cluster: {server: "https://two-b:6443"}}]
users: [{name: u, user: {tokenFile: tok}}]
contexts: [{name: x, context: {cluster: c2, user: u}}, {name: y, context: {cluster: c2, user: u}}]
current-context: y
`,
  );
  process.env.KUBECONFIG = `${f1}:${join(home, 'missing')}:${f2}`;
  const merged = loadKubeConfig();
  assert.equal(merged.server, 'https://one:6443', "file 1's current-context, context x and cluster c win");
  const o: { headers?: Record<string, string> } = {};
  await merged.apply(o);
  assert.equal(o.headers?.Authorization, 'Bearer from-two-file', 'the user comes from file 2');
  // the other order: file 2 wins everything it names
  process.env.KUBECONFIG = `${f2}:${f1}`;
  assert.equal(loadKubeConfig().server, 'https://two-b:6443');
  // no current-context in the first file: the next file's applies
  writeFileSync(f1, readFileSync(f1, 'utf8').replace('current-context: x\n', ''));
  process.env.KUBECONFIG = `${f1}:${f2}`;
  assert.equal(loadKubeConfig().server, 'https://two-b:6443');
  // an explicit path takes only that file: without file 2 the user is unknown (no credentials)
  writeFileSync(f1, `${readFileSync(f1, 'utf8')}current-context: x\n`);
  const only = loadKubeConfig(f1);
  assert.equal(only.server, 'https://one:6443');
  const p: { headers?: Record<string, string> } = {};
  await only.apply(p);
  assert.equal(p.headers?.Authorization, undefined);
  // a broken file of the list is an error naming that file
  writeFileSync(f2, '- not a mapping');
  process.env.KUBECONFIG = `${f1}:${f2}`;
  assert.throws(
    () => loadKubeConfig(),
    (e: unknown) => isAuth(e) && (e as Error).message.includes(f2) && /KUBECONFIG/.test((e as Error).message),
  );
});

/** A service-account directory with a token and (unless `ca` is false) a CA. */
function serviceAccount(ca = true): string {
  const dir = mkdtempSync(join(tmpdir(), 'crbridge-sa-'));
  writeFileSync(join(dir, 'token'), 'sa-token-1\n');
  if (ca) writeFileSync(join(dir, 'ca.crt'), 'SA-CA');
  return dir;
}

test('in-cluster: HTTPS whatever the port (the token is never sent in clear), the service-account CA, IPv6 hosts', async () => {
  const dir = serviceAccount();
  for (const port of ['80', '8080', '8001', '443', '6443']) {
    const c = inClusterCredentials({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: port }, dir);
    assert.equal(c.server, `https://10.96.0.1:${port}`);
  }
  assert.equal(
    inClusterCredentials({ KUBERNETES_SERVICE_HOST: 'fd00::1' }, dir).server,
    'https://[fd00::1]:443',
    'port 443 by default; IPv6 in brackets',
  );
  const c = loadKubeConfig(undefined, {
    env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '80', HOME: home },
    serviceAccountDir: dir,
  });
  assert.equal(c.server, 'https://10.96.0.1:80');
  const o: https.RequestOptions & { headers?: Record<string, string> } = {};
  await c.apply(o);
  assert.equal(String(o.ca), 'SA-CA');
  assert.equal(o.headers?.Authorization, 'Bearer sa-token-1');
});

test('in-cluster: a missing service-account CA is a KubeAuth error naming the file, not a fallback to public roots', () => {
  const dir = serviceAccount(false);
  const ca = join(dir, 'ca.crt');
  const named = (e: unknown) => isAuth(e) && (e as Error).message.includes(ca) && /missing/.test((e as Error).message);
  assert.throws(() => inClusterCredentials({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }, dir), named);
  assert.throws(
    () =>
      loadKubeConfig(undefined, { env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', HOME: home }, serviceAccountDir: dir }),
    named,
  );
});

test('in-cluster: the rotated token is read again after a minute, and at once after a refresh (a 401)', async (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  const dir = serviceAccount();
  const c = inClusterCredentials({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }, dir);
  const token = async () => {
    const o: { headers?: Record<string, string> } = {};
    await c.apply(o);
    return o.headers?.Authorization;
  };
  assert.equal(await token(), 'Bearer sa-token-1');
  writeFileSync(join(dir, 'token'), 'sa-token-2\n');
  t.mock.timers.tick(59_000);
  assert.equal(await token(), 'Bearer sa-token-1', 'cached within the minute');
  t.mock.timers.tick(1_000);
  assert.equal(await token(), 'Bearer sa-token-2', 're-read after a minute');
  writeFileSync(join(dir, 'token'), 'sa-token-3\n');
  assert.equal(await token(), 'Bearer sa-token-2');
  c.refresh?.();
  assert.equal(await token(), 'Bearer sa-token-3', 're-read at once after refresh');
});

test('kubeApi: a 401 makes the next request read a rotated token file again (no minute of failures)', async () => {
  writeFileSync(join(home, 'tok'), 'old\n');
  const seen: (string | undefined)[] = [];
  const srv = await fakeServer((req, res) => {
    seen.push(req.headers.authorization);
    const ok = req.headers.authorization === 'Bearer new';
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(JSON.stringify(ok ? { ok: true } : { kind: 'Status', reason: 'Unauthorized', message: 'Unauthorized' }));
  });
  try {
    const f = join(home, 'kc-tf');
    writeFileSync(f, kubeconfig(srv.url).replace('{token: t}', '{tokenFile: tok}'));
    const api = kubeApi(loadKubeConfig(f), { env: {} });
    await assert.rejects(api.request('GET', '/x'), (e: unknown) => e instanceof KubeHttpError && e.status === 401);
    writeFileSync(join(home, 'tok'), 'new\n');
    assert.deepEqual(await api.request('GET', '/x'), { ok: true });
    assert.deepEqual(seen, ['Bearer old', 'Bearer new']);
  } finally {
    srv.close();
  }
});

// TLS, client certificates and proxies, against a TLS fake API server with a private CA

const pki = mkdtempSync(join(tmpdir(), 'crb-kube-pki-'));
const pf = (n: string) => join(pki, n);
function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}
before(() => {
  openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', pf('ca.key'), '-out', pf('ca.crt')].concat([
      '-days',
      '2',
      '-subj',
      '/CN=crbridge test CA',
    ]),
  );
  for (const [name, cn, ext] of [
    ['server', 'kube.test', 'subjectAltName=DNS:kube.test\nextendedKeyUsage=serverAuth\n'],
    ['client', 'crbridge', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    writeFileSync(pf(`${name}.ext`), ext);
    openssl([
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      pf(`${name}.key`),
      '-out',
      pf(`${name}.csr`),
      '-subj',
      `/CN=${cn}`,
    ]);
    openssl(
      ['x509', '-req', '-in', pf(`${name}.csr`), '-CA', pf('ca.crt'), '-CAkey', pf('ca.key'), '-CAcreateserial'].concat(
        ['-out', pf(`${name}.crt`), '-days', '2', '-extfile', pf(`${name}.ext`)],
      ),
    );
  }
});

/**
 * A TLS API server requiring a client certificate of the test CA (it records the client's CN) and a
 * CONNECT proxy that tunnels any host to it (so `kube.test` needs no DNS), recording each CONNECT.
 */
async function tlsServerBehindProxy() {
  const clients: string[] = [];
  const tunnels: string[] = [];
  const api = https.createServer(
    {
      key: readFileSync(pf('server.key')),
      cert: readFileSync(pf('server.crt')),
      ca: readFileSync(pf('ca.crt')),
      requestCert: true,
    },
    (req, res) => {
      clients.push(String((req.socket as TLSSocket).getPeerCertificate()?.subject?.CN));
      const u = new URL(req.url ?? '/', 'https://x');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (u.searchParams.get('watch') === 'true') {
        res.end(`${JSON.stringify({ type: 'ADDED', object: { n: 1 } })}\n`);
        return;
      }
      res.end(JSON.stringify({ items: [], auth: req.headers.authorization ?? null }));
    },
  );
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  const apiPort = (api.address() as AddressInfo).port;
  const proxy = http.createServer((_req, res) => res.writeHead(405).end());
  proxy.on('connect', (req, socket: net.Socket, head) => {
    tunnels.push(String(req.url));
    const up = net.connect(apiPort, '127.0.0.1', () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  return {
    apiPort,
    proxyUrl,
    clients,
    tunnels,
    close: () => {
      for (const s of [api, proxy]) {
        s.closeAllConnections();
        s.close();
      }
    },
  };
}

/** A kubeconfig for `server` with the test CA and the client certificate (files relative to the kubeconfig). */
function tlsKubeconfig(server: string, extra = ''): string {
  const f = join(pki, `kc-${Math.random().toString(36).slice(2)}`);
  writeFileSync(
    f,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "${server}", certificate-authority: ca.crt${extra}}}]
users: [{name: u, user: {client-certificate: client.crt, client-key: client.key}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  return f;
}

async function watchOnce(api: ReturnType<typeof kubeApi>): Promise<{ events: unknown[]; done: unknown }> {
  const events: unknown[] = [];
  const done = await new Promise<unknown>((resolve) => {
    void api.watch('/w', {}, (_t, o) => events.push(o), resolve);
  });
  return { events, done };
}

test("proxy-url: LIST and WATCH tunnel through the cluster's proxy (whatever the environment) with the client certificate", async () => {
  const s = await tlsServerBehindProxy();
  try {
    const f = tlsKubeconfig(`https://kube.test:${s.apiPort}`, `, proxy-url: "${s.proxyUrl}"`);
    const api = kubeApi(loadKubeConfig(f), { env: { NO_PROXY: '*,kube.test' } });
    assert.deepEqual(await api.request('GET', '/apis/x'), { items: [], auth: null });
    assert.deepEqual(await watchOnce(api), { events: [{ n: 1 }], done: null });
    assert.deepEqual(s.tunnels, [`kube.test:${s.apiPort}`, `kube.test:${s.apiPort}`], 'one tunnel per request');
    assert.deepEqual(s.clients, ['crbridge', 'crbridge'], 'the client certificate was presented');
  } finally {
    s.close();
  }
});

test('proxy environment: HTTPS_PROXY tunnels LIST and WATCH, NO_PROXY and loopback servers go direct', async () => {
  const s = await tlsServerBehindProxy();
  try {
    const creds = loadKubeConfig(tlsKubeconfig(`https://kube.test:${s.apiPort}`));
    const api = kubeApi(creds, { env: { https_proxy: s.proxyUrl } });
    assert.deepEqual(await api.request('GET', '/apis/x'), { items: [], auth: null });
    assert.deepEqual(await watchOnce(api), { events: [{ n: 1 }], done: null });
    assert.deepEqual(s.tunnels, [`kube.test:${s.apiPort}`, `kube.test:${s.apiPort}`]);
    // NO_PROXY: a direct connection to kube.test, which does not resolve
    const direct = kubeApi(creds, { env: { HTTPS_PROXY: s.proxyUrl, NO_PROXY: 'kube.test' } });
    await assert.rejects(direct.request('GET', '/apis/x'), (e: unknown) =>
      /ENOTFOUND|EAI_AGAIN/.test(String((e as { code?: string }).code)),
    );
    // a loopback server is never proxied (as client-go): the server name comes from tls-server-name
    const local = loadKubeConfig(tlsKubeconfig(`https://127.0.0.1:${s.apiPort}`, ', tls-server-name: kube.test'));
    assert.deepEqual(await kubeApi(local, { env: { HTTPS_PROXY: s.proxyUrl } }).request('GET', '/apis/x'), {
      items: [],
      auth: null,
    });
    assert.equal(s.tunnels.length, 2, 'no tunnel for NO_PROXY or loopback');
    assert.deepEqual(s.clients, ['crbridge', 'crbridge', 'crbridge']);
  } finally {
    s.close();
  }
});
