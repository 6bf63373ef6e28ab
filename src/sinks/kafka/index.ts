/**
 * The `kafka` sink: one record per event through kafkajs, CloudEvents Kafka binding (binary mode by
 * default, structured on request), record key = the object's uid so every change of one object
 * lands in one partition, in order. Optional tombstones after deletes for compacted topics.
 *
 * kafkajs' own retry loops are cut short (one retry, which its idempotent producer requires): the
 * delivery layer is the one place that retries. The producer connects lazily inside `send`, so
 * `start` returns at once even when Kafka is down; a failed connect makes every event of the
 * batch retryable and the delivery queue backs off. After any send error the producer is dropped
 * and a fresh one (new idempotent producer id) connects on the next attempt. Errors that refuse
 * every event alike (not authorized, bad credentials, a missing topic) are retried, never
 * dead-lettered, and logged once per cause with what to check. A missing topic counts as one only
 * after AUTO_CREATE_GRACE_MS when the sink asks the brokers to create topics (`autoCreateTopics`,
 * the default): until then it is taken to be one the brokers are creating, and retried quietly.
 * Connects, sends and the shutdown's disconnect all give up at the abort signal or deadline: a
 * broker that is away never holds them.
 * Several sends may be in flight (default 4; the queue never puts one object's events in two);
 * with the idempotent producer their produce requests go one at a time, never on a producer whose
 * earlier request failed. By default the producer runs on a worker thread (`thread.ts`): kafkajs'
 * record encoding, checksums, compression and I/O leave the pipeline's thread, and encoding the
 * next batch there overlaps the broker's answer to the current one.
 *
 * The topic is the static `topic`, or per event the string a CEL `topicExpression` yields (null or
 * empty: `topic`); one produce request may carry several topics, each topic's records in batch
 * order. TLS (`tls`) and SASL (`sasl`: PLAIN, SCRAM-SHA-256/512, credentials given as `${env:}` /
 * `${file:}` references) go to kafkajs as they are; the SASL password never reaches a log line or
 * an error. Compression: none, gzip, snappy, lz4 (pure-JS codecs, `codecs.ts`).
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Kafka, type KafkaConfig, logLevel, type Message, Partitioners, type SASLOptions } from 'kafkajs';
import { type CelProgram, celProblem, celVariables, compileCel, toStringValue } from '../../cel/index.ts';
import type { ComponentContext, DeliveryResult, OutboundEvent, Sink, SinkFactory } from '../../component.ts';
import { CrbridgeError, ErrorCode, errorMessage } from '../../errors.ts';
import { toKafkaRecord, tombstoneFor } from '../../events/bindings/kafka.ts';
import type { CloudEvent } from '../../events/cloudevent.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { type TlsOptions, tlsSchema } from '../util/http.ts';
import { COMPRESSION_TYPES, type KafkaCompression, registerKafkaCodecs } from './codecs.ts';
import { type KafkaClient, type KafkaProducer, ThreadedKafka } from './thread.ts';

/** SASL settings; `username` and `password` are usually `${env:}` / `${file:}` references. */
export interface KafkaSaslConfig {
  mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512';
  username: string;
  password: string;
}

export interface KafkaSinkConfig {
  brokers: string[];
  topic: string;
  /** CEL yielding the topic of each event (a string; null or "" means `topic`). */
  topicExpression?: string;
  clientId?: string;
  mode?: 'binary' | 'structured';
  tombstones?: boolean;
  compression?: KafkaCompression;
  acks?: -1 | 1;
  idempotent?: boolean;
  /** Ask the brokers to create a missing topic on first use (they do only with auto.create.topics.enable). */
  autoCreateTopics?: boolean;
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
  maxBatchBytes?: number;
  /** Run the producer (record encoding, compression, I/O) on a worker thread. */
  thread?: boolean;
  /** TLS to the brokers; present (even `{}`) turns TLS on. */
  tls?: TlsOptions;
  sasl?: KafkaSaslConfig;
}

