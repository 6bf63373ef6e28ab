/**
 * The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (liveness: the event
 * loop answers in time and no component is stuck) and `/readyz` (readiness: every source reads its
 * resource now). A failing probe answers 503 with one line per reason. Listens on `host:port`;
 * port 0 picks a free port. `/metrics` includes the process metrics (`src/telemetry/process.ts`). What the probes mean and how to wire them: docs/probes.md.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { ComponentStatus } from '../component.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import { registerProcessMetrics } from '../telemetry/process.ts';

export interface OpsServerOptions {
  host: string;
  port: number;
  metrics: Metrics;
  /** The components' state, asked on every probe (the runtime's `status()`). */
  status: () => ComponentStatus;
  /** Event-loop delay (ms) beyond which `/healthz` fails. Default 5000. */
  maxEventLoopDelayMs?: number;
  /** Length (ms) of one event-loop measurement window. Default 1000. */
  eventLoopWindowMs?: number;
}

export interface OpsServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Measures how late the event loop runs: the worst delay (`perf_hooks.monitorEventLoopDelay`) of
 * the last completed window, or, when the window's timer itself is overdue, how overdue it is (a
 * loop blocked right now). A one-off pause shows for one window only; a loop that keeps stalling
 * keeps showing.
 */
export class EventLoopWatch {
  private readonly histogram = monitorEventLoopDelay({ resolution: 20 });
  private readonly windowMs: number;
  private timer: NodeJS.Timeout | undefined;
  private lastMs = 0;
  private lastTick = performance.now();

  constructor(windowMs = 1000) {
    this.windowMs = windowMs;
  }

  start(): void {
    if (this.timer) return;
    this.histogram.enable();
    this.lastTick = performance.now();
    this.timer = setInterval(() => {
      this.lastMs = this.histogram.max / 1e6;
      this.histogram.reset();
      this.lastTick = performance.now();
    }, this.windowMs);
    this.timer.unref();
  }

  /**
   * The recent worst event-loop delay, in milliseconds: of the last completed window, of the
   * current one so far (a block that just ended may be recorded after the window timer ran), or
   * how overdue the window timer is (a loop blocked right now).
   */
  delayMs(): number {
    const current = this.histogram.count > 0 ? this.histogram.max / 1e6 : 0;
    return Math.max(this.lastMs, current, performance.now() - this.lastTick - this.windowMs);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.histogram.disable();
  }
}

const text = { 'content-type': 'text/plain; charset=utf-8' };
const lines = (reasons: readonly string[]) => reasons.map((r) => `${r}\n`).join('');

export async function startOpsServer(opts: OpsServerOptions): Promise<OpsServer> {
  const loop = new EventLoopWatch(opts.eventLoopWindowMs);
  const processMetrics = registerProcessMetrics(opts.metrics);
  const maxDelayMs = opts.maxEventLoopDelayMs ?? 5000;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(opts.metrics.render());
    } else if (path === '/healthz') {
      const st = opts.status();
      const delay = loop.delayMs();
      const reasons = st.live ? [] : [...st.reasons];
      if (delay > maxDelayMs)
        reasons.unshift(
          `event loop: delayed ${Math.round(delay)} ms (limit ${maxDelayMs} ms): the process is not responsive`,
        );
      const ok = reasons.length === 0;
      res.writeHead(ok ? 200 : 503, text).end(ok ? 'ok\n' : `not live\n${lines(reasons)}`);
    } else if (path === '/readyz') {
      const st = opts.status();
      res.writeHead(st.ready ? 200 : 503, text).end(st.ready ? 'ok\n' : `not ready\n${lines(st.reasons)}`);
    } else {
      res.writeHead(404, text).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  server.unref();
  loop.start();
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        loop.stop();
        processMetrics.stop();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
