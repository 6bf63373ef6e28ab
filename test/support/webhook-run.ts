/**
 * The crbridge-plus-webhook-receiver setup of integration tests: a pipeline `Backups → webhook`
 * whose URL and whsec_ secret are `${env:}` references, `crbridge run` started (and restarted on
 * the same state dir) until /readyz answers, and the checks every such test makes on what the
 * receiver accepted against what the apiserver answered: every change arrived, per-object order,
 * one id per change, every signature verified, no secret leaked.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RunningCrbridge, runArgs, startCrbridge } from './crbridge.ts';
import { backupsPipelineYaml } from './pipeline.ts';
import { type StackEnv, waitFor } from './stack.ts';
import type { PlanRule, ReceivedEvent, ReceivedRequest } from './webhook-receiver.ts';

/** The object metadata an event carries. */
export interface EventObjectMeta {
  uid: string;
  name: string;
  namespace: string;
  resourceVersion: string;
}

export const objectOf = (e: ReceivedEvent): EventObjectMeta =>
  (e.data as { object: { metadata: EventObjectMeta } }).object.metadata;

/** A fresh `whsec_` secret and a random URL path token (both must never leak). */
export function webhookSecrets(): { secret: string; pathToken: string } {
  return { secret: `whsec_${randomBytes(32).toString('base64')}`, pathToken: `p${randomBytes(10).toString('hex')}` };
}

export interface WebhookRunOptions {
  /** Folder for the pipeline file (and the state dir unless `stateDir`). */
  dir: string;
  /** The pipeline's name (the sink is `hook`, so components are `<name>/hook`). */
  name: string;
  namespaces: string[];
  /** The receiver's base URL; `/hooks/<pathToken>` is appended. */
  baseUrl: string;
  pathToken?: string;
  /** Signing secret (whsec_…); absent: unsigned. */
  secret?: string;
  /** Extra lines of the sink (indented by six spaces), e.g. `timeoutMs` and a `delivery:` block. */
  sink?: string;
  /** Extra lines under `spec` (indented by two spaces), e.g. a `deadLetter:` block. */
  specExtra?: string;
  stateDir?: string;
  /** Extra `crbridge run` arguments (default `--cluster-name it`). */
  args?: string[];
  env?: NodeJS.ProcessEnv | StackEnv;
}

/** A webhook pipeline's crbridge, started with {@link startWebhookRun}. */
export interface WebhookRun {
  file: string;
  stateDir: string;
  /** The process running now (replaced by `restart`). */
  proc: RunningCrbridge;
  /** Its ops port. */
  port: number;
  /** Starts a new process on the same files and state dir (stop the old one first); waits for /readyz. */
  restart: () => Promise<RunningCrbridge>;
  /** Every process started so far (for leak checks and cleanup). */
  all: RunningCrbridge[];
  /** GET of the ops endpoint `path` of the current process. */
  ops: (path: string) => Promise<{ status: number; text: string }>;
}

/** The YAML of the `hook` webhook sink list item. */
export function webhookSinkYaml(o: Pick<WebhookRunOptions, 'secret' | 'sink'>): string {
  return `    - name: hook
      type: webhook
      url: \${env:IT_WEBHOOK_URL}
${o.secret ? `      signing:\n        secrets: ["\${env:IT_WEBHOOK_SECRET}"]\n` : ''}${o.sink ?? ''}`;
}

/**
 * Writes the pipeline, starts `crbridge run` with IT_WEBHOOK_URL / IT_WEBHOOK_SECRET in its
 * environment and waits until /readyz answers 200. The caller stops the processes (`all`).
 */
export async function startWebhookRun(o: WebhookRunOptions): Promise<WebhookRun> {
  const file = join(o.dir, `${o.name}.yaml`);
  writeFileSync(
    file,
    backupsPipelineYaml({
      name: o.name,
      namespaces: o.namespaces,
      ...(o.specExtra !== undefined && { specExtra: o.specExtra }),
      sinks: webhookSinkYaml(o),
    }),
  );
  const stateDir = o.stateDir ?? join(o.dir, 'state');
  const env = {
    ...process.env,
    ...o.env,
    IT_WEBHOOK_URL: `${o.baseUrl}/hooks/${o.pathToken ?? 'x'}`,
    ...(o.secret && { IT_WEBHOOK_SECRET: o.secret }),
  };
  const all: RunningCrbridge[] = [];
  const launch = async () => {
    const proc = startCrbridge(runArgs([file], stateDir, o.args ?? ['--cluster-name', 'it']), env);
    all.push(proc);
    const port = await proc.port();
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 30_000, 'readyz');
    run.proc = proc;
    run.port = port;
    return proc;
  };
  const run: WebhookRun = {
    file,
    stateDir,
    proc: undefined as unknown as RunningCrbridge,
    port: 0,
    all,
    restart: launch,
    ops: async (path) => {
      const r = await fetch(`http://127.0.0.1:${run.port}${path}`);
      return { status: r.status, text: await r.text() };
    },
  };
  await launch();
  return run;
}

