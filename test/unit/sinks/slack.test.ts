/**
 * The slack sink against the local Slack (test/support/slack-server.ts, which enforces Block Kit's
 * limits and 1 msg/s per channel like Slack): one thread per object (parent, replies in order,
 * parent updated in place, failures broadcast), the thread map surviving a new sink instance,
 * coalescing within a batch and digests across objects (counted), pacing and Retry-After, Slack's
 * errors classified (configuration → kept and /readyz reason, payload → permanent with the payload),
 * incoming-webhook mode, the config checks, and no secret in any log line, metric or error.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import type { DeliveryResult, OutboundEvent, Sink } from '../../../src/component.ts';
import { resolveDeliveryConfig } from '../../../src/delivery/config.ts';
import { DeliveryQueue } from '../../../src/delivery/queue.ts';
import { buildEvent } from '../../../src/events/build.ts';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import { SLACK_METRICS, type SlackSinkConfig, slackSink } from '../../../src/sinks/slack/index.ts';
import { FileStateStore } from '../../../src/state/store.ts';
import { Metrics } from '../../../src/telemetry/metrics.ts';
import { blockKitProblem, LocalSlack, type LocalSlackOptions } from '../../support/slack-server.ts';
import { captureLogger, MemoryDeadLetter } from '../delivery/helpers.ts';

const TOKEN = `xoxb-${randomBytes(12).toString('hex')}`;
const HOOK = `T1/B1/${randomBytes(12).toString('hex')}`;
const BACKUPS = {
  group: 'example.com',
  version: 'v1',
  resource: 'backups',
  kind: 'Backup',
  namespaced: true,
};

let rv = 100;
function backup(name: string, uid: string, phase: string | undefined, extra: Record<string, unknown> = {}): KubeObject {
  return {
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: {
      name,
      namespace: 'shop',
      uid,
      resourceVersion: String(++rv),
      creationTimestamp: '2026-11-28T10:00:00Z',
    },
    spec: { databaseName: 'orders', ...extra },
    ...(phase !== undefined && { status: { phase } }),
  };
}

/** The lifecycle events of one Backup: created, then each phase in turn (status.changed). */
function lifecycle(name: string, uid: string, phases: string[]): CloudEvent[] {
  const out: CloudEvent[] = [];
  let prev = backup(name, uid, undefined);
  out.push(
    buildEvent({ kind: 'added', object: prev, reason: 'live', resource: BACKUPS, observedAt: Date.now() } as never, {
      clusterName: 'prod',
    }),
  );
  for (const p of phases) {
    const next = backup(name, uid, p);
    out.push(
      buildEvent(
        {
          kind: 'modified',
          object: next,
          oldObject: prev,
          reason: 'live',
          resource: BACKUPS,
          observedAt: Date.now(),
        } as never,
        {
          clusterName: 'prod',
        },
      ),
    );
    prev = next;
  }
  return out;
}

function failed(name: string, uid: string): CloudEvent {
  return buildEvent(
    {
      kind: 'modified',
      object: backup(name, uid, 'Failed'),
      oldObject: backup(name, uid, 'Running'),
      reason: 'live',
      resource: BACKUPS,
      observedAt: Date.now(),
    } as never,
    { clusterName: 'prod' },
  );
}

let seq = 0;
const out = (event: CloudEvent): OutboundEvent => ({ event, seq: ++seq, attempts: 1 });

const slacks: LocalSlack[] = [];
const sinks: Sink[] = [];
afterEach(async () => {
  for (const s of sinks.splice(0)) await s.shutdown(Date.now() + 1000);
  for (const s of slacks.splice(0)) await s.close();
});

async function localSlack(opts: LocalSlackOptions = {}): Promise<LocalSlack> {
  const s = new LocalSlack({ token: TOKEN, webhookPath: HOOK, ...opts });
  await s.start();
  slacks.push(s);
  return s;
}

