/**
 * Level-3 validation for the Kubernetes source: the CRD of the watched resource, read and followed
 * with the source's own {@link Reflector} (LIST + WATCH of the CustomResourceDefinition collection
 * with `fieldSelector: metadata.name=<crd>`: resume from the last resourceVersion, bookmarks, the
 * stall watchdog, backoff and 410 relist all come with it), feeding the pure validator of
 * `src/events/crd-schema.ts`. The Kubernetes client is the process's one (`ctx.shared`), loaded on
 * first use, never when the validator is built.
 */
import { backoffDelay, sleep } from '../../backoff.ts';
import type { ObjectSchemaContext } from '../../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import {
  type CrdSchemaValidator,
  type CrdSchemaValidatorOptions,
  crdNameFor,
  createCrdSchemaValidator,
} from '../../events/crd-schema.ts';
import type { KubeObject } from '../../events/delta.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { KubeApi } from './client.ts';
import { Reflector } from './reflector.ts';
import { sharedKubeApi } from './shared-client.ts';

/** Path of the CustomResourceDefinition collection. */
export const CRD_COLLECTION = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

export interface CrdWatchOptions {
  /** Server-side timeout of one WATCH; then reopened from the last resourceVersion. Default 300. */
  watchTimeoutSeconds?: number;
  /** No event and no bookmark for this long restarts the watch. Default 150 000. */
  stallTimeoutMs?: number;
  /** First retry delay after a failed LIST/WATCH (doubling, jittered). Default 1000. */
  backoffInitialMs?: number;
  /** Default 30 000. */
  backoffMaxMs?: number;
  /** Logs the reflector's failures (once per cause) and recoveries. */
  logger: Logger;
}

/**
 * `fetchCrd` and `subscribe` for {@link createCrdSchemaValidator} from one CRD's reflector.
 * `subscribe` starts the LIST + WATCH (loading the client first, retried with backoff while the
 * credentials cannot be loaded); every LIST and every ADDED / MODIFIED / DELETED event of the
 * CRD records its current state and tells the validator. `fetchCrd` answers from that state (before
 * the first LIST: waits for it, or rejects while it fails); without a running subscription it GETs
 * the CRD. A CRD that does not exist (or was deleted) is a fetch error: the validator keeps its last
 * schema. `api` is called on first use only.
 */
export function crdWatch(
  api: () => KubeApi,
  crdName: string,
  opts: CrdWatchOptions,
): Pick<CrdSchemaValidatorOptions, 'fetchCrd' | 'subscribe'> {
  /** undefined: not listed yet; null: listed, no such CRD. */
  let current: KubeObject | null | undefined;
  let running = false;
  /** Why the CRD cannot be read now, until the first LIST succeeds: a waiting fetch rejects with it. */
  let failure: unknown;
  let waiters: { resolve: (crd: KubeObject) => void; reject: (err: unknown) => void }[] = [];
  const initialMs = opts.backoffInitialMs ?? 1000;
  const maxMs = opts.backoffMaxMs ?? 30_000;
  const notFound = () =>
    new CrbridgeError(ErrorCode.KubeApi, `CustomResourceDefinition ${crdName} not found; install the CRD`, {
      crd: crdName,
    });
  const answer = (w: (typeof waiters)[number]) => (current ? w.resolve(current) : w.reject(notFound()));
  const settleWaiters = (err?: unknown) => {
    const ws = waiters;
    waiters = [];
    for (const w of ws) err === undefined ? answer(w) : w.reject(err);
  };
  const fail = (err: unknown) => {
    failure = err;
    settleWaiters(err);
  };
  return {
    fetchCrd: async () => {
      if (current !== undefined) {
        if (current === null) throw notFound();
        return current;
      }
      if (!running) return api().request('GET', `${CRD_COLLECTION}/${encodeURIComponent(crdName)}`);
      if (failure !== undefined) throw failure;
      return new Promise<KubeObject>((resolve, reject) => waiters.push({ resolve, reject }));
    },
    subscribe(onChange) {
      const controller = new AbortController();
      const signal = controller.signal;
      running = true;
      failure = undefined;
      const reflectorFor = (client: KubeApi) =>
        new Reflector({
          api: client,
          path: CRD_COLLECTION,
          fieldSelector: `metadata.name=${crdName}`,
          pageSize: 10,
          watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
          stallTimeoutMs: opts.stallTimeoutMs ?? 150_000,
          backoffInitialMs: initialMs,
          backoffMaxMs: maxMs,
          target: {
            resource: { group: 'apiextensions.k8s.io', version: 'v1', resource: 'customresourcedefinitions' },
            scope: { namespace: null, namespaced: false },
          },
          logger: opts.logger,
          onError: (code) => {
            // the reflector logs the failure itself; a fetch waiting for the first LIST stops waiting
            if (current === undefined)
              fail(new CrbridgeError(code, `CRD ${crdName}: the LIST failed (${code}); retrying`));
          },
          handler: {
            async onList(pages) {
              let found: KubeObject | null = null;
              for await (const page of pages) for (const o of page) if (o?.metadata?.name === crdName) found = o;
              current = found;
              failure = undefined;
              settleWaiters();
              onChange();
            },
            async onEvent(type, object) {
              if (object?.metadata?.name !== crdName) return;
              current = type === 'DELETED' ? null : object;
              onChange();
            },
            async waitForResource(s) {
              // the CRD API itself is not served (not a Kubernetes API server?): try again later
              if (current === undefined) fail(new CrbridgeError(ErrorCode.KubeApi, `${CRD_COLLECTION} is not served`));
              await sleep(maxMs, s);
            },
          },
        });
      void (async () => {
        // the process's client; credentials that cannot be loaded yet are retried with backoff
        for (let attempt = 1; !signal.aborted; attempt++) {
          let client: KubeApi;
          try {
            client = api();
          } catch (err) {
            fail(err);
            await sleep(backoffDelay(attempt, initialMs, maxMs), signal);
            continue;
          }
          await reflectorFor(client).run(signal);
          return;
        }
      })();
      return () => {
        running = false;
        controller.abort();
        settleWaiters(new CrbridgeError(ErrorCode.Shutdown, `CRD ${crdName}: stopped`));
      };
    },
  };
}

