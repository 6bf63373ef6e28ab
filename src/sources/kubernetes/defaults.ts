/**
 * The defaults of the `kubernetes` source's settings, written once: the factory's schema
 * (`index.ts`, its `default`s and descriptions) and the source (`source.ts`) both read them.
 */

/** Default of every optional `kubernetes` source setting (the schema's `default`s). */
export const KUBERNETES_SOURCE_DEFAULTS = Object.freeze({
  group: '',
  namespaces: Object.freeze([]) as readonly string[],
  pageSize: 500,
  watchTimeoutSeconds: 300,
  stallTimeoutSeconds: 150,
  backoffInitialMs: 1000,
  backoffMaxMs: 30_000,
  dropFields: Object.freeze(['/metadata/managedFields']) as readonly string[],
  initial: 'emit' as 'emit' | 'skip',
  checkpoint: Object.freeze({
    backend: 'file' as 'file' | 'kubernetes',
    namespace: 'default',
    name: 'crbridge-checkpoint',
    flushIntervalMs: 500,
  }),
});
