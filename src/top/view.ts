/**
 * What `crbridge top` shows, computed from two scrapes of `/metrics` (rates need two): the process
 * (leader, memory, CPU, event-loop lag), each source (watch state, objects, deltas/s, restarts) and
 * each pipeline with its sinks (events/s in and out, delivered, queue depth, delivery lag, retries,
 * dead letters, outbox depth, state), and the watched objects by phase when a `metrics` sink exports
 * them. Pure: text in, lines out; the terminal is `index.ts`'s.
 */
import type { Snapshot } from './prom.ts';

export interface SinkRow {
  component: string;
  name: string;
  inRate: number | undefined;
  outRate: number | undefined;
  sent: number;
  queue: number;
  /** Mean delivery latency (s) of the events acknowledged between the two scrapes. */
  lag: number | undefined;
  retries: number;
  dead: number;
  outbox: number | undefined;
  state: string;
  bad: boolean;
}

export interface PipelineRow {
  name: string;
  inRate: number | undefined;
  outRate: number | undefined;
  received: number;
  invalid: number;
  dead: number;
  sinks: SinkRow[];
}

export interface SourceRow {
  component: string;
  state: string;
  bad: boolean;
  objects: number;
  deltaRate: number | undefined;
  restarts: number;
  errors: number;
}

export interface TopModel {
  /** `identity` when this instance leads, `standby`, or undefined (no election metric). */
  leader: string | undefined;
  rss: number | undefined;
  /** CPU use between the scrapes, in percent of one core. */
  cpu: number | undefined;
  heap: number | undefined;
  loopLag: number | undefined;
  sources: SourceRow[];
  pipelines: PipelineRow[];
  /** Objects per kind and phase (the `metrics` sinks' crbridge_cr_status_phase), kinds sorted. */
  phases: { kind: string; counts: [phase: string, objects: number][] }[];
}

const C = 'component';

/** Per-second rate of a counter between two scrapes; undefined without a previous one. */
function rate(prev: Snapshot | undefined, cur: Snapshot, name: string, match: Record<string, string>) {
  if (!prev) return undefined;
  const dt = (cur.at - prev.at) / 1000;
  if (dt <= 0) return undefined;
  const d = (cur.sum(name, match) ?? 0) - (prev.sum(name, match) ?? 0);
  return Math.max(0, d) / dt;
}