/**
 * The level-3 validator of a Kubernetes source's resource: CRD `<resource>.<group>`, read through
 * `api` (default: the process's client, loaded on first use) and followed by its reflector, so each
 * change of the CRD recompiles the schema. Fetch failures are logged once per kind; the last
 * compiled schema stays in force (none: level 3 is skipped).
 */
/** The fields of a source config that name its resource. */
export type ResourceNames = { group?: unknown; version?: unknown; resource?: unknown };

export function crdSchemaFor(
  source: ResourceNames,
  ctx: ObjectSchemaContext,
  api?: () => KubeApi,
  watch: Omit<CrdWatchOptions, 'logger'> = {},
): CrdSchemaValidator {
  const crd = crdNameFor({ group: String(source.group ?? ''), resource: String(source.resource ?? '') });
  const version = String(source.version ?? '');
  const logger = ctx.logger.child({ crd });
  const onError = (err: unknown) =>
    logger.once(
      'warn',
      `crd-schema:${crd}:${errorMessage(err)}`,
      'cannot read the CRD schema; level-3 validation keeps the last schema compiled (none yet: skipped)',
      { code: ErrorCode.EventInvalid, crd, error: errorMessage(err) },
    );
  return createCrdSchemaValidator({
    ...crdWatch(api ?? (() => sharedKubeApi(ctx)), crd, { ...watch, logger }),
    onError,
    onLoad: ({ resourceVersion, versions, skipped }) => {
      if (!versions.includes(version)) {
        logger.warn('the CRD has no schema for the watched version; level 3 skips its objects', {
          crd,
          version,
          versions,
        });
        return;
      }
      logger.info('CRD schema compiled for level-3 validation', {
        crd,
        version,
        resourceVersion,
        skippedRules: skipped.get(version) ?? [],
      });
    },
  });
}

/**
 * The kubernetes factory's `objectSchema`: one validator per CRD and version per process (through
 * `ctx.shared`), whatever the namespaces and selectors of the pipelines asking.
 */
export function kubernetesObjectSchema(source: ResourceNames, ctx: ObjectSchemaContext): CrdSchemaValidator {
  const crd = crdNameFor({ group: String(source.group ?? ''), resource: String(source.resource ?? '') });
  const make = () => crdSchemaFor(source, ctx);
  return ctx.shared ? ctx.shared(`kubernetes:crd-schema:${crd}/${String(source.version ?? '')}`, make) : make();
}
