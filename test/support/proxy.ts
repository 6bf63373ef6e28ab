/**
 * A TCP proxy for failure tests: forwards connections to a target (TLS passes through untouched)
 * and can `stall()` every open connection — it stops forwarding in both directions WITHOUT closing
 * anything, like a wedged load balancer or NAT — while new connections keep working. `cut()`
 * destroys open connections; `close()` stops the proxy. `closedPort()`: a loopback port with
 * nothing listening (connections to it are refused).
 */
import net from 'node:net';

/** A loopback port with nothing listening. */
export async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

export class StallProxy {
  private readonly server: net.Server;
  private readonly target: { host: string; port: number };
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket; stalled: boolean }>();
  /** Connections accepted so far. */
  accepted = 0;
  port = 0;

  constructor(targetHost: string, targetPort: number) {
    this.target = { host: targetHost, port: targetPort };
    this.server = net.createServer((client) => this.accept(client));
  }

  /** Starts listening on 127.0.0.1 and an ephemeral port; resolves with the port. */
  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  private accept(client: net.Socket): void {
    this.accepted++;
    const upstream = net.connect(this.target.port, this.target.host);
    const pair = { client, upstream, stalled: false };
    this.pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket) =>
      from.on('data', (chunk) => {
        if (!pair.stalled) to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  }

  /** Open connections right now. */
  get open(): number {
    return this.pairs.size;
  }

  /** Silently drops all further bytes of every currently open connection; the sockets stay open. */
  stall(): number {
    for (const p of this.pairs) p.stalled = true;
    return this.pairs.size;
  }

  /** Destroys every open connection (a reset). */
  cut(): void {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
