/**
 * Loads pipeline files: YAML with source positions, `${env:NAME}` / `${env:NAME:-default}` /
 * `${file:PATH}` references resolved in string values, then schema validation. All problems of
 * all files are collected and reported together, each with file:line:column and JSON pointer.
 * Pure apart from reading the named files and environment: opens no connection.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type Document, isMap, isScalar, isSeq, LineCounter, type Node, parseAllDocuments, Scalar } from 'yaml';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import type { LoadedPipeline, PipelineConfig } from './types.ts';
import { locateError, type PipelineValidator } from './validate.ts';

export interface LoadOptions {
  env?: Record<string, string | undefined>;
}

/** A parsed YAML document and how to map JSON pointers back to lines. */
export interface PositionedDocument {
  file: string;
  index: number;
  doc: Document.Parsed;
  lineCounter: LineCounter;
  /** The file's text, to find a character inside a string value; absent: the value's start is used. */
  text?: string;
}

/**
 * Where a JSON pointer lands in the document: the deepest existing node on its path. With
 * `offset` (a 0-based character index into the string value at `pointer`, e.g. where a template
 * placeholder fails to compile), the position of that very character in the file, whatever the
 * scalar's style (plain, quoted with escapes, block literal or folded, over several lines); the
 * value's start when the character cannot be found (the value came from a `${env:}` reference).
 */
export function positionOf(d: PositionedDocument, pointer: string, offset?: number): { line: number; column: number } {
  const segments = pointer
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  let node: unknown = d.doc.contents;
  let best: Node | null = (node as Node | null) ?? null;
  for (const seg of segments) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === seg);
      if (!pair) break;
      node = pair.value ?? pair.key;
      best = (pair.value as Node | null) ?? (pair.key as Node);
    } else if (isSeq(node)) {
      const item = node.items[Number(seg)];
      if (item === undefined) break;
      node = item;
      best = item as Node;
    } else break;
  }
  let at = best?.range?.[0] ?? 0;
  if (offset !== undefined && d.text !== undefined && isScalar(best) && typeof best.value === 'string') {
    const inValue = sourceOffsets(d.text, best);
    const found = inValue?.[Math.min(offset, inValue.length - 1)];
    if (found !== undefined) at = found;
  }
  const pos = d.lineCounter.linePos(at);
  return { line: pos.line, column: pos.col };
}

/** YAML's double-quoted escapes that stand for one character. */
const ESCAPES: Record<string, string> = {
  '0': '\0',
  a: '\x07',
  b: '\b',
  t: '\t',
  '\t': '\t',
  n: '\n',
  v: '\v',
  f: '\f',
  r: '\r',
  e: '\x1b',
  ' ': ' ',
  '"': '"',
  '/': '/',
  '\\': '\\',
  N: '\x85',
  _: '\xa0',
  L: '\u2028',
  P: '\u2029',
};
const HEX_DIGITS: Record<string, number> = { x: 2, u: 4, U: 8 };

/**
 * For each character of a string scalar's value, its offset in `text`; undefined when the source
 * does not decode to the value (a `${env:}` reference was resolved in it) or uses an explicit
 * block indentation indicator.
 */
function sourceOffsets(text: string, node: Scalar): number[] | undefined {
  const [start, end] = node.range ?? [0, 0];
  const decoded =
    node.type === Scalar.BLOCK_LITERAL || node.type === Scalar.BLOCK_FOLDED
      ? decodeBlock(text, start, end, node.type === Scalar.BLOCK_FOLDED)
      : decodeFlow(
          text,
          start,
          end,
          node.type === Scalar.QUOTE_DOUBLE ? '"' : node.type === Scalar.QUOTE_SINGLE ? "'" : '',
        );
  if (!decoded) return undefined;
  const value = String(node.value);
  const trim = (v: string) =>
    node.type === Scalar.BLOCK_LITERAL || node.type === Scalar.BLOCK_FOLDED ? v.replace(/\n+$/, '') : v;
  return trim(decoded.value) === trim(value) ? decoded.at : undefined;
}

interface Decoded {
  value: string;
  at: number[];
}

const isBreak = (c: string | undefined) => c === '\n' || c === '\r';
const isBlank = (c: string | undefined) => c === ' ' || c === '\t';

