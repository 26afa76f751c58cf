// fast-check arbitraries for the bad-input properties: Kubernetes objects as the API server or a
// manifest directory may hand them over, as untyped JSON. Three kinds:
//  - valid Services and EndpointSlices, generated from a model so that the kernel state they need is
//    computed here (expectedKernel), independently of lib/proxy/desired.ts;
//  - malformed ones: a valid object with one malformation whose effect is known (the Service is
//    skipped, programmed as its model, or programmed with the default scheduler) and which must be
//    reported naming the object;
//  - junk: every field missing or of the wrong type, or fully random JSON.
// Plus ConfigMaps (with the configuration they must yield) and kernel state that is not kipvs's.

import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { destinationKey, hostNetmask, serviceKey, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import type { Destination, Family, IpvsTable, IpvsTimeouts, LinkAddress, ServiceId, VirtualServer } from '../../lib/kernel/types.js';
import { SCHEDULER_FLAGS, SCHEDULERS } from '../../lib/proxy/config.js';
import { ANNOTATION_SCHEDULER, ANNOTATION_SCHEDULER_FLAGS, objectKey } from '../../lib/proxy/desired.js';
import { SERVICE_NAME_LABEL } from '../../lib/sources/types.js';

/** Untyped JSON, as it arrives. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = Record<string, any>;

/** One object to put into the source, and what the agent must say about it. */
export interface Case {
  object: Json;
  /** How errors name it: 'Service ns/name', 'EndpointSlice ns/name', 'ConfigMap ns/name'. */
  label: string;
  /** Malformed in a way the agent must report (its Service is read, so the malformation is seen). */
  report: boolean;
  /** Well-formed: the agent must never report it. */
  valid: boolean;
  /** For counterexamples: what is wrong with it. */
  what?: string;
}

export function labelOf(o: Json): string {
  if (o.kind === 'ConfigMap') return `ConfigMap ${o.metadata?.namespace ?? 'default'}/${o.metadata?.name ?? '?'}`;
  return `${o.kind} ${objectKey(o)}`;
}

const kase = (object: Json, c: Omit<Case, 'object' | 'label'>): Case => ({ object, label: labelOf(object), ...c });

/** The first case of each label: what a source holds when objects share kind, namespace and name. */
export function uniqueByLabel(cases: readonly Case[]): Case[] {
  const seen = new Set<string>();
  return cases.filter((c) => !seen.has(c.label) && seen.add(c.label));
}

// ---- addresses ----------------------------------------------------------------------------------

export interface VipPool {
  v4(i: number): string;
  v6(i: number): string;
}
const pool = (v4: string, v6: string): VipPool => ({ v4: (i) => `${v4}${i + 1}`, v6: (i) => `${v6}${(i + 1).toString(16)}` });
/** VIPs of valid Services. */
export const VALID_VIPS = pool('10.96.0.', 'fd00:96::');
/** VIPs of malformed Services. */
export const MUTATED_VIPS = pool('10.97.0.', 'fd00:97::');
/** VIPs of junk Services. */
export const JUNK_VIPS = pool('10.98.0.', 'fd00:98::');
/** Whether a kernel key or address line is at a junk VIP: junk may well program those, nobody knows what. */
export const atJunkVip = (text: string) => /(^|\/|\[)(10\.98\.0\.|fd00:98::)/.test(text);
/** Foreign virtual servers: addresses no Service ever has (one range inside the service CIDR). */
const FOREIGN = [pool('192.168.7.', 'fd00:f::'), pool('10.96.1.', 'fd00:96:1::')];

const vip = (p: VipPool, family: Family, i: number) => (family === 4 ? p.v4(i) : p.v6(i));
const familyOf = (address: string): Family => (address.includes(':') ? 6 : 4);
const canonical = (address: string) => ipaddr.parse(address).toString();

/** IPv6 text as Kubernetes may have written it: canonical, expanded, upper case, zero-padded. */
function spell(address: string, style: number): string {
  if (!address.includes(':')) return address;
  const a = ipaddr.IPv6.parse(address);
  const padded = a.parts.map((n) => n.toString(16).padStart(4, '0')).join(':');
  return [a.toString(), a.toNormalizedString(), a.toString().toUpperCase(), padded][style % 4];
}

const podAddress = (family: Family): fc.Arbitrary<string> =>
  family === 4
    ? fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 40 })).map(([a, b]) => `10.244.${a}.${b}`)
    : fc.tuple(fc.integer({ min: 1, max: 0x40 }), fc.nat(3)).map(([n, style]) => spell(`fd00:244::${n.toString(16)}`, style));

/** Unparseable, non-canonical or decorated IP texts. */
export const BAD_IP_TEXTS = ['10.0.0.256', '::g', '', '1.2.3', '1.2.3.4.5', '01.2.3.4', ' 10.96.0.1', '10.96.0.1 ', '10.96.0.1/32', 'localhost', '1:2:3', ':::', 'fd00::1%eth0'];
const NOT_STRINGS = [5, null, true, {}, ['10.96.0.1']];
/** Valid IPs no virtual server can listen on. */
const NON_UNICAST_VIPS = ['0.0.0.0', '::', '224.0.0.1', 'ff02::1'];
/** Valid IPs the kernel refuses as real servers (inet_addr_type / ipv6_addr_type). */
const nonUnicastEndpoints = (f: Family) =>
  f === 4 ? ['0.0.0.0', '0.1.2.3', '224.0.0.1', '239.255.255.250', '255.255.255.255'] : ['::', 'ff02::1', 'fe80::1', '::ffff:10.244.0.1', 'fd00:244::1%eth0'];
