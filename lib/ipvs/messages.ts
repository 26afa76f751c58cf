// Mapping between kipvs' kernel values (kernel/types.ts) and IPVS attribute records (ipvs/schema.ts):
// addresses as 16-byte unions, ports big-endian, protocols and forwarding methods by number, the
// HASHED flag stripped and 64-bit stats preferred. Pure functions, tested on captured kernel bytes.

import ipaddr from 'ipaddr.js';
import type { AttrRecord, FlagsValue } from '../netlink/attrs.js';
import type {
  Destination,
  DestinationId,
  DestinationStatus,
  Family,
  ForwardMethod,
  Protocol,
  ServiceId,
  Stats,
  VirtualServer,
  VirtualServerStatus,
} from '../kernel/types.js';
import { AF_INET, AF_INET6, FWD_MASK, FwdMethod, IpProto, SvcFlag } from './schema.js';

export const familyToAf = (f: Family): number => (f === 4 ? AF_INET : AF_INET6);

export function afToFamily(af: number): Family {
  if (af === AF_INET) return 4;
  if (af === AF_INET6) return 6;
  throw new Error(`unsupported address family ${af}`);
}

export function protocolNumber(p: Protocol): number {
  if (p in IpProto) return IpProto[p as keyof typeof IpProto];
  const m = /^IPPROTO-(\d+)$/.exec(p);
  if (!m) throw new Error(`unknown protocol ${p}`);
  return Number(m[1]);
}

export function protocolName(n: number): Protocol {
  for (const [name, num] of Object.entries(IpProto)) if (num === n) return name as Protocol;
  return `IPPROTO-${n}`;
}

/** The 16-byte union nf_inet_addr: IPv4 in the first four bytes, zero padded. */
const DOTTED_QUAD = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function encodeAddress(family: Family, address: string): Buffer {
  const quad = family === 4 ? DOTTED_QUAD.exec(address) : null;
  if (quad && quad.slice(1).every((o) => Number(o) <= 255)) {
    const out = Buffer.alloc(16); // the hot path: every destination op carries two addresses
    for (let i = 0; i < 4; i++) out[i] = Number(quad[i + 1]);
    return out;
  }
  const addr = ipaddr.parse(address);
  if ((addr.kind() === 'ipv4') !== (family === 4)) throw new Error(`address ${address} is not IPv${family}`);
  const out = Buffer.alloc(16);
  Buffer.from(addr.toByteArray()).copy(out);
  return out;
}

