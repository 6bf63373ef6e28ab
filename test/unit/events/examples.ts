/**
 * The examples in docs/events.md are real events captured by the integration test
 * `test/integration/events/contract.test.ts` on the local real stack. Run it with
 * `CRBRIDGE_WRITE_EXAMPLES=1` to replace the block between the markers; examples.test.ts checks
 * that the block covers every kind of event and that each example passes levels 1 and 2.
 */
import { readFileSync, writeFileSync } from 'node:fs';

export const DOC = new URL('../../../docs/events.md', import.meta.url);
export const START = '<!-- examples:start (captured by test/integration/events/contract.test.ts) -->';
export const END = '<!-- examples:end -->';

export interface Example {
  /** The heading: in code style when it starts lower-case (an event kind), else as prose. */
  title: string;
  /** One or two sentences: what happened in the cluster. */
  note: string;
  /** Pretty-printed as JSON. */
  json: unknown;
}

export function renderExamples(examples: readonly Example[], captured: string): string {
  const parts: string[] = [START, '', captured, ''];
  for (const { title, note, json } of examples) {
    // an event's title is its kind, in code style; other titles (the Kafka record) are prose
    const heading = /^[a-z]/.test(title) ? `\`${title}\`` : title;
    parts.push(`### ${heading}`, '', note, '', '```json', JSON.stringify(json, null, 2), '```', '');
  }
  parts.push(END);
  return parts.join('\n');
}

/** `doc` with the block between the markers replaced. */
export function withExamples(doc: string, block: string): string {
  const a = doc.indexOf(START);
  const b = doc.indexOf(END);
  if (a === -1 || b === -1 || b < a) throw new Error(`docs/events.md lacks the markers ${START} … ${END}`);
  return doc.slice(0, a) + block + doc.slice(b + END.length);
}

/** Rewrites the examples block of docs/events.md. */
export function writeExamples(examples: readonly Example[], captured: string): void {
  writeFileSync(DOC, withExamples(readFileSync(DOC, 'utf8'), renderExamples(examples, captured)));
}

/** The examples in the block of `doc`: each `### title` with the JSON code block under it. */
export function docExamples(doc: string): { title: string; json: unknown }[] {
  const a = doc.indexOf(START);
  const b = doc.indexOf(END);
  if (a === -1 || b === -1 || b < a) throw new Error('docs/events.md lacks the example markers');
  const block = doc.slice(a, b);
  const out: { title: string; json: unknown }[] = [];
  const re = /^### `?([^`\n]+?)`?\n[\s\S]*?^```json\n([\s\S]*?)^```$/gm;
  for (let m = re.exec(block); m; m = re.exec(block))
    out.push({ title: m[1] as string, json: JSON.parse(m[2] as string) });
  return out;
}
