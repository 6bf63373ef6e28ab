/**
 * The `slack` sink's messages, built from CloudEvents without any template: a thread parent showing
 * an object's current state, a reply for one or more coalesced changes (with a compact diff from
 * the JSON patch), a standalone message (incoming-webhook mode) and a digest listing many objects.
 * Every message is made to fit Block Kit's limits (header ≤ 150, section text ≤ 3,000, ≤ 10 fields
 * of ≤ 2,000, ≤ 50 blocks, the blocks' JSON ≤ {@link MAX_BLOCKS_CHARS}): long values are cut with
 * {@link CUT} and, if the whole is still too big, the largest sections are shortened — never a
 * message Slack refuses. Pure.
 */
import { changeOf } from '../../cel/index.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';

/** Block Kit limits (docs.slack.dev/reference/block-kit). */
export const LIMITS = Object.freeze({
  header: 150,
  section: 3000,
  fields: 10,
  field: 2000,
  blocks: 50,
  contextElements: 10,
  /** The fallback `text` crbridge sends (Slack cuts at 40,000; notifications show far less). */
  text: 3000,
});
/** What crbridge allows the blocks' JSON, under Slack's undocumented ~13,200 `msg_blocks_too_long`. */
export const MAX_BLOCKS_CHARS = 12_000;
/** The marker that ends a cut value. */
export const CUT = '… (truncated)';
/** Diff lines shown per message at most. */
export const MAX_DIFF_LINES = 25;

export type Block =
  | { type: 'header'; text: { type: 'plain_text'; text: string; emoji: true } }
  | { type: 'section'; text?: { type: 'mrkdwn'; text: string }; fields?: { type: 'mrkdwn'; text: string }[] }
  | { type: 'context'; elements: { type: 'mrkdwn'; text: string }[] }
  | { type: 'divider' };

export interface SlackMessage {
  text: string;
  blocks: Block[];
}

/** A compiled template bound to its component: the text for one event (never throws). */
export type Render = (event: CloudEvent) => string;

/** What a message needs beyond the events. */
export interface MessageOptions {
  failurePhases: readonly string[];
  phaseField: string;
  link?: Render;
  templates?: { header?: Render; text?: Render; summary?: Render };
  now?: number;
}

/** `s` cut to `max` characters, ending with {@link CUT} when it was longer. */
export function clip(s: string, max: number): string {
  if (s.length <= max) return s;
  if (max <= CUT.length) return s.slice(0, max);
  return s.slice(0, max - CUT.length) + CUT;
}

/** Escapes the three characters mrkdwn gives meaning to (`&`, `<`, `>`). */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const header = (text: string): Block => ({
  type: 'header',
  text: { type: 'plain_text', text: clip(text.replace(/\s+/g, ' ').trim() || '-', LIMITS.header), emoji: true },
});
const section = (text: string): Block => ({
  type: 'section',
  text: { type: 'mrkdwn', text: clip(text, LIMITS.section) },
});
const context = (text: string): Block => ({
  type: 'context',
  elements: [{ type: 'mrkdwn', text: clip(text, LIMITS.section) }],
});
const fields = (pairs: [string, string][]): Block => ({
  type: 'section',
  fields: pairs.slice(0, LIMITS.fields).map(([k, v]) => ({
    type: 'mrkdwn',
    text: clip(`*${k}*\n${esc(v) || '-'}`, LIMITS.field),
  })),
});

// ---------------------------------------------------------------------------------------------
// What an event says

export interface ObjectFacts {
  kind: string;
  namespace: string | undefined;
  name: string;
  uid: string;
  cluster: string;
  change: string;
  phase: string | undefined;
  /** The phase before the first change folded in (undefined: none, or not known). */
  fromPhase: string | undefined;
  time: string | undefined;
  created: string | undefined;
}

