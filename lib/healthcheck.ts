// healthCheckNodePort servers: for each LoadBalancer Service with externalTrafficPolicy Local, an HTTP
// server on its healthCheckNodePort that tells the cloud load balancer whether this node has local
// endpoints, answering as kube-proxy's pkg/proxy/healthcheck (service_health.go) does: any path, 200
// when the Service has local endpoints and the proxy is healthy, else 503, with its JSON body and
// headers. This module owns those servers and nothing else: update() diffs the wanted ports against
// the open ones, opens and closes only the difference and never restarts a server that stays.
//
// Where they listen is kube-proxy's rule (service_health.go): on every address of the node unless
// --nodeport-addresses is given (and is not a zero CIDR), then on each node address inside those CIDRs,
// one listener per address (none while no address matches). Unlike kube-proxy, which reads the
// addresses once at start, the listeners follow the node addresses the reconciler reads at every full
// sync: update() opens a listener on an address that appears and closes the one on an address that goes.
//
// Servers listen in the agent's target network namespace. A listening socket belongs to the namespace
// of the thread that creates it, so it is created synchronously inside withNetns(). Node creates the
// socket synchronously in listen(port) without a host (every address: IPv6 '::' dual-stack, or 0.0.0.0
// where IPv6 is off), but with a host, even a numeric one, listen() first goes through dns.lookup,
// which answers on a later tick, outside the namespace. So with --netns, for one address, the socket is
// created and bound by net's own _createServerHandle (what listen() calls after the lookup; the cluster
// primary uses it too; undocumented, so its absence is a clear error) inside withNetns(), and the server
// listens on that handle. Without --netns (the DaemonSet), listen({host, port}) does it.

import { createServer, type Server, type ServerResponse } from 'node:http';
import net from 'node:net';
import { getSystemErrorMap } from 'node:util';
import { hostPort } from './kernel/ids.js';
import type { Logger } from './log.js';
import { withNetns } from './netns.js';
import { parseCidrs } from './proxy/node.js';

export interface HealthCheckWant {
  /** The Service, 'namespace/name'. */
  service: string;
  /** This node's ready endpoints of the Service. */
  localEndpoints: number;
}

/** A healthCheckNodePort that could not be opened (on `address`, when not on every address). */
export interface HealthCheckError {
  service: string;
  port: number;
  address?: string;
  reason: string;
}

interface Open {
  want: HealthCheckWant;
  /** One server per address listened on; '' is every address. */
  servers: Map<string, Server>;
}

const EVERY = '';

/**
 * The addresses the servers listen on, as kube-proxy chooses them: every address (undefined) without
 * --nodeport-addresses or when one of its CIDRs is a zero CIDR (0.0.0.0/0, ::/0: kube-proxy's MatchAll),
 * else the node addresses inside them (`nodePortAddresses`, the reconciler's node context). The flag is
 * read once, here; the function returned runs after every sync. Pure.
 */
export function healthCheckAddresses(cidrs: readonly string[]): (nodePortAddresses: readonly { address: string }[]) => string[] | undefined {
  if (!cidrs.length || parseCidrs(cidrs).some(([, bits]) => bits === 0)) return () => undefined;
  return (nodePortAddresses) => [...new Set(nodePortAddresses.map((a) => a.address))];
}

/** net's own listen handle for one numeric address, created and bound synchronously (see the header). */
type CreateServerHandle = (address: string, port: number, addressType: 4 | 6) => object | number;
const createServerHandle = (net as unknown as { _createServerHandle: CreateServerHandle })._createServerHandle;

/** A failed bind (negative libuv errno) as Node reports a failed listen: code, errno, syscall, address, port. */
function listenError(errno: number, address: string, port: number): NodeJS.ErrnoException {
  const [code, text] = getSystemErrorMap().get(errno) ?? [`Unknown system error ${errno}`, 'unknown error'];
  return Object.assign(new Error(`listen ${code}: ${text} ${hostPort(address, port)}`), { code, errno, syscall: 'listen', address, port });
}

/** kube-proxy's body: tab-indented JSON (its template, dedented), so byte-identical to what it sends. */
export function healthCheckBody(want: HealthCheckWant, proxyHealthy: boolean): string {
  const slash = want.service.indexOf('/');
  const service = { namespace: want.service.slice(0, slash), name: want.service.slice(slash + 1) };
  return JSON.stringify({ service, localEndpoints: want.localEndpoints, serviceProxyHealthy: proxyHealthy }, null, '\t');
}

/**
 * What update() wants from per-Service results (namespace/name → a result whose `healthCheck` is set
 * for a LoadBalancer Service with externalTrafficPolicy Local, as desiredForService() computes it).
 * Two Services claiming one port: the first keeps it.
 */
export function healthCheckWant(
  results: Iterable<readonly [string, { healthCheck?: { port: number; localEndpoints: number } }]>,
): Map<number, HealthCheckWant> {
  const want = new Map<number, HealthCheckWant>();
  for (const [service, r] of results) {
    if (r.healthCheck && !want.has(r.healthCheck.port)) want.set(r.healthCheck.port, { service, localEndpoints: r.healthCheck.localEndpoints });
  }
  return want;
}

export class HealthCheckServers {
  private readonly log: Logger;
  private readonly netns: string | undefined;
  private readonly healthy: () => boolean;
  private readonly open = new Map<number, Open>();
  /** Last failure per listener (`port address`), so the retry at every sync logs a failure once until it changes. */
  private readonly failing = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();

