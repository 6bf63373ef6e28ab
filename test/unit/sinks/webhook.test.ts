/**
 * The webhook sink against a local receiver (test/support/webhook-receiver.ts): each mode's bytes
 * and headers, Standard Webhooks signatures verified with the standardwebhooks library (one and
 * two secrets), retries keeping the id and changing the timestamp, the status mapping through a
 * real DeliveryQueue (500 then 200, 429 with Retry-After, 400 to the dead letter, 410 stops the
 * endpoint and keeps the events), a stall past the timeout, a reset, the abuse-protection
 * handshake and its rate cap, the config checks, and no secret in any log line, metric or dead letter.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import type { OutboundEvent, Sink } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import { TokenBucket } from '../../../src/sinks/util/rate.ts';
import { ENDPOINT_GONE_METRIC, type WebhookSinkConfig, webhookSink } from '../../../src/sinks/webhook/index.ts';
import { batchId } from '../../../src/sinks/webhook/signing.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { type ReceiverOptions, WebhookReceiver } from '../../support/webhook-receiver.ts';
import { captureLogger, ev, MemoryDeadLetter } from '../delivery/helpers.ts';

const secret = () => `whsec_${randomBytes(32).toString('base64')}`;
const SECRET = secret();
const SECRET2 = secret();
const TOKEN = `tok-${randomBytes(12).toString('hex')}`;
const PATH_TOKEN = `hook-${randomBytes(12).toString('hex')}`;

const receivers: WebhookReceiver[] = [];
async function receiver(opts: ReceiverOptions = {}): Promise<WebhookReceiver> {
  const r = new WebhookReceiver({ secrets: [SECRET], ...opts });
  await r.start();
  receivers.push(r);
  return r;
}
afterEach(async () => {
  for (const r of receivers.splice(0)) await r.close();
});

function make(config: Partial<WebhookSinkConfig> & { url: string }) {
  const { logger, lines } = captureLogger();
  const metrics = new Metrics();
  const full: WebhookSinkConfig = { signing: { secrets: [SECRET] }, ...config };
  assert.deepEqual(webhookSink.check?.(full), [], 'the test config passes check');
  const sink = webhookSink.create(full, {
    id: 'p/hook',
    pipeline: 'p',
    logger,
    metrics,
    stateDir: '/tmp',
    clusterName: 'c',
  });
  return { sink, lines, metrics };
}

const out = (e: ReturnType<typeof ev>, seq = 1): OutboundEvent => ({ event: e, seq, attempts: 0 });
const signal = new AbortController().signal;

function queueOf(sink: Sink, retry: Partial<ReturnType<typeof resolveDeliveryConfig>['retry']> = {}) {
  const { logger, lines } = captureLogger();
  const metrics = new Metrics();
  const deadLetter = new MemoryDeadLetter();
  const config = resolveDeliveryConfig({
    retry: { initialIntervalMs: 20, maxIntervalMs: 2000, randomizationFactor: 0, ...retry },
  });
  const queue = new DeliveryQueue(sink, config, { id: 'p/hook', logger, metrics, deadLetter });
  const abort = new AbortController();
  return { queue, lines, metrics, deadLetter, abort };
}

describe('webhook sink: modes, bytes and signatures', () => {
  test('binary mode (default): ce-* headers, the data as the body, signed; one event per request', async () => {
    const r = await receiver();
    const { sink } = make({ url: `${r.url}/in` });
    assert.equal(sink.maxBatch, 1);
    const e = ev('e1', 'uid-a');
    assert.deepEqual(await sink.send([out(e)], signal), [{ status: 'ok' }]);
    assert.equal(r.requests.length, 1);
    const q = r.requests[0];
    assert.ok(q);
    assert.equal(q.method, 'POST');
    assert.equal(q.url, '/in');
    assert.equal(q.headers['content-type'], 'application/json');
    assert.equal(q.headers['ce-id'], 'e1');
    assert.equal(q.headers['ce-specversion'], '1.0');
    assert.equal(q.headers['ce-type'], e.type);
    assert.equal(q.headers['ce-subject'], 'ns/e1');
    assert.equal(q.headers['ce-partitionkey'], 'uid-a');
    assert.equal(q.body.toString(), JSON.stringify(e.data));
    assert.equal(q.headers['webhook-id'], 'e1');
    assert.equal(q.verified, true);
    // verified independently of the helper, with the library on the exact bytes
    const payload = new Webhook(SECRET).verify(q.body.toString(), {
      'webhook-id': String(q.headers['webhook-id']),
      'webhook-timestamp': String(q.headers['webhook-timestamp']),
      'webhook-signature': String(q.headers['webhook-signature']),
    });
    assert.deepEqual(payload, e.data);
    assert.ok(Math.abs(Number(q.headers['webhook-timestamp']) - Date.now() / 1000) < 5);
    await sink.shutdown(Date.now() + 1000);
  });

  test('structured mode: application/cloudevents+json with the whole event', async () => {
    const r = await receiver();
    const { sink } = make({ url: r.url, mode: 'structured' });
    const e = ev('e2');
    assert.deepEqual(await sink.send([out(e)], signal), [{ status: 'ok' }]);
    const q = r.requests[0];
    assert.ok(q);
    assert.match(String(q.headers['content-type']), /^application\/cloudevents\+json(;|$)/);
    assert.equal(q.headers['ce-id'], undefined);
    assert.deepEqual(JSON.parse(q.body.toString()), e);
    assert.equal(q.headers['webhook-id'], 'e2');
    assert.equal(q.verified, true);
    await sink.shutdown(Date.now() + 1000);
  });

  test('batch mode: one application/cloudevents-batch+json request per batch, id derived from the event ids', async () => {
    const r = await receiver();
    const { sink } = make({ url: r.url, mode: 'batch', batchSize: 3 });
    assert.equal(sink.maxBatch, 3);
    const batch = [ev('b1', 'u1'), ev('b2', 'u2'), ev('b3', 'u1')].map((e, i) => out(e, i + 1));
    assert.deepEqual(await sink.send(batch, signal), [{ status: 'ok' }, { status: 'ok' }, { status: 'ok' }]);
    assert.equal(r.requests.length, 1);
    const q = r.requests[0];
    assert.ok(q);
    assert.match(String(q.headers['content-type']), /^application\/cloudevents-batch\+json(;|$)/);
    assert.deepEqual(
      JSON.parse(q.body.toString()),
      batch.map((o) => o.event),
    );
    assert.equal(q.headers['webhook-id'], batchId(['b1', 'b2', 'b3']));
    assert.match(String(q.headers['webhook-id']), /^batch_[0-9a-f]{32}$/);
    assert.notEqual(batchId(['b1', 'b2', 'b3']), batchId(['b1', 'b3', 'b2']));
    assert.equal(q.verified, true);
    await sink.shutdown(Date.now() + 1000);
  });

  test('two secrets: both sign; a receiver holding either one verifies', async () => {
    const r = await receiver({ secrets: [SECRET2] });
    const { sink } = make({ url: r.url, signing: { secrets: [SECRET, SECRET2] } });
    await sink.send([out(ev('e3'))], signal);
    const q = r.requests[0];
    assert.ok(q);
    const sigs = String(q.headers['webhook-signature']).split(' ');
    assert.equal(sigs.length, 2);
    for (const s of sigs) assert.match(s, /^v1,[A-Za-z0-9+/]+=*$/);
    const h = {
      'webhook-id': String(q.headers['webhook-id']),
      'webhook-timestamp': String(q.headers['webhook-timestamp']),
      'webhook-signature': String(q.headers['webhook-signature']),
    };
    for (const s of [SECRET, SECRET2]) assert.doesNotThrow(() => new Webhook(s).verify(q.body.toString(), h));
    assert.throws(() => new Webhook(secret()).verify(q.body.toString(), h));
    assert.equal(q.verified, true);
    await sink.shutdown(Date.now() + 1000);
  });

  test('unsigned when no secret; bearer, basic auth and custom headers are sent', async () => {
    const r = await receiver({ secrets: [] });
    const { sink } = make({
      url: r.url,
      signing: undefined,
      auth: { bearerToken: TOKEN },
      headers: { 'X-Tenant': 't1' },
    });
    await sink.send([out(ev('e4'))], signal);
    const { sink: basic } = make({ url: r.url, auth: { username: 'u', password: TOKEN } });
    await basic.send([out(ev('e5'))], signal);
    const [a, b] = r.requests;
    assert.ok(a && b);
    assert.equal(a.headers['webhook-signature'], undefined);
    assert.equal(a.headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(a.headers['x-tenant'], 't1');
    assert.equal(b.headers.authorization, `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}`);
    await sink.shutdown(Date.now() + 1000);
    await basic.shutdown(Date.now() + 1000);
  });
});

describe('webhook sink: status handling through the delivery queue', () => {
  test('500 then 200: delivered once, the retry keeps webhook-id and gets a new timestamp and signature', async () => {
    const r = await receiver({ schedule: [{ status: 500, body: 'oops' }] });
    const { sink } = make({ url: r.url });
    const { queue, abort, deadLetter } = queueOf(sink, { initialIntervalMs: 1100 });
    const { settled } = await queue.enqueue(ev('r1'));
    await queue.start(abort.signal);
    await settled;
    assert.equal(r.requests.length, 2);
    const [a, b] = r.requests;
    assert.ok(a && b);
    assert.equal(a.headers['webhook-id'], 'r1');
    assert.equal(b.headers['webhook-id'], 'r1');
    assert.notEqual(a.headers['webhook-timestamp'], b.headers['webhook-timestamp']);
    assert.notEqual(a.headers['webhook-signature'], b.headers['webhook-signature']);
    assert.ok(a.verified && b.verified);
    assert.deepEqual(
      r.acceptedEvents.map((e) => e.id),
      ['r1'],
    );
    assert.equal(deadLetter.entries.length, 0);
    await queue.shutdown(Date.now() + 1000);
  });

  test('429 with Retry-After (seconds, then an HTTP date) is waited for', async () => {
    const r = await receiver({
      respond: (q) =>
        q.n === 1
          ? { status: 429, headers: { 'retry-after': '1' } }
          : q.n === 2
            ? { status: 503, headers: { 'retry-after': new Date(Date.now() + 2000).toUTCString() } }
            : undefined,
    });
    const { sink } = make({ url: r.url });
    const { queue, abort } = queueOf(sink);
    const { settled } = await queue.enqueue(ev('r2'));
    await queue.start(abort.signal);
    await settled;
    const [a, b, c] = r.requests;
    assert.ok(a && b && c);
    assert.equal(r.requests.length, 3);
    assert.ok(b.at - a.at >= 950, `waited ${b.at - a.at} ms after Retry-After: 1`);
    // the HTTP date has one-second resolution: at least 1 s of the 2 s remains
    assert.ok(c.at - b.at >= 900, `waited ${c.at - b.at} ms after an HTTP-date Retry-After`);
    await queue.shutdown(Date.now() + 1000);
  });

  test('400: a dead letter with the status and the body excerpt, never a secret', async () => {
    // the receiver echoes the credentials it got: the sink must not repeat them
    const r = await receiver({
      respond: (q) => ({ status: 400, body: `bad request; you sent ${q.headers.authorization} to ${q.url}` }),
    });
    const {
      sink,
      lines: sinkLines,
      metrics: sinkMetrics,
    } = make({
      url: `${r.url}/${PATH_TOKEN}?key=${PATH_TOKEN}`,
      auth: { bearerToken: TOKEN },
      headers: { 'x-api-key': `${TOKEN}-h` },
    });
    const { queue, abort, deadLetter, lines, metrics } = queueOf(sink);
    const { settled } = await queue.enqueue(ev('r3'));
    await queue.start(abort.signal);
    await settled;
    assert.equal(r.requests.length, 1);
    assert.equal(deadLetter.entries.length, 1);
    const dl = JSON.stringify(deadLetter.entries[0]);
    assert.match(dl, /HTTP 400: bad request/);
    assert.match(dl, /"r3"/);
    const everything = [dl, ...lines.map((l) => JSON.stringify(l)), ...sinkLines.map((l) => JSON.stringify(l))]
      .concat(metrics.render(), sinkMetrics.render())
      .join('\n');
    for (const s of [TOKEN, PATH_TOKEN, SECRET, SECRET.slice(6)])
      assert.ok(!everything.includes(s), `a secret leaked: ${s.slice(0, 6)}…`);
    assert.match(dl, /\[redacted\]/);
    await queue.shutdown(Date.now() + 1000);
  });

  test('410 Gone stops the endpoint: no further requests, events kept (retryable), gauge and one error log', async () => {
    const r = await receiver({ schedule: [{ status: 200 }, { status: 410 }] });
    const { sink, lines, metrics } = make({ url: r.url });
    assert.deepEqual(await sink.send([out(ev('g1'))], signal), [{ status: 'ok' }]);
    const second = await sink.send([out(ev('g2'))], signal);
    assert.equal(second[0]?.status, 'retryable');
    const third = await sink.send([out(ev('g3'))], signal);
    assert.equal(third[0]?.status, 'retryable');
    assert.match(third[0]?.status === 'retryable' ? third[0].error : '', /410 Gone.*restart crbridge/);
    assert.equal(r.requests.length, 2, 'nothing is sent after the 410');
    assert.match(metrics.render(), new RegExp(`${ENDPOINT_GONE_METRIC}\\{component="p/hook"\\} 1`));
    assert.equal(lines.filter((l) => l.level === 'error').length, 1);
    // through a queue: the event stays queued, nothing is dead-lettered
    const { queue, abort, deadLetter } = queueOf(sink);
    const { settled } = await queue.enqueue(ev('g4'));
    let done = false;
    void settled.then(
      () => {
        done = true;
      },
      () => {},
    );
    await queue.start(abort.signal);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(done, false);
    assert.equal(deadLetter.entries.length, 0);
    assert.equal(queue.depth, 1);
    await queue.shutdown(Date.now() + 200);
  });

  test('3xx is not followed: permanent, the target never hit', async () => {
    const r = await receiver({ schedule: [{ status: 302, headers: { location: '/elsewhere' } }] });
    const { sink } = make({ url: `${r.url}/here` });
    const [res] = await sink.send([out(ev('m1'))], signal);
    assert.equal(res?.status, 'permanent');
    assert.deepEqual(
      r.requests.map((q) => q.url),
      ['/here'],
    );
  });

  test('a stall past the timeout and a connection reset are retried; delivered once each in the end', async () => {
    const r = await receiver({ schedule: [{ stallMs: 1500 }, { reset: true }] });
    const { sink } = make({ url: r.url, timeoutMs: 300 });
    const [a] = await sink.send([out(ev('t1'))], signal);
    assert.equal(a?.status, 'retryable');
    assert.match(a?.status === 'retryable' ? a.error : '', /no answer within 300 ms/);
    const [b] = await sink.send([out(ev('t1'))], signal);
    assert.equal(b?.status, 'retryable');
    const [c] = await sink.send([out(ev('t1'))], signal);
    assert.deepEqual(c, { status: 'ok' });
    assert.equal(r.requests.length, 3);
    assert.deepEqual(
      r.requests.map((q) => q.headers['webhook-id']),
      ['t1', 't1', 't1'],
    );
    await sink.shutdown(Date.now() + 1000);
  });
});

describe('webhook sink: abuse protection, checks', () => {
  test('handshake: OPTIONS with WebHook-Request-Origin first; WebHook-Allowed-Rate caps the request rate', async () => {
    const r = await receiver({
      options: (q) =>
        q.headers['webhook-request-origin'] === 'crbridge.test'
          ? { status: 200, headers: { 'webhook-allowed-origin': 'crbridge.test', 'webhook-allowed-rate': '1200' } }
          : { status: 403 },
    });
    const { sink } = make({ url: r.url, abuseProtection: { enabled: true, origin: 'crbridge.test' } });
    const t0 = Date.now();
    for (let i = 0; i < 30; i++) assert.deepEqual(await sink.send([out(ev(`h${i}`))], signal), [{ status: 'ok' }]);
    const took = Date.now() - t0;
    assert.equal(r.requests[0]?.method, 'OPTIONS');
    assert.equal(r.requests.filter((q) => q.method === 'OPTIONS').length, 1);
    assert.equal(r.requests.filter((q) => q.method === 'POST').length, 30);
    // 1200/min = 20/s with a 20-token burst: the last 10 wait ~0.5 s
    assert.ok(took >= 400, `30 requests at 1200/min took ${took} ms`);
  });

  test('a refused handshake keeps the events (retryable) and sends no POST; retried on the next send', async () => {
    let allow = false;
    const r = await receiver({
      options: () => (allow ? { status: 200, headers: { 'webhook-allowed-origin': '*' } } : { status: 200 }),
    });
    const { sink } = make({ url: r.url, abuseProtection: { enabled: true } });
    const [a] = await sink.send([out(ev('x1'))], signal);
    assert.equal(a?.status, 'retryable');
    assert.match(a?.status === 'retryable' ? a.error : '', /handshake failed.*WebHook-Allowed-Origin is missing/);
    assert.equal(r.requests.filter((q) => q.method === 'POST').length, 0);
    allow = true;
    assert.deepEqual(await sink.send([out(ev('x1'))], signal), [{ status: 'ok' }]);
    assert.equal(r.requests.filter((q) => q.method === 'OPTIONS').length, 2);
  });

  test('token bucket: a burst of one second, then the rate', () => {
    let now = 0;
    const b = TokenBucket.perMinute(120, () => now); // 2/s
    assert.deepEqual([b.reserve(), b.reserve(), b.reserve()], [0, 0, 500]);
    now = 1000;
    assert.equal(b.reserve(), 0);
  });

  test('check: a secret without whsec_ (never quoted), a non-http URL, auth given twice, a reserved header', () => {
    const c = webhookSink.check;
    assert.ok(c);
    const problems = c({
      url: 'ftp://example.com/x',
      signing: { secrets: [SECRET, 'plain-secret-value'] },
      auth: { bearerToken: 'a', username: 'u', password: 'p' },
      headers: { Authorization: 'x', 'ce-id': 'y' },
      batchSize: 10,
    });
    const by = Object.fromEntries(problems.map((p) => [p.pointer, p.message]));
    assert.deepEqual(Object.keys(by).sort(), [
      '/auth',
      '/batchSize',
      '/headers/Authorization',
      '/headers/ce-id',
      '/signing/secrets/1',
      '/url',
    ]);
    assert.match(by['/signing/secrets/1'] ?? '', /must start with "whsec_"/);
    assert.ok(!JSON.stringify(problems).includes('plain-secret-value'));
    assert.match(by['/url'] ?? '', /http:\/\/ or https:\/\//);
    assert.deepEqual(c({ url: 'https://h.example/hook', signing: { secrets: [SECRET] } }), []);
    assert.match(c({ url: 'not a url' })[0]?.message ?? '', /not a URL/);
    assert.match(c({ url: 'http://h', signing: { secrets: ['whsec_c2hvcnQ='] } })[0]?.message ?? '', /24 to 64 bytes/);
  });
});

after(async () => {
  for (const r of receivers.splice(0)) await r.close();
});
