/**
 * The local real stack manager: `node test/infra/stack.ts <up|down|status|start NAME|stop NAME|restart NAME>`.
 *
 * Builds (once, cached under ~/.cache/crbridge by the build scripts next to this file) and runs a real
 * kube-apiserver + etcd, a one-node Kafka 4 KRaft cluster and Jaeger v2 on free loopback ports, all as
 * detached processes whose state lives in `<repo>/.stack/` (pids, data, logs, certificates, kubeconfigs,
 * chosen ports in state.json). `up` writes `.stack/env` for tests and tools. Only `down` removes data.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';

const infraDir = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(infraDir, '..', '..');
/** `<repo>/.stack`, or CRBRIDGE_STACK_DIR (a second, private stack, e.g. to test this tool itself). */
export const stackDir = process.env.CRBRIDGE_STACK_DIR
  ? resolve(process.env.CRBRIDGE_STACK_DIR)
  : join(repoRoot, '.stack');
export const envFile = join(stackDir, 'env');
const stateFile = join(stackDir, 'state.json');
const logsDir = join(stackDir, 'logs');
const pidsDir = join(stackDir, 'pids');
const dataDir = join(stackDir, 'data');
const pkiDir = join(stackDir, 'pki');
const binDir = join(stackDir, 'bin');
const confDir = join(stackDir, 'conf');

export type ComponentName = 'etcd' | 'apiserver' | 'kafka' | 'jaeger';
export const COMPONENTS: readonly ComponentName[] = ['etcd', 'apiserver', 'kafka', 'jaeger'];

/** A failure with a one-line, human-readable message; the CLI prints it and exits 1 (no stack trace). */
export class StackError extends Error {
  override name = 'StackError';
}

interface Ports {
  etcd: number;
  etcdPeer: number;
  apiserver: number;
  kafka: number;
  kafkaController: number;
  /** The SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256/512 users); absent in stacks set up before it. */
  kafkaSasl: number;
  /** The SSL listener (server certificate from the stack CA; client certificates required). */
  kafkaTls: number;
  otlpHttp: number;
  otlpGrpc: number;
  jaegerQuery: number;
  jaegerQueryGrpc: number;
  jaegerHealth: number;
}

/** Everything `up` decided once and later commands reuse (so `restart NAME` keeps clients working). */
interface State {
  ports: Ports;
  kafkaClusterId: string;
  /** Passwords of the SASL users (PLAIN `crbridge-plain`, SCRAM `crbridge-scram`). */
  kafkaSasl: { plainPassword: string; scramPassword: string };
  adminToken: string;
  restrictedToken: string;
  bins: { kube: string; etcd: string; jaeger: string; helm: string; kafkaJars: string };
}

/** One component's observed condition, as `status` prints it. */
export interface ComponentStatus {
  name: ComponentName;
  pid: number | undefined;
  running: boolean;
  healthy: boolean;
  port: number | undefined;
  detail: string;
}

// kafkajs 2.2.4 schedules a negative timeout on Node >= 23 (a harmless TimeoutNegativeWarning on every
// connection); hide that one warning and print the others as Node would.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (w.name !== 'TimeoutNegativeWarning') process.stderr.write(`(node) ${w.name}: ${w.message}\n`);
});

const say = (s: string): void => {
  const t = new Date().toISOString().slice(11, 19);
  process.stdout.write(`[stack ${t}] ${s}\n`);
};
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Builds: each script is idempotent, prints progress on stderr and its output folder on stdout.

/** Runs one build script; relays its `[infra ...]` progress lines; on failure throws its one-line reason. */
function runScript(script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [join(infraDir, script)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errBuf = '';
    let reason = '';
    let lastOther = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      errBuf += d;
      let i = errBuf.indexOf('\n');
      while (i >= 0) {
        const line = errBuf.slice(0, i);
        errBuf = errBuf.slice(i + 1);
        if (line.startsWith('[infra')) process.stderr.write(`${line}\n`);
        else if (line.startsWith('crbridge stack:')) reason = line;
        else if (line.trim()) lastOther = line.trim();
        i = errBuf.indexOf('\n');
      }
    });
    child.once('error', (e) => reject(new StackError(`crbridge stack: cannot run bash for ${script}: ${e.message}`)));
    child.once('close', (code) => {
      if (errBuf.startsWith('crbridge stack:')) reason = errBuf.trim();
      if (code === 0) resolve(out.trim().split('\n').pop() ?? '');
      else {
        const hint = lastOther ? `: ${lastOther.slice(0, 300)}` : '';
        reject(new StackError(reason || `crbridge stack: ${script} failed (exit ${code})${hint}`));
      }
    });
  });
}

