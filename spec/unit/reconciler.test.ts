// The reconciler against the in-memory kernel: what it writes, what it leaves alone, and how little
// it writes when little changed.
import { FakeKernel } from '../../lib/kernel/fake.js';
import { FaultyKernel } from '../../lib/kernel/faulty.js';
import { serviceKey, destinationKey, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import type { Kernel, VirtualServer } from '../../lib/kernel/types.js';
import { modelFromParts, type NftGlobals, type NftPart } from '../../lib/nft/model.js';
import { Reconciler } from '../../lib/proxy/reconciler.js';
import { captureLogger } from '../support/logger.js';
import { configMap, MemorySource, service, slice } from '../support/memory-source.js';

const http = [{ name: 'http', port: 80 }];
const backend = [{ name: 'http', port: 8080 }];

function setup(kernel: Kernel = new FakeKernel()) {
  const source = new MemorySource();
  const logger = captureLogger();
  const rec = new Reconciler({ kernel, source, logger });
  void source.start((c) => rec.noteChanges(c));
  return { kernel, source, logger, rec };
}

/** The fake's table as 'KEY scheduler flags -> dest:port weight' lines, sorted; flags without kipvs's mark unless foreign. */
function dump(k: FakeKernel): string[] {
  return k
    .table()
    .services.flatMap(({ service: s, destinations }) => [
      `${serviceKey(s)} ${s.scheduler} 0x${(s.flags & ~SVC_F_KIPVS).toString(16)} ${s.timeout}`,
      ...destinations.map((d) => `${serviceKey(s)} -> ${destinationKey(d)} w${d.weight}`),
    ])
    .sort();
}

const vips = (k: FakeKernel) =>
  k.localAddresses().filter((a) => a.ifname === 'kube-ipvs0').map((a) => `${a.address}/${a.prefixLength}`).sort();

test('programs Services and EndpointSlices: VIPs on kube-ipvs0, virtual and real servers', async () => {
  const { kernel, source, rec } = setup();
  source.put(service('web', '10.96.0.10', http), slice('web', 'a', ['10.244.1.5', '10.244.2.6'], backend));
  expect(await rec.sync()).toBe('ok');
  const k = kernel as FakeKernel;
  expect(dump(k)).toEqual([
    'TCP/10.96.0.10:80 -> 10.244.1.5:8080 w1',
    'TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1',
    'TCP/10.96.0.10:80 rr 0x0 0',
  ]);
  expect(vips(k)).toEqual(['10.96.0.10/32']);
});

test('nothing is written before the source has synced', async () => {
  const { kernel, source, rec } = setup();
  source.isSynced = false;
  source.put(service('web', '10.96.0.10', http));
  expect(await rec.sync()).toBe('ok');
  expect((kernel as FakeKernel).counters.messages).toBe(0);
  expect((kernel as FakeKernel).counters.reads).toBe(0);
});

test('a sync with no change writes nothing; one endpoint change writes one message and reads nothing', async () => {
  const { kernel, source, rec } = setup();
  const k = kernel as FakeKernel;
  for (let i = 0; i < 50; i++) {
    source.put(service(`s${i}`, `10.96.1.${i}`, http), slice(`s${i}`, 'a', [`10.244.${i}.1`, `10.244.${i}.2`], backend));
  }
  await rec.sync();
  k.resetCounters();
  expect(await rec.sync()).toBe('ok');
  expect(await rec.sync({ full: true })).toBe('ok');
  expect(k.counters.messages).toBe(0);

  k.resetCounters();
  source.put(slice('s7', 'a', ['10.244.7.1', '10.244.7.2', '10.244.7.3'], backend));
  await rec.sync();
  expect(k.counters.messages).toBe(1);
  expect(k.counters.writes.addDestination).toBe(1);
  expect(k.counters.reads).toBe(0);
  expect(dump(k)).toContain('TCP/10.96.1.7:80 -> 10.244.7.3:8080 w1');
});

test('a ConfigMap scheduler switch updates services in place, keeping their real servers', async () => {
  const { kernel, source, rec } = setup();
  const k = kernel as FakeKernel;
  source.put(service('web', '10.96.0.10', http), slice('web', 'a', ['10.244.1.5'], backend));
  await rec.sync();
  k.resetCounters();
  source.put(configMap({ scheduler: 'lc' }));
  await rec.sync();
  expect(k.counters.writes).toMatchObject({ updateService: 1, addService: 0, deleteService: 0, addDestination: 0, deleteDestination: 0 });
  expect(dump(k)).toContain('TCP/10.96.0.10:80 lc 0x0 0');
  source.put(configMap({ scheduler: 'sh', schedulerFlags: 'sh-port' }));
  await rec.sync();
  expect(dump(k)).toContain('TCP/10.96.0.10:80 sh 0x10 0');
});

test('a bad ConfigMap scheduler is reported and the last good one stays', async () => {
  const { kernel, source, rec, logger } = setup();
  source.put(configMap({ scheduler: 'wlc' }), service('web', '10.96.0.10', http));
  await rec.sync();
  source.put(configMap({ scheduler: 'fastest' }));
  await rec.sync();
  expect(logger.errors().join('\n')).toMatch(/ConfigMap kube-system\/kipvs: unknown scheduler "fastest".*keeping "wlc"/);
  expect(dump(kernel as FakeKernel)).toContain('TCP/10.96.0.10:80 wlc 0x0 0');
});

test('foreign IPVS services are never touched; stale owned ones are removed with their VIP', async () => {
  const k = new FakeKernel();
  const foreign: VirtualServer = { family: 4, protocol: 'TCP', address: '192.168.7.7', port: 80, fwmark: 0, scheduler: 'wrr', flags: 0, timeout: 0, netmask: 0xffffffff, peName: '' };
  const staleVs = { ...foreign, address: '10.96.9.9', scheduler: 'rr' };
  await k.ensureDummyLink('kube-ipvs0');
  k.inject(
    { kind: 'addService', service: foreign },
    { kind: 'addDestination', service: foreign, destination: { family: 4, address: '192.168.7.8', port: 80, forward: 'droute', weight: 3, upperThreshold: 0, lowerThreshold: 0 } },
    { kind: 'addService', service: { ...foreign, fwmark: 42 } },
    { kind: 'addService', service: staleVs },
    { kind: 'addAddress', ifname: 'kube-ipvs0', address: { family: 4, address: '10.96.9.9', prefixLength: 32 } },
  );
  const { source, rec } = setup(k);
  source.put(service('web', '10.96.0.10', http));
  await rec.sync();
  expect(dump(k)).toEqual([
    'FWM/4/42 wrr 0x0 0',
    'TCP/10.96.0.10:80 rr 0x0 0',
    'TCP/192.168.7.7:80 -> 192.168.7.8:80 w3',
    'TCP/192.168.7.7:80 wrr 0x0 0',
  ]);
  expect(vips(k)).toEqual(['10.96.0.10/32']);
});

test('drift is repaired by the next full sync', async () => {
  const { kernel, source, rec } = setup();
  const k = kernel as FakeKernel;
  source.put(service('web', '10.96.0.10', http), slice('web', 'a', ['10.244.1.5', '10.244.2.6'], backend));
  await rec.sync();
  const before = dump(k);
  const vs = k.table().services[0].service;
  k.inject(
    { kind: 'deleteDestination', service: vs, destination: { family: 4, address: '10.244.1.5', port: 8080 } },
    { kind: 'updateDestination', service: vs, destination: { family: 4, address: '10.244.2.6', port: 8080, forward: 'masq', weight: 9, upperThreshold: 0, lowerThreshold: 0 } },
    { kind: 'deleteAddress', ifname: 'kube-ipvs0', address: { family: 4, address: '10.96.0.10', prefixLength: 32 } },
  );
  await rec.sync({ full: true });
  expect(dump(k)).toEqual(before);
  expect(vips(k)).toEqual(['10.96.0.10/32']);
});

test('an unknown scheduler annotation is an error naming the Service, which keeps its scheduler', async () => {
  const { kernel, source, rec, logger } = setup();
  const annotated = (s: string) => service('web', '10.96.0.10', http, { metadata: { name: 'web', namespace: 'default', annotations: { 'kipvs.io/scheduler': s } } });
  source.put(annotated('lc'), service('other', '10.96.0.11', http));
  await rec.sync();
  source.put(annotated('bogus'));
  expect(await rec.sync()).toBe('ok');
  expect(logger.errors()).toContain('Service default/web: unknown scheduler "bogus" in kipvs.io/scheduler; keeping the current scheduler');
  expect(dump(kernel as FakeKernel)).toEqual(['TCP/10.96.0.10:80 lc 0x0 0', 'TCP/10.96.0.11:80 rr 0x0 0']);
});

test('a Service that turns malformed keeps what was programmed for it; others still sync', async () => {
  const { kernel, source, rec, logger } = setup();
  source.put(service('web', '10.96.0.10', http), slice('web', 'a', ['10.244.1.5'], backend));
  await rec.sync();
  source.put(service('web', 'garbage', http), service('new', '10.96.0.12', http));
  expect(await rec.sync()).toBe('ok');
  expect(logger.errors()).toContain('Service default/web: clusterIP "garbage" is not a valid IP address');
  expect(dump(kernel as FakeKernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.1.5:8080 w1', 'TCP/10.96.0.10:80 rr 0x0 0', 'TCP/10.96.0.12:80 rr 0x0 0']);
  source.delete(service('web', 'garbage', http));
  await rec.sync();
  expect(dump(kernel as FakeKernel)).toEqual(['TCP/10.96.0.12:80 rr 0x0 0']);
  expect(vips(kernel as FakeKernel)).toEqual(['10.96.0.12/32']);
});

test('kernel faults fail the sync; once they stop, the next sync converges', async () => {
  const fake = new FakeKernel();
  const faulty = new FaultyKernel(fake, { rate: 0.3, errnos: ['EBUSY', 'ENOMEM', 'EINVAL'], seed: 7 });
  const { source, rec, logger } = setup(faulty);
  for (let i = 0; i < 30; i++) source.put(service(`s${i}`, `10.96.2.${i}`, http), slice(`s${i}`, 'a', [`10.244.${i}.1`], backend));
  expect(await rec.sync()).toBe('failed');
  expect(logger.errors().some((e) => /EBUSY|ENOMEM|EINVAL/.test(e))).toBe(true);
  faulty.setFaultRate(0);
  expect(await rec.sync()).toBe('ok');
  expect(dump(fake)).toHaveLength(60);
  expect(vips(fake)).toHaveLength(30);
});

test('a restarted agent adopts the kernel state and writes nothing', async () => {
  const k = new FakeKernel();
  const first = setup(k);
  first.source.put(service('web', '10.96.0.10', http), slice('web', 'a', ['10.244.1.5'], backend), configMap({ scheduler: 'wlc' }));
  await first.rec.sync();
  k.resetCounters();
  const second = setup(k);
  second.source.put(service('web', '10.96.0.10', http), slice('web', 'a', ['10.244.1.5'], backend), configMap({ scheduler: 'wlc' }));
  expect(await second.rec.sync()).toBe('ok');
  expect(k.counters.messages).toBe(0);
});

// ---- beyond ClusterIP: NodePorts on the node's addresses, external IPs, ownership by mark -------------

/** A kernel with the node's own interface eth0 holding `addresses`. */
async function nodeKernel(...addresses: string[]): Promise<FakeKernel> {
  const k = new FakeKernel();
  await k.ensureDummyLink('eth0');
  k.inject(...addresses.map((a) => ({ kind: 'addAddress' as const, ifname: 'eth0', address: { family: (a.includes(':') ? 6 : 4) as 4 | 6, address: a, prefixLength: a.includes(':') ? 64 : 24 } })));
  return k;
}

const nodePortService = (name: string, clusterIP: string, nodePort: number, spec: Record<string, unknown> = {}) =>
  service(name, clusterIP, [{ name: 'http', port: 80, nodePort } as { name: string; port: number }], { spec: { type: 'NodePort', ...spec } as never });

test('a NodePort is served on every node address, never bound to kube-ipvs0; an address that appears or goes is picked up by the next full sync', async () => {
  const k = await nodeKernel('192.168.1.10', 'fd00:1::10', 'fe80::1');
  const { source, rec } = setup(k);
  source.put(nodePortService('web', '10.96.0.10', 30080), slice('web', 'a', ['10.244.1.5'], backend));
  expect(await rec.sync()).toBe('ok');
  // IPv4 Service: the IPv4 node address only; loopback, link-local and kube-ipvs0 addresses never.
  expect(dump(k).filter((l) => !l.includes('->'))).toEqual(['TCP/10.96.0.10:80 rr 0x0 0', 'TCP/192.168.1.10:30080 rr 0x0 0']);
  expect(dump(k)).toContain('TCP/192.168.1.10:30080 -> 10.244.1.5:8080 w1');
  expect(vips(k)).toEqual(['10.96.0.10/32']);

  k.inject({ kind: 'addAddress', ifname: 'eth0', address: { family: 4, address: '192.168.1.11', prefixLength: 24 } });
  await rec.sync(); // partial: addresses are read on full syncs
  expect(dump(k)).not.toContain('TCP/192.168.1.11:30080 rr 0x0 0');
  await rec.sync({ full: true });
  expect(dump(k)).toContain('TCP/192.168.1.11:30080 rr 0x0 0');
  k.inject({ kind: 'deleteAddress', ifname: 'eth0', address: { family: 4, address: '192.168.1.10', prefixLength: 24 } });
  await rec.sync({ full: true });
  expect(dump(k).filter((l) => !l.includes('->'))).toEqual(['TCP/10.96.0.10:80 rr 0x0 0', 'TCP/192.168.1.11:30080 rr 0x0 0']);
});

test('kipvs marks its virtual servers: after a restart its stale NodePorts are deleted, a foreign one on a node address never is', async () => {
  const k = await nodeKernel('192.168.1.10');
  const foreign: VirtualServer = { family: 4, protocol: 'TCP', address: '192.168.1.10', port: 30099, fwmark: 0, scheduler: 'wrr', flags: 0, timeout: 0, netmask: 0xffffffff, peName: '' };
  k.inject({ kind: 'addService', service: foreign });
  const first = setup(k);
  first.source.put(nodePortService('web', '10.96.0.10', 30080));
  await first.rec.sync();
  expect(k.table().services.filter((s) => s.service.flags & SVC_F_KIPVS).map((s) => serviceKey(s.service)).sort())
    .toEqual(['TCP/10.96.0.10:80', 'TCP/192.168.1.10:30080']);

  // A new agent, whose API view no longer has the Service: it deletes what it marked, and only that.
  const second = setup(k);
  second.source.put(service('other', '10.96.0.20', http));
  expect(await second.rec.sync()).toBe('ok');
  expect(dump(k)).toEqual(['TCP/10.96.0.20:80 rr 0x0 0', 'TCP/192.168.1.10:30099 wrr 0x0 0']);
});

test('external and load-balancer IPs: bound to kube-ipvs0 unless another interface has them', async () => {
  const k = await nodeKernel('192.168.1.10', '203.0.113.50');
  const { source, rec } = setup(k);
  source.put(service('shop', '10.96.0.20', http, {
    spec: { type: 'LoadBalancer', externalIPs: ['203.0.113.50', '203.0.113.51'] } as never,
    status: { loadBalancer: { ingress: [{ ip: '198.51.100.5' }] } },
  }));
  await rec.sync();
  expect(dump(k)).toEqual(['TCP/10.96.0.20:80 rr 0x0 0', 'TCP/198.51.100.5:80 rr 0x0 0', 'TCP/203.0.113.50:80 rr 0x0 0', 'TCP/203.0.113.51:80 rr 0x0 0']);
  expect(vips(k)).toEqual(['10.96.0.20/32', '198.51.100.5/32', '203.0.113.51/32']);
});

test("a Node update recomputes Services only when the zone changes; topology hints then follow the node's zone", async () => {
  const { kernel, source, rec } = setup();
  const k = kernel as FakeKernel;
  const hinted = slice('web', 'a', ['10.244.1.5', '10.244.2.6'], backend);
  hinted.endpoints[0].hints = { forZones: [{ name: 'zone-a' }] };
  hinted.endpoints[1].hints = { forZones: [{ name: 'zone-b' }] };
  source.put(service('web', '10.96.0.10', http, { metadata: { name: 'web', annotations: { 'service.kubernetes.io/topology-mode': 'Auto' } } }), hinted);
  const node = (zone: string, heartbeat: string) =>
    ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', labels: { 'topology.kubernetes.io/zone': zone } }, status: { conditions: [{ type: 'Ready', status: 'True', lastHeartbeatTime: heartbeat }] } });
  source.put(node('zone-a', 't1') as never);
  await rec.sync();
  expect(dump(k).filter((l) => l.includes('->'))).toEqual(['TCP/10.96.0.10:80 -> 10.244.1.5:8080 w1']);
  source.put(node('zone-a', 't2') as never);
  await rec.sync();
  expect(rec.lastReport?.written).toBe(0);
  source.put(node('zone-b', 't3') as never);
  await rec.sync();
  expect(dump(k).filter((l) => l.includes('->'))).toEqual(['TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
});

test('the nftables table follows desired state: whole on full syncs, only the touched parts on partial ones; a failure fails the sync and is retried whole', async () => {
  const applied: Array<{ full: boolean; services: string[]; bound: string[]; gone: string[] }> = [];
  let fail = false;
  const firewall = {
    async update(globals: NftGlobals, parts: ReadonlyMap<string, NftPart | undefined>, opts: { full?: boolean } = {}) {
      if (fail) throw new Error('nftables: update inet kipvs failed (exit 1): Error: Could not process rule');
      const model = modelFromParts(globals, [...parts.values()].filter((p) => p !== undefined));
      applied.push({
        full: !!opts.full,
        services: model.services.map((s) => `${s.kind} ${s.address}:${s.port}${s.local ? ' local' : ''}`),
        bound: model.boundAddresses.map((a) => a.address),
        gone: [...parts].filter(([, p]) => !p).map(([k]) => k),
      });
      return true;
    },
  };
  const kernel = await nodeKernel('192.168.1.10');
  const source = new MemorySource();
  const logger = captureLogger();
  const rec = new Reconciler({ kernel, source, logger, firewall, clusterCIDRs: ['10.244.0.0/16'] });
  void source.start((c) => rec.noteChanges(c));
  source.put(nodePortService('web', '10.96.0.10', 30080, { externalTrafficPolicy: 'Local' }), slice('web', 'a', ['10.244.1.5'], backend));
  expect(await rec.sync()).toBe('ok');
  expect(applied).toEqual([{ full: true, services: ['ClusterIP 10.96.0.10:80', 'NodePort 192.168.1.10:30080 local'], bound: ['10.96.0.10'], gone: [] }]);
  expect(await rec.sync()).toBe('ok'); // nothing changed: not even rendered
  expect(applied).toHaveLength(1);
  source.put(service('api', '10.96.0.20', http));
  expect(await rec.sync()).toBe('ok');
  // Only the new Service's parts: its virtual server and its address.
  expect(applied.at(-1)).toEqual({ full: false, services: ['ClusterIP 10.96.0.20:80'], bound: ['10.96.0.20'], gone: [] });
  source.delete(service('api', '10.96.0.20', http));
  expect(await rec.sync()).toBe('ok');
  expect(applied.at(-1)).toEqual({ full: false, services: [], bound: [], gone: ['service TCP/10.96.0.20:80', 'address 10.96.0.20'] });
  fail = true;
  source.put(service('api', '10.96.0.20', http));
  expect(await rec.sync()).toBe('failed');
  expect(logger.errors().join('\n')).toMatch(/nftables: update inet kipvs failed/);
  expect(rec.lastReport?.errors).toEqual({ nftables: 1 });
  fail = false;
  expect(await rec.sync()).toBe('ok');
  expect(rec.lastReport?.full).toBe(true);
  expect(applied.at(-1)).toEqual({ full: true, services: ['ClusterIP 10.96.0.10:80', 'NodePort 192.168.1.10:30080 local', 'ClusterIP 10.96.0.20:80'], bound: ['10.96.0.10', '10.96.0.20'], gone: [] });
});

test('the nftables table is written before the IPVS writes, so no new virtual server answers before its masquerade exists; a failed table still lets them go ahead', async () => {
  const kernel = await nodeKernel('192.168.1.10');
  const seen: string[][] = [];
  let fail = false;
  const firewall = {
    async update() {
      seen.push(dump(kernel).filter((l) => !l.includes('->')));
      if (fail) throw new Error('nftables: update inet kipvs failed (exit 1)');
      return true;
    },
  };
  const source = new MemorySource();
  const rec = new Reconciler({ kernel, source, logger: captureLogger(), firewall });
  void source.start((c) => rec.noteChanges(c));
  source.put(nodePortService('web', '10.96.0.10', 30080), slice('web', 'a', ['10.244.1.5'], backend));
  expect(await rec.sync()).toBe('ok');
  expect(seen).toEqual([[]]); // nothing programmed yet when the table went in
  const programmed = dump(kernel).filter((l) => !l.includes('->'));
  expect(programmed).toHaveLength(2);
  fail = true;
  source.put(service('api', '10.96.0.20', http));
  expect(await rec.sync()).toBe('failed');
  expect(seen.at(-1)).toEqual(programmed);
  expect(dump(kernel).filter((l) => !l.includes('->'))).toEqual(expect.arrayContaining([...programmed, expect.stringMatching(/^TCP\/10\.96\.0\.20:80 /)]));
});

test('the Services with a healthCheckNodePort are kept as results change, the others never listed', async () => {
  const { source, rec } = setup(await nodeKernel('192.168.1.10'));
  const lb = (hc: number) => service('shop', '10.96.0.20', [{ name: 'http', port: 80, nodePort: 30080 } as { name: string; port: number }],
    { spec: { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: hc } as never });
  source.put(lb(32000), service('web', '10.96.0.10', http));
  await rec.sync();
  const checks = () => [...rec.healthCheckResults()].map(([k, r]) => `${k} :${r.healthCheck?.port} ${r.healthCheck?.localEndpoints}`);
  expect(checks()).toEqual(['default/shop :32000 0']);
  source.put(lb(32001));
  await rec.sync();
  expect(checks()).toEqual(['default/shop :32001 0']);
  source.delete(lb(32001));
  await rec.sync();
  expect(checks()).toEqual([]);
});
