/**
 * The pure heart of gap-free delivery: comparing a fresh LIST with what was last handed on (the
 * cache after a relist, the checkpoint at start-up) and deciding which deltas to emit.
 *
 * Identity is the object's uid (a name deleted and recreated is a delete plus an add). An object
 * whose resourceVersion is unchanged produces nothing; a changed one produces one `modified`
 * carrying the net change (old = last handed-on state); one that vanished produces one `deleted`
 * with its last known state; an unknown one produces one `added`. Never an add for a known uid.
 */
import type { DeltaKind, KubeObject } from '../../events/delta.ts';

/** One decided change, before it is wrapped into a Delta (reason, resource, time). */
export interface Change {
  kind: DeltaKind;
  /** New state; for deletes the last known state. */
  object: KubeObject;
  /** Previous (handed-on) state for `modified`. */
  oldObject?: KubeObject;
}

/** Optional restriction of the comparison to part of the known set (one namespace of several). */
export type InScope = (obj: KubeObject) => boolean;

/**
 * Compares `list` (the complete current state of the scope) with `known` (uid → last handed-on
 * state). Order of the result: modifications and additions in list order, then deletions in the
 * order of `known`. Objects of `known` outside `inScope` are ignored.
 */
export function diffList(
  known: ReadonlyMap<string, KubeObject>,
  list: readonly KubeObject[],
  inScope: InScope = () => true,
): Change[] {
  const out: Change[] = [];
  const seen = new Set<string>();
  for (const obj of list) {
    const ch = diffListItem(known, obj, seen);
    if (ch) out.push(ch);
  }
  out.push(...listDeletions(known, seen, inScope));
  return out;
}

/**
 * One item of a LIST read page by page: its change against `known` (an addition or a
 * modification, or nothing), recording its uid in `seen`. A uid already seen yields nothing.
 */
export function diffListItem(
  known: ReadonlyMap<string, KubeObject>,
  obj: KubeObject,
  seen: Set<string>,
): Change | undefined {
  const uid = obj.metadata.uid;
  if (seen.has(uid)) return undefined; // a LIST never repeats a uid; be safe against broken pages
  seen.add(uid);
  const old = known.get(uid);
  if (old === undefined) return { kind: 'added', object: obj };
  if (old.metadata.resourceVersion !== obj.metadata.resourceVersion)
    return { kind: 'modified', object: obj, oldObject: old };
  return undefined;
}

/** After the last page of a LIST: the deletions of the known objects in scope that it did not contain. */
export function listDeletions(
  known: ReadonlyMap<string, KubeObject>,
  seen: ReadonlySet<string>,
  inScope: InScope = () => true,
): Change[] {
  const out: Change[] = [];
  for (const [uid, old] of known) {
    if (!seen.has(uid) && inScope(old)) out.push({ kind: 'deleted', object: old });
  }
  return out;
}

/** Watch event types of the Kubernetes API that carry an object. */
export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/**
 * Decides what a live watch event means given the cache: a repeated event (same uid and
 * resourceVersion) is nothing; ADDED of a known uid is a modification; MODIFIED of an unknown uid
 * is an addition (it entered a label selector); DELETED of an unknown uid is nothing.
 */
export function changeFromWatch(
  known: ReadonlyMap<string, KubeObject>,
  type: WatchEventType,
  obj: KubeObject,
): Change | undefined {
  const old = known.get(obj.metadata.uid);
  if (type === 'DELETED') {
    if (old === undefined) return undefined;
    return { kind: 'deleted', object: obj, oldObject: old };
  }
  if (old === undefined) return { kind: 'added', object: obj };
  if (old.metadata.resourceVersion === obj.metadata.resourceVersion) return undefined;
  return { kind: 'modified', object: obj, oldObject: old };
}

/** Applies a change to a uid-keyed map (the cache or a model of it). */
export function applyChange(known: Map<string, KubeObject>, change: Change): void {
  if (change.kind === 'deleted') known.delete(change.object.metadata.uid);
  else known.set(change.object.metadata.uid, change.object);
}
