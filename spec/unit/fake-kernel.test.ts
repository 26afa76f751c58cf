// The fake kernel must refuse, normalise and answer the way Linux IPVS and rtnetlink do, or the
// reconciler tests built on it prove nothing.

import { jest } from '@jest/globals';
import { KernelError } from '../../lib/errors.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import type { Destination, KernelOp, LinkAddress, ServiceId, VirtualServer } from '../../lib/kernel/types.js';

const svc = (over: Partial<VirtualServer> = {}): VirtualServer => ({
  family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80, fwmark: 0,
  scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff, peName: '', ...over,
});
const svc6 = (over: Partial<VirtualServer> = {}): VirtualServer =>
  svc({ family: 6, address: 'fd00::10', netmask: 128, ...over });
const dst = (over: Partial<Destination> = {}): Destination => ({
  family: 4, address: '10.244.1.5', port: 8080, forward: 'masq', weight: 1, upperThreshold: 0, lowerThreshold: 0, ...over,
});
const dst6 = (over: Partial<Destination> = {}): Destination => dst({ family: 6, address: 'fd00:244::5', ...over });
const v4 = (address: string, prefixLength = 32): LinkAddress => ({ family: 4, address, prefixLength });

const addService = (service: VirtualServer): KernelOp => ({ kind: 'addService', service });
const addDest = (destination: Destination, service: ServiceId = svc()): KernelOp => ({ kind: 'addDestination', service, destination });
const withService: KernelOp[] = [addService(svc())];
const withDest: KernelOp[] = [addService(svc()), addDest(dst())];
const withService6: KernelOp[] = [addService(svc6())];
const withLink = (fake: FakeKernel) => fake.ensureDummyLink('kube-ipvs0');

async function refusal(setup: KernelOp[], op: KernelOp): Promise<KernelError[]> {
  const fake = new FakeKernel().inject(...setup);
  const before = fake.table();
  const result = await fake.apply([op]);
  expect(fake.table()).toEqual(before); // a refused op changes nothing
  expect(result.applied).toBe(0);
  return result.errors;
}

