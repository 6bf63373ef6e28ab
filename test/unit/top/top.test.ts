/**
 * `crbridge top` without a terminal: the model computed from two real scrapes of a registry (rates,
 * delivery lag from the latency histogram, watch state, leader, sink state), the rendered lines
 * (cut to the width, no colour codes when off), and the loop against a real HTTP endpoint, quitting
 * on `q`.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { componentMetrics, Metrics } from '../../../src/telemetry/metrics.ts';
import { runTop } from '../../../src/top/index.ts';
import { parseMetrics, Snapshot } from '../../../src/top/prom.ts';
import { buildModel, renderTop } from '../../../src/top/view.ts';

function registry() {
  const metrics = new Metrics();
  const m = componentMetrics(metrics);
  const objects = metrics.gauge('crbridge_source_objects', 'x.');
  const synced = metrics.gauge('crbridge_source_synced', 'x.');
  const served = metrics.gauge('crbridge_source_resource_served', 'x.');
  objects.set({ component: 'p/source' }, 5);
  synced.set({ component: 'p/source' }, 1);
  served.set({ component: 'p/source' }, 1);
  m.queueDepth.set({ component: 'p/kafka' }, 0);
  m.queueDepth.set({ component: 'p/hook' }, 0);
  return { metrics, m, synced };
}
const ESC = String.fromCharCode(27);
const ANSI = new RegExp(`${ESC}\\[[0-9;?]*[a-zA-Z]`, 'g');
const snap = (metrics: Metrics, at: number) => new Snapshot(parseMetrics(metrics.render()), at);

test('the model: rates between two scrapes, delivery lag, watch and sink state, leader', () => {
  const { metrics, m, synced } = registry();
  const first = snap(metrics, 0);
  m.received.inc({ component: 'p' }, 20);
  m.received.inc({ component: 'p/kafka' }, 20);
  m.sent.inc({ component: 'p/kafka' }, 10);
  m.deliveryLatency.observe({ component: 'p/kafka' }, 0.2);
  m.deliveryLatency.observe({ component: 'p/kafka' }, 0.4);
  m.queueDepth.set({ component: 'p/kafka' }, 10);
  m.retries.inc({ component: 'p/hook' }, 3);
  m.failingSeconds.set({ component: 'p/hook' }, 12);
  m.deadLettered.inc({ component: 'p/hook' }, 2);
  synced.set({ component: 'p/source' }, 0);
  metrics.gauge('crbridge_leader', 'x.').set({ identity: 'pod-a' }, 1);
  const phase = metrics.gauge('crbridge_cr_status_phase', 'x.');
  for (const [name, p] of [
    ['a', 'Running'],
    ['b', 'Running'],
    ['c', 'Failed'],
  ])
    phase.set({ component: 'p/state', kind: 'Backup', name: name as string, phase: p as string }, 1);
  const second = snap(metrics, 2000);
  const model = buildModel(second, first);
  assert.equal(model.leader, 'pod-a');
  assert.deepEqual(
    model.sources.map((s) => [s.component, s.state, s.objects]),
    [['p/source', 'syncing', 5]],
  );
  const p = model.pipelines[0];
  assert.equal(p?.name, 'p');
  assert.equal(p?.inRate, 10);
  const kafka = p?.sinks.find((s) => s.name === 'kafka');
  const hook = p?.sinks.find((s) => s.name === 'hook');
  assert.equal(kafka?.inRate, 10);
  assert.equal(kafka?.outRate, 5);
  assert.equal(kafka?.sent, 10);
  assert.equal(kafka?.queue, 10);
  assert.ok(Math.abs((kafka?.lag ?? 0) - 0.3) < 1e-9, `lag ${kafka?.lag}`);
  assert.equal(kafka?.state, 'ok');
  assert.equal(hook?.retries, 3);
  assert.equal(hook?.dead, 2);
  assert.equal(hook?.state, 'retrying 12s');
  assert.equal(hook?.lag, undefined, 'nothing delivered: no lag');
  assert.equal(buildModel(second, undefined).pipelines[0]?.inRate, undefined, 'no rate from one scrape');

  const lines = renderTop(model, { url: 'http://x/metrics', width: 200, color: false, now: new Date(0) });
  const screen = lines.join('\n');
  assert.match(screen, /^crbridge top — http:\/\/x\/metrics — 00:00:00 UTC — q quits/);
  assert.match(screen, /leader: pod-a/);
  assert.match(screen, /p\/source\s+5\s+0\.0\s+0\s+0\s+syncing/);
  assert.match(screen, /^ {2}kafka\s+10\.0\s+5\.0\s+10\s+10\s+300ms\s+0\s+0\s+-\s+ok$/m);
  assert.match(screen, /^ {2}hook\s+0\.0\s+0\.0\s+0\s+0\s+-\s+3\s+2\s+-\s+retrying 12s$/m);
  assert.match(screen, /RESOURCES BY PHASE \(metrics sinks\)\nBackup: Failed 1 {2}Running 2$/);
  assert.ok(!screen.includes(ESC), 'no escape codes without colour');
  const narrow = renderTop(model, { url: 'http://x/metrics', width: 30, color: true });
  assert.ok(
    narrow.some((l) => l.includes(`${ESC}[1m`)),
    'bold headers with colour',
  );
  for (const l of narrow) assert.ok(l.replace(ANSI, '').length <= 30, JSON.stringify(l));
});

test('runTop scrapes the endpoint every interval, draws, and quits on q', async () => {
  const { metrics, m } = registry();
  let scrapes = 0;
  const server = createServer((_req, res) => {
    scrapes++;
    m.sent.inc({ component: 'p/kafka' }, 7);
    res.end(metrics.render());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
  const input = new PassThrough();
  const output = new PassThrough();
  let text = '';
  output.on('data', (d) => {
    text += String(d);
  });
  const done = runTop({ url, intervalMs: 50, input, output });
  while (scrapes < 3) await new Promise((r) => setTimeout(r, 20));
  input.write('q');
  assert.equal(await done, 0);
  server.close();
  assert.match(text, /kafka\s+0\.0\s+\d+(\.\d)?\s+21\s/, 'the delivered count moved to 21 by the third scrape');
  assert.ok(input.isPaused(), 'input released');
});

test('runTop shows a failed scrape and keeps going', async () => {
  const input = new PassThrough();
  const output = new PassThrough();
  let text = '';
  output.on('data', (d) => {
    text += String(d);
  });
  const abort = new AbortController();
  const done = runTop({ url: 'http://127.0.0.1:1/metrics', intervalMs: 30, input, output, signal: abort.signal });
  while (!text.includes('cannot read metrics')) await new Promise((r) => setTimeout(r, 20));
  abort.abort();
  assert.equal(await done, 0);
});
