// healthCheckNodePort servers: for each LoadBalancer Service with externalTrafficPolicy Local, an HTTP
// server on its healthCheckNodePort that tells the cloud load balancer whether this node has local
// endpoints, answering as kube-proxy's pkg/proxy/healthcheck (service_health.go) does: any path, 200
// when the Service has local endpoints and the proxy is healthy, else 503, with its JSON body and
// headers. This module owns those servers and nothing else: update() diffs the wanted ports against
// the open ones, opens and closes only the difference and never restarts a server that stays.
//
// Servers listen in the agent's target network namespace. A listening socket belongs to the namespace
// of the thread that creates it, so it is created synchronously inside withNetns(): Node creates the
// socket synchronously in listen(port) without a host, but with a host (even a numeric one) it first
// goes through dns.lookup, which answers on a later tick, outside the namespace. So the servers listen
// on every address of the namespace (IPv6 '::' dual-stack, or 0.0.0.0 where IPv6 is off), like
// kube-proxy without --nodeport-addresses; there is no bind address option.

import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Logger } from './log.js';
import { withNetns } from './netns.js';

export interface HealthCheckWant {
  /** The Service, 'namespace/name'. */
  service: string;
  /** This node's ready endpoints of the Service. */
  localEndpoints: number;
}

/** A healthCheckNodePort that could not be opened. */
export interface HealthCheckError {
  service: string;
  port: number;
  reason: string;
}

interface Open {
  want: HealthCheckWant;
  server: Server;
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
  /** Last failure per port, so the retry at every sync logs a failure once until it changes. */
  private readonly failing = new Map<number, string>();
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
    return [...this.open.keys()].sort((a, b) => a - b);
  }

  /**
   * Makes the open servers exactly `want` (port → Service and its local endpoint count): closes the
   * ports no longer wanted, opens the new ones, and for ports that stay only updates what they answer.
   * Idempotent; calls run one after the other. A port that cannot be bound is logged naming the
   * Service and port (once until the reason changes), returned, and retried at the next update; the
   * other ports are unaffected. Never rejects.
   */
  update(want: ReadonlyMap<number, HealthCheckWant>): Promise<HealthCheckError[]> {
    const run = this.queue.then(() => this.apply(new Map(want)));
    this.queue = run;
    return run;
  }

  /** Closes every server (agent stop). */
  close(): Promise<HealthCheckError[]> {
    return this.update(new Map());
  }

  private async apply(want: Map<number, HealthCheckWant>): Promise<HealthCheckError[]> {
    for (const [port, o] of this.open) {
      if (want.has(port)) continue;
      this.open.delete(port);
      this.log.info(`closing healthCheckNodePort ${port} of Service ${o.want.service}`, { object: o.want.service, port });
      o.server.close();
      o.server.closeAllConnections();
    }
    for (const port of this.failing.keys()) if (!want.has(port)) this.failing.delete(port);
    const opening: Promise<HealthCheckError | undefined>[] = [];
    for (const [port, w] of want) {
      const o = this.open.get(port);
      if (o) o.want = w;
      else opening.push(this.listen(port, w));
    }
    return (await Promise.all(opening)).filter((e): e is HealthCheckError => e !== undefined);
  }

  private listen(port: number, want: HealthCheckWant): Promise<HealthCheckError | undefined> {
    const entry: Open = { want, server: createServer((req, res) => this.answer(entry, res)) };
    return new Promise((resolve) => {
      const server = entry.server;
      server.once('error', (err: NodeJS.ErrnoException) => {
        const reason = err.code ?? err.message;
        if (this.failing.get(port) !== reason) {
          this.failing.set(port, reason);
          this.log.error(`Service ${entry.want.service}: cannot serve its healthCheckNodePort ${port}: ${err.message}`, {
            object: entry.want.service,
            port,
          });
        }
        resolve({ service: entry.want.service, port, reason });
      });
      server.once('listening', () => {
        server.on('error', (err) => this.log.error(`healthCheckNodePort ${port} of Service ${entry.want.service}: ${err.message}`));
        server.unref();
        this.failing.delete(port);
        this.open.set(port, entry);
        this.log.info(`serving healthCheckNodePort ${port} for Service ${entry.want.service}`, { object: entry.want.service, port });
        resolve(undefined);
      });
      // No host: the socket is created (and bound) synchronously, here, inside the namespace.
      try {
        withNetns(this.netns, () => server.listen(port));
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
