// An in-memory Kernel that answers like Linux IPVS (net/netfilter/ipvs/ip_vs_ctl.c, the generic
// netlink path, read against 6.x) and rtnetlink: the same errnos in the same order of checks, the
// same normalisation, and every answer on a later turn of the event loop. Tests start it from a state
// (inject, setConnections, setStats), read it synchronously (table, localAddresses) and count what
// the code under test wrote (counters).

import { setImmediate as nextTurn } from 'node:timers';
import ipaddr from 'ipaddr.js';
import { KernelError, errnoNumber } from '../errors.js';
import { canonicalAddress, describeOp, destinationKey as hostPortKey, serviceKey } from './ids.js';
import type {
  ApplyResult,
  Destination,
  DestinationId,
  DestinationStatus,
  Family,
  IpvsInfo,
  IpvsTable,
  IpvsTimeouts,
  Kernel,
  KernelOp,
  LinkAddress,
  LocalAddress,
  ServiceId,
  Stats,
  VirtualServer,
  VirtualServerStatus,
} from './types.js';

/** ':8080' and the like, one string per port number. */
const portSuffixes = new Map<number, string>();

/**
 * How the fake keys a real server within its service: IPv4 'address:port' made of the address and one
 * shared ':port' string (a template literal made each key of three strings, 7 MB at 10k × 10), IPv6 as
 * ids.ts writes it.
 */
function destinationKey(d: DestinationId): string {
  if (d.family === 6) return hostPortKey(d);
  let suffix = portSuffixes.get(d.port);
  if (suffix === undefined) portSuffixes.set(d.port, (suffix = `:${d.port}`));
  return d.address + suffix;
}

/** Schedulers a stock kernel ships (ip_vs_<name>.ko); 'none' binds no scheduler and is accepted too. */
export const SCHEDULERS: ReadonlySet<string> = new Set(
  ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq', 'fo', 'ovf', 'mh', 'twos', 'none'],
);
/** Persistence engines a stock kernel ships (ip_vs_pe_<name>.ko). */
const PERSISTENCE_ENGINES: ReadonlySet<string> = new Set(['sip']);
const SVC_F_HASHED = 0x2;
/** WEIGHT is a u32 on the wire but an int in the kernel: above this it reads as negative (ERANGE). */
const MAX_WEIGHT = 0x7fffffff;
/** ip_vs_set_timeout refuses values above INT_MAX / HZ (HZ = 250 on Debian kernels). */
const MAX_TIMEOUT = Math.floor(0x7fffffff / 250);

export type WriteKind = KernelOp['kind'] | 'setTimeouts' | 'createLink' | 'deleteLink';

export interface FakeCounters {
  /** apply() calls, empty ones included. */
  batches: number;
  /** Write requests (one netlink message each: every op, setTimeouts, link create/delete), refused ones included. */
  messages: number;
  /** Write requests by kind. */
  writes: Record<WriteKind, number>;
  /** Ops the fake refused with an errno. */
  refused: number;
  /**
   * Read requests as the real adapter makes them: dumpTable is one service dump plus one destination
   * dump per service; ensureDummyLink and deleteLink look the link up first.
   */
  reads: number;
}

/** A refusal inside the fake: becomes a KernelError naming the op (apply) or the call (reads). */
class Refusal {
  constructor(readonly code: string) {}
}
function refuse(code: string): never {
  throw new Refusal(code);
}

/** Stats are kept only once a test sets them (setStats): until then they read as all zero. */
interface ServiceEntry {
  service: VirtualServer;
  stats?: Stats;
  destinations: Map<string, DestinationEntry>;
}

/** Connection counts, like stats, are kept only once a test sets them (setConnections): until then they read as 0. */
type DestinationEntry = Destination & Partial<Pick<DestinationStatus, 'activeConns' | 'inactiveConns' | 'persistConns'>> & { stats?: Stats };

interface Link {
  ifindex: number;
  dummy: boolean;
  /** In the order they were added, by addressKey. */
  addresses: Map<string, LinkAddress>;
}

/**
 * How RTM_NEWADDR / RTM_DELADDR find a bound address: an IPv4 address can be bound once per prefix
 * length, an IPv6 address only once (adding it with another prefix is EEXIST).
 */