function get(obj: unknown, path: readonly string[]): unknown {
  let cur = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

const str = (v: unknown): string | undefined =>
  typeof v === 'string' ? v : v === undefined || v === null ? undefined : String(v);

function phaseOf(obj: unknown, field: string): string | undefined {
  return str(get(obj, field.split('.')));
}

/** The facts of an object's changes `events` (oldest first, at least one). */
export function factsOf(events: readonly CloudEvent[], phaseField: string): ObjectFacts {
  const first = events[0] as CloudEvent;
  const last = events[events.length - 1] as CloudEvent;
  const e = last as Record<string, unknown>;
  const obj = last.data?.object as unknown;
  const meta = (get(obj, ['metadata']) ?? {}) as Record<string, unknown>;
  const transition = last.data?.transition;
  const phase = transition?.to ?? phaseOf(obj, phaseField);
  const t0 = first.data?.transition;
  const fromPhase =
    t0 !== undefined
      ? (t0.from ?? undefined)
      : first.data?.oldObject
        ? phaseOf(first.data.oldObject, phaseField)
        : undefined;
  return {
    kind: str(e.k8skind) ?? str(get(obj, ['kind'])) ?? 'Object',
    namespace: str(e.k8snamespace) ?? str(meta.namespace),
    name: str(e.k8sname) ?? str(meta.name) ?? str(last.subject) ?? last.id,
    uid: str(e.k8suid) ?? str(meta.uid) ?? '',
    cluster: str(e.k8scluster) ?? '',
    change: changeOf(last.type),
    phase: phase ?? undefined,
    fromPhase: fromPhase !== phase ? fromPhase : undefined,
    time: last.time,
    created: str(meta.creationTimestamp),
  };
}

const qualified = (f: ObjectFacts) => (f.namespace ? `${f.namespace}/${f.name}` : f.name);

/** "3m 12s" between two times (undefined when either is unknown). */
export function age(from: string | undefined, to: number): string | undefined {
  const t = from ? Date.parse(from) : Number.NaN;
  if (Number.isNaN(t)) return undefined;
  let s = Math.max(0, Math.round((to - t) / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

export function isFailure(f: ObjectFacts, failurePhases: readonly string[]): boolean {
  return f.phase !== undefined && failurePhases.includes(f.phase);
}

function mark(f: ObjectFacts, o: MessageOptions): string {
  if (f.change === 'deleted') return ':wastebasket:';
  if (isFailure(f, o.failurePhases)) return ':red_circle:';
  if (f.phase && /^(Completed|Succeeded|Ready|Available|Done)$/i.test(f.phase)) return ':large_green_circle:';
  return ':large_blue_circle:';
}

const phaseText = (f: ObjectFacts) =>
  f.fromPhase !== undefined && f.phase !== undefined ? `${f.fromPhase} → ${f.phase}` : (f.phase ?? '-');

// ---------------------------------------------------------------------------------------------
// The diff

const NOISE = [/^\/metadata\/resourceVersion$/, /^\/metadata\/managedFields/, /^\/metadata\/generation$/];

function pointerPath(p: string): string[] {
  return p
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

const show = (v: unknown) => (v === undefined ? '∅' : clip(JSON.stringify(v) ?? String(v), 120));

/**
 * A compact diff of what changed from before the first event to after the last: one line per
 * changed path (`~ status.phase: "Running" → "Failed"`, `+ path: value`, `- path`), noise such as
 * resourceVersion and managedFields left out (a message shows as many as fit, then a count).
 */
export function compactDiff(events: readonly CloudEvent[]): string[] {
  const first = events[0] as CloudEvent;
  const last = events[events.length - 1] as CloudEvent;
  const before = first.data?.oldObject;
  const after = last.data?.object;
  const paths: string[] = [];
  const seen = new Set<string>();
  for (const e of events)
    for (const op of (e.data?.patch ?? []) as { path?: string; from?: string }[])
      for (const p of [op.path, op.from])
        if (typeof p === 'string' && !seen.has(p) && !NOISE.some((n) => n.test(p))) {
          seen.add(p);
          paths.push(p);
        }
  // a path under one already listed (an added `/status` and its `/status/phase`) is shown by it
  const covered = (p: string) => paths.some((q) => q !== p && p.startsWith(`${q}/`));
  const lines: string[] = [];
  for (const p of paths) {
    if (covered(p)) continue;
    const path = pointerPath(p);
    const a = before === undefined ? undefined : get(before, path);
    const b = get(after, path);
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    const name = path.join('.') || '(root)';
    if (a === undefined) lines.push(`+ ${name}: ${show(b)}`);
    else if (b === undefined) lines.push(`- ${name}`);
    else lines.push(`~ ${name}: ${show(a)} → ${show(b)}`);
  }
  return lines;
}

/**
 * The diff lines as a code block within one section: at most {@link MAX_DIFF_LINES} lines and
 * the section's limit, then a line counting the paths left out.
 */
function codeBlock(lines: string[]): string {
  const shown: string[] = [];
  let size = 6 + 40; // the fences and the count line
  for (const l of lines) {
    const e = esc(l);
    if (shown.length >= MAX_DIFF_LINES || size + e.length + 1 > LIMITS.section) break;
    shown.push(e);
    size += e.length + 1;
  }
  const more = lines.length - shown.length;
  if (more > 0) shown.push(`… ${more} more changed path${more === 1 ? '' : 's'}`);
  return `\`\`\`${shown.join('\n')}\`\`\``;
}

// ---------------------------------------------------------------------------------------------
// Messages

function changeLine(f: ObjectFacts, count: number): string {
  const what = f.change === 'created' ? 'created' : f.change === 'deleted' ? 'deleted' : f.change;
  const phase =
    f.fromPhase !== undefined && f.phase !== undefined
      ? ` · phase *${esc(f.fromPhase)} → ${esc(f.phase)}*`
      : f.phase
        ? ` · phase *${esc(f.phase)}*`
        : '';
  const folded = count > 1 ? `\n_${count} changes coalesced into this message (the latest state is shown)_` : '';
  return `*${what}*${phase}${folded}`;
}

function stateFields(f: ObjectFacts, o: MessageOptions, changes?: number): Block {
  const now = o.now ?? Date.now();
  const pairs: [string, string][] = [
    ['Kind', f.kind],
    ['Namespace', f.namespace ?? '-'],
    ['Name', f.name],
    ['Phase', phaseText(f)],
  ];
  if (f.cluster) pairs.push(['Cluster', f.cluster]);
  const a = age(f.created, now);
  if (a) pairs.push(['Age', a]);
  if (f.time) pairs.push(['Last change', `${f.change} at ${f.time}`]);
  if (changes !== undefined) pairs.push(['Changes', String(changes)]);
  return fields(pairs);
}

/**
 * A part of the message a `transform` stage set on the event itself (`data.slack.header`, `.text`
 * or `.summary`, a non-empty string): it overrides the sink's own template and the default, so a
 * pipeline can shape its Slack messages with the stage's templates.
 */
function eventPart(e: CloudEvent, part: 'header' | 'text' | 'summary'): string | undefined {
  const slack = (e.data as { slack?: unknown } | undefined)?.slack;
  const v = slack && typeof slack === 'object' ? (slack as Record<string, unknown>)[part] : undefined;
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function headerText(f: ObjectFacts, o: MessageOptions, last: CloudEvent): string {
  const own = eventPart(last, 'header');
  if (own) return own;
  if (o.templates?.header) return o.templates.header(last);
  return `${mark(f, o)} ${f.kind} ${qualified(f)} ${f.change === 'created' ? 'created' : f.change === 'deleted' ? 'deleted' : `is ${f.phase ?? 'changed'}`}`;
}

function fallback(f: ObjectFacts, o: MessageOptions, last: CloudEvent, extra = ''): string {
  const own = eventPart(last, 'text');
  if (own) return clip(own, LIMITS.text);
  if (o.templates?.text) return clip(o.templates.text(last), LIMITS.text);
  return clip(`${f.kind} ${qualified(f)}: ${f.change}${f.phase ? `, phase ${phaseText(f)}` : ''}${extra}`, LIMITS.text);
}

function linkAndSummary(blocks: Block[], o: MessageOptions, last: CloudEvent): void {
  const own = eventPart(last, 'summary');
  if (own) blocks.push(section(own));
  else if (o.templates?.summary) blocks.push(section(o.templates.summary(last)));
  if (o.link) {
    const url = o.link(last).trim();
    if (url !== '') blocks.push(section(`<${url.replace(/[<>|]/g, encodeURIComponent)}|Open>`));
  }
}

/** The thread parent: the object's current state (updated in place on each change). */
export function parentMessage(events: readonly CloudEvent[], o: MessageOptions, totalChanges: number): SlackMessage {
  const f = factsOf(events, o.phaseField);
  const last = events[events.length - 1] as CloudEvent;
  const blocks: Block[] = [header(headerText(f, o, last))];
  linkAndSummary(blocks, o, last);
  blocks.push(stateFields(f, o, totalChanges));
  return fit({ text: fallback(f, o, last), blocks });
}

/** A reply in the object's thread: what changed since the last message (coalesced changes folded). */
export function replyMessage(events: readonly CloudEvent[], o: MessageOptions): SlackMessage {
  const f = factsOf(events, o.phaseField);
  const last = events[events.length - 1] as CloudEvent;
  const blocks: Block[] = [section(changeLine(f, events.length))];
  const diff = compactDiff(events);
  if (diff.length > 0) blocks.push(section(codeBlock(diff)));
  if (f.time) blocks.push(context(`${esc(f.time)} · ${esc(last.id)}`));
  const extra = events.length > 1 ? ` (${events.length} changes)` : '';
  return fit({ text: fallback(f, o, last, extra), blocks });
}

/** A message standing alone (incoming-webhook mode): header, state, change and diff. */
export function standaloneMessage(events: readonly CloudEvent[], o: MessageOptions): SlackMessage {
  const f = factsOf(events, o.phaseField);
  const last = events[events.length - 1] as CloudEvent;
  const blocks: Block[] = [header(headerText(f, o, last))];
  linkAndSummary(blocks, o, last);
  blocks.push(stateFields(f, o), section(changeLine(f, events.length)));
  const diff = compactDiff(events);
  if (diff.length > 0) blocks.push(section(codeBlock(diff)));
  const extra = events.length > 1 ? ` (${events.length} changes)` : '';
  return fit({ text: fallback(f, o, last, extra), blocks });
}

/**
 * One message for a burst across many objects: a header with the count and the phases reached, then
 * one line per object (`ns/name: Running → Failed (3 changes)`), as many as fit; the rest are
 * counted (`… and 12 more`). `groups` holds each object's events, oldest first.
 */
export function digestMessage(groups: readonly (readonly CloudEvent[])[], o: MessageOptions): SlackMessage {
  const facts = groups.map((g) => factsOf(g, o.phaseField));
  const changes = groups.reduce((n, g) => n + g.length, 0);
  const kinds = [...new Set(facts.map((f) => f.kind))];
  const byPhase = new Map<string, number>();
  for (const f of facts) {
    const k = f.change === 'deleted' ? 'deleted' : (f.phase ?? f.change);
    byPhase.set(k, (byPhase.get(k) ?? 0) + 1);
  }
  const phases = [...byPhase].map(([k, n]) => `${n} ${k}`).join(', ');
  const failed = facts.some((f) => isFailure(f, o.failurePhases));
  const noun = kinds.length === 1 ? `${kinds[0]}${groups.length === 1 ? '' : 's'}` : 'objects';
  const blocks: Block[] = [
    header(`${failed ? ':red_circle:' : ':large_blue_circle:'} ${groups.length} ${noun} changed: ${phases}`),
  ];
  blocks.push(
    context(
      `${changes} change${changes === 1 ? '' : 's'} of ${groups.length} object${groups.length === 1 ? '' : 's'} coalesced into this digest${facts[0]?.cluster ? ` · cluster ${esc(facts[0].cluster)}` : ''}`,
    ),
  );
  // the object lines, in sections of at most 3,000 characters, within the message budget
  const budget = MAX_BLOCKS_CHARS - 1500;
  let used = 0;
  let listed = 0;
  let current = '';
  const sections: string[] = [];
  for (const [i, f] of facts.entries()) {
    const n = groups[i]?.length ?? 1;
    const line = clip(
      `• \`${esc(qualified(f))}\` ${esc(f.change === 'deleted' ? 'deleted' : phaseText(f))}${n > 1 ? ` (${n} changes)` : ''}`,
      200,
    );
    if (used + line.length + 60 > budget || sections.length >= LIMITS.blocks - 5) break;
    if (current.length + line.length + 1 > LIMITS.section - 50) {
      sections.push(current);
      current = '';
    }
    current += (current ? '\n' : '') + line;
    used += line.length + 1;
    listed++;
  }
  if (current) sections.push(current);
  for (const s of sections) blocks.push(section(s));
  if (listed < facts.length)
    blocks.push(
      context(`… and ${facts.length - listed} more (every change is in the pipeline's other sinks and the metrics)`),
    );
  const text = clip(`${groups.length} ${noun} changed: ${phases} (${changes} changes)`, LIMITS.text);
  return fit({ text, blocks });
}

// ---------------------------------------------------------------------------------------------
// Fitting

function blockText(b: Block): string | undefined {
  if (b.type === 'section' && b.text) return b.text.text;
  if (b.type === 'context') return b.elements[0]?.text;
  return undefined;
}

/**
 * Makes a message fit Block Kit's limits whatever built it: every block's own limits (again, so
 * template output is covered), at most {@link LIMITS.blocks} blocks, and the blocks' JSON within
 * {@link MAX_BLOCKS_CHARS} — by halving the longest text (with {@link CUT}) until it fits.
 */
export function fit(m: SlackMessage): SlackMessage {
  let blocks = m.blocks.map((b): Block => {
    if (b.type === 'header') return header(b.text.text);
    if (b.type === 'section')
      return {
        type: 'section',
        ...(b.text && { text: { type: 'mrkdwn', text: clip(b.text.text || '-', LIMITS.section) } }),
        ...(b.fields && {
          fields: b.fields
            .slice(0, LIMITS.fields)
            .map((x) => ({ type: 'mrkdwn' as const, text: clip(x.text || '-', LIMITS.field) })),
        }),
      };
    if (b.type === 'context')
      return {
        type: 'context',
        elements: b.elements
          .slice(0, LIMITS.contextElements)
          .map((x) => ({ type: 'mrkdwn' as const, text: clip(x.text || '-', LIMITS.section) })),
      };
    return b;
  });
  if (blocks.length > LIMITS.blocks) {
    const dropped = blocks.length - (LIMITS.blocks - 1);
    blocks = [
      ...blocks.slice(0, LIMITS.blocks - 1),
      context(`… ${dropped} more blocks left out to fit Slack's limits`),
    ];
  }
  for (let guard = 0; JSON.stringify(blocks).length > MAX_BLOCKS_CHARS && guard < 5000; guard++) {
    let longest = -1;
    let len = 0;
    for (const [i, b] of blocks.entries()) {
      const t = blockText(b);
      if (t !== undefined && t.length > len) {
        len = t.length;
        longest = i;
      }
      if (b.type === 'section' && b.fields)
        for (const x of b.fields) if (x.text.length > 200) x.text = clip(x.text, Math.floor(x.text.length / 2));
    }
    if (longest < 0 || len < 100) {
      blocks = blocks.slice(0, Math.max(1, blocks.length - 1));
      continue;
    }
    const b = blocks[longest] as Block;
    const t = clip(blockText(b) as string, Math.max(60, Math.floor(len / 2)));
    if (b.type === 'section' && b.text) b.text.text = t;
    else if (b.type === 'context' && b.elements[0]) b.elements[0].text = t;
  }
  return { text: clip(m.text || '-', LIMITS.text), blocks };
}
