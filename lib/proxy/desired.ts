// Desired state: a pure function of (Service, its EndpointSlices, config) → the virtual servers, real
// servers and VIPs that Service needs. Nothing here touches the kernel. Bad input is an error naming
// the object; a bad port skips that port, a bad Service skips the Service, a bad endpoint is dropped.
// Objects are untyped JSON: each field's shape is checked before it is read, and nothing the kernel
// would refuse is asked of it.

import type { V1EndpointSlice, V1Service, V1ServicePort } from '@kubernetes/client-node';
import ipaddr from 'ipaddr.js';
import { hostNetmask, isDottedQuad, sameRealServer, sameVirtualServer, serviceKey, SVC_F_KIPVS } from '../kernel/ids.js';
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
  /** What it serves: the ClusterIP, a NodePort on a node address, an external IP, a load-balancer ingress IP. */
  kind: ServiceKind;
  /**
   * A Local traffic policy applies (internalTrafficPolicy for ClusterIP, externalTrafficPolicy for the
   * other kinds): only this node's endpoints, and external traffic keeps the client's address.
   */
  local: boolean;
  /** LoadBalancer: spec.loadBalancerSourceRanges as canonical CIDRs; empty = any source. */
  sourceRanges: readonly string[];
}

export type ServiceKind = 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';

/** What desired state needs to know of the node it runs on. */
export interface NodeContext {
  /** The Node's name: endpoints with this nodeName are local. '' = none is. */
  name: string;
  /** Its topology.kubernetes.io/zone label, for topology hints. */
  zone?: string;
  /** The addresses NodePorts are served on (--nodeport-addresses, or every address but loopback and kube-ipvs0's). */
  nodePortAddresses: ReadonlyArray<{ family: Family; address: string }>;
  /** Every address on the node's other interfaces: an external or load-balancer IP among them is not bound to kube-ipvs0. */
  localAddresses: ReadonlySet<string>;
}

/** No node: nothing is local, no NodePorts (status without a node, unit tests of ClusterIP behaviour). */
export const NO_NODE: NodeContext = { name: '', nodePortAddresses: [], localAddresses: new Set() };

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
  /**
   * A LoadBalancer Service with externalTrafficPolicy Local: its healthCheckNodePort and this node's ready
   * endpoints (the most any one port and family has, as kube-proxy counts per Service port).
   */
  healthCheck?: { port: number; localEndpoints: number };
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

/** Endpoint classes (kube-proxy's CategorizeEndpoints): bits of EndpointSet.flags. */
const READY = 1;
/** Not ready, but serving and terminating: used only when no endpoint is ready. */
const TERMINATING = 2;
/** On this node (endpoint.nodeName). */
const LOCAL = 4;
/** Has topology hints (hints.forZones). */
const HINTED = 8;
/** Its hints name this node's zone. */
const IN_ZONE = 16;

/** The usable endpoints of one Service port and family, collapsed by address:port, in parallel arrays. */
interface EndpointSet {
  addresses: string[];
  ports: number[];
  flags: number[];
  /** How many endpoints have each bit combination that selection asks about. */
  ready: number;
  readyLocal: number;
  readyHinted: number;
  readyInZone: number;
  terminatingLocal: number;
}

/**
 * The endpoints of `slices` for the Service port named `portName`: ready ones, and serving-terminating
 * ones (kept for the fallback), first one wins per address:port. Collapsing keys on the address
 * strings per port number rather than on an 'address:port' string built per endpoint: that string was
 * most of the cost of a full recompute.
 */
