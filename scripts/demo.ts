/**
 * `npm run demo [-- --keep]`: the whole product on the local real stack, in about a minute.
 *
 * Brings the stack up (kube-apiserver + etcd, Kafka, Jaeger; built once into ~/.cache/crbridge),
 * installs the seed's Backup CRD, starts two stand-ins for the outside world (a webhook receiver
 * that verifies Standard Webhooks signatures, a Slack-compatible server) and runs crbridge with the
 * example pipelines of `pipelines/`: every Backup change to Kafka, failures to Slack as a thread per
 * Backup, every change signed to the webhook, each Backup's lifecycle as a trace in Jaeger. Then it
 * tells a short story — Backups created, running, completed, one failed, one deleted, crbridge
 * stopped in the middle while the cluster keeps changing — and prints what arrived where, and
 * whether anything was lost. `--keep` leaves crbridge and the stack running for Jaeger's UI and
 * `crbridge top`; otherwise it ends cleanly (and takes the stack down if it brought it up).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { lifecycleTraceId } from '../src/events/trace-context.ts';
import { down, isUp, repoRoot as root, up } from '../test/infra/stack.ts';
import { type RunningCrbridge, startCrbridge } from '../test/support/crbridge.ts';
import { LocalSlack } from '../test/support/slack-server.ts';
import { WebhookReceiver } from '../test/support/webhook-receiver.ts';

const keep = process.argv.includes('--keep');
const bold = (s: string) => `\u001b[1m${s}\u001b[0m`;
const say = (s: string) => process.stdout.write(`\n${bold(`▶ ${s}`)}\n`);
const line = (s = '') => process.stdout.write(`  ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// kafkajs' consumer trips Node's TimeoutNegativeWarning (harmless); keep the demo output clean.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (w.name !== 'TimeoutNegativeWarning') process.stderr.write(`${w.name}: ${w.message}\n`);
});

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

function table(head: string[], rows: string[][]) {
  const widths = head.map((_, i) => Math.max(...[head, ...rows].map((r) => (r[i] ?? '').length)));
  for (const [n, r] of [head, ...rows].entries()) {
    const text = r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
    line(n === 0 ? bold(text) : text);
  }
}

// ---------------------------------------------------------------------------------------------
say('Bringing up the local real stack (kube-apiserver + etcd, Kafka, Jaeger)');
const stackWasUp = await isUp();
const env = await up();
const kubectlBin = join(env.CRBRIDGE_STACK_BIN ?? '', 'kubectl');
const kubeEnv = { ...process.env, ...env };
const kubectl = (args: string[], input?: string): string =>
  execFileSync(existsSync(kubectlBin) ? kubectlBin : 'kubectl', args, { env: kubeEnv, encoding: 'utf8', input });

say('Installing the Backup CRD (backups.example.com/v1)');
kubectl(['apply', '-f', join(root, 'test/fixtures/crds/backup.yaml')]);
kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/backups.example.com']);
const run = Date.now().toString(36);
const ns = `demo-${run}`;
kubectl(['create', 'namespace', ns]);

say('Starting the outside world: a webhook receiver (verifies signatures) and a local Slack');
const secret = `whsec_${randomBytes(32).toString('base64')}`;
const receiver = new WebhookReceiver({ secrets: [secret] });
const webhookUrl = `${await receiver.start()}/events`;
const slack = new LocalSlack();
await slack.start();
const slackApi = slack.apiUrl;
const channel = 'backup-alerts';
const topic = `demo-backup-events-${run}`;
line(`webhook receiver ${webhookUrl}`);
line(`local Slack       ${slackApi}`);

const stateDir = mkdtempSync(join(tmpdir(), 'crbridge-demo-'));
// The example pipelines as they are, narrowed to this run's namespace (a stack used before may hold
// other Backups, which a fresh state dir would otherwise emit as existing objects).
const pipelines = ['backup-alerts.yaml', 'backups-to-webhook.yaml', 'backup-lifecycles.yaml']
  .map((f) => join(root, 'pipelines', f))
  .filter((f) => existsSync(f))
  .map((f) => {
    const copy = join(stateDir, f.split('/').pop() as string);
    writeFileSync(
      copy,
      readFileSync(f, 'utf8').replace(/resource: backups\n/g, `resource: backups\n    namespaces: [${ns}]\n`),
    );
    return copy;
  });
const tracing = pipelines.some((f) => f.endsWith('backup-lifecycles.yaml'));
const crbridgeEnv: NodeJS.ProcessEnv = {
  ...kubeEnv,
  BACKUP_EVENTS_TOPIC: topic,
  SLACK_BOT_TOKEN: slack.token,
  SLACK_API_URL: slackApi,
  SLACK_CHANNEL: channel,
  WEBHOOK_URL: webhookUrl,
  WEBHOOK_SECRET: secret,
};
const args = [
  'run',
  ...pipelines.flatMap((p) => ['-c', p]),
  '--state-dir',
  join(stateDir, 'state'),
  '--http-port',
  '0',
  '--http-host',
  '127.0.0.1',
  '--cluster-name',
  'demo',
];
async function startIt(): Promise<{ proc: RunningCrbridge; port: number }> {
  const proc = startCrbridge(args, crbridgeEnv);
  const port = await proc.port();
  await until('crbridge ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.ok);
  return { proc, port };
}
say(`Starting crbridge with ${pipelines.map((p) => `pipelines/${p.split('/').pop()}`).join(', ')} (narrowed to ${ns})`);
let crb = await startIt();
line(`crbridge ready; metrics on http://127.0.0.1:${crb.port}/metrics`);

// ---------------------------------------------------------------------------------------------
/** What the story did, for the "nothing lost" check: the event ids crbridge must deliver. */
const expected = new Map<string, string>();
const uids = new Map<string, string>();
const apply = (name: string, db: string) => {
  const o = JSON.parse(
    kubectl(
      ['apply', '-o', 'json', '-f', '-'],
      JSON.stringify({
        apiVersion: 'example.com/v1',
        kind: 'Backup',
        metadata: { name, namespace: ns },
        spec: { databaseName: db, schedule: '0 3 * * *' },
      }),
    ),
  );
  uids.set(name, o.metadata.uid);
  expected.set(`${o.metadata.uid}.${o.metadata.resourceVersion}`, `${name} created`);
};
const phase = (name: string, p: string, extra: Record<string, unknown> = {}) => {
  const o = JSON.parse(
    kubectl([
      '-n',
      ns,
      'patch',
      'backups.example.com',
      name,
      '--subresource=status',
      '--type=merge',
      '-o',
      'json',
      '-p',
      JSON.stringify({ status: { phase: p, ...extra } }),
    ]),
  );
  expected.set(`${o.metadata.uid}.${o.metadata.resourceVersion}`, `${name} → ${p}`);
};
const remove = (name: string) => {
  kubectl(['-n', ns, 'delete', 'backups.example.com', name, '--wait=true']);
  expected.set(`${uids.get(name)}.deleted`, `${name} deleted`);
};

