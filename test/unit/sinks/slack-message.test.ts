/**
 * The slack sink's message fitting on its own: whatever built a message (a template, a huge
 * object), `fit` returns one the local Slack's Block Kit checks accept — blocks, sections, fields,
 * header and the total size cut with the marker — and the compact diff leaves noise out.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CloudEvent } from '../../../src/events/cloudevent.ts';
import { type Block, CUT, compactDiff, fit, LIMITS, MAX_BLOCKS_CHARS } from '../../../src/sinks/slack/message.ts';
import { blockKitProblem } from '../../support/slack-server.ts';

test('fit: too many blocks, long sections, fields and header, and a huge total all end within the limits', () => {
  const blocks: Block[] = [
    { type: 'header', text: { type: 'plain_text', text: 'H'.repeat(1000), emoji: true } },
    {
      type: 'section',
      fields: Array.from({ length: 14 }, (_, i) => ({ type: 'mrkdwn' as const, text: `${i}`.repeat(2500) })),
    },
    ...Array.from(
      { length: 70 },
      (_, i): Block => ({ type: 'section', text: { type: 'mrkdwn', text: `s${i}`.repeat(2000) } }),
    ),
  ];
  const before = { text: 't'.repeat(50_000), blocks };
  assert.notEqual(blockKitProblem(before.blocks, before.text), undefined, 'the input is over the limits');
  const m = fit(before);
  assert.equal(blockKitProblem(m.blocks, m.text), undefined);
  assert.ok(m.blocks.length <= LIMITS.blocks);
  assert.ok(JSON.stringify(m.blocks).length <= MAX_BLOCKS_CHARS);
  assert.ok(m.text.length <= LIMITS.text && m.text.endsWith(CUT));
  const h = m.blocks[0] as { text: { text: string } };
  assert.equal(h.text.text.length, LIMITS.header);
  assert.ok(h.text.text.endsWith(CUT));
  const f = m.blocks[1] as { fields: { text: string }[] };
  assert.equal(f.fields.length, LIMITS.fields);
});

test('compactDiff: one line per changed path, old → new, children of an added path folded, noise left out', () => {
  const ev = {
    data: {
      oldObject: { metadata: { resourceVersion: '1' }, spec: { a: 1, gone: true }, status: { phase: 'Running' } },
      object: { metadata: { resourceVersion: '2' }, spec: { a: 2, added: { x: 1 } }, status: { phase: 'Failed' } },
      patch: [
        { op: 'replace', path: '/metadata/resourceVersion', value: '2' },
        { op: 'replace', path: '/spec/a', value: 2 },
        { op: 'remove', path: '/spec/gone' },
        { op: 'add', path: '/spec/added', value: { x: 1 } },
        { op: 'add', path: '/spec/added/x', value: 1 },
        { op: 'replace', path: '/status/phase', value: 'Failed' },
      ],
    },
  } as unknown as CloudEvent;
  assert.deepEqual(compactDiff([ev]), [
    '~ spec.a: 1 → 2',
    '- spec.gone',
    '+ spec.added: {"x":1}',
    '~ status.phase: "Running" → "Failed"',
  ]);
});
