// observedFromKernel: the observation a full sync builds from one dump. It keeps the kept observation's
// entries where the dump shows exactly them (no new objects for an unchanged table) and takes everything
// else, drift included, from the dump.
import { FakeKernel } from '../../lib/kernel/fake.js';
import { serviceKey, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import type { Destination, KernelOp, LinkAddress, VirtualServer } from '../../lib/kernel/types.js';
import { Destinations, diff, observedFromKernel } from '../../lib/proxy/diff.js';

const vs = (address: string, scheduler = 'rr'): VirtualServer => ({
  family: 4, protocol: 'TCP', address, port: 80, fwmark: 0, scheduler, flags: SVC_F_KIPVS, timeout: 0, netmask: 0xffffffff, peName: '',
});
const rs = (address: string, weight = 1): Destination => ({ family: 4, address, port: 8080, forward: 'masq', weight, upperThreshold: 0, lowerThreshold: 0 });
const vip = (address: string, prefixLength = 32): LinkAddress => ({ family: 4, address, prefixLength });

async function kernelWith(...ops: KernelOp[]) {
  const k = new FakeKernel();
  await k.ensureDummyLink('kube-ipvs0');
  k.inject(...ops);
  return k;
}
const read = async (k: FakeKernel) => ({ table: await k.dumpTable(), bound: await k.listAddresses('kube-ipvs0') });

const A = vs('10.96.0.1');
const B = vs('10.96.0.2');
const program: KernelOp[] = [
  { kind: 'addAddress', ifname: 'kube-ipvs0', address: vip('10.96.0.1') },
  { kind: 'addService', service: A },
  { kind: 'addDestination', service: A, destination: rs('10.244.0.1') },
  { kind: 'addDestination', service: A, destination: rs('10.244.0.2') },
  { kind: 'addService', service: B },
  { kind: 'addDestination', service: B, destination: rs('10.244.0.3') },
];

test('an unchanged table: every entry is the kept one itself', async () => {
  const k = await kernelWith(...program);
  const first = await read(k);
  const kept = observedFromKernel(first.table, first.bound);
  const again = await read(k);
  const next = observedFromKernel(again.table, again.bound, undefined, kept);
  expect(next).not.toBe(kept);
  for (const key of [serviceKey(A), serviceKey(B)]) expect(next.services.get(key)).toBe(kept.services.get(key));
  expect(next.addresses.get('10.96.0.1')).toBe(kept.addresses.get('10.96.0.1'));
});

test.each<[string, KernelOp[]]>([
  ['a weight changed', [{ kind: 'updateDestination', service: A, destination: rs('10.244.0.2', 0) }]],
  ['a real server added', [{ kind: 'addDestination', service: A, destination: rs('10.244.0.9') }]],
  ['a real server deleted', [{ kind: 'deleteDestination', service: A, destination: rs('10.244.0.2') }]],
  ['a real server replaced', [
    { kind: 'deleteDestination', service: A, destination: rs('10.244.0.2') },
    { kind: 'addDestination', service: A, destination: rs('10.244.0.9') },
  ]],
  ['the scheduler changed', [{ kind: 'updateService', service: vs('10.96.0.1', 'wlc') }]],
])('drift (%s) is taken from the dump; the virtual server that did not change is still the kept one', async (_, drift) => {
  const k = await kernelWith(...program);
  const first = await read(k);
  const kept = observedFromKernel(first.table, first.bound);
  k.inject(...drift);
  const again = await read(k);
  const next = observedFromKernel(again.table, again.bound, undefined, kept);
  expect(next).toEqual(observedFromKernel(again.table, again.bound)); // what it would be without a kept observation
  expect(next.services.get(serviceKey(A))).not.toBe(kept.services.get(serviceKey(A)));
  expect(next.services.get(serviceKey(B))).toBe(kept.services.get(serviceKey(B)));
});

test('an address bound with another prefix length is taken from the dump', async () => {
  const k = await kernelWith(...program);
  const first = await read(k);
  const kept = observedFromKernel(first.table, first.bound);
  k.inject({ kind: 'deleteAddress', ifname: 'kube-ipvs0', address: vip('10.96.0.1') }, { kind: 'addAddress', ifname: 'kube-ipvs0', address: vip('10.96.0.1', 24) });
  const again = await read(k);
  expect(observedFromKernel(again.table, again.bound, undefined, kept).addresses.get('10.96.0.1')).toEqual(vip('10.96.0.1', 24));
});

test('diff: a scope naming a key or an address more than once makes its ops once, in the place of its first naming', async () => {
  const k = await kernelWith(...program);
  const first = await read(k);
  const observed = observedFromKernel(first.table, first.bound);
  const C = vs('10.96.0.3');
  const desired = {
    services: new Map([
      [serviceKey(A), { key: serviceKey(A), owner: 'default/a:http', service: A, destinations: [rs('10.244.0.1'), rs('10.244.0.7')], kind: 'ClusterIP' as const, local: false, sourceRanges: [] }],
      [serviceKey(C), { key: serviceKey(C), owner: 'default/c:http', service: C, destinations: [rs('10.244.0.8')], kind: 'ClusterIP' as const, local: false, sourceRanges: [] }],
    ]),
    addresses: new Map([['10.96.0.3', vip('10.96.0.3')]]),
  };
  const once = diff(desired, observed, 'kube-ipvs0', { services: [serviceKey(A), serviceKey(B), serviceKey(C)], addresses: ['10.96.0.1', '10.96.0.3'] });
  const twice = diff(desired, observed, 'kube-ipvs0', {
    services: [serviceKey(A), serviceKey(B), serviceKey(A), serviceKey(C), serviceKey(B), serviceKey(C)],
    addresses: ['10.96.0.1', '10.96.0.3', '10.96.0.1', '10.96.0.3'],
  });
  expect(once.map((op) => op.kind)).toEqual([
    'addAddress', 'addDestination', 'deleteDestination', 'addService', 'addDestination', 'deleteService', 'deleteAddress',
  ]);
  expect(twice).toEqual(once);
});

test.each([5, 24])('Destinations of up to %s addresses × 3 ports: as a list (up to 16) or maps, the same lookups, sizes and order (by port as first added, then as added)', (addresses) => {
  // The reference: by port, then address, in JavaScript Maps' insertion order.
  const model = new Map<number, Map<string, Destination>>();
  const d = new Destinations();
  let seed = 7;
  const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
  for (let step = 0; step < 2000; step++) {
    const x: Destination = { ...rs(`10.244.0.${rnd(addresses)}`, 1 + rnd(3)), port: 8080 + rnd(3) };
    if (rnd(3) === 0) {
      d.delete(x);
      if (model.get(x.port)?.delete(x.address) && model.get(x.port)!.size === 0) model.delete(x.port);
    } else {
      d.set(x);
      if (!model.has(x.port)) model.set(x.port, new Map());
      model.get(x.port)!.set(x.address, x);
    }
    const want = [...model.values()].flatMap((m) => [...m.values()]);
    expect([...d.values()]).toEqual(want);
    expect(d.size).toBe(want.length);
    const probe = { family: 4 as const, address: `10.244.0.${rnd(addresses)}`, port: 8080 + rnd(3) };
    expect(d.get(probe)).toBe(model.get(probe.port)?.get(probe.address));
  }
});
