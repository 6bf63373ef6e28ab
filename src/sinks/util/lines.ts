/**
 * The JSON-lines serializer the `file` and `stdout` sinks share: one structured-mode CloudEvent
 * JSON object per line.
 */
import type { DeliveryResult, OutboundEvent } from '../../component.ts';
import { errorMessage } from '../../errors.ts';
import { toStructuredJson } from '../../events/serialize.ts';

/** Serializes each event; events that cannot be serialized get their own permanent result. */
export function serializeLines(batch: readonly OutboundEvent[]): { text: string; results: DeliveryResult[] } {
  let text = '';
  const results: DeliveryResult[] = [];
  for (const { event } of batch) {
    try {
      text += `${toStructuredJson(event)}\n`;
      results.push({ status: 'ok' });
    } catch (err) {
      results.push({ status: 'permanent', error: `cannot serialize event ${event.id}: ${errorMessage(err)}` });
    }
  }
  return { text, results };
}