const addressKey = (a: LinkAddress): string => (a.family === 6 ? a.address : `${a.address}/${a.prefixLength}`);
const addressMap = (...list: LinkAddress[]) => new Map(list.map((a) => [addressKey(a), a]));

const zeroStats = (): Stats => ({
  conns: 0n, inPackets: 0n, outPackets: 0n, inBytes: 0n, outBytes: 0n,
  cps: 0n, inPps: 0n, outPps: 0n, inBps: 0n, outBps: 0n,
});

// Entries and what reads hand out are object literals written field by field: V8 gives `{ ...x, more }`
// about three times the memory of the same object written out.

/**
 * What a read hands out for a service: a fresh object with its own stats, or with `zero` (one all-zero
 * Stats shared by the entries of one read, still not the kernel's) when none were ever set.
 */
const serviceStatus = ({ service: s, stats }: ServiceEntry, zero = zeroStats()): VirtualServerStatus => ({
  family: s.family, protocol: s.protocol, address: s.address, port: s.port, fwmark: s.fwmark,
  scheduler: s.scheduler, flags: s.flags, timeout: s.timeout, netmask: s.netmask, peName: s.peName,
  stats: stats ? { ...stats } : zero,
});

/** What a read hands out for a destination: a fresh object with its own stats, or `zero` as for serviceStatus. */
const destinationStatus = (d: DestinationEntry, zero = zeroStats()): DestinationStatus => ({
  family: d.family, address: d.address, port: d.port,
  forward: d.forward, weight: d.weight, upperThreshold: d.upperThreshold, lowerThreshold: d.lowerThreshold,
  activeConns: d.activeConns ?? 0, inactiveConns: d.inactiveConns ?? 0, persistConns: d.persistConns ?? 0,
  stats: d.stats ? { ...d.stats } : zero,
});


const zeroCounters = (): FakeCounters => ({
  batches: 0,
  messages: 0,
  refused: 0,
  reads: 0,
  writes: {
    addService: 0, updateService: 0, deleteService: 0,
    addDestination: 0, updateDestination: 0, deleteDestination: 0,
    addAddress: 0, deleteAddress: 0, setTimeouts: 0, createLink: 0, deleteLink: 0,
  },
});

/** Canonical text of an address of `family`; EINVAL for garbage or the other family (the adapter cannot encode it). */
function canonical(family: Family, address: string): string {
  let parsed: { family: Family; address: string } | undefined;
  try {
    parsed = canonicalAddress(address);
  } catch {
    refuse('EINVAL');
  }
  if (parsed.family !== family) refuse('EINVAL');
  return parsed.address === address ? address : parsed.address; // one copy of the string when it already was canonical
}

const isU = (n: number, max: number): boolean => Number.isInteger(n) && n >= 0 && n <= max;

/** What the adapter cannot encode it refuses with EINVAL, before the kernel sees it. */
function checkPort(port: number): void {
  if (!isU(port, 0xffff)) refuse('EINVAL');
}

function checkFamily(family: number): void {
  if (family !== 4 && family !== 6) refuse('EINVAL');
}

/**
 * The identity the kernel keys a service by. A fwmark service is AF + FWMARK alone and is dumped
 * without PROTOCOL/ADDR/PORT, which the adapter reads back as 'IPPROTO-0', the zero address, port 0.
 */
function serviceId(s: ServiceId): ServiceId {
  checkFamily(s.family);
  if (!isU(s.fwmark, 0xffffffff)) refuse('EINVAL');
  if (s.fwmark) return { family: s.family, protocol: 'IPPROTO-0', address: s.family === 4 ? '0.0.0.0' : '::', port: 0, fwmark: s.fwmark };
  checkPort(s.port);
  return { family: s.family, protocol: s.protocol, address: canonical(s.family, s.address), port: s.port, fwmark: 0 };
}

/** NEW/SET_SERVICE settings: unknown scheduler or PE is ENOENT, an IPv6 netmask outside 1..128 EINVAL; HASHED is dropped. */
function serviceSettings(id: ServiceId, s: VirtualServer): VirtualServer {
  if (!SCHEDULERS.has(s.scheduler)) refuse('ENOENT');
  if (s.peName && !PERSISTENCE_ENGINES.has(s.peName)) refuse('ENOENT');
  if (id.family === 6 && !(s.netmask >= 1 && s.netmask <= 128)) refuse('EINVAL');
  return {
    family: id.family, protocol: id.protocol, address: id.address, port: id.port, fwmark: id.fwmark,
    scheduler: s.scheduler, flags: (s.flags & ~SVC_F_HASHED) >>> 0, timeout: s.timeout, netmask: s.netmask, peName: s.peName,
  };
}