describe('FakeKernel refuses like the kernel', () => {
  const rows: Array<[string, string, KernelOp[], KernelOp]> = [
    ['addService of an existing service', 'EEXIST', withService, addService(svc({ scheduler: 'wrr' }))],
    ['addService existing, even with an unknown scheduler (existence is checked first)', 'EEXIST', withService, addService(svc({ scheduler: 'nope' }))],
    ['updateService of a missing service', 'ESRCH', [], { kind: 'updateService', service: svc() }],
    ['deleteService of a missing service', 'ESRCH', [], { kind: 'deleteService', service: svc() }],
    ['addDestination on a missing service', 'ESRCH', [], addDest(dst())],
    ['updateDestination on a missing service', 'ESRCH', [], { kind: 'updateDestination', service: svc(), destination: dst() }],
    ['deleteDestination on a missing service', 'ESRCH', [], { kind: 'deleteDestination', service: svc(), destination: dst() }],
    ['addDestination of an existing destination', 'EEXIST', withDest, addDest(dst({ weight: 5 }))],
    ['updateDestination of a missing destination', 'ENOENT', withService, { kind: 'updateDestination', service: svc(), destination: dst() }],
    ['deleteDestination of a missing destination', 'ENOENT', withService, { kind: 'deleteDestination', service: svc(), destination: dst() }],
    ['addService with an unknown scheduler', 'ENOENT', [], addService(svc({ scheduler: 'roundrobin' }))],
    ['updateService to an unknown scheduler', 'ENOENT', withService, { kind: 'updateService', service: svc({ scheduler: 'fastest' }) }],
    ['addService with an unknown persistence engine', 'ENOENT', [], addService(svc({ peName: 'http' }))],
    ['addService IPv6 with netmask 0', 'EINVAL', [], addService(svc6({ netmask: 0 }))],
    ['addService IPv6 with netmask 129', 'EINVAL', [], addService(svc6({ netmask: 129 }))],
    ['addService with an IPv6 address on an IPv4 service', 'EINVAL', [], addService(svc({ address: 'fd00::1' }))],
    ['addService with a garbage address', 'EINVAL', [], addService(svc({ address: 'not-an-ip' }))],
    ['addService with port 65536', 'EINVAL', [], addService(svc({ port: 65536 }))],
    ['addService with an unknown family (the adapter cannot encode it)', 'EINVAL', [], addService(svc({ family: 5 as 4 }))],
    ['addDestination IPv6 on an IPv4 service (masq)', 'EINVAL', withService, addDest(dst6())],
    ['addDestination IPv4 on an IPv6 service (droute)', 'EINVAL', withService6, addDest(dst({ forward: 'droute' }), svc6())],
    ['addDestination with an IPv4 address but family 6', 'EINVAL', withService, addDest(dst({ family: 6 }))],
    ['addDestination weight -1', 'ERANGE', withService, addDest(dst({ weight: -1 }))],
    ['addDestination weight 2^31 (negative as the kernel int)', 'ERANGE', withService, addDest(dst({ weight: 2 ** 31 }))],
    ['updateDestination weight -1', 'ERANGE', withDest, { kind: 'updateDestination', service: svc(), destination: dst({ weight: -1 }) }],
    ['addDestination lower threshold above upper', 'ERANGE', withService, addDest(dst({ lowerThreshold: 10, upperThreshold: 5 }))],
    ['addDestination 0.0.0.0', 'EINVAL', withService, addDest(dst({ address: '0.0.0.0' }))],
    ['addDestination 0.1.2.3 (zero network)', 'EINVAL', withService, addDest(dst({ address: '0.1.2.3' }))],
    ['addDestination multicast 224.0.0.1', 'EINVAL', withService, addDest(dst({ address: '224.0.0.1' }))],
    ['addDestination broadcast 255.255.255.255', 'EINVAL', withService, addDest(dst({ address: '255.255.255.255' }))],
    ['addDestination ::', 'EINVAL', withService6, addDest(dst6({ address: '::' }), svc6())],
    ['addDestination multicast ff02::1', 'EINVAL', withService6, addDest(dst6({ address: 'ff02::1' }), svc6())],
    ['addDestination link-local fe80::1 that is not local', 'EINVAL', withService6, addDest(dst6({ address: 'fe80::1' }), svc6())],
    ['addDestination IPv4-mapped ::ffff:10.0.0.1', 'EINVAL', withService6, addDest(dst6({ address: '::ffff:10.0.0.1' }), svc6())],
    ['addAddress on a missing link', 'ENODEV', [], { kind: 'addAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.1') }],
    ['deleteAddress on a missing link', 'ENODEV', [], { kind: 'deleteAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.1') }],
    ['addAddress with prefix 33', 'EINVAL', [], { kind: 'addAddress', ifname: 'lo', address: v4('10.96.0.1', 33) }],
    ['addAddress with an IPv6 address as family 4', 'EINVAL', [], { kind: 'addAddress', ifname: 'lo', address: v4('fd00::1') }],
  ];

  test.each(rows)('%s → %s', async (_name, code, setup, op) => {
    const errors = await refusal(setup, op);
    expect(errors.map((e) => e.code)).toEqual([code]);
    expect(errors[0]).toBeInstanceOf(KernelError);
    expect(errors[0]).toMatchObject({ op, index: 0 });
  });

  test('the error names the op the way describeOp does', async () => {
    const [err] = await refusal(withService, addService(svc()));
    expect(err.message).toBe('addService TCP/10.96.0.1:80: EEXIST');
  });

  test('a refused op does not stop the rest of the batch; indices point into the batch', async () => {
    const fake = new FakeKernel();
    const ops: KernelOp[] = [
      addService(svc()),
      addService(svc()),
      addDest(dst()),
      { kind: 'deleteService', service: svc({ port: 81 }) },
      addDest(dst({ address: '10.244.1.6' })),
    ];
    const result = await fake.apply(ops);
    expect(result.errors.map((e) => [e.index, e.code])).toEqual([[1, 'EEXIST'], [3, 'ESRCH']]);
    expect(result.errors[1].op).toBe(ops[3]);
    expect(result.applied).toBe(3);
    expect((await fake.listDestinations(svc())).map((d) => d.address)).toEqual(['10.244.1.5', '10.244.1.6']);
  });
});

