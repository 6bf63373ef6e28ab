/**
 * Redaction: masking the values at configured JSON pointers (`events.redact`) with "[REDACTED]".
 * One implementation for everything that lets an object leave the process — the event builder and
 * what a source persists (its checkpoint) — so both mask exactly the same values.
 */
import { parsePointer, setOwn } from './patch.ts';

/** What a redacted value is replaced with. */
export const REDACTED = '[REDACTED]';

/** kubectl apply's copy of every applied field: it would repeat a redacted value in clear. */
export const LAST_APPLIED_POINTER = '/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration';

/** The configured pointers plus, whenever anything is redacted, kubectl's last-applied annotation. */
export function redactPointers(configured: readonly string[]): string[] {
  if (configured.length === 0 || configured.includes(LAST_APPLIED_POINTER)) return [...configured];
  return [...configured, LAST_APPLIED_POINTER];
}

/**
 * Parses configured pointers (`*` matches any key or index) into the token lists {@link redact}
 * takes, adding kubectl's last-applied annotation whenever anything is redacted. Empty for none.
 */
export function compileRedaction(configured: readonly string[]): string[][] {
  return redactPointers(configured).map(parsePointer);
}

/**
 * Returns `obj` with the values at `pointers` replaced by {@link REDACTED} (copy-on-write: only the
 * containers on the way are copied, `obj` is never modified) and the concrete pointers masked.
 * Idempotent: a value that already is {@link REDACTED} (a state stored redacted) is kept and still
 * reported as masked.
 */
export function redact<T>(obj: T, pointers: readonly string[][]): { object: T; masked: string[] } {
  const masked: string[] = [];
  let out: unknown = obj;
  for (const p of pointers) out = mask(out, p, 0, '', masked);
  return { object: out as T, masked };
}

function mask(node: unknown, path: readonly string[], i: number, at: string, masked: string[]): unknown {
  if (i === path.length) {
    masked.push(at);
    return REDACTED;
  }
  if (node === null || typeof node !== 'object') return node;
  const t = path[i] as string;
  const keys: string[] =
    t === '*'
      ? Array.isArray(node)
        ? node.map((_, j) => String(j))
        : Object.keys(node)
      : Array.isArray(node)
        ? /^(0|[1-9][0-9]*)$/.test(t) && Number(t) < node.length
          ? [t]
          : []
        : Object.hasOwn(node, t)
          ? [t]
          : [];
  let copy: Record<string, unknown> | unknown[] | undefined;
  for (const k of keys) {
    const child = (node as Record<string, unknown>)[k];
    const next = mask(child, path, i + 1, `${at}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`, masked);
    if (next === child) continue;
    copy ??= Array.isArray(node) ? [...node] : { ...(node as Record<string, unknown>) };
    setOwn(copy, Array.isArray(copy) ? Number(k) : k, next);
  }
  return copy ?? node;
}
