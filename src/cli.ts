#!/usr/bin/env -S node --max-semi-space-size=2
/**
 * The crbridge command line: `run`, `validate`, `schema`, `rbac`, `top`, `version`. The only place that calls
 * process.exit. Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
 * The shebang passes the same V8 flag as the container image (a 2 MB young generation keeps RSS
 * low with many watched objects; see bench/RESULTS.md §3), so `npx crbridge` runs like the image.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { checkElectionConfig, HA_OPTIONS, HA_USAGE, haFromFlags } from './cli-ha.ts';
import { currentSchema } from './cli-schema.ts';
import { loadPipelines } from './config/load.ts';
import { createPipelineValidator } from './config/validate.ts';
import { ConfigError, CrbridgeError, ErrorCode, errorMessage } from './errors.ts';
import { mergeRoles, pipelinePermissions, processPermissions, rbacYaml } from './rbac.ts';
import { allFactories, registry } from './registry.ts';
import { Runtime } from './runtime/runtime.ts';
import { startOpsServer } from './server/http.ts';
import { createLogger, type Level } from './telemetry/logger.ts';
import { Metrics } from './telemetry/metrics.ts';
import { runTop } from './top/index.ts';

const USAGE = `crbridge — Kubernetes Custom Resource changes as CloudEvents

Usage:
  crbridge run -c <pipeline.yaml> [-c more.yaml ...] [options]
  crbridge validate -c <pipeline.yaml> [-c ...]      check files without connecting anywhere
  crbridge schema [--out <file>]                        print the pipeline JSON Schema
  crbridge rbac -c <pipeline.yaml> [-c ...] [options]   print the least-privilege RBAC the pipelines need
  crbridge top [--url <metrics url>]                   live view of a running instance (q quits)
  crbridge version

Options for run:
  -c, --config <file>         pipeline file (repeatable)
  --state-dir <dir>           local state: checkpoints, dead letters (default ./crbridge-state)
  --http-port <port>          /metrics, /healthz, /readyz port (default 8080; 0 picks a free one)
  --http-host <host>          address to listen on (default 0.0.0.0)
  --cluster-name <name>       cluster name used in events (default "default")
  --kubeconfig <file>         kubeconfig (default $KUBECONFIG, in-cluster, ~/.kube/config)
  --shutdown-timeout <secs>   how long to drain on SIGTERM (default 25)
  --log-level <level>         debug | info | warn | error (default info)
${HA_USAGE}

Options for rbac (YAML on stdout: a ClusterRole and/or a Role per namespace, with bindings):
  --namespace <ns>            crbridge's namespace: the ServiceAccount's, the Lease's and the state's,
                              and $POD_NAMESPACE in the pipelines when not set (default "default")
  --name <name>               name of the roles and bindings (default crbridge)
  --service-account <name>    the ServiceAccount bound (default crbridge)
  --leader-elect              add the leader-election Lease (--leader-election-namespace, --leader-election-id)
  --state-backend <backend>   file | kubernetes (adds the state ConfigMaps in --state-namespace)
  --output <format>           yaml (default) | json (the rules only) | helm-values (a values file
                              setting the Helm chart's rbac.roles: helm install -f <it>)

Options for top:
  --url <url>                 the instance's metrics (default http://127.0.0.1:8080/metrics)
  --interval <secs>           refresh interval (default 1)
`;

function version(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [join(here, '..', 'package.json'), join(here, '..', '..', 'package.json')]) {
    try {
      return (JSON.parse(readFileSync(p, 'utf8')) as { version: string }).version;
    } catch {}
  }
  return 'unknown';
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === 'rbac') return rbac(rest);
  const { values } = parseArgs({
    args: rest,
    allowPositionals: false,
    options: {
      config: { type: 'string', short: 'c', multiple: true },
      'state-dir': { type: 'string' },
      'http-port': { type: 'string' },
      'http-host': { type: 'string' },
      'cluster-name': { type: 'string' },
      kubeconfig: { type: 'string' },
      'shutdown-timeout': { type: 'string' },
      'log-level': { type: 'string' },
      out: { type: 'string' },
      ...HA_OPTIONS,
      url: { type: 'string' },
      interval: { type: 'string' },
    },
  });
  const logger = createLogger({ level: (values['log-level'] as Level | undefined) ?? 'info' });
  switch (command) {
    case 'version':
      process.stdout.write(`crbridge ${version()} (node ${process.version})\n`);
      return 0;
    case 'schema': {
      const text = `${JSON.stringify(currentSchema(), null, 2)}\n`;
      if (values.out) writeFileSync(values.out, text);
      else process.stdout.write(text);
      return 0;
    }
    case 'validate': {
      const files = values.config ?? [];
      if (files.length === 0)
        throw new CrbridgeError(ErrorCode.Usage, 'validate needs at least one -c <pipeline.yaml>');
      const loaded = loadPipelines(files, createPipelineValidator(currentSchema(), allFactories()));
      for (const p of loaded) process.stdout.write(`${p.file}: pipeline "${p.config.metadata.name}" is valid\n`);
      return 0;
    }
    case 'run':
      return run(values, logger);
    case 'top': {
      const secs = Number(values.interval ?? 1);
      if (!Number.isFinite(secs) || secs <= 0)
        throw new CrbridgeError(ErrorCode.Usage, `--interval must be a number of seconds, got "${values.interval}"`);
      // SIGINT/SIGTERM (Ctrl-C when the input is not a terminal) quit like `q`, restoring the screen
      const quit = new AbortController();
      for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => quit.abort());
      return runTop({
        url: values.url ?? 'http://127.0.0.1:8080/metrics',
        intervalMs: secs * 1000,
        input: process.stdin,
        output: process.stdout,
        signal: quit.signal,
      });
    }
    default:
      throw new CrbridgeError(ErrorCode.Usage, `unknown command "${command}"; try: crbridge --help`);
  }
}

/** `crbridge rbac`: its own flags (it takes the Lease and state flags of `run` without running). */
function rbac(args: string[]): number {
  const { values } = parseArgs({
    args,
    allowPositionals: false,
    options: {
      config: { type: 'string', short: 'c', multiple: true },
      namespace: { type: 'string', default: 'default' },
      name: { type: 'string', default: 'crbridge' },
      'service-account': { type: 'string', default: 'crbridge' },
      'leader-elect': { type: 'boolean', default: false },
      'leader-election-namespace': { type: 'string' },
      'leader-election-id': { type: 'string', default: 'crbridge' },
      'state-backend': { type: 'string', default: 'file' },
      'state-namespace': { type: 'string' },
      output: { type: 'string', default: 'yaml' },
    },
  });
  const files = values.config ?? [];
  if (files.length === 0) throw new CrbridgeError(ErrorCode.Usage, 'rbac needs at least one -c <pipeline.yaml>');
  if (values['state-backend'] !== 'file' && values['state-backend'] !== 'kubernetes')
    throw new CrbridgeError(
      ErrorCode.Usage,
      `--state-backend must be file or kubernetes, got "${values['state-backend']}"`,
    );
  if (!['yaml', 'json', 'helm-values'].includes(values.output))
    throw new CrbridgeError(ErrorCode.Usage, `--output must be yaml, json or helm-values, got "${values.output}"`);
  const namespace = values.namespace;
  // in a pod, $POD_NAMESPACE (the downward API) is crbridge's own namespace
  const env = { POD_NAMESPACE: namespace, ...process.env };
  const loaded = loadPipelines(files, createPipelineValidator(currentSchema(), allFactories()), { env });
  const roles = mergeRoles([
    ...pipelinePermissions(loaded, registry),
    ...processPermissions({
      ...(values['leader-elect'] && {
        leaderElection: {
          namespace: values['leader-election-namespace'] ?? namespace,
          id: values['leader-election-id'],
        },
      }),
      ...(values['state-backend'] === 'kubernetes' && {
        state: { namespace: values['state-namespace'] ?? namespace },
      }),
    }),
  ]);
  const subject = { name: values.name, serviceAccount: values['service-account'], namespace };
  process.stdout.write(
    values.output === 'json'
      ? `${JSON.stringify({ roles }, null, 2)}\n`
      : values.output === 'helm-values'
        ? `# crbridge rbac ${args.join(' ')}\n${stringify({ rbac: { roles } }, { lineWidth: 0 })}`
        : rbacYaml(roles, subject),
  );
  return 0;
}

