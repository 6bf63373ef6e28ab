/**
 * RFC 6902 JSON Patch between two JSON values, and RFC 6901 JSON pointers.
 *
 * The diff is structural and cheap: objects are compared key by key (remove, then replace/recurse,
 * then add, in key order), arrays element by element over their common length, then trailing
 * elements are removed (highest index first) or added (in order, by explicit index). Moving an
 * element inside an array therefore shows as replaces, never as `move`/`copy`. Equal subtrees
 * (including the very same reference) produce no operation. Applying the patch to `from` with any
 * RFC 6902 implementation yields a value deep-equal to `to`.
 */

export type PatchOp =
  | { op: 'add'; path: string; value: unknown }
  | { op: 'remove'; path: string }
  | { op: 'replace'; path: string; value: unknown };

/** Escapes one reference token per RFC 6901 (`~` → `~0`, `/` → `~1`). */
export function escapeToken(token: string): string {
  if (token.indexOf('~') === -1 && token.indexOf('/') === -1) return token;
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** Parses an RFC 6901 pointer ("" is the whole document) into its unescaped tokens. */
export function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new Error(`invalid JSON pointer ${JSON.stringify(pointer)}`);
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** Builds a pointer from unescaped tokens. */
export function formatPointer(tokens: readonly string[]): string {
  let out = '';
  for (const t of tokens) out += `/${escapeToken(t)}`;
  return out;
}

/**
 * Accepts either an RFC 6901 pointer (`/status/phase`) or a dotted path (`status.phase`) and
 * returns its tokens. Dotted paths cannot name keys containing dots; use a pointer for those.
 */
export function parsePath(path: string): string[] {
  if (path === '' || path.startsWith('/')) return parsePointer(path);
  return path.split('.');
}

/** Value at `tokens` in `doc`, or undefined. Array indices are decimal tokens. */
export function getAt(doc: unknown, tokens: readonly string[]): unknown {
  let cur: unknown = doc;
  for (const t of tokens) {
    if (cur === null || typeof cur !== 'object') return undefined;
    if (Array.isArray(cur)) {
      if (!/^(0|[1-9][0-9]*)$/.test(t)) return undefined;
      cur = cur[Number(t)];
    } else {
      if (!Object.hasOwn(cur, t)) return undefined;
      cur = (cur as Record<string, unknown>)[t];
    }
  }
  return cur;
}

/** Deep equality of two JSON values. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  const aa = Array.isArray(a);
  if (aa !== Array.isArray(b)) return false;
  if (aa) {
    const x = a as unknown[];
    const y = b as unknown[];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!jsonEqual(x[i], y[i])) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let n = 0;
  for (const k in x) {
    if (!Object.hasOwn(x, k)) continue;
    n++;
    if (!Object.hasOwn(y, k) || !jsonEqual(x[k], y[k])) return false;
  }
  for (const k in y) if (Object.hasOwn(y, k)) n--;
  return n === 0;
}

/** RFC 6902 patch turning `from` into `to`. Values in the patch share structure with `to`. */
export function diff(from: unknown, to: unknown): PatchOp[] {
  const ops: PatchOp[] = [];
  walk(from, to, '', ops);
  return ops;
}

function isContainer(v: unknown): v is object {
  return v !== null && typeof v === 'object';
}

/**
 * Appends the operations turning `a` into `b` at `path`. Children that are the same value (the
 * common case: most of an object does not change) are skipped before their path string is built,
 * so an unchanged leaf costs one comparison and no allocation.
 */
function walk(a: unknown, b: unknown, path: string, ops: PatchOp[]): void {
  if (a === b) return;
  if (!isContainer(a) || !isContainer(b) || Array.isArray(a) !== Array.isArray(b)) {
    // Primitives, or a change of container type: replace (NaN cannot occur in JSON).
    ops.push({ op: 'replace', path, value: b });
    return;
  }
  if (Array.isArray(a)) {
    const x = a as unknown[];
    const y = b as unknown[];
    const common = Math.min(x.length, y.length);
    for (let i = 0; i < common; i++) if (x[i] !== y[i]) walk(x[i], y[i], `${path}/${i}`, ops);
    for (let i = x.length - 1; i >= y.length; i--) ops.push({ op: 'remove', path: `${path}/${i}` });
    for (let i = x.length; i < y.length; i++) ops.push({ op: 'add', path: `${path}/${i}`, value: y[i] });
    return;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  for (const k of Object.keys(x))
    if (!Object.hasOwn(y, k)) ops.push({ op: 'remove', path: `${path}/${escapeToken(k)}` });
  for (const k of Object.keys(y)) {
    const yv = y[k];
    if (!Object.hasOwn(x, k)) {
      ops.push({ op: 'add', path: `${path}/${escapeToken(k)}`, value: yv });
      continue;
    }
    if (x[k] !== yv) walk(x[k], yv, `${path}/${escapeToken(k)}`, ops);
  }
}

/**
 * Applies an RFC 6902 patch made of add/remove/replace operations (what {@link diff} produces)
 * and returns the new document; `doc` is not modified (containers on the way are copied).
 * Throws on a path that does not exist.
 */
export function applyPatch(doc: unknown, ops: readonly PatchOp[]): unknown {
  let out = doc;
  for (const op of ops) out = applyOne(out, parsePointer(op.path), 0, op);
  return out;
}

function applyOne(node: unknown, tokens: string[], i: number, op: PatchOp): unknown {
  if (tokens.length === 0) {
    if (op.op === 'remove') throw new Error('cannot remove the whole document');
    return op.value;
  }
  if (!isContainer(node)) throw new Error(`path ${op.path} does not exist`);
  const t = tokens[i] as string;
  const last = i === tokens.length - 1;
  if (Array.isArray(node)) {
    const copy = [...node];
    const idx = t === '-' ? copy.length : Number(t);
    if (!/^(0|[1-9][0-9]*|-)$/.test(t) || idx > copy.length) throw new Error(`bad array index in ${op.path}`);
    if (!last) {
      if (idx >= copy.length) throw new Error(`path ${op.path} does not exist`);
      copy[idx] = applyOne(copy[idx], tokens, i + 1, op);
      return copy;
    }
    if (op.op === 'add') copy.splice(idx, 0, op.value);
    else {
      if (idx >= copy.length) throw new Error(`path ${op.path} does not exist`);
      if (op.op === 'remove') copy.splice(idx, 1);
      else copy[idx] = op.value;
    }
    return copy;
  }
  const copy: Record<string, unknown> = { ...(node as Record<string, unknown>) };
  if (!last) {
    if (!Object.hasOwn(copy, t)) throw new Error(`path ${op.path} does not exist`);
    setOwn(copy, t, applyOne(copy[t], tokens, i + 1, op));
    return copy;
  }
  if (op.op === 'add') setOwn(copy, t, op.value);
  else {
    if (!Object.hasOwn(copy, t)) throw new Error(`path ${op.path} does not exist`);
    if (op.op === 'remove') delete copy[t];
    else setOwn(copy, t, op.value);
  }
  return copy;
}

/** Sets an own enumerable property, even for a key like `__proto__` (JSON data, not a prototype). */
export function setOwn(o: object, k: string | number, v: unknown): void {
  Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
}