/** Builds or fetches every binary (sequentially: the machine is small) and makes sure kcat exists. */
export async function ensureBuilt(): Promise<State['bins']> {
  const etcd = await runScript('build-etcd.sh');
  const kube = await runScript('build-kube.sh');
  const jaeger = await runScript('build-jaeger.sh');
  const helm = await runScript('build-helm.sh');
  const kafkaJars = await runScript('fetch-kafka.sh');
  await runScript('ensure-kcat.sh');
  return { etcd, kube, jaeger, helm, kafkaJars };
}

/** Runs a tool for its version text (stdout + stderr); a missing tool is one clear line. */
function checkTool(cmd: string, args: string[], how: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    throw new StackError(`crbridge stack: '${cmd}' is not installed; ${how}`);
  }
  return `${r.stdout ?? ''}${r.stderr ?? ''}`;
}

function checkJava(): void {
  const how = "install a Java 17+ runtime ('apt-get install openjdk-17-jre-headless')";
  const v = checkTool('java', ['-version'], how);
  const m = /version "(\d+)/.exec(v);
  if (!m || Number(m[1]) < 17)
    throw new StackError(`crbridge stack: Java 17+ is needed for Kafka; found: ${v.split('\n')[0]}; ${how}`);
}

// ---------------------------------------------------------------------------------------------
// State, ports, certificates and config files.

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    return typeof a === 'object' && a ? a.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function readState(): State | undefined {
  if (!existsSync(stateFile)) return undefined;
  return JSON.parse(readFileSync(stateFile, 'utf8')) as State;
}

function requireState(): State {
  const s = readState();
  if (!s) throw new StackError('crbridge stack: the stack is not set up; run `npm run stack -- up` first');
  return s;
}

async function newState(bins: State['bins']): Promise<State> {
  const p = await freePorts(12);
  const at = (i: number) => p[i] as number;
  let clusterId = randomBytes(16).toString('base64url');
  while (clusterId.startsWith('-')) clusterId = randomBytes(16).toString('base64url');
  return {
    ports: {
      etcd: at(0),
      etcdPeer: at(1),
      apiserver: at(2),
      kafka: at(3),
      kafkaController: at(4),
      otlpHttp: at(5),
      otlpGrpc: at(6),
      jaegerQuery: at(7),
      jaegerQueryGrpc: at(8),
      jaegerHealth: at(9),
      kafkaSasl: at(10),
      kafkaTls: at(11),
    },
    kafkaClusterId: clusterId,
    kafkaSasl: saslPasswords(),
    adminToken: randomBytes(24).toString('hex'),
    restrictedToken: randomBytes(24).toString('hex'),
    bins,
  };
}

/** The SASL users of the Kafka SASL_PLAINTEXT listener. */
export const KAFKA_SASL_USERS = { plain: 'crbridge-plain', scram: 'crbridge-scram' } as const;

function saslPasswords(): State['kafkaSasl'] {
  return { plainPassword: randomBytes(18).toString('hex'), scramPassword: randomBytes(18).toString('hex') };
}

/** Adds what later versions of this tool keep in state.json to a state written by an older one. */
async function upgradeState(s: State): Promise<State> {
  let changed = false;
  for (const key of ['kafkaSasl', 'kafkaTls'] as const) {
    if (s.ports[key]) continue;
    const [port] = await freePorts(1);
    s.ports[key] = port as number;
    changed = true;
  }
  if (!s.kafkaSasl) {
    s.kafkaSasl = saslPasswords();
    changed = true;
  }
  if (changed) writeFileSync(stateFile, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
  return s;
}

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { cwd: pkiDir, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT')
      throw new StackError("crbridge stack: 'openssl' is not installed; apt-get install openssl");
    throw new StackError(
      `crbridge stack: openssl ${args[0]} failed: ${
        String(err.stderr ?? '')
          .trim()
          .split('\n')[0]
      }`,
    );
  }
}

/** A key (PKCS#8, unencrypted) and a certificate signed by the stack CA, with the given extensions. */
function signedCert(name: string, subject: string, ext: string[]): void {
  writeFileSync(join(pkiDir, `${name}.ext`), `${ext.join('\n')}\n`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
  openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
      '-out',
      `${name}.crt`,
      '-days',
      '3650',
      '-extfile',
      `${name}.ext`,
    ]),
  );
}

/**
 * The Kafka SSL listener's PKI, from the stack CA: a server certificate for 127.0.0.1/localhost (in
 * `kafka-keystore.pem`, key + certificate, as Kafka's PEM keystore wants) and a client certificate.
 */
function ensureKafkaPki(): void {
  if (existsSync(join(pkiDir, 'kafka-keystore.pem'))) return;
  say('generating the Kafka TLS server and client certificates');
  signedCert('kafka', '/CN=kafka', [
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    'extendedKeyUsage=serverAuth',
    'keyUsage=critical,digitalSignature,keyEncipherment',
  ]);
  signedCert('kafka-client', '/CN=crbridge-tls-client', [
    'extendedKeyUsage=clientAuth',
    'keyUsage=critical,digitalSignature,keyEncipherment',
  ]);
  writeFileSync(
    join(pkiDir, 'kafka-keystore.pem'),
    readFileSync(join(pkiDir, 'kafka.key'), 'utf8') + readFileSync(join(pkiDir, 'kafka.crt'), 'utf8'),
    { mode: 0o600 },
  );
}

