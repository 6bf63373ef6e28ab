/**
 * Removes fields nobody downstream needs (by default `metadata.managedFields`) from objects before
 * they enter the cache, the checkpoint and the deltas: they are the largest part of most objects.
 */
import type { KubeObject } from '../../events/delta.ts';

/** Parses RFC 6901 JSON pointers once; an invalid pointer (not starting with `/`) is rejected. */
export function parsePointers(pointers: readonly string[]): string[][] {
  return pointers.map((p) => {
    if (p === '' || !p.startsWith('/')) throw new Error(`invalid JSON pointer ${JSON.stringify(p)}`);
    return p
      .slice(1)
      .split('/')
      .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  });
}

/**
 * Returns `obj` without the fields at `paths` (copy-on-write: only the containers on the way are
 * copied; `obj` itself is never modified). Paths that do not exist are ignored.
 */
export function stripFields(obj: KubeObject, paths: readonly string[][]): KubeObject {
  let out: Record<string, unknown> = obj;
  for (const path of paths) out = without(out, path, 0);
  return out as KubeObject;
}

function without(node: Record<string, unknown>, path: readonly string[], i: number): Record<string, unknown> {
  const key = path[i] as string;
  if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) return node;
  if (i === path.length - 1) {
    const copy: Record<string, unknown> = Array.isArray(node) ? ([...node] as never) : { ...node };
    delete copy[key];
    return copy;
  }
  const child = node[key];
  if (child === null || typeof child !== 'object') return node;
  const next = without(child as Record<string, unknown>, path, i + 1);
  if (next === child) return node;
  const copy: Record<string, unknown> = Array.isArray(node) ? ([...node] as never) : { ...node };
  copy[key] = next;
  return copy;
}
