/**
 * Loads pipeline files: YAML with source positions, `${env:NAME}` / `${env:NAME:-default}` /
 * `${file:PATH}` references resolved in string values, then schema validation. All problems of
 * all files are collected and reported together, each with file:line:column and JSON pointer.
 * Pure apart from reading the named files and environment: opens no connection.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type Document, isMap, isScalar, isSeq, LineCounter, type Node, parseAllDocuments } from 'yaml';
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
}

/** Where a JSON pointer lands in the document: the deepest existing node on its path. */
export function positionOf(d: PositionedDocument, pointer: string): { line: number; column: number } {
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
  const offset = best?.range?.[0] ?? 0;
  const pos = d.lineCounter.linePos(offset);
  return { line: pos.line, column: pos.col };
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
    if (!bad && doc.contents !== null) out.push({ file, index, doc: doc as Document.Parsed, lineCounter });
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