/** CA, apiserver serving cert, service-account key pair, token file and kubeconfigs (kept until `down`). */
function ensurePki(s: State): void {
  mkdirSync(pkiDir, { recursive: true });
  if (!existsSync(join(pkiDir, 'apiserver.crt'))) {
    say('generating CA, apiserver serving certificate and service-account key');
    openssl(
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '3650'].concat([
        '-subj',
        '/CN=crbridge-stack-ca',
      ]),
    );
    writeFileSync(
      join(pkiDir, 'apiserver.ext'),
      [
        'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc',
        'extendedKeyUsage=serverAuth',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        '',
      ].join('\n'),
    );
    openssl(
      ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'apiserver.key', '-out', 'apiserver.csr'].concat([
        '-subj',
        '/CN=kube-apiserver',
      ]),
    );
    openssl(
      ['x509', '-req', '-in', 'apiserver.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
        '-out',
        'apiserver.crt',
        '-days',
        '3650',
        '-extfile',
        'apiserver.ext',
      ]),
    );
    openssl(['genrsa', '-out', 'sa.key', '2048']);
    openssl(['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);
  }
  ensureKafkaPki();
  writeFileSync(
    join(pkiDir, 'tokens.csv'),
    `${s.adminToken},crbridge-admin,crbridge-admin-uid,"system:masters"\n` +
      `${s.restrictedToken},crbridge-restricted,crbridge-restricted-uid\n`,
    { mode: 0o600 },
  );
  const ca = readFileSync(join(pkiDir, 'ca.crt')).toString('base64');
  const kubeconfig = (user: string, token: string) =>
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '  - name: crbridge-stack',
      '    cluster:',
      `      server: https://127.0.0.1:${s.ports.apiserver}`,
      `      certificate-authority-data: ${ca}`,
      'users:',
      `  - name: ${user}`,
      '    user:',
      `      token: ${token}`,
      'contexts:',
      `  - name: ${user}`,
      '    context:',
      '      cluster: crbridge-stack',
      `      user: ${user}`,
      '      namespace: default',
      `current-context: ${user}`,
      '',
    ].join('\n');
  writeFileSync(join(stackDir, 'kubeconfig'), kubeconfig('crbridge-admin', s.adminToken), { mode: 0o600 });
  writeFileSync(join(stackDir, 'kubeconfig-restricted'), kubeconfig('crbridge-restricted', s.restrictedToken), {
    mode: 0o600,
  });
}

/** `.stack/bin`: one folder with kubectl, helm, kcat and the servers (CRBRIDGE_STACK_BIN). */
function linkBins(s: State): void {
  mkdirSync(binDir, { recursive: true });
  const links: Record<string, string> = {
    'kube-apiserver': join(s.bins.kube, 'kube-apiserver'),
    kubectl: join(s.bins.kube, 'kubectl'),
    etcd: join(s.bins.etcd, 'etcd'),
    jaeger: join(s.bins.jaeger, 'jaeger'),
    helm: join(s.bins.helm, 'helm'),
  };
  try {
    // looked up without .stack/bin on the PATH: tests (with-stack) put it first, and linking our own
    // link to itself would leave a loop (ELOOP for every kcat call)
    const PATH = (process.env.PATH ?? '')
      .split(delimiter)
      .filter((d) => d !== '' && resolve(d) !== resolve(binDir))
      .join(delimiter);
    links.kcat = execFileSync('bash', ['-c', 'command -v kcat'], {
      encoding: 'utf8',
      env: { ...process.env, PATH },
    }).trim();
  } catch {
    // ensure-kcat.sh already reported it
  }
  for (const [name, target] of Object.entries(links)) {
    const at = join(binDir, name);
    // replace the link in one step (a new link renamed over the old): a test running kcat or kubectl
    // while another restarts a component never finds it missing
    const tmp = `${at}.${process.pid}.tmp`;
    rmSync(tmp, { force: true });
    symlinkSync(target, tmp);
    renameSync(tmp, at);
  }
}

