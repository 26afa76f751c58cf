// `kipvs status`: what the kernel holds next to what the Services ask for, kubectl-style. Read only:
// it opens the netlink sockets (in --netns), dumps the IPVS table and kube-ipvs0's addresses, takes one
// snapshot of the API view from the agent's own Source (--source kube|dir:PATH), and never writes.
//
// The comparison is the agent's own: desiredForService with the effective config (defaults, then the
// ConfigMap, then --ipvs-scheduler/--ipvs-scheduler-flags), the reconciler's first-claim-wins rule for
// two Services wanting one virtual server, and diff() against observedFromKernel(). A row is `in sync`
// exactly when the agent's next full sync would write nothing for it; every other state names the ops
// that sync would write:
//   in sync     nothing to write
//   draining    in sync but for real servers that drain (below): --check passes
//   missing     addService (the Service wants it, the kernel lacks it)
//   mismatched  updateService / add-, update-, deleteDestination / addAddress; the details say what,
//               kernel value first: `scheduler lc≠rr` means the kernel has lc and the agent wants rr
//   extra       deleteService: on an address bound on kube-ipvs0 (kipvs's), no Service wants it;
//               `extra: address only` is an address bound on kube-ipvs0 with no virtual server (deleteAddress)
//   foreign     not kipvs's (address not on kube-ipvs0): never touched; listed only with --all-ipvs
//   invalid     the Service cannot be read (bad clusterIP, affinity...): the agent skips it
//   conflict    another Service already claims this virtual server: the agent skips this one
// A real server `draining` is what graceful termination (proxy/graceful.ts) leaves while a removed
// endpoint's connections end: under a virtual server the agent keeps, not a wanted one, at weight 0,
// not UDP (the agent deletes those at once). The agent writes nothing for it until its connections are
// gone or --graceful-termination-max-wait has passed, then deletes it: not drift. A real server that
// is not wanted and has a weight is `extra` (drift), whatever its connections.
// Two things status cannot know, and where it assumes what a freshly started agent would do: a bad
// ConfigMap value counts as absent (a running agent keeps its last good value), and of two Services
// claiming one virtual server the first in the snapshot wins (a running agent: the first it saw).
// IPVS connection timeouts (--ipvs-tcp-timeout etc.) are global, not per row, and not compared.
// Namespaces: all by default (like `kubectl get -A`); -n NS keeps that namespace's rows. Rows without a
// Service (extra, foreign) have no namespace: they are listed only when neither -n nor a name is given.
// Headless and ExternalName Services have nothing in IPVS and no row. Object errors that do not make a
// Service invalid (an endpoint with a bad address, a skipped port) are warnings on stderr, and `errors`
// in json/yaml; they do not make a row out of sync.
//
// -o json / -o yaml print one object with these fields (stable; new ones may be added):
//   config:  { scheduler, schedulerFlags: string[] }   the effective default scheduler
//   inSync:  boolean                                    every listed row is in sync, draining or foreign (--check)
//   items:   one per row, in table order:
//     namespace, name           string | null (null for extra and foreign rows)
//     vip                       the table's VIP:PORT/PROTO text: '10.96.0.10:80/TCP', '[fd00::1]:53/UDP',
//                               'FWM 42/IPv4', '10.96.0.98' (extra: address only); null for invalid rows
//                               (as are family..fwmark; protocol and port also for address-only rows)
//     family 4|6, protocol 'TCP'|'UDP'|'SCTP', address (canonical), port, fwmark (0 unless fwmark service)
//     scheduler                 string | null: wanted (Service rows) or the kernel's (extra, foreign)
//     schedulerFlags            string[]: names, e.g. ['sh-port']
//     affinity                  { sessionAffinity: 'None' } | { sessionAffinity: 'ClientIP', timeoutSeconds }, or null
//     endpoints                 { ready, total } from the EndpointSlices (this family and port) | null
//     realServers               number of real servers in the kernel | null when the kernel has no such service
//     state                     'in sync'|'draining'|'missing'|'mismatched'|'extra'|'foreign'|'invalid'|'conflict'
//     details                   string[]: the STATE column's text after the colon, one entry per reason
//                               (draining: '1 real server (2 active, 5 inactive)', the kernel's counts)
//     destinations              real servers, sorted by address and port: { family, address, port,
//                               forward, weight (the kernel's, else the wanted one), activeConns and
//                               inactiveConns (null when not in the kernel), state ('in sync'|'draining'|
//                               'missing'|'mismatched'|'extra'|'foreign'), details }
//   errors:  [{ object, reason, service? }]   object errors from desired state (service: the Service's
//                               namespace/name), the ConfigMap and the source; all of them, whatever the filters
// Exit codes: 0; 1 with --check when a listed row is not in sync (draining and foreign rows do not count), or when a
// Service named on the command line does not exist; 2 usage error; 3 the kernel or the API view could
// not be read.