function destinationId(d: DestinationId): DestinationId {
  checkFamily(d.family);
  checkPort(d.port);
  return { family: d.family, address: canonical(d.family, d.address), port: d.port };
}

/**
 * NEW/SET_DEST settings: a destination of the other family only by tunnel (EINVAL), weight and thresholds
 * ERANGE. `d` is an op's private copy (snapshot), returned itself when its address is canonical already.
 */
function destinationSettings(service: ServiceId, d: Destination): Destination {
  checkFamily(d.family); // destinationId's checks, without its object
  checkPort(d.port);
  const address = canonical(d.family, d.address);
  if (d.family !== service.family && d.forward !== 'tunnel') refuse('EINVAL');
  if (!isU(d.weight, MAX_WEIGHT)) refuse('ERANGE');
  if (d.lowerThreshold > d.upperThreshold) refuse('ERANGE');
  if (address === d.address) return d;
  return {
    family: d.family, address, port: d.port,
    forward: d.forward, weight: d.weight, upperThreshold: d.upperThreshold, lowerThreshold: d.lowerThreshold,
  };
}

/** A copy of what an op says of a real server: its identity, and its settings when the op has them. */
const destinationCopy = (d: Destination): Destination => ({
  family: d.family, address: d.address, port: d.port,
  forward: d.forward, weight: d.weight, upperThreshold: d.upperThreshold, lowerThreshold: d.lowerThreshold,
});

/**
 * The ops as apply() received them, so that a caller changing its objects afterwards changes nothing
 * (the real adapter has encoded them by then). A service shared by several ops is copied once.
 * (structuredClone did the same at 30x the time and twice the memory for a cold sync's batch.)
 */
function snapshot(ops: readonly KernelOp[]): KernelOp[] {
  const copies = new Map<ServiceId, ServiceId>();
  const copy = <S extends ServiceId>(s: S): S => {
    let c = copies.get(s);
    if (!c) copies.set(s, (c = { ...s }));
    return c as S;
  };
  return ops.map((op): KernelOp => {
    switch (op.kind) {
      case 'addAddress':
      case 'deleteAddress':
        return { ...op, address: { ...op.address } };
      case 'addService':
      case 'updateService':
        return { ...op, service: copy(op.service) };
      case 'deleteService':
        return { ...op, service: copy(op.service) };
      case 'addDestination':
      case 'updateDestination':
        // Written out: a cold sync sends 100,000 of these, and `{ ...x }` copies take about three times the memory.
        return { kind: op.kind, service: copy(op.service), destination: destinationCopy(op.destination) };
      case 'deleteDestination':
        return { kind: op.kind, service: copy(op.service), destination: { family: op.destination.family, address: op.destination.address, port: op.destination.port } };
    }
  });
}

function linkAddress(a: LinkAddress): LinkAddress {
  checkFamily(a.family);
  const address = canonical(a.family, a.address);
  if (!isU(a.prefixLength, a.family === 4 ? 32 : 128)) refuse('EINVAL');
  return { family: a.family, address, prefixLength: a.prefixLength };
}

export class FakeKernel implements Kernel {
  counters: FakeCounters = zeroCounters();
  private readonly services = new Map<string, ServiceEntry>();
  private readonly links = new Map<string, Link>([
    ['lo', { ifindex: 1, dummy: false, addresses: addressMap({ family: 4, address: '127.0.0.1', prefixLength: 8 }, { family: 6, address: '::1', prefixLength: 128 }) }],
  ]);
  private nextIfindex = 2;
  /** opEntry's last lookup: an op's service copy (shared by that service's ops in one apply) and its key. */
  private lastOpService: ServiceId | undefined;
  private lastOpKey = '';
  private readonly timeouts: IpvsTimeouts = { tcp: 900, tcpFin: 120, udp: 300 };
  private closed = false;

  // ---- Kernel -------------------------------------------------------------------------------

