/**
 * sinkDeadLetter: a dead letter sent through any sink as a CloudEvent of its own. Through the real
 * file sink: a valid CloudEvent (checked by the cloudevents SDK) of type io.crbridge.deadletter
 * with id `<id>.dead.<component>` and the entry as data. Through a scripted sink: ok resolves;
 * retryable, permanent and a throw reject, so DurableDeadLetter retries until the sink takes it
 * (same id every time); concurrent writes go in call order, in batches of at most maxBatch, one
 * send at a time. Through the real webhook sink to a receiver answering 400: the rejection carries
 * the HTTP error but none of the sink's secrets, and the redacted field of the event stays masked.
 * A PipelineRunner starts the dead-letter sink before its sinks and shuts it down after them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CloudEvent as SdkCloudEvent } from 'cloudevents';
import type { DeliveryResult } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import {
  DEAD_LETTER_EVENT_TYPE,
  type DeadLetterEntry,
  DurableDeadLetter,
  deadLetterEvent,
  sinkDeadLetter,
} from '../../../src/delivery/dead-letter.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import { buildEvent } from '../../../src/events/build.ts';
import { PipelineRunner } from '../../../src/runtime/pipeline.ts';
import { fileSink } from '../../../src/sinks/file/index.ts';
import { webhookSink } from '../../../src/sinks/webhook/index.ts';
import { componentMetrics, Metrics } from '../../../src/telemetry/metrics.ts';
import { WebhookReceiver } from '../../support/webhook-receiver.ts';
import { backup, delta } from '../events/fixtures.ts';
import { captureLogger, ev, FakeSink, settlesWithin, tick } from './helpers.ts';

const entry = (id: string, uid = 'uid-1'): DeadLetterEntry => ({
  event: ev(id, uid),
  component: 'p/hook',
  code: 'CRB_DELIVERY_PERMANENT',
  errors: [`HTTP 400: refused ${id}`],
  time: '2026-11-28T10:00:00.000Z',
  attempts: 3,
});

const ctx = (id = 'p/dead-letter') => {
  const { logger, lines } = captureLogger();
  return {
    ctx: { id, pipeline: 'p', logger, metrics: new Metrics(), stateDir: tmpdir(), clusterName: 'c' },
    lines,
  };
};

describe('deadLetterEvent', () => {
  test('a valid CloudEvent of its own: type, deterministic id, the original subject and key, the entry as data', () => {
    const e = entry('abc', 'uid-7');
    const d = deadLetterEvent(e);
    assert.equal(d.id, 'abc.dead.p/hook');
    assert.equal(deadLetterEvent(structuredClone(e)).id, d.id, 'the same for a retry');
    assert.notEqual(deadLetterEvent({ ...e, component: 'p/other' }).id, d.id, 'per failing component');
    assert.equal(d.type, DEAD_LETTER_EVENT_TYPE);
    assert.equal(d.type, 'io.crbridge.deadletter');
    assert.equal(d.source, e.event.source);
    assert.equal(d.subject, e.event.subject);
    assert.equal(d.partitionkey, 'uid-7');
    assert.equal(d.time, e.time);
    assert.deepEqual(d.data, e);
    // the cloudevents SDK validates the envelope on construction and throws on a bad one
    const sdk = new SdkCloudEvent(structuredClone(d) as never);
    assert.equal(sdk.id, d.id);
    assert.equal(sdk.validate(), true);
  });
});

describe('sinkDeadLetter', () => {
  test('through the real file sink: write resolves once the line is stored, as a dead-letter CloudEvent', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'crb-sdl-')), 'dead.jsonl');
    const { ctx: c } = ctx();
    const dl = sinkDeadLetter(fileSink.create({ path }, c), { id: c.id, metrics: c.metrics });
    await dl.start(new AbortController().signal);
    await Promise.all([dl.write(entry('a')), dl.write(entry('b'))]);
    const lines = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => [l.type, l.id, l.data.event.id, l.data.errors[0], l.data.attempts]),
      [
        ['io.crbridge.deadletter', 'a.dead.p/hook', 'a', 'HTTP 400: refused a', 3],
        ['io.crbridge.deadletter', 'b.dead.p/hook', 'b', 'HTTP 400: refused b', 3],
      ],
    );
    const m = componentMetrics(c.metrics);
    assert.deepEqual(
      [m.received.get({ component: 'p/dead-letter' }), m.sent.get({ component: 'p/dead-letter' })],
      [2, 2],
      'counted as the component <pipeline>/dead-letter',
    );
    await dl.close();
    await dl.shutdown(Date.now() + 1000);
    await dl.shutdown(Date.now() + 1000);
  });

  test('retryable, permanent and a throw reject; DurableDeadLetter retries until the sink answers ok, with the same id', async () => {
    const answers: (DeliveryResult | 'throw')[] = [
      { status: 'retryable', error: 'HTTP 503: busy' },
      { status: 'permanent', error: 'HTTP 400: no' },
      'throw',
    ];
    const sink = new FakeSink(10, (b) => {
      const a = answers.shift();
      if (a === 'throw') throw new Error('socket hang up');
      return b.map(() => a ?? { status: 'ok' });
    });
    const sinkMetrics = new Metrics();
    const inner = sinkDeadLetter(sink, { id: 'p/dead-letter', metrics: sinkMetrics });
    await assert.rejects(inner.write(entry('x')), (err: { code?: string; message?: string }) => {
      assert.equal(err.code, 'CRB_DEAD_LETTER_WRITE');
      assert.match(String(err.message), /p\/dead-letter.*x\.dead\.p\/hook.*retryable: HTTP 503: busy/);
      return true;
    });
    const metrics = new Metrics();
    const { logger, lines } = captureLogger();
    const durable = new DurableDeadLetter(inner, { id: 'p', logger, metrics, retry: { initialMs: 5, maxMs: 20 } });
    await durable.write(entry('y'));
    assert.deepEqual(sink.sentIds, ['x.dead.p/hook', 'y.dead.p/hook', 'y.dead.p/hook', 'y.dead.p/hook']);
    assert.equal(componentMetrics(metrics).deadLetterWriteFailures.get({ component: 'p' }), 2);
    const logged = lines.filter((l) => l.code === 'CRB_DEAD_LETTER_WRITE');
    assert.equal(logged.length, 1, 'logged once');
    assert.equal(lines.filter((l) => l.msg === 'dead letters are written again').length, 1);
    const errors = componentMetrics(sinkMetrics).errors;
    assert.deepEqual(
      ['CRB_DELIVERY_RETRYABLE', 'CRB_DELIVERY_PERMANENT', 'CRB_DEAD_LETTER_WRITE'].map((code) =>
        errors.get({ component: 'p/dead-letter', code }),
      ),
      [1, 1, 1],
    );
    await durable.close(Date.now() + 1000);
  });

  test('while the sink keeps failing the dead letter stays unwritten (never dropped)', async () => {
    const sink = new FakeSink(10, (b) => b.map(() => ({ status: 'retryable', error: 'connection refused' })));
    const { logger } = captureLogger();
    const durable = new DurableDeadLetter(sinkDeadLetter(sink, { id: 'p/dead-letter' }), {
      id: 'p',
      logger,
      metrics: new Metrics(),
      retry: { initialMs: 5, maxMs: 10 },
    });
    const w = durable.write(entry('z'));
    assert.equal(await settlesWithin(w, 150), false);
    assert.ok(sink.calls.length >= 3, `${sink.calls.length} attempts`);
    assert.equal(durable.pending, 1);
    await durable.close(Date.now() + 50);
    await assert.rejects(w, { code: 'CRB_SHUTDOWN' });
  });

  test('a Retry-After from the dead-letter sink is honoured like the main queue does: max(backoff, Retry-After), capped, and it pauses the destination', async () => {
    // the destination answers 429 with Retry-After 250 ms to the first send, then takes everything
    const sink = new FakeSink(10, (b, call) =>
      b.map(() =>
        call === 1 ? { status: 'retryable', error: 'HTTP 429: slow down', retryAfterMs: 250 } : { status: 'ok' },
      ),
    );
    const inner = sinkDeadLetter(sink, { id: 'p/dead-letter' });
    const { logger } = captureLogger();
    const durable = new DurableDeadLetter(inner, {
      id: 'p',
      logger,
      metrics: new Metrics(),
      retry: { initialMs: 5, maxMs: 10 },
    });
    const first = durable.write(entry('a'));
    await tick(30);
    // a dead letter written meanwhile (another queue) waits out the same pause: the endpoint asked
    const second = inner.write(entry('b'));
    await Promise.all([first, second]);
    const [c1, ...later] = sink.calls;
    assert.deepEqual(sink.sentIds.slice(0, 1), ['a.dead.p/hook']);
    assert.deepEqual([...sink.sentIds].sort(), ['a.dead.p/hook', 'a.dead.p/hook', 'b.dead.p/hook']);
    for (const c of later)
      assert.ok(
        c.at - (c1?.at ?? 0) >= 240,
        `sent ${c.at - (c1?.at ?? 0)} ms after the 429, before its Retry-After of 250 ms`,
      );
    await durable.close(Date.now() + 1000);

    // capped: a Retry-After of an hour waits only maxRetryAfterMs
    const slow = new FakeSink(10, (b, call) =>
      b.map(() =>
        call === 1 ? { status: 'retryable', error: 'HTTP 503', retryAfterMs: 3_600_000 } : { status: 'ok' },
      ),
    );
    const capped = new DurableDeadLetter(sinkDeadLetter(slow, { id: 'p/dead-letter', maxRetryAfterMs: 200 }), {
      id: 'p',
      logger,
      metrics: new Metrics(),
      retry: { initialMs: 5, maxMs: 10 },
    });
    const t0 = Date.now();
    await capped.write(entry('c'));
    const took = Date.now() - t0;
    assert.ok(took >= 190 && took < 2000, `took ${took} ms; the cap is 200 ms`);
    assert.deepEqual(slow.sentIds, ['c.dead.p/hook', 'c.dead.p/hook']);
    await capped.close(Date.now() + 1000);
  });

  test('concurrent writes go in call order, in batches of at most maxBatch, one send at a time', async () => {
    let inFlight = 0;
    let most = 0;
    const sink = new FakeSink(3, async (b) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await tick(5);
      inFlight--;
      return b.map(() => ({ status: 'ok' }));
    });
    const dl = sinkDeadLetter(sink, { id: 'p/dead-letter' });
    await Promise.all(Array.from({ length: 10 }, (_, i) => dl.write(entry(`e${i}`))));
    assert.equal(most, 1);
    assert.ok(sink.calls.every((c) => c.ids.length <= 3));
    assert.deepEqual(
      sink.sentIds,
      Array.from({ length: 10 }, (_, i) => `e${i}.dead.p/hook`),
    );
    await dl.close();
  });

  test('start and shutdown are the sink’s; close leaves the sink running', async () => {
    const sink = new FakeSink();
    const dl = sinkDeadLetter(sink, { id: 'p/dead-letter' });
    await dl.start(new AbortController().signal);
    await dl.write(entry('a'));
    await dl.close();
    assert.equal(sink.shutdowns, 0);
    await dl.write(entry('b'));
    await Promise.all([dl.shutdown(Date.now() + 1000), dl.shutdown(Date.now() + 1000)]);
    assert.deepEqual([sink.started, sink.shutdowns], [1, 1]);
  });
});

describe('a pipeline with a dead-letter sink', () => {
  test('starts it before its sinks and shuts it down after them; a refused event reaches it as a dead-letter CloudEvent', async () => {
    const order: string[] = [];
    const recording = (name: string, sink: FakeSink) => {
      const start = sink.start.bind(sink);
      const shutdown = sink.shutdown.bind(sink);
      sink.start = async () => {
        order.push(`start ${name}`);
        await start();
      };
      sink.shutdown = async () => {
        order.push(`shutdown ${name}`);
        await shutdown();
      };
      return sink;
    };
    const out = recording(
      'out',
      new FakeSink(10, (b) => b.map(() => ({ status: 'permanent', error: 'HTTP 400: refused' }))),
    );
    const deadSink = recording('dead-letter', new FakeSink());
    const metrics = new Metrics();
    const { logger } = captureLogger();
    const deadLetter = sinkDeadLetter(deadSink, { id: 'p/dead-letter', metrics });
    const queue = new DeliveryQueue(out, resolveDeliveryConfig(), { id: 'p/out', logger, metrics, deadLetter });
    const origShutdown = queue.shutdown.bind(queue);
    queue.shutdown = async (d: number) => {
      order.push('shutdown queue');
      await origShutdown(d);
    };
    const runner = new PipelineRunner({
      name: 'p',
      eventOptions: { clusterName: 'unit' },
      validator: { validate: () => ({ ok: true }) },
      stages: [],
      sinks: [{ id: 'p/out', queue }],
      deadLetter,
      logger,
      metrics,
    });
    await runner.start(new AbortController().signal);
    const { settled } = await runner.push(delta('added', backup({ rv: '1' })));
    await settled;
    assert.equal(out.calls.length, 1);
    const id = out.calls[0]?.ids[0];
    assert.deepEqual(deadSink.sentIds, [`${id}.dead.p/out`]);
    await runner.shutdown(Date.now() + 2000);
    assert.deepEqual(order, [
      'start dead-letter',
      'start out',
      'shutdown queue',
      'shutdown out',
      'shutdown dead-letter',
    ]);
  });
});

describe('sinkDeadLetter through the real webhook sink', () => {
  const receivers: WebhookReceiver[] = [];
  after(async () => {
    for (const r of receivers) await r.close();
  });

  test('a refusal rejects with the HTTP error but no secret; the redacted field stays masked', async () => {
    const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
    const TOKEN = `tok-${randomBytes(12).toString('hex')}`;
    const PATH_TOKEN = `hook-${randomBytes(12).toString('hex')}`;
    const PASSWORD = `pw-${randomBytes(12).toString('hex')}`;
    let answer = 400;
    const r = new WebhookReceiver({
      secrets: [SECRET],
      respond: (q) => (q.method === 'POST' ? { status: answer, body: 'refused by policy' } : undefined),
    });
    receivers.push(r);
    const base = await r.start();
    const { ctx: c, lines } = ctx();
    const config = { url: `${base}/${PATH_TOKEN}`, signing: { secrets: [SECRET] }, auth: { bearerToken: TOKEN } };
    assert.deepEqual(webhookSink.check?.(config), []);
    const dl = sinkDeadLetter(webhookSink.create(config, c), { id: c.id });
    await dl.start(new AbortController().signal);
    const event = buildEvent(
      {
        kind: 'added',
        reason: 'live',
        observedAt: Date.parse('2026-11-28T10:00:00Z'),
        resource: { group: 'example.com', version: 'v1', resource: 'backups', kind: 'Backup', namespaced: true },
        object: {
          apiVersion: 'example.com/v1',
          kind: 'Backup',
          metadata: { name: 'b1', namespace: 'ns', uid: 'u1', resourceVersion: '5' },
          spec: { password: PASSWORD },
        },
      } as never,
      { clusterName: 'c', redact: ['/spec/password'] },
    );
    const e: DeadLetterEntry = { ...entry('b1'), event };
    let message = '';
    await assert.rejects(dl.write(e), (err: Error) => {
      message = err.message;
      return true;
    });
    assert.match(message, /400/);
    assert.match(message, /refused by policy/);
    answer = 200;
    await dl.write(e);
    const posted = r.requests.filter((q) => q.method === 'POST');
    assert.equal(posted.length, 2);
    assert.ok(
      posted.every((q) => q.verified === true),
      'signed',
    );
    assert.equal(posted[1]?.headers['webhook-id'], `${event.id}.dead.p/hook`);
    assert.equal(posted[1]?.headers['ce-type'], 'io.crbridge.deadletter');
    const everything = [message, JSON.stringify(lines), ...posted.map((q) => q.body.toString())].join('\n');
    for (const s of [SECRET, SECRET.slice('whsec_'.length), TOKEN, PATH_TOKEN, PASSWORD])
      assert.ok(!everything.includes(s), `a secret leaked: ${s.slice(0, 4)}…`);
    await dl.shutdown(Date.now() + 2000);
  });
});