import { KubeConfig, type V1ConfigMap, type V1EndpointSlice, type V1Node, type V1Service } from '@kubernetes/client-node';
import ipaddr from 'ipaddr.js';
import { dump as yamlDump } from 'js-yaml';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { destinationKey, hostPort, serviceKey, SVC_F_KIPVS } from './kernel/ids.js';
import { NetlinkKernel } from './kernel/netlink.js';
import type {
  Destination, DestinationStatus, Family, ForwardMethod, IpvsTable, Kernel, KernelOp, LinkAddress, LocalAddress, Protocol, VirtualServer,
} from './kernel/types.js';
import type { Logger } from './log.js';
import {
  applyConfigMap, DEFAULT_CONFIG, parseSeconds, SCHEDULER_FLAGS, schedulerOverrides,
  type ProxyConfig,
} from './proxy/config.js';
import { desiredForService, objectKey, type DesiredVirtualServer, type NodeContext, type ObjectError, type ServiceKind } from './proxy/desired.js';
import { diff, observedFromKernel, type DesiredState } from './proxy/diff.js';
import { cidrFlag, nodeAddresses, parseCidrs, ZONE_LABEL } from './proxy/node.js';
import { DUMMY_LINK } from './proxy/reconciler.js';
import { DirSource } from './sources/dir.js';
import { KubeSource } from './sources/kube.js';
import { SERVICE_NAME_LABEL, type Source, type SourceError } from './sources/types.js';

// ---- rows: the pure part ---------------------------------------------------------------------------

export type RowState = 'in sync' | 'draining' | 'missing' | 'mismatched' | 'extra' | 'foreign' | 'invalid' | 'conflict';
export type RealServerState = 'in sync' | 'draining' | 'missing' | 'mismatched' | 'extra' | 'foreign';

export interface RealServerRow {
  family: Family;
  address: string;
  port: number;
  forward: ForwardMethod;
  weight: number;
  activeConns: number | null;
  inactiveConns: number | null;
  state: RealServerState;
  details: string[];
}

export type Affinity = { sessionAffinity: 'None' } | { sessionAffinity: 'ClientIP'; timeoutSeconds: number };

export interface StatusRow {
  namespace: string | null;
  name: string | null;
  /** What the virtual server serves: ClusterIP, NodePort, ExternalIP or LoadBalancer; null for rows of no Service. */
  type: ServiceKind | null;
  /** A Local traffic policy applies (only this node's endpoints). */
  local: boolean;
  vip: string | null;
  family: Family | null;
  protocol: Protocol | null;
  address: string | null;
  port: number | null;
  fwmark: number;
  scheduler: string | null;
  schedulerFlags: string[];
  affinity: Affinity | null;
  endpoints: { ready: number; total: number } | null;
  realServers: number | null;
  state: RowState;
  details: string[];
  destinations: RealServerRow[];
}

/** An object error; `service` (namespace/name) when it came from computing that Service's state. */
export interface StatusError extends ObjectError {
  service?: string;
}

export interface StatusReport {
  config: { scheduler: string; schedulerFlags: string[] };
  rows: StatusRow[];
  errors: StatusError[];
}

export interface StatusInput {
  services: ReadonlyMap<string, V1Service>;
  endpointSlices: ReadonlyMap<string, V1EndpointSlice>;
  /** The effective config (effectiveConfig()). */
  config: ProxyConfig;
  /** One dump of the IPVS table, with connection counts. */
  table: IpvsTable;
  /** Addresses bound on kube-ipvs0 ([] when the link does not exist). */
  bound: readonly LinkAddress[];
  ifname?: string;
  /** The node the agent runs on (NodePort addresses, local endpoints, zone); none by default. */
  node?: NodeContext;
}

const PERSISTENT = 0x1;
const SCHED_BITS = 0x8 | 0x10 | 0x20;

/**
 * Defaults, then the ConfigMap, then the flags, as a freshly started agent computes them
 * (Reconciler.refreshConfig): a bad ConfigMap value falls back to defaults + flags.
 */
export function effectiveConfig(cm: V1ConfigMap | undefined, overrides: Partial<ProxyConfig>): { config: ProxyConfig; errors: ObjectError[] } {
  const { config, errors } = applyConfigMap(DEFAULT_CONFIG, cm, { ...DEFAULT_CONFIG, ...overrides });
  return { config: { ...config, ...overrides }, errors };
}

/** Scheduler flag bits by name, as ipvsadm prints them: sh-fallback, sh-port, ..., else flag-N. */
export function schedulerFlagNames(scheduler: string, flags: number): string[] {
  const names: string[] = [];
  [0x8, 0x10, 0x20].forEach((bit, i) => {
    if (!(flags & bit)) return;
    const named = Object.entries(SCHEDULER_FLAGS).find(([, f]) => f.scheduler === scheduler && f.bit === bit);
    names.push(named ? named[0] : `flag-${i + 1}`);
  });
  return names;
}

function affinityOf(s: VirtualServer): Affinity {
  return s.flags & PERSISTENT ? { sessionAffinity: 'ClientIP', timeoutSeconds: s.timeout } : { sessionAffinity: 'None' };
}

const affinityText = (a: Affinity) => (a.sessionAffinity === 'None' ? 'None' : `ClientIP ${a.timeoutSeconds}s`);

function netmaskText(family: Family, netmask: number): string {
  return family === 6 ? `/${netmask}` : [24, 16, 8, 0].map((s) => (netmask >>> s) & 0xff).join('.');
}

