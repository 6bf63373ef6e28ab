/**
 * Least-privilege RBAC derived from the configuration, for `crbridge rbac` and the Helm chart: the
 * {@link Permission}s every component of the pipelines declares (`permissions`, plus
 * `objectSchemaPermissions` of a source whose pipeline sets `validation.crdSchema`) and those of the
 * process (the leader-election Lease, the Kubernetes state backend's ConfigMaps), merged into one
 * ClusterRole for what is cluster-wide and one Role per namespace, bound to crbridge's
 * ServiceAccount. Pure: no I/O.
 */
import { stringify } from 'yaml';
import type { AnyFactory, Permission, SourceFactory } from './component.ts';
import type { LoadedPipeline } from './config/types.ts';
import type { Registry } from './registry.ts';

/** A Kubernetes RBAC PolicyRule. */
export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  resourceNames?: string[];
  verbs: string[];
}

/** One rule and why it is there. */
export interface ExplainedRule {
  reason: string;
  rule: PolicyRule;
}

/** The rules of one ClusterRole (`namespace` null) or of the Role in one namespace. */
export interface RoleRules {
  namespace: string | null;
  rules: ExplainedRule[];
}

/** What the process needs besides its pipelines (the `run` flags of the same name). */
export interface ProcessAccess {
  /** `--leader-elect`: the Lease `id` in `namespace` (coordination.k8s.io/v1). */
  leaderElection?: { namespace: string; id: string };
  /** `--state-backend kubernetes`: the component state ConfigMaps `crbridge-state-*` in `namespace`. */
  state?: { namespace: string };
}

/** Name prefix of the Kubernetes state backend's ConfigMaps (`--state-backend kubernetes`). */
export const STATE_CONFIGMAP_PREFIX = 'crbridge-state-';

const VERB_ORDER = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];

function find<F extends AnyFactory>(list: readonly F[], type: string | undefined): F | undefined {
  return type === undefined ? list[0] : list.find((f) => f.type === type);
}

/** Without the keys the runtime strips before a component sees its block. */
function own(block: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out = { ...block };
  for (const k of keys) delete out[k];
  return out;
}

/** Every permission the components of `pipelines` declare, in pipeline order. */
export function pipelinePermissions(pipelines: readonly LoadedPipeline[], registry: Registry): Permission[] {
  const out: Permission[] = [];
  for (const { config } of pipelines) {
    const spec = config.spec;
    const { type: sourceType, ...source } = spec.source;
    const sf = find<SourceFactory>(registry.sources, sourceType);
    if (sf) {
      out.push(...(sf.permissions?.(source) ?? []));
      if (spec.validation?.crdSchema) out.push(...(sf.objectSchemaPermissions?.(source) ?? []));
    }
    for (const st of spec.stages ?? [])
      out.push(...(find(registry.stages, st.type)?.permissions?.(own(st, ['name', 'type'])) ?? []));
    for (const sk of spec.sinks)
      out.push(...(find(registry.sinks, sk.type)?.permissions?.(own(sk, ['name', 'type', 'delivery'])) ?? []));
    const dl = spec.deadLetter?.sink;
    if (dl) out.push(...(find(registry.sinks, dl.type)?.permissions?.(own(dl, ['type'])) ?? []));
  }
  return out;
}

/**
 * The process's own access: the Lease (created once, then read and renewed by name) and the state
 * ConfigMaps (read, listed, written and removed; their names are made at run time, so not by name).
 */
export function processPermissions(access: ProcessAccess): Permission[] {
  const out: Permission[] = [];
  const le = access.leaderElection;
  if (le)
    out.push(
      {
        apiGroup: 'coordination.k8s.io',
        resource: 'leases',
        verbs: ['create'],
        namespace: le.namespace,
        reason: `leader election: create the Lease ${le.id}`,
      },
      {
        apiGroup: 'coordination.k8s.io',
        resource: 'leases',
        verbs: ['get', 'update'],
        namespace: le.namespace,
        resourceNames: [le.id],
        reason: `leader election: read and renew the Lease ${le.id}`,
      },
    );
  if (access.state)
    out.push({
      apiGroup: '',
      resource: 'configmaps',
      verbs: ['get', 'create', 'update'],
      namespace: access.state.namespace,
      reason: `component state ConfigMaps ${STATE_CONFIGMAP_PREFIX}*`,
    });
  return out;
}