describe('FakeKernel accepts what the kernel accepts', () => {
  const rows: Array<[string, KernelOp[], KernelOp]> = [
    ['a port-0 service without fwmark (the kernel keeps a counter of these)', [], addService(svc({ port: 0, flags: 1 }))],
    ['scheduler none (no scheduler bound)', [], addService(svc({ scheduler: 'none' }))],
    ['scheduler twos', [], addService(svc({ scheduler: 'twos' }))],
    ['persistence engine sip', [], addService(svc({ protocol: 'UDP', peName: 'sip' }))],
    ['a fwmark service of a foreign protocol', [], addService(svc({ fwmark: 100, protocol: 'IPPROTO-47' }))],
    ['an IPv6 destination on an IPv4 service by tunnel', withService, addDest(dst6({ forward: 'tunnel' }))],
    ['weight 0', withService, addDest(dst({ weight: 0 }))],
    ['weight 2^31-1', withService, addDest(dst({ weight: 2 ** 31 - 1 }))],
    ['a local IPv4 destination', withService, addDest(dst({ address: '127.0.0.1' }))],
    ['a loopback IPv6 destination', withService6, addDest(dst6({ address: '::1' }), svc6())],
    ['a class-E IPv4 destination (unicast to inet_addr_type)', withService, addDest(dst({ address: '240.0.0.1' }))],
  ];

  test.each(rows)('%s', async (_name, setup, op) => {
    const result = await new FakeKernel().inject(...setup).apply([op]);
    expect(result).toEqual({ applied: 1, errors: [] });
  });

  test('a link-local IPv6 destination when that address is local', async () => {
    const fake = new FakeKernel().inject(...withService6, { kind: 'addAddress', ifname: 'lo', address: { family: 6, address: 'fe80::1', prefixLength: 64 } });
    expect((await fake.apply([addDest(dst6({ address: 'fe80::1' }), svc6())])).errors).toEqual([]);
  });
});