function vipText(s: VirtualServer): string {
  return s.fwmark ? `FWM ${s.fwmark}/IPv${s.family}` : `${hostPort(s.address, s.port)}/${s.protocol}`;
}

/** Why the kernel's settings differ from the wanted ones, kernel value first. */
function serviceDifferences(have: VirtualServer, want: VirtualServer): string[] {
  const out: string[] = [];
  if (have.scheduler !== want.scheduler) out.push(`scheduler ${have.scheduler}≠${want.scheduler}`);
  if ((have.flags ^ want.flags) & SCHED_BITS) {
    const names = (s: VirtualServer) => schedulerFlagNames(s.scheduler, s.flags).join(',') || '-';
    out.push(`scheduler flags ${names(have)}≠${names(want)}`);
  }
  const [ha, wa] = [affinityText(affinityOf(have)), affinityText(affinityOf(want))];
  if (ha !== wa) out.push(`affinity ${ha}≠${wa}`);
  else if (have.timeout !== want.timeout) out.push(`timeout ${have.timeout}s≠${want.timeout}s`);
  if (have.netmask !== want.netmask) out.push(`netmask ${netmaskText(have.family, have.netmask)}≠${netmaskText(want.family, want.netmask)}`);
  if ((have.flags ^ want.flags) & SVC_F_KIPVS) out.push(have.flags & SVC_F_KIPVS ? 'marked as kipvs' : 'kipvs mark missing');
  const other = ~(PERSISTENT | SCHED_BITS | SVC_F_KIPVS);
  if ((have.flags ^ want.flags) & other) out.push(`flags 0x${(have.flags & other).toString(16)}≠0x${(want.flags & other).toString(16)}`);
  return out.length ? out : ['settings differ'];
}

