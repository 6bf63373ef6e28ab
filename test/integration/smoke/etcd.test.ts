/**
 * Smoke test of the real etcd behind kube-apiserver: writes made through the apiserver raise etcd's
 * revision, and `compactEtcd()` really compacts (a read at an older revision is then refused).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compactEtcd, kubectl, loadStackEnv } from '../../support/stack.ts';

const env = loadStackEnv();
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;

async function rangeAt(revision: number): Promise<{ status: number; body: string }> {
  const r = await fetch(`${env.ETCD_ENDPOINTS.split(',')[0]}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key: 'AA==', revision: String(revision) }),
  });
  return { status: r.status, body: await r.text() };
}

describe('smoke: etcd', () => {
  test('apiserver writes land in etcd and compaction removes older revisions', async () => {
    const before = await compactEtcd();
    kubectl(['create', 'namespace', `smoke-etcd-${suffix}`]);
    const after = await compactEtcd();
    assert.ok(after > before, `revision ${after} should be past ${before}`);
    const old = await rangeAt(before);
    assert.notEqual(old.status, 200);
    assert.match(old.body, /required revision has been compacted/);
    assert.equal((await rangeAt(after)).status, 200);
  });
});
