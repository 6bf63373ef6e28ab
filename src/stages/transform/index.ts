/**
 * The `transform` stage: shapes the event's data — `keep` only some paths, `drop` others, `rename`
 * (move) fields, and `set` fields from templates whose placeholders are CEL
 * (`"Backup {{ object.metadata.name }} is {{ object.status.phase }}"`, `src/cel/template.ts`).
 * Applied in that order; templates see the event as it came into the stage. What the event
 * contract requires (`reason`, the object's name, namespace, uid and resourceVersion, the
 * `selector`, `redacted` and `truncated` markers) is always kept and cannot be dropped, renamed or overwritten,
 * so the result stays a valid crbridge CloudEvent; the pipeline checks it again after the stages.
 * The input event is never modified (copy-on-write: its objects are shared with other sinks).
 */

import { checkTemplate, compileTemplate, type Template, templateRenderer } from '../../cel/template.ts';
import type { ComponentContext, Stage, StageFactory } from '../../component.ts';
import type { EventData } from '../../events/cloudevent.ts';
import { escapeToken, getAt } from '../../events/patch.ts';
import { compilePath, type Path, pathProblem, pathString, pick, put, remove, within } from '../paths.ts';

export interface TransformStageConfig {
  /** Paths into the data to keep (all others go, except what the event contract requires). */
  keep?: string[];
  /** Paths into the data to remove. */
  drop?: string[];
  /** Path → new path: moves a value. */
  rename?: Record<string, string>;
  /** Path → template: sets a string field. */
  set?: Record<string, string>;
}

/** The object fields every event carries: an object without them is no valid event data. */
const IDENTITY: readonly Path[] = [
  ['metadata', 'name'],
  ['metadata', 'uid'],
  ['metadata', 'resourceVersion'],
];
/** Kept with `keep` whatever it says (namespace too: it names the object; `selector`: a delete that is none). */
const ALWAYS_KEPT: readonly Path[] = [
  ['reason'],
  ['selector'],
  ['redacted'],
  ['truncated'],
  ...[...IDENTITY, ['metadata', 'namespace']].map((p) => ['object', ...p]),
];
/** Data fields whose shape the event contract fixes: a template's string cannot go there. */
const CONTRACT_FIELDS: readonly Path[] = [
  ['reason'],
  ['patch'],
  ['changedPaths'],
  ['selector'],
  ['transition'],
  ['redacted'],
  ['truncated'],
];

/** Why `p` cannot be dropped or renamed away, or undefined when it can. */
function removalProblem(p: Path): string | undefined {
  const hits = [
    ['reason'],
    ...IDENTITY.map((t) => ['object', ...t]),
    ...(p.length >= 2 ? IDENTITY.map((t) => ['oldObject', ...t]) : []),
  ].find((r) => within(r, p));
  return hits
    ? `${pathString(p)} would remove ${pathString(hits)}, which every event must carry (the event contract, docs/events.md); name something inside it instead`
    : undefined;
}

/** Why nothing can be written to `p`, or undefined when it can. */
function targetProblem(p: Path): string | undefined {
  const contract = CONTRACT_FIELDS.find((c) => within(p, c));
  if (contract)
    return `${pathString(p)} is part of ${pathString(contract)}, whose shape the event contract fixes (docs/events.md); write to another field, e.g. /summary`;
  const identity = ['object', 'oldObject'].flatMap((k) => IDENTITY.map((t) => [k, ...t])).find((r) => within(r, p));
  if (identity)
    return `${pathString(p)} would replace ${pathString(identity)}, which names the object; write to another field, e.g. /summary`;
  return undefined;
}

