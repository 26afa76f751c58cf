// The input of kipvs's nftables table: plain data, built by the caller from desired state (one entry per
// virtual server kipvs serves, the addresses bound on kube-ipvs0, the real servers' addresses) and
// flags. Nothing here knows about Kubernetes objects; lib/nft/render.ts turns it into one nft script.

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
