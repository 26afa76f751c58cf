// The one kernel interface kipvs programs through, and the values that cross it.
// Three implementations sit behind it: the real netlink adapter (kernel/netlink.ts), an in-memory
// fake that answers with the kernel's errnos (kernel/fake.ts) and a faulty wrapper (kernel/faulty.ts).
// Values are normalised the way the kernel reports them: canonical address strings, scheduler flags
// without IP_VS_SVC_F_HASHED, netmask as an IPv4 mask number (0xffffffff) or an IPv6 prefix length (128).

import type { KernelError } from '../errors.js';

export type Family = 4 | 6;
/** L4 protocol of a virtual server; numbers other than TCP/UDP/SCTP (foreign services) keep their value. */
export type Protocol = 'TCP' | 'UDP' | 'SCTP' | `IPPROTO-${number}`;
export type ForwardMethod = 'masq' | 'local' | 'tunnel' | 'droute';

/** Identity of an IPVS virtual server: AF + (FWMARK | PROTOCOL + ADDR + PORT). */
export interface ServiceId {
  family: Family;
  protocol: Protocol;
  /** Canonical address (ipaddr.js toString); '0.0.0.0' / '::' for fwmark services. */
  address: string;
  port: number;
  /** Non-zero for firewall-mark services (created by other tools; kipvs never creates them). */
  fwmark: number;
}

/** A virtual server as programmed: identity plus the settings kipvs controls. */
export interface VirtualServer extends ServiceId {
  scheduler: string;
  /** IP_VS_SVC_F_* bits without HASHED (PERSISTENT 0x1, ONEPACKET 0x4, SCHED1..3 0x8/0x10/0x20). */
  flags: number;
  /** Persistence timeout in seconds (meaningful with the PERSISTENT flag). */
  timeout: number;
  /** Persistence granularity: IPv4 a mask as a number (0xffffffff = /32, 0xffffff00 = /24); IPv6 a prefix length (128). */
  netmask: number;
  /** Persistence engine name, e.g. 'sip'; '' when none. */
  peName: string;
}

/** Identity of a real server within its virtual server. */
export interface DestinationId {
  family: Family;
  address: string;
  port: number;
}

export interface Destination extends DestinationId {
  forward: ForwardMethod;
  weight: number;
  upperThreshold: number;
  lowerThreshold: number;
}

/** 64-bit counters and rates (IPVS_STATS_ATTR_*, from the STATS64 attribute when present). */
export interface Stats {
  conns: bigint;
  inPackets: bigint;
  outPackets: bigint;
  inBytes: bigint;
  outBytes: bigint;
  cps: bigint;
  inPps: bigint;
  outPps: bigint;
  inBps: bigint;
  outBps: bigint;
}

export interface DestinationStatus extends Destination {
  activeConns: number;
  inactiveConns: number;
  persistConns: number;
  stats: Stats;
}

export interface VirtualServerStatus extends VirtualServer {
  stats: Stats;
}

/** One dump of the whole IPVS table: every service (foreign ones included) with its destinations. */
export interface IpvsTable {
  services: Array<{ service: VirtualServerStatus; destinations: DestinationStatus[] }>;
}

export interface IpvsInfo {
  /** e.g. '1.2.1' */
  version: string;
  connTabSize: number;
}

/** IPVS connection timeouts in seconds; 0 in a set call leaves that value unchanged. */
export interface IpvsTimeouts {
  tcp: number;
  tcpFin: number;
  udp: number;
}

/** An address bound to a link, e.g. { family: 4, address: '10.0.0.1', prefixLength: 32 }. */
export interface LinkAddress {
  family: Family;
  address: string;
  prefixLength: number;
}

export interface LocalAddress extends LinkAddress {
  ifname: string;
  ifindex: number;
}

/** One write to the kernel. `apply` takes a list of these and reports per operation. */
export type KernelOp =
  | { kind: 'addService'; service: VirtualServer }
  | { kind: 'updateService'; service: VirtualServer }
  | { kind: 'deleteService'; service: ServiceId }
  | { kind: 'addDestination'; service: ServiceId; destination: Destination }
  | { kind: 'updateDestination'; service: ServiceId; destination: Destination }
  | { kind: 'deleteDestination'; service: ServiceId; destination: DestinationId }
  | { kind: 'addAddress'; ifname: string; address: LinkAddress }
  | { kind: 'deleteAddress'; ifname: string; address: LinkAddress };

export interface ApplyResult {
  /** Number of operations the kernel accepted. */
  applied: number;
  /** One entry per operation the kernel refused, in op order; each carries the op and its index. */
  errors: KernelError[];
}

export interface Kernel {
  /** IPVS version and connection table size. Throws KernelError('EAFNOSUPPORT'-like) with a hint when IPVS is missing. */
  ipvsInfo(): Promise<IpvsInfo>;
  /** Every virtual server in the namespace (one dump), foreign and fwmark ones included. */
  listServices(): Promise<VirtualServerStatus[]>;
  /** Destinations of one service (one dump). ESRCH if the service does not exist. */
  listDestinations(service: ServiceId): Promise<DestinationStatus[]>;
  /** Services then each service's destinations: the observed state of one sync. */
  dumpTable(): Promise<IpvsTable>;
  /**
   * Writes the ops in order, batched (many requests per netlink datagram). Never throws for a refused
   * op: each refusal is a KernelError in the result naming the op. Semantics follow the kernel:
   * addService of an existing service is EEXIST, update/delete of a missing service is ESRCH,
   * addDestination of an existing one is EEXIST, update/delete of a missing one is ENOENT.
   * Address ops are idempotent: adding a bound address or deleting a missing one succeeds.
   */
  apply(ops: readonly KernelOp[]): Promise<ApplyResult>;
  getTimeouts(): Promise<IpvsTimeouts>;
  setTimeouts(timeouts: IpvsTimeouts): Promise<void>;
  /** Creates the dummy link if missing (left down). Returns its ifindex. Idempotent. */
  ensureDummyLink(ifname: string): Promise<{ ifindex: number; created: boolean }>;
  /** Deletes the link; a missing link is not an error. */
  deleteLink(ifname: string): Promise<void>;
  /** Addresses bound to the link; ENODEV KernelError if the link does not exist. */
  listAddresses(ifname: string): Promise<LinkAddress[]>;
  /** Every address on every link of the namespace. */
  listLocalAddresses(): Promise<LocalAddress[]>;
  close(): Promise<void>;
}