function make(config: SlackSinkConfig, stateDir = mkdtempSync(join(tmpdir(), 'crb-slack-'))) {
  const { logger, lines } = captureLogger();
  const metrics = new Metrics();
  assert.deepEqual(slackSink.check?.(config), [], 'the test config passes check');
  const sink = slackSink.create(config, {
    id: 'p/slack',
    pipeline: 'p',
    logger,
    metrics,
    stateDir,
    clusterName: 'prod',
    state: (name) => new FileStateStore(join(stateDir, `${name}.json`)),
  });
  sinks.push(sink);
  return { sink, lines, metrics, stateDir };
}

const bot = (slack: LocalSlack, over: Partial<SlackSinkConfig> = {}): SlackSinkConfig => ({
  token: TOKEN,
  channel: 'C0ALERTS',
  apiUrl: slack.apiUrl,
  rate: { channelPerSecond: 20, workspacePerMinute: 6000, workspaceBurst: 50 },
  ...over,
});
const fast: LocalSlackOptions = { perChannelPerSecond: 50, burst: 10, workspacePerMinute: 10_000, workspaceBurst: 100 };

const ok: DeliveryResult = { status: 'ok' };
/** The fallback text and every text of the blocks, one per line, as Slack shows them (unescaped JSON). */
function texts(m: { blocks: unknown[] | undefined; text: string }): string {
  const out = [m.text];
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) k === 'text' && typeof x === 'string' ? out.push(x) : walk(x);
  };
  walk(m.blocks);
  return out.join('\n');
}

function noSecrets(lines: Record<string, unknown>[], metrics: Metrics, results: DeliveryResult[] = []) {
  const all = JSON.stringify(lines) + metrics.render() + JSON.stringify(results);
  assert.ok(!all.includes(TOKEN), 'the token appears nowhere');
  assert.ok(!all.includes(HOOK), 'the webhook path appears nowhere');
}