export function decodeAddress(family: Family, bytes: Buffer | undefined): string {
  if (!bytes) return family === 4 ? '0.0.0.0' : '::';
  if (family === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`; // the hot path of every dump
  return ipaddr.fromByteArray([...bytes.subarray(0, 16)]).toString();
}

const forwardNames = Object.fromEntries(Object.entries(FwdMethod).map(([k, v]) => [v, k])) as Record<number, ForwardMethod>;

/** The attributes that name a service: AF + (FWMARK | PROTOCOL + ADDR + PORT). */
export function serviceIdAttrs(s: ServiceId): AttrRecord {
  const af = familyToAf(s.family);
  if (s.fwmark) return { af, fwmark: s.fwmark };
  return { af, protocol: protocolNumber(s.protocol), addr: encodeAddress(s.family, s.address), port: s.port };
}

/**
 * IPVS_SVC_ATTR_NETMASK is a u32 attribute, but for IPv4 it carries the mask in network byte order
 * (ipvsadm puts inet_aton's s_addr there; the kernel compares it with addresses as __be32). For IPv6
 * it is the prefix length in host order. kipvs keeps an IPv4 mask as a plain number, 0xffffff00 = /24.
 */
function netmaskWire(family: Family, netmask: number): number {
  if (family === 6) return netmask;
  const b = Buffer.alloc(4);
  b.writeUInt32BE(netmask >>> 0);
  return b.readUInt32LE(0);
}

/** Everything NEW/SET_SERVICE needs (the kernel answers EINVAL without sched, flags, timeout, netmask). */
export function serviceAttrs(s: VirtualServer): AttrRecord {
  const flags: FlagsValue = { flags: s.flags & ~SvcFlag.HASHED, mask: 0xffffffff };
  return {
    ...serviceIdAttrs(s),
    schedName: s.scheduler,
    flags,
    timeout: s.timeout,
    netmask: netmaskWire(s.family, s.netmask),
    ...(s.peName ? { peName: s.peName } : {}),
  };
}

export function destinationIdAttrs(d: DestinationId): AttrRecord {
  return { addr: encodeAddress(d.family, d.address), port: d.port, addrFamily: familyToAf(d.family) };
}

export function destinationAttrs(d: Destination): AttrRecord {
  return {
    ...destinationIdAttrs(d),
    fwdMethod: FwdMethod[d.forward],
    weight: d.weight,
    uThresh: d.upperThreshold,
    lThresh: d.lowerThreshold,
  };
}

const STAT_FIELDS = ['conns', 'inPackets', 'outPackets', 'inBytes', 'outBytes', 'cps', 'inPps', 'outPps', 'inBps', 'outBps'] as const;

/** STATS64 when the kernel sent it (≥ 4.x), else the 32-bit STATS widened. */
export function decodeStats(rec: AttrRecord): Stats {
  const src = (rec.stats64 ?? rec.stats ?? {}) as AttrRecord;
  const out = {} as Stats;
  for (const f of STAT_FIELDS) out[f] = BigInt((src[f] as number | bigint | undefined) ?? 0);
  return out;
}

export function decodeService(rec: AttrRecord): VirtualServerStatus {
  const family = afToFamily(rec.af as number);
  const fwmark = (rec.fwmark as number | undefined) ?? 0;
  const flags = rec.flags as FlagsValue | undefined;
  return {
    family,
    protocol: protocolName((rec.protocol as number | undefined) ?? 0),
    address: decodeAddress(family, rec.addr as Buffer | undefined),
    port: (rec.port as number | undefined) ?? 0,
    fwmark,
    scheduler: (rec.schedName as string | undefined) ?? '',
    flags: (flags?.flags ?? 0) & ~SvcFlag.HASHED,
    timeout: (rec.timeout as number | undefined) ?? 0,
    netmask: netmaskWire(family, (rec.netmask as number | undefined) ?? 0),
    peName: (rec.peName as string | undefined) ?? '',
    stats: decodeStats(rec),
  };
}

/** A destination as dumped; `serviceFamily` is used when the kernel predates DEST_ADDR_FAMILY. */
export function decodeDestination(rec: AttrRecord, serviceFamily: Family): DestinationStatus {
  const family = rec.addrFamily !== undefined ? afToFamily(rec.addrFamily as number) : serviceFamily;
  return {
    family,
    address: decodeAddress(family, rec.addr as Buffer | undefined),
    port: (rec.port as number | undefined) ?? 0,
    forward: forwardNames[((rec.fwdMethod as number | undefined) ?? 0) & FWD_MASK] ?? 'masq',
    weight: (rec.weight as number | undefined) ?? 0,
    upperThreshold: (rec.uThresh as number | undefined) ?? 0,
    lowerThreshold: (rec.lThresh as number | undefined) ?? 0,
    activeConns: (rec.activeConns as number | undefined) ?? 0,
    inactiveConns: (rec.inactConns as number | undefined) ?? 0,
    persistConns: (rec.persistConns as number | undefined) ?? 0,
    stats: decodeStats(rec),
  };
}

/** '1.2.1' from IPVS_INFO_ATTR_VERSION 0x010201. */
export function formatVersion(v: number): string {
  return `${(v >> 16) & 0xff}.${(v >> 8) & 0xff}.${v & 0xff}`;
}
