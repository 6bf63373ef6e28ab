/**
 * @serial: counts kube-apiserver's own LIST/WATCH requests, which other tests would add to.
 * Several pipelines naming the same resource in one `crbridge run` share one LIST and one WATCH
 * (counted by kube-apiserver's own `apiserver_request_total`), each pipeline still receives every
 * change, and SIGINT drains and exits 0.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { fileEvents, publishedSchemas } from '../../support/events.ts';
import { writeBackupsPipeline } from '../../support/pipeline.ts';
import { metricSum } from '../../support/prom.ts';
import { waitFor as eventually, installBackupCrd, kubectl, loadStackEnv } from '../../support/stack.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
const match = (verb: string) => ({ verb, group: 'example.com', resource: 'backups' });

function pipelineFile(dir: string, name: string, ns: string, out: string): string {
  return writeBackupsPipeline(dir, {
    name,
    namespaces: [ns],
    sinks: `    - name: out\n      type: file\n      path: ${out}\n`,
  });
}

const lines = (file: string) => fileEvents(file) as { id: string; type: string }[];

before(() => {
  installBackupCrd();
});

test('three pipelines on one resource: one LIST and one WATCH, every pipeline gets every change; SIGINT exits 0', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'crb-shared-'));
  const ns = `shared-${suffix}`;
  kubectl(['create', 'namespace', ns]);
  const outs = [1, 2, 3].map((i) => join(dir, `p${i}.jsonl`));
  const before = kubectl(['get', '--raw', '/metrics']);
  const proc = startCrbridge(
    runArgs(
      outs.map((o, i) => pipelineFile(dir, `shared-${i + 1}`, ns, o)),
      join(dir, 'state'),
    ),
    { ...process.env, ...env },
  );
  try {
    const port = await proc.port();
    await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');
    for (const name of ['a', 'b']) {
      kubectl(['apply', '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'example.com/v1',
          kind: 'Backup',
          metadata: { name, namespace: ns },
          spec: { databaseName: `${name}-db`, schedule: '0 3 * * *' },
        }),
      });
    }
    kubectl(['-n', ns, 'patch', 'backups.example.com', 'a', '--type=merge', '-p', '{"spec":{"schedule":"0 5 * * *"}}']);
    kubectl(['-n', ns, 'delete', 'backups.example.com', 'b', '--wait=true']);
    await eventually(() => outs.every((o) => lines(o).length >= 4), 30_000, 'four events in every pipeline');
    const running = kubectl(['get', '--raw', '/metrics']);
    assert.equal(
      metricSum(running, 'apiserver_longrunning_requests', match('WATCH')),
      1,
      'one open watch on backups.example.com while three pipelines run',
    );
  } finally {
    assert.equal(await proc.stop('SIGINT'), 0, `exit code after SIGINT; stderr:\n${proc.stderr().slice(-2000)}`);
  }
  // apiserver_request_total counts a request when it completes: the watch ended with the process.
  const count = (text: string, verb: string) =>
    metricSum(text, 'apiserver_request_total', match(verb)) - metricSum(before, 'apiserver_request_total', match(verb));
  let after = '';
  await eventually(
    () => {
      after = kubectl(['get', '--raw', '/metrics']);
      return count(after, 'WATCH') >= 1;
    },
    10_000,
    'the ended watch counted',
  );
  for (const verb of ['LIST', 'WATCH'])
    assert.equal(count(after, verb), 1, `${verb} requests on backups.example.com for three pipelines`);
  const [first, ...rest] = outs.map(lines);
  const check = publishedSchemas();
  for (const e of first ?? []) assert.deepEqual(check(e), [], `${e.id} matches the published schemas`);
  assert.deepEqual(
    first?.map((e) => e.type.split('.').at(-1)),
    ['created', 'created', 'changed', 'deleted'],
    'created a, created b, spec change of a, delete of b',
  );
  for (const r of rest)
    assert.deepEqual(
      r.map((e) => e.id),
      first?.map((e) => e.id),
      'every pipeline got the same events',
    );
});