export function envVars(s: State): Record<string, string> {
  const p = s.ports;
  return {
    KUBECONFIG: join(stackDir, 'kubeconfig'),
    KUBECONFIG_RESTRICTED: join(stackDir, 'kubeconfig-restricted'),
    KUBE_APISERVER_URL: `https://127.0.0.1:${p.apiserver}`,
    KAFKA_BROKERS: `127.0.0.1:${p.kafka}`,
    KAFKA_SASL_BROKERS: `127.0.0.1:${p.kafkaSasl}`,
    KAFKA_SASL_PLAIN_USERNAME: KAFKA_SASL_USERS.plain,
    KAFKA_SASL_PLAIN_PASSWORD: s.kafkaSasl.plainPassword,
    KAFKA_SASL_SCRAM_USERNAME: KAFKA_SASL_USERS.scram,
    KAFKA_SASL_SCRAM_PASSWORD: s.kafkaSasl.scramPassword,
    KAFKA_TLS_BROKERS: `127.0.0.1:${p.kafkaTls}`,
    KAFKA_TLS_CA_FILE: join(pkiDir, 'ca.crt'),
    KAFKA_TLS_CERT_FILE: join(pkiDir, 'kafka-client.crt'),
    KAFKA_TLS_KEY_FILE: join(pkiDir, 'kafka-client.key'),
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${p.otlpHttp}`,
    OTEL_EXPORTER_OTLP_GRPC_ENDPOINT: `http://127.0.0.1:${p.otlpGrpc}`,
    JAEGER_QUERY_URL: `http://127.0.0.1:${p.jaegerQuery}`,
    ETCD_ENDPOINTS: `http://127.0.0.1:${p.etcd}`,
    CRBRIDGE_STACK_BIN: binDir,
  };
}

function writeEnv(s: State): void {
  const lines = Object.entries(envVars(s)).map(([k, v]) => `export ${k}=${v}`);
  writeFileSync(
    envFile,
    `# Written by test/infra/stack.ts up; source it or load it with test/support/stack.ts\n${lines.join('\n')}\n`,
  );
}