say(`The story, in namespace ${ns}`);
line('orders, users and billing Backups are created and start running');
for (const [name, db] of [
  ['orders', 'orders-db'],
  ['users', 'users-db'],
  ['billing', 'billing-db'],
] as const) {
  apply(name, db);
  phase(name, 'Pending');
}
await sleep(1200); // phases take real time, so the traces show real durations
for (const name of ['orders', 'users', 'billing']) phase(name, 'Running');
await sleep(1500);
line('billing is deleted while running');
remove('billing');
await sleep(1000);

line('crbridge is stopped (SIGTERM: it drains and checkpoints) …');
await crb.proc.stop('SIGTERM');
line('… and while it is down: orders completes, users fails, a new Backup "audit" is created');
const beforeDown = expected.size;
phase('orders', 'Completed', { lastBackupTime: new Date().toISOString() });
phase('users', 'Failed', { message: 'disk full on users-db-0' });
apply('audit', 'audit-db');
await sleep(500);
const whileDown = expected.size - beforeDown;
line('crbridge starts again: it resumes from its checkpoint');
crb = await startIt();
await sleep(1000);
phase('audit', 'Pending');
await sleep(1000);
phase('audit', 'Running');

// ---------------------------------------------------------------------------------------------
say(`What arrived in Kafka (topic ${topic})`);
const kafka = new Kafka({
  clientId: 'crbridge-demo',
  brokers: (env.KAFKA_BROKERS ?? '').split(','),
  logLevel: logLevel.NOTHING,
});
const consumer = kafka.consumer({ groupId: `demo-${run}` });
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
const records: { id: string; type: string; subject: string; traceparent: string }[] = [];
await consumer.run({
  eachMessage: async ({ message }) => {
    const h = (k: string) => String(message.headers?.[k] ?? '');
    records.push({
      id: h('ce_id'),
      type: h('ce_type'),
      subject: h('ce_subject'),
      traceparent: h('ce_traceparent') || h('traceparent'),
    });
  },
});
const ours = () => records.filter((r) => r.subject.includes(`/namespaces/${ns}/`) || r.subject.startsWith(`${ns}/`));
const inKafka = () => new Set(records.map((r) => r.id));
await until('every change in Kafka', () => [...expected.keys()].every((id) => inKafka().has(id)), 60_000).catch(
  () => undefined,
);
await consumer.disconnect();
table(
  ['change', 'type', 'subject', 'id'],
  records
    .filter((r) => expected.has(r.id))
    .map((r) => [expected.get(r.id) ?? '', r.type, r.subject, r.id.length > 24 ? `${r.id.slice(0, 24)}…` : r.id]),
);
line(`${ours().length} records for this namespace`);

