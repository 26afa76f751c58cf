// The diff: a pure function (desired, observed) → ordered kernel ops. Bind VIPs first, then add or
// update services in place (a scheduler or flag change is SET_SERVICE, never delete+add, so live
// connections survive) with their real servers, then delete stale services, then unbind stale VIPs.
// Ownership: kipvs deletes a virtual server only if its address is bound (or to be bound) on its dummy
// link or it carries kipvs's mark (SVC_F_KIPVS: NodePorts on the node's own addresses); everything
// else in the IPVS table belongs to someone else and is never changed.

import { sameRealServer, sameVirtualServer, serviceKey, SVC_F_KIPVS } from '../kernel/ids.js';
import type { Destination, DestinationId, IpvsTable, KernelOp, LinkAddress, ServiceId, VirtualServer } from '../kernel/types.js';
import type { DesiredVirtualServer } from './desired.js';

const SCHED_BITS = 0x8 | 0x10 | 0x20;

/** Up to this many real servers a Destinations keeps in one list (most virtual servers); beyond, in maps. */
const SMALL = 16;

/**
 * The real servers of one virtual server, by port and then address. IPVS tells them apart by
 * address:port; indexing by the parts looks them up with the address strings we already hold (their
 * hashes are cached) instead of building an 'address:port' string per lookup, which made up most of
 * a full diff's time. Up to SMALL of them are one list, searched in order (the addresses are mostly the
 * very strings desired state holds): two maps per virtual server were 7 MB of an agent's 10k × 10.
 * Either way values() lists them by port (ports in the order first added), then in the order added.
 */
export class Destinations {
  private list: Destination[] | undefined = [];
  private byPort: Map<number, Map<string, Destination>> | undefined;

  get(id: DestinationId): Destination | undefined {
    if (!this.list) return this.byPort!.get(id.port)?.get(id.address);
    for (const d of this.list) if (d.port === id.port && d.address === id.address) return d;
    return undefined;
  }

  set(d: Destination): void {
    const list = this.list;
    if (!list) return this.mapSet(d);
    let after = -1; // the last of d's port: a new one goes right after it, as the maps would list it
    for (let i = 0; i < list.length; i++) {
      if (list[i].port !== d.port) continue;
      if (list[i].address === d.address) return void (list[i] = d);
      after = i;
    }
    if (list.length >= SMALL) {
      this.list = undefined;
      this.byPort = new Map();
      for (const e of list) this.mapSet(e);
      return this.mapSet(d);
    }
    if (after < 0 || after === list.length - 1) list.push(d);
    else list.splice(after + 1, 0, d);
  }

  delete(id: DestinationId): void {
    if (this.list) {
      const i = this.list.findIndex((d) => d.port === id.port && d.address === id.address);
      if (i >= 0) this.list.splice(i, 1);
      return;
    }
    const byAddress = this.byPort!.get(id.port);
    if (byAddress?.delete(id.address) && byAddress.size === 0) this.byPort!.delete(id.port);
  }

  get size(): number {
    if (this.list) return this.list.length;
    let n = 0;
    for (const byAddress of this.byPort!.values()) n += byAddress.size;
    return n;
  }

  *values(): IterableIterator<Destination> {
    if (this.list) yield* this.list;
    else for (const byAddress of this.byPort!.values()) yield* byAddress.values();
  }

  private mapSet(d: Destination): void {
    let byAddress = this.byPort!.get(d.port);
    if (!byAddress) this.byPort!.set(d.port, (byAddress = new Map()));
    byAddress.set(d.address, d);
  }
}

export interface ObservedService {
  service: VirtualServer;
  destinations: Destinations;
}

/** The kernel as last seen: IPVS services by serviceKey, addresses on the dummy link by address. */
export interface ObservedState {
  services: Map<string, ObservedService>;
  addresses: Map<string, LinkAddress>;
}

export interface DesiredState {
  services: Map<string, DesiredVirtualServer>;
  addresses: Map<string, LinkAddress>;
}

/**
 * Limits a diff to some service keys and addresses (a partial sync); absent = everything. A key may be
 * named more than once: its ops are made once, at its first place. (Lists rather than Sets: a full
 * recompute names every key, and a Set of 10,000 grows through tables big enough for V8's large-object
 * space, garbage that only a full collection frees.)
 */
export interface Scope {
  services: readonly string[];
  addresses: readonly string[];
}

