/**
 * Message templates of the `slack` sink: text with `{{ CEL expression }}` placeholders, compiled
 * once (pure, so `crbridge validate` reports a bad placeholder with its position) and rendered per
 * event. A placeholder producing null or an empty optional renders as ""; one that fails for an
 * event renders as `?` (the message still goes out; the failure is the sink's to log).
 *
 * Interim: when the stages' `compileTemplate` (src/cel/template.ts) lands, this file should
 * delegate to it so every template in a pipeline shares one implementation.
 */
import { CelCompileError, celVariables, compileCel, toAttributeValue } from '../../cel/index.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';

type Part = string | { expr: string; at: number; run: (e: CloudEvent) => unknown };

export interface Template {
  readonly source: string;
  /** The text for `event`; never throws (a failing placeholder renders as `?`). */
  render(event: CloudEvent): string;
}

/** Splits and compiles a template; throws {@link CelCompileError} naming the placeholder's position. */
export function compileTemplate(source: string): Template {
  const parts: Part[] = [];
  let i = 0;
  while (i < source.length) {
    const open = source.indexOf('{{', i);
    if (open < 0) {
      parts.push(source.slice(i));
      break;
    }
    if (open > i) parts.push(source.slice(i, open));
    const close = source.indexOf('}}', open + 2);
    if (close < 0) throw new CelCompileError(`at character ${open + 1}: "{{" is never closed by "}}"`);
    const expr = source.slice(open + 2, close).trim();
    if (expr === '') throw new CelCompileError(`at character ${open + 1}: the placeholder is empty`);
    let program: ReturnType<typeof compileCel>;
    try {
      program = compileCel(expr, 'attribute');
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new CelCompileError(`in the placeholder at character ${open + 1} ({{ ${expr} }}): ${msg}`);
    }
    parts.push({ expr, at: open, run: (e) => program.evaluate(celVariables(e)) });
    i = close + 2;
  }
  return {
    source,
    render(event) {
      let out = '';
      for (const p of parts) {
        if (typeof p === 'string') out += p;
        else {
          try {
            const v = toAttributeValue(p.run(event));
            out += v === null ? '' : String(v);
          } catch {
            out += '?';
          }
        }
      }
      return out;
    },
  };
}

/** The problems of a template (empty when it compiles); for `check`. */
export function templateProblems(source: string): string[] {
  try {
    compileTemplate(source);
    return [];
  } catch (err) {
    return [err instanceof Error ? err.message : String(err)];
  }
}
