// The input of kipvs's nftables table: plain data, built by the caller from desired state (one entry per
// virtual server kipvs serves, the addresses bound on kube-ipvs0, the real servers' addresses) and
// flags. Nothing here reads Kubernetes objects: modelFromDesired() takes desired state (lib/proxy/desired.ts);
// lib/nft/render.ts turns the model into one nft script.

import type { DesiredVirtualServer } from '../proxy/desired.js';

export type NftFamily = 4 | 6;

export interface NftService {
  family: NftFamily;
  address: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  port: number;
  kind: 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';
  /** externalTrafficPolicy: Local (external kinds): never masquerade; the backend sees the client's address. */
  local: boolean;
  /** LoadBalancer: spec.loadBalancerSourceRanges (CIDRs); empty = any source. */
  sourceRanges: readonly string[];
  /** Who asked for it ('namespace/name:port'), named in errors. */
  owner?: string;
}

export interface NftModel {
  services: readonly NftService[];
  /**
   * Every address bound on kube-ipvs0: new TCP/UDP/SCTP connections to one of them on a port/protocol that
   * is no service are rejected (kube-proxy #72236).
   */
  boundAddresses: ReadonlyArray<{ family: NftFamily; address: string }>;
  /**
   * Every real server's address: a packet from one of them to itself (a pod reaching itself through a
   * service, "hairpin") is masqueraded, as kube-proxy's KUBE-LOOP-BACK set does.
   */
  endpointAddresses: ReadonlyArray<{ family: NftFamily; address: string }>;
  /**
   * The node's own addresses (not those on kube-ipvs0): when a LoadBalancer's source ranges hold one of
   * them, the node itself may connect to that load-balancer IP, as with kube-proxy.
   */
  nodeAddresses: ReadonlyArray<{ family: NftFamily; address: string }>;
  /** Pod CIDRs (--cluster-cidr, may be empty): ClusterIP traffic from outside them is masqueraded. */
  clusterCIDRs: readonly string[];
  /** --masquerade-all: masquerade all traffic to services. */
  masqueradeAll: boolean;
}

export const EMPTY_MODEL: NftModel = { services: [], boundAddresses: [], endpointAddresses: [], nodeAddresses: [], clusterCIDRs: [], masqueradeAll: false };

/** What the agent knows after computing desired state: its virtual servers and the addresses around them. */
export interface DesiredForNft {
  virtualServers: Iterable<Pick<DesiredVirtualServer, 'service' | 'destinations' | 'kind' | 'local' | 'sourceRanges' | 'owner'>>;
  /** The addresses bound (or about to be) on kube-ipvs0. */
  boundAddresses: Iterable<{ family: NftFamily; address: string }>;
  /** The node's addresses on its other interfaces. */
  nodeAddresses: Iterable<{ family: NftFamily; address: string }>;
  clusterCIDRs: readonly string[];
  masqueradeAll: boolean;
}

/** What every element's spelling depends on, besides its own part: changes only on full syncs. */
export type NftGlobals = Pick<NftModel, 'nodeAddresses' | 'clusterCIDRs' | 'masqueradeAll'>;

/**
 * One contributor's share of the model (a virtual server, or one address bound on kube-ipvs0): the unit
 * an incremental update replaces (lib/nft/incremental.ts). A model is itself a part, the union of all.
 */
export type NftPart = Pick<NftModel, 'services' | 'boundAddresses' | 'endpointAddresses'>;

type VirtualServerForNft = DesiredForNft['virtualServers'] extends Iterable<infer V> ? V : never;

/** A virtual server's part (pure): its service (none for fwmark ones, which kipvs never creates) and its real servers' addresses. */
export function partFromVirtualServer(v: VirtualServerForNft): NftPart {
  const { service: s } = v;
  const endpointAddresses = v.destinations.map((e) => ({ family: e.family, address: e.address }));
  if (s.fwmark || (s.protocol !== 'TCP' && s.protocol !== 'UDP' && s.protocol !== 'SCTP')) return { services: [], boundAddresses: [], endpointAddresses };
  return {
    services: [{ family: s.family, address: s.address, protocol: s.protocol, port: s.port, kind: v.kind, local: v.local, sourceRanges: v.sourceRanges, owner: v.owner }],
    boundAddresses: [],
    endpointAddresses,
  };
}

/** A bound address's part (pure). */
export function partFromAddress(a: { family: NftFamily; address: string }): NftPart {
  return { services: [], boundAddresses: [{ family: a.family, address: a.address }], endpointAddresses: [] };
}

const unique = (list: Iterable<{ family: NftFamily; address: string }>) => [...new Map([...list].map((a) => [a.address, { family: a.family, address: a.address }])).values()];

/** The model the parts add up to (pure): services in order, addresses once each. */
export function modelFromParts(globals: NftGlobals, parts: Iterable<NftPart>): NftModel {
  const services: NftService[] = [];
  const bound: Array<{ family: NftFamily; address: string }> = [];
  const endpoints: Array<{ family: NftFamily; address: string }> = [];
  for (const p of parts) {
    services.push(...p.services);
    bound.push(...p.boundAddresses);
    endpoints.push(...p.endpointAddresses);
  }
  return {
    services,
    boundAddresses: unique(bound),
    endpointAddresses: unique(endpoints),
    nodeAddresses: unique(globals.nodeAddresses),
    clusterCIDRs: globals.clusterCIDRs,
    masqueradeAll: globals.masqueradeAll,
  };
}

/**
 * The table's model from desired state (pure): one service per virtual server (fwmark ones, which kipvs
 * never creates, are left out), every real server's address once, addresses once each.
 */
export function modelFromDesired(d: DesiredForNft): NftModel {
  const parts = [...[...d.virtualServers].map(partFromVirtualServer), ...[...d.boundAddresses].map(partFromAddress)];
  return modelFromParts({ nodeAddresses: [...d.nodeAddresses], clusterCIDRs: d.clusterCIDRs, masqueradeAll: d.masqueradeAll }, parts);
}
