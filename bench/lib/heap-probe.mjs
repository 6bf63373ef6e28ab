/**
 * Preloaded into the crbridge child by the memory benchmark (`node --expose-gc --import <this>`):
 * on the IPC message "mem" it runs a full GC and answers with process.memoryUsage(). Changes
 * nothing else in the process; the IPC channel is unref'd so it never keeps crbridge alive.
 */
if (typeof process.send === 'function') {
  process.on('message', (m) => {
    if (m !== 'mem') return;
    (globalThis as { gc?: () => void }).gc?.();
    process.send?.({ type: 'mem', ...process.memoryUsage() });
  });
  process.channel?.unref();
}
