/**
 * A kafkajs client whose producers live on a worker thread (`producer-thread.ts`): the sink keeps
 * every decision on its own thread (connect, what goes in a request, dropping a producer after a
 * failure, error classification) and hands the worker only the calls kafkajs would get —
 * `connect`, `sendBatch`, `disconnect` — so the record-batch encoding, CRCs, compression and
 * socket I/O, most of the CPU of a produce request, leave the pipeline's thread.
 *
 * Ordering: requests reach the worker in the order they are made and each producer's calls run
 * there in that order, as on one thread. Errors come back as plain objects and are rebuilt with
 * the same `name`, `message`, `type`, `retriable` and causes, so the sink classifies them as it
 * would kafkajs' own. The worker starts with the first producer (a sink that never sends pays
 * nothing), holds the process open only while a call is pending, and is terminated by `close`.
 * If it dies, every pending call fails (retryable for the sink) and the next call starts a new one.
 */
import { Worker } from 'node:worker_threads';
import type { KafkaConfig, LogEntry, logLevel, Producer, ProducerBatch, ProducerConfig } from 'kafkajs';
import { fromWire } from '../../errors.ts';

/** What the sink needs of a kafkajs client; a kafkajs `Kafka` is one. */
export interface KafkaClient {
  producer(options: ProducerConfig): KafkaProducer;
}

/** What the sink needs of a kafkajs producer. */
export type KafkaProducer = Pick<Producer, 'connect' | 'disconnect' | 'sendBatch'>;

/** The worker's start-up data: the kafkajs client settings that can cross a thread (no functions). */
export interface ProducerThreadInit {
  client: Omit<KafkaConfig, 'logCreator'>;
}

type ProducerOptions = Omit<ProducerConfig, 'createPartitioner'>;

/** A call for the worker; `id` pairs it with its result, `producer` names one of its producers. */
export type ThreadCall =
  | { op: 'connect'; producer: number; options: ProducerOptions }
  | { op: 'send'; producer: number; batch: ProducerBatch }
  | { op: 'disconnect'; producer: number };
export type ThreadRequest = ThreadCall & { id: number };

/** What the worker posts: a call's result, or one of kafkajs' log lines. */
export type ThreadResponse =
  | { op: 'result'; id: number; ok: true; value: unknown }
  | { op: 'result'; id: number; ok: false; error: unknown }
  | { op: 'log'; level: logLevel; log: { message: string; [k: string]: unknown } };

/** Where the worker's module is: next to this one, `.ts` when run from source, `.js` when built. */
const WORKER_URL = new URL(`./producer-thread${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class ThreadedKafka implements KafkaClient {
  private readonly init: ProducerThreadInit;
  private readonly onLog: (entry: LogEntry) => void;
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextProducer = 1;
  private closed: Promise<void> | undefined;

  /** `onLog` gets kafkajs' log lines as its `logCreator` would (the sink's, which scrubs them). */
  constructor(client: KafkaConfig, onLog: (entry: LogEntry) => void) {
    const { logCreator: _ignored, ...rest } = client;
    this.init = { client: rest };
    this.onLog = onLog;
  }

  producer(options: ProducerConfig): KafkaProducer {
    const { createPartitioner: _murmur2InTheWorker, ...rest } = options;
    const producer = this.nextProducer++;
    return {
      connect: () => this.call({ op: 'connect', producer, options: rest }) as Promise<void>,
      sendBatch: (batch) => this.call({ op: 'send', producer, batch }) as ReturnType<Producer['sendBatch']>,
      disconnect: () => this.call({ op: 'disconnect', producer }) as Promise<void>,
    };
  }

  /** A kafkajs-style logger feeding the same path as the worker's log lines (kafkajs' `Kafka.logger()`). */
  logger(): Record<'error' | 'warn' | 'info' | 'debug', (message: string, extra?: object) => void> {
    const at =
      (level: number) =>
      (message: string, extra: object = {}) =>
        this.onLog({ namespace: '', label: '', level, log: { message, timestamp: '', logger: 'kafkajs', ...extra } });
    return { error: at(1), warn: at(2), info: at(4), debug: at(5) };
  }

  /** Terminates the worker (pending calls fail), waiting no later than `deadline`. Idempotent. */
  close(deadline: number): Promise<void> {
    this.closed ??= (async () => {
      const w = this.worker;
      this.worker = undefined;
      this.fail(new Error('the Kafka producer thread was closed'));
      if (!w) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        w.terminate().then(
          () => {},
          () => {},
        ),
        new Promise<void>((r) => {
          timer = setTimeout(r, Math.max(0, deadline - Date.now()));
        }),
      ]);
      clearTimeout(timer);
    })();
    return this.closed;
  }

  private call(req: ThreadCall): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the Kafka producer thread was closed'));
    const worker = this.spawn();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) worker.ref();
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ ...req, id });
    });
  }

  private spawn(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(WORKER_URL, { workerData: this.init, name: 'crbridge-kafka' });
    w.unref();
    w.on('message', (m: ThreadResponse) => {
      if (m.op === 'log') {
        this.onLog({ namespace: '', label: '', level: m.level, log: fromWire(m.log) as LogEntry['log'] });
        return;
      }
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) w.unref();
      if (m.ok) p.resolve(m.value);
      else p.reject(fromWire(m.error));
    });
    const gone = (why: string) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.fail(new Error(`the Kafka producer thread stopped: ${why}`));
    };
    w.on('error', (err) => gone(err.message));
    w.on('exit', (code) => gone(`exit code ${code}`));
    this.worker = w;
    return w;
  }

  private fail(err: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
  }
}
