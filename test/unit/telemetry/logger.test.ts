/**
 * The JSON logger: `once` logs a key once per time window and then again with the count it
 * swallowed, remembers a bounded number of keys (oldest forgotten first) shared with its children;
 * Error fields keep name, message, code, stack and the `cause` chain.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CrbridgeError, ErrorCode } from '../../../src/errors.ts';
import { createLogger, type LoggerOptions } from '../../../src/telemetry/logger.ts';

function capture(opts: LoggerOptions = {}) {
  const lines: Record<string, unknown>[] = [];
  let t = 1_000_000;
  const logger = createLogger({ level: 'debug', write: (l) => lines.push(JSON.parse(l)), now: () => t, ...opts });
  return { logger, lines, advance: (ms: number) => (t += ms) };
}

describe('logger.once', () => {
  test('logs a key once per window, then again with the number of calls suppressed meanwhile', () => {
    const { logger, lines, advance } = capture({ onceWindowMs: 60_000 });
    for (let i = 0; i < 5; i++) logger.once('warn', 'k', 'disk full', { n: i });
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.n, 0);
    assert.equal(lines[0]?.suppressed, undefined);
    advance(59_999);
    logger.once('warn', 'k', 'disk full', { n: 5 });
    assert.equal(lines.length, 1, 'still inside the window');
    advance(1);
    logger.once('warn', 'k', 'disk full', { n: 6 });
    assert.equal(lines.length, 2);
    assert.equal(lines[1]?.n, 6);
    assert.equal(lines[1]?.suppressed, 5, 'calls 1..5 were swallowed');
    advance(60_000);
    logger.once('warn', 'k', 'disk full', { n: 7 });
    assert.equal(lines.length, 3);
    assert.equal(lines[2]?.suppressed, undefined, 'nothing swallowed since the last line');
  });

  test('different keys are independent; children share the keys of their parent', () => {
    const { logger, lines } = capture();
    const child = logger.child({ component: 'p/s' });
    logger.once('error', 'a', 'A');
    child.once('error', 'a', 'A again');
    child.once('error', 'b', 'B');
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['A', 'B'],
    );
    assert.equal(lines[1]?.component, 'p/s');
  });

  test('remembers at most onceMaxKeys keys, forgetting the least recently logged first', () => {
    const { logger, lines } = capture({ onceMaxKeys: 3 });
    for (const k of ['a', 'b', 'c']) logger.once('warn', k, k);
    logger.once('warn', 'd', 'd'); // forgets a
    assert.equal(lines.length, 4);
    logger.once('warn', 'b', 'b'); // still remembered: swallowed
    logger.once('warn', 'c', 'c');
    logger.once('warn', 'd', 'd');
    assert.equal(lines.length, 4);
    logger.once('warn', 'a', 'a'); // forgotten: logged again
    assert.equal(lines.length, 5);
    assert.equal(lines[4]?.msg, 'a');
  });

  test('100,000 distinct keys keep the memory bounded (the set never grows past the bound)', () => {
    const { logger, lines } = capture({ onceMaxKeys: 100 });
    for (let i = 0; i < 100_000; i++) logger.once('debug', `k${i}`, 'x');
    assert.equal(lines.length, 100_000);
    // the 100 most recent are remembered, older ones are not
    logger.once('debug', 'k99999', 'x');
    logger.once('debug', 'k99900', 'x');
    assert.equal(lines.length, 100_000);
    logger.once('debug', 'k99899', 'x');
    assert.equal(lines.length, 100_001);
  });
});

describe('logger Error fields', () => {
  test('an Error field logs name, message, code, stack and the cause chain', () => {
    const { logger, lines } = capture();
    const root = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const mid = new CrbridgeError(ErrorCode.Internal, 'could not write a dead letter', {}, { cause: root });
    const top = new Error('delivery stuck', { cause: mid });
    logger.error('failed', { error: top, other: 'kept' });
    const e = lines[0]?.error as Record<string, unknown>;
    assert.equal(e.message, 'delivery stuck');
    assert.equal(e.name, 'Error');
    assert.match(String(e.stack), /delivery stuck\n\s+at /);
    const c1 = e.cause as Record<string, unknown>;
    assert.equal(c1.name, 'CrbridgeError');
    assert.equal(c1.code, 'CRB_INTERNAL');
    assert.equal(c1.message, 'could not write a dead letter');
    const c2 = c1.cause as Record<string, unknown>;
    assert.equal(c2.code, 'ENOSPC');
    assert.match(String(c2.stack), /ENOSPC/);
    assert.equal(c2.cause, undefined);
    assert.equal(lines[0]?.other, 'kept');
  });

  test('a non-Error cause is logged as text, and a cyclic chain is cut', () => {
    const { logger, lines } = capture();
    const a = new Error('a', { cause: 'plain reason' });
    logger.warn('x', { error: a });
    const logged = lines[0]?.error as Record<string, unknown>;
    assert.equal(logged.cause, 'plain reason');
    const b = new Error('b');
    const c = new Error('c', { cause: b });
    (b as { cause?: unknown }).cause = c;
    logger.warn('y', { error: b });
    let depth = 0;
    let node = lines[1]?.error as Record<string, unknown> | string | undefined;
    while (node && typeof node === 'object') {
      depth++;
      node = node.cause as Record<string, unknown> | string | undefined;
    }
    assert.ok(depth <= 6, `depth ${depth}`);
  });
});
