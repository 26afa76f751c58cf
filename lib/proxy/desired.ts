// Desired state: a pure function of (Service, its EndpointSlices, config) → the virtual servers, real
// servers and VIPs that Service needs. Nothing here touches the kernel. Bad input is an error naming
// the object; a bad port skips that port, a bad Service skips the Service, a bad endpoint is dropped.
// Objects are untyped JSON: each field's shape is checked before it is read, and nothing the kernel
// would refuse is asked of it.

import type { V1EndpointSlice, V1Service, V1ServicePort } from '@kubernetes/client-node';
import ipaddr from 'ipaddr.js';
import { hostNetmask, isDottedQuad, sameRealServer, sameVirtualServer, serviceKey } from '../kernel/ids.js';
import type { Destination, Family, LinkAddress, Protocol, VirtualServer } from '../kernel/types.js';
import { isScheduler, schedulerFlagBits, splitList, type ProxyConfig } from './config.js';

export const ANNOTATION_SCHEDULER = 'kipvs.io/scheduler';
export const ANNOTATION_SCHEDULER_FLAGS = 'kipvs.io/scheduler-flags';
const DEFAULT_AFFINITY_TIMEOUT = 10800;
const MAX_AFFINITY_TIMEOUT = 86400;
const PERSISTENT = 0x1;

/** One virtual server of a Service port, with its real servers. */
export interface DesiredVirtualServer {
  /** serviceKey(service): how the kernel and the desired state know this virtual server. */
  key: string;
  /** 'namespace/name:portName' (port number when unnamed): who asked for this virtual server. */
  owner: string;
  service: VirtualServer;
  /** Its real servers, unique by address:port. */
  destinations: Destination[];
  /**
   * The Service asked for a scheduler kipvs cannot use: an existing virtual server keeps the scheduler
   * (and flags) it has in the kernel; a new one gets the configured default.
   */
  keepScheduler?: boolean;
}

export interface ObjectError {
  /** e.g. 'Service default/web', 'EndpointSlice default/web-abc12'. */
  object: string;
  reason: string;
}

export interface ServiceResult {
  virtualServers: DesiredVirtualServer[];
  addresses: LinkAddress[];
  errors: ObjectError[];
  /** False when the Service as a whole could not be read: the caller keeps what it had for it. */
  valid: boolean;
}

const PROTOCOLS: readonly string[] = ['TCP', 'UDP', 'SCTP'];

/** A JSON object: not null, not an array. */
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** A value from the input, for a message: strings as they are, anything else as JSON. */
const shown = (v: unknown): string => (typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v)));

export const objectKey = (o: { metadata?: { namespace?: string; name?: string } }) =>
  `${shown(o.metadata?.namespace ?? 'default')}/${shown(o.metadata?.name ?? '')}`;

/**
 * An IP as Kubernetes writes it → family and canonical text; undefined for anything else (including
 * the short or octal IPv4 forms inet_aton would accept). Dotted quads, the hot path, skip the parser.
 */
function parseIp(text: string): { family: Family; address: string } | undefined {
  if (isDottedQuad(text)) return { family: 4, address: text };
  // No zone index (fe80::1%eth0): neither IPVS nor an interface address has a place for one.
  if (!text.includes(':') || text.includes('%') || !ipaddr.IPv6.isValid(text)) return undefined;
  return { family: 6, address: ipaddr.IPv6.parse(text).toString() };
}

/** 224.0.0.0/4 or ff00::/8 (ipaddr.js's 'multicast' range); dotted quads without the parser. */
function isMulticast(ip: { family: Family; address: string }): boolean {
  if (ip.family === 6) return ipaddr.IPv6.parse(ip.address).range() === 'multicast';
  const first = parseInt(ip.address, 10);
  return first >= 224 && first <= 239;
}

/**
 * Why the kernel refuses `ip` as a real server (IPv4: inet_addr_type must say unicast or local; IPv6:
 * ipv6_addr_type must say unicast, and link-local only when local), or undefined when it takes it.
 */
function notRealServer(ip: { family: Family; address: string }): string | undefined {
  if (ip.family === 4) {
    const first = parseInt(ip.address, 10);
    if (first === 0) return 'unspecified';
    if (first >= 224 && first <= 239) return 'multicast';
    return ip.address === '255.255.255.255' ? 'broadcast' : undefined;
  }
  const range = ipaddr.IPv6.parse(ip.address).range();
  return ['unspecified', 'multicast', 'linkLocal', 'ipv4Mapped'].includes(range) ? range : undefined;
}

/** How kipvs programs every real server: masquerading, weight 1, no connection thresholds. */
const MASQ = { forward: 'masq', weight: 1, upperThreshold: 0, lowerThreshold: 0 } as const;

