/**
 * Delta → CloudEvent: the one place that decides what an event means. Pure and deterministic for
 * everything but `time` fallbacks: the same change of the same object always gets the same `id`,
 * `type`, `source`, `subject`, extensions and data, whether seen live, on relist or on resync.
 * See docs/events.md for the scheme.
 */
import { type CloudEvent, type EventData, isCloudEventsInteger } from './cloudevent.ts';
import type { Delta, KubeObject, ResourceRef } from './delta.ts';
import { diff, formatPointer, getAt, type PatchOp, parsePath, parsePointer, setOwn } from './patch.ts';

import { EVENT_DATA_SCHEMA_ID } from './schemas/event-data.ts';

/** URI of the published data schema (`schemas/event-data.schema.json`). */
export { EVENT_DATA_SCHEMA_ID };
export const DEFAULT_TYPE_PREFIX = 'io.crbridge';
export const DEFAULT_PHASE_PATH = 'status.phase';
/** Fits Kafka's default `message.max.bytes` (1 MiB) with room for headers and key. */
export const DEFAULT_MAX_BYTES = 1_000_000;
/** What a redacted value is replaced with. */
export const REDACTED = '[REDACTED]';

/** The change kinds, as the last part of `type`. */
export const ChangeType = {
  created: 'created',
  specChanged: 'spec.changed',
  statusChanged: 'status.changed',
  deleted: 'deleted',
} as const;
export type ChangeType = (typeof ChangeType)[keyof typeof ChangeType];

export interface EventOptions {
  /** Cluster name, used in `source` and the `k8scluster` extension, e.g. "local". */
  clusterName: string;
  /** Prefix of `type`; default "io.crbridge". */
  typePrefix?: string;
  /** JSON pointer or dotted path of the phase; default `status.phase` (fallback: the Ready condition). */
  phasePath?: string;
  /** JSON pointers into the object whose values are masked; a `*` token matches any key or index. */
  redact?: string[];
  /** Largest structured-JSON size of an event in bytes; default 1_000_000. */
  maxBytes?: number;
  /** `dataschema` attribute; default the published schema URI. */
  dataschema?: string;
  /** W3C trace context to attach (`traceparent`/`tracestate` extensions) when tracing is on. */
  traceContext?: (delta: Delta) => { traceparent: string; tracestate?: string } | undefined;
}

/** Why part of the data was dropped (size policy). */
export interface Truncation {
  /** What was removed, in the order it was removed. */
  dropped: ('oldObject' | 'object' | 'patch')[];
  /** Structured-JSON size before dropping anything. */
  originalBytes: number;
  maxBytes: number;
}

/** A change of the phase between oldObject and object. */
export interface Transition extends NonNullable<EventData['transition']> {
  /** Where the phase was read: a JSON pointer (e.g. "/status/phase") or "condition:Ready". */
  field: string;
  from: string | null;
  to: string | null;
  /** When the old phase began, if the object tells it. */
  since?: string;
  /** How long the old phase lasted, if the object tells both ends. */
  durationSeconds?: number;
}

interface Compiled {
  prefix: string;
  phaseTokens: string[];
  phasePointer: string;
  redact: string[][];
  maxBytes: number;
  dataschema: string;
  cluster: string;
}

const compiledCache = new WeakMap<EventOptions, Compiled>();

/** kubectl apply's copy of every applied field: it would repeat a redacted value in clear. */
export const LAST_APPLIED_POINTER = '/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration';

/** The configured pointers plus, whenever anything is redacted, kubectl's last-applied annotation. */
function redactPointers(configured: readonly string[]): string[] {
  if (configured.length === 0 || configured.includes(LAST_APPLIED_POINTER)) return [...configured];
  return [...configured, LAST_APPLIED_POINTER];
}

function compile(opts: EventOptions): Compiled {
  let c = compiledCache.get(opts);
  if (c) return c;
  const phaseTokens = parsePath(opts.phasePath ?? DEFAULT_PHASE_PATH);
  c = {
    prefix: opts.typePrefix ?? DEFAULT_TYPE_PREFIX,
    phaseTokens,
    phasePointer: formatPointer(phaseTokens),
    redact: redactPointers(opts.redact ?? []).map(parsePointer),
    maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES,
    dataschema: opts.dataschema ?? EVENT_DATA_SCHEMA_ID,
    cluster: opts.clusterName,
  };
  compiledCache.set(opts, c);
  return c;
}

/** `core` for the core ("") group. */
export function groupName(group: string): string {
  return group === '' ? 'core' : group;
}