describe('FakeKernel normalises like the kernel', () => {
  test('HASHED (0x2) is stored and reported stripped, on add and on update', async () => {
    const fake = new FakeKernel();
    await fake.apply([addService(svc({ flags: 0x3 }))]);
    expect((await fake.listServices())[0].flags).toBe(0x1);
    await fake.apply([{ kind: 'updateService', service: svc({ flags: 0x2 | 0x4 | 0x8 }) }]);
    expect((await fake.listServices())[0].flags).toBe(0x4 | 0x8);
  });

  test('addresses are canonical, and a non-canonical spelling names the same object', async () => {
    const fake = new FakeKernel();
    const spelled = svc6({ address: 'FD00:0:0:0::0010' });
    await fake.apply([addService(spelled), addDest(dst6({ address: 'FD00:244:0::5' }), spelled)]);
    const { services } = await fake.dumpTable();
    expect(services[0].service.address).toBe('fd00::10');
    expect(services[0].destinations[0].address).toBe('fd00:244::5');
    expect((await fake.apply([addService(svc6())])).errors.map((e) => e.code)).toEqual(['EEXIST']);
  });

  test('a fwmark service is keyed by family + fwmark and reads back with no protocol, address or port', async () => {
    const fake = new FakeKernel();
    await fake.apply([addService(svc({ fwmark: 7, protocol: 'UDP', address: '10.1.1.1', port: 53 }))]);
    expect((await fake.listServices())[0]).toMatchObject({ fwmark: 7, protocol: 'IPPROTO-0', address: '0.0.0.0', port: 0 });
    const result = await fake.apply([{ kind: 'deleteService', service: { family: 4, protocol: 'TCP', address: '0.0.0.0', port: 0, fwmark: 7 } }]);
    expect(result.errors).toEqual([]);
    expect(await fake.listServices()).toEqual([]);
  });

  test('updateService changes settings and keeps destinations, counters and connections', async () => {
    const fake = new FakeKernel().inject(...withDest);
    fake.setStats(svc(), { conns: 12n, inBytes: 3400n });
    fake.setConnections(svc(), dst(), { activeConns: 3, inactiveConns: 1 });
    await fake.apply([{ kind: 'updateService', service: svc({ scheduler: 'wlc', flags: 1, timeout: 10800 }) }]);
    const [{ service, destinations }] = (await fake.dumpTable()).services;
    expect(service).toMatchObject({ scheduler: 'wlc', flags: 1, timeout: 10800, stats: { conns: 12n, inBytes: 3400n } });
    expect(destinations).toHaveLength(1);
    expect(destinations[0]).toMatchObject({ activeConns: 3, inactiveConns: 1 });
  });

  test('updateDestination changes settings and keeps connections', async () => {
    const fake = new FakeKernel().inject(...withDest);
    fake.setConnections(svc(), dst(), { activeConns: 5 });
    await fake.apply([{ kind: 'updateDestination', service: svc(), destination: dst({ weight: 0 }) }]);
    expect((await fake.listDestinations(svc()))[0]).toMatchObject({ weight: 0, activeConns: 5 });
  });

  test('deleting a service removes its destinations', async () => {
    const fake = new FakeKernel().inject(...withDest);
    await fake.apply([{ kind: 'deleteService', service: svc() }, addService(svc())]);
    expect(await fake.listDestinations(svc())).toEqual([]);
  });
});

