/**
 * Integration-test access to the local real stack started by `npm run stack -- up`: loads `.stack/env`
 * (typed, and copied into process.env), runs the stack's own kubectl, and polls with `waitFor`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** `<repo>/.stack/env`, or `$CRBRIDGE_STACK_DIR/env` when a private stack is used. */
export const stackEnvFile = join(
  process.env.CRBRIDGE_STACK_DIR ? resolve(process.env.CRBRIDGE_STACK_DIR) : join(repoRoot, '.stack'),
  'env',
);

/** The variables `.stack/env` holds; every one is always present when the stack is up. */
export interface StackEnv {
  /** Admin kubeconfig (token user in group system:masters). */
  KUBECONFIG: string;
  /** Kubeconfig of the non-admin user `crbridge-restricted` (no RBAC bindings: 403 on most things). */
  KUBECONFIG_RESTRICTED: string;
  /** `https://127.0.0.1:<port>` of kube-apiserver. */
  KUBE_APISERVER_URL: string;
  /** Comma-separated `host:port` bootstrap list of the one-node Kafka 4 KRaft cluster. */
  KAFKA_BROKERS: string;
  /** Jaeger's OTLP/HTTP base URL (`/v1/traces` is appended by exporters). */
  OTEL_EXPORTER_OTLP_ENDPOINT: string;
  /** Jaeger's OTLP/gRPC endpoint. */
  OTEL_EXPORTER_OTLP_GRPC_ENDPOINT: string;
  /** Jaeger's query HTTP base URL (`/api/traces`, `/api/services`, `/api/v3/...`). */
  JAEGER_QUERY_URL: string;
  /** etcd client URL (JSON gateway under `/v3/...`). */
  ETCD_ENDPOINTS: string;
  /** Folder with kubectl, helm, kcat, kube-apiserver, etcd and jaeger. */
  CRBRIDGE_STACK_BIN: string;
  /** `host:port` of the broker's SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); see {@link kafkaSasl}. */
  KAFKA_SASL_BROKERS?: string;
  KAFKA_SASL_PLAIN_USERNAME?: string;
  KAFKA_SASL_PLAIN_PASSWORD?: string;
  /** The SCRAM user has SCRAM-SHA-256 and SCRAM-SHA-512 credentials with this password. */
  KAFKA_SASL_SCRAM_USERNAME?: string;
  KAFKA_SASL_SCRAM_PASSWORD?: string;
  /** `host:port` of the broker's SSL listener (client certificate required); see {@link kafkaTls}. */
  KAFKA_TLS_BROKERS?: string;
  /** The stack CA (it signed the broker's and the client's certificates). */
  KAFKA_TLS_CA_FILE?: string;
  KAFKA_TLS_CERT_FILE?: string;
  KAFKA_TLS_KEY_FILE?: string;
}

/** Keys a stack set up by an older version of the tool may lack (`npm run stack -- up` adds them). */
const OPTIONAL: readonly (keyof StackEnv)[] = [
  'KAFKA_SASL_BROKERS',
  'KAFKA_SASL_PLAIN_USERNAME',
  'KAFKA_SASL_PLAIN_PASSWORD',
  'KAFKA_SASL_SCRAM_USERNAME',
  'KAFKA_SASL_SCRAM_PASSWORD',
  'KAFKA_TLS_BROKERS',
  'KAFKA_TLS_CA_FILE',
  'KAFKA_TLS_CERT_FILE',
  'KAFKA_TLS_KEY_FILE',
];

const REQUIRED: readonly (keyof StackEnv)[] = [
  'KUBECONFIG',
  'KUBECONFIG_RESTRICTED',
  'KUBE_APISERVER_URL',
  'KAFKA_BROKERS',
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_EXPORTER_OTLP_GRPC_ENDPOINT',
  'JAEGER_QUERY_URL',
  'ETCD_ENDPOINTS',
  'CRBRIDGE_STACK_BIN',
];

/** Thrown when `.stack/env` is missing or incomplete: the stack is not up. */
export class StackNotUpError extends Error {
  override name = 'StackNotUpError';
}

let cached: StackEnv | undefined;

/**
 * Reads `.stack/env` (re-read on every call: ports survive `restart NAME`, but not `down`/`up`), copies
 * its variables into process.env, and returns them. Throws StackNotUpError with the command to run.
 */
export function loadStackEnv(): StackEnv {
  if (!existsSync(stackEnvFile)) {
    throw new StackNotUpError(
      `the local real stack is not up (${stackEnvFile} is missing): run \`npm run stack -- up\`, or run the tests with \`npm run test:integration\``,
    );
  }
  const vars = parseEnv(readFileSync(stackEnvFile, 'utf8'));
  const missing = REQUIRED.filter((k) => !vars[k]);
  if (missing.length > 0) {
    throw new StackNotUpError(`${stackEnvFile} lacks ${missing.join(', ')}: run \`npm run stack -- up\` again`);
  }
  const env = Object.fromEntries(
    [...REQUIRED, ...OPTIONAL].filter((k) => vars[k]).map((k) => [k, vars[k] as string]),
  ) as unknown as StackEnv;
  Object.assign(process.env, env);
  cached = env;
  return env;
}

