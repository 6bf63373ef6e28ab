/**
 * The `delivery:` config: defaults fill every missing field (also inside `retry`), the schema
 * describes every property, and what it fills in equals what `resolveDeliveryConfig` resolves.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { DEFAULT_DELIVERY_CONFIG, deliveryConfigSchema, resolveDeliveryConfig } from '../../../src/delivery/config.ts';

type Node = { description?: string; properties?: Record<string, Node> };

describe('delivery config', () => {
  test('resolveDeliveryConfig fills defaults and merges a partial retry block', () => {
    assert.deepEqual(resolveDeliveryConfig(), DEFAULT_DELIVERY_CONFIG);
    const c = resolveDeliveryConfig({ maxBatch: 5, retry: { maxElapsedMs: 1000 } });
    assert.equal(c.maxBatch, 5);
    assert.equal(c.queueCapacity, DEFAULT_DELIVERY_CONFIG.queueCapacity);
    assert.equal(c.queueBytes, DEFAULT_DELIVERY_CONFIG.queueBytes, 'an absent byte bound takes the default');
    assert.equal(resolveDeliveryConfig({ queueBytes: 4096 }).queueBytes, 4096);
    assert.deepEqual(c.retry, { ...DEFAULT_DELIVERY_CONFIG.retry, maxElapsedMs: 1000 });
  });

  test('every schema property has a description, and the defaults the schema fills in are the resolved ones', () => {
    const walk = (n: Node, path: string) => {
      assert.ok(n.description, `${path} has a description`);
      for (const [k, child] of Object.entries(n.properties ?? {})) walk(child, `${path}/${k}`);
    };
    walk(deliveryConfigSchema as Node, '');
    // a block the user left empty: what validation fills in is what the queue runs with
    const validate = new Ajv2020({ strict: false, useDefaults: true }).compile(deliveryConfigSchema);
    const written = { retry: {}, outbox: {} };
    assert.equal(validate(written), true, JSON.stringify(validate.errors));
    assert.deepEqual(written, resolveDeliveryConfig());
    const partial = { maxBatch: 7, retry: { multiplier: 3 }, outbox: { fsync: 'off' } };
    assert.equal(validate(partial), true);
    assert.deepEqual(
      partial,
      resolveDeliveryConfig({ maxBatch: 7, retry: { multiplier: 3 }, outbox: { fsync: 'off' } }),
    );
  });
});