function kafkaFiles(s: State): { props: string; log4j: string; data: string } {
  const p = s.ports;
  const data = join(dataDir, 'kafka');
  const props = join(confDir, 'kafka.properties');
  const log4j = join(confDir, 'kafka-log4j2.xml');
  mkdirSync(confDir, { recursive: true });
  const clientListeners = `PLAINTEXT://127.0.0.1:${p.kafka},SASL_PLAINTEXT://127.0.0.1:${p.kafkaSasl},SSL://127.0.0.1:${p.kafkaTls}`;
  const jaas = (mechanism: string, module: string) =>
    `listener.name.sasl_plaintext.${mechanism}.sasl.jaas.config=org.apache.kafka.common.security.${module} required`;
  writeFileSync(
    props,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.bootstrap.servers=127.0.0.1:${p.kafkaController}`,
      `listeners=${clientListeners},CONTROLLER://127.0.0.1:${p.kafkaController}`,
      `advertised.listeners=${clientListeners},CONTROLLER://127.0.0.1:${p.kafkaController}`,
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT',
      'listener.name.ssl.ssl.keystore.type=PEM',
      `listener.name.ssl.ssl.keystore.location=${join(pkiDir, 'kafka-keystore.pem')}`,
      'listener.name.ssl.ssl.truststore.type=PEM',
      `listener.name.ssl.ssl.truststore.location=${join(pkiDir, 'ca.crt')}`,
      'listener.name.ssl.ssl.client.auth=required',
      'sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
      `${jaas('plain', 'plain.PlainLoginModule')} user_${KAFKA_SASL_USERS.plain}="${s.kafkaSasl.plainPassword}";`,
      `${jaas('scram-sha-256', 'scram.ScramLoginModule')};`,
      `${jaas('scram-sha-512', 'scram.ScramLoginModule')};`,
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${data}`,
      'num.partitions=3',
      'auto.create.topics.enable=true',
      'group.initial.rebalance.delay.ms=0',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=10',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'share.coordinator.state.topic.replication.factor=1',
      'share.coordinator.state.topic.min.isr=1',
      'default.replication.factor=1',
      'min.insync.replicas=1',
      '',
    ].join('\n'),
  );
  const xmlPath = join(logsDir, 'kafka.log').replaceAll('&', '&amp;').replaceAll('"', '&quot;');
  writeFileSync(
    log4j,
    `<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="${xmlPath}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="INFO"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
`,
  );
  return { props, log4j, data };
}

function jaegerConfig(s: State): string {
  const p = s.ports;
  const file = join(confDir, 'jaeger.yaml');
  const data = join(dataDir, 'jaeger');
  mkdirSync(confDir, { recursive: true });
  mkdirSync(join(data, 'keys'), { recursive: true });
  mkdirSync(join(data, 'values'), { recursive: true });
  writeFileSync(
    file,
    `# Jaeger v2 for the local stack: Badger storage on disk under .stack/data/jaeger (a restarted Jaeger
# keeps what it had, so tests can stop it in the middle of a trace), OTLP receivers, query API;
# loopback only.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:${p.jaegerHealth}
  jaeger_storage:
    backends:
      store:
        badger:
          directories:
            keys: ${join(data, 'keys')}
            values: ${join(data, 'values')}
          ephemeral: false
          ttl:
            spans: 24h
  jaeger_query:
    storage:
      traces: store
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:${p.jaegerQuery}
    grpc:
      endpoint: 127.0.0.1:${p.jaegerQueryGrpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${p.otlpGrpc}
      http:
        endpoint: 127.0.0.1:${p.otlpHttp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: store
`,
  );
  return file;
}

// ---------------------------------------------------------------------------------------------
// Processes.

const pidFile = (name: ComponentName) => join(pidsDir, `${name}.pid`);
/**
 * A fragment of the process command line; with the stack folder (every component gets a path in it)
 * it makes sure a recycled pid, or another checkout's stack, is never mistaken for ours.
 */
const cmdlineMark: Record<ComponentName, string> = {
  etcd: 'etcd',
  apiserver: 'kube-apiserver',
  kafka: 'kafka.Kafka',
  jaeger: 'jaeger',
};

function readPid(name: ComponentName): number | undefined {
  try {
    const n = Number(readFileSync(pidFile(name), 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function isOurs(name: ComponentName, pid: number): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // a zombie (state Z) is not running
    if (/^\d+ \(.*\) Z/.test(stat)) return false;
    return cmd.includes(cmdlineMark[name]) && cmd.includes(stackDir);
  } catch {
    return false;
  }
}

function alivePid(name: ComponentName): number | undefined {
  const pid = readPid(name);
  return pid !== undefined && isOurs(name, pid) ? pid : undefined;
}

/**
 * Go runtime settings per component (a value in the caller's environment still wins). The
 * apiserver gets GOGC=400: it is the bottleneck of `npm run bench -- e2e`, and under its write load
 * the default GOGC=100 spent ~13 % of the apiserver's CPU in the Go GC against ~4 % with 400; CPU
 * per 2 KB CR merge-PATCH at 300/s fell from 2.5–3.0 ms to ~2.1 ms (measured 2026-11-29, 2 cores).
 * Its heap goal grows to ~0.8 GB, harmless on the stack's machines. etcd showed no clear gain.
 */
const goEnv: Partial<Record<ComponentName, Record<string, string>>> = { apiserver: { GOGC: '400' } };

function launch(name: ComponentName, cmd: string, args: string[]): ChildProcess {
  mkdirSync(logsDir, { recursive: true });
  mkdirSync(pidsDir, { recursive: true });
  const logPath = join(logsDir, `${name}.log`);
  const fd = openSync(logPath, 'a');
  writeFileSync(fd, `\n==== ${new Date().toISOString()} starting ${name}: ${cmd} ${args.join(' ')}\n`);
  const env = { ...goEnv[name], ...process.env };
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd], cwd: stackDir, env });
  closeSync(fd);
  child.once('error', () => {});
  if (child.pid === undefined) throw new StackError(`crbridge stack: could not start ${name} (${cmd})`);
  writeFileSync(pidFile(name), `${child.pid}\n`);
  child.unref();
  return child;
}

function startProcess(name: ComponentName, s: State): ChildProcess {
  const p = s.ports;
  const kubeBin = s.bins.kube;
  switch (name) {
    case 'etcd': {
      const data = join(dataDir, 'etcd');
      mkdirSync(data, { recursive: true, mode: 0o700 });
      return launch(name, join(s.bins.etcd, 'etcd'), [
        '--name=crbridge',
        `--data-dir=${data}`,
        `--listen-client-urls=http://127.0.0.1:${p.etcd}`,
        `--advertise-client-urls=http://127.0.0.1:${p.etcd}`,
        `--listen-peer-urls=http://127.0.0.1:${p.etcdPeer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${p.etcdPeer}`,
        `--initial-cluster=crbridge=http://127.0.0.1:${p.etcdPeer}`,
        '--unsafe-no-fsync',
        '--log-level=warn',
      ]);
    }
    case 'apiserver': {
      const extra = (process.env.CRBRIDGE_APISERVER_EXTRA_ARGS ?? '').split(/\s+/).filter(Boolean);
      return launch(name, join(kubeBin, 'kube-apiserver'), [
        `--etcd-servers=http://127.0.0.1:${p.etcd}`,
        `--cert-dir=${join(dataDir, 'apiserver-certs')}`,
        `--tls-cert-file=${join(pkiDir, 'apiserver.crt')}`,
        `--tls-private-key-file=${join(pkiDir, 'apiserver.key')}`,
        `--secure-port=${p.apiserver}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        '--service-cluster-ip-range=10.0.0.0/24',
        '--authorization-mode=Node,RBAC',
        `--token-auth-file=${join(pkiDir, 'tokens.csv')}`,
        '--allow-privileged=true',
        '--disable-admission-plugins=ServiceAccount',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${join(pkiDir, 'sa.pub')}`,
        `--service-account-signing-key-file=${join(pkiDir, 'sa.key')}`,
        '--etcd-compaction-interval=0',
        '--enable-priority-and-fairness=false',
        '--profiling=false',
        ...extra,
      ]);
    }
    case 'kafka': {
      const f = kafkaFiles(s);
      mkdirSync(f.data, { recursive: true });
      if (!existsSync(join(f.data, 'meta.properties'))) {
        say('kafka: formatting KRaft storage');
        try {
          execFileSync(
            'java',
            ['-cp', join(s.bins.kafkaJars, '*'), `-Dlog4j2.configurationFile=${f.log4j}`, 'kafka.tools.StorageTool']
              .concat(['format', '--standalone', '-t', s.kafkaClusterId, '-c', f.props, '--ignore-formatted'])
              .concat(scramFormatArgs(s)),
            { stdio: ['ignore', 'pipe', 'pipe'] },
          );
        } catch (e) {
          const err = e as { stdout?: Buffer; stderr?: Buffer };
          const msg = `${String(err.stderr ?? '')}${String(err.stdout ?? '')}`.trim().split('\n')[0];
          throw new StackError(`crbridge stack: formatting Kafka storage failed: ${msg}`);
        }
        writeFileSync(scramMarker, `${KAFKA_SASL_USERS.scram}\n`);
      }
      return launch(name, 'java', [
        '-Xmx512m',
        '-Xms128m',
        '-XX:+UseG1GC',
        '-XX:MaxGCPauseMillis=20',
        '-Djava.awt.headless=true',
        `-Dlog4j2.configurationFile=${f.log4j}`,
        '-cp',
        join(s.bins.kafkaJars, '*'),
        'kafka.Kafka',
        f.props,
      ]);
    }
    case 'jaeger':
      return launch(name, join(s.bins.jaeger, 'jaeger'), ['--config', jaegerConfig(s)]);
  }
}

