/**
 * The `dedupe` stage: drops updates that change nothing that matters — none of `paths` (only
 * these matter), or only `ignore`d paths (these never matter), e.g. a controller's heartbeat in
 * `status.lastHeartbeatTime`. It compares the event's oldObject with its object (or, when the size
 * policy dropped one of them, reads the patch). Creates, deletes and updates it cannot judge pass.
 * A dropped update settles at once like a filtered one, so the checkpoint goes past it.
 */

import type { ComponentContext, Stage, StageFactory } from '../../component.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import { jsonEqual, parsePointer } from '../../events/patch.ts';
import { compilePath, type Path, pathProblem, pick, remove, within } from '../paths.ts';

export interface DedupeStageConfig {
  /** Only these paths of the object matter: an update that changes none of them is dropped. */
  paths?: string[];
  /** These paths of the object never matter: an update that changes only them is dropped. */
  ignore?: string[];
}

/** What every update changes and no consumer cares about: always ignored. */
export const ALWAYS_IGNORED = ['/metadata/resourceVersion', '/metadata/managedFields'] as const;

const NONE: CloudEvent[] = [];

/** True when `change` is an update (`<prefix>.<group>.<kind>.spec.changed` / `.status.changed`). */
const isUpdate = (type: string) => type.endsWith('.spec.changed') || type.endsWith('.status.changed');

export function createDedupe(config: DedupeStageConfig, _ctx?: ComponentContext): Stage {
  const paths = config.paths?.map(compilePath);
  const ignore = [...ALWAYS_IGNORED, ...(config.ignore ?? [])].map(compilePath);
  const matters = (tokens: Path): boolean =>
    (!paths || paths.some((p) => within(tokens, p) || within(p, tokens))) && !ignore.some((p) => within(tokens, p));
  const view = (o: unknown): unknown => {
    let v = paths ? pick(o, paths) : o;
    for (const p of ignore) v = remove(v, p);
    return v;
  };
  return {
    process(event) {
      if (!isUpdate(event.type)) return [event];
      const { object, oldObject, patch } = event.data ?? {};
      if (object && oldObject) return jsonEqual(view(oldObject), view(object)) ? NONE : [event];
      if (!Array.isArray(patch)) return [event]; // nothing to judge by: let it through
      const relevant = patch.some((op) => {
        const path = (op as { path?: unknown }).path;
        if (typeof path !== 'string') return true;
        try {
          return matters(parsePointer(path));
        } catch {
          return true;
        }
      });
      return relevant ? [event] : NONE;
    },
  };
}

const pathList = (what: string) => ({
  type: 'array',
  minItems: 1,
  description: what,
  items: {
    type: 'string',
    minLength: 1,
    description:
      'A path into the object: a JSON pointer (`/status/lastHeartbeatTime`) or a dotted path (`status.lastHeartbeatTime`); `*` matches every key or list element (`/status/conditions/*/lastHeartbeatTime`).',
  },
});

export const dedupeStage: StageFactory<DedupeStageConfig> = {
  kind: 'stage',
  type: 'dedupe',
  description: 'Drops updates where none of the paths that matter changed (heartbeats, timestamps).',
  configSchema: {
    type: 'object',
    properties: {
      paths: pathList(
        'Only these paths matter: an update that changes none of them is dropped. With `ignore` too, changes to the ignored paths inside these do not count.',
      ),
      ignore: pathList(
        'These paths never matter: an update that changes nothing else is dropped, e.g. `[status.lastHeartbeatTime]`. `metadata.resourceVersion` and `metadata.managedFields` are always ignored.',
      ),
    },
  },
  check(config) {
    const out: { pointer: string; message: string }[] = [];
    if (config.paths === undefined && config.ignore === undefined)
      out.push({
        pointer: '',
        message: 'say what matters: set paths (only these paths matter) or ignore (these paths do not matter), or both',
      });
    for (const key of ['paths', 'ignore'] as const) {
      const list = config[key];
      if (!Array.isArray(list)) continue;
      list.forEach((p, i) => {
        if (typeof p !== 'string') return;
        const problem = pathProblem(p, { wildcards: true });
        if (problem) out.push({ pointer: `/${key}/${i}`, message: problem });
      });
    }
    return out;
  },
  create: createDedupe,
};