  /** Always { version: '1.2.1', connTabSize: 4096 }. */
  ipvsInfo(): Promise<IpvsInfo> {
    return this.later('ipvsInfo', () => {
      this.counters.reads++;
      return { version: '1.2.1', connTabSize: 4096 };
    });
  }

  /** Every service in insertion order (foreign and fwmark ones included), as copies. */
  listServices(): Promise<VirtualServerStatus[]> {
    return this.later('listServices', () => {
      this.counters.reads++;
      return [...this.services.values()].map((e) => serviceStatus(e));
    });
  }

  /** Destinations of one service in insertion order; rejects with KernelError ESRCH when it does not exist. */
  listDestinations(service: ServiceId): Promise<DestinationStatus[]> {
    const id = { ...service };
    return this.later(`listDestinations ${serviceKey(id)}`, () => {
      this.counters.reads++;
      return [...this.entry(id).destinations.values()].map((d) => destinationStatus(d));
    });
  }

  /** The whole table (copies); counts the reads the real adapter makes: 1 + one per service. */
  dumpTable(): Promise<IpvsTable> {
    return this.later('dumpTable', () => {
      this.counters.reads += 1 + this.services.size;
      return this.table();
    });
  }

  /**
   * Runs the ops in order on a later turn; a refused op leaves the state untouched and is reported as
   * a KernelError (errno, describeOp(op), op, index) while the following ops still run. Never rejects
   * for a refusal. Service/destination ops follow ip_vs_genl_set_cmd; address ops are idempotent.
   */
  apply(ops: readonly KernelOp[]): Promise<ApplyResult> {
    const sent = snapshot(ops);
    return this.later('apply', () => {
      this.counters.batches++;
      const errors: KernelError[] = [];
      sent.forEach((op, index) => {
        this.count(op.kind);
        const err = this.attempt(op, index, ops[index]);
        if (err) errors.push(err);
      });
      this.counters.refused += errors.length;
      return { applied: ops.length - errors.length, errors };
    });
  }

  getTimeouts(): Promise<IpvsTimeouts> {
    return this.later('getTimeouts', () => {
      this.counters.reads++;
      return { ...this.timeouts };
    });
  }

  /** A 0 leaves that value unchanged; a value below 0 or above INT_MAX/HZ rejects with EINVAL and changes nothing. */
  setTimeouts(timeouts: IpvsTimeouts): Promise<void> {
    const next = { ...timeouts };
    return this.later('setTimeouts', () => {
      this.count('setTimeouts');
      const keys = ['tcp', 'tcpFin', 'udp'] as const;
      if (!keys.every((k) => isU(next[k], MAX_TIMEOUT))) refuse('EINVAL');
      for (const k of keys) if (next[k]) this.timeouts[k] = next[k];
    });
  }

  /**
   * Idempotent; new links get increasing ifindexes from 2 and no addresses. A link of that name that
   * is not a dummy (e.g. 'lo') is EEXIST; an invalid name (empty, > 15 chars, '/', ':' or blank) EINVAL.
   */
  ensureDummyLink(ifname: string): Promise<{ ifindex: number; created: boolean }> {
    return this.later(`ensureDummyLink ${ifname}`, () => {
      this.counters.reads++;
      const existing = this.links.get(ifname);
      if (existing && !existing.dummy) refuse('EEXIST');
      if (existing) return { ifindex: existing.ifindex, created: false };
      if (!/^[^\s/:]{1,15}$/.test(ifname)) refuse('EINVAL');
      this.count('createLink');
      const ifindex = this.nextIfindex++;
      this.links.set(ifname, { ifindex, dummy: true, addresses: new Map() });
      return { ifindex, created: true };
    });
  }

  /** Removes the link and its addresses; a missing link is not an error; 'lo' cannot be deleted (EOPNOTSUPP). */
  deleteLink(ifname: string): Promise<void> {
    return this.later(`deleteLink ${ifname}`, () => {
      this.counters.reads++;
      if (!this.links.has(ifname)) return;
      this.count('deleteLink');
      if (ifname === 'lo') refuse('EOPNOTSUPP');
      this.links.delete(ifname);
    });
  }