/**
 * The observed state from one dump: only what the diff compares and writes back (the dump's stats
 * and connection counts are dropped). Where the kernel holds exactly what `desired` asks for, the
 * observed state keeps the desired objects themselves (neither side changes them in place), so an
 * agent in sync holds one copy of its table, not two. Where a virtual server, with all its real
 * servers, or an address is exactly as in `kept` (the observation this one replaces), it keeps that
 * entry itself: a full resync of an unchanged table builds no new entries, and any difference, drift
 * included, gets an entry of its own from the dump.
 */
export function observedFromKernel(table: IpvsTable, bound: readonly LinkAddress[], desired?: DesiredState, kept?: ObservedState): ObservedState {
  // All of it as kept, in the same order: the kept maps themselves (10,000 entries each, in tables big
  // enough for V8's large-object space, which only a full collection frees).
  if (kept && sameServices(kept.services, table) && sameAddresses(kept.addresses, bound)) return { services: kept.services, addresses: kept.addresses };
  const services = new Map<string, ObservedService>();
  for (const { service: s, destinations } of table.services) {
    const key = serviceKey(s);
    const was = kept?.services.get(key);
    if (was && sameVirtualServer(was.service, s) && sameDestinations(was.destinations, destinations)) {
      services.set(key, was);
      continue;
    }
    const want = desired?.services.get(key);
    const service: VirtualServer = want && sameVirtualServer(want.service, s) ? want.service : {
      family: s.family, protocol: s.protocol, address: s.address, port: s.port, fwmark: s.fwmark,
      scheduler: s.scheduler, flags: s.flags, timeout: s.timeout, netmask: s.netmask, peName: s.peName,
    };
    const observed = new Destinations();
    let wanted: Destinations | undefined; // by address:port, made only when the dump's order is not the desired one
    destinations.forEach((d, i) => {
      let same = want?.destinations[i];
      if (want && !(same && same.port === d.port && same.address === d.address)) {
        if (!wanted) for (const w of want.destinations) (wanted ??= new Destinations()).set(w);
        same = wanted?.get(d);
      }
      observed.set(same && sameRealServer(same, d) ? same : {
        family: d.family, address: d.address, port: d.port,
        forward: d.forward, weight: d.weight, upperThreshold: d.upperThreshold, lowerThreshold: d.lowerThreshold,
      });
    });
    services.set(key, { service, destinations: observed });
  }
  const addresses = new Map<string, LinkAddress>();
  for (const a of bound) {
    const was = kept?.addresses.get(a.address);
    addresses.set(a.address, was && was.family === a.family && was.prefixLength === a.prefixLength ? was : a);
  }
  return { services, addresses };
}

/** Whether `kept` lists exactly the dump's virtual servers and real servers, in the dump's order. */
function sameServices(kept: ReadonlyMap<string, ObservedService>, table: IpvsTable): boolean {
  if (kept.size !== table.services.length) return false;
  let i = 0;
  for (const was of kept.values()) {
    const { service, destinations } = table.services[i++];
    if (!sameVirtualServer(was.service, service) || !sameDestinations(was.destinations, destinations)) return false;
  }
  return true;
}

/** Whether `kept` lists exactly the bound addresses, in their order. */
function sameAddresses(kept: ReadonlyMap<string, LinkAddress>, bound: readonly LinkAddress[]): boolean {
  if (kept.size !== bound.length) return false;
  let i = 0;
  for (const was of kept.values()) {
    const a = bound[i++];
    if (was.address !== a.address || was.family !== a.family || was.prefixLength !== a.prefixLength) return false;
  }
  return true;
}

/** Whether `observed` holds exactly the real servers of a dump (each equal in every field, none more). */
function sameDestinations(observed: Destinations, dumped: readonly Destination[]): boolean {
  if (observed.size !== dumped.length) return false;
  for (const d of dumped) {
    const o = observed.get(d);
    if (!o || !sameRealServer(o, d)) return false;
  }
  return true;
}

/** Every key of `a`, then the keys of `b` that `a` lacks. */
function* union<K>(a: ReadonlyMap<K, unknown>, b: ReadonlyMap<K, unknown>): Generator<K> {
  yield* a.keys();
  for (const k of b.keys()) if (!a.has(k)) yield k;
}

/** What the desired service should look like given what the kernel has (keepScheduler). */
function target(d: DesiredVirtualServer, have: VirtualServer | undefined): VirtualServer {
  if (!d.keepScheduler || !have) return d.service;
  return { ...d.service, scheduler: have.scheduler, flags: (d.service.flags & ~SCHED_BITS) | (have.flags & SCHED_BITS) };
}

