/**
 * Kubernetes label and field selectors, client-side: the grammar and matching of
 * k8s.io/apimachinery `pkg/labels/selector.go` (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`,
 * `>`, `<`) and `pkg/fields/selector.go` (`=`, `==`, `!=`, with `\,` `\=` `\\` escapes). Pure.
 *
 * The source uses it to know whether an object can ever leave its selection (a label selector,
 * or a field selector on a field other than metadata.name / metadata.namespace, which never
 * change) and, where it can tell, whether an object is inside.
 */
import { CrbridgeError, ErrorCode } from '../../errors.ts';
import type { KubeObject } from '../../events/delta.ts';

export type LabelOperator = '=' | '==' | '!=' | 'in' | 'notin' | 'exists' | '!' | '>' | '<';

/** One requirement of a label selector; `values` is empty for `exists` and `!`. */
export interface LabelRequirement {
  key: string;
  operator: LabelOperator;
  values: string[];
}

/** One term of a field selector (`==` is read as `=`), the value unescaped. */
export interface FieldRequirement {
  field: string;
  operator: '=' | '!=';
  value: string;
}

/** Fields whose value never changes for one uid: a selector on them alone cannot be left. */
const IMMUTABLE_FIELDS: ReadonlySet<string> = new Set(['metadata.name', 'metadata.namespace']);

function invalid(kind: 'labelSelector' | 'fieldSelector', selector: string, why: string): CrbridgeError {
  return new CrbridgeError(ErrorCode.ConfigInvalid, `${kind} "${selector}": ${why}`, { [kind]: selector });
}

// ---------------------------------------------------------------------------------------------
// Label selectors

type Tok = 'end' | 'id' | ',' | '!' | '=' | '==' | '!=' | '>' | '<' | '(' | ')' | 'in' | 'notin' | 'error';

const SYMBOLS: ReadonlySet<string> = new Set([')', ',', '!', '==', '=', '>', '<', '!=', '(']);
const isSpecial = (c: string) => '=!(),><'.includes(c);
const isSpace = (c: string) => c === ' ' || c === '\t' || c === '\r' || c === '\n';

/** The lexer of selector.go: identifiers run up to a special symbol or white space. */
function lex(s: string): { tok: Tok; lit: string }[] {
  const out: { tok: Tok; lit: string }[] = [];
  let i = 0;
  for (;;) {
    while (i < s.length && isSpace(s[i] as string)) i++;
    if (i >= s.length) {
      out.push({ tok: 'end', lit: '' });
      return out;
    }
    if (isSpecial(s[i] as string)) {
      // the longest run of special symbols that is still a token
      let buf = '';
      let last = '';
      while (i < s.length && isSpecial(s[i] as string)) {
        const next = buf + s[i];
        if (SYMBOLS.has(next)) last = next;
        else if (last !== '') break;
        buf = next;
        i++;
      }
      if (last === '') out.push({ tok: 'error', lit: buf });
      else out.push({ tok: last as Tok, lit: last });
      continue;
    }
    let j = i;
    while (j < s.length && !isSpecial(s[j] as string) && !isSpace(s[j] as string)) j++;
    const lit = s.slice(i, j);
    i = j;
    out.push({ tok: lit === 'in' || lit === 'notin' ? lit : 'id', lit });
  }
}

const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Why `key` is not a label key (`[prefix/]name`), or undefined. */
function labelKeyProblem(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length > 2) return `invalid label key '${key}'`;
  const name = parts.at(-1) as string;
  if (parts.length === 2) {
    const prefix = parts[0] as string;
    if (prefix === '' || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))
      return `invalid prefix of label key '${key}' (a DNS subdomain)`;
  }
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) return `invalid label key '${key}'`;
  return undefined;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** `s` as a base-10 signed 64-bit integer (Go's strconv.ParseInt(s, 10, 64)), else undefined. */
function int64(s: string): bigint | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = BigInt(s);
  return n >= INT64_MIN && n <= INT64_MAX ? n : undefined;
}

function labelValueProblem(v: string): string | undefined {
  return v.length <= 63 && LABEL_VALUE.test(v) ? undefined : `invalid label value '${v}'`;
}

/**
 * Parses a label selector as the API server does (`labels.Parse`). Throws a CrbridgeError
 * (`CRB_CONFIG_INVALID`) naming the selector and the problem. The empty selector has no
 * requirements (everything matches).
 */
