/**
 * Reads the Prometheus text exposition format (what crbridge's `/metrics` serves) into samples, for
 * `crbridge top`. Tolerant: comment lines are skipped, a line it cannot read is ignored.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of `text`, in order. */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value =
      m[3] === '+Inf' ? Number.POSITIVE_INFINITY : m[3] === '-Inf' ? Number.NEGATIVE_INFINITY : Number(m[3]);
    out.push({ name: m[1] as string, labels: parseLabels(m[2] ?? ''), value });
  }
  return out;
}

function parseLabels(s: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const re = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;
  for (const m of s.matchAll(re))
    labels[m[1] as string] = (m[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  return labels;
}

/** Samples indexed for look-ups: by name, then by one label's value. */
export class Snapshot {
  readonly at: number;
  private readonly byName = new Map<string, Sample[]>();

  constructor(samples: readonly Sample[], at: number) {
    this.at = at;
    for (const s of samples) {
      const list = this.byName.get(s.name);
      if (list) list.push(s);
      else this.byName.set(s.name, [s]);
    }
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  samples(name: string): readonly Sample[] {
    return this.byName.get(name) ?? [];
  }

  /** Sum of `name`'s samples whose labels include every pair of `match`; undefined when none. */
  sum(name: string, match: Record<string, string> = {}): number | undefined {
    let total: number | undefined;
    for (const s of this.samples(name)) {
      if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) total = (total ?? 0) + s.value;
    }
    return total;
  }

  /** The distinct values of `label` among `name`'s samples, in order of appearance. */
  values(name: string, label: string): string[] {
    const seen = new Set<string>();
    for (const s of this.samples(name)) {
      const v = s.labels[label];
      if (v !== undefined) seen.add(v);
    }
    return [...seen];
  }
}