const wrongFamily = (f: Family) => (f === 4 ? ['fd00:244::1', 'FD00:244::2'] : ['10.244.0.1']);

const portNumber = fc.oneof(fc.constantFrom(1, 53, 80, 443, 8080, 65535), fc.integer({ min: 1, max: 65535 }));

// ---- the model of valid Services ----------------------------------------------------------------

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export interface PortModel {
  /** '' for the one unnamed port. */
  name: string;
  /** undefined: not written (TCP). */
  protocol?: Protocol;
  port: number;
}
export interface SliceModel {
  family: Family;
  ports: Array<{ name: string; port: number }>;
  endpoints: Array<{ addresses: string[]; ready?: boolean }>;
}
export interface ServiceDraft {
  shape: 'ClusterIP' | 'NodePort' | 'headless' | 'ExternalName';
  /** Families of spec.clusterIPs, in order. */
  families: Family[];
  /** How IPv6 VIPs are spelled (see spell). */
  spelling: number;
  /** Only the legacy spec.clusterIP (single-stack). */
  legacy: boolean;
  ports: PortModel[];
  affinity?: { mode: 'None' } | { mode: 'ClientIP'; timeout?: number };
  scheduler?: { name: string; flags?: string[] };
  slices: SliceModel[];
}
export interface ServiceModel extends ServiceDraft {
  namespace: string;
  name: string;
  /** Canonical VIPs, one per family, in the order of families. */
  ips: string[];
}

const PORT_NAMES = ['http', 'https', 'metrics', 'grpc', 'dns'];
const programmableShape = (s: ServiceDraft['shape']) => s === 'ClusterIP' || s === 'NodePort';

const portsArb = (port: fc.Arbitrary<number>): fc.Arbitrary<PortModel[]> => fc
  .uniqueArray(
    fc.record({ protocol: fc.option(fc.constantFrom<Protocol>('TCP', 'UDP', 'SCTP'), { nil: undefined }), port }),
    { minLength: 1, maxLength: 3, selector: (p) => `${p.protocol ?? 'TCP'}/${p.port}` },
  )
  .chain((ps) =>
    fc
      .tuple(fc.shuffledSubarray(PORT_NAMES, { minLength: ps.length, maxLength: ps.length }), fc.boolean())
      .map(([names, unnamed]) => ps.map((p, i) => ({ ...p, name: ps.length === 1 && unnamed ? '' : names[i] }))),
  );

const sliceArb = (family: Family, portNames: string[]): fc.Arbitrary<SliceModel> =>
  fc.record({
    family: fc.constant(family),
    ports: fc.subarray(portNames).chain((names) => fc.tuple(...names.map((name) => portNumber.map((port) => ({ name, port }))))),
    endpoints: fc.array(
      fc.record({
        addresses: fc.array(podAddress(family), { minLength: 1, maxLength: 2 }),
        ready: fc.option(fc.boolean(), { nil: undefined }),
      }),
      { maxLength: 4 },
    ),
  });

const schedulerAnnotation = fc.option(
  fc.constantFrom(...SCHEDULERS).chain((name) =>
    fc.record({
      name: fc.constant(name),
      flags: fc.option(fc.subarray(Object.keys(SCHEDULER_FLAGS).filter((f) => SCHEDULER_FLAGS[f].scheduler === name)), { nil: undefined }),
    }),
  ),
  { nil: undefined },
);

/**
 * A valid Service without namespace, name and VIPs (see place). `programmable`: one that gets virtual
 * servers; `port`: its port numbers (a few, for Services that collide).
 */
export function serviceDraft(opts: { programmable?: boolean; port?: fc.Arbitrary<number> } = {}): fc.Arbitrary<ServiceDraft> {
  const shapes: Array<ServiceDraft['shape']> = opts.programmable ? ['ClusterIP', 'NodePort'] : ['ClusterIP', 'ClusterIP', 'NodePort', 'headless', 'ExternalName'];
  return fc
    .record({
      shape: fc.constantFrom(...shapes),
      families: fc.constantFrom<Family[]>([4], [6], [4, 6], [6, 4]),
      spelling: fc.nat(3),
      legacy: fc.boolean(),
      ports: portsArb(opts.port ?? portNumber),
      affinity: fc.option(
        fc.oneof(
          fc.constant({ mode: 'None' as const }),
          fc.record({ mode: fc.constant('ClientIP' as const), timeout: fc.option(fc.integer({ min: 1, max: 86400 }), { nil: undefined }) }),
        ),
        { nil: undefined },
      ),
      scheduler: schedulerAnnotation,
    })
    .chain((d) =>
      fc
        .tuple(...d.families.map((f) => fc.array(sliceArb(f, d.ports.map((p) => p.name)), { maxLength: 2 })))
        .map((slices) => ({ ...d, legacy: d.legacy && d.families.length === 1, slices: slices.flat() })),
    );
}

/** A draft with its identity: VIP number `vipIndex[family]` of `vips` for each family. */
export function place(d: ServiceDraft, namespace: string, name: string, vips: VipPool, vipIndex: Record<Family, number>): ServiceModel {
  return { ...d, namespace, name, ips: d.families.map((f) => vip(vips, f, vipIndex[f])) };
}

export const isProgrammable = (m: ServiceDraft) => programmableShape(m.shape);

