/**
 * A DeltaReceiver for source tests: records every delta and settles it at once, except the ones
 * it is told to hold (a sink that never acknowledges them).
 */
import type { DeltaReceiver } from '../../../src/component.ts';
import type { Delta } from '../../../src/events/delta.ts';

export class Recorder implements DeltaReceiver {
  deltas: Delta[] = [];
  /** uids whose deltas never settle (a sink that never acknowledges). */
  hold = new Set<string>();
  /** Deltas for which this is true never settle (e.g. one change of an object, not the next). */
  holdIf: (d: Delta) => boolean = () => false;
  async push(delta: Delta) {
    this.deltas.push(delta);
    if (this.hold.has(delta.object.metadata.uid) || this.holdIf(delta)) return { settled: new Promise<void>(() => {}) };
    return { settled: Promise.resolve() };
  }
  summary(from = 0) {
    return this.deltas
      .slice(from)
      .map((d) => `${d.reason} ${d.kind} ${d.object.metadata.name}@${d.object.metadata.resourceVersion}`);
  }
}
