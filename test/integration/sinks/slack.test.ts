/**
 * The slack sink on the real stack: the real `crbridge` CLI, the real kube-apiserver and Kafka, and
 * the local Slack (test/support/slack-server.ts: 1 msg/s per channel with 429 + Retry-After, Block
 * Kit's limits enforced). One crbridge run (killed and restarted once) with two pipeline files:
 *
 * - a lifecycle pipeline (every change of the Backups of one namespace → channel C-LIFE): three
 *   Backups (one with a 240-character name and, later, a 20 KB status message full of mrkdwn
 *   characters) are created and go Running; crbridge is killed (SIGKILL) and started again; they go
 *   Completed / Failed. Each has exactly one thread, its replies in order, its parent updated to the
 *   final phase — the thread continued across the restart.
 * - pipelines/backup-alerts.yaml itself (its namespaces narrowed to a fresh one): 100 Backups fail
 *   within 2 s → every change is on Kafka, a bounded number of Slack messages (digests) name all 100,
 *   no call comes before a Retry-After ran out, the coalesced events are counted in /metrics, and
 *   heartbeat-only updates of the failed Backups reach Kafka but not Slack.
 *
 * Every message the run produced passes Block Kit's limits as the local Slack enforces them, and the
 * token appears in no log line or metric.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { KubeObject } from '../../../src/events/delta.ts';
import { CUT } from '../../../src/sinks/slack/message.ts';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { readTopic } from '../../support/events.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { metricSum } from '../../support/prom.ts';
import { blockKitProblem, LocalSlack, type SlackMessage } from '../../support/slack-server.ts';
import { waitFor as eventually, loadStackEnv, repoRoot } from '../../support/stack.ts';
import { logs } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool } from '../source/helpers.ts';

const env = loadStackEnv();
const TOKEN = `xoxb-${randomBytes(16).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-slack-it-'));
const LIFE = 'C-LIFE';
const ALERTS = 'C-ALERTS';
const N = 100;

let slack: LocalSlack | undefined;
after(async () => {
  await slack?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Every text of a message as Slack shows it: the fallback and each block's. */
function texts(m: SlackMessage): string {
  const out = [m.text];
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) k === 'text' && typeof x === 'string' ? out.push(x) : walk(x);
  };
  walk(m.blocks);
  return out.join('\n');
}