export function parseLabelSelector(selector: string): LabelRequirement[] {
  const toks = lex(selector);
  let p = 0;
  // in the position of a value, `in` and `notin` are identifiers
  const peek = (values = true) => {
    const t = toks[p] as { tok: Tok; lit: string };
    return values && (t.tok === 'in' || t.tok === 'notin') ? { tok: 'id' as Tok, lit: t.lit } : t;
  };
  const next = (values = true) => {
    const t = peek(values);
    p++;
    return t;
  };
  const fail = (why: string) => invalid('labelSelector', selector, why);
  const out: LabelRequirement[] = [];

  const requirement = (): LabelRequirement => {
    let t = next();
    let operator: LabelOperator | undefined;
    if (t.tok === '!') {
      operator = '!';
      t = next();
    }
    if (t.tok !== 'id') throw fail(`found '${t.lit}', expected: identifier`);
    const key = t.lit;
    const kp = labelKeyProblem(key);
    if (kp) throw fail(kp);
    const after = peek().tok;
    if (operator === '!' || after === 'end' || after === ',')
      return { key, operator: operator ?? 'exists', values: [] };
    const op = next(false);
    let values: string[];
    if (op.tok === 'in' || op.tok === 'notin') values = valueSet();
    else if (op.tok === '=' || op.tok === '==' || op.tok === '!=' || op.tok === '>' || op.tok === '<')
      values = exactValue();
    else throw fail(`found '${op.lit}', expected: in, notin, =, ==, !=, >, <`);
    for (const v of values) {
      const vp = labelValueProblem(v);
      if (vp) throw fail(vp);
    }
    const operator2 = op.tok as LabelOperator;
    if ((operator2 === '>' || operator2 === '<') && int64(values[0] as string) === undefined)
      throw fail(`for '>' and '<' the value must be an integer, not '${values[0]}'`);
    return { key, operator: operator2, values };
  };

  const exactValue = (): string[] => {
    const t = peek();
    if (t.tok === 'end' || t.tok === ',') return [''];
    next();
    if (t.tok === 'id') return [t.lit];
    throw fail(`found '${t.lit}', expected: identifier`);
  };

  const valueSet = (): string[] => {
    const open = next();
    if (open.tok !== '(') throw fail(`found '${open.lit}', expected: '('`);
    const first = peek();
    if (first.tok === ')') {
      next();
      return [''];
    }
    if (first.tok !== 'id' && first.tok !== ',') throw fail(`found '${first.lit}', expected: ',', ')' or identifier`);
    const set = new Set<string>();
    for (;;) {
      const t = next();
      if (t.tok === 'id') {
        set.add(t.lit);
        const n = peek();
        if (n.tok === ',') continue;
        if (n.tok === ')') break;
        throw fail(`found '${n.lit}', expected: ',' or ')'`);
      }
      if (t.tok === ',') {
        // empty values: "(,a)", "(a,)", "(a,,b)"
        if (set.size === 0) set.add('');
        const n = peek();
        if (n.tok === ')') {
          set.add('');
          break;
        }
        if (n.tok === ',') set.add('');
        continue;
      }
      throw fail(`found '${t.lit}', expected: ',', or identifier`);
    }
    next(); // ')'
    return [...set].sort();
  };

  for (;;) {
    const t = peek();
    if (t.tok === 'end') return out;
    if (t.tok !== 'id' && t.tok !== '!') throw fail(`found '${t.lit}', expected: !, identifier, or 'end of string'`);
    out.push(requirement());
    const sep = next();
    if (sep.tok === 'end') return out;
    if (sep.tok !== ',') throw fail(`found '${sep.lit}', expected: ',' or 'end of string'`);
    const n = peek();
    if (n.tok !== 'id' && n.tok !== '!') throw fail(`found '${n.lit}', expected: identifier after ','`);
  }
}