function endpointsFor(
  portName: string,
  family: Family,
  slices: readonly V1EndpointSlice[],
  node: NodeContext,
  errors: ObjectError[],
  reported: Set<string>,
): EndpointSet {
  const set: EndpointSet = { addresses: [], ports: [], flags: [], ready: 0, readyLocal: 0, readyHinted: 0, readyInZone: 0, terminatingLocal: 0 };
  /** Addresses already taken, by port number (slices of one Service may disagree on it). */
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
      // Kubernetes: a nil ready condition means ready, a nil serving means "as ready", nil terminating false.
      const c = isObject(ep.conditions) ? (ep.conditions as { ready?: unknown; serving?: unknown; terminating?: unknown }) : {};
      const ready = c.ready !== false;
      if (!ready && !((c.serving ?? c.ready) === true && c.terminating === true)) continue;
      const texts: unknown = ep.addresses ?? [];
      if (!Array.isArray(texts)) {
        report('addresses', `an endpoint's addresses is not a list (${shown(texts)})`);
        continue;
      }
      if (!texts.length) report('empty', 'an endpoint has no addresses');
      let flags = ready ? READY : TERMINATING;
      if (node.name && ep.nodeName === node.name) flags |= LOCAL;
      const zones: unknown = isObject(ep.hints) ? ep.hints.forZones : undefined;
      if (Array.isArray(zones) && zones.length) {
        flags |= HINTED;
        if (node.zone && zones.some((z) => isObject(z) && z.name === node.zone)) flags |= IN_ZONE;
      }
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
        set.addresses.push(ip.address);
        set.ports.push(port.port);
        set.flags.push(flags);
        if (ready) {
          set.ready++;
          if (flags & LOCAL) set.readyLocal++;
          if (flags & HINTED) set.readyHinted++;
          if (flags & IN_ZONE) set.readyInZone++;
        } else if (flags & LOCAL) set.terminatingLocal++;
      }
    }
  }
  return set;
}

/** Which endpoints a virtual server gets: those whose flags, masked, equal the value. */
interface Selection {
  mask: number;
  value: number;
}

/**
 * kube-proxy's endpoint selection. Cluster traffic: the ready endpoints (only those hinted for this
 * node's zone when topology applies: every ready endpoint hinted and one for this zone), else the
 * serving-terminating ones. Local traffic: this node's ready endpoints, else its serving-terminating
 * ones, else none (traffic is dropped rather than leave the node).
 */
function selection(eps: EndpointSet, local: boolean, topology: boolean): Selection {
  if (local) return eps.readyLocal ? { mask: READY | LOCAL, value: READY | LOCAL } : { mask: TERMINATING | LOCAL, value: TERMINATING | LOCAL };
  if (!eps.ready) return { mask: TERMINATING, value: TERMINATING };
  if (topology && eps.readyHinted === eps.ready && eps.readyInZone) return { mask: READY | IN_ZONE, value: READY | IN_ZONE };
  return { mask: READY, value: READY };
}

/**
 * The real servers of the selected endpoints. `previous`, this virtual server's real servers last
 * time, is reused: while they come out the same no new objects are made, and if all do it is returned
 * itself. (After the first sync V8 allocates these objects straight into the old generation, where an
 * unchanged Service's copies would pile up as garbage until a full collection.)
 */
function realServers(eps: EndpointSet, sel: Selection, family: Family, previous: Destination[] = []): Destination[] {
  let out: Destination[] | undefined; // made at the first difference from `previous`
  let kept = 0; // until then, how many of `previous` came out again
  for (let i = 0; i < eps.addresses.length; i++) {
    if ((eps.flags[i] & sel.mask) !== sel.value) continue;
    const address = eps.addresses[i];
    const port = eps.ports[i];
    if (!out && kept < previous.length && isRealServer(previous[kept], family, address, port)) kept++;
    else (out ??= previous.slice(0, kept)).push(realServer(family, address, port));
  }
  if (out) return out.slice(); // of exact length, as in ListLike.list
  return kept === previous.length ? previous : previous.slice(0, kept);
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
  flags: aff.flags | sched.bits | SVC_F_KIPVS,
  timeout: aff.timeout,
  netmask: hostNetmask(ip.family),
  peName: '',
});

/** Whether `s` has the identity virtualServer(w) makes (family, protocol, address, port; no fwmark). */
const isSameId = (s: VirtualServer, { ip, protocol, port }: ServiceSettings): boolean =>
  s.port === port && s.address === ip.address && s.protocol === protocol && s.family === ip.family && s.fwmark === 0;

