// An in-memory Source for unit tests: tests put and delete objects; changes are reported like the
// real sources report them (namespace/name keys, EndpointSlices carrying their Service).

import type { V1ConfigMap, V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { Change, Snapshot, Source } from '../../lib/sources/types.js';
import { objectKey } from '../../lib/proxy/desired.js';
import { SERVICE_NAME_LABEL } from '../../lib/sources/types.js';

type Obj = V1Service | V1EndpointSlice | V1ConfigMap | V1Node;

export class MemorySource implements Source {
  private readonly snap = { services: new Map<string, V1Service>(), endpointSlices: new Map<string, V1EndpointSlice>() } as {
    services: Map<string, V1Service>;
    endpointSlices: Map<string, V1EndpointSlice>;
    node?: V1Node;
    configMap?: V1ConfigMap;
  };
  private listener: ((c: Change[]) => void) | undefined;
  isSynced = true;

  async start(onChange: (changes: Change[]) => void): Promise<void> {
    this.listener = onChange;
  }
  snapshot(): Snapshot {
    return this.snap;
  }
  synced(): boolean {
    return this.isSynced;
  }
  async stop(): Promise<void> {
    this.listener = undefined;
  }

  /** Adds or replaces objects (by kind and namespace/name) and reports the changes. */
  put(...objects: Obj[]): this {
    this.listener?.(objects.map((o) => this.set(o, false)));
    return this;
  }

  delete(...objects: Obj[]): this {
    this.listener?.(objects.map((o) => this.set(o, true)));
    return this;
  }

  private set(o: Obj, remove: boolean): Change {
    const key = objectKey(o);
    const kind = (o as { kind?: string }).kind;
    switch (kind) {
      case 'Service':
        if (remove) this.snap.services.delete(key);
        else this.snap.services.set(key, o as V1Service);
        return { kind, key };
      case 'EndpointSlice': {
        const svc = (o as V1EndpointSlice).metadata?.labels?.[SERVICE_NAME_LABEL];
        if (remove) this.snap.endpointSlices.delete(key);
        else this.snap.endpointSlices.set(key, o as V1EndpointSlice);
        return { kind, key, service: svc ? `${o.metadata?.namespace ?? 'default'}/${svc}` : undefined };
      }
      case 'ConfigMap':
        this.snap.configMap = remove ? undefined : (o as V1ConfigMap);
        return { kind, key };
      case 'Node':
        this.snap.node = remove ? undefined : (o as V1Node);
        return { kind, key: o.metadata?.name ?? '' };
      default:
        throw new Error(`MemorySource: unsupported kind ${kind}`);
    }
  }
}

/** Small builders for test objects. */
export function service(name: string, clusterIP: string, ports: Array<{ name?: string; port: number; protocol?: string }>, extra: Partial<V1Service> = {}): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    ...extra,
    metadata: { name, namespace: 'default', ...extra.metadata },
    spec: { clusterIP, clusterIPs: [clusterIP], ports, ...extra.spec },
  };
}

export function slice(serviceName: string, suffix: string, addresses: string[], ports: Array<{ name?: string; port: number; protocol?: string }>): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${serviceName}-${suffix}`, namespace: 'default', labels: { [SERVICE_NAME_LABEL]: serviceName } },
    addressType: addresses[0]?.includes(':') ? 'IPv6' : 'IPv4',
    ports,
    endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
  };
}

export function configMap(data: Record<string, string>): V1ConfigMap {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kipvs', namespace: 'kube-system' }, data };
}
