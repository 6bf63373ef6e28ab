/**
 * Resolves group/version/plural to a {@link ResourceRef} through API discovery (`/api/v1` or
 * `/apis/<group>/<version>`), and builds the collection paths of a resource.
 */
import type { ResourceRef } from '../../events/delta.ts';
import { type KubeApi, KubeHttpError } from './client.ts';

export interface GroupVersionResource {
  /** "" for the core group. */
  group: string;
  version: string;
  resource: string;
}

export function gvrString(r: GroupVersionResource): string {
  return r.group ? `${r.resource}.${r.group}/${r.version}` : `${r.resource}/${r.version}`;
}

function groupVersionPath(r: GroupVersionResource): string {
  return r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
}

interface ApiResourceList {
  resources?: { name: string; kind: string; namespaced: boolean; verbs?: string[] }[];
}

/**
 * Returns the resource, or `undefined` when the group/version or the resource is not served (for
 * a Custom Resource: the CRD does not exist or is not established yet). Other failures throw.
 */
export async function discover(
  api: KubeApi,
  r: GroupVersionResource,
  signal?: AbortSignal,
): Promise<ResourceRef | undefined> {
  let list: ApiResourceList;
  try {
    list = (await api.request('GET', groupVersionPath(r), undefined, undefined, signal)) as ApiResourceList;
  } catch (err) {
    if (err instanceof KubeHttpError && err.status === 404) return undefined;
    throw err;
  }
  const found = list?.resources?.find((x) => x.name === r.resource);
  if (!found) return undefined;
  return { group: r.group, version: r.version, resource: r.resource, kind: found.kind, namespaced: found.namespaced };
}

/** Collection path of the resource in `namespace`, or across all namespaces / cluster-scoped when null. */
export function collectionPath(r: GroupVersionResource, namespace: string | null): string {
  const base = groupVersionPath(r);
  return namespace === null ? `${base}/${r.resource}` : `${base}/namespaces/${namespace}/${r.resource}`;
}