const realServer = (family: Family, address: string, port: number): Destination => ({
  family, address, port, forward: MASQ.forward, weight: MASQ.weight, upperThreshold: MASQ.upperThreshold, lowerThreshold: MASQ.lowerThreshold,
});

/** Whether `d` is what realServer(family, address, port) makes. */
const isRealServer = (d: Destination, family: Family, address: string, port: number): boolean =>
  d.family === family && d.address === address && d.port === port &&
  d.forward === MASQ.forward && d.weight === MASQ.weight && d.upperThreshold === MASQ.upperThreshold && d.lowerThreshold === MASQ.lowerThreshold;

/**
 * Ready endpoints of `slices` for the Service port named `portName`, collapsed by address:port (first
 * one wins). Collapsing keys on the address strings per port number rather than on an 'address:port'
 * string built per endpoint: that string was most of the cost of a full recompute.
 * `previous`, this virtual server's real servers last time, is reused: while they come out the same
 * no new objects are made, and if all do it is returned itself. (After the first sync V8 allocates
 * these objects straight into the old generation, where an unchanged Service's copies would pile up
 * as garbage until a full collection.)
 */
function destinationsFor(
  portName: string,
  family: Family,
  slices: readonly V1EndpointSlice[],
  errors: ObjectError[],
  reported: Set<string>,
  previous: Destination[] = [],
): Destination[] {
  let out: Destination[] | undefined; // made at the first difference from `previous`
  let kept = 0; // until then, how many of `previous` came out again
  /** Addresses already in `out`, by port number (slices of one Service may disagree on it). */
  const taken = new Map<number, Set<string>>();
  for (const slice of slices) {
    if (slice.addressType !== (family === 4 ? 'IPv4' : 'IPv6')) continue;
    const report = (what: string, reason: string) => {
      const object = `EndpointSlice ${objectKey(slice)}`;
      if (!reported.has(`${object} ${what}`)) errors.push({ object, reason });
      reported.add(`${object} ${what}`);
    };
    const ports: unknown = slice.ports ?? [];
    const endpoints: unknown = slice.endpoints ?? [];
    if (!Array.isArray(ports)) {
      report('ports', `ports is not a list (${shown(ports)})`);
      continue;
    }
    if (!Array.isArray(endpoints)) {
      report('endpoints', `endpoints is not a list (${shown(endpoints)})`);
      continue;
    }
    const port = ports.find((p) => isObject(p) && (p.name ?? '') === portName) as NonNullable<V1EndpointSlice['ports']>[number] | undefined;
    if (!port) continue;
    if (port.port === undefined || !Number.isInteger(port.port) || port.port < 1 || port.port > 65535) {
      report('port', `port "${shown(portName)}" has an invalid number ${shown(port.port)}`);
      continue;
    }
    let addresses = taken.get(port.port);
    if (!addresses) taken.set(port.port, (addresses = new Set()));
    for (const ep of endpoints as unknown[]) {
      if (!isObject(ep)) {
        report('endpoint', `an endpoint is not an object (${shown(ep)})`);
        continue;
      }
      // Kubernetes: a nil ready condition means ready.
      if ((ep.conditions as { ready?: unknown } | null | undefined)?.ready === false) continue;
      const texts: unknown = ep.addresses ?? [];
      if (!Array.isArray(texts)) {
        report('addresses', `an endpoint's addresses is not a list (${shown(texts)})`);
        continue;
      }
      if (!texts.length) report('empty', 'an endpoint has no addresses');
      for (const text of texts as unknown[]) {
        const ip = typeof text === 'string' ? parseIp(text) : undefined;
        if (!ip || ip.family !== family) {
          report(`address ${shown(text)}`, `endpoint address "${shown(text)}" is not a valid IPv${family} address`);
          continue;
        }
        const refused = notRealServer(ip);
        if (refused) {
          report(`address ${shown(text)}`, `endpoint address "${shown(text)}" cannot be a real server (${refused})`);
          continue;
        }
        if (addresses.has(ip.address)) continue;
        addresses.add(ip.address);
        if (!out && kept < previous.length && isRealServer(previous[kept], family, ip.address, port.port)) kept++;
        else (out ??= previous.slice(0, kept)).push(realServer(family, ip.address, port.port));
      }
    }
  }
  return out ?? (kept === previous.length ? previous : previous.slice(0, kept));
}

