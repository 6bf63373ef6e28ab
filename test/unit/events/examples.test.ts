/** docs/events.md shows current, valid examples of every event type. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createEventValidator } from '../../../src/events/validate.ts';
import { DOC, examples, refreshedDoc } from './examples.ts';

describe('docs/events.md examples', () => {
  it('cover each type and pass levels 1 and 2', () => {
    const v = createEventValidator();
    const types = examples().map((x) => x.event.type);
    assert.deepEqual(types, [
      'io.crbridge.example.com.backup.created',
      'io.crbridge.example.com.backup.spec.changed',
      'io.crbridge.example.com.backup.status.changed',
      'io.crbridge.example.com.backup.deleted',
    ]);
    for (const { event } of examples()) assert.deepEqual(v.validate(event), { ok: true });
    assert.deepEqual(examples()[2]?.event.data.transition, {
      field: '/status/phase',
      from: 'Running',
      to: 'Completed',
    });
  });

  it('are up to date (run `node test/unit/events/examples.ts --write`)', () => {
    const doc = readFileSync(DOC, 'utf8');
    assert.equal(doc, refreshedDoc(doc));
  });
});