async function run(values: Record<string, unknown>, logger: ReturnType<typeof createLogger>): Promise<number> {
  const files = (values.config as string[] | undefined) ?? [];
  if (files.length === 0) throw new CrbridgeError(ErrorCode.Usage, 'run needs at least one -c <pipeline.yaml>');
  const port = Number(values['http-port'] ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new CrbridgeError(ErrorCode.Usage, `--http-port must be a port number, got "${String(values['http-port'])}"`);
  const drainSecs = Number(values['shutdown-timeout'] ?? 25);
  if (!Number.isFinite(drainSecs) || drainSecs < 0)
    throw new CrbridgeError(
      ErrorCode.Usage,
      `--shutdown-timeout must be a number of seconds, got "${String(values['shutdown-timeout'])}"`,
    );
  const stateDir = (values['state-dir'] as string | undefined) ?? './crbridge-state';

  // Validation comes first and is complete: nothing is built, created or connected before it passes.
  const loaded = loadPipelines(files, createPipelineValidator(currentSchema(), allFactories()));
  checkElectionConfig(values, loaded, registry.sources);
  mkdirSync(stateDir, { recursive: true });
  // Node and library warnings (e.g. kafkajs' TimeoutNegativeWarning) become JSON logs, once per kind.
  process.removeAllListeners('warning');
  process.on('warning', (w) =>
    logger.once('warn', `warning:${w.name}`, 'runtime warning', { name: w.name, warning: w.message }),
  );
  const metrics = new Metrics();
  const kubeconfig = typeof values.kubeconfig === 'string' ? values.kubeconfig : undefined;
  const ha = haFromFlags(values, { logger, metrics, ...(kubeconfig !== undefined && { kubeconfig }) });
  let stopping = false;
  // a leader that cannot renew stops emitting at once: exit, so the pod restarts as a standby
  // (client-go's default); what it had not checkpointed the next leader emits again, same ids
  ha.elector?.onChange((leading) => {
    if (leading || stopping) return;
    process.stderr.write(
      `crbridge: ${ErrorCode.LeaderElection}: lost the leadership; exiting to restart as a standby\n`,
    );
    process.exit(1);
  });
  const runtime = new Runtime(loaded, registry, {
    stateDir,
    clusterName: (values['cluster-name'] as string | undefined) ?? 'default',
    logger,
    metrics,
    // connection settings for the components (the Kubernetes client loads --kubeconfig once)
    settings: { kubeconfig },
    ...(ha.elector && { elector: ha.elector }),
    ...(ha.state && { state: ha.state }),
    outboxDurable: ha.outboxDurable,
  });
  const server = await startOpsServer({
    host: (values['http-host'] as string | undefined) ?? '0.0.0.0',
    port,
    metrics,
    status: () => runtime.status(),
  });
  logger.info('ops endpoint listening', { port: server.port });

  const abort = new AbortController();
  let resolveStop: (signal: string) => void = () => {};
  const stopped = new Promise<string>((r) => {
    resolveStop = r;
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => resolveStop(sig));
  await runtime.start(abort.signal);
  const sig = await stopped;
  stopping = true;
  logger.info('shutting down', { signal: sig, drainSeconds: drainSecs });
  const deadline = Date.now() + drainSecs * 1000;
  exitBy = deadline + EXIT_GRACE_MS;
  // Every component honours the deadline; should one not, exit 0 anyway, saying what was left
  // (what is undelivered keeps its checkpoint behind it, so a restart delivers it).
  if (!(await settlesBy(runtime.shutdown(deadline), deadline + SHUTDOWN_SAFETY_MS)))
    logger.warn('shutdown did not finish by the deadline; exiting anyway', {
      code: ErrorCode.Shutdown,
      pending: runtime.pipelines.map((p) => p.pendingReport()),
    });
  abort.abort();
  await settlesBy(server.close(), Date.now() + 200);
  logger.info('stopped');
  return 0;
}

/** After the shutdown deadline: how long `run` waits for the runtime, and when the process exits. */
const SHUTDOWN_SAFETY_MS = 500;
const EXIT_GRACE_MS = 900;
/** When `run` was asked to stop: exit by then even if a socket lingers (`--shutdown-timeout` + 1 s). */
let exitBy: number | undefined;

/** True once `p` settled, false if `until` came first. */
async function settlesBy(p: Promise<unknown>, until: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), Math.max(0, until - Date.now()));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Everything has drained; do not let a straggling client socket keep the process alive.
    const wait = exitBy === undefined ? 2000 : Math.min(2000, Math.max(0, exitBy - Date.now()));
    setTimeout(() => process.exit(code), wait).unref();
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(
        `crbridge: invalid configuration (${err.issues.length} problem${err.issues.length === 1 ? '' : 's'}):\n${err.message}\n`,
      );
      process.exit(2);
    }
    if (err instanceof CrbridgeError) {
      process.stderr.write(`crbridge: ${err.code}: ${err.message}\n`);
      process.exit(err.code === ErrorCode.Usage ? 2 : 1);
    }
    if (err instanceof TypeError && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`crbridge: ${err.message}\n\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(`crbridge: unexpected error: ${errorMessage(err)}\n${(err as Error)?.stack ?? ''}\n`);
    process.exit(1);
  },
);