/** Whether `labels` satisfies every requirement (`Requirement.Matches` of selector.go). */
export function matchesLabels(
  reqs: readonly LabelRequirement[],
  labels: Readonly<Record<string, string>> = {},
): boolean {
  for (const r of reqs) {
    const has = Object.hasOwn(labels, r.key);
    const v = has ? labels[r.key] : undefined;
    let ok: boolean;
    switch (r.operator) {
      case '=':
      case '==':
      case 'in':
        ok = has && r.values.includes(v as string);
        break;
      case '!=':
      case 'notin':
        ok = !has || !r.values.includes(v as string);
        break;
      case 'exists':
        ok = has;
        break;
      case '!':
        ok = !has;
        break;
      case '>':
      case '<': {
        // a label value that is not a 64-bit integer matches neither
        const a = has ? int64(v as string) : undefined;
        const b = int64(r.values[0] as string);
        ok = a !== undefined && b !== undefined && (r.operator === '>' ? a > b : a < b);
        break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Field selectors

/**
 * Parses a field selector as `fields.ParseSelector` does: comma-separated terms (a `\,` does not
 * separate), each split at its first `!=`, `==` or `=`; the value is unescaped (`\\`, `\,`, `\=`).
 * Throws a CrbridgeError (`CRB_CONFIG_INVALID`).
 */
export function parseFieldSelector(selector: string): FieldRequirement[] {
  const fail = (why: string) => invalid('fieldSelector', selector, why);
  const terms: string[] = [];
  if (selector.length > 0) {
    let start = 0;
    let slash = false;
    for (let i = 0; i < selector.length; i++) {
      const c = selector[i];
      if (slash) slash = false;
      else if (c === '\\') slash = true;
      else if (c === ',') {
        terms.push(selector.slice(start, i));
        start = i + 1;
      }
    }
    terms.push(selector.slice(start));
  }
  const out: FieldRequirement[] = [];
  for (const term of terms) {
    if (term === '') continue;
    let split: { field: string; op: '!=' | '==' | '='; rhs: string } | undefined;
    for (let i = 0; i < term.length && !split; i++) {
      for (const op of ['!=', '==', '='] as const) {
        if (term.startsWith(op, i)) {
          split = { field: term.slice(0, i), op, rhs: term.slice(i + op.length) };
          break;
        }
      }
    }
    if (!split) throw fail(`can't understand '${term}'`);
    out.push({
      field: split.field,
      operator: split.op === '!=' ? '!=' : '=',
      value: unescapeFieldValue(split.rhs, fail),
    });
  }
  return out;
}

/** `v` escaped for a field selector value (`\\`, `\,`, `\=`), as fields.EscapeValue. */
export function escapeFieldValue(v: string): string {
  return v.replace(/[\\,=]/g, (c) => `\\${c}`);
}

function unescapeFieldValue(s: string, fail: (why: string) => Error): string {
  let out = '';
  let slash = false;
  for (const c of s) {
    if (slash) {
      if (c !== '\\' && c !== ',' && c !== '=') throw fail(`invalid escape sequence '\\${c}'`);
      out += c;
      slash = false;
    } else if (c === '\\') slash = true;
    else if (c === ',' || c === '=') throw fail(`unescaped '${c}' in a value`);
    else out += c;
  }
  if (slash) throw fail("invalid escape sequence '\\'");
  return out;
}

/** The value of a field this module can read (metadata.name, metadata.namespace), else undefined. */
function fieldValue(obj: KubeObject, field: string): string | undefined {
  if (field === 'metadata.name') return obj.metadata.name;
  if (field === 'metadata.namespace') return obj.metadata.namespace ?? '';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// A source's selection

/** The label and field selectors of a source, compiled. */
export interface Selection {
  /**
   * Whether an object can leave the selection while it exists: true with a label selector, or a
   * field selector on a field other than metadata.name / metadata.namespace. False without
   * selectors: then every object that vanishes from the watch was deleted.
   */
  readonly canLeave: boolean;
  /**
   * Whether `obj` is inside the selection: true or false when every requirement can be checked
   * here, undefined when one is on a field this module cannot read.
   */
  matches(obj: KubeObject): boolean | undefined;
}

/** Compiles a source's selectors; throws a CrbridgeError (`CRB_CONFIG_INVALID`) for a malformed one. */
export function compileSelection(labelSelector = '', fieldSelector = ''): Selection {
  const labels = parseLabelSelector(labelSelector);
  const fields = parseFieldSelector(fieldSelector);
  return {
    canLeave: labels.length > 0 || fields.some((f) => !IMMUTABLE_FIELDS.has(f.field)),
    matches(obj) {
      let known = true;
      for (const f of fields) {
        const v = fieldValue(obj, f.field);
        if (v === undefined) known = false;
        else if ((v === f.value) !== (f.operator === '=')) return false;
      }
      if (!matchesLabels(labels, obj.metadata.labels)) return false;
      return known ? true : undefined;
    },
  };
}