// ---------------------------------------------------------------------------------------------
// Health.

function httpsGet(url: string, ca: Buffer, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, headers: { authorization: `Bearer ${token}` }, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
    req.end();
  });
}

async function httpOk(url: string): Promise<boolean> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(3000) });
    await r.body?.cancel();
    return r.status === 200;
  } catch {
    return false;
  }
}

/** True when the component answers a real request (not just a TCP connect). */
export async function healthy(name: ComponentName, s: State): Promise<boolean> {
  const p = s.ports;
  switch (name) {
    case 'etcd':
      try {
        const r = await fetch(`http://127.0.0.1:${p.etcd}/health`, { signal: AbortSignal.timeout(3000) });
        return r.status === 200 && ((await r.json()) as { health?: string }).health === 'true';
      } catch {
        return false;
      }
    case 'apiserver':
      try {
        const r = await httpsGet(
          `https://127.0.0.1:${p.apiserver}/readyz`,
          readFileSync(join(pkiDir, 'ca.crt')),
          s.adminToken,
        );
        return r.status === 200 && r.body.trim() === 'ok';
      } catch {
        return false;
      }
    case 'kafka': {
      const admin = new Kafka({
        clientId: 'crbridge-stack-health',
        brokers: [`127.0.0.1:${p.kafka}`],
        logLevel: logLevel.NOTHING,
        connectionTimeout: 2000,
        requestTimeout: 3000,
        retry: { retries: 0 },
      }).admin();
      try {
        await admin.connect();
        const c = await admin.describeCluster();
        return c.brokers.length > 0 && c.controller !== null;
      } catch {
        return false;
      } finally {
        await admin.disconnect().catch(() => {});
      }
    }
    case 'jaeger':
      return httpOk(`http://127.0.0.1:${p.jaegerQuery}/api/services`);
  }
}

const healthTimeoutMs: Record<ComponentName, number> = {
  etcd: 30_000,
  apiserver: 180_000,
  kafka: 120_000,
  jaeger: 60_000,
};

function logTail(name: ComponentName, lines = 8): string {
  try {
    return readFileSync(join(logsDir, `${name}.log`), 'utf8')
      .trimEnd()
      .split('\n')
      .slice(-lines)
      .join('\n');
  } catch {
    return '';
  }
}

