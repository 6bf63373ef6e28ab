/**
 * The process's one Kubernetes client, shared by the source instances and the CRD-schema validators
 * through the component context's per-process memo (`ctx.shared`): credentials are loaded once,
 * on first use, from `ctx.settings.kubeconfig` when the command line gave one, else as kubectl
 * does (`KUBECONFIG`, in-cluster service account, `~/.kube/config`).
 */
import type { ComponentContext } from '../../component.ts';
import { type KubeApi, kubeApi, loadKubeConfig } from './client.ts';

/** Key of the process's Kubernetes client in `ctx.shared`. */
export const KUBE_CLIENT_KEY = 'kubernetes:client';

/**
 * The process's Kubernetes client (built on the first call; a failure to load credentials throws
 * and caches nothing), or a client of its own for a context built without the memo (tests).
 */
export function sharedKubeApi(ctx: Pick<ComponentContext, 'shared' | 'settings'>): KubeApi {
  const make = () => kubeApi(loadKubeConfig(ctx.settings?.kubeconfig));
  return ctx.shared ? ctx.shared(KUBE_CLIENT_KEY, make) : make();
}
