/**
 * Preloaded into the crbridge child by the benchmarks (`node --expose-gc --import <this>`): on the
 * IPC message "mem" it runs a full GC and answers with process.memoryUsage(). Changes nothing else
 * in the process; the IPC channel is unref'd so it never keeps crbridge alive. Plain JavaScript on
 * purpose: a `.ts` preload would load Node's type stripper into the child and inflate its RSS.
 */
if (typeof process.send === 'function') {
  process.on('message', (m) => {
    if (m !== 'mem') return;
    globalThis.gc?.();
    process.send?.({ type: 'mem', ...process.memoryUsage() });
  });
  process.channel?.unref();
}
