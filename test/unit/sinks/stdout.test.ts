/**
 * The stdout sink's stream writer against a fake writable with a tiny buffer: the same JSON lines as
 * the file sink, and a send does not finish before the stream drains (back-pressure); a destroyed
 * stream is a permanent failure.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { currentSchema } from '../../../src/cli-schema.ts';
import type { OutboundEvent } from '../../../src/component.ts';
import { createPipelineValidator } from '../../../src/config/validate.ts';
import { toStructuredJson } from '../../../src/events/serialize.ts';
import { allFactories } from '../../../src/registry.ts';
import { createStreamSink } from '../../../src/sinks/stdout/index.ts';
import { ev, settlesWithin } from '../delivery/helpers.ts';

const batch = (...ids: string[]): OutboundEvent[] => ids.map((id, i) => ({ event: ev(id), seq: i + 1, attempts: 1 }));
const signal = new AbortController().signal;

/** A writable that holds each chunk until `release()` is called. */
class SlowWritable extends Writable {
  chunks: string[] = [];
  private pending: (() => void)[] = [];
  constructor() {
    super({ highWaterMark: 16 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk.toString('utf8'));
    this.pending.push(() => cb());
  }
  release(): void {
    for (const cb of this.pending.splice(0)) cb();
  }
}

describe('stdout sink', () => {
  test('writes one structured JSON line per event and waits for the stream to drain', async () => {
    const out = new SlowWritable();
    const sink = createStreamSink(out);
    await sink.start(signal);
    const sending = sink.send(batch('a', 'b'), signal);
    assert.equal(await settlesWithin(sending, 30), false, 'send must wait while the stream is full');
    out.release();
    assert.deepEqual(await sending, [{ status: 'ok' }, { status: 'ok' }]);
    assert.equal(out.chunks.join(''), `${toStructuredJson(ev('a'))}\n${toStructuredJson(ev('b'))}\n`);
    await sink.shutdown(Date.now() + 100);
  });

  test('a destroyed stream is a permanent failure', async () => {
    const out = new SlowWritable();
    out.destroy();
    const sink = createStreamSink(out);
    const [r] = await sink.send(batch('a'), signal);
    assert.equal(r?.status, 'permanent');
  });

  test('a stream error between sends (reader gone) does not crash and fails the next send permanently', async () => {
    const out = new SlowWritable();
    const sink = createStreamSink(out);
    out.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    const [r] = await sink.send(batch('a'), signal);
    assert.equal(r?.status, 'permanent');
    assert.ok(r?.status === 'permanent' && r.error.includes('EPIPE'));
  });

  test('a stdout sink takes no settings of its own: a field beyond name, type and delivery is refused', () => {
    const validator = createPipelineValidator(currentSchema(), allFactories());
    const doc = (sink: Record<string, unknown>) => ({
      apiVersion: 'crbridge.io/v1alpha1',
      kind: 'Pipeline',
      metadata: { name: 'p' },
      spec: { source: { version: 'v1', resource: 'configmaps' }, sinks: [{ name: 'out', type: 'stdout', ...sink }] },
    });
    assert.deepEqual(validator.validate(doc({ delivery: { maxBatch: 10 } })), []);
    assert.deepEqual(
      validator.validate(doc({ path: '/tmp/x' })).map((e) => e.pointer),
      ['/spec/sinks/0/path'],
    );
  });
});