/** Scheduler and flag bits for a Service: its annotations over the config. */
function scheduling(svc: V1Service, config: ProxyConfig, errors: ObjectError[], object: string) {
  const annotations: unknown = svc.metadata?.annotations;
  const ann: Record<string, unknown> = isObject(annotations) ? annotations : {};
  const keep = (reason: string) => {
    errors.push({ object, reason: `${reason}; keeping the current scheduler` });
    return { scheduler: config.scheduler, bits: schedulerFlagBits(config.scheduler, config.schedulerFlags), keep: true };
  };
  for (const key of [ANNOTATION_SCHEDULER, ANNOTATION_SCHEDULER_FLAGS]) {
    if (ann[key] !== undefined && typeof ann[key] !== 'string') return keep(`${key}: ${shown(ann[key])} is not a string`);
  }
  const wanted = (ann[ANNOTATION_SCHEDULER] as string | undefined)?.trim();
  let scheduler = config.scheduler;
  let flagNames = config.schedulerFlags;
  if (wanted) {
    if (!isScheduler(wanted)) return keep(`unknown scheduler "${wanted}" in ${ANNOTATION_SCHEDULER}`);
    scheduler = wanted;
    flagNames = [];
  }
  if (ann[ANNOTATION_SCHEDULER_FLAGS] !== undefined) flagNames = splitList(ann[ANNOTATION_SCHEDULER_FLAGS] as string);
  try {
    return { scheduler, bits: schedulerFlagBits(scheduler, flagNames), keep: false };
  } catch (err) {
    return keep(`${ANNOTATION_SCHEDULER_FLAGS}: ${(err as Error).message}`);
  }
}

/** What a virtual server of a Service is made of (virtualServer, isVirtualServer). */
interface ServiceSettings {
  ip: { family: Family; address: string };
  protocol: Protocol;
  port: number;
  sched: { scheduler: string; bits: number; keep: boolean };
  aff: { flags: number; timeout: number };
}

const virtualServer = ({ ip, protocol, port, sched, aff }: ServiceSettings): VirtualServer => ({
  family: ip.family,
  protocol,
  address: ip.address,
  port,
  fwmark: 0,
  scheduler: sched.scheduler,
  flags: aff.flags | sched.bits,
  timeout: aff.timeout,
  netmask: hostNetmask(ip.family),
  peName: '',
});

/** Whether `v` has what virtualServer(w) makes (and keepScheduler as w asks). */
function isVirtualServer(v: DesiredVirtualServer, { ip, protocol, port, sched, aff }: ServiceSettings): boolean {
  const s = v.service;
  return s.family === ip.family && s.protocol === protocol && s.address === ip.address && s.port === port && s.fwmark === 0 &&
    s.scheduler === sched.scheduler && s.flags === (aff.flags | sched.bits) && s.timeout === aff.timeout &&
    s.netmask === hostNetmask(ip.family) && s.peName === '' && (v.keepScheduler ?? false) === sched.keep;
}

/** Persistence flag and timeout from spec.sessionAffinity; undefined (with an error) when invalid. */
function affinity(svc: V1Service, errors: ObjectError[], object: string): { flags: number; timeout: number } | undefined {
  const mode = svc.spec?.sessionAffinity ?? 'None';
  if (mode === 'None') return { flags: 0, timeout: 0 };
  if (mode !== 'ClientIP') {
    errors.push({ object, reason: `unknown sessionAffinity "${shown(mode)}"` });
    return undefined;
  }
  const t = svc.spec?.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT;
  if (!Number.isInteger(t) || t < 1 || t > MAX_AFFINITY_TIMEOUT) {
    errors.push({ object, reason: `sessionAffinityConfig.clientIP.timeoutSeconds ${shown(t)} is not in 1..${MAX_AFFINITY_TIMEOUT}` });
    return undefined;
  }
  return { flags: PERSISTENT, timeout: t };
}

const sameDesiredServer = (a: DesiredVirtualServer, b: DesiredVirtualServer): boolean =>
  a === b ||
  (a.key === b.key && a.owner === b.owner && a.keepScheduler === b.keepScheduler &&
    sameVirtualServer(a.service, b.service) && sameList(a.destinations, b.destinations, sameRealServer));

const sameAddress = (a: LinkAddress, b: LinkAddress): boolean =>
  a.family === b.family && a.address === b.address && a.prefixLength === b.prefixLength;

function sameList<T>(a: readonly T[], b: readonly T[], same: (x: T, y: T) => boolean): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!same(a[i], b[i])) return false;
  return true;
}

/** Whether two results ask the kernel for the same virtual servers, real servers and VIPs, in the same order (errors aside). */
export const sameDesired = (a: ServiceResult, b: ServiceResult): boolean =>
  sameList(a.virtualServers, b.virtualServers, sameDesiredServer) && sameList(a.addresses, b.addresses, sameAddress);

/**
 * Everything one Service needs in the kernel. `slices` are the EndpointSlices labelled with the
 * Service's name (any order, possibly of both families). `previous`, the Service's last result, lends
 * its real-server lists where they come out unchanged (see destinationsFor).
 */