type KafkaSinkDefaults = Required<Omit<KafkaSinkConfig, 'brokers' | 'topic' | 'topicExpression' | 'tls' | 'sasl'>>;

/** Default of every optional `kafka` sink setting: read by the schema (`default`) and the sink alike. */
export const KAFKA_SINK_DEFAULTS: Readonly<KafkaSinkDefaults> = Object.freeze({
  clientId: 'crbridge',
  mode: 'binary',
  tombstones: false,
  compression: 'none',
  acks: -1,
  idempotent: true,
  autoCreateTopics: true,
  connectionTimeoutMs: 3000,
  requestTimeoutMs: 10_000,
  maxBatchBytes: 900_000,
  thread: true,
});

const D = KAFKA_SINK_DEFAULTS;

/** Broker list entries may hold several comma-separated brokers (`${env:KAFKA_BROKERS}`). */
export function splitBrokers(brokers: readonly string[]): string[] {
  return brokers
    .flatMap((b) => b.split(','))
    .map((b) => b.trim())
    .filter((b) => b !== '');
}

/** Kafka error types after which the same record will never be accepted (the others may be). */
const PERMANENT_TYPES = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE']);

/**
 * Kafka error types that refuse every event alike because of how crbridge or the cluster is set
 * up, with what to check. They are retried (nothing is dead-lettered one event at a time) until
 * an operator fixes the cause, and logged once per cause.
 */
const CONFIGURATION_TYPES: Record<string, (topic: string) => string> = {
  TOPIC_AUTHORIZATION_FAILED: (t) =>
    `the Kafka principal crbridge connects as may not write to topic "${t}": grant it WRITE and DESCRIBE on the topic (ACLs), or check the topic name`,
  CLUSTER_AUTHORIZATION_FAILED: () =>
    'the Kafka principal crbridge connects as lacks a cluster permission: the idempotent producer needs IDEMPOTENT_WRITE on the cluster on older brokers; grant it, or set idempotent: false',
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED: () =>
    'the Kafka principal crbridge connects as may not use its transactional id: check the ACLs',
  SASL_AUTHENTICATION_FAILED: () =>
    'the brokers refused the SASL credentials: check the mechanism, user name and password crbridge uses',
  UNSUPPORTED_SASL_MECHANISM: () =>
    'the brokers do not offer the SASL mechanism crbridge uses: check sasl.enabled.mechanisms on the brokers',
  ILLEGAL_SASL_STATE: () => 'the SASL handshake failed: check the SASL settings on both sides',
  UNKNOWN_TOPIC_OR_PARTITION: (t) =>
    `topic "${t}" does not exist and is not created on first use (the brokers' auto.create.topics.enable=false, or the sink's autoCreateTopics: false): create the topic or fix the topic name`,
  INVALID_TOPIC_EXCEPTION: (t) =>
    `"${t}" is not a valid Kafka topic name (letters, digits, ".", "_", "-"; at most 249): fix the sink's topic`,
  INVALID_REQUIRED_ACKS: () => 'the brokers refuse the acks setting: use acks -1 or 1',
  UNSUPPORTED_FOR_MESSAGE_FORMAT: (t) =>
    `the message format of topic "${t}" is too old for this producer: raise the topic's message.format.version`,
  POLICY_VIOLATION: (t) => `a broker policy refuses records for topic "${t}": check the cluster's policies`,
};

/** Error class names (kafkajs) that mean the same as a configuration type above. */
const CONFIGURATION_NAMES: Record<string, string> = {
  KafkaJSSASLAuthenticationError: 'SASL_AUTHENTICATION_FAILED',
};

function errorChain(err: unknown): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const walk = (e: unknown, depth: number) => {
    if (!e || typeof e !== 'object' || depth > 5) return;
    const o = e as Record<string, unknown>;
    out.push(o);
    walk(o.cause, depth + 1);
    walk(o.originalError, depth + 1);
    if (Array.isArray(o.errors)) for (const x of o.errors) walk(x, depth + 1);
  };
  walk(err, 0);
  return out;
}

