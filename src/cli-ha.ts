/**
 * The command line's high-availability flags for `crbridge run` (kept out of `cli.ts` so that the
 * flag parsing stays short there): leader election on a Lease (`--leader-elect` …), where component
 * state lives (`--state-backend`, `--state-namespace`) and whether the state dir survives the pod
 * (`--state-dir-persistent`). Turns them into the runtime's `elector`, `state` and `outboxDurable`.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SourceFactory } from './component.ts';
import type { LoadedPipeline } from './config/types.ts';
import type { Elector } from './election.ts';
import { CrbridgeError, ErrorCode } from './errors.ts';
import { type KubeApi, kubeApi, loadKubeConfig, SERVICE_ACCOUNT_DIR } from './sources/kubernetes/client.ts';
import { electionIdentity, LEASE_DEFAULTS, LeaseElector, leaseTimingProblems } from './sources/kubernetes/lease.ts';
import { configMapStateOpener } from './sources/kubernetes/state-configmap.ts';
import type { StateOpener } from './state/store.ts';
import type { Logger } from './telemetry/logger.ts';
import type { Metrics } from './telemetry/metrics.ts';

/** The `parseArgs` options of the HA flags. */
export const HA_OPTIONS = {
  'leader-elect': { type: 'boolean' },
  'leader-election-namespace': { type: 'string' },
  'leader-election-id': { type: 'string' },
  'leader-election-lease-duration': { type: 'string' },
  'leader-election-renew-deadline': { type: 'string' },
  'leader-election-retry-period': { type: 'string' },
  'state-backend': { type: 'string' },
  'state-namespace': { type: 'string' },
  'state-dir-persistent': { type: 'boolean' },
} as const;

export const HA_USAGE = `  --leader-elect              run as one of several replicas: only the Lease holder emits
  --leader-election-namespace <ns>  namespace of the Lease (default $POD_NAMESPACE, the service
                              account's namespace, else "default")
  --leader-election-id <name> name of the Lease (default crbridge)
  --leader-election-lease-duration <secs>  how long a Lease is valid without renewal (default 15)
  --leader-election-renew-deadline <secs>  a leader that cannot renew for this long stops (default 10)
  --leader-election-retry-period <secs>    between attempts to acquire or renew (default 2)
  --state-backend <file|kubernetes>  where component state (Slack threads, traces) lives (default file)
  --state-namespace <ns>      namespace of the state ConfigMaps (default like the Lease's)
  --state-dir-persistent      --state-dir is on a volume the next leader finds (with --leader-elect,
                              a sink's outbox then counts as durable)
`;

export interface HaWiring {
  elector?: Elector;
  state?: StateOpener;
  /** False with --leader-elect unless --state-dir-persistent: a local outbox settles nothing. */
  outboxDurable: boolean;
}

/** `POD_NAMESPACE`, else the service account's namespace file, else `default`. */
export function defaultNamespace(env: NodeJS.ProcessEnv = process.env, saDir = SERVICE_ACCOUNT_DIR): string {
  const pod = env.POD_NAMESPACE?.trim();
  if (pod) return pod;
  try {
    const ns = readFileSync(join(saDir, 'namespace'), 'utf8').trim();
    if (ns) return ns;
  } catch {}
  return 'default';
}

function seconds(values: Record<string, unknown>, flag: string, fallback: number): number {
  const raw = values[flag];
  if (raw === undefined) return fallback * 1000;
  const n = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(n) || n <= 0)
    throw new CrbridgeError(ErrorCode.Usage, `--${flag} must be a positive number of seconds, got "${String(raw)}"`);
  return n * 1000;
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function dnsName(values: Record<string, unknown>, flag: string, fallback: string): string {
  const v = (values[flag] as string | undefined) ?? fallback;
  if (v.length > 253 || !NAME.test(v))
    throw new CrbridgeError(
      ErrorCode.Usage,
      `--${flag} must be a Kubernetes name (lower-case letters, digits, '-' and '.'), got "${v}"`,
    );
  return v;
}

