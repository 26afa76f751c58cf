// The diff: a pure function (desired, observed) → ordered kernel ops. Bind VIPs first, then add or
// update services in place (a scheduler or flag change is SET_SERVICE, never delete+add, so live
// connections survive) with their real servers, then delete stale services, then unbind stale VIPs.
// Ownership: kipvs touches a virtual server only if its address is bound (or to be bound) on its dummy
// link; everything else in the IPVS table belongs to someone else and is never changed.

import { destinationKey, serviceKey } from '../kernel/ids.js';
import type { Destination, IpvsTable, KernelOp, LinkAddress, VirtualServer } from '../kernel/types.js';
import type { DesiredVirtualServer } from './desired.js';

const SCHED_BITS = 0x8 | 0x10 | 0x20;

export interface ObservedService {
  service: VirtualServer;
  destinations: Map<string, Destination>;
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

/** Limits a diff to some service keys and addresses (a partial sync); absent = everything. */
export interface Scope {
  services: Iterable<string>;
  addresses: Iterable<string>;
}

export function observedFromKernel(table: IpvsTable, bound: readonly LinkAddress[]): ObservedState {
  const services = new Map<string, ObservedService>();
  for (const { service, destinations } of table.services) {
    const { stats: _s, ...vs } = service;
    services.set(serviceKey(vs), {
      service: vs,
      destinations: new Map(
        destinations.map(({ activeConns: _a, inactiveConns: _i, persistConns: _p, stats: _st, ...d }) => [destinationKey(d), d]),
      ),
    });
  }
  return { services, addresses: new Map(bound.map((a) => [a.address, a])) };
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
  const serviceKeys = scope ? new Set(scope.services) : new Set([...desired.services.keys(), ...observed.services.keys()]);
  const addressKeys = scope ? new Set(scope.addresses) : new Set([...desired.addresses.keys(), ...observed.addresses.keys()]);
  const ops: KernelOp[] = [];

  for (const a of addressKeys) {
    const want = desired.addresses.get(a);
    if (want && !observed.addresses.has(a)) ops.push({ kind: 'addAddress', ifname, address: want });
  }

  const stale: KernelOp[] = [];
  for (const key of serviceKeys) {
    const want = desired.services.get(key);
    const have = observed.services.get(key);
    if (!want) {
      const owned = have && (observed.addresses.has(have.service.address) || desired.addresses.has(have.service.address));
      if (owned) stale.push({ kind: 'deleteService', service: have.service });
      continue;
    }
    const service = target(want, have?.service);
    if (!have) ops.push({ kind: 'addService', service });
    else if (!sameService(service, have.service)) ops.push({ kind: 'updateService', service });
    const haveDests = have?.destinations ?? new Map<string, Destination>();
    const wantKeys = new Set<string>();
    for (const d of want.destinations) {
      const dk = destinationKey(d);
      wantKeys.add(dk);
      const cur = haveDests.get(dk);
      if (!cur) ops.push({ kind: 'addDestination', service, destination: d });
      else if (!sameDestination(d, cur)) ops.push({ kind: 'updateDestination', service, destination: d });
    }
    for (const [dk, d] of haveDests) if (!wantKeys.has(dk)) ops.push({ kind: 'deleteDestination', service, destination: d });
  }
  ops.push(...stale);

  for (const a of addressKeys) {
    const have = observed.addresses.get(a);
    if (have && !desired.addresses.has(a)) ops.push({ kind: 'deleteAddress', ifname, address: have });
  }
  return ops;
}

/** Folds the ops the kernel accepted into the observed state, so a partial sync can diff without a dump. */
export function applyToObserved(observed: ObservedState, ops: readonly KernelOp[], failed: ReadonlySet<number>): void {
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
        observed.services.set(serviceKey(op.service), { service: op.service, destinations: new Map() });
        break;
      case 'updateService': {
        const s = observed.services.get(serviceKey(op.service));
        if (s) s.service = op.service;
        break;
      }
      case 'deleteService':
        observed.services.delete(serviceKey(op.service));
        break;
      case 'addDestination':
      case 'updateDestination':
        observed.services.get(serviceKey(op.service))?.destinations.set(destinationKey(op.destination), op.destination);
        break;
      case 'deleteDestination':
        observed.services.get(serviceKey(op.service))?.destinations.delete(destinationKey(op.destination));
        break;
    }
  });
}
