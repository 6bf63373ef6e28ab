/**
 * RBAC on the real stack: `crbridge run` as the user `crbridge-restricted` (no bindings) watching
 * Backups in a namespace logs one clear error naming the verb, the resource, the namespace and what
 * to grant (once, however often it retries), counts CRB_FORBIDDEN on /metrics and answers /readyz
 * 503 saying why, while /healthz stays 200 (a restart would not help). Once the Role it asks for is
 * bound (with the very kubectl commands it suggests), the same process recovers: it logs the
 * recovery once, /readyz is 200 again, and a Backup created afterwards reaches the file sink.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { writeBackupsPipeline } from '../../support/pipeline.ts';
import { metricSum } from '../../support/prom.ts';
import { kubectl, waitFor } from '../../support/stack.ts';
import { env, freshNamespace } from './helpers.ts';

/** The JSON log records of a crbridge process's stderr. */
function logs(stderr: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

describe('kubernetes source: RBAC on the real stack', () => {
  test('403 on LIST: one clear error, CRB_FORBIDDEN counted, /readyz 503; bound, it recovers without a restart', async () => {
    const ns = freshNamespace('it-rbac');
    const dir = mkdtempSync(join(tmpdir(), 'crb-rbac-'));
    const out = join(dir, 'out.jsonl');
    const file = writeBackupsPipeline(dir, {
      name: 'rbac',
      namespaces: [ns],
      sourceExtra: '    backoffInitialMs: 200\n    backoffMaxMs: 1000\n',
      sinks: `    - name: out\n      type: file\n      path: ${out}\n`,
    });
    const proc = startCrbridge(runArgs([file], join(dir, 'state')), {
      ...process.env,
      KUBECONFIG: env.KUBECONFIG_RESTRICTED,
    });
    after(() => proc.stop('SIGKILL'));
    const port = await proc.port();
    const forbiddenCount = async () =>
      metricSum(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'crbridge_component_errors_total', {
        component: 'rbac/source',
        code: 'CRB_FORBIDDEN',
      });
    // several refused attempts, each counted
    await waitFor(async () => (await forbiddenCount()) >= 4, 60_000, 'four refused LISTs counted');

    const refused = logs(proc.stderr()).filter((l) => l.code === 'CRB_FORBIDDEN');
    assert.equal(refused.length, 1, `logged once, not per retry:\n${proc.stderr()}`);
    const e = refused[0] as Record<string, unknown>;
    assert.equal(e.level, 'error');
    assert.equal(e.component, 'rbac/source');
    assert.equal(e.verb, 'list');
    assert.equal(e.resource, 'backups.example.com/v1');
    assert.equal(e.namespace, ns);
    const msg = String(e.msg);
    assert.match(msg, new RegExp(`^cannot list backups\\.example\\.com/v1 in namespace "${ns}": forbidden \\(`));
    assert.match(msg, /User "crbridge-restricted" cannot list resource "backups" in API group "example\.com"/);
    assert.match(msg, new RegExp(`grant get,list,watch on backups\\.example\\.com in namespace ${ns} `));
    assert.match(
      msg,
      /\(a Role \+ RoleBinding in that namespace, or a ClusterRole \+ ClusterRoleBinding for all namespaces\)/,
    );
    assert.doesNotMatch(proc.stderr(), /list\/watch failed; retrying/, 'no line per retry at info level');

    const notReady = await get(port, '/readyz');
    assert.equal(notReady.status, 503);
    assert.match(
      notReady.body,
      new RegExp(`^not ready\\nrbac/source: cannot list backups\\.example\\.com/v1 in namespace "${ns}": forbidden`),
    );
    assert.deepEqual(await get(port, '/healthz'), { status: 200, body: 'ok\n' }, 'alive: a restart would not help');
    assert.equal(logs(proc.stderr()).filter((l) => /recovered/.test(String(l.msg))).length, 0);

    // grant exactly what the error asks for, with the commands it suggests
    const hint = /e\.g\. (kubectl create role .*?) && (kubectl create rolebinding [^;]*);/.exec(msg);
    assert.ok(hint, `the error suggests kubectl commands: ${msg}`);
    for (const cmd of [hint[1], hint[2]] as string[]) kubectl(cmd.split(' ').slice(1));

    await waitFor(async () => (await get(port, '/readyz')).status === 200, 60_000, '/readyz 200 after the grant');
    assert.deepEqual(await get(port, '/readyz'), { status: 200, body: 'ok\n' });
    assert.equal(proc.child.exitCode, null, 'the same process, not restarted');
    const recovered = logs(proc.stderr()).filter((l) => /recovered/.test(String(l.msg)));
    assert.equal(recovered.length, 1, proc.stderr());
    assert.equal(recovered[0]?.level, 'info');
    assert.match(String(recovered[0]?.msg), new RegExp(`backups\\.example\\.com/v1 in namespace "${ns}": recovered`));
    assert.equal(logs(proc.stderr()).filter((l) => l.code === 'CRB_FORBIDDEN').length, 1, 'still logged once');

    kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'example.com/v1',
        kind: 'Backup',
        metadata: { name: 'after-grant', namespace: ns },
        spec: { databaseName: 'after-grant-db', schedule: '0 3 * * *' },
      }),
    });
    const events = await waitFor(
      () => {
        const lines = readFileSync(out, 'utf8').trim().split('\n').filter(Boolean);
        return lines.length >= 1 ? lines.map((l) => JSON.parse(l) as Record<string, unknown>) : undefined;
      },
      30_000,
      'the Backup created after the grant in the file sink',
    );
    assert.deepEqual(
      events.map((ev) => (ev.data as { object: { metadata: { name: string } } }).object.metadata.name),
      ['after-grant'],
    );
    assert.match(String(events[0]?.type), /\.backup\.created$/);
    assert.equal(await proc.stop('SIGTERM'), 0);
  });
});
