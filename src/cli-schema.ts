/**
 * The pipeline JSON Schema of this build, generated from the registry and the delivery layer's
 * schema. Shared by the CLI (`validate`, `run`, `schema`) and the published-schema check.
 */
import { pipelineSchema } from './config/schema.ts';
import { deliveryConfigSchema } from './delivery/config.ts';
import { allFactories, registry } from './registry.ts';

export function currentSchema(): Record<string, unknown> {
  return pipelineSchema(allFactories(registry), deliveryConfigSchema);
}