  /** Addresses of one link (copies); rejects with ENODEV when the link does not exist. */
  listAddresses(ifname: string): Promise<LinkAddress[]> {
    return this.later(`listAddresses dev ${ifname}`, () => {
      this.counters.reads++;
      return [...this.link(ifname).addresses.values()].map((a) => ({ family: a.family, address: a.address, prefixLength: a.prefixLength }));
    });
  }

  listLocalAddresses(): Promise<LocalAddress[]> {
    return this.later('listLocalAddresses', () => {
      this.counters.reads++;
      return this.localAddresses();
    });
  }

  /** Later calls reject with EBADF, as on a closed socket. Idempotent. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => nextTurn(resolve));
    this.closed = true;
  }

  // ---- test hooks: synchronous, not counted ------------------------------------------------

  /** Applies ops at once and uncounted, e.g. services other tools made. Throws the first refusal (a KernelError). */
  inject(...ops: KernelOp[]): this {
    snapshot(ops).forEach((op, index) => {
      const err = this.attempt(op, index, ops[index]);
      if (err) throw err;
    });
    return this;
  }

  /** Sets a destination's connection counts (what graceful termination waits on). Throws ESRCH/ENOENT if missing. */
  setConnections(
    service: ServiceId,
    destination: DestinationId,
    conns: Partial<Pick<DestinationStatus, 'activeConns' | 'inactiveConns' | 'persistConns'>>,
  ): void {
    const d = this.hook(() => this.destination(service, destination), 'setConnections');
    d.activeConns = conns.activeConns ?? d.activeConns ?? 0;
    d.inactiveConns = conns.inactiveConns ?? d.inactiveConns ?? 0;
    d.persistConns = conns.persistConns ?? d.persistConns ?? 0;
  }

  /** Sets counters of a service, or of one of its destinations. Throws ESRCH/ENOENT if missing. */
  setStats(service: ServiceId, stats: Partial<Stats>, destination?: DestinationId): void {
    const target = this.hook(
      () => (destination ? this.destination(service, destination) : this.entry(service)),
      'setStats',
    );
    target.stats = { ...(target.stats ?? zeroStats()), ...stats };
  }

  /**
   * The IPVS table now, as dumpTable would return it. Entries whose stats were never set share one
   * all-zero Stats: a 10k-Service dump made 110,000 of them, the largest part of what a full resync
   * allocated, which the real adapter's dump does not add on top of its own decoding.
   */
  table(): IpvsTable {
    const zero = zeroStats();
    const services: IpvsTable['services'] = [];
    for (const e of this.services.values()) {
      const destinations: DestinationStatus[] = new Array(e.destinations.size); // of exact length (push leaves room for 16 more)
      let i = 0;
      for (const d of e.destinations.values()) destinations[i++] = destinationStatus(d, zero);
      services.push({ service: serviceStatus(e, zero), destinations });
    }
    return { services };
  }

  /** Every address of every link, IPv4 before IPv6 as an AF_UNSPEC rtnetlink dump lists them. */
  localAddresses(): LocalAddress[] {
    const all: LocalAddress[] = [];
    for (const family of [4, 6]) {
      for (const [ifname, l] of this.links) {
        for (const a of l.addresses.values()) {
          // Written out: `{ ...a, more }` takes about three times the memory, for each of 10,000 VIPs every full sync.
          if (a.family === family) all.push({ family: a.family, address: a.address, prefixLength: a.prefixLength, ifname, ifindex: l.ifindex });
        }
      }
    }
    return all;
  }

  resetCounters(): void {
    this.counters = zeroCounters();
  }

  // ---- internals ----------------------------------------------------------------------------

  /** Runs `fn` on a later turn of the real event loop (fake timers do not hold it), in call order. */
  private async later<T>(what: string, fn: () => T): Promise<T> {
    await new Promise<void>((resolve) => nextTurn(resolve));
    if (this.closed) throw new KernelError(errnoNumber('EBADF'), what);
    return this.hook(fn, what);
  }

  /** Runs `fn`, turning a refusal into a KernelError. */
  private hook<T>(fn: () => T, what: string): T {
    try {
      return fn();
    } catch (e) {
      throw e instanceof Refusal ? new KernelError(errnoNumber(e.code), what) : e;
    }
  }

  private count(kind: WriteKind): void {
    this.counters.messages++;
    this.counters.writes[kind]++;
  }

