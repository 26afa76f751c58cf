// Fixtures for the Kubernetes-facing tests: wire-form objects, a recording logger, and waitFor, which
// polls a condition instead of sleeping a fixed time.

import type { WireObject } from './apiserver.js';

export function service(name: string, namespace = 'default', clusterIP = '10.96.0.10', port = 80): WireObject {
  return {
    metadata: { name, namespace },
    spec: { type: 'ClusterIP', clusterIP, clusterIPs: [clusterIP], ports: [{ name: 'http', protocol: 'TCP', port, targetPort: port }] },
  };
}

export function endpointSlice(name: string, svc: string, addresses: string[], namespace = 'default'): WireObject {
  return {
    metadata: { name, namespace, labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
  };
}

export function node(name: string, internalIP = '192.168.1.10'): WireObject {
  return { metadata: { name }, status: { addresses: [{ type: 'InternalIP', address: internalIP }] } };
}

export function configMap(namespace: string, name: string, data: Record<string, string>): WireObject {
  return { metadata: { name, namespace }, data };
}

export interface LogEntry { level: string; msg: string; meta?: Record<string, unknown> }

/** A logger that keeps what it is given (and prints nothing). */
export function recordingLogger(): { entries: LogEntry[]; logger: Record<'error' | 'warn' | 'info' | 'debug', (msg: string, meta?: Record<string, unknown>) => void> } {
  const entries: LogEntry[] = [];
  const at = (level: string) => (msg: string, meta?: Record<string, unknown>) => { entries.push({ level, msg, meta }); };
  return { entries, logger: { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') } };
}

/** Resolves when `cond` holds (polled every 5 ms); rejects naming `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