describe('FakeKernel reads', () => {
  test('dumpTable lists services in insertion order with their destinations', async () => {
    const fake = new FakeKernel().inject(addService(svc({ port: 443 })), addService(svc({ port: 80 })), addDest(dst(), svc({ port: 80 })));
    const { services } = await fake.dumpTable();
    expect(services.map((s) => [s.service.port, s.destinations.length])).toEqual([[443, 0], [80, 1]]);
    expect(services[1].destinations[0]).toEqual({
      ...dst(), activeConns: 0, inactiveConns: 0, persistConns: 0, stats: expect.objectContaining({ conns: 0n }),
    });
  });

  test('listDestinations of a missing service rejects with ESRCH', async () => {
    await expect(new FakeKernel().listDestinations(svc())).rejects.toMatchObject({ name: 'KernelError', code: 'ESRCH' });
  });

  test('ipvsInfo', async () => {
    expect(await new FakeKernel().ipvsInfo()).toEqual({ version: '1.2.1', connTabSize: 4096 });
  });

  test('timeouts default to 900/120/300; a 0 leaves a value unchanged; a negative one is EINVAL', async () => {
    const fake = new FakeKernel();
    expect(await fake.getTimeouts()).toEqual({ tcp: 900, tcpFin: 120, udp: 300 });
    await fake.setTimeouts({ tcp: 0, tcpFin: 30, udp: 0 });
    expect(await fake.getTimeouts()).toEqual({ tcp: 900, tcpFin: 30, udp: 300 });
    await expect(fake.setTimeouts({ tcp: 60, tcpFin: -1, udp: 0 })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(await fake.getTimeouts()).toEqual({ tcp: 900, tcpFin: 30, udp: 300 });
  });
});

describe('FakeKernel links and addresses', () => {
  test("'lo' exists at ifindex 1 with 127.0.0.1/8 and ::1/128", async () => {
    expect(await new FakeKernel().listAddresses('lo')).toEqual([v4('127.0.0.1', 8), { family: 6, address: '::1', prefixLength: 128 }]);
  });

  test('ensureDummyLink creates empty links with increasing ifindexes and is idempotent', async () => {
    const fake = new FakeKernel();
    expect(await fake.ensureDummyLink('kube-ipvs0')).toEqual({ ifindex: 2, created: true });
    expect(await fake.ensureDummyLink('kube-ipvs0')).toEqual({ ifindex: 2, created: false });
    expect(await fake.ensureDummyLink('other0')).toEqual({ ifindex: 3, created: true });
    expect(await fake.listAddresses('kube-ipvs0')).toEqual([]);
    await expect(fake.ensureDummyLink('a-name-longer-than-15')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(fake.ensureDummyLink('lo')).rejects.toMatchObject({ code: 'EEXIST' }); // exists, not a dummy
  });

  test('address ops are idempotent: adding a bound address or deleting a missing one succeeds', async () => {
    const fake = new FakeKernel();
    await withLink(fake);
    const add: KernelOp = { kind: 'addAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.1') };
    const del: KernelOp = { kind: 'deleteAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.1') };
    expect(await fake.apply([add, add])).toEqual({ applied: 2, errors: [] });
    expect(await fake.listAddresses('kube-ipvs0')).toEqual([v4('10.96.0.1')]);
    expect(await fake.apply([del, del])).toEqual({ applied: 2, errors: [] });
    expect(await fake.listAddresses('kube-ipvs0')).toEqual([]);
  });

  test('an IPv6 address is bound once whatever its prefix; delete needs the bound prefix', async () => {
    const fake = new FakeKernel();
    await withLink(fake);
    const a = (prefixLength: number): LinkAddress => ({ family: 6, address: 'fd00::10', prefixLength });
    await fake.apply([{ kind: 'addAddress', ifname: 'kube-ipvs0', address: a(128) }, { kind: 'addAddress', ifname: 'kube-ipvs0', address: a(64) }]);
    expect(await fake.listAddresses('kube-ipvs0')).toEqual([a(128)]);
    await fake.apply([{ kind: 'deleteAddress', ifname: 'kube-ipvs0', address: a(64) }]);
    expect(await fake.listAddresses('kube-ipvs0')).toEqual([a(128)]);
  });

  test('deleteLink removes the link and its addresses; a missing link is fine; lo cannot go', async () => {
    const fake = new FakeKernel();
    await withLink(fake);
    await fake.apply([{ kind: 'addAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.1') }]);
    await fake.deleteLink('kube-ipvs0');
    await fake.deleteLink('kube-ipvs0');
    await expect(fake.listAddresses('kube-ipvs0')).rejects.toMatchObject({ code: 'ENODEV' });
    expect((await fake.listLocalAddresses()).map((a) => a.address)).toEqual(['127.0.0.1', '::1']);
    await expect(fake.deleteLink('lo')).rejects.toMatchObject({ code: 'EOPNOTSUPP' });
  });

  test('listLocalAddresses lists every link, IPv4 before IPv6', async () => {
    const fake = new FakeKernel();
    await withLink(fake);
    await fake.apply([
      { kind: 'addAddress', ifname: 'kube-ipvs0', address: { family: 6, address: 'fd00::10', prefixLength: 128 } },
      { kind: 'addAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.1') },
    ]);
    expect((await fake.listLocalAddresses()).map((a) => `${a.ifindex}:${a.ifname}:${a.address}/${a.prefixLength}`)).toEqual([
      '1:lo:127.0.0.1/8', '2:kube-ipvs0:10.96.0.1/32', '1:lo:::1/128', '2:kube-ipvs0:fd00::10/128',
    ]);
  });
});