describe('slack sink, bot-token mode', () => {
  test('one thread per object: parent, replies in order, parent updated to the final phase, a failure broadcast', async () => {
    const slack = await localSlack(fast);
    const { sink, lines, metrics } = make(bot(slack));
    await sink.start(new AbortController().signal);
    const signal = new AbortController().signal;
    const a = lifecycle('nightly-a', 'uid-a', ['Running', 'Completed']);
    const b = lifecycle('nightly-b', 'uid-b', ['Running', 'Failed']);
    // one event per send, interleaved
    for (let i = 0; i < a.length; i++) {
      assert.deepEqual(await sink.send([out(a[i] as CloudEvent)], signal), [ok]);
      assert.deepEqual(await sink.send([out(b[i] as CloudEvent)], signal), [ok]);
    }
    const parents = slack.parents('C0ALERTS');
    assert.equal(parents.length, 2, 'one parent per Backup');
    const [pa, pb] = parents as [(typeof parents)[0], (typeof parents)[0]];
    assert.match(texts(pa), /Backup shop\/nightly-a/);
    assert.match(pa.text, /Completed/, 'parent A updated in place to its final phase');
    assert.match(pb.text, /Failed/, 'parent B updated in place to its final phase');
    assert.equal(pa.edits.length, 2, 'parent A edited once per later change');
    const ra = slack.replies('C0ALERTS', pa.ts);
    const rb = slack.replies('C0ALERTS', pb.ts);
    assert.equal(ra.length, 2);
    assert.equal(rb.length, 2);
    assert.match(texts(ra[0] as never), /Running/);
    assert.match(texts(ra[1] as never), /Running → Completed/);
    assert.match(texts(rb[1] as never), /~ status\.phase: "Running" → "Failed"/);
    assert.deepEqual(
      rb.map((r) => r.broadcast),
      [false, true],
      'only the reply entering Failed is broadcast',
    );
    assert.deepEqual(
      ra.map((r) => r.broadcast),
      [false, false],
    );
    for (const m of slack.messages) assert.equal(blockKitProblem(m.blocks, m.text), undefined);
    assert.equal(metrics.render().includes(`${SLACK_METRICS.messages}{component="p/slack",method="post"} 2`), true);
    noSecrets(lines, metrics);
  });

  test('the thread map survives a new sink instance (a restart): the thread continues', async () => {
    const slack = await localSlack(fast);
    const events = lifecycle('survivor', 'uid-s', ['Running', 'Failed']);
    const signal = new AbortController().signal;
    const first = make(bot(slack));
    await first.sink.start(signal);
    assert.deepEqual(await first.sink.send([out(events[0] as CloudEvent)], signal), [ok]);
    assert.deepEqual(await first.sink.send([out(events[1] as CloudEvent)], signal), [ok]);
    await first.sink.shutdown(Date.now() + 1000);
    const second = make(bot(slack), first.stateDir);
    await second.sink.start(signal);
    // the last event is sent again (a duplicate after a crash) and then the next one
    assert.deepEqual(await second.sink.send([out(events[1] as CloudEvent), out(events[2] as CloudEvent)], signal), [
      ok,
      ok,
    ]);
    const parents = slack.parents('C0ALERTS');
    assert.equal(parents.length, 1, 'no second thread after the restart');
    const replies = slack.replies('C0ALERTS', (parents[0] as { ts: string }).ts);
    assert.equal(replies.length, 2, 'the duplicate of an event already delivered is not posted again');
    assert.match(texts(replies[1] as never), /Failed/);
    assert.match((parents[0] as { text: string }).text, /Failed/);
  });

  test('a burst for one object coalesces into one reply saying how many changes it folds; counted', async () => {
    const slack = await localSlack(fast);
    const { sink, metrics } = make(bot(slack));
    const signal = new AbortController().signal;
    await sink.start(signal);
    const events = lifecycle('bursty', 'uid-b', ['Pending', 'Running', 'Verifying', 'Failed']);
    await sink.send([out(events[0] as CloudEvent)], signal);
    const r = await sink.send(events.slice(1).map(out), signal);
    assert.deepEqual(r, [ok, ok, ok, ok]);
    const parent = slack.parents('C0ALERTS')[0] as { ts: string; text: string };
    const replies = slack.replies('C0ALERTS', parent.ts);
    assert.equal(replies.length, 1, 'one reply for four changes');
    assert.match(texts(replies[0] as never), /4 changes coalesced/);
    assert.match(texts(replies[0] as never), /\+ status: \{"phase":"Failed"\}```$/m);
    assert.match(parent.text, /Failed/);
    assert.equal(metrics.counter(SLACK_METRICS.coalesced, '').get({ component: 'p/slack', into: 'update' }), 4);
  });

  test('a batch across many objects becomes one digest listing every one of them; counted', async () => {
    const slack = await localSlack(fast);
    const { sink, metrics } = make(bot(slack));
    const signal = new AbortController().signal;
    await sink.start(signal);
    const batch = Array.from({ length: 100 }, (_, i) => out(failed(`db-${i}`, `uid-${i}`)));
    const r = await sink.send(batch, signal);
    assert.equal(r.filter((x) => x.status === 'ok').length, 100);
    assert.equal(slack.messages.length, 1, 'one message for 100 objects');
    const m = slack.messages[0] as { text: string; blocks: unknown[] };
    assert.match(m.text, /100 Backups changed: 100 Failed/);
    for (let i = 0; i < 100; i++) assert.ok(texts(m).includes(`shop/db-${i}\``), `db-${i} listed`);
    assert.equal(blockKitProblem(m.blocks, m.text), undefined);
    assert.equal(metrics.counter(SLACK_METRICS.coalesced, '').get({ component: 'p/slack', into: 'digest' }), 100);
  });

  test('a digest over objects that have threads: their parents are brought to the latest state in the background', async () => {
    const slack = await localSlack(fast);
    const { sink } = make(bot(slack));
    const signal = new AbortController().signal;
    await sink.start(signal);
    const lives = Array.from({ length: 6 }, (_, i) => lifecycle(`t-${i}`, `uid-t${i}`, ['Running', 'Failed']));
    for (const l of lives) assert.deepEqual(await sink.send([out(l[0] as CloudEvent)], signal), [ok]);
    assert.equal(slack.parents('C0ALERTS').length, 6);
    const r = await sink.send(
      lives.flatMap((l) => l.slice(1).map(out)),
      signal,
    );
    assert.equal(r.length, 12);
    assert.ok(r.every((x) => x.status === 'ok'));
    assert.equal(slack.parents('C0ALERTS').length, 7, 'one digest');
    const end = Date.now() + 5000;
    while (
      Date.now() < end &&
      !slack
        .parents('C0ALERTS')
        .slice(0, 6)
        .every((p) => /Failed/.test(p.text))
    )
      await new Promise((res) => setTimeout(res, 20));
    for (const p of slack.parents('C0ALERTS').slice(0, 6)) {
      assert.match(p.text, /phase Failed/, 'the parent shows the latest state');
      assert.equal(slack.replies('C0ALERTS', p.ts).length, 0, 'no reply per object');
      assert.match(texts(p), /\*Changes\*\n3/);
    }
    // a redelivery of what the digest covered is not posted again
    assert.deepEqual(await sink.send([out(lives[0]?.[2] as CloudEvent)], signal), [ok]);
    assert.equal(slack.messages.length, 7);
  });

  test('very long names and huge diffs stay within Block Kit limits (truncated with a marker)', async () => {
    const slack = await localSlack(fast);
    const { sink } = make(bot(slack, { digestThreshold: 2 }));
    const signal = new AbortController().signal;
    await sink.start(signal);
    const long = `x${'y'.repeat(250)}`;
    const huge: Record<string, unknown> = {};
    const old: Record<string, unknown> = {};
    for (let i = 0; i < 400; i++) {
      huge[`key${i}`] = 'v'.repeat(500);
      old[`key${i}`] = 'o';
    }
    const before = backup(long, 'uid-long', 'Running', { huge: old });
    const after = backup(long, 'uid-long', 'Failed', { huge, note: '<b>&' });
    const created = buildEvent(
      { kind: 'added', object: before, reason: 'live', resource: BACKUPS, observedAt: Date.now() } as never,
      {
        clusterName: 'prod',
      },
    );
    const changed = buildEvent(
      {
        kind: 'modified',
        object: after,
        oldObject: before,
        reason: 'live',
        resource: BACKUPS,
        observedAt: Date.now(),
      } as never,
      { clusterName: 'prod' },
    );
    assert.deepEqual(await sink.send([out(created)], signal), [ok]);
    assert.deepEqual(await sink.send([out(changed)], signal), [ok]);
    // a digest of objects with long names
    const many = Array.from({ length: 60 }, (_, i) => out(failed(`${long}-${i}`, `uid-l${i}`)));
    const r = await sink.send(many, signal);
    assert.ok(r.every((x) => x.status === 'ok'));
    assert.equal(slack.requests.filter((q) => q.error !== undefined).length, 0, 'Slack refused nothing');
    for (const m of slack.messages) assert.equal(blockKitProblem(m.blocks, m.text), undefined);
    const parent = slack.parents('C0ALERTS')[0] as { blocks: { type: string; text: { text: string } }[] };
    assert.ok((parent.blocks[0]?.text.text.length ?? 0) <= 150);
    assert.match(parent.blocks[0]?.text.text ?? '', /… \(truncated\)$/);
    const reply = slack.replies('C0ALERTS', (slack.parents('C0ALERTS')[0] as { ts: string }).ts)[0];
    assert.match(texts(reply as never), /more changed paths/);
    assert.ok(!texts(reply as never).includes('<b>'), 'mrkdwn control characters are escaped');
    const digest = slack.parents('C0ALERTS')[1] as { text: string; blocks: unknown[] };
    assert.match(JSON.stringify(digest.blocks), /… and \d+ more/, 'objects that do not fit are counted, not dropped');
  });

  test('pacing: posts to one channel never exceed the rate; a 429 is not retried before its Retry-After', async () => {
    // the local Slack allows 2 per second (burst 1); the sink is told 4 per second: it gets 429s
    const slack = await localSlack({ perChannelPerSecond: 2, burst: 1 });
    const { sink, metrics } = make(bot(slack, { rate: { channelPerSecond: 4 } }));
    const signal = new AbortController().signal;
    await sink.start(signal);
    const results: DeliveryResult[] = [];
    for (let i = 0; i < 6; i++) {
      const [r] = await sink.send([out(failed(`p-${i}`, `uid-p${i}`))], signal);
      results.push(r as DeliveryResult);
    }
    const limited = results.filter((r) => r.status === 'retryable');
    assert.ok(slack.rateLimited.length >= 1, 'the local Slack answered 429 at least once');
    assert.equal(limited.length, slack.rateLimited.length);
    for (const r of limited) assert.equal((r as { retryAfterMs?: number }).retryAfterMs, 1000);
    assert.deepEqual(slack.earlyRetries, [], 'no call came before a Retry-After ran out');
    assert.equal(metrics.counter(SLACK_METRICS.rateLimited, '').get({ component: 'p/slack' }), limited.length);

    // at the configured rate, no 429 at all and posts are spaced
    const slack2 = await localSlack({ perChannelPerSecond: 5, burst: 2 });
    const { sink: paced } = make(bot(slack2, { rate: { channelPerSecond: 5 } }));
    await paced.start(signal);
    for (let i = 0; i < 5; i++) assert.deepEqual(await paced.send([out(failed(`q-${i}`, `uid-q${i}`))], signal), [ok]);
    assert.equal(slack2.rateLimited.length, 0);
    const at = slack2.messages.map((m) => m.at);
    for (let i = 1; i < at.length; i++)
      assert.ok((at[i] as number) - (at[i - 1] as number) >= 150, 'posts spaced by ~200 ms');
  });

  test('invalid_auth / channel_not_found: events kept (retryable, long wait), one log naming the channel, not ready', async () => {
    const slack = await localSlack(fast);
    const { sink, lines, metrics } = make(bot(slack, { configErrorRetryMs: 30_000 }));
    const signal = new AbortController().signal;
    await sink.start(signal);
    for (const error of ['invalid_auth', 'channel_not_found', 'not_in_channel']) {
      slack.failWith = { error };
      const r1 = await sink.send([out(failed('a', 'uid-a'))], signal);
      const r2 = await sink.send([out(failed('a', 'uid-a'))], signal);
      for (const r of [r1[0], r2[0]]) {
        assert.equal(r?.status, 'retryable');
        assert.equal((r as { retryAfterMs?: number }).retryAfterMs, 30_000);
      }
      const st = (sink as Sink & { status(): { ready: boolean; reasons: string[] } }).status();
      assert.equal(st.ready, false);
      assert.match(st.reasons[0] ?? '', new RegExp(`channel C0ALERTS: ${error}`));
      const logged = lines.filter((l) => String(l.msg).includes(error));
      assert.equal(logged.length, 1, `${error} logged once`);
      assert.equal(logged[0]?.level, 'error');
      assert.equal(logged[0]?.code, 'CRB_DELIVERY_CONFIG');
    }
    assert.match(
      String(lines.find((l) => String(l.msg).includes('not_in_channel'))?.msg),
      /invite the bot/,
      'the log says what to do',
    );
    // the delivery queue reports the sink's reason to /readyz
    const queue = new DeliveryQueue(sink, resolveDeliveryConfig(), {
      id: 'p/slack',
      logger: captureLogger().logger,
      metrics,
      deadLetter: new MemoryDeadLetter(),
    });
    assert.equal(queue.status().ready, false);
    assert.match(queue.status().reasons[0] ?? '', /^p\/slack: Slack refuses the configuration for channel C0ALERTS/);
    slack.failWith = null;
    assert.deepEqual(await sink.send([out(failed('a', 'uid-a'))], signal), [ok]);
    assert.equal(queue.status().ready, true, 'ready again once Slack accepts');
    noSecrets(lines, metrics);
  });

  test('invalid_blocks is permanent and the dead letter holds the payload; no secret in it', async () => {
    const slack = await localSlack(fast);
    const { sink, lines, metrics } = make(bot(slack));
    const signal = new AbortController().signal;
    await sink.start(signal);
    slack.failWith = { error: 'invalid_blocks' };
    const r = await sink.send([out(failed('poison', 'uid-x'))], signal);
    assert.equal(r[0]?.status, 'permanent');
    const err = (r[0] as { error: string }).error;
    assert.match(err, /chat\.postMessage to channel C0ALERTS: Slack answered invalid_blocks/);
    assert.match(err, /payload: \{"text":"Backup shop\/poison/);
    noSecrets(lines, metrics, r);
  });
});

describe('slack sink, incoming-webhook mode', () => {
  test('one message per object change (coalesced within a batch), digests for bursts; the URL path stays secret', async () => {
    const slack = await localSlack(fast);
    const cfg: SlackSinkConfig = {
      webhookUrl: slack.webhookUrl,
      rate: { channelPerSecond: 20, workspacePerMinute: 6000, workspaceBurst: 50 },
    };
    const { sink, lines, metrics } = make(cfg);
    const signal = new AbortController().signal;
    await sink.start(signal);
    const events = lifecycle('hooked', 'uid-h', ['Running', 'Failed']);
    assert.deepEqual(await sink.send([out(events[0] as CloudEvent)], signal), [ok]);
    assert.deepEqual(await sink.send(events.slice(1).map(out), signal), [ok, ok]);
    assert.equal(slack.messages.length, 2);
    assert.match(texts(slack.messages[1] as never), /2 changes coalesced/);
    assert.deepEqual(
      await sink.send(
        Array.from({ length: 10 }, (_, i) => out(failed(`w-${i}`, `uid-w${i}`))),
        signal,
      ),
      Array.from({ length: 10 }, () => ok),
    );
    assert.equal(slack.messages.length, 3, 'ten objects in one digest');
    slack.failWith = { error: 'invalid_token' };
    const r = await sink.send([out(failed('z', 'uid-z'))], signal);
    assert.equal(r[0]?.status, 'retryable');
    assert.match(
      (r[0] as { error: string }).error,
      /incoming webhook http:\/\/127\.0\.0\.1:\d+: invalid_token; check webhookUrl/,
    );
    noSecrets(lines, metrics, r);
  });
});

test('incoming webhook that never answers: retried, and the timeout error names only the origin', async () => {
  const server = net.createServer(() => {}); // accepts, never answers
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const { sink, lines, metrics } = make({ webhookUrl: `http://127.0.0.1:${port}/services/${HOOK}`, timeoutMs: 200 });
    const r = await sink.send([out(failed('slow', 'uid-slow'))], new AbortController().signal);
    assert.equal(r[0]?.status, 'retryable');
    assert.match((r[0] as { error: string }).error, new RegExp(`incoming webhook http://127.0.0.1:${port}: `));
    noSecrets(lines, metrics, r);
  } finally {
    server.close();
  }
});

