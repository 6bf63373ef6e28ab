/**
 * A fake clock for tests that wait on backoff, grace periods or watchdogs: node:test mock timers
 * (setTimeout, setInterval, Date) so the tests use the real, long production durations instead of
 * sleeping on shortened ones. `advance` moves time in steps and lets promises and I/O callbacks
 * (file writes of a checkpoint) run between steps; `until` advances until a condition holds.
 */
import type { TestContext } from 'node:test';
import { scheduler } from 'node:timers/promises';

export interface FakeClock {
  /** Moves the clock forward by `ms` in steps of `step`, letting pending work run after each step. */
  advance(ms: number, step?: number): Promise<void>;
  /** Advances in steps of `step` until `fn()` holds; fails after `maxMs` of fake time. */
  until(fn: () => boolean, what: string, maxMs?: number, step?: number): Promise<void>;
}

/** `step`: the default step of `advance` and `until`, in fake milliseconds. */
export function fakeClock(t: TestContext, step = 10): FakeClock {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_700_000_000_000 });
  // scheduler.wait is not mocked: a real millisecond lets promise chains and I/O callbacks finish
  const settle = async () => {
    for (let i = 0; i < 3; i++) await scheduler.wait(1);
  };
  return {
    async advance(ms, by = step) {
      for (let done = 0; done < ms; done += by) {
        t.mock.timers.tick(Math.min(by, ms - done));
        await settle();
      }
    },
    async until(fn, what, maxMs = 120_000, by = step) {
      await settle();
      for (let done = 0; !fn(); done += by) {
        if (done > maxMs) throw new Error(`timed out waiting for ${what} (${maxMs} ms of fake time)`);
        t.mock.timers.tick(by);
        await settle();
      }
    },
  };
}
