/**
 * Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics
 * (`k8s.io/client-go/tools/leaderelection`): a candidate GETs the Lease every `retryPeriod`
 * (jittered ×1.2) and takes it when it does not exist, when it names no holder, or when its record
 * has not changed for `leaseDuration` as measured on this process's own clock (the observed time,
 * so clock skew between candidates does not matter); the leader renews every `retryPeriod` and, if
 * no renewal succeeds within `renewDeadline` of the last one, it has lost (reported at once, even
 * while a request hangs). Every write is a PUT carrying the resourceVersion read (optimistic
 * concurrency: a 409 means someone else wrote first, and this attempt failed). `acquireTime` and
 * `renewTime` are MicroTime (RFC 3339 with microseconds); `spec.leaseTransitions` (client-go's leaderTransitions) counts holder changes.
 * On shutdown the leader releases the Lease (empty holder, 1 s duration) so a standby takes over
 * at once. Identity: `POD_NAME`, else the hostname and a random suffix.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { sleep } from '../../backoff.ts';
import type { Elector, LeadershipState } from '../../election.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { leaderMetrics, type Metrics } from '../../telemetry/metrics.ts';
import { type KubeApi, KubeHttpError } from './client.ts';

/** client-go's defaults (seconds): leaseDuration 15, renewDeadline 10, retryPeriod 2. */
export const LEASE_DEFAULTS = { leaseDurationSeconds: 15, renewDeadlineSeconds: 10, retryPeriodSeconds: 2 } as const;
/** client-go's JitterFactor for the acquire retries. */
const JITTER = 1.2;

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string> };
  spec?: LeaseSpec;
}

export interface LeaseElectorOptions {
  /** Only `request` is used (GET, POST, PUT of one Lease). */
  api: Pick<KubeApi, 'request'>;
  namespace: string;
  /** The Lease's name. */
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  logger: Logger;
  metrics: Metrics;
  /** The clock (tests); default Date.now. */
  now?: () => number;
}

/** The identity of this process: `POD_NAME`, else `<hostname>_<random>` (client-go's convention). */
export function electionIdentity(env: NodeJS.ProcessEnv = process.env): string {
  const pod = env.POD_NAME?.trim();
  if (pod) return pod;
  return `${hostname()}_${randomBytes(4).toString('hex')}`;
}

/** A MicroTime: RFC 3339 in UTC with six fractional digits, as the API server writes it. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** The problems of a set of durations (ms), as client-go's NewLeaderElector refuses them; empty when valid. */
export function leaseTimingProblems(o: { leaseDurationMs: number; renewDeadlineMs: number; retryPeriodMs: number }) {
  const out: string[] = [];
  const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = o;
  for (const [k, v] of Object.entries({ leaseDurationMs, renewDeadlineMs, retryPeriodMs }))
    if (!Number.isFinite(v) || v <= 0) out.push(`${k.replace(/Ms$/, '')} must be a positive number of seconds`);
  if (out.length > 0) return out;
  if (o.leaseDurationMs <= o.renewDeadlineMs)
    out.push(
      `the lease duration (${o.leaseDurationMs / 1000} s) must be greater than the renew deadline (${o.renewDeadlineMs / 1000} s)`,
    );
  if (o.renewDeadlineMs <= JITTER * o.retryPeriodMs)
    out.push(
      `the renew deadline (${o.renewDeadlineMs / 1000} s) must be greater than ${JITTER} × the retry period (${o.retryPeriodMs / 1000} s)`,
    );
  return out;
}

export class LeaseElector implements Elector {
  readonly identity: string;
  private readonly o: LeaseElectorOptions;
  private readonly now: () => number;
  private readonly m;
  private readonly listeners: ((leading: boolean) => void)[] = [];
  private readonly stop = new AbortController();
  private leading = false;
  /** Set once leadership was lost or released: never campaigned for again. */
  private over = false;
  private running: Promise<void> | undefined;
  private shutdownPromise: Promise<void> | undefined;
  /** The last record read or written, its JSON and when (this clock) it last changed. */
  private observed: LeaseSpec | undefined;
  private observedJson = '';
  private observedAt = 0;
  private resourceVersion: string | undefined;
  private leader: string | undefined;
  /** The failure being reported (logged once until a success). */
  private failing: string | undefined;