  /**
   * @param opts.netns the namespace to listen in (undefined: the agent's own).
   * @param opts.healthy the proxy's own health (kube-proxy's serviceProxyHealthy): 503 while false.
   */
  constructor(opts: { logger: Logger; netns?: string; healthy?: () => boolean }) {
    this.log = opts.logger;
    this.netns = opts.netns;
    this.healthy = opts.healthy ?? (() => true);
  }

  /** Ports with a server listening, ascending. */
  ports(): number[] {
    return [...this.open].filter(([, o]) => o.servers.size).map(([port]) => port).sort((a, b) => a - b);
  }

  /** Every listener, 'address:port' ('*:port' on every address), sorted. */
  listeners(): string[] {
    return [...this.open].flatMap(([port, o]) => [...o.servers.keys()].map((a) => (a === EVERY ? `*:${port}` : hostPort(a, port)))).sort();
  }

  /**
   * Makes the open servers exactly `want` (port → Service and its local endpoint count), each port on
   * `addresses` (numeric IPs; undefined: every address, see healthCheckAddresses): closes the listeners
   * no longer wanted, opens the new ones, and for listeners that stay only updates what they answer.
   * Idempotent; calls run one after the other. A listener that cannot be bound is logged naming the
   * Service, port and address (once until the reason changes), returned, and retried at the next
   * update; the other listeners are unaffected. Never rejects.
   */
  update(want: ReadonlyMap<number, HealthCheckWant>, addresses?: readonly string[]): Promise<HealthCheckError[]> {
    const on = addresses === undefined ? [EVERY] : [...new Set(addresses)];
    const run = this.queue.then(() => this.apply(new Map(want), on));
    this.queue = run;
    return run;
  }

  /** Closes every server (agent stop). */
  close(): Promise<HealthCheckError[]> {
    return this.update(new Map());
  }

  private async apply(want: Map<number, HealthCheckWant>, addresses: string[]): Promise<HealthCheckError[]> {
    for (const [port, o] of this.open) {
      for (const [address, server] of o.servers) {
        if (want.has(port) && addresses.includes(address)) continue;
        o.servers.delete(address);
        this.log.info(`closing healthCheckNodePort ${port}${where(address)} of Service ${o.want.service}`, { object: o.want.service, port, address });
        server.close();
        server.closeAllConnections();
      }
      if (!want.has(port)) this.open.delete(port);
    }
    for (const key of this.failing.keys()) {
      const [port, address] = splitListener(key);
      if (!want.has(port) || !addresses.includes(address)) this.failing.delete(key);
    }
    const opening: Promise<HealthCheckError | undefined>[] = [];
    for (const [port, w] of want) {
      let o = this.open.get(port);
      if (o) o.want = w;
      else this.open.set(port, (o = { want: w, servers: new Map() }));
      for (const address of addresses) if (!o.servers.has(address)) opening.push(this.listen(port, address, o));
    }
    return (await Promise.all(opening)).filter((e): e is HealthCheckError => e !== undefined);
  }

  private listen(port: number, address: string, entry: Open): Promise<HealthCheckError | undefined> {
    const key = `${port} ${address}`;
    const server = createServer((req, res) => this.answer(entry, res));
    return new Promise((resolve) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const reason = err.code ?? err.message;
        if (this.failing.get(key) !== reason) {
          this.failing.set(key, reason);
          this.log.error(`Service ${entry.want.service}: cannot serve its healthCheckNodePort ${port}${where(address)}: ${err.message}`, {
            object: entry.want.service,
            port,
            address,
          });
        }
        resolve({ service: entry.want.service, port, ...(address === EVERY ? {} : { address }), reason });
      });
      server.once('listening', () => {
        server.on('error', (err) => this.log.error(`healthCheckNodePort ${port}${where(address)} of Service ${entry.want.service}: ${err.message}`));
        server.unref();
        this.failing.delete(key);
        entry.servers.set(address, server);
        this.log.info(`serving healthCheckNodePort ${port}${where(address)} for Service ${entry.want.service}`, { object: entry.want.service, port, address });
        resolve(undefined);
      });
      // The socket is created and bound synchronously, here, inside the namespace (see the header).
      try {
        withNetns(this.netns, () => {
          if (address === EVERY) return server.listen(port);
          // In the agent's own namespace (the DaemonSet's case) the public API does it; the lookup is harmless.
          if (this.netns === undefined) return server.listen({ host: address, port });
          if (typeof createServerHandle !== 'function') throw new Error(`this Node has no net._createServerHandle to listen on ${address}`);
          const handle = createServerHandle(address, port, address.includes(':') ? 6 : 4);
          if (typeof handle === 'number') throw listenError(handle, address, port);
          return server.listen({ _handle: handle });
        });
      } catch (err) {
        server.emit('error', err);
      }
    });
  }

  private answer(entry: Open, res: ServerResponse): void {
    const { localEndpoints } = entry.want;
    const healthy = this.healthy();
    res.writeHead(localEndpoints > 0 && healthy ? 200 : 503, {
      'Content-Type': 'application/json',
      'X-Content-Type-Options': 'nosniff',
      'X-Load-Balancing-Endpoint-Weight': String(localEndpoints),
    });
    res.end(healthCheckBody(entry.want, healthy));
  }
}

const where = (address: string) => (address === EVERY ? '' : ` on ${address}`);

const splitListener = (key: string): [number, string] => {
  const space = key.indexOf(' ');
  return [Number(key.slice(0, space)), key.slice(space + 1)];
};