function destinationDifferences(have: Destination, want: Destination): string[] {
  const out: string[] = [];
  if (have.weight !== want.weight) out.push(`weight ${have.weight}≠${want.weight}`);
  if (have.forward !== want.forward) out.push(`forward ${have.forward}≠${want.forward}`);
  if (have.upperThreshold !== want.upperThreshold || have.lowerThreshold !== want.lowerThreshold) {
    out.push(`thresholds ${have.upperThreshold}/${have.lowerThreshold}≠${want.upperThreshold}/${want.lowerThreshold}`);
  }
  return out.length ? out : ['settings differ'];
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** Row details from the real servers' states: '1 real server missing', '2 extra real servers', ... */
function destinationSummary(dests: readonly RealServerRow[]): string[] {
  const by = (state: RealServerState) => dests.filter((d) => d.state === state);
  const out: string[] = [];
  const missing = by('missing').length;
  const extra = by('extra').length;
  const differ = by('mismatched');
  if (missing) out.push(`${plural(missing, 'real server', 'real servers')} missing`);
  if (extra) out.push(`${plural(extra, 'extra real server', 'extra real servers')}`);
  if (differ.length) {
    const what = new Set(differ.map((d) => d.details.join(', ')));
    out.push(`${plural(differ.length, 'real server differs', 'real servers differ')}${what.size === 1 ? ` (${[...what][0]})` : ''}`);
  }
  return out;
}

/**
 * The draining real servers and the connections they still carry, '2 real servers (3 active, 12 inactive)'
 * ('2 real servers draining (...)' beside drift, `named`); undefined when none drains.
 */
function drainingSummary(dests: readonly RealServerRow[], named: boolean): string | undefined {
  const draining = dests.filter((d) => d.state === 'draining');
  if (!draining.length) return undefined;
  const sum = (k: 'activeConns' | 'inactiveConns') => draining.reduce((n, d) => n + (d[k] ?? 0), 0);
  const servers = plural(draining.length, 'real server', 'real servers');
  return `${servers}${named ? ' draining' : ''} (${sum('activeConns')} active, ${sum('inactiveConns')} inactive)`;
}

/**
 * A real server graceful termination drains: not wanted, under a virtual server the agent keeps, at
 * weight 0, not UDP (the agent deletes a UDP one at once). See the header.
 */
const isDraining = (service: VirtualServer, d: Destination) => d.weight === 0 && service.protocol !== 'UDP';

/** Code-unit order, as kubectl sorts names (not the locale's). */
const compareText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

const addressBytes = (a: string) => ipaddr.parse(a).toByteArray();

function compareAddresses(a: string, b: string): number {
  const [x, y] = [addressBytes(a), addressBytes(b)];
  if (x.length !== y.length) return x.length - y.length;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

const byAddressAndPort = (a: { address: string; port: number }, b: { address: string; port: number }) =>
  compareAddresses(a.address, b.address) || a.port - b.port;

function compareKernelServices(a: VirtualServer, b: VirtualServer): number {
  return (a.fwmark ? 1 : 0) - (b.fwmark ? 1 : 0) || a.family - b.family || a.fwmark - b.fwmark
    || byAddressAndPort(a, b) || compareText(a.protocol, b.protocol);
}

function realServer(d: Destination, status: DestinationStatus | undefined, state: RealServerState, details: string[] = []): RealServerRow {
  return {
    family: d.family, address: d.address, port: d.port, forward: d.forward, weight: d.weight,
    activeConns: status ? status.activeConns : null, inactiveConns: status ? status.inactiveConns : null, state, details,
  };
}

/** Ready and total endpoints of `slices` for one family and Service port name (not-ready: ready === false). */
function endpointCounts(slices: readonly V1EndpointSlice[], family: Family, portName: string): { ready: number; total: number } {
  let ready = 0;
  let total = 0;
  for (const slice of slices) {
    if (slice.addressType !== (family === 4 ? 'IPv4' : 'IPv6')) continue;
    if (!(slice.ports ?? []).some((p) => (p.name ?? '') === portName)) continue;
    for (const ep of slice.endpoints ?? []) {
      total++;
      if (ep.conditions?.ready !== false) ready++;
    }
  }
  return { ready, total };
}

/** A row for a virtual server as the kernel has it (extra and foreign rows). */
function kernelRow(service: VirtualServer, destinations: readonly DestinationStatus[], state: 'extra' | 'foreign'): StatusRow {
  return {
    namespace: null, name: null, type: null, local: false, vip: vipText(service),
    family: service.family, protocol: service.protocol, address: service.address, port: service.port, fwmark: service.fwmark,
    scheduler: service.scheduler, schedulerFlags: schedulerFlagNames(service.scheduler, service.flags), affinity: affinityOf(service),
    endpoints: null, realServers: destinations.length, state, details: [],
    destinations: destinations.map((d) => realServer(d, d, state)).sort(byAddressAndPort),
  };
}

function emptyRow(namespace: string | null, name: string | null, state: RowState, details: string[]): StatusRow {
  return {
    namespace, name, type: null, local: false, vip: null, family: null, protocol: null, address: null, port: null, fwmark: 0, scheduler: null,
    schedulerFlags: [], affinity: null, endpoints: null, realServers: null, state, details, destinations: [],
  };
}

/**
 * The rows: desired state (as the agent computes it) against one observation of the kernel. Pure.
 * Service rows come first, by namespace and name (a Service's rows in port order, IPv4 before IPv6),
 * then extra rows, then foreign ones, by address and port.
 */
export function statusRows(input: StatusInput): StatusReport {
  const ifname = input.ifname ?? DUMMY_LINK;
  const errors: StatusError[] = [];
  const slicesByService = new Map<string, V1EndpointSlice[]>();
  for (const slice of input.endpointSlices.values()) {
    const name = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (!name) continue;
    const owner = `${slice.metadata?.namespace ?? 'default'}/${name}`;
    slicesByService.set(owner, [...(slicesByService.get(owner) ?? []), slice]);
  }

  // Desired state, claimed in snapshot order as the reconciler does: the first Service to want a
  // virtual server gets it, a later one is skipped.
  const desired: DesiredState = { services: new Map(), addresses: new Map() };
  const wanted: Array<{ key: string; row?: StatusRow; vs?: DesiredVirtualServer; svc: V1Service; slices: V1EndpointSlice[] }> = [];
  const claims = new Map<string, string>();
  for (const svc of input.services.values()) {
    const key = objectKey(svc);
    const slices = slicesByService.get(key) ?? [];
    const result = desiredForService(svc, slices, input.config, input.node);
    errors.push(...result.errors.map((e) => ({ ...e, service: key })));
    if (!result.valid) {
      wanted.push({ key, svc, slices, row: emptyRow(...splitKey(key), 'invalid', result.errors.map((e) => e.reason)) });
      continue;
    }
    for (const vs of result.virtualServers) {
      const sk = serviceKey(vs.service);
      const holder = claims.get(sk);
      if (holder !== undefined) {
        const row = emptyRow(...splitKey(key), 'conflict', [`served for Service ${holder}`]);
        wanted.push({ key, svc, slices, row: { ...row, type: vs.kind, local: vs.local, ...identity(vs.service) } });
        continue;
      }
      claims.set(sk, key);
      desired.services.set(sk, vs);
      wanted.push({ key, svc, slices, vs });
    }
    for (const a of result.addresses) desired.addresses.set(a.address, a);
  }

  // What the agent's next full sync would write, by kernel service and by address.
  const observed = observedFromKernel(input.table, input.bound);
  const ops = diff(desired, observed, ifname);
  const opsByService = new Map<string, KernelOp[]>();
  const unbound = new Set<string>();
  const stale = new Set<string>();
  for (const op of ops) {
    if (op.kind === 'addAddress') unbound.add(op.address.address);
    else if (op.kind === 'deleteAddress') stale.add(op.address.address);
    else {
      const sk = serviceKey(op.service);
      opsByService.set(sk, [...(opsByService.get(sk) ?? []), op]);
    }
  }
  const kernel = new Map(input.table.services.map((e) => [serviceKey(e.service), e]));

  const rows: StatusRow[] = [];
  for (const w of wanted) {
    if (w.row) {
      rows.push(w.row);
      continue;
    }
    const vs = w.vs!;
    const sk = serviceKey(vs.service);
    const have = kernel.get(sk);
    const svcOps = opsByService.get(sk) ?? [];
    // The agent's target: what it would write (keepScheduler keeps the kernel's), else the kernel's (equal).
    const write = svcOps.find((op) => op.kind === 'addService' || op.kind === 'updateService') as { service: VirtualServer } | undefined;
    const target = write?.service ?? have?.service ?? vs.service;
    const portName = (w.svc.spec?.ports ?? [])
      .find((p) => (p.protocol ?? 'TCP') === vs.service.protocol && (vs.kind === 'NodePort' ? p.nodePort : p.port) === vs.service.port)?.name ?? '';
    const base = {
      namespace: splitKey(w.key)[0], name: splitKey(w.key)[1], type: vs.kind, local: vs.local, ...identity(vs.service),
      scheduler: target.scheduler, schedulerFlags: schedulerFlagNames(target.scheduler, target.flags), affinity: affinityOf(target),
      endpoints: endpointCounts(w.slices, vs.service.family, portName),
    };
    if (!have) {
      rows.push({
        ...base, realServers: null, state: 'missing', details: [],
        destinations: vs.destinations.map((d) => realServer(d, undefined, 'missing')).sort(byAddressAndPort),
      });
      continue;
    }
    const haveDests = new Map(have.destinations.map((d) => [destinationKey(d), d]));
    const destOps = new Map<string, KernelOp['kind']>();
    for (const op of svcOps) if ('destination' in op) destOps.set(destinationKey(op.destination), op.kind);
    const destinations: RealServerRow[] = [];
    for (const d of vs.destinations) {
      const cur = haveDests.get(destinationKey(d));
      const kind = destOps.get(destinationKey(d));
      if (!cur || kind === 'addDestination') destinations.push(realServer(d, undefined, 'missing'));
      else if (kind === 'updateDestination') destinations.push(realServer(cur, cur, 'mismatched', destinationDifferences(cur, d)));
      else destinations.push(realServer(cur, cur, 'in sync'));
    }
    for (const d of have.destinations) {
      if (destOps.get(destinationKey(d)) !== 'deleteDestination') continue;
      destinations.push(realServer(d, d, isDraining(have.service, d) ? 'draining' : 'extra'));
    }
    destinations.sort(byAddressAndPort);
    const drift = [
      ...(unbound.has(vs.service.address) ? [`VIP not bound to ${ifname}`] : []),
      ...(write ? serviceDifferences(have.service, target) : []),
      ...destinationSummary(destinations),
    ];
    const draining = drainingSummary(destinations, drift.length > 0);
    const details = [...drift, ...(draining ? [draining] : [])];
    const state: RowState = drift.length ? 'mismatched' : draining ? 'draining' : 'in sync';
    rows.push({ ...base, realServers: have.destinations.length, state, details, destinations });
  }
  rows.sort((a, b) => compareText(a.namespace!, b.namespace!) || compareText(a.name!, b.name!));

  const extra: VirtualServer[] = [];
  const foreign: VirtualServer[] = [];
  for (const { service } of input.table.services) {
    const sk = serviceKey(service);
    if (desired.services.has(sk)) continue;
    (opsByService.get(sk)?.some((op) => op.kind === 'deleteService') ? extra : foreign).push(service);
  }
  for (const s of extra.sort(compareKernelServices)) rows.push(kernelRow(s, kernel.get(serviceKey(s))!.destinations, 'extra'));
  const extraAddresses = new Set(extra.map((s) => s.address));
  for (const address of [...stale].sort(compareAddresses)) {
    if (extraAddresses.has(address)) continue;
    const family: Family = address.includes(':') ? 6 : 4;
    rows.push({ ...emptyRow(null, null, 'extra', ['address only']), vip: address, family, address, realServers: 0 });
  }
  for (const s of foreign.sort(compareKernelServices)) rows.push(kernelRow(s, kernel.get(serviceKey(s))!.destinations, 'foreign'));
  return { config: { scheduler: input.config.scheduler, schedulerFlags: [...input.config.schedulerFlags] }, rows, errors };
}

const splitKey = (key: string) => key.split('/') as [string, string];

function identity(s: VirtualServer) {
  return { vip: vipText(s), family: s.family, protocol: s.protocol, address: s.address, port: s.port, fwmark: s.fwmark };
}

export interface RowFilter {
  namespace?: string;
  names?: readonly string[];
  allIpvs?: boolean;
}

/** The rows a command line asks for: -n, Service names, --all-ipvs (see the header for the rules). */
export function filterRows(rows: readonly StatusRow[], f: RowFilter): StatusRow[] {
  const scoped = f.namespace !== undefined || (f.names?.length ?? 0) > 0;
  return rows.filter((r) => {
    if (r.namespace === null) return !scoped && (r.state !== 'foreign' || f.allIpvs === true);
    return (f.namespace === undefined || r.namespace === f.namespace) && (!f.names?.length || f.names.includes(r.name!));
  });
}

/** True when --check passes: every row is in sync or draining (foreign rows are someone else's). */
export const rowsInSync = (rows: readonly StatusRow[]) => rows.every((r) => r.state === 'in sync' || r.state === 'draining' || r.state === 'foreign');

// ---- output ------------------------------------------------------------------------------------------

/**
 * Columns as kubectl's printer lays them out (Go tabwriter: minwidth 6, padding 3, left-aligned): each
 * column is as wide as its widest cell plus 3, at least 6; the last column is not padded.
 */
export function formatColumns(lines: readonly (readonly string[])[]): string {
  const width = (s: string) => [...s].length;
  const widths: number[] = [];
  for (const cells of lines) {
    cells.forEach((c, i) => {
      if (i < cells.length - 1) widths[i] = Math.max(widths[i] ?? 0, width(c) + 3, 6);
    });
  }
  return lines
    .map((cells) => cells.map((c, i) => (i < cells.length - 1 ? c + ' '.repeat(widths[i] - width(c)) : c)).join('').trimEnd())
    .map((l) => `${l}\n`)
    .join('');
}

const NONE = '<none>';
const num = (n: number | null) => (n === null ? NONE : String(n));
const stateText = (state: string, details: readonly string[]) => (details.length ? `${state}: ${details.join(', ')}` : state);

function schedulerText(r: StatusRow): string {
  if (r.scheduler === null) return NONE;
  return r.schedulerFlags.length ? `${r.scheduler} (${r.schedulerFlags.join(',')})` : r.scheduler;
}

/** The table (default) or, with `wide`, one more row per real server and WEIGHT/ACTIVE/INACTIVE columns. */
export function renderTable(rows: readonly StatusRow[], wide = false): string {
  const header = ['NAMESPACE', 'NAME', 'TYPE', 'VIP:PORT/PROTO', 'SCHEDULER', 'AFFINITY', 'ENDPOINTS', 'REAL SERVERS'];
  const lines: string[][] = [wide ? [...header, 'WEIGHT', 'ACTIVE', 'INACTIVE', 'STATE'] : [...header, 'STATE']];
  for (const r of rows) {
    const cells = [
      r.namespace ?? NONE, r.name ?? NONE, r.type ? `${r.type}${r.local ? '/Local' : ''}` : NONE, r.vip ?? NONE, schedulerText(r), r.affinity ? affinityText(r.affinity) : NONE,
      r.endpoints ? `${r.endpoints.ready}/${r.endpoints.total}` : NONE, num(r.realServers),
    ];
    if (!wide) {
      lines.push([...cells, stateText(r.state, r.details)]);
      continue;
    }
    const inKernel = r.destinations.filter((d) => d.activeConns !== null);
    const sum = (k: 'activeConns' | 'inactiveConns') => (r.realServers === null ? NONE : String(inKernel.reduce((n, d) => n + d[k]!, 0)));
    lines.push([...cells, '', sum('activeConns'), sum('inactiveConns'), stateText(r.state, r.details)]);
    for (const d of r.destinations) {
      lines.push(['', '', '', `  -> ${hostPort(d.address, d.port)}`, '', '', '', '', String(d.weight), num(d.activeConns), num(d.inactiveConns), stateText(d.state, d.details)]);
    }
  }
  return formatColumns(lines);
}

export function statusDocument(report: StatusReport, rows: readonly StatusRow[]) {
  return { config: report.config, inSync: rowsInSync(rows), items: rows, errors: report.errors };
}

export function renderJson(report: StatusReport, rows: readonly StatusRow[]): string {
  return `${JSON.stringify(statusDocument(report, rows), null, 2)}\n`;
}

export function renderYaml(report: StatusReport, rows: readonly StatusRow[]): string {
  return yamlDump(statusDocument(report, rows), { noRefs: true, lineWidth: -1 });
}

// ---- the command -----------------------------------------------------------------------------------

const FLAGS = {
  source: { type: 'string', default: 'kube', help: 'where Services/EndpointSlices come from: "kube" (API server) or "dir:PATH" (YAML files)' },
  kubeconfig: { type: 'string', help: 'kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)' },
  'config-map': { type: 'string', default: 'kube-system/kipvs', help: "namespace/name of the agent's ConfigMap" },
  netns: { type: 'string', help: 'network namespace to read, e.g. /var/run/netns/NAME or /proc/PID/ns/net' },
  'ipvs-scheduler': { type: 'string', help: "the agent's --ipvs-scheduler, if it has one (wins over the ConfigMap)" },
  'ipvs-scheduler-flags': { type: 'string', help: "the agent's --ipvs-scheduler-flags, if it has them" },
  'hostname-override': { type: 'string', help: "the agent's node name (default: the host name): whose endpoints are local" },
  'nodeport-addresses': { type: 'string', help: "the agent's --nodeport-addresses, if it has them (comma-separated CIDRs)" },
  output: { type: 'string', short: 'o', help: 'output format: wide, json or yaml (default: a table)' },
  namespace: { type: 'string', short: 'n', help: "only this namespace's Services" },
  'all-namespaces': { type: 'boolean', short: 'A', help: 'every namespace (the default)' },
  'all-ipvs': { type: 'boolean', help: "also list IPVS services that are not kipvs's (STATE foreign)" },
  check: { type: 'boolean', help: 'exit 1 when a listed row is not in sync (the output is printed as usual)' },
  'sync-timeout': { type: 'string', default: '30s', help: 'how long to wait for the API view (e.g. 30s, 2m)' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
} as const;

class StatusUsageError extends Error {}
class StatusReadError extends Error {}

export function statusUsage(): string {
  const lines = [
    'Usage: kipvs status [NAME...] [flags]',
    '',
    "Compares the kernel's IPVS table with what the Services ask for, as the agent computes it.",
    'STATE: in sync | draining (removed real servers at weight 0 whose connections end; in sync for --check) |',
    '  missing | mismatched: what (kernel≠wanted) | extra | foreign (--all-ipvs) | invalid | conflict.',
    'All namespaces unless -n is given. Exit: 0; 1 --check found a row not in sync, or a NAME does not exist;',
    '2 usage error; 3 the kernel or the API view could not be read.',
    '',
    'Flags:',
  ];
  for (const [name, f] of Object.entries(FLAGS)) {
    const flag = 'short' in f ? `-${f.short}, --${name}` : `    --${name}`;
    const def = 'default' in f ? ` (default ${f.default})` : '';
    lines.push(`  ${flag.padEnd(28)} ${f.help}${def}`);
  }
  return lines.join('\n');
}

export interface StatusOptions {
  help: boolean;
  source: string;
  kubeconfig?: string;
  configMap: { namespace: string; name: string };
  netns?: string;
  overrides: Partial<ProxyConfig>;
  /** The agent's node name and --nodeport-addresses: the node context desired state is computed for. */
  nodeName: string;
  nodePortAddresses: string[];
  output: 'table' | 'wide' | 'json' | 'yaml';
  namespace?: string;
  names: string[];
  allIpvs: boolean;
  check: boolean;
  syncTimeoutMs: number;
}

export function statusOptions(argv: string[]): StatusOptions {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: FLAGS as never, strict: true, allowPositionals: true });
  } catch (err) {
    throw new StatusUsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const str = (k: string) => v[k] as string | undefined;
  let overrides: Partial<ProxyConfig>;
  try {
    overrides = schedulerOverrides(str('ipvs-scheduler'), str('ipvs-scheduler-flags'));
  } catch (err) {
    throw new StatusUsageError((err as Error).message);
  }
  const output = str('output') ?? 'table';
  if (!['table', 'wide', 'json', 'yaml'].includes(output)) throw new StatusUsageError(`--output: must be wide, json or yaml, not "${output}"`);
  if (v.namespace !== undefined && v['all-namespaces']) throw new StatusUsageError('-n/--namespace and -A/--all-namespaces exclude each other');
  if (str('namespace') === '') throw new StatusUsageError('--namespace: empty');
  const source = str('source')!;
  if (source !== 'kube' && !/^dir:.+/.test(source)) throw new StatusUsageError(`--source: must be "kube" or "dir:PATH", not "${source}"`);
  let nodePortAddresses: string[];
  try {
    nodePortAddresses = cidrFlag('nodeport-addresses', str('nodeport-addresses'));
  } catch (err) {
    throw new StatusUsageError((err as Error).message);
  }
  const [cmNamespace, cmName] = str('config-map')!.includes('/') ? str('config-map')!.split('/') : ['default', str('config-map')!];
  if (!cmNamespace || !cmName) throw new StatusUsageError(`--config-map: "${str('config-map')}" is not namespace/name`);
  let syncTimeoutMs: number;
  try {
    syncTimeoutMs = parseSeconds(str('sync-timeout')!) * 1000;
  } catch (err) {
    throw new StatusUsageError(`--sync-timeout: ${(err as Error).message}`);
  }
  return {
    help: v.help === true,
    source,
    kubeconfig: str('kubeconfig'),
    configMap: { namespace: cmNamespace, name: cmName },
    netns: str('netns'),
    overrides,
    nodeName: str('hostname-override') ?? hostname(),
    nodePortAddresses,
    output: output as StatusOptions['output'],
    namespace: str('namespace'),
    names: parsed.positionals,
    allIpvs: v['all-ipvs'] === true,
    check: v.check === true,
    syncTimeoutMs,
  };
}

export interface StatusDeps {
  /** Opens the kernel to read (default NetlinkKernel.open). */
  openKernel?: (netns?: string) => Promise<Kernel>;
  out?: (text: string) => void;
  err?: (text: string) => void;
}

/** The kernel's side: one table dump and kube-ipvs0's addresses ([] when the link is missing). */
async function readKernel(o: StatusOptions, deps: StatusDeps): Promise<{ table: IpvsTable; bound: LinkAddress[]; local: LocalAddress[] }> {
  let kernel: Kernel;
  try {
    kernel = await (deps.openKernel ?? NetlinkKernel.open)(o.netns);
  } catch (err) {
    throw new StatusReadError(`cannot open the kernel's IPVS${o.netns ? ` in ${o.netns}` : ''}: ${(err as Error).message}`);
  }
  try {
    const bound = kernel.listAddresses(DUMMY_LINK).catch((err: { code?: string }) => {
      if (err.code === 'ENODEV') return [];
      throw err;
    });
    const local = kernel.listLocalAddresses();
    return { table: await kernel.dumpTable(), bound: await bound, local: await local };
  } catch (err) {
    throw new StatusReadError(`cannot read the kernel's IPVS table: ${(err as Error).message}`);
  } finally {
    await kernel.close();
  }
}

function timeout<T>(p: Promise<T>, ms: number, why: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new StatusReadError(why())), ms); });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

