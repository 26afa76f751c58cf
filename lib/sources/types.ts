// What the reconciler reads the cluster through: a Source keeps the current Services, EndpointSlices,
// this node's Node and the agent's ConfigMap, and says which objects changed. Two implementations:
// informers against an API server (sources/kube.ts) and a directory of YAML files (sources/dir.ts).

import type { V1ConfigMap, V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';

/** The label an EndpointSlice names its Service by. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node' | 'ConfigMap';

/** A change to one object. For EndpointSlices, `service` is the owning service's namespace/name. */
export interface Change {
  kind: ObjectKind;
  /** namespace/name (name alone for cluster-scoped Node). */
  key: string;
  /** For an EndpointSlice: the namespace/name of its service (label kubernetes.io/service-name). */
  service?: string;
}

/** An object the source could not read (bad YAML, wrong kind); named so an operator can find it. */
export interface SourceError {
  /** e.g. 'file manifests/examples/bad.yaml' or 'Service default/web'. */
  object: string;
  reason: string;
}

export interface Snapshot {
  services: ReadonlyMap<string, V1Service>;
  /** Keyed namespace/name of the slice. */
  endpointSlices: ReadonlyMap<string, V1EndpointSlice>;
  node?: V1Node;
  configMap?: V1ConfigMap;
}

export interface Source {
  /**
   * Starts listing and watching. `onChange` is called for every change that differs from what the
   * source already held (no-op updates are dropped), including changes seen during the initial list.
   * Resolves once Services, EndpointSlices and the agent's ConfigMap (when one is configured) have
   * completed their first list.
   */
  start(onChange: (changes: Change[]) => void, onError?: (err: SourceError) => void): Promise<void>;
  /** The current objects (the same maps are updated in place as changes arrive: read, don't keep). */
  snapshot(): Snapshot;
  /** True once Services, EndpointSlices and the configured ConfigMap have completed their first list. */
  synced(): boolean;
  stop(): Promise<void>;
}