/**
 * Merges permissions into roles: one rule per namespace, group, resource and name list (verbs
 * united, reasons joined), the ClusterRole first, then Roles by namespace; deterministic.
 */
export function mergeRoles(perms: readonly Permission[]): RoleRules[] {
  const byKey = new Map<string, { p: Permission; verbs: Set<string>; reasons: string[] }>();
  for (const p of perms) {
    const names = p.resourceNames ? [...new Set(p.resourceNames)].sort() : undefined;
    const key = JSON.stringify([p.namespace, p.apiGroup, p.resource, names ?? null]);
    let m = byKey.get(key);
    if (!m) {
      m = { p: { ...p, ...(names && { resourceNames: names }) }, verbs: new Set(), reasons: [] };
      byKey.set(key, m);
    }
    for (const v of p.verbs) m.verbs.add(v);
    if (!m.reasons.includes(p.reason)) m.reasons.push(p.reason);
  }
  const roles = new Map<string | null, ExplainedRule[]>();
  const sorted = [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [, { p, verbs, reasons }] of sorted) {
    const rule: PolicyRule = {
      apiGroups: [p.apiGroup],
      resources: [p.resource],
      ...(p.resourceNames && { resourceNames: [...p.resourceNames] }),
      verbs: [...verbs].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1)),
    };
    const list = roles.get(p.namespace) ?? [];
    list.push({ reason: reasons.join('; '), rule });
    roles.set(p.namespace, list);
  }
  const namespaces = [...roles.keys()].sort((a, b) => (a === null ? -1 : b === null ? 1 : a < b ? -1 : 1));
  return namespaces.map((namespace) => ({ namespace, rules: roles.get(namespace) as ExplainedRule[] }));
}

function rank(verb: string): number {
  const i = VERB_ORDER.indexOf(verb);
  return i === -1 ? VERB_ORDER.length : i;
}

/** Who the roles are bound to and what the objects are called. */
export interface RbacSubject {
  /** Name of the ClusterRole, the Roles and their bindings. */
  name: string;
  /** The ServiceAccount crbridge runs as, in `namespace`. */
  serviceAccount: string;
  namespace: string;
}

/** The ClusterRole/Role and binding manifests of `roles`, as plain objects. */
export function rbacManifests(roles: readonly RoleRules[], subject: RbacSubject): Record<string, unknown>[] {
  const labels = { 'app.kubernetes.io/name': 'crbridge', 'app.kubernetes.io/component': 'rbac' };
  const subjects = [{ kind: 'ServiceAccount', name: subject.serviceAccount, namespace: subject.namespace }];
  const out: Record<string, unknown>[] = [];
  for (const r of roles) {
    const kind = r.namespace === null ? 'ClusterRole' : 'Role';
    const metadata = { name: subject.name, ...(r.namespace !== null && { namespace: r.namespace }), labels };
    out.push(
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind,
        metadata,
        rules: r.rules.map((x) => x.rule),
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: `${kind}Binding`,
        metadata,
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind, name: subject.name },
        subjects,
      },
    );
  }
  return out;
}

/** `rbacManifests` as a multi-document YAML stream, each rule preceded by a comment saying why. */
export function rbacYaml(roles: readonly RoleRules[], subject: RbacSubject): string {
  const docs = rbacManifests(roles, subject);
  const header =
    '# Least-privilege RBAC for crbridge, derived from its pipelines by `crbridge rbac`.\n' +
    `# Bound to the ServiceAccount ${subject.namespace}/${subject.serviceAccount}. Discovery (GET /api, /apis/...)\n` +
    '# comes from the default ClusterRoleBinding system:discovery.\n';
  let i = 0;
  const parts = docs.map((d) => {
    const text = stringify(d, { lineWidth: 0 });
    if (!String(d.kind).endsWith('Binding')) {
      const reasons = (roles[i++] as RoleRules).rules.map((r) => r.reason);
      let n = 0;
      // each rule starts with "  - apiGroups:" in the block sequence of `rules`
      return text.replace(/^ {2}- apiGroups:/gm, (m) => `  # ${reasons[n++] ?? ''}\n${m}`);
    }
    return text;
  });
  return `${header}${parts.map((p) => `---\n${p}`).join('')}`;
}