/** The Kafka SASL listener and its users; throws StackNotUpError when this stack predates it. */
export function kafkaSasl(): {
  brokers: string;
  plain: { username: string; password: string };
  scram: { username: string; password: string };
} {
  const e = loadStackEnv();
  if (
    !e.KAFKA_SASL_BROKERS ||
    !e.KAFKA_SASL_PLAIN_USERNAME ||
    !e.KAFKA_SASL_PLAIN_PASSWORD ||
    !e.KAFKA_SASL_SCRAM_USERNAME ||
    !e.KAFKA_SASL_SCRAM_PASSWORD
  )
    throw new StackNotUpError(
      `${stackEnvFile} has no Kafka SASL listener (KAFKA_SASL_*): run \`npm run stack -- up\` (it restarts Kafka with one)`,
    );
  return {
    brokers: e.KAFKA_SASL_BROKERS,
    plain: { username: e.KAFKA_SASL_PLAIN_USERNAME, password: e.KAFKA_SASL_PLAIN_PASSWORD },
    scram: { username: e.KAFKA_SASL_SCRAM_USERNAME, password: e.KAFKA_SASL_SCRAM_PASSWORD },
  };
}

/** The Kafka SSL listener, the CA and a client certificate; throws StackNotUpError when this stack predates it. */
export function kafkaTls(): { brokers: string; caFile: string; certFile: string; keyFile: string } {
  const e = loadStackEnv();
  if (!e.KAFKA_TLS_BROKERS || !e.KAFKA_TLS_CA_FILE || !e.KAFKA_TLS_CERT_FILE || !e.KAFKA_TLS_KEY_FILE)
    throw new StackNotUpError(
      `${stackEnvFile} has no Kafka SSL listener (KAFKA_TLS_*): run \`npm run stack -- up\` (it restarts Kafka with one)`,
    );
  return {
    brokers: e.KAFKA_TLS_BROKERS,
    caFile: e.KAFKA_TLS_CA_FILE,
    certFile: e.KAFKA_TLS_CERT_FILE,
    keyFile: e.KAFKA_TLS_KEY_FILE,
  };
}

function stackEnv(): StackEnv {
  return cached ?? loadStackEnv();
}

export interface KubectlOptions {
  /** Use the non-admin user `crbridge-restricted` instead of the admin. */
  restricted?: boolean;
  /** Written to kubectl's stdin (for `apply -f -`). */
  input?: string;
  /** Milliseconds before kubectl is killed; default 60 s. */
  timeoutMs?: number;
}

/** Thrown when kubectl exits non-zero; carries its stdout, stderr and exit status. */
export class KubectlError extends Error {
  override name = 'KubectlError';
  stdout: string;
  stderr: string;
  status: number | null;
  constructor(message: string, stdout: string, stderr: string, status: number | null) {
    super(message);
    this.stdout = stdout;
    this.stderr = stderr;
    this.status = status;
  }
}

/**
 * Installs the seed's Backup CRD (`test/fixtures/crds/backup.yaml`) and waits until it is
 * Established. Integration files run two at a time, so two may create it at once: the loser's
 * `kubectl apply` fails with AlreadyExists, and applying again then updates what the winner made.
 */
export function installBackupCrd(): void {
  const file = join(repoRoot, 'test/fixtures/crds/backup.yaml');
  for (let attempt = 1; ; attempt++) {
    try {
      kubectl(['apply', '-f', file]);
      break;
    } catch (err) {
      if (attempt >= 3 || !/AlreadyExists|the object has been modified/.test(String((err as Error).message))) throw err;
    }
  }
  kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/backups.example.com']);
}

/** Runs the stack's kubectl (admin unless `restricted`) and returns its stdout; throws KubectlError. */
export function kubectl(args: string[], opts: KubectlOptions = {}): string {
  const env = stackEnv();
  try {
    return execFileSync(join(env.CRBRIDGE_STACK_BIN, 'kubectl'), args, {
      env: { ...process.env, KUBECONFIG: opts.restricted ? env.KUBECONFIG_RESTRICTED : env.KUBECONFIG },
      input: opts.input,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 60_000,
      maxBuffer: 256 * 1024 * 1024,
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; status?: number | null; message: string };
    const stderr = String(err.stderr ?? '').trim();
    throw new KubectlError(
      `kubectl ${args.join(' ')} failed: ${stderr || err.message}`,
      String(err.stdout ?? ''),
      stderr,
      err.status ?? null,
    );
  }
}

/**
 * Polls `fn` every `intervalMs` until it returns a truthy value, and resolves with that value. A throw
 * counts as "not yet"; on timeout it rejects naming `what` and the last error seen.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs: number,
  what = 'condition',
  intervalMs = 200,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `; last error: ${last.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Runs `test/infra/stack.ts <args>` (e.g. `['restart', 'apiserver']`, `['stop', 'kafka']`) on this Node
 * and waits for it; `env` is merged into the environment (e.g. CRBRIDGE_APISERVER_EXTRA_ARGS). Throws
 * with the tool's output when it fails.
 */
export function stackCtl(args: string[], env: NodeJS.ProcessEnv = {}): string {
  try {
    return execFileSync(process.execPath, [join(repoRoot, 'test', 'infra', 'stack.ts'), ...args], {
      env: { ...process.env, ...env },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 240_000,
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(
      `stack ${args.join(' ')} failed: ${String(err.stderr ?? '').trim() || err.message}\n${err.stdout ?? ''}`,
    );
  }
}

/**
 * Compacts etcd (physically) at its current revision through the JSON gateway and returns that
 * revision: afterwards any watch or read at an older revision that reaches etcd fails (a watch through
 * kube-apiserver started with `--watch-cache=false` gets 410 Gone).
 */
export async function compactEtcd(): Promise<number> {
  const base = stackEnv().ETCD_ENDPOINTS.split(',')[0];
  const post = async (path: string, body: unknown): Promise<unknown> => {
    const r = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const json = (await r.json()) as unknown;
    if (r.status !== 200) throw new Error(`etcd ${path} answered ${r.status}: ${JSON.stringify(json)}`);
    return json;
  };
  const range = (await post('/v3/kv/range', { key: 'AA==' })) as { header: { revision: string } };
  const revision = Number(range.header.revision);
  await post('/v3/kv/compaction', { revision: String(revision), physical: true });
  return revision;
}
