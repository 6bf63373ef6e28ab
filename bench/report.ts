/**
 * Benchmark result reporting: one JSON object per line on stdout (name, value, unit, parameters)
 * and a readable table at the end. Shared by every benchmark in `bench/`.
 */

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  parameters?: Record<string, unknown>;
}

const results: BenchResult[] = [];

export function report(r: BenchResult): void {
  results.push(r);
  process.stdout.write(`${JSON.stringify({ ...r, value: Number(r.value.toFixed(3)) })}\n`);
}

export function table(): string {
  const rows = results.map((r) => [
    r.name,
    r.value >= 100 ? Math.round(r.value).toLocaleString('en-US') : r.value.toFixed(2),
    r.unit,
    Object.entries(r.parameters ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(' '),
  ]);
  const head = ['benchmark', 'value', 'unit', 'parameters'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    `| ${r.map((c, i) => (i === 1 ? c.padStart(w[i] ?? 0) : c.padEnd(w[i] ?? 0))).join(' | ')} |`;
  return [
    line(head),
    `|${w.map((n, i) => (i === 1 ? `${'-'.repeat(n + 1)}:` : '-'.repeat(n + 2))).join('|')}|`,
    ...rows.map(line),
  ].join('\n');
}

/** Percentile of a sorted array (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

const noteList: string[] = [];

/** A remark printed under the table (what a figure is limited by, what was not measured and why). */
export function note(text: string): void {
  noteList.push(text);
  process.stderr.write(`note: ${text}\n`);
}

export function notes(): readonly string[] {
  return noteList;
}

/** Every result reported so far. */
export function allResults(): readonly BenchResult[] {
  return results;
}