async function waitHealthy(name: ComponentName, s: State, child?: ChildProcess): Promise<void> {
  const started = Date.now();
  let exited: string | undefined;
  child?.once('exit', (code, sig) => {
    exited = `exit ${code ?? sig}`;
  });
  while (Date.now() - started < healthTimeoutMs[name]) {
    if (await healthy(name, s)) {
      say(`${name}: healthy after ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return;
    }
    const pid = readPid(name);
    if (exited || (pid !== undefined && !isOurs(name, pid))) {
      process.stderr.write(`${logTail(name)}\n`);
      throw new StackError(
        `crbridge stack: ${name} stopped while starting (${exited ?? 'gone'}); see ${join(logsDir, `${name}.log`)}`,
      );
    }
    await sleep(name === 'kafka' ? 1000 : 500);
  }
  process.stderr.write(`${logTail(name)}\n`);
  throw new StackError(
    `crbridge stack: ${name} not healthy after ${healthTimeoutMs[name] / 1000} s; see ${join(logsDir, `${name}.log`)}`,
  );
}

function portOf(name: ComponentName, s: State): number {
  return { etcd: s.ports.etcd, apiserver: s.ports.apiserver, kafka: s.ports.kafka, jaeger: s.ports.jaegerQuery }[name];
}

/** Present once the SCRAM user's credentials exist in this Kafka data folder's metadata. */
const scramMarker = join(dataDir, 'kafka-scram-users');

/** `StorageTool format` arguments that store the SCRAM user's credentials in the bootstrap metadata. */
function scramFormatArgs(s: State): string[] {
  const pw = s.kafkaSasl.scramPassword;
  return ['SCRAM-SHA-256', 'SCRAM-SHA-512'].flatMap((m) => [
    '--add-scram',
    `${m}=[name=${KAFKA_SASL_USERS.scram},iterations=4096,password=${pw}]`,
  ]);
}

/**
 * Creates the SCRAM-SHA-256/512 credentials of the SCRAM user once per Kafka data folder when its
 * storage was formatted without them (by an older version of this tool), with kafka-configs'
 * ConfigCommand over the PLAINTEXT listener; they live in the KRaft metadata, so `down` removes them.
 */
function ensureScramUsers(s: State): void {
  if (existsSync(scramMarker)) return;
  const pw = s.kafkaSasl.scramPassword;
  // one mechanism per call: the broker refuses two credentials of one user in the same request
  for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-512']) {
    try {
      execFileSync(
        'java',
        [
          '-cp',
          join(s.bins.kafkaJars, '*'),
          `-Dlog4j2.configurationFile=${join(confDir, 'kafka-log4j2.xml')}`,
          'kafka.admin.ConfigCommand',
        ]
          .concat(['--bootstrap-server', `127.0.0.1:${s.ports.kafka}`, '--alter', '--entity-type', 'users'])
          .concat([
            '--entity-name',
            KAFKA_SASL_USERS.scram,
            '--add-config',
            `${mechanism}=[iterations=4096,password=${pw}]`,
          ]),
        { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 },
      );
    } catch (e) {
      const err = e as { stdout?: Buffer; stderr?: Buffer };
      const out = `${String(err.stderr ?? '')}${String(err.stdout ?? '')}`.split(pw).join('***');
      const msg =
        out
          .trim()
          .split('\n')
          .find((l) => l.includes('Exception')) ?? out.trim().split('\n')[0];
      throw new StackError(`crbridge stack: creating the Kafka ${mechanism} user failed: ${msg}`);
    }
  }
  writeFileSync(scramMarker, `${KAFKA_SASL_USERS.scram}\n`);
  say(`kafka: SCRAM-SHA-256/512 user ${KAFKA_SASL_USERS.scram} created`);
}

/** Starts one component unless it is already running and healthy; waits until it is healthy. */
async function ensureComponent(name: ComponentName, s: State): Promise<void> {
  const pid = alivePid(name);
  if (pid !== undefined) {
    const stale = name === 'kafka' && !readFileSync(join(confDir, 'kafka.properties'), 'utf8').includes('SSL://');
    if (stale) {
      say('kafka: running without the SASL and SSL listeners (set up by an older version of this tool); restarting it');
      await stopComponent(name);
    } else if (await healthy(name, s)) {
      say(`${name}: already running (pid ${pid}), healthy`);
      if (name === 'kafka') ensureScramUsers(s);
      return;
    } else {
      say(`${name}: pid ${pid} is running but not healthy; restarting it`);
      await stopComponent(name);
    }
  }
  const child = startProcess(name, s);
  say(`${name}: started (pid ${child.pid}, port ${portOf(name, s)})`);
  await waitHealthy(name, s, child);
  if (name === 'kafka') ensureScramUsers(s);
}

/** SIGTERM, then SIGKILL after a few seconds; only ever the pid this tool recorded. Idempotent. */
export async function stopComponent(name: ComponentName): Promise<void> {
  const pid = alivePid(name);
  if (pid !== undefined) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + (name === 'kafka' ? 15_000 : 8_000);
    while (isOurs(name, pid) && Date.now() < deadline) await sleep(200);
    if (isOurs(name, pid)) {
      say(`${name}: did not stop after SIGTERM; sending SIGKILL`);
      process.kill(pid, 'SIGKILL');
      while (isOurs(name, pid)) await sleep(100);
    }
    say(`${name}: stopped (pid ${pid})`);
  }
  rmSync(pidFile(name), { force: true });
}

// ---------------------------------------------------------------------------------------------
// Commands.

const lockFile = join(stackDir, '.lock');

/**
 * Runs `fn` holding `.stack/.lock` (pid inside), so two tools running `up` at once (a demo and a test
 * run) do not both start servers. A lock whose holder is dead is taken over; waits up to 5 minutes.
 */
async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  mkdirSync(stackDir, { recursive: true });
  const deadline = Date.now() + 300_000;
  let told = false;
  for (;;) {
    try {
      writeFileSync(lockFile, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number(readFileSync(lockFile, 'utf8').trim());
      let alive = false;
      try {
        process.kill(holder, 0);
        alive = holder !== process.pid;
      } catch {
        alive = false;
      }
      if (!alive) {
        rmSync(lockFile, { force: true });
        continue;
      }
      if (Date.now() > deadline)
        throw new StackError(`crbridge stack: ${lockFile} is held by pid ${holder} for 5 minutes`);
      if (!told) say(`waiting for another stack command (pid ${holder}) to finish`);
      told = true;
      await sleep(500);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lockFile, { force: true });
  }
}

/** Builds what is missing, starts what is not running, writes `.stack/env`. Idempotent. */
export function up(): Promise<Record<string, string>> {
  return withLock(upLocked);
}

async function upLocked(): Promise<Record<string, string>> {
  const t0 = Date.now();
  const bins = await ensureBuilt();
  checkJava();
  mkdirSync(stackDir, { recursive: true });
  let s = readState();
  if (!s) {
    s = await newState(bins);
  } else {
    s = await upgradeState(s);
    s.bins = bins;
  }
  writeFileSync(stateFile, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
  ensurePki(s);
  linkBins(s);
  writeEnv(s);
  const state = s;
  // etcd first; kafka and jaeger do not need it, so they start alongside.
  const others = Promise.all([ensureComponent('kafka', state), ensureComponent('jaeger', state)]);
  const kube = (async () => {
    await ensureComponent('etcd', state);
    await ensureComponent('apiserver', state);
  })();
  const results = await Promise.allSettled([kube, others]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  say(`stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s; env: ${envFile}`);
  return envVars(state);
}

/** Stops everything this tool started (by pid) and removes `.stack/` except the logs. */
export function down(): Promise<void> {
  return withLock(downLocked);
}

async function downLocked(): Promise<void> {
  const order: ComponentName[] = ['apiserver', 'jaeger', 'kafka', 'etcd'];
  for (const name of order) await stopComponent(name);
  if (existsSync(stackDir)) {
    for (const entry of readdirSync(stackDir)) {
      if (entry !== 'logs' && entry !== '.lock') rmSync(join(stackDir, entry), { recursive: true, force: true });
    }
  }
  say(`stack down (logs kept in ${logsDir})`);
}

export async function status(): Promise<ComponentStatus[]> {
  const s = readState();
  return Promise.all(
    COMPONENTS.map(async (name) => {
      const pid = readPid(name);
      const running = pid !== undefined && isOurs(name, pid);
      const ok = s !== undefined && running && (await healthy(name, s));
      return {
        name,
        pid,
        running,
        healthy: ok,
        port: s ? portOf(name, s) : undefined,
        detail: !s ? 'not set up' : !running ? 'not running' : ok ? 'healthy' : 'running, NOT healthy',
      };
    }),
  );
}

/** True when every component is running and healthy and `.stack/env` exists. */
export async function isUp(): Promise<boolean> {
  if (!existsSync(envFile)) return false;
  return (await status()).every((c) => c.healthy);
}

function parseName(arg: string | undefined): ComponentName {
  if (!arg || !(COMPONENTS as readonly string[]).includes(arg)) {
    throw new StackError(`crbridge stack: NAME must be one of ${COMPONENTS.join(', ')} (got ${arg ?? 'nothing'})`);
  }
  return arg as ComponentName;
}

const usage = 'usage: node test/infra/stack.ts <up|down|status|start NAME|stop NAME|restart NAME>';

async function main(argv: string[]): Promise<number> {
  const [cmd, arg] = argv;
  switch (cmd) {
    case 'up':
      await up();
      return 0;
    case 'down':
      await down();
      return 0;
    case 'status': {
      const st = await status();
      for (const c of st) {
        const pid = c.running ? String(c.pid) : '-';
        process.stdout.write(
          `${c.name.padEnd(10)} pid ${pid.padEnd(8)} port ${String(c.port ?? '-').padEnd(6)} ${c.detail}\n`,
        );
      }
      process.stdout.write(`env: ${existsSync(envFile) ? envFile : '(none; run `npm run stack -- up`)'}\n`);
      return st.every((c) => c.healthy) ? 0 : 1;
    }
    case 'start':
    case 'stop':
    case 'restart': {
      const name = parseName(arg);
      const s = await upgradeState(requireState());
      writeEnv(s);
      await withLock(async () => {
        if (cmd !== 'start') await stopComponent(name);
        if (cmd !== 'stop') await ensureComponent(name, s);
      });
      return 0;
    }
    default:
      process.stderr.write(`${usage}\n`);
      return 2;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (e) {
    if (e instanceof StackError) process.stderr.write(`${e.message}\n`);
    else process.stderr.write(`crbridge stack: unexpected failure: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 1;
  }
}
