/**
 * docs/events.md shows one real example of each kind of event (captured on the real stack by
 * test/integration/events/contract.test.ts), and each passes levels 1 and 2.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { createEventValidator } from '../../../src/events/validate.ts';
import { DOC, docExamples } from './examples.ts';

describe('docs/events.md examples', () => {
  const examples = docExamples(readFileSync(DOC, 'utf8'));
  const events = examples
    .filter((x) => (x.json as { specversion?: unknown }).specversion === '1.0')
    .map((x) => ({ title: x.title, event: x.json as CloudEvent }));

  it('cover every kind of event', () => {
    const change = (e: CloudEvent) => e.type.replace(/^io\.crbridge\.example\.com\.backup\./, '');
    const has = (what: string, p: (e: CloudEvent) => boolean) =>
      assert.ok(
        events.some((x) => p(x.event)),
        `an example of ${what} (have: ${events.map((x) => x.title).join(', ')})`,
      );
    has('created', (e) => change(e) === 'created');
    has('spec.changed', (e) => change(e) === 'spec.changed');
    has('status.changed', (e) => change(e) === 'status.changed');
    has('a phase transition', (e) => e.data?.transition !== undefined);
    has('a live delete', (e) => change(e) === 'deleted' && e.data?.reason === 'live');
    has('a delete found on catch-up', (e) => change(e) === 'deleted' && e.data?.reason === 'resync');
    has('a departure from the selector', (e) => change(e) === 'deleted' && e.data?.selector === 'left');
    has('an oversized object', (e) => e.data?.truncated !== undefined);
    has('a redacted field', (e) => Array.isArray(e.data?.redacted) && e.data.redacted.length > 0);
    assert.ok(
      examples.some((x) => /Kafka record/.test(x.title)),
      'a Kafka record in binary mode',
    );
  });

  it('pass validation levels 1 (envelope) and 2 (data)', () => {
    const v = createEventValidator();
    for (const { title, event } of events) assert.deepEqual(v.validate(event), { ok: true }, title);
  });
});
