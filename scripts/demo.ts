/**
 * `npm run demo`: a self-contained demo on the local real stack. Brings the stack up (building it
 * once), installs the Backup CRD, runs crbridge with a pipeline (an enrich stage tagging each event
 * with its database and phase) to Kafka and a file, walks a few Backups through their lifecycle,
 * and shows the CloudEvents that arrived in Kafka.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (s: string) => process.stdout.write(`\n\u001b[1m▶ ${s}\u001b[0m\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// kafkajs' consumer trips Node's TimeoutNegativeWarning (harmless); keep the demo output clean.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (w.name !== 'TimeoutNegativeWarning') process.stderr.write(`${w.name}: ${w.message}\n`);
});

say('Bringing up the local real stack (kube-apiserver + etcd, Kafka, Jaeger)');
execFileSync(process.execPath, [join(root, 'test/infra/stack.ts'), 'up'], { stdio: 'inherit' });
const env: Record<string, string> = {};
for (const line of readFileSync(join(root, '.stack/env'), 'utf8').split('\n')) {
  const m = /^(?:export\s+)?([A-Z_]+)=(.*)$/.exec(line.trim());
  if (m) env[m[1] as string] = (m[2] as string).replace(/^['"]|['"]$/g, '');
}
const kubectlBin = join(env.CRBRIDGE_STACK_BIN ?? '', 'kubectl');
const kubectl = (args: string[], input?: string) =>
  execFileSync(existsSync(kubectlBin) ? kubectlBin : 'kubectl', args, {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    input,
  });

say('Installing the Backup CRD (backups.example.com/v1)');
kubectl(['apply', '-f', join(root, 'test/fixtures/crds/backup.yaml')]);
kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/backups.example.com']);
const ns = `demo-${Date.now().toString(36)}`;
const topic = `demo-backups-${Date.now().toString(36)}`;
kubectl(['create', 'namespace', ns]);

const dir = mkdtempSync(join(tmpdir(), 'crbridge-demo-'));
const audit = join(dir, 'audit.jsonl');
const pipeline = join(dir, 'demo.yaml');
writeFileSync(
  pipeline,
  `apiVersion: crbridge.io/v1alpha1
kind: Pipeline
metadata:
  name: demo
spec:
  source:
    group: example.com
    version: v1
    resource: backups
    namespaces: [${ns}]
  stages:
    - type: enrich
      name: tag
      attributes:
        database: object.spec.databaseName
        phase: 'has(object.status) && has(object.status.phase) ? object.status.phase : null'
  sinks:
    - name: events
      type: kafka
      brokers: ["\${env:KAFKA_BROKERS}"]
      topic: ${topic}
    - name: audit
      type: file
      path: ${audit}
`,
);

say(`Starting crbridge: pipeline ${pipeline}`);
const child = spawn(
  process.execPath,
  [
    join(root, 'dist/cli.js'),
    'run',
    '-c',
    pipeline,
    '--state-dir',
    join(dir, 'state'),
    '--http-port',
    '0',
    '--http-host',
    '127.0.0.1',
    '--cluster-name',
    'demo',
  ],
  {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'pipe'],
  },
);
let logs = '';
child.stderr?.setEncoding('utf8').on('data', (d: string) => {
  logs += d;
});
for (let i = 0; i < 100 && !logs.includes('crbridge started'); i++) await sleep(100);

say(`Walking three Backups through their lifecycle in namespace ${ns}`);
const backup = (name: string, db: string) =>
  JSON.stringify({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: { name, namespace: ns },
    spec: { databaseName: db, schedule: '0 3 * * *' },
  });
for (const [name, db] of [
  ['orders', 'orders-db'],
  ['users', 'users-db'],
  ['billing', 'billing-db'],
]) {
  kubectl(['apply', '-f', '-'], backup(name as string, db as string));
}
kubectl([
  '-n',
  ns,
  'patch',
  'backups.example.com',
  'orders',
  '--type=merge',
  '-p',
  '{"spec":{"schedule":"30 2 * * *"}}',
]);
for (const phase of ['Running', 'Completed']) {
  kubectl([
    '-n',
    ns,
    'patch',
    'backups.example.com',
    'orders',
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status: { phase, lastBackupTime: new Date().toISOString() } }),
  ]);
}
kubectl([
  '-n',
  ns,
  'patch',
  'backups.example.com',
  'users',
  '--subresource=status',
  '--type=merge',
  '-p',
  '{"status":{"phase":"Failed","message":"disk full"}}',
]);
kubectl(['-n', ns, 'delete', 'backups.example.com', 'billing']);

say(`Reading the CloudEvents from Kafka topic ${topic}`);
const kafka = new Kafka({
  clientId: 'crbridge-demo',
  brokers: (env.KAFKA_BROKERS ?? '').split(','),
  logLevel: logLevel.NOTHING,
});
const consumer = kafka.consumer({ groupId: `demo-${Date.now()}` });
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
const rows: string[][] = [];
await consumer.run({
  eachMessage: async ({ message }) => {
    const h = (k: string) => String(message.headers?.[k] ?? '');
    rows.push([
      h('ce_type'),
      h('ce_subject'),
      h('ce_database'),
      h('ce_phase'),
      h('ce_id').slice(0, 16),
      `${message.value?.length ?? 0} B`,
    ]);
  },
});
for (let i = 0; i < 150 && rows.length < 8; i++) await sleep(200);
await consumer.disconnect();
const head = ['type', 'subject', 'database (enrich)', 'phase (enrich)', 'id', 'size'];
const widths = head.map((_, i) => Math.max(...[head, ...rows].map((r) => (r[i] ?? '').length)));
for (const r of [head, ...rows]) process.stdout.write(`  ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ')}\n`);
process.stdout.write(`\n  ${rows.length} events in Kafka; the same events, structured, in ${audit}:\n`);
process.stdout.write(`  ${(readFileSync(audit, 'utf8').split('\n')[0] ?? '').slice(0, 300)}…\n`);

say('Stopping crbridge (SIGTERM drains the queues)');
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
process.stdout.write(`\nThe stack keeps running for you: env in .stack/env; stop it with: npm run stack -- down\n`);
process.exit(rows.length >= 8 ? 0 : 1);