export function createTransform(config: TransformStageConfig, ctx: ComponentContext): Stage {
  const keep = config.keep?.map(compilePath);
  const kept = keep && [
    ...keep,
    ...ALWAYS_KEPT,
    // the old object's identity only when some of it is kept: it must stay a valid object
    ...(keep.some((p) => p[0] === 'oldObject' || p[0] === '*') ? IDENTITY.map((t) => ['oldObject', ...t]) : []),
  ];
  const drop = (config.drop ?? []).map(compilePath);
  const rename = Object.entries(config.rename ?? {}).map(([from, to]) => [compilePath(from), compilePath(to)] as const);
  const set: [Path, Template][] = Object.entries(config.set ?? {}).map(([path, source]) => [
    compilePath(path),
    compileTemplate(source),
  ]);
  const render = templateRenderer(ctx);
  return {
    process(event) {
      const values = set.map(([path, template]) => [path, render(template, event)] as const);
      let data: unknown = event.data;
      if (kept) data = pick(data, kept) ?? {};
      for (const p of drop) data = remove(data, p);
      for (const [from, to] of rename) {
        const value = getAt(data, from);
        if (value === undefined) continue;
        data = put(remove(data, from), to, value);
      }
      for (const [path, value] of values) data = put(data, path, value);
      return [{ ...event, data: data as EventData }];
    },
  };
}

const pathItems = {
  type: 'string',
  minLength: 1,
  description:
    'A path into the event data: a JSON pointer (`/object/status`) or a dotted path (`object.status`); `*` matches every key or list element.',
};

export const transformStage: StageFactory<TransformStageConfig> = {
  kind: 'stage',
  type: 'transform',
  description: 'Shapes the event data: keeps or drops paths, renames fields, sets fields from CEL templates.',
  configSchema: {
    type: 'object',
    properties: {
      keep: {
        type: 'array',
        minItems: 1,
        description:
          "Only these paths of the data stay, e.g. `[/object/spec, /object/status, /transition]`; what every event must carry (reason, the object's name, namespace, uid and resourceVersion, selector, redacted, truncated) always stays.",
        items: pathItems,
      },
      drop: {
        type: 'array',
        minItems: 1,
        description:
          'These paths of the data are removed, e.g. `[/oldObject, /patch, /object/metadata/managedFields]`. What every event must carry cannot be dropped.',
        items: pathItems,
      },
      rename: {
        type: 'object',
        minProperties: 1,
        description:
          'Moves values: path → new path in the data (no `*`), e.g. `/object/status/phase: /phase`. A path that is absent is skipped.',
        additionalProperties: { type: 'string', minLength: 1, description: 'The new path (pointer or dotted).' },
      },
      set: {
        type: 'object',
        minProperties: 1,
        description:
          'Sets string fields: path in the data (no `*`) → template, e.g. `/summary: "Backup {{ object.metadata.name }} is {{ object.status.phase }}"`. Placeholders are CEL (variables object, oldObject, change, patch, event, as the event came into the stage); a placeholder that fails renders <error> and is counted and logged once.',
        additionalProperties: { type: 'string', description: 'A template; `{{ CEL }}` placeholders (docs/stages.md).' },
      },
    },
  },
  check(config) {
    const out: { pointer: string; message: string; offset?: number }[] = [];
    if (['keep', 'drop', 'rename', 'set'].every((k) => config[k as keyof TransformStageConfig] === undefined))
      out.push({ pointer: '', message: 'the stage does nothing: give keep, drop, rename or set' });
    const paths = (key: 'keep' | 'drop', removing: boolean) => {
      const list = config[key];
      if (!Array.isArray(list)) return;
      list.forEach((p, i) => {
        if (typeof p !== 'string') return;
        const problem = pathProblem(p, { wildcards: true }) ?? (removing ? removalProblem(compilePath(p)) : undefined);
        if (problem) out.push({ pointer: `/${key}/${i}`, message: problem });
      });
    };
    paths('keep', false);
    paths('drop', true);
    for (const [from, to] of Object.entries(config.rename ?? {})) {
      const pointer = `/rename/${escapeToken(from)}`;
      const problem =
        pathProblem(from, { wildcards: false }) ??
        removalProblem(compilePath(from)) ??
        (typeof to === 'string'
          ? (pathProblem(to, { wildcards: false }) ?? targetProblem(compilePath(to)))
          : undefined);
      if (problem) out.push({ pointer, message: problem });
    }
    for (const [path, source] of Object.entries(config.set ?? {})) {
      const pointer = `/set/${escapeToken(path)}`;
      const problem = pathProblem(path, { wildcards: false }) ?? targetProblem(compilePath(path));
      if (problem) out.push({ pointer, message: problem });
      out.push(...checkTemplate(pointer, source));
    }
    return out;
  },
  create: createTransform,
};