  constructor(o: LeaseElectorOptions) {
    const problems = leaseTimingProblems(o);
    if (problems.length > 0)
      throw new CrbridgeError(ErrorCode.Usage, `leader election: ${problems.join('; ')}`, { problems });
    this.o = o;
    this.identity = o.identity;
    this.now = o.now ?? Date.now;
    this.m = leaderMetrics(o.metrics);
    this.m.leader.set({ identity: this.identity }, 0);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** `namespace/name` of the Lease. */
  get description(): string {
    return `lease ${this.o.namespace}/${this.o.name}`;
  }

  state(): LeadershipState {
    return { identity: this.identity, leading: this.leading, leader: this.leader };
  }

  onChange(listener: (leading: boolean) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.running || this.over) return;
    if (signal.aborted) this.stop.abort();
    else signal.addEventListener('abort', () => this.stop.abort(), { once: true });
    this.o.logger.info('leader election: campaigning', {
      identity: this.identity,
      lease: `${this.o.namespace}/${this.o.name}`,
      leaseDurationSeconds: this.o.leaseDurationMs / 1000,
      renewDeadlineSeconds: this.o.renewDeadlineMs / 1000,
      retryPeriodSeconds: this.o.retryPeriodMs / 1000,
    });
    this.running = this.run(this.stop.signal).catch((err: unknown) => {
      this.o.logger.error('leader election stopped on an unexpected error', {
        code: ErrorCode.Internal,
        error: errorMessage(err),
      });
      this.lose('unexpected error');
    });
  }

  private async run(signal: AbortSignal): Promise<void> {
    // acquire: every retryPeriod (jittered) until this process holds the Lease
    while (!signal.aborted) {
      if (await this.tryAcquireOrRenew(signal, this.now() + this.o.renewDeadlineMs)) break;
      await sleep(this.o.retryPeriodMs * (1 + Math.random() * (JITTER - 1)), signal);
    }
    if (signal.aborted) return;
    this.setLeading(true);
    // renew: every retryPeriod; no success within renewDeadline of the last one means lost
    let renewedAt = this.now();
    while (!signal.aborted && this.leading) {
      const by = renewedAt + this.o.renewDeadlineMs;
      await sleep(Math.min(this.o.retryPeriodMs, Math.max(0, by - this.now())), signal);
      if (signal.aborted || !this.leading) return;
      const ok = await this.tryAcquireOrRenew(signal, by);
      if (!this.leading || signal.aborted) return;
      if (ok) {
        renewedAt = this.now();
        continue;
      }
      if (this.leader !== undefined && this.leader !== this.identity) {
        this.lose(`the Lease is held by ${this.leader}`);
        return;
      }
      if (this.now() >= by) {
        this.lose(`could not renew within the renew deadline (${this.o.renewDeadlineMs / 1000} s)`);
        return;
      }
    }
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.m.leader.set({ identity: this.identity }, leading ? 1 : 0);
    for (const l of [...this.listeners]) l(leading);
  }

  private lose(why: string): void {
    this.over = true;
    this.stop.abort();
    if (!this.leading) return;
    this.o.logger.error('leader election: lost the leadership; stopping at once', {
      code: ErrorCode.LeaderElection,
      identity: this.identity,
      reason: why,
    });
    this.setLeading(false);
  }

  /** Records the leader seen, logging and counting each change (one line per change). */
  private observeLeader(holder: string | undefined): void {
    const leader = holder || undefined;
    if (leader === this.leader) return;
    const previous = this.leader;
    this.leader = leader;
    this.m.transitions.inc({ identity: this.identity });
    this.o.logger.info(leader === undefined ? 'leader election: no one leads' : `leader election: ${leader} leads`, {
      identity: this.identity,
      leader: leader ?? null,
      previous: previous ?? null,
      leading: leader === this.identity,
    });
  }

  private path(name?: string): string {
    const coll = `/apis/coordination.k8s.io/v1/namespaces/${this.o.namespace}/leases`;
    return name ? `${coll}/${name}` : coll;
  }

  private failed(err: unknown, what: string): void {
    const msg = `leader election: cannot ${what} ${this.description}: ${errorMessage(err)}`;
    if (this.failing === msg) return;
    this.failing = msg;
    this.o.logger.warn(msg, { code: ErrorCode.LeaderElection, identity: this.identity });
  }

