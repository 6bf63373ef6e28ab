/**
 * crbridge's published JSON Schema (draft-07) of the `data` of every event it emits. The file
 * `schemas/event-data.schema.json` is generated from this module
 * (`node src/events/schemas/generate.ts`); a unit test fails when the two differ.
 *
 * Objects are checked shallowly (identity in metadata); their full shape is level 3 (the CRD's own
 * openAPIV3Schema). Unknown top-level data fields are allowed so that consumers stay compatible
 * when fields are added.
 */
export const EVENT_DATA_SCHEMA_ID = 'https://crbridge.io/schemas/event-data.schema.json';

export const EVENT_DATA_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: EVENT_DATA_SCHEMA_ID,
  title: 'crbridge event data',
  description:
    'The data of a crbridge CloudEvent: the Kubernetes object after the change (last known state for deletes), the state before it and an RFC 6902 patch for updates, how the change was observed, the phase transition, redactions and size truncation.',
  type: 'object',
  required: ['reason'],
  properties: {
    object: {
      $ref: '#/definitions/kubeObject',
      description: 'New state; for deletes the last known state. Absent only when truncated.dropped includes "object".',
    },
    oldObject: {
      $ref: '#/definitions/kubeObject',
      description: 'State before the change (updates only). Absent when truncated.dropped includes "oldObject".',
    },
    patch: {
      type: 'array',
      description: 'RFC 6902 JSON Patch from oldObject to object (updates only).',
      items: { $ref: '#/definitions/patchOp' },
    },
    changedPaths: {
      type: 'array',
      description: 'Top-level JSON pointers that changed, e.g. "/spec", "/status", "/metadata" (updates only).',
      items: { type: 'string', pattern: '^/[^/]*$' },
      uniqueItems: true,
    },
    reason: {
      type: 'string',
      enum: ['live', 'relist', 'resync'],
      description:
        'How the change was observed: live from the watch, relist after a reconnect or 410, resync after a restart.',
    },
    selector: {
      type: 'string',
      enum: ['left'],
      description:
        "Set on deleted events whose object was not deleted but left the label or field selector of the pipeline's source (it still exists; object is the last state inside). Absent on real deletions.",
    },
    transition: {
      type: 'object',
      description: 'Set on updates whose phase changed.',
      required: ['field', 'from', 'to'],
      properties: {
        field: {
          type: 'string',
          description: 'Where the phase was read: a JSON pointer such as "/status/phase", or "condition:Ready".',
        },
        from: { type: ['string', 'null'], description: 'Old phase (null when it had none).' },
        to: { type: ['string', 'null'], description: 'New phase (null when it has none).' },
        since: { type: 'string', format: 'date-time', description: 'When the old phase began, if the object tells.' },
        durationSeconds: {
          type: 'number',
          minimum: 0,
          description: 'How long the old phase lasted, if the object tells both ends.',
        },
      },
      additionalProperties: false,
    },
    redacted: {
      type: 'array',
      description: 'JSON pointers (into object and oldObject) whose values were replaced by "[REDACTED]".',
      items: { $ref: '#/definitions/pointer' },
    },
    truncated: {
      type: 'object',
      description: 'Set when the event was larger than the size limit and parts of the data were dropped.',
      required: ['dropped', 'originalBytes', 'maxBytes'],
      properties: {
        dropped: {
          type: 'array',
          items: { type: 'string', enum: ['oldObject', 'object', 'patch'] },
          uniqueItems: true,
          description: 'Removed fields, in the order they were removed.',
        },
        originalBytes: { type: 'integer', minimum: 0, description: 'Size of the structured JSON event before.' },
        maxBytes: { type: 'integer', minimum: 1, description: 'The configured limit.' },
      },
      additionalProperties: false,
    },
  },
  if: {
    required: ['truncated'],
    properties: { truncated: { properties: { dropped: { contains: { const: 'object' } } } } },
  },
  then: {},
  else: { required: ['object'] },
  definitions: {
    pointer: { type: 'string', pattern: '^(/([^~/]|~[01])*)*$' },
    kubeObject: {
      type: 'object',
      required: ['metadata'],
      properties: {
        apiVersion: { type: 'string' },
        kind: { type: 'string' },
        metadata: {
          type: 'object',
          required: ['name', 'uid', 'resourceVersion'],
          properties: {
            name: { type: 'string', minLength: 1 },
            namespace: { type: 'string' },
            uid: { type: 'string', minLength: 1 },
            resourceVersion: { type: 'string', minLength: 1 },
            generation: { type: 'integer', minimum: 0 },
            creationTimestamp: { type: 'string', format: 'date-time' },
            deletionTimestamp: { type: 'string', format: 'date-time' },
            labels: { type: 'object', additionalProperties: { type: 'string' } },
            annotations: { type: 'object', additionalProperties: { type: 'string' } },
          },
        },
      },
    },
    patchOp: {
      type: 'object',
      required: ['op', 'path'],
      properties: {
        op: { type: 'string', enum: ['add', 'remove', 'replace', 'move', 'copy', 'test'] },
        path: { $ref: '#/definitions/pointer' },
        from: { $ref: '#/definitions/pointer' },
        value: {},
      },
      allOf: [
        {
          if: { properties: { op: { enum: ['add', 'replace', 'test'] } } },
          then: { required: ['value'] },
        },
        {
          if: { properties: { op: { enum: ['move', 'copy'] } } },
          then: { required: ['from'] },
        },
      ],
    },
  },
} as const;
