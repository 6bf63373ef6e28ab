/**
 * Writes the published event-data JSON Schema: `node src/events/schemas/generate.ts [out]`
 * (default `schemas/event-data.schema.json`).
 */
import { writeFileSync } from 'node:fs';
import { EVENT_DATA_SCHEMA } from './event-data.ts';

export function eventDataSchemaJson(): string {
  return `${JSON.stringify(EVENT_DATA_SCHEMA, null, 2)}\n`;
}

if (import.meta.main) {
  const out = process.argv[2] ?? 'schemas/event-data.schema.json';
  writeFileSync(out, eventDataSchemaJson());
  console.log(`wrote ${out}`);
}