/**
 * Checks the HA flags (usage errors name the flag) and builds what they ask for. Performs no I/O
 * but reading the kubeconfig when a Kubernetes backend is asked for.
 */
export function haFromFlags(
  values: Record<string, unknown>,
  o: { logger: Logger; metrics: Metrics; kubeconfig?: string },
): HaWiring {
  const elect = values['leader-elect'] === true;
  const backend = (values['state-backend'] as string | undefined) ?? 'file';
  if (backend !== 'file' && backend !== 'kubernetes')
    throw new CrbridgeError(ErrorCode.Usage, `--state-backend must be "file" or "kubernetes", got "${backend}"`);
  if (!elect)
    for (const f of Object.keys(HA_OPTIONS))
      if (f.startsWith('leader-election-') && values[f] !== undefined)
        throw new CrbridgeError(ErrorCode.Usage, `--${f} needs --leader-elect`);
  if (backend !== 'kubernetes' && values['state-namespace'] !== undefined)
    throw new CrbridgeError(ErrorCode.Usage, '--state-namespace needs --state-backend kubernetes');
  const ns = defaultNamespace();
  let api: KubeApi | undefined;
  const client = () => {
    api ??= kubeApi(loadKubeConfig(o.kubeconfig));
    return api;
  };
  const persistent = values['state-dir-persistent'] === true;
  const out: HaWiring = { outboxDurable: !elect || persistent };
  if (elect && backend === 'file' && !persistent)
    o.logger.warn(
      'component state (Slack threads, trace state) is kept in --state-dir, which the next leader does not see; pass --state-backend kubernetes to keep it across a leader change',
      { code: ErrorCode.State },
    );
  if (elect) {
    const timing = {
      leaseDurationMs: seconds(values, 'leader-election-lease-duration', LEASE_DEFAULTS.leaseDurationSeconds),
      renewDeadlineMs: seconds(values, 'leader-election-renew-deadline', LEASE_DEFAULTS.renewDeadlineSeconds),
      retryPeriodMs: seconds(values, 'leader-election-retry-period', LEASE_DEFAULTS.retryPeriodSeconds),
    };
    const problems = leaseTimingProblems(timing);
    if (problems.length > 0)
      throw new CrbridgeError(ErrorCode.Usage, `--leader-election-* durations: ${problems.join('; ')}`);
    const namespace = dnsName(values, 'leader-election-namespace', ns);
    const name = dnsName(values, 'leader-election-id', 'crbridge');
    out.elector = new LeaseElector({
      api: client(),
      namespace,
      name,
      identity: electionIdentity(),
      ...timing,
      logger: o.logger.child({ component: 'leader-election' }),
      metrics: o.metrics,
    });
  }
  if (backend === 'kubernetes') out.state = configMapStateOpener(client(), dnsName(values, 'state-namespace', ns));
  return out;
}

/**
 * With `--leader-elect`, what a new leader must resume from has to be where it finds it: refuses
 * (a usage error naming each file, pipeline and field) a source whose checkpoint is on the local
 * disk, unless `--state-dir-persistent` says the state dir is shared storage.
 */
export function checkElectionConfig(
  values: Record<string, unknown>,
  loaded: readonly LoadedPipeline[],
  sources: readonly SourceFactory[],
): void {
  if (values['leader-elect'] !== true || values['state-dir-persistent'] === true) return;
  const problems: string[] = [];
  for (const p of loaded) {
    const { type, ...config } = p.config.spec.source;
    const factory = type ? sources.find((f) => f.type === type) : sources[0];
    const local = factory?.localState?.(config);
    if (local)
      problems.push(
        `${p.file}: pipeline "${p.config.metadata.name}", /spec/source${local.pointer}: ${local.message}; with --leader-elect set checkpoint.backend: kubernetes (ConfigMaps), or put --state-dir on storage every replica shares and pass --state-dir-persistent`,
      );
  }
  if (problems.length > 0) throw new CrbridgeError(ErrorCode.Usage, problems.join('\n'), { problems });
}
