/**
 * What a CEL stage does when its expression fails for one event (a missing key without `has()`,
 * a value of the wrong type): count it, log it once per stage and kind of error, then either hand
 * the event to the dead-letter destination (by throwing; the pipeline writes it there) or let the
 * stage go on as its `onError` says.
 */
import type { ComponentContext } from '../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../errors.ts';
import type { CloudEvent } from '../events/cloudevent.ts';
import { componentMetrics } from '../telemetry/metrics.ts';

/** Called on every failed evaluation; returns when the stage should go on, throws to dead-letter. */
export type ExpressionFailure = (event: CloudEvent, expression: string, err: unknown) => void;

export function expressionFailure(ctx: ComponentContext, onError: string, goOn: string): ExpressionFailure {
  const errors = componentMetrics(ctx.metrics).errors;
  return (event, expression, err) => {
    const message = errorMessage(err).split('\n')[0] ?? '';
    if (onError === 'deadLetter')
      throw new CrbridgeError(ErrorCode.Expression, `CEL expression ${JSON.stringify(expression)} failed: ${message}`, {
        expression,
      });
    errors.inc({ component: ctx.id, code: ErrorCode.Expression });
    ctx.logger.once('warn', `cel:${expression}:${message}`, `CEL expression failed; ${goOn}`, {
      code: ErrorCode.Expression,
      expression,
      error: message,
      subject: event.subject,
      id: event.id,
    });
  };
}