const sameService = (a: VirtualServer, b: VirtualServer) =>
  a.scheduler === b.scheduler && a.flags === b.flags && a.timeout === b.timeout && a.netmask === b.netmask;

const sameDestination = (a: Destination, b: Destination) =>
  a.weight === b.weight && a.forward === b.forward && a.upperThreshold === b.upperThreshold && a.lowerThreshold === b.lowerThreshold;

export function diff(desired: DesiredState, observed: ObservedState, ifname: string, scope?: Scope): KernelOp[] {
  const serviceKeys = scope ? scope.services : union(desired.services, observed.services);
  const addressKeys = scope ? scope.addresses : [...union(desired.addresses, observed.addresses)];
  const ops: KernelOp[] = [];
  // With a scope, the keys and addresses that made ops, so that one named again makes none (few: most make none).
  const done = scope && new Set<string>();

  for (const a of addressKeys) {
    const want = desired.addresses.get(a);
    if (want && !observed.addresses.has(a) && !done?.has(a)) {
      ops.push({ kind: 'addAddress', ifname, address: want });
      done?.add(a);
    }
  }

  const stale: KernelOp[] = [];
  for (const key of serviceKeys) {
    if (done?.has(key)) continue;
    const made = ops.length + stale.length;
    diffService(key);
    if (done && ops.length + stale.length > made) done.add(key);
  }
  for (const op of stale) ops.push(op);

  for (const a of addressKeys) {
    const have = observed.addresses.get(a);
    if (have && !desired.addresses.has(a) && !done?.has(a)) {
      ops.push({ kind: 'deleteAddress', ifname, address: have });
      done?.add(a);
    }
  }
  return ops;

  function diffService(key: string): void {
    const want = desired.services.get(key);
    const have = observed.services.get(key);
    if (!want) {
      const owned = have &&
        ((have.service.flags & SVC_F_KIPVS) !== 0 || observed.addresses.has(have.service.address) || desired.addresses.has(have.service.address));
      if (owned) stale.push({ kind: 'deleteService', service: have.service });
      return;
    }
    const service = target(want, have?.service);
    if (!have) ops.push({ kind: 'addService', service });
    else if (!sameService(service, have.service)) ops.push({ kind: 'updateService', service });
    let matched = 0;
    for (const d of want.destinations) {
      const cur = have?.destinations.get(d);
      if (!cur) ops.push({ kind: 'addDestination', service, destination: d });
      else {
        matched++;
        if (!sameDestination(d, cur)) ops.push({ kind: 'updateDestination', service, destination: d });
      }
    }
    // Wanted destinations are unique by address:port, so if each observed one was matched none is stale.
    if (have && matched < have.destinations.size) {
      const wanted = new Destinations();
      for (const d of want.destinations) wanted.set(d);
      for (const d of have.destinations.values()) if (!wanted.get(d)) ops.push({ kind: 'deleteDestination', service, destination: d });
    }
  }
}

/** Folds the ops the kernel accepted into the observed state, so a partial sync can diff without a dump. */
export function applyToObserved(observed: ObservedState, ops: readonly KernelOp[], failed: ReadonlySet<number>): void {
  // The entry of the last op's service: a service's ops come one after the other and share its object,
  // so its key is made once per service rather than once per real server (120,000 keys at a cold sync).
  let lastService: ServiceId | undefined;
  let lastEntry: ObservedService | undefined;
  const entry = (service: ServiceId) => {
    if (service !== lastService) {
      lastService = service;
      lastEntry = observed.services.get(serviceKey(service));
    }
    return lastEntry;
  };
  ops.forEach((op, i) => {
    if (failed.has(i)) return;
    switch (op.kind) {
      case 'addAddress':
        observed.addresses.set(op.address.address, op.address);
        break;
      case 'deleteAddress':
        observed.addresses.delete(op.address.address);
        break;
      case 'addService':
        lastService = op.service;
        lastEntry = { service: op.service, destinations: new Destinations() };
        observed.services.set(serviceKey(op.service), lastEntry);
        break;
      case 'updateService': {
        const s = entry(op.service);
        if (s) s.service = op.service;
        break;
      }
      case 'deleteService':
        lastService = undefined;
        observed.services.delete(serviceKey(op.service));
        break;
      case 'addDestination':
      case 'updateDestination':
        entry(op.service)?.destinations.set(op.destination);
        break;
      case 'deleteDestination':
        entry(op.service)?.destinations.delete(op.destination);
        break;
    }
  });
}
