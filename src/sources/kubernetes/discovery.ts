/**
 * Resolves group/version/plural to a {@link ResourceRef} through API discovery (`/api/v1` or
 * `/apis/<group>/<version>`), builds the collection paths of a resource, and turns a failed
 * request for it into an error an operator can act on (which verb, resource and namespace, and
 * what to grant).
 */
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
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

/** Where a reflector reads: one namespace, or (null) all namespaces / the cluster-scoped collection. */
export interface Scope {
  namespace: string | null;
  /** False for a cluster-scoped resource. */
  namespaced: boolean;
}

/** `backups.example.com/v1 in namespace "a"`, `... in all namespaces`, `... (cluster-scoped)`. */
export function describeScope(r: GroupVersionResource, scope: Scope): string {
  return `${gvrString(r)} ${scopeWords(scope)}`;
}

function scopeWords(scope: Scope): string {
  if (scope.namespace !== null) return `in namespace "${scope.namespace}"`;
  return scope.namespaced ? 'in all namespaces' : '(cluster-scoped)';
}

/** The RBAC resource name: `backups.example.com`, or `pods` for the core group. */
function rbacName(r: GroupVersionResource): string {
  return r.group ? `${r.resource}.${r.group}` : r.resource;
}

/** kubectl's subject flag for the user named in a 403 message, when it names one. */
function subjectFlag(message: string): string | undefined {
  const user = /User "([^"]+)"/.exec(message)?.[1];
  if (!user) return undefined;
  const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(user);
  return sa ? `--serviceaccount=${sa[1]}:${sa[2]}` : `--user=${user}`;
}

/** A stable identity of a failure's cause (for logging each cause once). */
function causeOf(err: unknown): string {
  if (err instanceof KubeHttpError) return `${err.status}:${err.reason}`;
  if (err instanceof CrbridgeError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : err instanceof Error ? err.name : 'error';
}

const unauthorized = (why: string) =>
  `the API server refused the credentials (${why}); check the kubeconfig or service-account token ` +
  '(expired, revoked, wrong cluster?); retrying with backoff';

/**
 * The error to report for a failed `verb` of the resource in `scope`: it names the verb, the
 * resource (group/version/resource) and the namespace or "all namespaces", and says what to do —
 * for a 403, what to grant and how. Its `details` hold `verb`, `resource`, `namespace`, `status`
 * and `cause` (stable for one kind of failure: the key for logging it once).
 */
export function accessError(
  err: unknown,
  verb: 'list' | 'watch',
  r: GroupVersionResource,
  scope: Scope,
): CrbridgeError {
  const status = err instanceof KubeHttpError ? err.status : undefined;
  const details = {
    verb,
    resource: gvrString(r),
    namespace: scope.namespace ?? (scope.namespaced ? '(all namespaces)' : '(cluster-scoped)'),
    status,
    cause: `${verb}:${causeOf(err)}`,
  };
  const what = `cannot ${verb} ${describeScope(r, scope)}`;
  const why = errorMessage(err);
  if (status === 403) {
    const name = rbacName(r);
    const subject = subjectFlag(why);
    const ns = scope.namespace;
    const role = `crbridge-${r.resource}`;
    let grant: string;
    if (ns !== null) {
      grant =
        `grant get,list,watch on ${name} in namespace ${ns} to the identity crbridge runs as ` +
        '(a Role + RoleBinding in that namespace, or a ClusterRole + ClusterRoleBinding for all namespaces)';
      if (subject)
        grant += `, e.g. kubectl create role ${role} -n ${ns} --verb=get,list,watch --resource=${name} && kubectl create rolebinding ${role} -n ${ns} --role=${role} ${subject}`;
    } else {
      grant = `grant get,list,watch on ${name} in all namespaces to the identity crbridge runs as (a ClusterRole + ClusterRoleBinding)`;
      if (subject)
        grant += `, e.g. kubectl create clusterrole ${role} --verb=get,list,watch --resource=${name} && kubectl create clusterrolebinding ${role} --clusterrole=${role} ${subject}`;
    }
    return new CrbridgeError(
      ErrorCode.Forbidden,
      `${what}: forbidden (${why}); ${grant}; retrying with backoff`,
      details,
      {
        cause: err,
      },
    );
  }
  if (status === 401)
    return new CrbridgeError(ErrorCode.Unauthorized, `${what}: ${unauthorized(why)}`, details, { cause: err });
  if (status === 404)
    return new CrbridgeError(
      ErrorCode.ResourceNotFound,
      `${what}: the resource is not served (${why}); is its CRD installed?`,
      details,
      { cause: err },
    );
  const code = err instanceof CrbridgeError ? err.code : ErrorCode.KubeApi;
  return new CrbridgeError(code, `${what}: ${why}; retrying with backoff`, details, { cause: err });
}

/** The error to report for a failed discovery request of the resource (see {@link accessError}). */
export function discoveryError(err: unknown, r: GroupVersionResource): CrbridgeError {
  const status = err instanceof KubeHttpError ? err.status : undefined;
  const path = groupVersionPath(r);
  const details = { verb: 'get', resource: gvrString(r), path, status, cause: `discovery:${causeOf(err)}` };
  const what = `cannot discover ${gvrString(r)} (GET ${path})`;
  const why = errorMessage(err);
  if (status === 403)
    return new CrbridgeError(
      ErrorCode.Forbidden,
      `${what}: forbidden (${why}); grant get on the discovery paths to the identity crbridge runs as ` +
        '(Kubernetes grants it to every authenticated user by the ClusterRoleBinding system:discovery; ' +
        `else a ClusterRole with nonResourceURLs ["/api", "/api/*", "/apis", "/apis/*"] and verbs ["get"]); retrying with backoff`,
      details,
      { cause: err },
    );
  if (status === 401)
    return new CrbridgeError(ErrorCode.Unauthorized, `${what}: ${unauthorized(why)}`, details, { cause: err });
  const code = err instanceof CrbridgeError ? err.code : ErrorCode.KubeApi;
  return new CrbridgeError(code, `${what}: ${why}; retrying with backoff`, details, { cause: err });
}