describe('slack sink config', () => {
  const check = (c: SlackSinkConfig) => (slackSink.check?.(c) ?? []).map((p) => `${p.pointer} ${p.message}`);
  test('one mode, a channel with a token, http(s) URLs, templates that compile (with the position)', () => {
    assert.match(check({})[0] ?? '', /needs webhookUrl .* or token and channel/);
    assert.match(check({ token: 'xoxb-1', webhookUrl: 'https://hooks.slack.com/x' }).join('\n'), /choose one mode/);
    assert.match(check({ token: 'xoxb-1' }).join('\n'), /^\/channel is required with token/);
    assert.match(check({ webhookUrl: 'https://h/x', channel: 'C1' }).join('\n'), /^\/channel cannot be set/);
    assert.match(check({ webhookUrl: 'ftp://h/x' }).join('\n'), /^\/webhookUrl uses ftp/);
    assert.match(check({ token: 'abc', channel: 'C1' }).join('\n'), /^\/token is not a Slack token/);
    assert.deepEqual(
      check({ token: 'xoxb-1', channel: 'C1', linkTemplate: 'https://c/{{ object.metadata.name }}' }),
      [],
    );
    // the shared {{ CEL }} engine: the problem and its offset within the template (validate turns
    // it into the file's line and column)
    const problems = (c: SlackSinkConfig) =>
      (slackSink.check?.(c) ?? []) as { pointer: string; message: string; offset?: number }[];
    const bad = problems({ token: 'xoxb-1', channel: 'C1', linkTemplate: 'https://c/{{ object.metadata.name + }}' });
    assert.equal(bad.length, 1);
    assert.equal(bad[0]?.pointer, '/linkTemplate');
    assert.match(bad[0]?.message ?? '', /^in placeholder \{\{ object\.metadata\.name \+ \}\}: CEL syntax error/);
    assert.equal(typeof bad[0]?.offset, 'number');
    const open = problems({ token: 'xoxb-1', channel: 'C1', templates: { header: 'x {{ oops' } });
    assert.equal(open[0]?.pointer, '/templates/header');
    assert.match(open[0]?.message ?? '', /not closed/);
    assert.equal(open[0]?.offset, 2, 'the offset of the unclosed {{');
  });

  test('templates override the header and text; the link is rendered per event', async () => {
    const slack = await localSlack(fast);
    const { sink } = make(
      bot(slack, {
        linkTemplate: 'https://console.example/backups/{{ object.metadata.namespace }}/{{ object.metadata.name }}',
        templates: {
          header: 'Backup {{ object.metadata.name }} is {{ object.status.phase }}',
          text: 'fallback {{ change }}',
        },
      }),
    );
    const signal = new AbortController().signal;
    await sink.start(signal);
    await sink.send([out(failed('tpl', 'uid-t'))], signal);
    const m = slack.messages[0] as { text: string; blocks: { type: string; text?: { text: string } }[] };
    assert.equal(m.blocks[0]?.text?.text, 'Backup tpl is Failed');
    assert.equal(m.text, 'fallback status.changed');
    assert.ok(JSON.stringify(m.blocks).includes('<https://console.example/backups/shop/tpl|Open>'));
  });

  test('message parts a transform stage set on the event (data.slack) override the templates and the default', async () => {
    const slack = await localSlack(fast);
    const { sink } = make(bot(slack, { templates: { header: 'from the sink {{ change }}' } }));
    const signal = new AbortController().signal;
    await sink.start(signal);
    const shaped = out(failed('shaped', 'uid-s'));
    const data = shaped.event.data as Record<string, unknown>;
    shaped.event = {
      ...shaped.event,
      data: {
        ...data,
        slack: { header: 'Backup shaped FAILED', text: 'shaped failed', summary: '*disk full*' },
      } as never,
    };
    await sink.send([shaped], signal);
    await sink.send([out(failed('plain', 'uid-p'))], signal);
    const [a, b] = slack.messages as { text: string; blocks: { type: string; text?: { text: string } }[] }[];
    assert.equal(a?.blocks[0]?.text?.text, 'Backup shaped FAILED');
    assert.equal(a?.text, 'shaped failed');
    assert.ok(a?.blocks.some((x) => x.type === 'section' && x.text?.text === '*disk full*'));
    assert.equal(b?.blocks[0]?.text?.text, 'from the sink status.changed', 'without data.slack: the sink template');
  });
});
