/**
 * Text templates whose placeholders are CEL expressions: `"Backup {{ object.metadata.name }} is
 * {{ object.status.phase }}"`. Placeholders compile in the one CEL environment of the filter and
 * enrich stages (`compileCel`), so a template sees the same variables (object, oldObject, change,
 * patch, event). Compilation is pure and locates every problem by offset, line and column within
 * the template string (the pipeline loader turns the offset into file:line:column); rendering never
 * throws: a placeholder that fails for an event renders {@link TEMPLATE_ERROR_MARKER}, and the
 * failure is counted and logged once per kind (`src/stages/expression-failure.ts`).
 *
 * Syntax: `{{` opens a placeholder, the first `}}` outside a CEL string literal and outside braces
 * of a map literal closes it. A literal `{{` in the text is written as a CEL string: `{{ "{{" }}`.
 */
import { Optional } from '@marcbachmann/cel-js';
import type { ComponentContext } from '../component.ts';
import type { CloudEvent } from '../events/cloudevent.ts';
import { expressionFailure } from '../stages/expression-failure.ts';
import { CelCompileError, type CelProgram, type CelVariables, celVariables, compileCel } from './index.ts';

/** What a placeholder renders as when its expression fails for an event. */
export const TEMPLATE_ERROR_MARKER = '<error>';

/** One problem of a template, located within the template string (0-based offset, 1-based line and column). */
export interface TemplateProblem {
  message: string;
  offset: number;
  line: number;
  column: number;
}

/** A template that could not be compiled: its first problem, with where it is in the template. */
export class TemplateCompileError extends CelCompileError {
  readonly problems: readonly TemplateProblem[];
  readonly line: number;
  readonly column: number;
  declare readonly offset: number;
  constructor(problems: readonly TemplateProblem[]) {
    const first = problems[0] as TemplateProblem;
    super(first.message, first.offset);
    this.name = 'TemplateCompileError';
    this.problems = problems;
    this.line = first.line;
    this.column = first.column;
  }
}

/** Called when a placeholder fails for an event; must not throw (the placeholder then renders the marker). */
export type TemplateFailure = (expression: string, err: unknown) => void;

/** A compiled template. Rendering is synchronous and never throws. */
export interface Template {
  readonly source: string;
  /** The placeholders' CEL expressions, in order. */
  readonly expressions: readonly string[];
  /**
   * The text with each placeholder replaced by its value for `vars`, stringified by
   * {@link templateString}. A placeholder that fails renders {@link TEMPLATE_ERROR_MARKER} and
   * calls `onError` (if given) with its expression.
   */
  render(vars: CelVariables, onError?: TemplateFailure): string;
}

type Part = string | { program: CelProgram };

/** A placeholder found in a template: where its `{{` is and where its expression starts and ends. */
interface Placeholder {
  open: number;
  start: number;
  end: number;
}

/** The 1-based line and column of `offset` in `text` (lines end at \n). */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++)
    if (text[i] === '\n') {
      line++;
      lineStart = i + 1;
    }
  return { line, column: offset - lineStart + 1 };
}

/**
 * Where the placeholder opened at `open` (the index of its `{{`) ends: the index of its closing
 * `}}`, or -1 when it is not closed. Skips CEL string literals ('..', "..", triple-quoted, raw)
 * and balanced braces, so `{{ {"a": {"b": 1}}["a"] }}` and `{{ "}}" }}` are one placeholder each.
 */
function closingOf(source: string, open: number): number {
  let depth = 0;
  let i = open + 2;
  while (i < source.length) {
    const c = source[i] as string;
    if (c === '"' || c === "'") {
      const raw = i > 0 && /[rR]/.test(source[i - 1] ?? '') && !/[\w]/.test(source[i - 2] ?? '');
      const quote = source.startsWith(c.repeat(3), i) ? c.repeat(3) : c;
      i += quote.length;
      while (i < source.length && !source.startsWith(quote, i)) {
        if (!raw && source[i] === '\\') i++;
        else if (quote.length === 1 && source[i] === '\n') break;
        i++;
      }
      i += quote.length;
      continue;
    }
    if (c === '{') depth++;
    else if (c === '}') {
      if (depth === 0 && source[i + 1] === '}') return i;
      if (depth > 0) depth--;
    }
    i++;
  }
  return -1;
}

function scan(source: string): { texts: string[]; placeholders: Placeholder[]; problems: TemplateProblem[] } {
  const texts: string[] = [];
  const placeholders: Placeholder[] = [];
  const problems: TemplateProblem[] = [];
  let at = 0;
  for (;;) {
    const open = source.indexOf('{{', at);
    if (open < 0) break;
    const close = closingOf(source, open);
    if (close < 0) {
      problems.push({
        message: 'the placeholder opened here is not closed; end it with }} (write a literal {{ as {{ "{{" }})',
        offset: open,
        ...lineColumn(source, open),
      });
      break;
    }
    texts.push(source.slice(at, open));
    const inner = source.slice(open + 2, close);
    const lead = inner.length - inner.trimStart().length;
    placeholders.push({ open, start: open + 2 + lead, end: open + 2 + inner.trimEnd().length });
    at = close + 2;
  }
  texts.push(source.slice(at));
  return { texts, placeholders, problems };
}

