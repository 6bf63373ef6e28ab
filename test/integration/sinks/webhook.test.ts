/**
 * The webhook sink on the real stack: `crbridge run` with a pipeline `apiserver Backups → webhook`
 * (URL and whsec_ secret given as ${env:} references) to a local receiver that misbehaves on a
 * schedule — 500s, 429 with Retry-After in seconds and as an HTTP date, a 2 s stall past a 1 s
 * timeout, a connection reset, then normal — while ~100 Backups are created and updated in the REAL
 * apiserver. Every change arrives, per-object order holds (by resourceVersion per uid), duplicates
 * carry the same id and body, every signature verifies with the standardwebhooks library, retries
 * wait for Retry-After, and a 400 for one object lands in the dead-letter file with its error. No
 * secret appears in the logs, /metrics or the dead letters.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runArgs, startCrbridge } from '../../support/crbridge.ts';
import { backupsPipelineYaml } from '../../support/pipeline.ts';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import { type ReceivedEvent, type ReceiverAction, WebhookReceiver } from '../../support/webhook-receiver.ts';
import { logs } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const PATH_TOKEN = `p${randomBytes(10).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'crb-webhook-'));
const deadLetters = join(dir, 'dead.jsonl');
const N = 100;

const objectOf = (e: ReceivedEvent) =>
  (e.data as { object: { metadata: { uid: string; name: string; resourceVersion: string } } }).object.metadata;

/** The misbehaviour schedule, by POST number (HTTP dates are made when the request comes). */
function scheduled(n: number): ReceiverAction | undefined {
  switch (n) {
    case 1:
    case 2:
      return { status: 500, body: 'internal error' };
    case 3:
      return { status: 429, headers: { 'retry-after': '1' } };
    case 4:
      return { status: 429, headers: { 'retry-after': new Date(Date.now() + 2000).toUTCString() } };
    case 5:
      return { stallMs: 2000 };
    case 6:
      return { reset: true };
    default:
      return undefined;
  }
}

let receiver: WebhookReceiver | undefined;
after(async () => {
  await receiver?.close();
});