interface ApiView {
  services: Map<string, V1Service>;
  endpointSlices: Map<string, V1EndpointSlice>;
  configMap?: V1ConfigMap;
  node?: V1Node;
  errors: SourceError[];
}

/** The API's side: the agent's Source, started, synced, read once and stopped. */
async function readApi(o: StatusOptions): Promise<ApiView> {
  const errors: SourceError[] = [];
  let lastFailure = '';
  const logger: Logger = {
    debug() {}, info() {}, error() {},
    warn: (msg, meta) => { lastFailure = `${msg}: ${String(meta?.error ?? '')}`; },
  };
  const cm = o.configMap;
  let source: Source;
  if (o.source.startsWith('dir:')) {
    source = new DirSource(o.source.slice(4), { configMap: `${cm.namespace}/${cm.name}`, watch: false, rescanMs: 0 });
  } else {
    const kubeConfig = new KubeConfig();
    try {
      if (o.kubeconfig) kubeConfig.loadFromFile(o.kubeconfig);
      else kubeConfig.loadFromDefault();
    } catch (err) {
      throw new StatusReadError(`cannot load the kubeconfig: ${(err as Error).message}`);
    }
    // Watched like the agent watches it: its first list gates synced(), so the snapshot holds it.
    source = new KubeSource({ kubeConfig, nodeName: o.nodeName, configMap: cm, logger, backoff: { initialMs: 200, maxMs: 2000 } });
  }
  const where = o.source === 'kube' ? 'the API server' : o.source.slice(4);
  try {
    await timeout(source.start(() => {}, (e) => errors.push(e)), o.syncTimeoutMs,
      () => `no Services, EndpointSlices and ConfigMap ${cm.namespace}/${cm.name} from ${where} within ${o.syncTimeoutMs / 1000}s${lastFailure ? ` (${lastFailure})` : ''}`);
    const snap = source.snapshot();
    return { services: new Map(snap.services), endpointSlices: new Map(snap.endpointSlices), configMap: snap.configMap, node: snap.node, errors };
  } catch (err) {
    throw err instanceof StatusReadError ? err : new StatusReadError(`cannot read ${where}: ${(err as Error).message}`);
  } finally {
    await source.stop().catch(() => {});
  }
}