/** The configuration problem behind `err` (its Kafka error type and what to check), if it is one. */
export function kafkaConfigurationProblem(err: unknown, topic: string): { type: string; check: string } | undefined {
  for (const e of errorChain(err)) {
    const type =
      typeof e.type === 'string' && e.type in CONFIGURATION_TYPES
        ? e.type
        : typeof e.name === 'string'
          ? CONFIGURATION_NAMES[e.name]
          : undefined;
    const hint = type ? CONFIGURATION_TYPES[type] : undefined;
    if (type && hint) return { type, check: hint(topic) };
  }
  return undefined;
}

/**
 * `configuration` when Kafka refuses every event because of the setup (not authorized, bad
 * credentials, missing topic — see {@link kafkaConfigurationProblem}): retried, never dead-lettered;
 * `permanent` when it said this record can never be accepted (too large, invalid); `retryable`
 * otherwise (connection errors, timeouts, leader changes and unknown errors all may pass later).
 */
export function classifyKafkaError(err: unknown): 'retryable' | 'permanent' | 'configuration' {
  if (kafkaConfigurationProblem(err, '')) return 'configuration';
  for (const e of errorChain(err)) if (typeof e.type === 'string' && PERMANENT_TYPES.has(e.type)) return 'permanent';
  return 'retryable';
}

function describe(err: unknown): string {
  const types = errorChain(err)
    .map((e) => e.type)
    .filter((t) => typeof t === 'string');
  const msg = errorMessage(err);
  const cause = errorChain(err)[1];
  const extra = cause && cause.message !== msg ? `: ${String(cause.message)}` : '';
  return `${types.length > 0 ? `${types[0]}: ` : ''}${msg}${extra}`;
}

/** Replaces every secret in `text` (logs and errors never carry them, whatever kafkajs puts there). */
function scrubber(secrets: readonly string[]): (text: string) => string {
  const list = secrets.filter((s) => s.length >= 4);
  if (list.length === 0) return (t) => t;
  return (t) => list.reduce((acc, s) => acc.split(s).join('[redacted]'), t);
}

/**
 * kafkajs logs (warn and above) go to the component logger. Its per-request and per-connection
 * errors repeat on every attempt while a broker is away, and a failed produce request ("Failed to
 * send messages: …", e.g. no leader yet for a partition of a topic just created) is the send result
 * this sink classifies itself; the delivery layer already reports those once per failure streak, so
 * they drop to debug. Anything else is logged once per message.
 */
const ROUTINE =
  /^(Response |Connection error|Connection timeout|Failed to connect|Request |Closed connection|Failed to send messages)/;
export function logCreator(logger: Logger, scrub: (text: string) => string = (t) => t) {
  return () =>
    ({ level, log }: { level: logLevel; log: { message: string; [k: string]: unknown } }) => {
      const { message: raw, timestamp: _t, logger: _l, ...rest } = log;
      // We cap kafkajs retries on purpose (the delivery layer retries); its warning about it is noise.
      if (raw.includes('Limiting retries')) return;
      const message = scrub(raw);
      const fields = JSON.parse(scrub(JSON.stringify(rest))) as Record<string, unknown>;
      if (ROUTINE.test(message)) logger.debug(`kafkajs: ${message}`, fields);
      else if (level === logLevel.ERROR) logger.once('error', `kafkajs:${message}`, `kafkajs: ${message}`, fields);
      else if (level === logLevel.WARN) logger.once('warn', `kafkajs:${message}`, `kafkajs: ${message}`, fields);
    };
}

/** Reads a PEM file of the `tls` block, naming the option in the error. */
function pem(path: string | undefined, option: string): Buffer | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CrbridgeError(
      ErrorCode.ConfigInvalid,
      `kafka sink: cannot read tls.${option} ${path}: ${errorMessage(err)}`,
    );
  }
}

