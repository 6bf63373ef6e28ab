/**
 * The slack sink's pacing on its own: the token bucket (rate, capacity, waits in call order), the
 * Retry-After pause (no call before it ends, never shortened by a later shorter one), and two sinks
 * of one process sharing a channel's budget through `ctx.shared`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { slackSink } from '../../../src/sinks/slack/index.ts';
import { Bucket, Pacer } from '../../../src/sinks/slack/pacing.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { LocalSlack } from '../../support/slack-server.ts';
import { captureLogger } from '../delivery/helpers.ts';

test('Bucket: capacity at once, then one token per interval, waits in call order', () => {
  let now = 1000;
  const b = new Bucket(1 / 1000, 2, () => now); // 1 per second, burst 2
  assert.equal(b.reserve(), 0);
  assert.equal(b.reserve(), 0);
  assert.equal(b.reserve(), 1000);
  assert.equal(b.reserve(), 2000, 'the next caller waits behind the previous one');
  now += 3000;
  assert.equal(b.reserve(), 0, 'refilled after the waits');
  b.refund();
  assert.equal(b.reserve(), 0);
});

test('Pacer: a pause holds every call until it ends; a shorter later pause does not shorten it', async () => {
  const p = new Pacer(new Bucket(1, 100), new Bucket(1, 100));
  p.pause(300);
  p.pause(50);
  const t0 = Date.now();
  await p.acquire(true, new AbortController().signal);
  assert.ok(Date.now() - t0 >= 290, `waited ${Date.now() - t0} ms`);
  const ac = new AbortController();
  p.pause(10_000);
  setTimeout(() => ac.abort(new Error('shutdown')), 50);
  await assert.rejects(p.acquire(false, ac.signal), /shutdown/, 'an abort ends the wait');
});

test('two slack sinks of one process posting to one channel share its budget', async () => {
  const slack = new LocalSlack({ token: 'xoxb-shared', perChannelPerSecond: 100, burst: 10 });
  await slack.start();
  const memo = new Map<string, unknown>();
  const shared = <T>(key: string, make: () => T): T => {
    if (!memo.has(key)) memo.set(key, make());
    return memo.get(key) as T;
  };
  const sinks = ['a', 'b'].map((name) =>
    slackSink.create(
      { token: 'xoxb-shared', channel: 'C1', apiUrl: slack.apiUrl, rate: { channelPerSecond: 5 } },
      {
        id: `p${name}/slack`,
        pipeline: `p${name}`,
        logger: captureLogger().logger,
        metrics: new Metrics(),
        stateDir: '/tmp',
        clusterName: 'c',
        shared,
      },
    ),
  );
  const ev = (i: number): CloudEvent =>
    ({
      specversion: '1.0',
      id: `u${i}.1`,
      source: 's',
      type: 'io.crbridge.example.com.backup.created',
      datacontenttype: 'application/json',
      k8suid: `u${i}`,
      k8sname: `b${i}`,
      k8skind: 'Backup',
      data: { object: { metadata: { name: `b${i}`, uid: `u${i}`, resourceVersion: '1' } }, reason: 'live' },
    }) as unknown as CloudEvent;
  try {
    const signal = new AbortController().signal;
    await Promise.all(
      sinks.map(async (s, k) => {
        for (let i = 0; i < 3; i++) await s.send([{ event: ev(k * 10 + i), seq: i + 1, attempts: 1 }], signal);
      }),
    );
    const at = slack.messages.map((m) => m.at).sort((x, y) => x - y);
    assert.equal(at.length, 6);
    assert.equal(slack.rateLimited.length, 0);
    // six posts at 5 per second shared: at least 5 intervals of ~200 ms between the first and the last
    assert.ok(
      (at[5] as number) - (at[0] as number) >= 900,
      `six posts took ${(at[5] as number) - (at[0] as number)} ms`,
    );
  } finally {
    for (const s of sinks) await s.shutdown(Date.now() + 1000);
    await slack.close();
  }
});

test('shutdown honours its deadline while a send waits out a long Retry-After, and is idempotent', async () => {
  const slack = new LocalSlack({ token: 'xoxb-shut' });
  await slack.start();
  try {
    slack.throttle('C1', 30); // the first post: 429 with Retry-After: 30
    const sink = slackSink.create(
      { token: 'xoxb-shut', channel: 'C1', apiUrl: slack.apiUrl },
      {
        id: 'p/slack',
        pipeline: 'p',
        logger: captureLogger().logger,
        metrics: new Metrics(),
        stateDir: '/tmp',
        clusterName: 'c',
      },
    );
    await sink.start(new AbortController().signal);
    const ev = (i: number) =>
      ({
        specversion: '1.0',
        id: `s${i}.1`,
        source: 's',
        type: 'io.crbridge.example.com.backup.created',
        datacontenttype: 'application/json',
        k8suid: `s${i}`,
        data: { object: { metadata: { name: `s${i}`, uid: `s${i}`, resourceVersion: '1' } }, reason: 'live' },
      }) as unknown as CloudEvent;
    const [first] = await sink.send([{ event: ev(1), seq: 1, attempts: 1 }], new AbortController().signal);
    assert.equal(first?.status, 'retryable');
    assert.equal((first as { retryAfterMs?: number }).retryAfterMs, 30_000);
    const waiting = sink.send([{ event: ev(2), seq: 2, attempts: 1 }], new AbortController().signal); // waits 30 s
    void waiting.catch(() => {});
    const t0 = Date.now();
    const a = sink.shutdown(Date.now() + 300);
    assert.equal(sink.shutdown(Date.now() + 10_000), a, 'the same promise');
    await a;
    const took = Date.now() - t0;
    assert.ok(took < 1000, `shutdown took ${took} ms`);
    assert.equal(slack.requests.length, 1, 'nothing sent during the Retry-After');
  } finally {
    await slack.close();
  }
});
