/**
 * The pure heart of gap-free delivery: comparing a fresh LIST with what was last handed on (the
 * cache after a relist, the checkpoint at start-up) and deciding which deltas to emit.
 *
 * Identity is the object's uid (a name deleted and recreated is a delete plus an add). An object
 * whose resourceVersion is unchanged produces nothing; a changed one produces one `modified`
 * carrying the net change (old = last handed-on state); one that vanished produces one `deleted`
 * with its last known state; an unknown one produces one `added`. Never an add for a known uid.
 *
 * With a label or field selector, an object also vanishes from the view by leaving the selector
 * (the watch sends DELETED, a LIST no longer has it) and appears by entering it (ADDED, or a new
 * item of a LIST). An entry is an `added` like a creation; a departure is a `deleted` marked
 * `selector: 'left'` whose object is the last state handed on ({@link leftOrDeleted}).
 */
import type { DeltaKind, KubeObject, SelectorChange } from '../../events/delta.ts';

/** One decided change, before it is wrapped into a Delta (reason, resource, time). */
export interface Change {
  kind: DeltaKind;
  /** New state; for deletes the last known state. */
  object: KubeObject;
  /** Previous (handed-on) state for `modified`. */
  oldObject?: KubeObject;
  /** `left` on a `deleted` change of an object that still exists outside the selector. */
  selector?: SelectorChange;
  /** With `left`: the resourceVersion of the object outside the selector (the write that took it out). */
  leftAt?: string;
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
 * is an addition (it entered a label selector); DELETED of an unknown uid is nothing. DELETED of a
 * known uid is a departure when `inside` says the object no longer matches the selector, else a
 * deletion — which may still be a departure: the kube-apiserver sends a departure as DELETED with
 * the previous content (still matching) and the new resourceVersion, so only reading the object
 * tells ({@link leftOrDeleted}).
 */
export function changeFromWatch(
  known: ReadonlyMap<string, KubeObject>,
  type: WatchEventType,
  obj: KubeObject,
  inside?: (obj: KubeObject) => boolean | undefined,
): Change | undefined {
  const old = known.get(obj.metadata.uid);
  if (type === 'DELETED') {
    if (old === undefined) return undefined;
    if (inside?.(obj) === false) return departure(old, obj.metadata.resourceVersion);
    return { kind: 'deleted', object: obj, oldObject: old };
  }
  if (old === undefined) return { kind: 'added', object: obj };
  if (old.metadata.resourceVersion === obj.metadata.resourceVersion) return undefined;
  return { kind: 'modified', object: obj, oldObject: old };
}

/**
 * The departure from the selector of an object whose last handed-on state is `last`, taken out by
 * the write `leftAt` (the resourceVersion of the object outside the selector).
 */
export function departure(last: KubeObject, leftAt: string): Change {
  return { kind: 'deleted', object: last, selector: 'left', leftAt };
}

/**
 * A `deleted` change (from the watch or a LIST) given the object of that name as it was at the
 * revision of the change (`current`, read by the source; undefined when there was none): the same
 * uid still existed, so it left the selector; none or another uid (the name was reused) means it
 * was deleted, and the change stays as it is.
 */
export function leftOrDeleted(ch: Change, current: KubeObject | undefined): Change {
  if (ch.kind !== 'deleted' || ch.selector !== undefined) return ch;
  const last = ch.oldObject ?? ch.object;
  return current?.metadata?.uid === last.metadata.uid ? departure(last, current.metadata.resourceVersion) : ch;
}

/** Applies a change to a uid-keyed map (the cache or a model of it). */
export function applyChange(known: Map<string, KubeObject>, change: Change): void {
  if (change.kind === 'deleted') known.delete(change.object.metadata.uid);
  else known.set(change.object.metadata.uid, change.object);
}
