// The agent's HTTP endpoints, as kube-proxy serves them: /healthz and /livez on the healthz address
// (default 0.0.0.0:10256), /metrics on the metrics address (default 127.0.0.1:10249).

import { createServer, type Server } from 'node:http';
import type { RunnerStatus } from './proxy/runner.js';

export interface Health {
  healthy: boolean;
  lastUpdated: string;
  currentTime: string;
}

/**
 * Healthy when the last sync succeeded within `timeoutMs` (kube-proxy uses twice the sync period), or
 * when no sync has failed yet and the agent is still inside its first `timeoutMs` (starting up).
 */
export function health(status: RunnerStatus, startedAt: number, timeoutMs: number, now = Date.now()): Health {
  const last = status.lastSuccess;
  const healthy = last !== undefined ? now - last <= timeoutMs : now - startedAt <= timeoutMs && status.consecutiveFailures === 0;
  return { healthy, lastUpdated: new Date(last ?? startedAt).toISOString(), currentTime: new Date(now).toISOString() };
}

type Route = () => Promise<{ status: number; type: string; body: string }>;

/** Parses 'HOST:PORT' ('[::]:10256' for IPv6); throws a readable error. */
export function parseBindAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`"${text}" is not HOST:PORT`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** Serves `routes` on `bind`; resolves once listening (rejects on EADDRINUSE and the like). */
export function serve(bind: string, routes: Record<string, Route>): Promise<Server> {
  const { host, port } = parseBindAddress(bind);
  const server = createServer((req, res) => {
    const route = routes[(req.url ?? '/').split('?')[0]] as Route | undefined;
    if (!route || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(route ? 405 : 404).end();
      return;
    }
    route().then(
      (r) => res.writeHead(r.status, { 'content-type': r.type }).end(req.method === 'HEAD' ? undefined : r.body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      server.unref();
      resolve(server);
    });
  });
}