export function renderService(m: ServiceModel): Json {
  const spec: Json = { type: m.shape === 'NodePort' ? 'NodePort' : 'ClusterIP' };
  if (m.shape === 'ExternalName') Object.assign(spec, { type: 'ExternalName', externalName: 'db.example.com' });
  else if (m.shape === 'headless') Object.assign(spec, { clusterIP: 'None', clusterIPs: ['None'] });
  else {
    const written = m.ips.map((ip) => spell(ip, m.spelling));
    spec.clusterIP = written[0];
    if (!m.legacy) spec.clusterIPs = written;
    if (written.length === 2) spec.ipFamilyPolicy = 'RequireDualStack';
  }
  spec.ports = m.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), ...(p.protocol ? { protocol: p.protocol } : {}), port: p.port, targetPort: p.port }));
  if (m.affinity) {
    spec.sessionAffinity = m.affinity.mode;
    if (m.affinity.mode === 'ClientIP' && m.affinity.timeout !== undefined) spec.sessionAffinityConfig = { clientIP: { timeoutSeconds: m.affinity.timeout } };
  }
  const metadata: Json = { namespace: m.namespace, name: m.name };
  if (m.scheduler) {
    metadata.annotations = { [ANNOTATION_SCHEDULER]: m.scheduler.name };
    if (m.scheduler.flags) metadata.annotations[ANNOTATION_SCHEDULER_FLAGS] = m.scheduler.flags.join(',');
  }
  return { apiVersion: 'v1', kind: 'Service', metadata, spec };
}

const sliceMeta = (namespace: string, name: string, service: string) => ({ namespace, name, labels: { [SERVICE_NAME_LABEL]: service } });

export function renderSlices(m: ServiceModel): Json[] {
  return m.slices.map((s, i) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: sliceMeta(m.namespace, `${m.name}-${i}`, m.name),
    addressType: s.family === 4 ? 'IPv4' : 'IPv6',
    ports: s.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), port: p.port, protocol: 'TCP' })),
    endpoints: s.endpoints.map((e) => ({ addresses: e.addresses, ...(e.ready === undefined ? {} : { conditions: { ready: e.ready } }) })),
  }));
}

/** A valid Service and its slices as cases. */
export const validCases = (m: ServiceModel): Case[] =>
  [renderService(m), ...renderSlices(m)].map((o) => kase(o, { report: false, valid: true }));

// ---- expected kernel state ------------------------------------------------------------------------

export const serviceLine = (s: VirtualServer) =>
  `${serviceKey(s)} ${s.scheduler} flags=0x${s.flags.toString(16)} timeout=${s.timeout} netmask=${s.netmask}${s.peName ? ` pe=${s.peName}` : ''}`;
export const destinationLine = (s: ServiceId, d: Destination) =>
  `${serviceKey(s)} -> ${destinationKey(d)} ${d.forward} w=${d.weight} thresholds=${d.upperThreshold}/${d.lowerThreshold}`;

/** The table as sorted lines (settings included), of the services whose key passes `keep`. */
export function tableLines(table: IpvsTable, keep: (key: string) => boolean = () => true): string[] {
  return table.services
    .filter(({ service }) => keep(serviceKey(service)))
    .flatMap(({ service, destinations }) => [serviceLine(service), ...destinations.map((d) => destinationLine(service, d))])
    .sort();
}

export interface ExpectedConfig {
  scheduler: string;
  flags: string[];
  /** What the kernel's timeouts must be (the fake starts at 900/120/300; 0 in the config leaves them). */
  timeouts: IpvsTimeouts;
}

const flagBits = (names: readonly string[]) => names.reduce((bits, n) => bits | SCHEDULER_FLAGS[n].bit, 0);

/** The IPVS table lines and kube-ipvs0 addresses `models` need under `config`, computed from the models. */
export function expectedKernel(models: readonly ServiceModel[], config: ExpectedConfig): { table: string[]; vips: string[] } {
  const table: string[] = [];
  const vips = new Set<string>();
  for (const m of models.filter(isProgrammable)) {
    const persistent = m.affinity?.mode === 'ClientIP';
    const scheduler = m.scheduler?.name ?? config.scheduler;
    const bits = flagBits(m.scheduler ? (m.scheduler.flags ?? []) : config.flags);
    for (const p of m.ports) {
      for (const address of m.ips) {
        const family = familyOf(address);
        const vs: VirtualServer = {
          family, protocol: p.protocol ?? 'TCP', address, port: p.port, fwmark: 0, scheduler,
          flags: (persistent ? 1 : 0) | bits | SVC_F_KIPVS,
          timeout: m.affinity?.mode === 'ClientIP' ? (m.affinity.timeout ?? 10800) : 0,
          netmask: hostNetmask(family), peName: '',
        };
        table.push(serviceLine(vs));
        const dests = new Set<string>();
        for (const s of m.slices.filter((s) => s.family === family)) {
          const sp = s.ports.find((x) => x.name === p.name);
          if (!sp) continue;
          for (const e of s.endpoints.filter((e) => e.ready !== false)) {
            for (const a of e.addresses) {
              dests.add(destinationLine(vs, { family, address: canonical(a), port: sp.port, forward: 'masq', weight: 1, upperThreshold: 0, lowerThreshold: 0 }));
            }
          }
        }
        table.push(...dests);
        vips.add(`${address}/${family === 4 ? 32 : 128}`);
      }
    }
  }
  return { table: table.sort(), vips: [...vips].sort() };
}