export function buildModel(cur: Snapshot, prev: Snapshot | undefined): TopModel {
  const n = (name: string, match: Record<string, string> = {}) => cur.sum(name, match) ?? 0;
  let leader: string | undefined;
  if (cur.has('crbridge_leader')) {
    const leading = cur.samples('crbridge_leader').find((s) => s.value === 1);
    leader = leading ? (leading.labels.identity ?? 'yes') : 'standby';
  }
  const cpuRate = rate(prev, cur, 'process_cpu_seconds_total', {});
  const sources: SourceRow[] = cur.values('crbridge_source_objects', C).map((component) => {
    const L = { component };
    const served = cur.sum('crbridge_source_resource_served', L);
    const synced = n('crbridge_source_synced', L) === 1;
    const state = served === 0 ? 'not served' : synced ? 'watching' : 'syncing';
    return {
      component,
      state,
      bad: state !== 'watching',
      objects: n('crbridge_source_objects', L),
      deltaRate: rate(prev, cur, 'crbridge_source_deltas_total', L),
      restarts: n('crbridge_source_watch_restarts_total', L),
      errors: n('crbridge_component_errors_total', L),
    };
  });

  const sinkComponents = cur.values('crbridge_component_queue_depth', C);
  const pipelineNames = new Set<string>();
  for (const c of cur.values('crbridge_component_received_events_total', C)) if (!c.includes('/')) pipelineNames.add(c);
  for (const c of sinkComponents) pipelineNames.add(c.slice(0, c.indexOf('/')));
  const pipelines: PipelineRow[] = [...pipelineNames].sort().map((name) => {
    const L = { component: name };
    const sinks = sinkComponents
      .filter((c) => c.startsWith(`${name}/`))
      .map((component): SinkRow => {
        const S = { component };
        const dCount =
          prev &&
          n('crbridge_component_delivery_latency_seconds_count', S) -
            (prev.sum('crbridge_component_delivery_latency_seconds_count', S) ?? 0);
        const dSum =
          prev &&
          n('crbridge_component_delivery_latency_seconds_sum', S) -
            (prev.sum('crbridge_component_delivery_latency_seconds_sum', S) ?? 0);
        const failing = n('crbridge_component_failing', S) === 1;
        const failingSecs = n('crbridge_component_failing_seconds', S);
        const gone = n('crbridge_webhook_endpoint_gone', S) === 1;
        const outboxFull = n('crbridge_outbox_full', S) === 1;
        const state = gone
          ? 'gone (410)'
          : failing
            ? `DOWN ${fmtSecs(failingSecs)}`
            : failingSecs > 0
              ? `retrying ${fmtSecs(failingSecs)}`
              : outboxFull
                ? 'outbox full'
                : 'ok';
        return {
          component,
          name: component.slice(name.length + 1),
          inRate: rate(prev, cur, 'crbridge_component_received_events_total', S),
          outRate: rate(prev, cur, 'crbridge_component_sent_events_total', S),
          sent: n('crbridge_component_sent_events_total', S),
          queue: n('crbridge_component_queue_depth', S),
          lag: dCount !== undefined && dCount > 0 ? (dSum ?? 0) / dCount : undefined,
          retries: n('crbridge_component_retries_total', S),
          dead: n('crbridge_component_dead_lettered_events_total', S),
          outbox: cur.sum('crbridge_outbox_entries', S),
          state,
          bad: state !== 'ok',
        };
      });
    return {
      name,
      inRate: rate(prev, cur, 'crbridge_component_received_events_total', L),
      outRate: rate(prev, cur, 'crbridge_component_sent_events_total', L),
      received: n('crbridge_component_received_events_total', L),
      invalid: n('crbridge_events_invalid_total', L),
      dead: n('crbridge_component_dead_lettered_events_total', L),
      sinks,
    };
  });
  const byKind = new Map<string, Map<string, number>>();
  for (const smp of cur.samples('crbridge_cr_status_phase')) {
    const kind = smp.labels.kind ?? '';
    const phase = smp.labels.phase ?? '';
    let counts = byKind.get(kind);
    if (!counts) {
      counts = new Map();
      byKind.set(kind, counts);
    }
    counts.set(phase, (counts.get(phase) ?? 0) + smp.value);
  }
  const phases = [...byKind]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([kind, counts]) => ({ kind, counts: [...counts].sort(([a], [b]) => a.localeCompare(b)) }));
  return {
    leader,
    phases,
    rss: cur.sum('process_resident_memory_bytes'),
    cpu: cpuRate === undefined ? undefined : cpuRate * 100,
    heap: cur.sum('nodejs_heap_size_used_bytes'),
    loopLag: cur.sum('nodejs_eventloop_lag_max_seconds'),
    sources,
    pipelines,
  };
}

// ---------------------------------------------------------------------------------------------
// Rendering

export interface RenderOptions {
  url: string;
  width: number;
  /** ANSI colours and bold; off for a dumb terminal. */
  color: boolean;
  /** One line about the last scrape when it failed. */
  error?: string | undefined;
  now?: Date;
}

const ESC = '\x1b[';
const paint = (on: boolean, code: string, s: string) => (on ? `${ESC}${code}m${s}${ESC}0m` : s);

function fmtSecs(s: number): string {
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}
const fmtRate = (r: number | undefined) => (r === undefined ? '-' : r >= 100 ? r.toFixed(0) : r.toFixed(1));
const fmtInt = (v: number | undefined) => (v === undefined ? '-' : String(Math.round(v)));
function fmtBytes(b: number | undefined): string {
  if (b === undefined) return '-';
  if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(1)} GiB`;
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(1)} MiB`;
  return `${(b / 1024).toFixed(0)} KiB`;
}
function fmtLag(s: number | undefined): string {
  if (s === undefined) return '-';
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  return s < 60 ? `${s.toFixed(1)}s` : fmtSecs(s);
}