say(`What the webhook receiver got (${webhookUrl})`);
const delivered = () =>
  receiver.requests.flatMap((r) => r.events.map((e) => ({ ...e, verified: r.verified, status: r.action })));
await until(
  'every change at the webhook',
  () => [...expected.keys()].every((id) => delivered().some((e) => e.id === id)),
  30_000,
).catch(() => undefined);
const ourHooks = delivered().filter((e) => expected.has(e.id));
table(
  ['change', 'webhook-id', 'signature'],
  ourHooks.map((e) => [
    expected.get(e.id) ?? '',
    e.id.length > 24 ? `${e.id.slice(0, 24)}…` : e.id,
    e.verified ? 'verified ✓' : 'INVALID ✗',
  ]),
);
const verified = receiver.requests.filter((r) => r.verified).length;
line(`${receiver.requests.length} requests, ${verified} with a valid Standard Webhooks signature`);

say(`The Slack channel #${channel} (failures only, a thread per Backup)`);
await until(
  'the failure in Slack',
  () => slack.messages.some((m) => /users/.test(m.text) && /Failed/.test(m.text)),
  30_000,
).catch(() => undefined);
const parents = slack.parents(channel);
for (const p of parents) {
  const [title, ...rest] = p.text.split('\n');
  line(bold(title ?? ''));
  for (const l of rest.slice(0, 4)) line(`  ${l.slice(0, 120)}`);
  for (const r of slack.replies(channel, p.ts))
    line(`  ↳ ${(r.text.split('\n')[0] ?? '').slice(0, 120)}${r.broadcast ? '  (also sent to the channel)' : ''}`);
}
if (parents.length === 0)
  line(
    `(no thread; ${slack.requests.length} requests: ${slack.requests.map((r) => `${r.method} ${r.status} ${r.error ?? ''} ${r.channel}`).join('; ')}; ${slack.messages.map((m) => m.text).join(' | ')})`,
  );