/** kafkajs' `ssl` option from the `tls` block (files read now), or undefined when TLS is off. */
export function kafkaTlsOptions(tls: TlsOptions | undefined): ConnectionOptions | undefined {
  if (!tls) return undefined;
  return {
    ca: pem(tls.caFile, 'caFile'),
    cert: pem(tls.certFile, 'certFile'),
    key: pem(tls.keyFile, 'keyFile'),
    ...(tls.serverName && { servername: tls.serverName }),
    rejectUnauthorized: tls.insecureSkipVerify !== true,
  };
}

/** The kafkajs client settings of a sink: brokers, timeouts, capped retries, TLS and SASL as configured. */
export function kafkaClientConfig(
  config: Required<Pick<KafkaSinkConfig, 'brokers' | 'clientId' | 'connectionTimeoutMs' | 'requestTimeoutMs'>>,
  tls: TlsOptions | undefined,
  sasl: KafkaSaslConfig | undefined,
  logCreator: KafkaConfig['logCreator'],
): KafkaConfig {
  const ssl = kafkaTlsOptions(tls);
  return {
    clientId: config.clientId,
    brokers: splitBrokers(config.brokers),
    connectionTimeout: config.connectionTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 1000 },
    logLevel: logLevel.WARN,
    ...(logCreator && { logCreator }),
    ...(ssl && { ssl }),
    ...(sasl && {
      sasl: { mechanism: sasl.mechanism, username: sasl.username, password: sasl.password } as SASLOptions,
    }),
  };
}

/** Kafka's rule for topic names. */
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;

/**
 * With `autoCreateTopics`, for how long a topic answered missing (UNKNOWN_TOPIC_OR_PARTITION) is
 * taken to be one the brokers are still creating on first use — retried, not yet reported as a
 * configuration problem. The first metadata answers for a new topic say it is unknown while the
 * controller creates it, which can outlast kafkajs' own single retry on a busy broker.
 */
export const AUTO_CREATE_GRACE_MS = 10_000;

/** How long a producer dropped after an error is waited for while it disconnects. */
const DISCONNECT_WAIT_MS = 1000;

/** One event's records, their topic and approximate size. */
interface Encoded {
  index: number;
  topic: string;
  messages: Message[];
  bytes: number;
}

class KafkaSink implements Sink {
  readonly maxBatch = 500;
  /**
   * Several sends at once (the delivery queue never puts one object's events in two of them, so
   * requests of concurrent sends never hold records of the same key and may complete or fail in
   * any order). With the idempotent producer their produce requests still go one at a time
   * ({@link exclusive}): encoding the next batch overlaps the broker's answer to the current one.
   */
  readonly defaultConcurrency = 4;
  private readonly config: Required<Omit<KafkaSinkConfig, 'topicExpression' | 'tls' | 'sasl'>>;
  private readonly logger: Logger;
  private readonly kafka: KafkaClient & { close?(deadline: number): Promise<void> };
  private readonly idempotent: boolean;
  private readonly topicProgram: CelProgram | undefined;
  private readonly scrub: (text: string) => string;
  private readonly insecure: boolean;
  private producer: KafkaProducer | undefined;
  /** Topic → when it was first answered missing (since its last success). */
  private readonly missingSince = new Map<string, number>();
  /** How long a missing topic counts as being created by the brokers (with `autoCreateTopics`). */
  private autoCreateGraceMs = AUTO_CREATE_GRACE_MS;
  private connected = false;
  private connecting: Promise<KafkaProducer> | undefined;
  private shutdownPromise: Promise<void> | undefined;
  /** The end of the last produce request queued (idempotent producer: one at a time). */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(config: KafkaSinkConfig, ctx: ComponentContext) {
    const { topicExpression, tls, sasl, ...rest } = config;
    this.config = {
      ...KAFKA_SINK_DEFAULTS,
      ...rest,
      brokers: splitBrokers(config.brokers),
    };
    this.logger = ctx.logger;
    this.topicProgram = topicExpression ? compileCel(topicExpression, 'string') : undefined;
    this.scrub = scrubber(sasl ? [sasl.password] : []);
    this.insecure = tls?.insecureSkipVerify === true;
    registerKafkaCodecs();
    // kafkajs' idempotent producer needs acks=all; with acks=1 it is turned off.
    this.idempotent = this.config.idempotent && this.config.acks === -1;
    const log = logCreator(ctx.logger, this.scrub);
    const client = kafkaClientConfig(this.config, tls, sasl, log);
    this.kafka = this.config.thread ? new ThreadedKafka(client, log()) : new Kafka(client);
  }