/**
 * The object errors worth a warning line: not those an `invalid` row already shows; with -n or names,
 * only those of the Services asked for (and those of no Service: the ConfigMap, unreadable files).
 */
function warnings(errors: readonly StatusError[], rows: readonly StatusRow[], o: StatusOptions): StatusError[] {
  const shown = new Set(rows.filter((r) => r.state === 'invalid').map((r) => `${r.namespace}/${r.name}`));
  return errors.filter((e) => {
    if (e.service === undefined) return true;
    const [namespace, name] = splitKey(e.service);
    return !shown.has(e.service) && (o.namespace === undefined || namespace === o.namespace) && (!o.names.length || o.names.includes(name));
  });
}

/** `kipvs status ARGS`: prints the rows and returns the exit code. */
export async function statusMain(argv: string[], deps: StatusDeps = {}): Promise<number> {
  const out = deps.out ?? ((t: string) => void process.stdout.write(t));
  const err = deps.err ?? ((t: string) => void process.stderr.write(t));
  try {
    const o = statusOptions(argv);
    if (o.help) {
      out(`${statusUsage()}\n`);
      return 0;
    }
    const kernel = await readKernel(o, deps);
    const api = await readApi(o);
    const { config, errors: configErrors } = effectiveConfig(api.configMap, o.overrides);
    const zone = api.node?.metadata?.labels?.[ZONE_LABEL];
    const node: NodeContext = { name: o.nodeName, zone, ...nodeAddresses(kernel.local, DUMMY_LINK, parseCidrs(o.nodePortAddresses)) };
    const report = statusRows({ ...api, config, ...kernel, node });
    report.errors.unshift(...configErrors, ...api.errors);
    const rows = filterRows(report.rows, { namespace: o.namespace, names: o.names, allIpvs: o.allIpvs });
    if (o.output === 'json') out(renderJson(report, rows));
    else if (o.output === 'yaml') out(renderYaml(report, rows));
    else if (rows.length) out(renderTable(rows, o.output === 'wide'));
    else err(`No virtual servers found${o.namespace ? ` in namespace ${o.namespace}` : ''}.\n`);
    for (const e of warnings(report.errors, rows, o)) err(`Warning: ${e.object}: ${e.reason}\n`);
    const absent = o.names.filter((n) => ![...api.services.values()].some((s) =>
      s.metadata?.name === n && (o.namespace === undefined || (s.metadata?.namespace ?? 'default') === o.namespace)));
    for (const n of absent) err(`kipvs: Service "${n}" not found${o.namespace ? ` in namespace ${o.namespace}` : ''}\n`);
    return absent.length || (o.check && !rowsInSync(rows)) ? 1 : 0;
  } catch (e) {
    if (e instanceof StatusUsageError) {
      err(`kipvs status: ${e.message} (see kipvs status --help)\n`);
      return 2;
    }
    err(`kipvs status: ${e instanceof StatusReadError ? e.message : ((e as Error).stack ?? String(e))}\n`);
    return 3;
  }
}