// ---- malformed Services ---------------------------------------------------------------------------

/**
 * What a malformation does to the Service: 'nothing' (skipped, or nothing left to program), 'model'
 * (a bad port is skipped, the rest is programmed as the model says) or 'defaultScheduler' (a bad
 * scheduler annotation: programmed with the configured scheduler, since its virtual servers are new).
 */
export type Effect = 'nothing' | 'model' | 'defaultScheduler';
interface Mutation {
  what: string;
  effect: Effect;
  apply(o: Json): void;
}
const mutation = (what: string, effect: Effect, apply: (o: Json) => void): Mutation => ({ what, effect, apply });
const show = (v: unknown) => (v === undefined ? 'missing' : JSON.stringify(v));
function setOrDelete(o: Json, key: string, v: unknown): void {
  if (v === undefined) delete o[key];
  else o[key] = v;
}

/** Bad port entries, the named ones named apart (two entries alike would rightly be reported alike). */
const badPorts = (n: { minLength: number; maxLength: number }) =>
  fc.array(badPortEntry(), n).map((ps) => ps.map((p, i) => (p && typeof p === 'object' && 'name' in p ? { ...p, name: `bad${i}` } : p)));
function badPortEntry() {
  return fc.oneof(
    fc.constantFrom(0, -1, 65536, 1.5, '80', null, undefined, true, [80], 1e9).map((port): unknown => ({ name: 'bad', ...(port === undefined ? {} : { port }) })),
    fc.constantFrom('ICMP', 'tcp', '', 'UDP ', 5, true, {}).map((protocol): unknown => ({ name: 'bad', port: 9999, protocol })),
    fc.constantFrom<unknown>(null, 'http', 80, [], [{ port: 80 }]),
  );
}

const badAnnotations = fc.oneof(
  fc.constantFrom('fastest', 'RR', 'none', 'round-robin', 'toString').map((s) => ({ [ANNOTATION_SCHEDULER]: s })),
  // Without a scheduler annotation the flags go with the configured scheduler: these fit none.
  fc.constantFrom('sh-bogus', 'toString', 'constructor', 'SH-PORT', 'sh-port,mh-port').map((f) => ({ [ANNOTATION_SCHEDULER_FLAGS]: f })),
  fc.constantFrom(['rr', 'sh-port'], ['sh', 'mh-port'], ['mh', 'sh-fallback'], ['lc', 'mh-port']).map(([s, f]) => ({ [ANNOTATION_SCHEDULER]: s, [ANNOTATION_SCHEDULER_FLAGS]: f })),
  fc.tuple(fc.constantFrom(ANNOTATION_SCHEDULER, ANNOTATION_SCHEDULER_FLAGS), fc.constantFrom(5, null, true, ['rr'], {})).map(([k, v]) => ({ [k]: v })),
);

const clusterIPsOf = (o: Json): unknown[] => o.spec.clusterIPs ?? [o.spec.clusterIP];
function setClusterIPs(o: Json, ips: unknown[]): void {
  o.spec.clusterIPs = ips;
  setOrDelete(o.spec, 'clusterIP', typeof ips[0] === 'string' ? ips[0] : undefined);
}

/** One malformation of a rendered, programmable Service. */
const serviceMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constantFrom(undefined, '', null).map((v) => mutation(`metadata.name ${show(v)}`, 'nothing', (o) => setOrDelete(o.metadata, 'name', v))),
  fc.constantFrom(undefined, null, 'ClusterIP', [], 5).map((v) => mutation(`spec ${show(v)}`, 'nothing', (o) => setOrDelete(o, 'spec', v))),
  fc.tuple(fc.constantFrom<unknown>(...BAD_IP_TEXTS, ...NON_UNICAST_VIPS, ...NOT_STRINGS), fc.boolean()).map(([bad, first]) =>
    mutation(`clusterIPs with ${show(bad)}`, 'nothing', (o) => {
      const ips = clusterIPsOf(o);
      setClusterIPs(o, first ? [bad, ...ips.slice(1)] : [...ips, bad]);
    }),
  ),
  fc.constant(
    mutation('clusterIPs has two addresses of one family', 'nothing', (o) => {
      const first = String(clusterIPsOf(o)[0]);
      setClusterIPs(o, [first, familyOf(first) === 4 ? '10.97.1.1' : 'fd00:97:1::1']);
    }),
  ),
  fc.constantFrom<unknown>('10.97.0.1', { length: 1 }, 5, {}, { 0: '10.97.0.1' }).map((v) => mutation(`clusterIPs not a list: ${show(v)}`, 'nothing', (o) => (o.spec.clusterIPs = v))),
  fc.constantFrom<unknown>(...BAD_IP_TEXTS.filter(Boolean), ...NON_UNICAST_VIPS, 5, true, {}).map((v) =>
    mutation(`legacy clusterIP ${show(v)}`, 'nothing', (o) => {
      delete o.spec.clusterIPs;
      o.spec.clusterIP = v;
    }),
  ),
  fc.constantFrom<unknown>('Sticky', 'clientip', '', 5, true, {}).map((v) => mutation(`sessionAffinity ${show(v)}`, 'nothing', (o) => (o.spec.sessionAffinity = v))),
  fc.constantFrom<unknown>(0, -1, 86401, 1.5, 'x', '60', true, [], {}).map((v) =>
    mutation(`ClientIP timeoutSeconds ${show(v)}`, 'nothing', (o) => Object.assign(o.spec, { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: v } } })),
  ),
  fc.constantFrom<unknown>(undefined, null, [], {}, '80', 80, true, { 0: { port: 80 } }).map((v) => mutation(`spec.ports ${show(v)}`, 'nothing', (o) => setOrDelete(o.spec, 'ports', v))),
  badPorts({ minLength: 1, maxLength: 2 }).map((bad) => mutation(`every port bad: ${show(bad)}`, 'nothing', (o) => (o.spec.ports = bad))),
  fc.tuple(badPorts({ minLength: 1, maxLength: 2 }), fc.array(fc.nat(), { minLength: 2, maxLength: 2 })).map(([bad, at]) =>
    mutation(`bad ports added: ${show(bad)}`, 'model', (o) => {
      bad.forEach((p, i) => o.spec.ports.splice(at[i] % (o.spec.ports.length + 1), 0, p));
    }),
  ),
  fc.constant(mutation('a port listed twice', 'model', (o) => o.spec.ports.push({ ...o.spec.ports[0], name: 'again' }))),
  badAnnotations.map((a) => mutation(`annotations ${show(a)}`, 'defaultScheduler', (o) => (o.metadata.annotations = a))),
);