  async start(_signal: AbortSignal): Promise<void> {
    if (this.config.idempotent && !this.idempotent)
      this.logger.warn('kafka sink: idempotent producer needs acks -1; sending without idempotence', {
        acks: this.config.acks,
      });
    if (this.insecure)
      this.logger.warn(
        'kafka sink: TLS certificate verification is off (tls.insecureSkipVerify); anyone on the path can read and change what is sent',
        { code: ErrorCode.ConfigInvalid },
      );
  }

  /** The topic of one event: the expression's string, else the static topic. Throws when the expression fails. */
  private topicOf(event: CloudEvent): string {
    if (!this.topicProgram) return this.config.topic;
    let value: string | null;
    try {
      value = toStringValue(this.topicProgram.evaluate(celVariables(event)));
    } catch (err) {
      throw new Error(`topicExpression ${JSON.stringify(this.topicProgram.source)} failed: ${errorMessage(err)}`);
    }
    if (value === null) return this.config.topic;
    if (!TOPIC_NAME.test(value))
      throw new Error(
        `topicExpression ${JSON.stringify(this.topicProgram.source)} produced ${JSON.stringify(value.slice(0, 300))}, not a valid Kafka topic name (letters, digits, ".", "_", "-"; 1 to 249)`,
      );
    return value;
  }

