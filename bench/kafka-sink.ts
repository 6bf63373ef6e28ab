/**
 * Benchmark 5, Kafka sink ceiling: events/s the Kafka sink sustains with the idempotent producer,
 * by batch size and compression. (Written once `src/sinks/kafka/` lands.)
 */
import type { Benchmark } from './run.ts';

export const benchmark: Benchmark = {
  name: 'kafka-sink',
  description: 'Kafka sink events/s by batch size and compression (idempotent producer)',
  budgetSeconds: 60,
  async run() {
    throw new Error('the Kafka sink (src/sinks/kafka/) has not landed yet');
  },
};
