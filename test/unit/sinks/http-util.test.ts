/**
 * The shared HTTP delivery helper against local servers: status → delivery result (2xx ok; 408,
 * 429, 5xx retryable with Retry-After in both its forms; 3xx never followed; 410 gone; other 4xx
 * permanent), timeouts and resets retryable, TLS (a private CA, a client certificate, a server
 * name; verification on by default), and the proxy from HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { HttpClient, parseRetryAfter, resultOfStatus } from '../../../src/sinks/util/http.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';

test('Retry-After: delay-seconds, an HTTP date, a past date, garbage, and the cap', () => {
  const now = Date.parse('2026-12-01T10:00:00Z');
  assert.equal(parseRetryAfter('7', now), 7000);
  assert.equal(parseRetryAfter('Tue, 01 Dec 2026 10:00:30 GMT', now), 30_000);
  assert.equal(parseRetryAfter('Tue, 01 Dec 2026 09:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter(undefined, now), undefined);
  assert.equal(parseRetryAfter('999999', now, 60_000), 60_000);
});

test('status → result: 2xx ok, 408/429/5xx retryable, 3xx and other 4xx permanent, 410 gone', () => {
  const kinds = [200, 201, 204, 301, 302, 307, 400, 401, 403, 404, 408, 410, 413, 429, 500, 502, 503, 504].map((s) => {
    const r = resultOfStatus(s, {});
    return `${s}:${r.status}${r.gone ? ':gone' : ''}`;
  });
  assert.deepEqual(kinds, [
    '200:ok',
    '201:ok',
    '204:ok',
    '301:permanent',
    '302:permanent',
    '307:permanent',
    '400:permanent',
    '401:permanent',
    '403:permanent',
    '404:permanent',
    '408:retryable',
    '410:permanent:gone',
    '413:permanent',
    '429:retryable',
    '500:retryable',
    '502:retryable',
    '503:retryable',
    '504:retryable',
  ]);
  const r = resultOfStatus(503, { 'retry-after': '3' }, 'busy');
  assert.deepEqual(r, { status: 'retryable', error: 'HTTP 503: busy', retryAfterMs: 3000 });
});

// ---------------------------------------------------------------------------------------------
// a local receiver that misbehaves by path

const hits = new Map<string, number>();
let server: http.Server;
let base = '';
before(async () => {
  server = http.createServer((req, res) => {
    hits.set(req.url ?? '', (hits.get(req.url ?? '') ?? 0) + 1);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      switch (req.url) {
        case '/ok':
          res.writeHead(200).end(Buffer.concat(chunks));
          return;
        case '/busy':
          res.writeHead(429, { 'retry-after': new Date(Date.now() + 20_000).toUTCString() }).end();
          return;
        case '/moved':
          res.writeHead(302, { location: `${base}/target` }).end();
          return;
        case '/gone':
          res.writeHead(410).end('unsubscribed');
          return;
        case '/bad':
          res.writeHead(400).end('no such field');
          return;
        case '/stall':
          return; // never answers
        case '/reset':
          req.socket.destroy();
          return;
        default:
          res.writeHead(404).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

test('answers and transport failures from a real server map to results; redirects are not followed', async () => {
  const c = new HttpClient({ timeoutMs: 300, env: {} });
  const ok = await c.deliver({ url: `${base}/ok`, body: '{"a":1}', headers: { 'content-type': 'application/json' } });
  assert.deepEqual(ok, { status: 'ok', httpStatus: 200 });
  const busy = await c.deliver({ url: `${base}/busy`, body: 'x' });
  assert.equal(busy.status, 'retryable');
  assert.ok(busy.status === 'retryable' && (busy.retryAfterMs ?? 0) > 15_000, 'the HTTP-date Retry-After');
  const moved = await c.deliver({ url: `${base}/moved`, body: 'x' });
  assert.equal(moved.status, 'permanent');
  assert.match(moved.status === 'permanent' ? moved.error : '', /redirects are not followed/);
  assert.equal(hits.get('/target'), undefined, 'the redirect target was never requested');
  const gone = await c.deliver({ url: `${base}/gone`, body: 'x' });
  assert.equal(gone.gone, true);
  const bad = await c.deliver({ url: `${base}/bad`, body: 'x' });
  assert.deepEqual(bad, { status: 'permanent', error: 'HTTP 400: no such field', httpStatus: 400 });
  const t0 = Date.now();
  const stall = await c.deliver({ url: `${base}/stall`, body: 'x' });
  assert.equal(stall.status, 'retryable');
  assert.match(stall.status === 'retryable' ? stall.error : '', /no answer within 300 ms/);
  assert.ok(Date.now() - t0 < 2000);
  const reset = await c.deliver({ url: `${base}/reset`, body: 'x' });
  assert.equal(reset.status, 'retryable');
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  closed.close();
  const refused = await c.deliver({ url: `http://127.0.0.1:${port}/`, body: 'x' });
  assert.equal(refused.status, 'retryable');
  const ac = new AbortController();
  const aborted = c.deliver({ url: `${base}/stall`, body: 'x', signal: ac.signal });
  ac.abort(new Error('shutting down'));
  await assert.rejects(aborted, /shutting down|aborted/);
  c.close();
});

// ---------------------------------------------------------------------------------------------
// TLS with a private CA, a client certificate and a server name

const pki = mkdtempSync(join(tmpdir(), 'crb-http-pki-'));
const f = (n: string) => join(pki, n);
function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}
function makePki(): void {
  openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.crt')].concat([
      '-days',
      '2',
      '-subj',
      '/CN=crbridge test CA',
    ]),
  );
  writeFileSync(f('server.ext'), 'subjectAltName=DNS:receiver.test\nextendedKeyUsage=serverAuth\n');
  openssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('server.key'), '-out', f('server.csr')].concat([
      '-subj',
      '/CN=receiver.test',
    ]),
  );
  openssl(
    ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial'].concat([
      '-out',
      f('server.crt'),
      '-days',
      '2',
      '-extfile',
      f('server.ext'),
    ]),
  );
  writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  openssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('client.key'), '-out', f('client.csr')].concat([
      '-subj',
      '/CN=crbridge',
    ]),
  );
  openssl(
    ['x509', '-req', '-in', f('client.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial'].concat([
      '-out',
      f('client.crt'),
      '-days',
      '2',
      '-extfile',
      f('client.ext'),
    ]),
  );
}

test('TLS: verification on by default, a private CA, a client certificate, a server name', async () => {
  makePki();
  const seen: (string | undefined)[] = [];
  const tlsServer = https.createServer(
    {
      key: readFileSync(f('server.key')),
      cert: readFileSync(f('server.crt')),
      ca: readFileSync(f('ca.crt')),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      seen.push(peer?.subject?.CN as string | undefined);
      req.resume();
      res.writeHead(200).end();
    },
  );
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${(tlsServer.address() as net.AddressInfo).port}/hook`;
  try {
    const plain = new HttpClient({ env: {} });
    const untrusted = await plain.deliver({ url, body: 'x' });
    assert.equal(untrusted.status, 'retryable');
    assert.match(untrusted.status === 'retryable' ? untrusted.error : '', /TLS|certificate/i);
    plain.close();
    const wrongName = new HttpClient({ env: {}, tls: { caFile: f('ca.crt') } });
    const r1 = await wrongName.deliver({ url, body: 'x' });
    assert.equal(r1.status, 'retryable', 'the certificate names receiver.test, not 127.0.0.1');
    wrongName.close();
    const good = new HttpClient({
      env: {},
      tls: { caFile: f('ca.crt'), serverName: 'receiver.test', certFile: f('client.crt'), keyFile: f('client.key') },
    });
    assert.equal((await good.deliver({ url, body: 'x' })).status, 'ok');
    good.close();
    const warned: string[] = [];
    const insecure = new HttpClient({
      env: {},
      tls: { insecureSkipVerify: true },
      logger: createLogger({ write: (l) => warned.push(JSON.parse(l).msg) }),
    });
    assert.deepEqual(
      warned.map((m) => m.split(' (')[0]),
      ['TLS certificate verification is off'],
      'a warning',
    );
    assert.equal((await insecure.deliver({ url, body: 'x' })).status, 'ok');
    insecure.close();
    assert.deepEqual(seen, ['crbridge', undefined], 'the client certificate was presented once');
    assert.throws(() => new HttpClient({ tls: { caFile: f('missing.crt') } }), /cannot read tls\.caFile/);
  } finally {
    tlsServer.closeAllConnections();
    tlsServer.close();
  }
});

// ---------------------------------------------------------------------------------------------
// the proxy from the environment

test('proxy: HTTP_PROXY forwards plain requests, HTTPS_PROXY tunnels with CONNECT, NO_PROXY bypasses', async () => {
  const log: string[] = [];
  const proxy = http.createServer((req, res) => {
    log.push(`GET-VIA ${req.url}`);
    const target = new URL(req.url ?? '');
    const up = http.request(target, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    req.pipe(up);
  });
  proxy.on('connect', (req, socket: net.Socket, head) => {
    log.push(`CONNECT ${req.url}`);
    const [host, port] = String(req.url).split(':');
    const up = net.connect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
  const tlsServer = https.createServer(
    { key: readFileSync(f('server.key')), cert: readFileSync(f('server.crt')) },
    (req, res) => {
      req.resume();
      res.writeHead(204).end();
    },
  );
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  const tlsUrl = `https://127.0.0.1:${(tlsServer.address() as net.AddressInfo).port}/hook`;
  try {
    const viaHttp = new HttpClient({ env: { HTTP_PROXY: proxyUrl } });
    assert.equal((await viaHttp.deliver({ url: `${base}/ok`, body: 'x' })).status, 'ok');
    viaHttp.close();
    const viaTunnel = new HttpClient({
      env: { https_proxy: proxyUrl },
      tls: { caFile: f('ca.crt'), serverName: 'receiver.test' },
    });
    assert.equal((await viaTunnel.deliver({ url: tlsUrl, body: 'x' })).status, 'ok');
    viaTunnel.close();
    const bypass = new HttpClient({ env: { HTTP_PROXY: proxyUrl, NO_PROXY: '127.0.0.1' } });
    assert.equal((await bypass.deliver({ url: `${base}/ok`, body: 'x' })).status, 'ok');
    bypass.close();
    assert.deepEqual(log, [`GET-VIA ${base}/ok`, `CONNECT ${new URL(tlsUrl).host}`]);
  } finally {
    proxy.closeAllConnections();
    proxy.close();
    tlsServer.closeAllConnections();
    tlsServer.close();
  }
});