export interface MutatedService {
  cases: Case[];
  /** What the kernel must hold for it; undefined: nothing. */
  expect?: ServiceModel;
}

/** A programmable draft with one malformation, placed by `mutate`: its Service case must be reported. */
export const mutatedDraft = (port?: fc.Arbitrary<number>) => fc.tuple(serviceDraft({ programmable: true, port }), serviceMutation);

export function mutate([draft, m]: [ServiceDraft, Mutation], namespace: string, name: string, vips: VipPool, vipIndex: Record<Family, number>): MutatedService {
  const model = place(draft, namespace, name, vips, vipIndex);
  // A JSON copy: structuredClone's objects come from another realm under jest, which fast-check cannot print.
  const svc = JSON.parse(JSON.stringify(renderService(model))) as Json;
  m.apply(svc);
  const cases = [kase(svc, { report: true, valid: false, what: m.what }), ...renderSlices(model).map((o) => kase(o, { report: false, valid: true }))];
  const expect = m.effect === 'nothing' ? undefined : m.effect === 'model' ? model : { ...model, scheduler: undefined };
  return { cases, expect };
}

// ---- malformed EndpointSlices ---------------------------------------------------------------------

const badAddresses = (f: Family) =>
  fc.oneof(
    fc.constantFrom<unknown>(...BAD_IP_TEXTS, ...NOT_STRINGS, ...wrongFamily(f), ...nonUnicastEndpoints(f)).map((a) => [a]),
    fc.constantFrom<unknown>([], undefined, null, '10.244.0.1', {}, 5),
  );
const badEndpoint = (f: Family) =>
  fc.oneof(
    fc.tuple(badAddresses(f), fc.constantFrom<unknown>(undefined, {}, { ready: true }, { ready: null }, 'x')).map(([addresses, conditions]) => {
      const ep: Json = {};
      setOrDelete(ep, 'addresses', addresses);
      setOrDelete(ep, 'conditions', conditions);
      return ep;
    }),
    fc.constantFrom<unknown>(null, 'x', 5, [], ['10.244.0.1']),
  );

/**
 * An EndpointSlice for port `portName` of a `family` Service that contributes no real server and is
 * malformed in a way the agent sees: a bad port number, ports or endpoints that are not lists, or every
 * endpoint without a usable address.
 */
export function badSlice(family: Family, portName: string): fc.Arbitrary<{ what: string; body: Json }> {
  const goodEndpoints = fc.array(podAddress(family), { minLength: 1, maxLength: 2 }).map((as) => as.map((a) => ({ addresses: [a] })));
  const port = (p: unknown): Json => ({ ...(portName ? { name: portName } : {}), ...(p === undefined ? {} : { port: p }) });
  return fc.oneof(
    fc.tuple(fc.constantFrom<unknown>(0, -1, 65536, 1.5, '8080', null, undefined, true), goodEndpoints).map(([p, endpoints]) => ({
      what: `port number ${show(p)}`, body: { ports: [port(p)], endpoints },
    })),
    fc.tuple(fc.constantFrom<unknown>({}, 'http', 5, true), goodEndpoints).map(([ports, endpoints]) => ({ what: `ports ${show(ports)}`, body: { ports, endpoints } })),
    fc.array(badEndpoint(family), { minLength: 1, maxLength: 3 }).map((endpoints) => ({ what: 'every endpoint unusable', body: { ports: [port(8080)], endpoints } })),
    fc.constantFrom<unknown>({}, 'x', 5, true).map((endpoints) => ({ what: `endpoints ${show(endpoints)}`, body: { ports: [port(8080)], endpoints } })),
  );
}

/** A bad slice of port `portName` of Service `svc` as a case; `report` when that port is programmed. */
export function badSliceCase(svc: ServiceModel, family: Family, portName: string, suffix: string, bad: { what: string; body: Json }, report: boolean): Case {
  const object = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: sliceMeta(svc.namespace, `${svc.name}-${suffix}`, svc.name),
    addressType: family === 4 ? 'IPv4' : 'IPv6',
    ...bad.body,
  };
  return kase(object, { report, valid: false, what: bad.what });
}

// ---- junk -------------------------------------------------------------------------------------------