function compileParts(source: string): { parts: Part[]; expressions: string[]; problems: TemplateProblem[] } {
  const { texts, placeholders, problems } = scan(source);
  const parts: Part[] = [];
  const expressions: string[] = [];
  placeholders.forEach((p, i) => {
    if (texts[i]) parts.push(texts[i] as string);
    const expression = source.slice(p.start, p.end);
    expressions.push(expression);
    if (expression === '') {
      problems.push({
        message: 'the placeholder is empty; write a CEL expression between {{ and }}, e.g. {{ object.metadata.name }}',
        offset: p.open,
        ...lineColumn(source, p.open),
      });
      return;
    }
    try {
      parts.push({ program: compileCel(expression, 'any') });
    } catch (err) {
      const inExpr = err instanceof CelCompileError ? err.offset : undefined;
      const offset = inExpr === undefined ? p.start : p.start + Math.min(inExpr, expression.length);
      const message = err instanceof Error ? err.message : String(err);
      problems.push({
        message: `in placeholder {{ ${expression} }}: ${message}`,
        offset,
        ...lineColumn(source, offset),
      });
    }
  });
  const last = texts[placeholders.length];
  if (last) parts.push(last);
  problems.sort((a, b) => a.offset - b.offset);
  return { parts, expressions, problems };
}

/**
 * Parses `source` and compiles its placeholders. Pure (no I/O); throws
 * {@link TemplateCompileError} (all problems, the first as its message) when any placeholder is
 * unclosed, empty or not valid CEL.
 */
export function compileTemplate(source: string): Template {
  const { parts, expressions, problems } = compileParts(source);
  if (problems.length > 0) throw new TemplateCompileError(problems);
  return {
    source,
    expressions,
    render(vars, onError) {
      let out = '';
      for (const part of parts) {
        if (typeof part === 'string') {
          out += part;
          continue;
        }
        try {
          out += templateString(part.program.evaluate(vars));
        } catch (err) {
          out += TEMPLATE_ERROR_MARKER;
          try {
            onError?.(part.program.source, err);
          } catch {
            // a reporter that throws must not make rendering throw
          }
        }
      }
      return out;
    },
  };
}

/** Every problem of `source` as a template (none when it compiles); for validation. */
export function templateProblems(source: string): TemplateProblem[] {
  return compileParts(source).problems;
}

/**
 * The `check` results of a template field, for a factory's `check`: each problem at `pointer`
 * with its offset within the string, so `crbridge validate` reports the exact line and column of
 * the pipeline file. A value that is not a string yields nothing (the schema reports it).
 */
export function checkTemplate(
  pointer: string,
  source: unknown,
): { pointer: string; message: string; offset: number }[] {
  if (typeof source !== 'string') return [];
  return templateProblems(source).map((p) => ({ pointer, message: p.message, offset: p.offset }));
}

/**
 * Renders templates for a component: a failed placeholder renders the marker and is counted
 * (`crbridge_component_errors_total{code="CRB_EXPRESSION"}`) and logged once per expression and
 * kind of error, naming the event. For the stages and for sinks with templates of their own.
 */
export function templateRenderer(ctx: ComponentContext): (template: Template, event: CloudEvent) => string {
  const failed = expressionFailure(ctx, 'marker', `the placeholder renders as ${TEMPLATE_ERROR_MARKER}`);
  return (template, event) => template.render(celVariables(event), (expression, err) => failed(event, expression, err));
}

/**
 * How a placeholder's value becomes text: strings as they are, null (and an empty optional) as
 * "", numbers and bools as CEL prints them (`3`, `2.5`, `true`), timestamps in RFC 3339, durations
 * as CEL writes them (`90s`), bytes in base64, lists and maps as compact JSON.
 */
export function templateString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return '';
  if (v instanceof Optional) return v.hasValue() ? templateString(v.value()) : '';
  switch (typeof v) {
    case 'boolean':
    case 'bigint':
    case 'number':
      return String(v);
  }
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  if (typeof (v as { value?: unknown }).value === 'bigint') return String((v as { value: bigint }).value); // uint
  if (!Array.isArray(v) && !(v instanceof Map) && !isPlain(v)) return String(v);
  return JSON.stringify(v, jsonValue) ?? '';
}

/** A map from JSON or a CEL map literal, as opposed to a CEL value class (duration, type). */
function isPlain(v: unknown): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function jsonValue(this: unknown, _key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Optional) return v.hasValue() ? v.value() : null;
  if (v instanceof Map) return Object.fromEntries(v);
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  if (v !== null && typeof v === 'object' && typeof (v as { value?: unknown }).value === 'bigint')
    return Number((v as { value: bigint }).value);
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && !isPlain(v)) return String(v);
  return v;
}
