/**
 * Paths into JSON values for the stages that reshape or compare data (`transform`, `dedupe`):
 * parsed from an RFC 6901 pointer (`/status/phase`) or a dotted path (`status.phase`), where a
 * `*` token matches every key or index. All operations are copy-on-write: only the containers on
 * the way to a change are copied, the input is never modified (events share their objects with
 * other pipelines and sinks).
 */
import { escapeToken, parsePath, setOwn } from '../events/patch.ts';

/** A parsed path: its tokens, `*` for any key or index. */
export type Path = readonly string[];

/** Parses a pointer or dotted path; throws for a pointer that does not start with `/`. */
export function compilePath(path: string): Path {
  return parsePath(path);
}

/** The problem with `path` as a pointer or dotted path (with `*`), or undefined when it is fine (or empty: the schema refuses that). */
export function pathProblem(path: string, opts: { wildcards: boolean }): string | undefined {
  if (path === '') return undefined; // the schema's minLength says so
  if (path === '/') return 'the path is empty; name a field, e.g. /status/phase or status.phase';
  const tokens = parsePath(path);
  if (tokens.some((t) => t === ''))
    return `the path ${JSON.stringify(path)} has an empty segment; remove the extra / or .`;
  if (!opts.wildcards && tokens.includes('*'))
    return `the path ${JSON.stringify(path)} has a * wildcard, which is not allowed here; name one field`;
  return undefined;
}

/** Formats tokens as a pointer, for messages. */
export const pathString = (p: Path): string => p.map((t) => `/${escapeToken(t)}`).join('');

const INDEX = /^(0|[1-9][0-9]*)$/;

/** The keys of `node` that `token` matches. */
function matching(node: object, token: string): string[] {
  if (Array.isArray(node)) {
    if (token === '*') return node.map((_, i) => String(i));
    return INDEX.test(token) && Number(token) < node.length ? [token] : [];
  }
  if (token === '*') return Object.keys(node);
  return Object.hasOwn(node, token) ? [token] : [];
}

/**
 * Only the parts of `node` at `paths` (and what contains them): undefined when none exists. Array
 * elements picked by index or `*` keep their order; elements not picked are left out.
 */
export function pick(node: unknown, paths: readonly Path[]): unknown {
  if (paths.some((p) => p.length === 0)) return node;
  if (node === null || typeof node !== 'object') return undefined;
  const keys = new Map<string, Path[]>();
  for (const p of paths)
    for (const k of matching(node, p[0] as string)) {
      const list = keys.get(k) ?? [];
      list.push(p.slice(1));
      keys.set(k, list);
    }
  if (Array.isArray(node)) {
    const out: unknown[] = [];
    node.forEach((child, i) => {
      const sub = keys.get(String(i));
      if (!sub) return;
      const v = pick(child, sub);
      if (v !== undefined) out.push(v);
    });
    return out.length > 0 ? out : undefined;
  }
  const out: Record<string, unknown> = {};
  let any = false;
  for (const k of Object.keys(node)) {
    const sub = keys.get(k);
    if (!sub) continue;
    const v = pick((node as Record<string, unknown>)[k], sub);
    if (v === undefined) continue;
    setOwn(out, k, v);
    any = true;
  }
  return any ? out : undefined;
}

/** `node` without the values at `path` (array elements removed close up); the same value when nothing is there. */
export function remove(node: unknown, path: Path, i = 0): unknown {
  if (node === null || typeof node !== 'object' || i >= path.length) return node;
  const keys = matching(node, path[i] as string);
  if (keys.length === 0) return node;
  if (i === path.length - 1) {
    if (Array.isArray(node)) {
      const gone = new Set(keys.map(Number));
      return node.filter((_, j) => !gone.has(j));
    }
    const copy = { ...(node as Record<string, unknown>) };
    for (const k of keys) delete copy[k];
    return copy;
  }
  let copy: Record<string, unknown> | unknown[] | undefined;
  for (const k of keys) {
    const child = (node as Record<string, unknown>)[k];
    const next = remove(child, path, i + 1);
    if (next === child) continue;
    copy ??= Array.isArray(node) ? [...node] : { ...(node as Record<string, unknown>) };
    setOwn(copy, Array.isArray(copy) ? Number(k) : k, next);
  }
  return copy ?? node;
}

/**
 * `node` with `value` at `path` (no wildcards), creating the maps on the way; a value on the way
 * that is not a map or list is replaced by a map. An index past the end of a list appends.
 */
export function put(node: unknown, path: Path, value: unknown, i = 0): unknown {
  if (i === path.length) return value;
  const t = path[i] as string;
  if (Array.isArray(node) && INDEX.test(t)) {
    const copy = [...node];
    const at = Math.min(Number(t), copy.length);
    copy[at] = put(copy[at], path, value, i + 1);
    return copy;
  }
  const base =
    node !== null && typeof node === 'object' && !Array.isArray(node) ? (node as Record<string, unknown>) : {};
  const copy = { ...base };
  setOwn(copy, t, put(Object.hasOwn(base, t) ? base[t] : undefined, path, value, i + 1));
  return copy;
}

/** True when `a` is `b` or lies inside it (`/object/metadata/name` is within `/object`). */
export function within(a: Path, b: Path): boolean {
  return b.length <= a.length && b.every((t, i) => t === '*' || a[i] === '*' || t === a[i]);
}