/** A plain (`quote` ''), single- or double-quoted scalar: escapes, `''`, and line folding. */
function decodeFlow(text: string, start: number, end: number, quote: string): Decoded {
  const chars: string[] = [];
  const at: number[] = [];
  let kept = 0; // chars before this index are escaped or folded: never trimmed as trailing blanks
  let i = start + quote.length;
  const stop = quote && text[end - 1] === quote ? end - 1 : end;
  const emit = (c: string, from: number) => {
    for (const unit of c) {
      chars.push(unit);
      at.push(from);
    }
  };
  while (i < stop) {
    const c = text[i] as string;
    if (isBreak(c)) {
      while (chars.length > kept && isBlank(chars[chars.length - 1])) {
        chars.pop();
        at.pop();
      }
      const from = i;
      let breaks = 0;
      while (i < stop && (isBreak(text[i]) || isBlank(text[i]))) {
        if (text[i] === '\n') breaks++;
        i++;
      }
      if (breaks === 1) emit(' ', from);
      else for (let k = 1; k < breaks; k++) emit('\n', from);
      kept = chars.length;
      continue;
    }
    if (quote === "'" && c === "'" && text[i + 1] === "'") {
      emit("'", i);
      i += 2;
      kept = chars.length;
      continue;
    }
    if (quote === '"' && c === '\\') {
      const n = text[i + 1] ?? '';
      if (isBreak(n)) {
        i += 1;
        while (i < stop && (isBreak(text[i]) || isBlank(text[i]))) i++;
      } else if (n in HEX_DIGITS) {
        const digits = HEX_DIGITS[n] as number;
        emit(String.fromCodePoint(Number.parseInt(text.slice(i + 2, i + 2 + digits), 16) || 0), i);
        i += 2 + digits;
      } else {
        emit(ESCAPES[n] ?? n, i);
        i += 2;
      }
      kept = chars.length;
      continue;
    }
    emit(c, i);
    i++;
  }
  while (chars.length > kept && isBlank(chars[chars.length - 1]) && quote === '') {
    chars.pop();
    at.pop();
  }
  return { value: chars.join(''), at };
}

/** A block scalar (`|` or `>`, any chomping): indentation stripped, folded lines joined by spaces. */
function decodeBlock(text: string, start: number, end: number, folded: boolean): Decoded | undefined {
  let i = text.indexOf('\n', start);
  if (i < 0 || i >= end) return { value: '', at: [] };
  if (/[1-9]/.test(text.slice(start, i))) return undefined; // explicit indentation: not worth guessing
  i++;
  const lines: { from: number; to: number }[] = [];
  while (i < end) {
    let to = text.indexOf('\n', i);
    if (to < 0 || to > end) to = end;
    lines.push({ from: i, to: text[to - 1] === '\r' ? to - 1 : to });
    i = to + 1;
  }
  const first = lines.find((l) => text.slice(l.from, l.to).trim() !== '');
  if (!first) return { value: '', at: [] };
  let indent = 0;
  while (text[first.from + indent] === ' ') indent++;
  const chars: string[] = [];
  const at: number[] = [];
  const emit = (c: string, from: number) => {
    chars.push(c);
    at.push(from);
  };
  let prev: { kind: 'text' | 'more'; to: number } | undefined;
  let empty: number[] = [];
  for (const l of lines) {
    const content = l.from + indent;
    if (text.slice(l.from, l.to).trim() === '' && l.to - l.from <= indent) {
      empty.push(l.from);
      continue;
    }
    const kind = isBlank(text[content]) ? 'more' : 'text';
    if (prev) {
      if (folded && prev.kind === 'text' && kind === 'text') {
        if (empty.length === 0) emit(' ', prev.to);
      } else emit('\n', prev.to);
    }
    for (const e of empty) emit('\n', e);
    for (let k = content; k < l.to; k++) emit(text[k] as string, k);
    prev = { kind, to: l.to };
    empty = [];
  }
  return { value: chars.join(''), at };
}

const REF = /\$\{(env|file):([^}:]+)(?::-([^}]*))?\}/g;

/** Replaces references in every string scalar of the document, collecting failures as issues. */
function resolveReferences(
  d: PositionedDocument,
  env: Record<string, string | undefined>,
  issues: ConfigIssue[],
): void {
  const base = dirname(d.file);
  const visit = (node: unknown, pointer: string): void => {
    const issueAt = (at: Node, message: string) => {
      const pos = d.lineCounter.linePos(at.range?.[0] ?? 0);
      issues.push({ file: d.file, line: pos.line, column: pos.col, pointer, message });
    };
    if (isMap(node)) {
      for (const p of node.items) {
        const k = isScalar(p.key) ? String(p.key.value) : '';
        visit(p.value, `${pointer}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => {
        visit(item, `${pointer}/${i}`);
      });
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
      node.value = node.value.replace(REF, (whole, kind: string, name: string, fallback: string | undefined) => {
        if (kind === 'env') {
          const v = env[name];
          if (v !== undefined && v !== '') return v;
          if (fallback !== undefined) return fallback;
          issueAt(
            node,
            `environment variable ${name} is not set (referenced as ${whole}); set it or write \${env:${name}:-default}`,
          );
          return whole;
        }
        try {
          return readFileSync(resolve(base, name), 'utf8').trim();
        } catch (err) {
          issueAt(node, `cannot read ${whole}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
          return whole;
        }
      });
    }
  };
  visit(d.doc.contents, '');
}