export function desiredForService(
  svc: V1Service,
  slices: readonly V1EndpointSlice[],
  config: ProxyConfig,
  previous?: ServiceResult,
): ServiceResult {
  const key = objectKey(svc);
  const object = `Service ${key}`;
  const errors: ObjectError[] = [];
  const none = (valid: boolean): ServiceResult => ({ virtualServers: [], addresses: [], errors, valid });
  const spec = svc.spec;
  if (!svc.metadata?.name) return (errors.push({ object, reason: 'metadata.name is missing' }), none(false));
  if (spec === undefined || spec === null) return (errors.push({ object, reason: 'spec is missing' }), none(false));
  if (!isObject(spec)) return (errors.push({ object, reason: `spec is not an object (${shown(spec)})` }), none(false));
  if (spec.type === 'ExternalName') return none(true);

  if (spec.clusterIPs != null && !Array.isArray(spec.clusterIPs)) {
    return (errors.push({ object, reason: `spec.clusterIPs is not a list (${shown(spec.clusterIPs)})` }), none(false));
  }
  const ipTexts: unknown[] = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP ? [spec.clusterIP] : [];
  if (ipTexts.length === 0 || ipTexts[0] === 'None') return none(true); // headless or not yet allocated
  const ips: Array<{ family: Family; address: string }> = [];
  for (const text of ipTexts) {
    const ip = typeof text === 'string' ? parseIp(text) : undefined;
    if (!ip) return (errors.push({ object, reason: `clusterIP "${shown(text)}" is not a valid IP address` }), none(false));
    if (ip.address === '0.0.0.0' || ip.address === '::' || isMulticast(ip)) {
      return (errors.push({ object, reason: `clusterIP "${text}" is not a unicast address` }), none(false));
    }
    if (ips.some((i) => i.family === ip.family)) {
      return (errors.push({ object, reason: `clusterIPs ${JSON.stringify(ipTexts)} has two addresses of one family` }), none(false));
    }
    ips.push(ip);
  }

  const ports: unknown = spec.ports ?? [];
  if (!Array.isArray(ports)) return (errors.push({ object, reason: `spec.ports is not a list (${shown(ports)})` }), none(false));
  const aff = affinity(svc, errors, object);
  if (!aff) return none(false);
  const sched = scheduling(svc, config, errors, object);

  const virtualServers: DesiredVirtualServer[] = [];
  const reported = new Set<string>();
  const seen = new Set<string>();
  for (const [i, entry] of (ports as unknown[]).entries()) {
    if (!isObject(entry)) {
      errors.push({ object, reason: `port ${i}: not an object (${shown(entry)})` });
      continue;
    }
    const p = entry as unknown as V1ServicePort;
    const portName = p.name ?? '';
    const label = `port ${shown(portName || i)}`;
    const protocol = p.protocol ?? 'TCP';
    if (!PROTOCOLS.includes(protocol)) {
      errors.push({ object, reason: `${label}: unknown protocol "${shown(protocol)}"` });
      continue;
    }
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
      errors.push({ object, reason: `${label}: port ${shown(p.port)} is not in 1..65535` });
      continue;
    }
    if (seen.has(`${protocol}/${p.port}`)) {
      errors.push({ object, reason: `${label}: ${protocol} port ${p.port} is listed twice` });
      continue;
    }
    seen.add(`${protocol}/${p.port}`);
    for (const ip of ips) {
      const wanted: ServiceSettings = { ip, protocol: protocol as Protocol, port: p.port, sched, aff };
      const owner = `${key}:${shown(portName || p.port)}`;
      const before = previous?.virtualServers.find((v) => v.service.port === p.port && v.service.protocol === protocol && v.service.address === ip.address);
      const destinations = destinationsFor(portName, ip.family, slices, errors, reported, before?.destinations);
      if (before && before.destinations === destinations && before.owner === owner && isVirtualServer(before, wanted)) {
        virtualServers.push(before); // unchanged: the very same object (see destinationsFor)
        continue;
      }
      const service = virtualServer(wanted);
      virtualServers.push({
        key: serviceKey(service),
        owner,
        service,
        destinations,
        ...(sched.keep ? { keepScheduler: true } : {}),
      });
    }
  }
  if (ports.length === 0) errors.push({ object, reason: 'spec.ports is empty' });
  const bound = new Set(virtualServers.map((v) => v.service.address));
  const addresses = ips
    .filter((ip) => bound.has(ip.address))
    .map((ip) => ({ family: ip.family, address: ip.address, prefixLength: ip.family === 4 ? 32 : 128 }));
  return { virtualServers, addresses, errors, valid: true };
}
