/**
 * Realistic Backup (backups.example.com/v1) objects and deltas for the event contract tests and
 * the docs examples.
 */
import type { Delta, KubeObject, ResourceRef } from '../../../src/events/delta.ts';

export const BACKUPS: ResourceRef = {
  group: 'example.com',
  version: 'v1',
  resource: 'backups',
  kind: 'Backup',
  namespaced: true,
};

export const UID = '6f1c2a9e-3b7d-4c51-9e2a-0d8b4f6a1c23';
export const OBSERVED = Date.parse('2026-11-28T10:15:30.250Z');

export function backup(over: {
  rv?: string;
  generation?: number;
  schedule?: string;
  phase?: string;
  lastBackupTime?: string;
  deletionTimestamp?: string;
  password?: string;
  conditions?: unknown[];
}): KubeObject {
  const status: Record<string, unknown> = {};
  if (over.phase !== undefined) status.phase = over.phase;
  if (over.lastBackupTime !== undefined) status.lastBackupTime = over.lastBackupTime;
  if (over.conditions !== undefined) status.conditions = over.conditions;
  const obj: KubeObject = {
    apiVersion: 'example.com/v1',
    kind: 'Backup',
    metadata: {
      name: 'orders-nightly',
      namespace: 'shop',
      uid: UID,
      resourceVersion: over.rv ?? '1201',
      generation: over.generation ?? 1,
      creationTimestamp: '2026-11-28T10:00:00Z',
      labels: { app: 'orders', 'example.com/tier': 'gold' },
      ...(over.deletionTimestamp !== undefined && { deletionTimestamp: over.deletionTimestamp }),
    },
    spec: {
      databaseName: 'orders',
      schedule: over.schedule ?? '0 2 * * *',
      ...(over.password !== undefined && { credentials: { user: 'backup', password: over.password } }),
    },
  };
  if (Object.keys(status).length > 0) obj.status = status;
  return obj;
}

export function delta(
  kind: Delta['kind'],
  object: KubeObject,
  oldObject?: KubeObject,
  reason: Delta['reason'] = 'live',
): Delta {
  return {
    kind,
    object,
    ...(oldObject !== undefined && { oldObject }),
    reason,
    resource: BACKUPS,
    observedAt: OBSERVED,
  };
}