/** `/clusters/<c>/apis/<group>/<version>/<resource>`, or `/clusters/<c>/api/<version>/<resource>` for core. */
export function sourceFor(cluster: string, r: ResourceRef): string {
  const c = encodeURIComponent(cluster);
  return r.group === ''
    ? `/clusters/${c}/api/${r.version}/${r.resource}`
    : `/clusters/${c}/apis/${r.group}/${r.version}/${r.resource}`;
}

/** `<namespace>/<name>` for namespaced objects, `<name>` otherwise. */
export function subjectFor(obj: KubeObject): string {
  const ns = obj.metadata.namespace;
  return ns ? `${ns}/${obj.metadata.name}` : obj.metadata.name;
}

/**
 * Deterministic id: `<uid>.created`, `<uid>.deleted`, `<uid>.<resourceVersion>` for updates.
 * An object is created and deleted once per uid, so a delete found on catch-up (whose last
 * resourceVersion is unknown) gets the id the live delete would have had.
 */
export function eventId(kind: Delta['kind'], obj: KubeObject): string {
  const uid = obj.metadata.uid;
  if (kind === 'added') return `${uid}.created`;
  if (kind === 'deleted') return `${uid}.deleted`;
  return `${uid}.${obj.metadata.resourceVersion}`;
}

/** created / spec.changed / status.changed / deleted (see docs/events.md for the rule). */
export function changeType(delta: Delta, changedPaths: string[] | undefined): ChangeType {
  if (delta.kind === 'added') return ChangeType.created;
  if (delta.kind === 'deleted') return ChangeType.deleted;
  const ng = delta.object.metadata.generation;
  const og = delta.oldObject?.metadata.generation;
  if (typeof ng === 'number' && typeof og === 'number')
    return ng !== og ? ChangeType.specChanged : ChangeType.statusChanged;
  if (!delta.oldObject || !changedPaths) return ChangeType.specChanged;
  for (const p of changedPaths) if (p !== '/metadata' && p !== '/status') return ChangeType.specChanged;
  return ChangeType.statusChanged;
}

/** Newest RFC 3339 time among `times` (strings), or undefined. */
function newest(times: Iterable<unknown>): string | undefined {
  let best: string | undefined;
  let bestMs = -Infinity;
  for (const t of times) {
    if (typeof t !== 'string') continue;
    const ms = Date.parse(t);
    if (Number.isNaN(ms)) continue;
    if (ms > bestMs) {
      bestMs = ms;
      best = t;
    }
  }
  return best;
}

function* managedTimes(obj: KubeObject | undefined): Iterable<unknown> {
  const mf = obj?.metadata.managedFields;
  if (!Array.isArray(mf)) return;
  for (const e of mf) if (e && typeof e === 'object') yield (e as { time?: unknown }).time;
}

function conditions(obj: KubeObject | undefined): Record<string, unknown>[] {
  const c = (obj?.status as { conditions?: unknown } | undefined)?.conditions;
  return Array.isArray(c) ? (c.filter((x) => x && typeof x === 'object') as Record<string, unknown>[]) : [];
}

function* conditionTimes(obj: KubeObject | undefined): Iterable<unknown> {
  for (const c of conditions(obj)) yield c.lastTransitionTime;
}

/** Newest of `now` that is strictly newer than the newest of `before` (or any, without `before`). */
function newer(now: string | undefined, before: string | undefined): string | undefined {
  if (now === undefined) return undefined;
  if (before === undefined) return now;
  return Date.parse(now) > Date.parse(before) ? now : undefined;
}

/**
 * The best time of the change the object tells, else when crbridge observed it:
 * created → `creationTimestamp`; deleted → `deletionTimestamp`; updated → the newest
 * `managedFields[].time`, else the newest condition `lastTransitionTime` — each only when newer than
 * the same in oldObject (so a stale time is never used); else `observedAt`. Always rendered as
 * `YYYY-MM-DDTHH:mm:ss.sssZ`.
 */
export function eventTime(delta: Delta): { time: string; fromObject: boolean } {
  const m = delta.object.metadata;
  let t: string | undefined;
  if (delta.kind === 'added') t = newest([m.creationTimestamp]);
  else if (delta.kind === 'deleted') t = newest([m.deletionTimestamp]);
  else {
    t =
      newer(newest(managedTimes(delta.object)), delta.oldObject && newest(managedTimes(delta.oldObject))) ??
      newer(newest(conditionTimes(delta.object)), delta.oldObject && newest(conditionTimes(delta.oldObject)));
  }
  // Normalised to UTC with milliseconds (what Date#toISOString and the CloudEvents SDKs produce).
  if (t !== undefined) return { time: new Date(Date.parse(t)).toISOString(), fromObject: true };
  return { time: new Date(delta.observedAt).toISOString(), fromObject: false };
}