/** A table: the first column left-aligned, the others right-aligned, columns two spaces apart. */
function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows)
    for (let i = 0; i < r.length; i++) widths[i] = Math.max(widths[i] ?? 0, (r[i] as string).length);
  return rows.map((r) =>
    r
      .map((c, i) => (i === 0 || i === r.length - 1 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/** The screen, one string per line (no trailing newline), each cut to `width`. */
export function renderTop(model: TopModel | undefined, opts: RenderOptions): string[] {
  const { color } = opts;
  const bold = (s: string) => paint(color, '1', s);
  const time = (opts.now ?? new Date()).toISOString().slice(11, 19);
  const out: string[] = [];
  out.push(bold(`crbridge top — ${opts.url} — ${time} UTC — q quits`));
  if (opts.error) out.push(paint(color, '31', `cannot read metrics: ${opts.error}`));
  if (!model) {
    out.push('waiting for the first scrape…');
    return cut(out, opts.width);
  }
  const proc = [
    model.leader !== undefined ? `leader: ${model.leader}` : undefined,
    `rss ${fmtBytes(model.rss)}`,
    `cpu ${model.cpu === undefined ? '-' : `${model.cpu.toFixed(1)}%`}`,
    `heap ${fmtBytes(model.heap)}`,
    `loop lag ${fmtLag(model.loopLag)}`,
  ].filter((x) => x !== undefined);
  out.push(proc.join('   '), '');

  const src = table([
    ['SOURCE', 'OBJECTS', 'DELTAS/S', 'RESTARTS', 'ERRORS', 'WATCH'],
    ...model.sources.map((s) => [
      s.component,
      fmtInt(s.objects),
      fmtRate(s.deltaRate),
      fmtInt(s.restarts),
      fmtInt(s.errors),
      s.state,
    ]),
  ]);
  out.push(bold(src[0] as string));
  model.sources.forEach((s, i) => {
    out.push(s.bad ? paint(color, '33', src[i + 1] as string) : (src[i + 1] as string));
  });
  out.push('');

  const rows: string[][] = [
    ['PIPELINE / SINK', 'IN/S', 'OUT/S', 'DELIVERED', 'QUEUE', 'LAG', 'RETRIES', 'DEAD', 'OUTBOX', 'STATE'],
  ];
  const bad: boolean[] = [false];
  for (const p of model.pipelines) {
    rows.push([
      p.name,
      fmtRate(p.inRate),
      fmtRate(p.outRate),
      '',
      '',
      '',
      '',
      fmtInt(p.dead),
      '',
      p.invalid > 0 ? `${fmtInt(p.invalid)} invalid` : '',
    ]);
    bad.push(p.invalid > 0);
    for (const s of p.sinks) {
      rows.push([
        `  ${s.name}`,
        fmtRate(s.inRate),
        fmtRate(s.outRate),
        fmtInt(s.sent),
        fmtInt(s.queue),
        fmtLag(s.lag),
        fmtInt(s.retries),
        fmtInt(s.dead),
        fmtInt(s.outbox),
        s.state,
      ]);
      bad.push(s.bad);
    }
  }
  const pipes = table(rows);
  pipes.forEach((line, i) => {
    out.push(i === 0 ? bold(line) : bad[i] ? paint(color, '31', line) : line);
  });
  if (model.pipelines.length === 0) out.push('(no pipeline metrics yet)');
  if (model.phases.length > 0) {
    out.push('', bold('RESOURCES BY PHASE (metrics sinks)'));
    for (const k of model.phases)
      out.push(`${k.kind}: ${k.counts.map(([phase, count]) => `${phase} ${fmtInt(count)}`).join('  ')}`);
  }
  return cut(out, opts.width);
}

/** Cuts each line to `width` visible characters (colour codes do not count). */
function cut(lines: string[], width: number): string[] {
  return lines.map((l) => {
    let visible = 0;
    let i = 0;
    while (i < l.length) {
      if (l[i] === '\x1b') {
        const end = l.indexOf('m', i);
        i = end < 0 ? l.length : end + 1;
        continue;
      }
      if (visible >= width) return `${l.slice(0, i)}${l.includes('\x1b') ? `${ESC}0m` : ''}`;
      visible++;
      i++;
    }
    return l;
  });
}