  /**
   * One attempt to take or renew the Lease (client-go's tryAcquireOrRenew); every request is
   * aborted at `by` (epoch ms, this clock). True when this process holds it afterwards.
   */
  private async tryAcquireOrRenew(signal: AbortSignal, by: number): Promise<boolean> {
    const timeout = AbortSignal.timeout(Math.max(1, by - this.now()));
    const sig = AbortSignal.any([signal, timeout]);
    const now = this.now();
    const duration = Math.ceil(this.o.leaseDurationMs / 1000);
    let current: Lease | undefined;
    try {
      current = (await this.o.api.request('GET', this.path(this.o.name), undefined, undefined, sig)) as Lease;
    } catch (err) {
      if (!(err instanceof KubeHttpError && err.status === 404)) {
        if (!signal.aborted) this.failed(err, 'read');
        return false;
      }
    }
    if (current === undefined) {
      const spec: LeaseSpec = {
        holderIdentity: this.identity,
        leaseDurationSeconds: duration,
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: 0,
      };
      try {
        const out = (await this.o.api.request('POST', this.path(), undefined, this.lease(spec), sig)) as Lease;
        this.written(out, spec);
        return true;
      } catch (err) {
        if (!(err instanceof KubeHttpError && err.status === 409) && !signal.aborted) this.failed(err, 'create');
        return false;
      }
    }
    const rec = current.spec ?? {};
    this.resourceVersion = current.metadata.resourceVersion;
    const json = JSON.stringify(rec);
    if (json !== this.observedJson) {
      this.observed = rec;
      this.observedJson = json;
      this.observedAt = this.now();
    }
    const holder = rec.holderIdentity || undefined;
    const held = (rec.leaseDurationSeconds ?? duration) * 1000;
    if (holder !== undefined && holder !== this.identity && this.observedAt + held > this.now()) {
      this.observeLeader(holder);
      this.failing = undefined;
      return false;
    }
    const mine = holder === this.identity;
    const spec: LeaseSpec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: duration,
      acquireTime: mine && rec.acquireTime ? rec.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: mine ? (rec.leaseTransitions ?? 0) : (rec.leaseTransitions ?? 0) + 1,
    };
    try {
      const out = (await this.o.api.request('PUT', this.path(this.o.name), undefined, this.lease(spec), sig)) as Lease;
      this.written(out, spec);
      return true;
    } catch (err) {
      if (!(err instanceof KubeHttpError && err.status === 409) && !signal.aborted) this.failed(err, 'update');
      return false;
    }
  }

  private lease(spec: LeaseSpec): Lease {
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: this.o.name,
        namespace: this.o.namespace,
        labels: { 'app.kubernetes.io/managed-by': 'crbridge' },
        ...(this.resourceVersion !== undefined && { resourceVersion: this.resourceVersion }),
      },
      spec,
    };
  }

  private written(out: Lease | undefined, spec: LeaseSpec): void {
    this.resourceVersion = out?.metadata?.resourceVersion;
    const rec = out?.spec ?? spec;
    this.observed = rec;
    this.observedJson = JSON.stringify(rec);
    this.observedAt = this.now();
    this.failing = undefined;
    this.observeLeader(this.identity);
  }

  /** Stops campaigning; a leader releases the Lease (empty holder) so a standby takes it at once. */
  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= (async () => {
      const wasLeading = this.leading;
      this.over = true;
      this.stop.abort();
      await Promise.race([this.running, sleep(Math.max(0, deadline - this.now()), new AbortController().signal)]);
      if (!wasLeading || this.observed?.holderIdentity !== this.identity) {
        this.setLeading(false);
        return;
      }
      this.setLeading(false);
      const now = this.now();
      const spec: LeaseSpec = {
        ...this.observed,
        holderIdentity: '',
        leaseDurationSeconds: 1,
        acquireTime: microTime(now),
        renewTime: microTime(now),
      };
      try {
        const sig = AbortSignal.timeout(Math.max(100, deadline - this.now()));
        await this.o.api.request('PUT', this.path(this.o.name), undefined, this.lease(spec), sig);
        this.o.logger.info('leader election: released the leadership', { identity: this.identity });
      } catch (err) {
        this.failed(err, 'release');
      }
    })();
    return this.shutdownPromise;
  }
}
