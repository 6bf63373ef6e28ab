/**
 * Reads Prometheus text exposition (kube-apiserver's or crbridge's `/metrics`) in tests and
 * benchmarks: the sum of a metric's samples whose labels match.
 */

/** Sum of the samples of `name` whose labels include every `key="value"` of `match`. */
export function metricSum(text: string, name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels = m[3] ?? '';
    if (Object.entries(match).every(([k, v]) => labels.includes(`${k}="${v}"`))) sum += Number(m[4]);
  }
  return sum;
}