test('webhook: every change arrives in per-object order through 500s, 429s, a stall and a reset; a 400 is dead-lettered', async (t) => {
  const ns = freshNamespace('wh');
  let posts = 0;
  const r = new WebhookReceiver({
    secrets: [SECRET],
    respond: (q) => {
      if (q.method !== 'POST') return undefined;
      posts++;
      if (q.events.some((e) => objectOf(e).name === 'poison'))
        return { status: 400, body: 'spec.databaseName "poison" is refused' };
      return scheduled(posts);
    },
  });
  receiver = r;
  const base = await r.start();

  const file = join(dir, 'webhook.yaml');
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: 'wh',
      namespaces: [ns],
      specExtra: `  deadLetter:\n    path: ${deadLetters}\n`,
      sinks: `    - name: hook
      type: webhook
      url: \${env:IT_WEBHOOK_URL}
      timeoutMs: 1000
      signing:
        secrets: ["\${env:IT_WEBHOOK_SECRET}"]
      delivery:
        retry:
          initialIntervalMs: 100
          maxIntervalMs: 1000
`,
    }),
  );
  const proc = startCrbridge(runArgs([file], join(dir, 'state'), ['--cluster-name', 'it']), {
    ...process.env,
    ...env,
    IT_WEBHOOK_URL: `${base}/hooks/${PATH_TOKEN}`,
    IT_WEBHOOK_SECRET: SECRET,
  });
  t.after(() => proc.stop('SIGKILL'));
  const port = await proc.port();
  await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');

  // ~100 objects created and then updated; what the apiserver answered is what must arrive
  const api = adminApi();
  const expected = new Map<string, string[]>(); // uid → resourceVersions in order
  const names = Array.from({ length: N }, (_, i) => `b${i}`);
  await pool(names, 8, async (name) => {
    const c = await createBackup(api, ns, name);
    const u = await updateBackup(api, ns, name, `${name}-db2`);
    expected.set(c.metadata.uid, [c.metadata.resourceVersion, u.metadata.resourceVersion]);
  });
  const poison = await createBackup(api, ns, 'poison');

  await eventually(
    () => {
      const got = new Set(r.acceptedEvents.map((e) => `${objectOf(e).uid}@${objectOf(e).resourceVersion}`));
      return [...expected].every(([uid, rvs]) => rvs.every((rv) => got.has(`${uid}@${rv}`)));
    },
    60_000,
    'every change at the receiver',
  );

  // every signature verifies (the receiver checks with the standardwebhooks library)
  const posted = r.requests.filter((q) => q.method === 'POST');
  assert.ok(posted.length >= 2 * N + 7, `${posted.length} requests`);
  assert.deepEqual(
    posted.filter((q) => q.verified !== true).map((q) => q.n),
    [],
  );
  // webhook-id is the event id; duplicates (retries) carry the same id and the same body
  const bodyById = new Map<string, string>();
  for (const q of posted) {
    const id = String(q.headers['webhook-id']);
    assert.equal(id, q.events[0]?.id);
    const prev = bodyById.get(id);
    if (prev !== undefined) assert.equal(q.body.toString(), prev, `a retry of ${id} changed its body`);
    bodyById.set(id, q.body.toString());
  }
  // per-object order: the accepted events of one uid have increasing resourceVersions (ignoring exact duplicates)
  const perUid = new Map<string, { id: string; rv: number }[]>();
  for (const e of r.acceptedEvents) {
    const m = objectOf(e);
    const list = perUid.get(m.uid) ?? [];
    if (list.at(-1)?.id !== e.id) list.push({ id: e.id, rv: Number(m.resourceVersion) });
    perUid.set(m.uid, list);
  }
  for (const [uid, rvs] of expected) {
    const seen = perUid.get(uid)?.map((x) => x.rv) ?? [];
    assert.deepEqual(
      seen,
      [...seen].sort((a, b) => a - b),
      `order of ${uid}`,
    );
    assert.deepEqual(
      seen.filter((rv) => rvs.includes(String(rv))),
      rvs.map(Number),
      `changes of ${uid}`,
    );
  }
  // the misbehaviour happened, and Retry-After was waited for (the retry of the same id came later)
  const at = (n: number) => posted[n - 1];
  const retryOf = (n: number) =>
    posted.find((q) => q.n > (at(n)?.n ?? 0) && q.headers['webhook-id'] === at(n)?.headers['webhook-id']);
  for (const n of [3, 4]) {
    const first = at(n);
    const again = retryOf(n);
    assert.ok(first && again, `request ${n} was retried`);
    assert.ok(again.at - first.at >= 950, `retry after a 429 #${n} came after ${again.at - first.at} ms`);
  }
  assert.ok('stallMs' in (at(5)?.action ?? {}) && 'reset' in (at(6)?.action ?? {}));

  // the 400 for one object: dead-lettered with its error, never accepted
  const dead = await eventually(
    () =>
      existsSync(deadLetters)
        ? readFileSync(deadLetters, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l))
        : [],
    20_000,
    'a dead letter',
  );
  assert.equal(dead.length, 1);
  assert.equal(dead[0].event.data.object.metadata.uid, poison.metadata.uid);
  assert.equal(dead[0].code, 'CRB_DELIVERY_PERMANENT');
  assert.match(JSON.stringify(dead[0]), /HTTP 400: spec\.databaseName \\"poison\\" is refused/);
  assert.ok(!r.acceptedEvents.some((e) => objectOf(e).uid === poison.metadata.uid));

  // no secret in the logs, the metrics or the dead letters
  const metricsText = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const everything = [proc.stderr(), JSON.stringify(logs(proc)), metricsText, readFileSync(deadLetters, 'utf8')].join(
    '\n',
  );
  for (const s of [SECRET, SECRET.slice('whsec_'.length), PATH_TOKEN])
    assert.ok(!everything.includes(s), `a secret leaked: ${s.slice(0, 4)}…`);
});