/**
 * uid → the resourceVersions the apiserver answered (or a watch reported) for its changes, in
 * order; a delete is `deleted` (its event id is `<uid>.deleted`, whatever resourceVersion it carries).
 */
export type Changes = Map<string, string[]>;

/** The change an event stands for: `uid@resourceVersion`, or `uid@deleted`. */
export function changeOf(e: ReceivedEvent): { uid: string; change: string; key: string } {
  const m = objectOf(e);
  const change = e.id === `${m.uid}.deleted` ? 'deleted' : m.resourceVersion;
  return { uid: m.uid, change, key: `${m.uid}@${change}` };
}

/** `uid@resourceVersion` of each expected change no accepted event carries. */
export function missingChanges(events: readonly ReceivedEvent[], expected: Changes): string[] {
  const got = new Set(events.map((e) => changeOf(e).key));
  return [...expected].flatMap(([uid, rvs]) =>
    rvs.filter((rv) => !got.has(`${uid}@${rv}`)).map((rv) => `${uid}@${rv}`),
  );
}

/** Waits until every expected change is among `events()`. */
export function waitAllArrived(
  events: () => readonly ReceivedEvent[],
  expected: Changes,
  timeoutMs: number,
  what = 'every change at the receiver',
): Promise<unknown> {
  return waitFor(() => missingChanges(events(), expected).length === 0, timeoutMs, what);
}

/**
 * What is wrong with the accepted `events` against `expected` (empty when all is well):
 * - a change missing, or one that was never made (of an expected uid);
 * - per-object order: when a change of an object first arrives, every earlier change of it has
 *   arrived before (duplicates may come later: at least once);
 * - one id is one change and one change one id (duplicates carry the same id).
 */
export function deliveryProblems(events: readonly ReceivedEvent[], expected: Changes): string[] {
  const out = missingChanges(events, expected).map((c) => `missing ${c}`);
  const changeById = new Map<string, string>();
  const idByChange = new Map<string, string>();
  const seen = new Map<string, Set<string>>();
  for (const e of events) {
    const { uid, change: rv, key: change } = changeOf(e);
    const id0 = changeById.get(e.id);
    if (id0 !== undefined && id0 !== change) out.push(`id ${e.id} carried ${id0} and ${change}`);
    changeById.set(e.id, change);
    const c0 = idByChange.get(change);
    if (c0 !== undefined && c0 !== e.id) out.push(`change ${change} arrived as ${c0} and ${e.id}`);
    idByChange.set(change, e.id);
    const rvs = expected.get(uid);
    if (!rvs) continue;
    const s = seen.get(uid) ?? new Set<string>();
    seen.set(uid, s);
    if (s.has(rv)) continue;
    const at = rvs.indexOf(rv);
    if (at < 0) out.push(`unexpected change ${change}`);
    const before = rvs.slice(0, Math.max(0, at)).filter((r) => !s.has(r));
    if (before.length > 0) out.push(`${change} arrived before ${before.map((r) => `${uid}@${r}`).join(', ')}`);
    s.add(rv);
  }
  return out;
}

/** Numbers of the POSTs whose Standard Webhooks signature did not verify. */
export function unverified(requests: readonly ReceivedRequest[]): number[] {
  return requests.filter((q) => q.method === 'POST' && q.verified !== true).map((q) => q.n);
}

/** The secrets (a short prefix each) found in `texts`; empty when none leaked. */
export function leakedSecrets(texts: readonly string[], secrets: readonly string[]): string[] {
  const all = texts.join('\n');
  return secrets.filter((s) => all.includes(s)).map((s) => `${s.slice(0, 4)}…`);
}

/** A misbehaviour-plan rule answering `status` with `body` to any POST carrying an event of the object `name`. */
export function refuseObjectNamed(name: string, status: number, body: string): PlanRule {
  return (q) => (q.events.some((e) => objectOf(e).name === name) ? { status, body } : undefined);
}

/**
 * What breaks "a retry is the same request": a POST whose `webhook-id` is not its event's id, or a
 * later POST of the same id with other bytes. Empty when every retry carried the same id and body.
 */
export function retryChanges(requests: readonly ReceivedRequest[]): string[] {
  const out: string[] = [];
  const bodyById = new Map<string, string>();
  for (const q of requests.filter((x) => x.method === 'POST')) {
    const id = String(q.headers['webhook-id']);
    if (id !== q.events[0]?.id) out.push(`request ${q.n}: webhook-id ${id} is not its event id ${q.events[0]?.id}`);
    const body = q.body.toString();
    const prev = bodyById.get(id);
    if (prev !== undefined && prev !== body) out.push(`request ${q.n}: a retry of ${id} changed its body`);
    bodyById.set(id, body);
  }
  return out;
}