describe('FakeKernel hands out copies', () => {
  test('mutating what a read returned does not change the kernel', async () => {
    const fake = new FakeKernel().inject(...withDest);
    await withLink(fake);
    const before = fake.table();
    const table = await fake.dumpTable();
    table.services[0].service.scheduler = 'wrr';
    table.services[0].service.stats.conns = 99n;
    table.services[0].destinations[0].weight = 50;
    table.services.pop();
    (await fake.listServices())[0].port = 1;
    (await fake.listDestinations(svc()))[0].activeConns = 7;
    (await fake.listAddresses('lo'))[0].address = '127.0.0.2';
    (await fake.listLocalAddresses())[0].prefixLength = 1;
    (await fake.getTimeouts()).tcp = 1;
    expect(fake.table()).toEqual(before);
    expect(await fake.listAddresses('lo')).toContainEqual(v4('127.0.0.1', 8));
    expect((await fake.getTimeouts()).tcp).toBe(900);
  });

  test('mutating an op after apply() does not change the kernel', async () => {
    const fake = new FakeKernel();
    const service = svc();
    const pending = fake.apply([addService(service)]);
    service.scheduler = 'bogus';
    await pending;
    service.port = 81;
    expect((await fake.listServices())[0]).toMatchObject({ scheduler: 'rr', port: 80 });
  });
});

describe('FakeKernel is asynchronous', () => {
  test('answers after synchronous code and queued microtasks, in call order', async () => {
    const fake = new FakeKernel();
    const order: string[] = [];
    const applied = fake.apply([addService(svc())]).then(() => order.push('apply'));
    const dumped = fake.dumpTable().then((t) => order.push(`dump:${t.services.length}`));
    expect(fake.table().services).toHaveLength(0);
    order.push('sync');
    await Promise.resolve();
    order.push('microtask');
    await Promise.all([applied, dumped]);
    expect(order).toEqual(['sync', 'microtask', 'apply', 'dump:1']);
  });

  test('still answers while jest fake timers are installed', async () => {
    jest.useFakeTimers();
    try {
      await expect(new FakeKernel().ipvsInfo()).resolves.toMatchObject({ version: '1.2.1' });
    } finally {
      jest.useRealTimers();
    }
  });

  test('after close, calls reject with EBADF', async () => {
    const fake = new FakeKernel();
    await fake.close();
    await expect(fake.dumpTable()).rejects.toMatchObject({ code: 'EBADF' });
  });
});

describe('FakeKernel counters', () => {
  test('count batches, messages by kind, refusals and reads; inject() is not counted', async () => {
    const fake = new FakeKernel().inject(...withService);
    await withLink(fake);
    await fake.apply([addService(svc()), addDest(dst()), { kind: 'addAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.1') }]);
    await fake.apply([]);
    await fake.dumpTable();
    // reads: ensureDummyLink looks the link up (1); dumpTable dumps services and one service's destinations (2)
    expect(fake.counters).toMatchObject({ batches: 2, messages: 4, refused: 1, reads: 3 });
    expect(fake.counters.writes).toMatchObject({ addService: 1, addDestination: 1, addAddress: 1, createLink: 1, deleteService: 0 });
  });

  test('resetCounters: reads and no-op link calls show zero messages', async () => {
    const fake = new FakeKernel().inject(...withDest);
    await withLink(fake);
    fake.resetCounters();
    await fake.dumpTable();
    await withLink(fake);
    await fake.deleteLink('absent0');
    expect(fake.counters.messages).toBe(0);
    expect(fake.counters.batches).toBe(0);
  });

  test('setConnections / setStats on a missing destination throw the kernel errno', () => {
    const fake = new FakeKernel().inject(...withService);
    expect(() => fake.setConnections(svc(), dst(), { activeConns: 1 })).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => fake.setStats(svc({ port: 1 }), { conns: 1n })).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(() => fake.inject(addService(svc()))).toThrow(expect.objectContaining({ code: 'EEXIST', index: 0 }));
  });
});