/** A value as likely to be right as wrong: `arb`, random JSON, or one of the usual wrong values. */
const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: 4, arbitrary: arb },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
    { weight: 1, arbitrary: fc.constantFrom<unknown>(undefined, null, '', 0, -1, 1.5, '80', [], {}, true) },
  );
const partial = <T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }) => fc.record(model, { requiredKeys: [] });

const ipText = (vips: VipPool, anyIp: boolean) =>
  fc.oneof(
    fc.tuple(fc.constantFrom<Family>(4, 6), fc.nat(5)).map(([f, i]) => vip(vips, f, i)),
    fc.constantFrom(...BAD_IP_TEXTS, ...NON_UNICAST_VIPS, 'None'),
    ...(anyIp ? [fc.ipV4(), fc.ipV6()] : []),
  );
const endpointText = fc.oneof(
  podAddress(4),
  podAddress(6),
  fc.constantFrom(...BAD_IP_TEXTS, ...nonUnicastEndpoints(4), ...nonUnicastEndpoints(6)),
);
const JUNK_NAMES = ['a', 'b', 'c', 'd'];

/**
 * A Service whose every field may be missing, of the wrong type or wrong: VIPs from `vips` (or, with
 * `anyIp`, any address at all). Names from a small set, so junk Services have junk slices.
 */