/** Whether `v` has what virtualServer(w) makes (and keepScheduler as w asks). */
function isVirtualServer(v: DesiredVirtualServer, { ip, protocol, port, sched, aff }: ServiceSettings): boolean {
  const s = v.service;
  return s.family === ip.family && s.protocol === protocol && s.address === ip.address && s.port === port && s.fwmark === 0 &&
    s.scheduler === sched.scheduler && s.flags === (aff.flags | sched.bits | SVC_F_KIPVS) && s.timeout === aff.timeout &&
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

const same = <T>(x: T, y: T) => x === y;

/**
 * A list made item by item that is `previous` itself for as long as the items are its own, in its
 * order: the array is copied at the first difference only. (Arrays that a result keeps are allocated
 * by V8 straight into the old generation once a cold sync has kept them all; an unchanged Service's
 * recompute must not make them, or every full recompute leaves them behind as old garbage.)
 */
class ListLike<T> {
  private out: T[] | undefined;
  private kept = 0;
  constructor(private readonly previous: T[] = []) {}

  push(x: T): void {
    if (!this.out && this.kept < this.previous.length && this.previous[this.kept] === x) this.kept++;
    else (this.out ??= this.previous.slice(0, this.kept)).push(x);
  }

  some(test: (x: T) => boolean): boolean {
    if (this.out) return this.out.some(test);
    for (let i = 0; i < this.kept; i++) if (test(this.previous[i])) return true;
    return false;
  }

  /** The list; a new one is a copy of exact length (a list grown by push keeps room for 16 more items). */
  list(): T[] {
    if (this.out) return this.out.slice();
    return this.kept === this.previous.length ? this.previous : this.previous.slice(0, this.kept);
  }
}
const sameStrings = (a: readonly string[], b: readonly string[]) => sameList(a, b, same);
/** Shared by every result without errors and every virtual server without source ranges (never changed in place). */
const NO_ERRORS: ObjectError[] = Object.freeze([]) as unknown as ObjectError[];
const NO_RANGES: readonly string[] = Object.freeze([]);

const sameDesiredServer = (a: DesiredVirtualServer, b: DesiredVirtualServer): boolean =>
  a === b ||
  (a.key === b.key && a.owner === b.owner && a.keepScheduler === b.keepScheduler && a.kind === b.kind && a.local === b.local &&
    sameStrings(a.sourceRanges, b.sourceRanges) &&
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
  sameList(a.virtualServers, b.virtualServers, sameDesiredServer) && sameList(a.addresses, b.addresses, sameAddress) &&
  a.healthCheck?.port === b.healthCheck?.port && a.healthCheck?.localEndpoints === b.healthCheck?.localEndpoints;

/** A list of IPs from the Service (externalIPs, load-balancer ingress): valid unicast ones; each bad one an error. */
function addressList(texts: unknown, field: string, errors: ObjectError[], object: string): Array<{ family: Family; address: string }> {
  if (texts == null) return [];
  if (!Array.isArray(texts)) return (errors.push({ object, reason: `${field} is not a list (${shown(texts)})` }), []);
  const out: Array<{ family: Family; address: string }> = [];
  for (const text of texts as unknown[]) {
    const ip = typeof text === 'string' ? parseIp(text) : undefined;
    if (!ip || ip.address === '0.0.0.0' || ip.address === '::' || isMulticast(ip)) {
      errors.push({ object, reason: `${field}: "${shown(text)}" is not a unicast IP address; skipped` });
    } else if (!out.some((o) => o.address === ip.address)) out.push(ip);
  }
  return out;
}

/** spec.loadBalancerSourceRanges as canonical CIDRs; undefined (with an error) if any is invalid: fail closed. */
function sourceRangesOf(texts: unknown, errors: ObjectError[], object: string): string[] | undefined {
  if (texts == null) return [];
  const field = 'spec.loadBalancerSourceRanges';
  if (!Array.isArray(texts)) return (errors.push({ object, reason: `${field} is not a list (${shown(texts)}); load-balancer IPs not served` }), undefined);
  const out: string[] = [];
  for (const text of texts as unknown[]) {
    try {
      if (typeof text !== 'string') throw new Error();
      const [addr, bits] = ipaddr.parseCIDR(text.trim());
      const network = (addr.kind() === 'ipv4' ? ipaddr.IPv4 : ipaddr.IPv6).networkAddressFromCIDR(`${addr}/${bits}`);
      const cidr = `${network.toString()}/${bits}`;
      if (!out.includes(cidr)) out.push(cidr);
    } catch {
      errors.push({ object, reason: `${field}: "${shown(text)}" is not a CIDR; load-balancer IPs not served` });
      return undefined;
    }
  }
  return out;
}

const TOPOLOGY_ANNOTATIONS = ['service.kubernetes.io/topology-mode', 'service.kubernetes.io/topology-aware-hints'];

/** Whether the Service asks for topology-aware routing (an annotation set to Auto, or spec.trafficDistribution). */
function wantsTopology(svc: V1Service): boolean {
  const ann: unknown = svc.metadata?.annotations;
  if (isObject(ann) && TOPOLOGY_ANNOTATIONS.some((k) => ann[k] === 'Auto' || ann[k] === 'auto')) return true;
  const td: unknown = (svc.spec as { trafficDistribution?: unknown } | undefined)?.trafficDistribution;
  return typeof td === 'string' && td !== '';
}

const validPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;

/**
 * Everything one Service needs in the kernel. `slices` are the EndpointSlices labelled with the
 * Service's name (any order, possibly of both families). `node` says which endpoints are local and
 * where NodePorts listen. `previous`, the Service's last result, lends its objects where they come out
 * unchanged (see realServers).
 */
export function desiredForService(
  svc: V1Service,
  slices: readonly V1EndpointSlice[],
  config: ProxyConfig,
  node: NodeContext = NO_NODE,
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

  const type = spec.type ?? 'ClusterIP';
  const externalLocal = spec.externalTrafficPolicy === 'Local';
  const internalLocal = spec.internalTrafficPolicy === 'Local';
  const topology = !!node.zone && wantsTopology(svc);
  const families = new Set(ips.map((ip) => ip.family));
  const externalIPs = addressList(spec.externalIPs, 'spec.externalIPs', errors, object);
  // Load-balancer ingress IPs, but not those whose load balancer proxies (ipMode Proxy) nor hostnames.
  const ingress: unknown = svc.status?.loadBalancer?.ingress;
  const lbIPs = type !== 'LoadBalancer' ? [] : addressList(
    Array.isArray(ingress) ? ingress.filter((i) => isObject(i) && i.ip !== undefined && i.ipMode !== 'Proxy').map((i) => i.ip) : ingress,
    'status.loadBalancer.ingress', errors, object);
  const sourceRanges = type === 'LoadBalancer' ? sourceRangesOf(spec.loadBalancerSourceRanges, errors, object) : [];
  for (const ip of [...externalIPs, ...lbIPs]) {
    if (!families.has(ip.family)) errors.push({ object, reason: `${ip.address} is IPv${ip.family}, which the Service's clusterIPs do not have; skipped` });
  }

  const virtualServers = new ListLike(previous?.virtualServers);
  const reported = new Set<string>();
  const seen = new Set<string>();
  const keys = new Set<string>();
  let localEndpoints: number | undefined;
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
    if (!validPort(p.port)) {
      errors.push({ object, reason: `${label}: port ${shown(p.port)} is not in 1..65535` });
      continue;
    }
    if (seen.has(`${protocol}/${p.port}`)) {
      errors.push({ object, reason: `${label}: ${protocol} port ${p.port} is listed twice` });
      continue;
    }
    seen.add(`${protocol}/${p.port}`);
    const nodePort = type === 'NodePort' || type === 'LoadBalancer' ? p.nodePort : undefined;
    if (nodePort !== undefined && nodePort !== null && !validPort(nodePort)) {
      errors.push({ object, reason: `${label}: nodePort ${shown(nodePort)} is not in 1..65535; NodePort not served` });
    }
    const owner = `${key}:${shown(portName || p.port)}`;
    for (const family of families) {
      const eps = endpointsFor(portName, family, slices, node, errors, reported);
      if (externalLocal) localEndpoints = Math.max(localEndpoints ?? 0, eps.readyLocal);
      /** Real-server lists by selection, shared by this port's virtual servers of this family. */
      const lists = new Map<number, Destination[]>();
      const add = (kind: ServiceKind, ip: { family: Family; address: string }, port: number, local: boolean, ranges: readonly string[]) => {
        const wanted: ServiceSettings = { ip, protocol: protocol as Protocol, port, sched, aff };
        // Last time's virtual server of this identity, found without building its key: when it comes
        // out the same, neither its key nor a new VirtualServer is made.
        const before = previous?.virtualServers.find((v) => isSameId(v.service, wanted));
        const k = before ? before.key : serviceKey(virtualServer(wanted));
        if (keys.has(k)) return void errors.push({ object, reason: `${label}: ${k} is asked for twice; skipped` });
        keys.add(k);
        const sel = selection(eps, local, topology && !local);
        const selKey = sel.mask * 64 + sel.value;
        let destinations = lists.get(selKey);
        if (!destinations) lists.set(selKey, (destinations = realServers(eps, sel, family, before?.destinations)));
        if (before && before.destinations === destinations && before.owner === owner && before.kind === kind && before.local === local &&
          sameStrings(before.sourceRanges, ranges) && isVirtualServer(before, wanted)) {
          virtualServers.push(before); // unchanged: the very same object (see realServers)
          return;
        }
        const service = virtualServer(wanted);
        virtualServers.push({ key: k, owner, service, destinations, ...(sched.keep ? { keepScheduler: true } : {}), kind, local, sourceRanges: ranges });
      };
      for (const ip of ips) if (ip.family === family) add('ClusterIP', ip, p.port, internalLocal, NO_RANGES);
      if (validPort(nodePort)) for (const a of node.nodePortAddresses) if (a.family === family) add('NodePort', a, nodePort, externalLocal, NO_RANGES);
      for (const ip of externalIPs) if (ip.family === family) add('ExternalIP', ip, p.port, externalLocal, NO_RANGES);
      if (sourceRanges) for (const ip of lbIPs) if (ip.family === family) add('LoadBalancer', ip, p.port, externalLocal, sourceRanges);
    }
  }
  if (ports.length === 0) errors.push({ object, reason: 'spec.ports is empty' });
  // Bound to kube-ipvs0: the ClusterIPs, and external/load-balancer IPs that no other interface has.
  const servers = virtualServers.list();
  const addresses = new ListLike(previous?.addresses);
  for (const v of servers) {
    if (v.kind === 'NodePort' || (v.kind !== 'ClusterIP' && node.localAddresses.has(v.service.address))) continue;
    if (addresses.some((a) => a.address === v.service.address)) continue;
    const family = v.service.family;
    const prefixLength = family === 4 ? 32 : 128;
    const before = previous?.addresses.find((a) => a.address === v.service.address && a.family === family && a.prefixLength === prefixLength);
    addresses.push(before ?? { family, address: v.service.address, prefixLength });
  }
  const hc = spec.healthCheckNodePort;
  const healthCheck = type === 'LoadBalancer' && externalLocal && validPort(hc) ? { port: hc, localEndpoints: localEndpoints ?? 0 } : undefined;
  // All of it as last time: last time's result itself, so that an unchanged Service leaves no garbage.
  const bound = addresses.list();
  if (previous && previous.valid && !errors.length && !previous.errors.length && servers === previous.virtualServers &&
    bound === previous.addresses && healthCheck?.port === previous.healthCheck?.port &&
    healthCheck?.localEndpoints === previous.healthCheck?.localEndpoints) return previous;
  const result: ServiceResult = { virtualServers: servers, addresses: bound, errors: errors.length ? errors : NO_ERRORS, valid: true };
  if (healthCheck) result.healthCheck = healthCheck;
  return result;
}
