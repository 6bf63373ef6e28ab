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
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { waitFor as eventually, loadStackEnv } from '../../support/stack.ts';
import {
  misbehaviourPlan,
  type PlanStep,
  retryAfterDate,
  retryAfterViolations,
  WebhookReceiver,
} from '../../support/webhook-receiver.ts';
import {
  type Changes,
  deliveryProblems,
  leakedSecrets,
  objectOf,
  refuseObjectNamed,
  retryChanges,
  startWebhookRun,
  unverified,
  waitAllArrived,
  webhookSecrets,
} from '../../support/webhook-run.ts';
import { logs } from '../events/helpers.ts';
import { adminApi, createBackup, freshNamespace, pool, updateBackup } from '../source/helpers.ts';

const env = loadStackEnv();
const { secret: SECRET, pathToken: PATH_TOKEN } = webhookSecrets();
const dir = mkdtempSync(join(tmpdir(), 'crb-webhook-'));
const deadLetters = join(dir, 'dead.jsonl');
const N = 100;

/** The misbehaviour plan, by POST number (HTTP dates are made when the request comes). */
const steps: PlanStep[] = [
  { from: 1, to: 2, action: { status: 500, body: 'internal error' } },
  { from: 3, action: { status: 429, headers: { 'retry-after': '1' } } },
  { from: 4, action: retryAfterDate(2000) },
  { from: 5, action: { stallMs: 2000 } },
  { from: 6, action: { reset: true } },
];

let receiver: WebhookReceiver | undefined;
after(async () => {
  await receiver?.close();
});

test('webhook: every change arrives in per-object order through 500s, 429s, a stall and a reset; a 400 is dead-lettered', async (t) => {
  const ns = freshNamespace('wh');
  const plan = misbehaviourPlan(steps, [refuseObjectNamed('poison', 400, 'spec.databaseName "poison" is refused')]);
  const r = new WebhookReceiver({ secrets: [SECRET], respond: plan.respond });
  receiver = r;
  const run = await startWebhookRun({
    dir,
    name: 'wh',
    namespaces: [ns],
    baseUrl: await r.start(),
    pathToken: PATH_TOKEN,
    secret: SECRET,
    env,
    specExtra: `  deadLetter:\n    path: ${deadLetters}\n`,
    sink: `      timeoutMs: 1000
      delivery:
        retry:
          initialIntervalMs: 100
          maxIntervalMs: 1000
`,
  });
  const proc = run.proc;
  t.after(() => proc.stop('SIGKILL'));

  // ~100 objects created and then updated; what the apiserver answered is what must arrive
  const api = adminApi();
  const expected: Changes = new Map(); // uid → resourceVersions in order
  const names = Array.from({ length: N }, (_, i) => `b${i}`);
  await pool(names, 8, async (name) => {
    const c = await createBackup(api, ns, name);
    const u = await updateBackup(api, ns, name, `${name}-db2`);
    expected.set(c.metadata.uid, [c.metadata.resourceVersion, u.metadata.resourceVersion]);
  });
  const poison = await createBackup(api, ns, 'poison');
  await waitAllArrived(() => r.acceptedEvents, expected, 60_000);

  // every signature verifies (the receiver checks with the standardwebhooks library)
  const posted = r.requests.filter((q) => q.method === 'POST');
  assert.ok(posted.length >= 2 * N + 7, `${posted.length} requests`);
  assert.deepEqual(unverified(r.requests), []);
  // webhook-id is the event id; duplicates (retries) carry the same id and the same body
  assert.deepEqual(retryChanges(r.requests), [], 'retries carry the same id and bytes');
  // per-object order, every change, one id per change
  assert.deepEqual(deliveryProblems(r.acceptedEvents, expected).slice(0, 20), []);
  // the misbehaviour happened, and Retry-After was waited for (the retry of the same id came later)
  const at = (n: number) => posted[n - 1]?.action ?? {};
  const statusAt = (n: number) => {
    const a = at(n);
    return 'status' in a ? a.status : undefined;
  };
  assert.deepEqual([statusAt(3), statusAt(4)], [429, 429]);
  assert.deepEqual(retryAfterViolations(r.requests), []);
  assert.ok('stallMs' in at(5) && 'reset' in at(6));

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
  const texts = [
    proc.stderr(),
    JSON.stringify(logs(proc)),
    (await run.ops('/metrics')).text,
    readFileSync(deadLetters, 'utf8'),
  ];
  assert.deepEqual(leakedSecrets(texts, [SECRET, SECRET.slice('whsec_'.length), PATH_TOKEN]), []);
});
