/**
 * The `delivery:` config: defaults fill every missing field (also inside `retry`), and the schema
 * describes every property with a default equal to the resolved one.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_DELIVERY_CONFIG, deliveryConfigSchema, resolveDeliveryConfig } from '../../../src/delivery/config.ts';

type Node = { description?: string; default?: unknown; properties?: Record<string, Node> };

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

  test('every schema property has a description, and leaf defaults match the resolved defaults', () => {
    const walk = (n: Node, value: unknown, path: string) => {
      assert.ok(n.description, `${path} has a description`);
      if (n.properties) {
        for (const [k, child] of Object.entries(n.properties))
          walk(child, (value as Record<string, unknown>)[k], `${path}/${k}`);
      } else assert.equal(n.default, value, `${path} default`);
    };
    walk(deliveryConfigSchema as Node, DEFAULT_DELIVERY_CONFIG, '');
  });
});