  /** Executes `op` (a private copy of `original`); the KernelError if refused. */
  private attempt(op: KernelOp, index: number, original: KernelOp): KernelError | undefined {
    try {
      this.exec(op);
      return undefined;
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      return new KernelError(errnoNumber(e.code), describeOp(original), original, index);
    }
  }

  private entry(service: ServiceId): ServiceEntry {
    return this.services.get(serviceKey(serviceId(service))) ?? refuse('ESRCH');
  }

  /** The entry an op's service names. Ops are the fake's own copies (snapshot), never changed: their key is worked out once per copy. */
  private opEntry(service: ServiceId): ServiceEntry {
    if (service !== this.lastOpService) {
      this.lastOpKey = serviceKey(serviceId(service));
      this.lastOpService = service;
    }
    return this.services.get(this.lastOpKey) ?? refuse('ESRCH');
  }

  private destination(service: ServiceId, destination: DestinationId): DestinationEntry {
    return this.entry(service).destinations.get(destinationKey(destinationId(destination))) ?? refuse('ENOENT');
  }

  private link(ifname: string): Link {
    return this.links.get(ifname) ?? refuse('ENODEV');
  }

  /**
   * inet_addr_type must say UNICAST or LOCAL (IPv4); ipv6_addr_type must say UNICAST and not
   * link-local unless the address is local (IPv6). Subnet broadcasts of local prefixes are not modelled.
   */
  private isUnicast({ family, address }: DestinationId): boolean {
    if (family === 4) {
      // 0/8, 224/4 and 255.255.255.255 (ipaddr.js's unspecified, multicast, broadcast) without parsing:
      // a cold sync of 100,000 real servers allocates nothing here.
      const first = parseInt(address, 10);
      return first !== 0 && (first < 224 || first > 239) && address !== '255.255.255.255';
    }
    const range = ipaddr.parse(address).range();
    if (range === 'linkLocal') return this.localAddresses().some((a) => a.address === address);
    return !['unspecified', 'multicast', 'ipv4Mapped'].includes(range);
  }

  private exec(op: KernelOp): void {
    switch (op.kind) {
      case 'addService': {
        const id = serviceId(op.service);
        if (this.services.has(serviceKey(id))) refuse('EEXIST');
        this.services.set(serviceKey(id), { service: serviceSettings(id, op.service), destinations: new Map() });
        return;
      }
      case 'updateService': {
        const entry = this.opEntry(op.service);
        entry.service = serviceSettings(entry.service, op.service);
        return;
      }
      case 'deleteService':
        this.services.delete(serviceKey(this.opEntry(op.service).service));
        return;
      case 'addDestination': {
        const entry = this.opEntry(op.service);
        const d = destinationSettings(entry.service, op.destination);
        const key = destinationKey(d);
        if (entry.destinations.has(key)) refuse('EEXIST');
        if (!this.isUnicast(d)) refuse('EINVAL');
        // A new real server (no connections yet): the op's private copy itself, so that a cold sync's
        // 100,000 copies become the table instead of garbage.
        entry.destinations.set(key, d);
        return;
      }
      case 'updateDestination': {
        const entry = this.opEntry(op.service);
        const d = destinationSettings(entry.service, op.destination);
        Object.assign(entry.destinations.get(destinationKey(d)) ?? refuse('ENOENT'), d);
        return;
      }
      case 'deleteDestination': {
        const entry = this.opEntry(op.service);
        const key = destinationKey(destinationId(op.destination));
        if (!entry.destinations.delete(key)) refuse('ENOENT');
        return;
      }
      case 'addAddress':
      case 'deleteAddress': {
        // RTM_NEWADDR answers EEXIST for an IPv6 address bound with any prefix, for IPv4 only with the
        // same prefix; RTM_DELADDR matches address and prefix. EEXIST / EADDRNOTAVAIL count as done.
        const link = this.link(op.ifname);
        const a = linkAddress(op.address);
        const key = addressKey(a);
        if (op.kind === 'addAddress') {
          if (!link.addresses.has(key)) link.addresses.set(key, a);
        } else if (link.addresses.get(key)?.prefixLength === a.prefixLength) {
          link.addresses.delete(key);
        }
        return;
      }
    }
  }
}