export const plausibleService = (vips: VipPool, anyIp = false): fc.Arbitrary<Json> =>
  fc.record({
    apiVersion: fc.constant('v1'),
    kind: fc.constant('Service'),
    metadata: maybe(
      partial({
        namespace: maybe(fc.constantFrom('default', 'junk')),
        name: maybe(fc.constantFrom(...JUNK_NAMES)),
        annotations: maybe(
          fc.dictionary(fc.constantFrom(ANNOTATION_SCHEDULER, ANNOTATION_SCHEDULER_FLAGS, 'x'), maybe(fc.constantFrom(...SCHEDULERS, 'fastest', 'sh-port', 'mh-port,mh-fallback', '', 'bogus'))),
        ),
      }),
    ),
    spec: maybe(
      partial({
        type: maybe(fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName')),
        clusterIP: maybe(ipText(vips, anyIp)),
        clusterIPs: maybe(fc.array(maybe(ipText(vips, anyIp)), { maxLength: 3 })),
        ports: maybe(
          fc.array(
            maybe(partial({ name: maybe(fc.constantFrom('http', 'dns', '')), protocol: maybe(fc.constantFrom('TCP', 'UDP', 'SCTP', 'ICMP', 'tcp')), port: maybe(portNumber) })),
            { maxLength: 3 },
          ),
        ),
        sessionAffinity: maybe(fc.constantFrom('None', 'ClientIP', 'Sticky')),
        sessionAffinityConfig: maybe(partial({ clientIP: maybe(partial({ timeoutSeconds: maybe(fc.integer({ min: -2, max: 90000 })) })) })),
      }),
    ),
  });

/** An EndpointSlice whose every field may be missing, of the wrong type or wrong; labelled for a junk Service. */
export const plausibleSlice: fc.Arbitrary<Json> = fc.record({
  apiVersion: fc.constant('discovery.k8s.io/v1'),
  kind: fc.constant('EndpointSlice'),
  metadata: maybe(
    partial({
      namespace: maybe(fc.constantFrom('default', 'junk')),
      name: maybe(fc.constantFrom('s1', 's2', 's3', 's4')),
      labels: maybe(fc.dictionary(fc.constantFrom(SERVICE_NAME_LABEL, 'x'), maybe(fc.constantFrom(...JUNK_NAMES)))),
    }),
  ),
  addressType: maybe(fc.constantFrom('IPv4', 'IPv6', 'FQDN')),
  ports: maybe(fc.array(maybe(partial({ name: maybe(fc.constantFrom('http', 'dns', '')), port: maybe(portNumber), protocol: maybe(fc.constant('TCP')) })), { maxLength: 3 })),
  endpoints: maybe(
    fc.array(
      maybe(
        partial({
          addresses: maybe(fc.array(maybe(endpointText), { maxLength: 2 })),
          conditions: maybe(partial({ ready: maybe(fc.boolean()), serving: maybe(fc.boolean()), terminating: maybe(fc.boolean()) })),
        }),
      ),
      { maxLength: 4 },
    ),
  ),
});

/** Fully random JSON posing as `kind`: random top-level fields, random or missing metadata. */
export const randomObject = (kind: 'Service' | 'EndpointSlice'): fc.Arbitrary<Json> =>
  fc
    .tuple(fc.object({ maxDepth: 3 }), fc.oneof(fc.anything({ maxDepth: 2 }), partial({ namespace: fc.constant('junk'), name: fc.string({ maxLength: 6 }) })))
    .map(([body, metadata]) => ({ ...body, kind, metadata }));

/** A random field layout for a slice of `svc` (its label, its namespace): random JSON everywhere else. */
export const randomSliceOf = (svc: { namespace: string; name: string }, suffix: string): fc.Arbitrary<Json> =>
  fc
    .record({
      addressType: fc.oneof(fc.constantFrom('IPv4', 'IPv6'), fc.jsonValue()),
      ports: fc.oneof(fc.jsonValue(), fc.array(fc.record({ name: fc.oneof(fc.constantFrom(...PORT_NAMES, ''), fc.jsonValue()), port: fc.jsonValue() }))),
      endpoints: fc.oneof(fc.jsonValue(), fc.array(fc.oneof(fc.jsonValue(), fc.record({ addresses: fc.jsonValue(), conditions: fc.jsonValue() })))),
    })
    .map((body) => ({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: sliceMeta(svc.namespace, `${svc.name}-${suffix}`, svc.name), ...body }));

export const junkCase = (object: Json): Case => kase(object, { report: false, valid: false });

// ---- ConfigMaps -------------------------------------------------------------------------------------

export interface ConfigCase {
  /** undefined: no ConfigMap. */
  case?: Case;
  expect: ExpectedConfig;
}

const KERNEL_TIMEOUTS: IpvsTimeouts = { tcp: 900, tcpFin: 120, udp: 300 };
const TIMEOUT_KEYS = { tcpTimeout: 'tcp', tcpFinTimeout: 'tcpFin', udpTimeout: 'udp' } as const;
/** The longest IPVS timeout every kernel takes: INT_MAX / HZ with HZ up to 1000. */
export const MAX_IPVS_TIMEOUT = Math.floor(0x7fffffff / 1000);

const configMapObject = (data: unknown): Json => {
  const o: Json = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kipvs', namespace: 'kube-system' } };
  setOrDelete(o, 'data', data);
  return o;
};

type Entry<T> = { kind: 'absent' } | { kind: 'good'; text: string; value: T } | { kind: 'bad'; text: unknown };
const entry = <T>(good: fc.Arbitrary<{ text: string; value: T }>, bad: fc.Arbitrary<unknown>, allowBad: boolean): fc.Arbitrary<Entry<T>> =>
  fc.oneof(
    fc.constant({ kind: 'absent' as const }),
    good.map((g) => ({ kind: 'good' as const, ...g })),
    ...(allowBad ? [bad.map((text) => ({ kind: 'bad' as const, text }))] : []),
  );

const goodTimeout = fc.oneof(
  fc.integer({ min: 0, max: 100000 }).map((n) => ({ text: String(n), value: n })),
  fc.integer({ min: 1, max: 1000 }).map((n) => ({ text: `${n}s`, value: n })),
  fc.integer({ min: 1, max: 600 }).map((n) => ({ text: `${n}m`, value: n * 60 })),
  fc.integer({ min: 1, max: 48 }).map((n) => ({ text: ` ${n}h `, value: n * 3600 })),
  fc.constant({ text: String(MAX_IPVS_TIMEOUT), value: MAX_IPVS_TIMEOUT }),
);
const badTimeout = fc.constantFrom<unknown>('', 'x', '-1', '1.5', '1d', '15 minutes', String(MAX_IPVS_TIMEOUT + 1), '9999999', '596524h', '99999999999999999999', 900, null, true, {}, []);
const badScheduler = fc.constantFrom<unknown>('fastest', 'RR', '', ' ', 'none', 'toString', 5, null, true, {});
const badFlags = fc.constantFrom<unknown>('bogus', 'toString', 'sh-port,mh-port', 'SH-PORT', 5, null, true);
const goodFlags = (scheduler: string) => {
  const names = Object.keys(SCHEDULER_FLAGS).filter((f) => SCHEDULER_FLAGS[f].scheduler === scheduler);
  return fc.oneof(fc.constantFrom('', ' , ').map((text) => ({ text, value: [] as string[] })), fc.subarray(names).map((value) => ({ text: value.join(', '), value })));
};

/**
 * A ConfigMap and the configuration it yields over the defaults (rr, no flags, kernel timeouts),
 * when the previous configuration was the defaults. `allowBad`: values, keys and data that are wrong.
 */
export function configCase(allowBad: boolean): fc.Arbitrary<ConfigCase> {
  const defaults: ExpectedConfig = { scheduler: 'rr', flags: [], timeouts: KERNEL_TIMEOUTS };
  const whole = fc.oneof(
    fc.constant<ConfigCase>({ expect: defaults }),
    fc.constantFrom(undefined, null).map((data) => ({ case: kase(configMapObject(data), { report: false, valid: true }), expect: defaults })),
    ...(allowBad
      ? [fc.constantFrom<unknown>('scheduler=lc', [], ['scheduler'], 5, true).map((data) => ({ case: kase(configMapObject(data), { report: true, valid: false, what: `data ${show(data)}` }), expect: defaults }))]
      : []),
  );
  const keyed = entry(fc.constantFrom(...SCHEDULERS).chain((s) => fc.constantFrom(s, ` ${s} `).map((text) => ({ text, value: s }))), badScheduler, allowBad)
    .chain((scheduler) =>
      fc.record({
        scheduler: fc.constant(scheduler),
        flags: entry(goodFlags(scheduler.kind === 'good' ? scheduler.value : 'rr'), badFlags, allowBad),
        tcpTimeout: entry(goodTimeout, badTimeout, allowBad),
        tcpFinTimeout: entry(goodTimeout, badTimeout, allowBad),
        udpTimeout: entry(goodTimeout, badTimeout, allowBad),
        unknown: allowBad ? fc.uniqueArray(fc.constantFrom('schedular', 'tcp_timeout', 'mode', 'Scheduler', 'toString', 'constructor'), { maxLength: 2 }) : fc.constant([]),
      }),
    )
    .map((e): ConfigCase => {
      const data: Json = {};
      const put = (key: string, x: Entry<unknown>) => x.kind !== 'absent' && (data[key] = x.text);
      put('scheduler', e.scheduler);
      put('schedulerFlags', e.flags);
      for (const k of Object.keys(TIMEOUT_KEYS) as Array<keyof typeof TIMEOUT_KEYS>) put(k, e[k]);
      for (const k of e.unknown) data[k] = 'x';
      let { scheduler, flags } = defaults;
      if (e.scheduler.kind !== 'bad') {
        if (e.scheduler.kind === 'good') scheduler = e.scheduler.value;
        if (e.flags.kind === 'good') flags = e.flags.value;
        if (e.flags.kind === 'bad') [scheduler, flags] = [defaults.scheduler, defaults.flags];
      }
      const timeouts = { ...KERNEL_TIMEOUTS };
      for (const [k, field] of Object.entries(TIMEOUT_KEYS) as Array<[keyof typeof TIMEOUT_KEYS, keyof IpvsTimeouts]>) {
        const x = e[k];
        if (x.kind === 'good' && x.value) timeouts[field] = x.value;
      }
      const bad = [e.scheduler, e.flags, e.tcpTimeout, e.tcpFinTimeout, e.udpTimeout].some((x) => x.kind === 'bad') || e.unknown.length > 0;
      return { case: kase(configMapObject(data), { report: bad, valid: !bad }), expect: { scheduler, flags, timeouts } };
    });
  return fc.oneof(whole, { weight: 3, arbitrary: keyed });
}

// ---- kernel state that is not kipvs's ---------------------------------------------------------------

export interface KernelEntry {
  service: VirtualServer;
  destinations: Destination[];
}
export interface ForeignState {
  services: KernelEntry[];
  /** Addresses on links other than kube-ipvs0 ('lo' exists; others are created). */
  links: Array<{ ifname: string; addresses: LinkAddress[] }>;
}

const anyUnicast = (f: Family) =>
  fc.oneof(podAddress(f).map(canonical), fc.tuple(fc.constantFrom(VALID_VIPS, MUTATED_VIPS, ...FOREIGN), fc.nat(40)).map(([p, i]) => vip(p, f, i)));

const destinations = (family: Family) =>
  fc.uniqueArray(
    fc.record({
      family: fc.constant(family),
      address: anyUnicast(family),
      port: portNumber,
      forward: fc.constantFrom('masq' as const, 'droute' as const, 'tunnel' as const, 'local' as const),
      weight: fc.integer({ min: 0, max: 100 }),
      upperThreshold: fc.integer({ min: 0, max: 50 }),
    }).chain((d) => fc.integer({ min: 0, max: d.upperThreshold }).map((lowerThreshold) => ({ ...d, lowerThreshold }))),
    { maxLength: 3, selector: destinationKey },
  );

/** A virtual server at an address from `addresses` (or a fwmark one), with real servers. */
const kernelEntry = (addresses: (f: Family) => fc.Arbitrary<string>, fwmark: boolean): fc.Arbitrary<KernelEntry> =>
  fc
    .record({
      family: fc.constantFrom<Family>(4, 6),
      protocol: fc.constantFrom<Protocol>('TCP', 'UDP', 'SCTP'),
      port: portNumber,
      fwmark: fwmark ? fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 1000 })) : fc.constant(0),
      scheduler: fc.constantFrom('rr', 'wrr', 'lc', 'sh', 'mh', 'none'),
      flags: fc.constantFrom(0, 1, 4, 8, 0x10, 0x18, 0x21),
      timeout: fc.integer({ min: 0, max: 3600 }),
      peName: fc.constantFrom('', '', 'sip'),
      wide: fc.boolean(),
    })
    .chain(({ wide, ...s }) =>
      fc.tuple(addresses(s.family), destinations(s.family)).map(([address, ds]) => ({
        service: { ...s, address, netmask: s.family === 4 ? (wide ? 0xffffff00 : 0xffffffff) : wide ? 64 : 128 },
        destinations: ds,
      })),
    );