  /** Connects a producer (one at a time, shared by concurrent sends), bounded by connection + request timeout and by `signal`. */
  private connect(signal: AbortSignal): Promise<KafkaProducer> {
    if (this.producer && this.connected) return Promise.resolve(this.producer);
    this.connecting ??= this.doConnect(signal).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async doConnect(signal: AbortSignal): Promise<KafkaProducer> {
    const producer = this.kafka.producer({
      idempotent: this.idempotent,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: this.config.autoCreateTopics,
      // murmur2 over the key, like the Java client: the same uid lands in the same partition.
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 1000 },
    });
    this.producer = producer;
    const bound = this.config.connectionTimeoutMs + this.config.requestTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        producer.connect(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`connecting to Kafka timed out after ${bound} ms`)), bound);
          onAbort = () => reject(new Error('aborted at shutdown'));
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
      this.connected = true;
      return producer;
    } catch (err) {
      await this.drop(signal.aborted ? Date.now() : undefined);
      throw err;
    } finally {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Forgets the producer (after an error): the next send connects a fresh one. Waits for its
   * disconnect until `until` at most (a broker that is away may never answer); the disconnect goes
   * on in the background after that.
   */
  private async drop(until = Date.now() + DISCONNECT_WAIT_MS): Promise<void> {
    const p = this.producer;
    this.producer = undefined;
    this.connected = false;
    if (!p) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      p.disconnect().catch(() => {}),
      new Promise<void>((r) => {
        timer = setTimeout(r, Math.max(0, until - Date.now()));
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * Encodes the batch and produces it in requests of at most `maxBatchBytes`, one after another.
   * When a request fails retryably, it and everything after it are retryable (earlier requests
   * stay delivered, so order holds). When Kafka refuses a request of several events permanently
   * (e.g. one record too large), its events are sent one at a time so only the bad one is refused.
   * An event whose topic cannot be chosen (the expression fails) is refused permanently.
   */
  async send(batch: readonly OutboundEvent[], signal: AbortSignal): Promise<DeliveryResult[]> {
    const results: DeliveryResult[] = [];
    const groups: Encoded[] = [];
    for (let i = 0; i < batch.length; i++) {
      const { event } = batch[i] as OutboundEvent;
      try {
        const topic = this.topicOf(event);
        const rec = toKafkaRecord(event, this.config.mode);
        const messages: Message[] = [{ key: rec.key, value: rec.value, headers: rec.headers }];
        const tomb = this.config.tombstones ? tombstoneFor(event) : undefined;
        if (tomb) messages.push({ key: tomb.key, value: tomb.value, headers: tomb.headers });
        let bytes = 0;
        for (const m of messages) {
          bytes += 70 + Buffer.byteLength(String(m.key ?? '')) + (m.value ? (m.value as Buffer).length : 0);
          for (const [k, v] of Object.entries(m.headers ?? {})) bytes += k.length + Buffer.byteLength(String(v)) + 4;
        }
        groups.push({ index: i, topic, messages, bytes });
        results.push({ status: 'ok' });
      } catch (err) {
        results.push({ status: 'permanent', error: `cannot encode event ${event.id}: ${errorMessage(err)}` });
      }
    }
    const chunks: Encoded[][] = [];
    let size = Number.POSITIVE_INFINITY;
    for (const g of groups) {
      if (size + g.bytes > this.config.maxBatchBytes) {
        chunks.push([]);
        size = 0;
      }
      chunks.at(-1)?.push(g);
      size += g.bytes;
    }
    for (let c = 0; c < chunks.length; c++) {
      const chunk = chunks[c] as Encoded[];
      const failure = await this.produce(chunk, signal);
      if (!failure) continue;
      if (failure.status === 'permanent' && chunk.length > 1) {
        // One bad record must not take its neighbours with it: one event at a time.
        for (let k = 0; k < chunk.length; k++) {
          const g = chunk[k] as Encoded;
          const single = await this.produce([g], signal);
          if (single?.status === 'retryable') {
            for (const rest of [...chunk.slice(k), ...chunks.slice(c + 1).flat()]) results[rest.index] = single;
            return results;
          }
          if (single) results[g.index] = single;
        }
        continue;
      }
      if (failure.status === 'permanent') {
        results[(chunk[0] as Encoded).index] = failure;
        continue;
      }
      for (const rest of [...chunk, ...chunks.slice(c + 1).flat()]) results[rest.index] = failure;
      return results;
    }
    return results;
  }

  /**
   * True while every one of `topics` may still be being created by the brokers: auto-create is
   * asked for and each was first answered missing less than `autoCreateGraceMs` ago.
   */
  private maybeBeingCreated(topics: readonly string[]): boolean {
    if (!this.config.autoCreateTopics) return false;
    const now = Date.now();
    let all = true;
    for (const t of topics) {
      const since = this.missingSince.get(t) ?? now;
      this.missingSince.set(t, since);
      if (now - since >= this.autoCreateGraceMs) all = false;
    }
    return all;
  }

  /**
   * Produces the chunk's records (by topic, in order); undefined on success, else the failure that
   * applies to all of them. With the idempotent producer one request at a time, each from
   * connecting to dropping the producer after a failure: a request is never sent on a producer
   * whose earlier request failed (kafkajs takes back that request's sequence numbers, so a request
   * sent after it on the same producer id could take them and be dropped by the broker as a
   * duplicate if the failed one was written after all). Without it, concurrent requests go out at
   * once (at least once: a failure may repeat records, never reorder one key's).
   */
  private produce(chunk: readonly Encoded[], signal: AbortSignal): Promise<DeliveryResult | undefined> {
    return this.idempotent ? this.exclusive(() => this.produceNow(chunk, signal)) : this.produceNow(chunk, signal);
  }

  /** Runs `fn` after every earlier `exclusive` call has finished (a FIFO lock). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => {});
    return run;
  }

  private async produceNow(chunk: readonly Encoded[], signal: AbortSignal): Promise<DeliveryResult | undefined> {
    if (signal.aborted) return { status: 'retryable', error: 'aborted at shutdown' };
    const byTopic = new Map<string, Message[]>();
    for (const g of chunk) {
      const list = byTopic.get(g.topic);
      if (list) list.push(...g.messages);
      else byTopic.set(g.topic, [...g.messages]);
    }
    try {
      const producer = await this.connect(signal);
      let onAbort: (() => void) | undefined;
      await Promise.race([
        producer.sendBatch({
          acks: this.config.acks,
          compression: COMPRESSION_TYPES[this.config.compression],
          topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
        }),
        new Promise<never>((_, reject) => {
          onAbort = () => reject(new Error('aborted at shutdown'));
          signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]).finally(() => {
        if (onAbort) signal.removeEventListener('abort', onAbort);
      });
      for (const t of byTopic.keys()) this.missingSince.delete(t);
      return undefined;
    } catch (err) {
      await this.drop(signal.aborted ? Date.now() : undefined);
      const topics = [...byTopic.keys()];
      const topic = topics.length === 1 ? (topics[0] as string) : topics.join('", "');
      const kind = classifyKafkaError(err);
      if (kind === 'configuration') {
        const problem = kafkaConfigurationProblem(err, topic) as { type: string; check: string };
        if (problem.type === 'UNKNOWN_TOPIC_OR_PARTITION' && this.maybeBeingCreated(topics))
          return {
            status: 'retryable',
            error: `kafka ${topic}: topic "${topic}" is not there yet (the brokers may be creating it on first use)`,
          };
        this.logger.once(
          'error',
          `kafka-configuration:${topic}:${problem.type}`,
          `Kafka refuses every event for topic "${topic}" (${problem.type}); retrying until the configuration is fixed`,
          {
            code: ErrorCode.DeliveryConfig,
            topic,
            kafkaError: problem.type,
            check: problem.check,
            error: this.scrub(describe(err)),
          },
        );
        return { status: 'retryable', error: `kafka ${topic}: ${problem.type}: ${problem.check}` };
      }
      const error = `kafka ${topic}: ${this.scrub(describe(err))}`;
      return kind === 'permanent' ? { status: 'permanent', error } : { status: 'retryable', error };
    }
  }

  /** Disconnects the producer, waiting no later than `deadline` (Kafka may be away). Idempotent. */
  shutdown(deadline: number): Promise<void> {
    this.shutdownPromise ??= this.drop(deadline).then(() => this.kafka.close?.(deadline));
    return this.shutdownPromise;
  }
}

export const kafkaSink: SinkFactory<KafkaSinkConfig> = {
  kind: 'sink',
  type: 'kafka',
  description: `Produces each event as a Kafka record (CloudEvents Kafka binding, ${D.mode} mode by default) keyed by the object uid.`,
  configSchema: {
    type: 'object',
    required: ['brokers', 'topic'],
    properties: {
      brokers: {
        type: 'array',
        minItems: 1,
        items: { type: 'string', minLength: 1, description: 'host:port; may hold several, comma-separated.' },
        description:
          'Bootstrap brokers as host:port. An entry may list several separated by commas, so a value taken from an environment variable such as KAFKA_BROKERS (h1:9092,h2:9092) works as one entry.',
      },
      topic: {
        type: 'string',
        minLength: 1,
        description: 'Topic to produce to; with `topicExpression`, the topic of events for which it yields null or "".',
      },
      topicExpression: {
        type: 'string',
        minLength: 1,
        description:
          'CEL expression choosing the topic per event, e.g. `"crs." + object.kind.lowerAscii()` or `object.metadata.namespace == "prod" ? "prod-events" : null`; null or "" means `topic`. Variables: object, oldObject, change, patch, event (docs/stages.md). An event for which it fails or yields an invalid topic name is dead-lettered.',
      },
      clientId: {
        type: 'string',
        default: D.clientId,
        description: 'Kafka client id (shows in broker logs and quotas).',
      },
      mode: {
        type: 'string',
        enum: ['binary', 'structured'],
        default: D.mode,
        description:
          'CloudEvents Kafka binding mode: binary (attributes as ce_* headers, data as the value) or structured (the whole event as JSON in the value).',
      },
      tombstones: {
        type: 'boolean',
        default: D.tombstones,
        description:
          'After the event of a delete, also send a null-value record with the uid key so a compacted topic forgets the object.',
      },
      compression: {
        type: 'string',
        enum: Object.keys(COMPRESSION_TYPES),
        default: D.compression,
        description:
          'Compression of record batches: none, gzip, snappy or lz4 (pure-JS codecs; the framing the Java client writes).',
      },
      acks: {
        type: 'integer',
        enum: [-1, 1],
        default: D.acks,
        description:
          'Acknowledgements required: -1 = all in-sync replicas (needed for idempotence), 1 = the leader only.',
      },
      idempotent: {
        type: 'boolean',
        default: D.idempotent,
        description: 'Use the idempotent producer (no duplicates from internal resends; needs acks -1).',
      },
      autoCreateTopics: {
        type: 'boolean',
        default: D.autoCreateTopics,
        description:
          'Let the brokers create a missing topic on first use (only where auto.create.topics.enable is on); a topic still missing 10 s after the first try is reported as a configuration error. false: a missing topic is at once a retryable configuration error naming it, until someone creates it.',
      },
      connectionTimeoutMs: {
        type: 'integer',
        minimum: 1,
        default: D.connectionTimeoutMs,
        description: 'Milliseconds to wait for a TCP/TLS connection to a broker.',
      },
      requestTimeoutMs: {
        type: 'integer',
        minimum: 1,
        default: D.requestTimeoutMs,
        description: 'Milliseconds to wait for a broker to answer a request.',
      },
      maxBatchBytes: {
        type: 'integer',
        minimum: 1024,
        default: D.maxBatchBytes,
        description:
          "Approximate most bytes of records in one produce request; larger batches are split. Keep it below the topic's max.message.bytes (1 MB by default).",
      },
      thread: {
        type: 'boolean',
        default: D.thread,
        description:
          "Run the producer on a worker thread of its own: kafkajs' record encoding, checksums, compression and socket I/O (most of a produce request's CPU) then leave the pipeline's thread. false: everything on the one thread (about 10 MB less memory).",
      },
      tls: {
        ...tlsSchema,
        description:
          'TLS to the brokers; present (even `{}`) turns it on, with the system roots unless `caFile`. Verification is on unless `insecureSkipVerify` is true (logged as a warning).',
      },
      sasl: {
        type: 'object',
        additionalProperties: false,
        required: ['mechanism', 'username', 'password'],
        description:
          'SASL authentication to the brokers (combine with `tls` on a SASL_SSL listener). Give the credentials as env: or file: references (resolved when the pipeline is loaded); the password never appears in logs or errors.',
        properties: {
          mechanism: {
            type: 'string',
            enum: ['plain', 'scram-sha-256', 'scram-sha-512'],
            description: 'SASL mechanism.',
          },
          username: { type: 'string', minLength: 1, description: 'User name, usually an env: or file: reference.' },
          password: {
            type: 'string',
            minLength: 1,
            description: 'Password, usually a file: or env: reference.',
          },
        },
      },
    },
  },
  check(config) {
    const problems: { pointer: string; message: string }[] = [];
    if (typeof config.topicExpression === 'string') {
      const problem = celProblem(config.topicExpression, 'string');
      if (problem) problems.push({ pointer: '/topicExpression', message: problem });
    }
    const tls = config.tls;
    if (tls && Boolean(tls.certFile) !== Boolean(tls.keyFile))
      problems.push({
        pointer: tls.certFile ? '/tls/keyFile' : '/tls/certFile',
        message: 'a client certificate needs both tls.certFile and tls.keyFile',
      });
    return problems;
  },
  create(config: KafkaSinkConfig, ctx: ComponentContext): Sink {
    return new KafkaSink(config, ctx);
  },
};