test('slack: a thread per Backup across a restart; 100 failures in 2 s become a few digests; Block Kit limits hold', async (t) => {
  const s = new LocalSlack({ token: TOKEN });
  slack = s;
  await s.start();
  const lifeNs = freshNamespace('slk-life');
  const burstNs = freshNamespace('slk-burst');
  const topic = `slack-it-${Date.now().toString(36)}`;

  // the lifecycle pipeline: every change of lifeNs to one channel
  const lifeFile = join(dir, 'life.yaml');
  writeFileSync(
    lifeFile,
    backupsPipelineYaml({
      name: 'life',
      namespaces: [lifeNs],
      sinks: `    - name: slack
      type: slack
      token: \${env:SLACK_BOT_TOKEN}
      channel: ${LIFE}
      apiUrl: \${env:SLACK_API_URL}
      configErrorRetryMs: 1500
`,
    }),
  );
  // the example pipeline, narrowed to burstNs
  const example = readFileSync(join(repoRoot, 'pipelines', 'backup-alerts.yaml'), 'utf8');
  const alertsFile = join(dir, 'backup-alerts.yaml');
  writeFileSync(
    alertsFile,
    example.replace(/resource: backups\n/g, `resource: backups\n    namespaces: [${burstNs}]\n`),
  );

  const state = join(dir, 'state');
  const procEnv = {
    ...process.env,
    ...env,
    SLACK_BOT_TOKEN: TOKEN,
    SLACK_API_URL: s.apiUrl,
    SLACK_CHANNEL: ALERTS,
    BACKUP_EVENTS_TOPIC: topic,
  };
  const args = runArgs([lifeFile, alertsFile], state, ['--cluster-name', 'it']);
  let proc = startCrbridge(args, procEnv);
  t.after(() => proc.stop('SIGKILL'));
  let port = await proc.port();
  const ready = async () =>
    eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');
  await ready();

  const api = adminApi();
  const coll = (ns: string) => `/apis/example.com/v1/namespaces/${ns}/backups`;
  const setStatus = (ns: string, name: string, status: Record<string, unknown>) =>
    api.request('PATCH', `${coll(ns)}/${name}/status`, undefined, { status }) as Promise<KubeObject>;

  // --- lifecycle, part 1: created → Running
  const longName = `lc-long-${'x'.repeat(232)}`;
  const lifeNames = ['lc-a', 'lc-b', longName];
  for (const n of lifeNames) await createBackup(api, lifeNs, n);
  await eventually(() => s.parents(LIFE).length === 3, 20_000, 'three thread parents');
  for (const n of lifeNames) await setStatus(lifeNs, n, { phase: 'Running' });
  await eventually(
    () => s.parents(LIFE).every((p) => p.text.includes('Running') && s.replies(LIFE, p.ts).length === 1),
    20_000,
    'each thread: one reply, parent updated to Running',
  );
  await new Promise((r) => setTimeout(r, 500)); // the thread map is written once the send returns

  // --- kill crbridge mid-way, start it again on the same state dir
  await proc.stop('SIGKILL');
  proc = startCrbridge(args, procEnv);
  port = await proc.port();
  await ready();

  // --- lifecycle, part 2: the threads continue
  const huge = `<b>&amp; ${'Error: disk full; '.repeat(1200)}`;
  await setStatus(lifeNs, 'lc-a', { phase: 'Completed' });
  await setStatus(lifeNs, 'lc-b', { phase: 'Failed' });
  await setStatus(lifeNs, longName, { phase: 'Failed', message: huge });
  const final: Record<string, string> = { 'lc-a': 'Completed', 'lc-b': 'Failed', [longName]: 'Failed' };
  await eventually(
    () => s.parents(LIFE).every((p) => s.replies(LIFE, p.ts).length >= 2 && /Completed|Failed/.test(p.text)),
    30_000,
    'each thread: a second reply, parent updated to the final phase',
  );
  const parents = s.parents(LIFE);
  assert.equal(parents.length, 3, 'still one thread per Backup after the restart');
  for (const [name, phase] of Object.entries(final)) {
    const p = parents.find((x) => texts(x).includes(name.slice(0, 60)));
    assert.ok(p, `the thread of ${name.slice(0, 12)}…`);
    assert.match(p.text, new RegExp(phase), 'the parent shows the final phase');
    const replies = s.replies(LIFE, p.ts);
    assert.equal(replies.length, 2, `${name.slice(0, 12)}…: one reply per change, none repeated`);
    assert.match(texts(replies[0] as SlackMessage), /Running/);
    assert.match(texts(replies[1] as SlackMessage), new RegExp(`Running → ${phase}`), 'replies in order');
    assert.equal((replies[1] as SlackMessage).broadcast, phase === 'Failed', 'failures broadcast to the channel');
  }
  const longParent = parents.find((x) => texts(x).includes('lc-long')) as SlackMessage;
  const head = ((longParent.blocks ?? [])[0] as { text: { text: string } }).text.text;
  assert.ok(head.length <= 150 && head.endsWith(CUT), 'a long name is cut in the header with the marker');
  const longReply = s.replies(LIFE, longParent.ts)[1] as SlackMessage;
  assert.match(texts(longReply), /status\.message/, 'the huge diff is shown, cut to fit');
  assert.ok(!texts(longReply).includes('<b>'), 'mrkdwn characters are escaped');

  // --- 100 Backups fail within 2 s (pipelines/backup-alerts.yaml)
  const names = Array.from({ length: N }, (_, i) => `f-${String(i).padStart(3, '0')}`);
  await pool(names, 8, (n) => createBackup(api, burstNs, n));
  await pool(names, 8, (n) => setStatus(burstNs, n, { phase: 'Running' }));
  const before = s.messages.filter((m) => m.channel === ALERTS).length;
  assert.equal(before, 0, 'creations and Running reach Kafka only');
  s.throttle(ALERTS, 2); // the first post of the burst gets a 429 with Retry-After: 2
  const t0 = Date.now();
  await pool(names, 32, (n) => setStatus(burstNs, n, { phase: 'Failed' }));
  const burstMs = Date.now() - t0;
  // 2 s on an idle machine; a loaded one takes longer — still far faster than 1 message per second
  assert.ok(burstMs < 10_000, `100 failures in ${burstMs} ms`);
  const alerts = () => s.messages.filter((m) => m.channel === ALERTS);
  await eventually(
    () => {
      const all = alerts().map(texts).join('\n');
      return names.every((n) => all.includes(`${burstNs}/${n}`));
    },
    30_000,
    'every failed Backup named in Slack',
  );
  const burstMessages = alerts();
  t.diagnostic(
    `100 failures applied in ${burstMs} ms → ${burstMessages.length} Slack messages; 429s so far: ${s.rateLimited.length}`,
  );
  assert.ok(burstMessages.length <= 12, `${burstMessages.length} messages for 100 failures`);
  assert.ok(
    burstMessages.some((m) => /\d+ Backups changed: \d+ Failed/.test(m.text)),
    'at least one digest',
  );
  assert.equal(
    burstMessages.filter((m) => m.threadTs !== undefined).length,
    0,
    'one failure per Backup: no reply, only parents and digests',
  );

  // --- heartbeat-only updates: to Kafka, not to Slack
  for (const n of names.slice(0, 5))
    await setStatus(burstNs, n, { phase: 'Failed', lastBackupTime: new Date().toISOString() });
  const onKafka = await readTopic(env.KAFKA_BROKERS, topic, 3 * N + 5);
  assert.equal(onKafka.length, 3 * N + 5, 'every Backup change on Kafka (created, Running, Failed, 5 heartbeats)');
  assert.equal(alerts().length, burstMessages.length, 'no Slack message for a heartbeat');

  // --- pacing and limits as the local Slack saw them
  assert.deepEqual(s.earlyRetries, [], 'no call before its Retry-After ran out');
  assert.ok(s.rateLimited.length >= 1 && s.rateLimited.length <= 3, `${s.rateLimited.length} 429s`);
  const limited = s.rateLimited.find((r) => r.channel === ALERTS) as { at: number; retryAfterMs: number };
  const next = s.requests.find((r) => r.channel === ALERTS && r.at > limited.at) as { at: number };
  assert.ok(
    next.at - limited.at >= limited.retryAfterMs,
    `the next call came ${next.at - limited.at} ms after the 429`,
  );
  // the local Slack's rate (1/s per channel, burst 2) held: no 5 s window with more than 5 + 2 posts
  for (const ch of [LIFE, ALERTS]) {
    const at = s.messages.filter((m) => m.channel === ch).map((m) => m.at);
    for (const a of at) assert.ok(at.filter((b) => b >= a && b < a + 5000).length <= 7, `${ch} over its rate`);
  }
  const refused = s.requests.filter((r) => r.error !== undefined && r.error !== 'ratelimited');
  assert.deepEqual(
    refused.map((r) => r.error),
    [],
    'Slack refused no message (Block Kit limits)',
  );
  for (const m of s.messages) assert.equal(blockKitProblem(m.blocks, m.text), undefined);
  for (const m of s.messages)
    for (const e of m.edits) assert.equal(blockKitProblem(e.blocks, e.text), undefined, 'every version of a parent');

  // --- metrics: what was coalesced is counted; messages counted
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const single = burstMessages.filter((m) => !/Backups changed/.test(m.text)).length;
  const digested = metricSum(metrics, 'crbridge_slack_coalesced_events_total', {
    component: 'backup-alerts/slack',
    into: 'digest',
  });
  assert.equal(digested + single, N, `${digested} failures in digests + ${single} alone`);
  assert.equal(
    metricSum(metrics, 'crbridge_slack_messages_total', { component: 'backup-alerts/slack' }),
    burstMessages.length,
  );

  // --- the bot is removed from a channel: events kept, /readyz says why, delivered once it is back
  s.failWith = { error: 'not_in_channel', match: (r) => r.channel === LIFE };
  await setStatus(lifeNs, 'lc-a', { phase: 'Completed', message: 'verified' });
  const why = await eventually(
    async () => {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`);
      const body = await r.text();
      return r.status === 503 && body.includes('not_in_channel') ? body : undefined;
    },
    20_000,
    '/readyz 503 naming the Slack problem',
  );
  assert.match(why, /life\/slack: Slack refuses the configuration for channel C-LIFE: not_in_channel; invite the bot/);
  const aThread = parents.find((x) => texts(x).includes('lc-a')) as SlackMessage;
  assert.equal(s.replies(LIFE, aThread.ts).length, 2, 'nothing posted while refused');
  s.failWith = null;
  await ready();
  await eventually(() => s.replies(LIFE, aThread.ts).length === 3, 20_000, 'the kept change delivered');
  assert.match(
    texts(s.replies(LIFE, aThread.ts)[2] as SlackMessage),
    /status\.message: ∅ → "verified"|\+ status\.message: "verified"/,
  );
  assert.equal(
    logs(proc).filter((l) => String(l.msg).includes('not_in_channel')).length,
    1,
    'logged once, naming the channel',
  );

  // --- no secret anywhere
  const everything = [proc.stderr(), JSON.stringify(logs(proc)), metrics].join('\n');
  assert.ok(!everything.includes(TOKEN), 'the token leaked');
  assert.ok(!everything.includes(TOKEN.slice(5)), 'the token leaked');
});
