/**
 * On the real stack: `crbridge top` in a real terminal (tmux) against a running `crbridge run`
 * shows the pipeline and its sinks, its numbers move when Backups are created, and `q` quits it
 * (exit 0); the `metrics` sink exports one crbridge_cr_status_phase series per Backup for its phase,
 * removes a deleted one's, counts changes, and keeps the unchanged objects' series across a restart
 * (an object deleted while crbridge was down loses its series); the delivery latency histogram and
 * the process metrics are served.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { cliPath, runArgs, startCrbridge } from '../../support/crbridge.ts';
import { writeBackupsPipeline } from '../../support/pipeline.ts';
import { metricSum } from '../../support/prom.ts';
import { waitFor as eventually, installBackupCrd, kubectl, loadStackEnv } from '../../support/stack.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const ns = `top-${suffix}`;
const socket = `crb-top-${suffix}`;
const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
const screen = () => tmux('capture-pane', '-p', '-t', 'top');

function backup(name: string): string {
  return JSON.stringify({
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: { name, namespace: ns },
    spec: { databaseName: `${name}-db`, schedule: '0 3 * * *' },
  });
}
const phase = (name: string, p: string) =>
  kubectl([
    '-n',
    ns,
    'patch',
    'backups.example.com',
    name,
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status: { phase: p } }),
  ]);
/** The sink row of `top`'s screen: its columns after the name. */
function row(text: string, sink: string): string[] | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`  ${sink} `));
  return line?.trim().split(/\s+/).slice(1);
}
/** The phase series of `name` on `/metrics`: phase → value. */
function phases(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^crbridge_cr_status_phase\{([^}]*)\} (\S+)$/gm)) {
    if (!m[1]?.includes(`name="${name}"`) || !m[1].includes(`namespace="${ns}"`)) continue;
    out[/phase="([^"]*)"/.exec(m[1])?.[1] ?? '?'] = Number(m[2]);
  }
  return out;
}

before(() => {
  installBackupCrd();
  kubectl(['create', 'namespace', ns]);
});
after(() => {
  try {
    tmux('kill-server');
  } catch {}
  kubectl(['delete', 'namespace', ns, '--wait=false']);
});

test('crbridge top in tmux shows the numbers move; the metrics sink exports phases and keeps them across a restart', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'crb-top-'));
  const file = join(dir, 'audit.jsonl');
  const config = writeBackupsPipeline(dir, {
    name: 'top',
    namespaces: [ns],
    sinks: `    - name: audit
      type: file
      path: ${file}
    - name: state
      type: metrics
`,
  });
  const args = runArgs([config], join(dir, 'state'));
  const cb = { ...process.env, ...env };
  let proc = startCrbridge(args, cb);
  after(() => proc.stop('SIGKILL'));
  let port = await proc.port();
  const metrics = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  // a real terminal: a detached tmux session of 160×40 running `crbridge top`
  tmux(
    'new-session',
    '-d',
    '-s',
    'top',
    '-x',
    '160',
    '-y',
    '40',
    `${process.execPath} ${cliPath} top --url http://127.0.0.1:${port}/metrics; echo "top exited $?"; sleep 30`,
  );
  await eventually(async () => row(screen(), 'audit') !== undefined, 15_000, 'top shows the audit sink');
  const first = screen();
  assert.match(first, /crbridge top — http:\/\/127\.0\.0\.1:\d+\/metrics/);
  assert.match(first, /PIPELINE \/ SINK\s+IN\/S\s+OUT\/S\s+DELIVERED\s+QUEUE\s+LAG\s+RETRIES\s+DEAD\s+OUTBOX\s+STATE/);
  assert.match(first, /^top\s/m, 'the pipeline row');
  assert.match(first, /top\/source\s+0\s+\S+\s+0\s+0\s+watching/, 'the source is watching, no objects yet');
  assert.equal(row(first, 'audit')?.[2], '0', 'nothing delivered yet');
  assert.match(first, /rss \d+\.\d MiB/);

  for (const n of ['a', 'b', 'c']) kubectl(['apply', '-f', '-'], { input: backup(n) });
  phase('a', 'Running');
  phase('b', 'Failed');
  // top refreshes every second: the delivered count and the source's objects move
  await eventually(async () => row(screen(), 'audit')?.[2] === '5', 15_000, 'top shows 5 delivered to audit');
  await eventually(async () => /top\/source\s+3\s/.test(screen()), 5_000, 'top shows 3 objects');
  await eventually(async () => /Backup: Failed 1 {2}Running 1/.test(screen()), 5_000, 'top shows the Backups by phase');
  const moved = screen();
  assert.equal(row(moved, 'state')?.[2], '5', 'the metrics sink took the 5 events too');
  assert.equal(row(moved, 'audit')?.at(-1), 'ok');

  tmux('send-keys', '-t', 'top', 'q');
  await eventually(async () => screen().includes('top exited 0'), 5_000, 'q quits top with exit code 0');
  assert.doesNotMatch(screen(), /PIPELINE \/ SINK/, 'the terminal is restored (alternate screen left)');

  // the CR state metrics on /metrics
  let text = await metrics();
  assert.deepEqual(phases(text, 'a'), { Running: 1 });
  assert.deepEqual(phases(text, 'b'), { Failed: 1 });
  assert.deepEqual(phases(text, 'c'), {}, 'no status yet: no phase');
  assert.equal(metricSum(text, 'crbridge_cr_changes_total', { component: 'top/state', change: 'created' }), 3);
  assert.equal(metricSum(text, 'crbridge_cr_changes_total', { component: 'top/state', change: 'status.changed' }), 2);
  assert.ok(metricSum(text, 'crbridge_cr_status_phase_seconds', { name: 'a', phase: 'Running' }) >= 0);
  assert.equal(metricSum(text, 'crbridge_component_delivery_latency_seconds_count', { component: 'top/audit' }), 5);
  assert.ok(metricSum(text, 'process_resident_memory_bytes') > 20e6);
  assert.ok(metricSum(text, 'process_cpu_seconds_total') > 0);

  // a restart: b deleted and c given a phase while down; a is unchanged and not emitted again
  assert.equal(await proc.stop('SIGTERM'), 0);
  kubectl(['-n', ns, 'delete', 'backups.example.com', 'b', '--wait=true']);
  phase('c', 'Pending');
  proc = startCrbridge(args, cb);
  port = await proc.port();
  await eventually(
    async () => metricSum(await metrics(), 'crbridge_component_sent_events_total', { component: 'top/state' }) >= 2,
    30_000,
    'the two changes made while down delivered',
  );
  text = await metrics();
  assert.equal(
    metricSum(text, 'crbridge_component_sent_events_total', { component: 'top/state' }),
    2,
    'only the changes made while down',
  );
  assert.deepEqual(phases(text, 'a'), { Running: 1 }, 'the unchanged object keeps its series');
  assert.deepEqual(phases(text, 'b'), {}, 'deleted while down: series removed');
  assert.deepEqual(phases(text, 'c'), { Pending: 1 });
  assert.equal(await proc.stop('SIGTERM'), 0);
});