const uniqueEntries = (arb: fc.Arbitrary<KernelEntry>, maxLength: number) => fc.uniqueArray(arb, { maxLength, selector: (e) => serviceKey(e.service) });

const linkAddresses = fc.uniqueArray(
  fc.tuple(fc.constantFrom<Family>(4, 6), fc.constantFrom(VALID_VIPS, MUTATED_VIPS, ...FOREIGN), fc.nat(10), fc.nat(32)).map(([family, p, i, n]) => ({
    family, address: vip(p, family, i), prefixLength: family === 4 ? n : 96 + n,
  })),
  { maxLength: 4, selector: (a) => a.address },
);

/**
 * Another tool's IPVS services (at addresses never bound on kube-ipvs0, fwmark ones included) with
 * their real servers (at any address, VIPs included), and addresses on other links (VIPs included).
 */
export const foreignState: fc.Arbitrary<ForeignState> = fc.record({
  services: uniqueEntries(kernelEntry((f) => fc.tuple(fc.constantFrom(...FOREIGN), fc.nat(30)).map(([p, i]) => vip(p, f, i)), true), 6),
  links: fc.tuple(linkAddresses, linkAddresses).map(([eth0, lo]) => [{ ifname: 'eth0', addresses: eth0 }, { ifname: 'lo', addresses: lo }]),
});

/** What an earlier kipvs left: virtual servers at valid-pool VIPs, those VIPs bound on kube-ipvs0. */
export const staleState: fc.Arbitrary<KernelEntry[]> = uniqueEntries(
  kernelEntry((f) => fc.nat(5).map((i) => vip(VALID_VIPS, f, i)), false),
  5,
);