let tracesOk = !tracing;
if (tracing) {
  say("Traces in Jaeger (a trace per Backup lifecycle, its id in every event's traceparent)");
  const query = env.JAEGER_QUERY_URL ?? '';
  let complete = 0;
  for (const name of ['orders', 'users', 'billing', 'audit']) {
    const uid = uids.get(name);
    if (!uid) continue;
    const traceId = lifecycleTraceId(uid);
    const fromKafka = ours().find((r) => expected.get(r.id)?.startsWith(`${name} `) && r.traceparent);
    const agrees = fromKafka ? fromKafka.traceparent.split('-')[1] === traceId : false;
    const spans = await until(
      `the trace of ${name} in Jaeger`,
      async () => {
        const r = await fetch(`${query}/api/v3/traces/${traceId}`).catch(() => null);
        if (!r?.ok) return undefined;
        const body = (await r.json()) as {
          result?: { resourceSpans?: { scopeSpans?: { spans?: { name: string; parentSpanId?: string }[] }[] }[] };
        };
        const all = (body.result?.resourceSpans ?? []).flatMap((rs) =>
          (rs.scopeSpans ?? []).flatMap((x) => x.spans ?? []),
        );
        // a finished lifecycle has its root (no parent); audit is still running
        return all.length > 0 && (name === 'audit' || all.some((x) => !x.parentSpanId)) ? all : undefined;
      },
      30_000,
    ).catch(() => [] as { name: string }[]);
    if (spans.length > 0) complete++;
    line(
      `${name.padEnd(8)} ${traceId}  ${String(spans.length).padStart(2)} spans (${[...new Set(spans.map((x) => x.name))].slice(0, 6).join(', ')})${agrees ? '  = Kafka traceparent ✓' : ''}`,
    );
  }
  tracesOk = complete === 4;
  line(`query API: ${query}/api/v3/traces/<trace id>    UI: ${query}/search?service=crbridge-backups`);
}

// ---------------------------------------------------------------------------------------------
say('Nothing lost?');
const missingKafka = [...expected].filter(([id]) => !inKafka().has(id));
const missingHook = [...expected].filter(([id]) => !ourHooks.some((e) => e.id === id));
const badSig = receiver.requests.filter((r) => r.verified === false).length;
const failedInSlack = parents.some((p) => /users/.test(p.text));
line(`${expected.size} changes made, ${whileDown} of them while crbridge was down`);
line(
  `Kafka:   ${expected.size - missingKafka.length}/${expected.size} arrived${missingKafka.length ? `; missing ${missingKafka.map(([, w]) => w).join(', ')}` : ' ✓'}`,
);
line(
  `webhook: ${expected.size - missingHook.length}/${expected.size} arrived, ${badSig} bad signatures${missingHook.length || badSig ? ' ✗' : ' ✓'}`,
);
line(`Slack:   the failed Backup ${failedInSlack ? 'has its thread ✓' : 'is MISSING ✗'}`);
if (tracing) line(`Jaeger:  ${tracesOk ? 'a trace for every Backup ✓' : 'traces MISSING ✗'}`);
const ok = missingKafka.length === 0 && missingHook.length === 0 && badSig === 0 && failedInSlack && tracesOk;
line(ok ? bold('every change arrived everywhere it was routed') : bold('SOMETHING WAS LOST (see above)'));

if (keep) {
  say('Staying up (--keep): Ctrl-C ends it');
  line(`crbridge top:  npx crbridge top --url http://127.0.0.1:${crb.port}/metrics`);
  if (tracing) line(`Jaeger UI:     ${env.JAEGER_QUERY_URL}/search?service=crbridge-backups`);
  line(`make changes:  KUBECONFIG=${env.KUBECONFIG} ${kubectlBin} -n ${ns} get backups`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
}

say('Stopping crbridge and the receivers');
await crb.proc.stop('SIGTERM');
await receiver.close();
await slack.close();
if (!stackWasUp && !keep) {
  await down();
  line('the stack was started for the demo and is down again');
} else line('the stack keeps running (it was up before, or --keep); stop it with: npm run stack -- down');
process.exitCode = ok ? 0 : 1;