function phaseValue(v: unknown): string | null | undefined {
  if (v === undefined) return undefined;
  if (v === null) return null;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

function readyCondition(obj: KubeObject): Record<string, unknown> | undefined {
  return conditions(obj).find((c) => c.type === 'Ready');
}

function secondsBetween(a: string | undefined, b: string | undefined): number | undefined {
  if (a === undefined || b === undefined) return undefined;
  const d = Date.parse(b) - Date.parse(a);
  return Number.isFinite(d) && d >= 0 ? d / 1000 : undefined;
}

/** The phase transition of an update, if the phase (or, failing that, the Ready condition) moved. */
export function phaseTransition(
  old: KubeObject,
  obj: KubeObject,
  c: Pick<Compiled, 'phaseTokens' | 'phasePointer'>,
  changeTime?: string,
): Transition | undefined {
  const o = phaseValue(getAt(old, c.phaseTokens));
  const n = phaseValue(getAt(obj, c.phaseTokens));
  if (o !== undefined || n !== undefined) {
    if (o === n) return undefined;
    const t: Transition = { field: c.phasePointer, from: o ?? null, to: n ?? null };
    // PersistentVolume-style `lastPhaseTransitionTime` beside the phase tells when a phase began.
    const sib = [...c.phaseTokens.slice(0, -1), 'lastPhaseTransitionTime'];
    const since = phaseValue(getAt(old, sib)) ?? undefined;
    const until = phaseValue(getAt(obj, sib)) ?? changeTime;
    if (since) {
      t.since = since;
      const d = secondsBetween(since, until !== since ? until : undefined);
      if (d !== undefined) t.durationSeconds = d;
    }
    return t;
  }
  const or = readyCondition(old);
  const nr = readyCondition(obj);
  const os = phaseValue(or?.status);
  const ns = phaseValue(nr?.status);
  if ((os === undefined && ns === undefined) || os === ns) return undefined;
  const t: Transition = { field: 'condition:Ready', from: os ?? null, to: ns ?? null };
  const since = typeof or?.lastTransitionTime === 'string' ? or.lastTransitionTime : undefined;
  const until = typeof nr?.lastTransitionTime === 'string' ? nr.lastTransitionTime : changeTime;
  if (since) {
    t.since = since;
    const d = secondsBetween(since, until);
    if (d !== undefined) t.durationSeconds = d;
  }
  return t;
}

/**
 * Returns `obj` with the values at `pointers` replaced by {@link REDACTED} (copy-on-write: only the
 * containers on the way are copied, `obj` is never modified) and the concrete pointers masked.
 */
export function redact(obj: KubeObject, pointers: readonly string[][]): { object: KubeObject; masked: string[] } {
  const masked: string[] = [];
  let out: unknown = obj;
  for (const p of pointers) out = mask(out, p, 0, '', masked);
  return { object: out as KubeObject, masked };
}

function mask(node: unknown, path: readonly string[], i: number, at: string, masked: string[]): unknown {
  if (i === path.length) {
    if (node === REDACTED) return node;
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

/**
 * UTF-8 size of each object's JSON, measured once per object. Objects that reach the builder are
 * immutable snapshots shared with the source cache (the `object` of one update is the `oldObject`
 * of the next), so each state is measured once instead of once per event it appears in. Only the
 * number is kept: reusing the text in the sinks was tried and cost +12–17 MB RSS with 10k objects
 * (bench/RESULTS.md §1), for a few µs per event.
 */
const objectBytes = new WeakMap<object, number>();

function bytesOf(o: object): number {
  let n = objectBytes.get(o);
  if (n === undefined) {
    n = Buffer.byteLength(JSON.stringify(o), 'utf8');
    objectBytes.set(o, n);
  }
  return n;
}

/**
 * Exact UTF-8 size of the structured JSON of `e`: the envelope and small data fields are
 * serialized with the objects replaced by `null`, and the objects' own sizes are added.
 */
export function eventBytes(e: CloudEvent): number {
  const d = e.data;
  if (!d || typeof d !== 'object') return Buffer.byteLength(JSON.stringify(e), 'utf8');
  let extra = 0;
  const skeleton: Record<string, unknown> = { ...d };
  for (const k of ['object', 'oldObject'] as const) {
    const o = d[k];
    if (o === null || typeof o !== 'object') continue;
    skeleton[k] = null;
    extra += bytesOf(o) - 4;
  }
  return Buffer.byteLength(JSON.stringify({ ...e, data: skeleton }), 'utf8') + extra;
}

/**
 * The structured-JSON size of each built event, keyed by its `data` (stage copies of an event share
 * it): measured by the size policy anyway, so queues bound their bytes without measuring again.
 */
const builtBytes = new WeakMap<object, number>();

/**
 * The structured-JSON size of `e` in bytes as the builder measured it (extension attributes a
 * stage added later are not counted); an event the builder did not make is measured once here.
 */
export function approxEventBytes(e: CloudEvent): number {
  const d = e.data as unknown;
  if (d === null || typeof d !== 'object') return eventBytes(e);
  let n = builtBytes.get(d);
  if (n === undefined) {
    n = eventBytes(e);
    builtBytes.set(d, n);
  }
  return n;
}

/** Changed top-level paths (e.g. `/spec`) from a patch, in first-seen order. */
export function topLevelPaths(patch: readonly PatchOp[]): string[] {
  const seen: string[] = [];
  for (const op of patch) {
    const j = op.path.indexOf('/', 1);
    const top = j === -1 ? op.path : op.path.slice(0, j);
    if (!seen.includes(top)) seen.push(top);
  }
  return seen;
}

/**
 * Builds the CloudEvent for one delta. Never modifies the delta. Throws only on a delta that lacks
 * the identity every Kubernetes object has (metadata.uid/name/resourceVersion).
 */
export function buildEvent(delta: Delta, opts: EventOptions): CloudEvent {
  const c = compile(opts);
  const r = delta.resource;
  const m0 = delta.object?.metadata;
  if (!m0 || typeof m0.uid !== 'string' || typeof m0.name !== 'string' || typeof m0.resourceVersion !== 'string')
    throw new Error('object lacks metadata.uid, metadata.name or metadata.resourceVersion');

  let object = delta.object;
  let oldObject = delta.kind === 'modified' ? delta.oldObject : undefined;
  let masked: string[] | undefined;
  if (c.redact.length > 0) {
    const a = redact(object, c.redact);
    object = a.object;
    masked = a.masked;
    if (oldObject) {
      const b = redact(oldObject, c.redact);
      oldObject = b.object;
      for (const p of b.masked) if (!masked.includes(p)) masked.push(p);
    }
  }

  const data: EventData = { object, reason: delta.reason };
  let changedPaths: string[] | undefined;
  if (oldObject) {
    const patch = diff(oldObject, object);
    changedPaths = topLevelPaths(patch);
    data.oldObject = oldObject;
    data.patch = patch;
    data.changedPaths = changedPaths;
  }
  const { time, fromObject } = eventTime(delta);
  if (oldObject) {
    const t = phaseTransition(oldObject, object, c, fromObject ? time : undefined);
    if (t) data.transition = t;
  }
  if (masked && masked.length > 0) data.redacted = masked;

  const m = object.metadata;
  // `data` is set last so it comes last in the JSON form (attributes first, for readers).
  const event = {
    specversion: '1.0',
    id: eventId(delta.kind, object),
    source: sourceFor(c.cluster, r),
    type: `${c.prefix}.${groupName(r.group)}.${r.kind.toLowerCase()}.${changeType(delta, changedPaths)}`,
    subject: subjectFor(object),
    time,
    datacontenttype: 'application/json',
    dataschema: c.dataschema,
    k8sgroup: groupName(r.group),
    k8sversion: r.version,
    k8skind: r.kind,
  } as Omit<CloudEvent, 'data'> as CloudEvent;
  if (m.namespace) event.k8snamespace = m.namespace;
  event.k8sname = m.name;
  event.k8suid = m.uid;
  event.k8sresourceversion = m.resourceVersion;
  if (typeof m.generation === 'number' && Number.isInteger(m.generation)) {
    // CloudEvents Integer is 32-bit signed; larger generations travel as strings.
    event.k8sgeneration = isCloudEventsInteger(m.generation) ? m.generation : String(m.generation);
  }
  event.k8scluster = c.cluster;
  event.partitionkey = m.uid;
  const tc = opts.traceContext?.(delta);
  if (tc?.traceparent) {
    event.traceparent = tc.traceparent;
    if (tc.tracestate) event.tracestate = tc.tracestate;
  }
  event.data = data;
  enforceSize(event, c.maxBytes);
  return event;
}

/**
 * Size policy: while the structured JSON exceeds `maxBytes`, drop `oldObject`, then `object`
 * (the patch and changed paths stay), then `patch`, and record it in `data.truncated`.
 */
function enforceSize(event: CloudEvent, maxBytes: number): void {
  const originalBytes = eventBytes(event);
  const data = event.data;
  builtBytes.set(data, originalBytes);
  if (originalBytes <= maxBytes) return;
  const tr: Truncation = { dropped: [], originalBytes, maxBytes };
  data.truncated = tr;
  for (const field of ['oldObject', 'object', 'patch'] as const) {
    if (data[field] === undefined) continue;
    delete (data as Record<string, unknown>)[field];
    tr.dropped.push(field);
    const bytes = eventBytes(event);
    builtBytes.set(data, bytes);
    if (bytes <= maxBytes) return;
  }
}