/** Parses one file into positioned documents; YAML syntax errors become issues. */
export function parseFile(file: string, text: string, issues: ConfigIssue[]): PositionedDocument[] {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const list = Array.isArray(docs) ? docs : [docs];
  const out: PositionedDocument[] = [];
  list.forEach((doc, index) => {
    let bad = false;
    for (const e of doc.errors) {
      bad = true;
      const pos = lineCounter.linePos(e.pos[0]);
      issues.push({ file, line: pos.line, column: pos.col, pointer: '', message: `YAML: ${e.message.split('\n')[0]}` });
    }
    if (!bad && doc.contents !== null) out.push({ file, index, doc: doc as Document.Parsed, lineCounter, text });
  });
  if (out.length === 0 && issues.length === 0) {
    issues.push({ file, line: 1, column: 1, pointer: '', message: 'the file holds no pipeline document' });
  }
  return out;
}

/**
 * Loads and validates every file; throws one {@link ConfigError} listing every problem found, or
 * returns the pipelines. Pipeline names must be unique across files.
 */
export function loadPipelines(
  files: readonly string[],
  validator: PipelineValidator,
  opts: LoadOptions = {},
): LoadedPipeline[] {
  const env = opts.env ?? process.env;
  const issues: ConfigIssue[] = [];
  const loaded: LoadedPipeline[] = [];
  const names = new Map<string, string>();
  /** shared source key → the first pipeline using it, for settings that must agree */
  const sharers = new Map<string, { name: string; d: PositionedDocument; settings: Record<string, unknown> }>();
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      issues.push({
        file,
        line: 0,
        column: 0,
        pointer: '',
        message: `cannot read the file (${(err as NodeJS.ErrnoException).code ?? String(err)}: ${
          (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it does not exist' : (err as Error).message
        }); check the path given with -c`,
      });
      continue;
    }
    for (const d of parseFile(file, text, issues)) {
      resolveReferences(d, env, issues);
      const value = d.doc.toJS({ maxAliasCount: 100 }) as unknown;
      const errs = validator.validate(value);
      // in the order of the file, whichever check found them
      const located = errs.map((e) => locateError(d, e, positionOf));
      issues.push(...located.sort((a, b) => a.line - b.line || a.column - b.column));
      if (errs.length > 0) continue;
      const config = value as PipelineConfig;
      const where = `${file}:${positionOf(d, '/metadata/name').line}`;
      const prev = names.get(config.metadata.name);
      if (prev) {
        const pos = positionOf(d, '/metadata/name');
        issues.push({
          file,
          line: pos.line,
          column: pos.column,
          pointer: '/metadata/name',
          message: `pipeline name "${config.metadata.name}" is already used at ${prev}; names must be unique`,
        });
        continue;
      }
      names.set(config.metadata.name, where);
      issues.push(...sharingProblems(validator, value, d, config.metadata.name, sharers));
      loaded.push({ file, document: d.index, config });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return loaded;
}

/**
 * Pipelines that watch the same resource share one source instance (one LIST+WATCH, one
 * checkpoint): the settings it can only have once must agree. Each disagreement is reported at the
 * later pipeline, naming the earlier one's file and line.
 */
function sharingProblems(
  validator: PipelineValidator,
  value: unknown,
  d: PositionedDocument,
  name: string,
  sharers: Map<string, { name: string; d: PositionedDocument; settings: Record<string, unknown> }>,
): ConfigIssue[] {
  const sharing = validator.sharing?.(value);
  if (!sharing) return [];
  const first = sharers.get(sharing.key);
  if (!first) {
    sharers.set(sharing.key, { name, d, settings: sharing.settings });
    return [];
  }
  const out: ConfigIssue[] = [];
  for (const [pointer, mine] of Object.entries(sharing.settings)) {
    const theirs = first.settings[pointer];
    if (JSON.stringify(mine) === JSON.stringify(theirs)) continue;
    const at = `/spec/source${pointer}`;
    const pos = positionOf(d, at);
    const other = positionOf(first.d, at);
    out.push({
      file: d.file,
      line: pos.line,
      column: pos.column,
      pointer: at,
      message: `source ${pointer.slice(1)} is ${JSON.stringify(mine)} here but ${JSON.stringify(theirs)} in pipeline "${first.name}" (${first.d.file}:${other.line}); pipelines watching the same resource, namespaces and selectors share one LIST+WATCH and one checkpoint, so they must agree on it: make them equal`,
    });
  }
  return out;
}
