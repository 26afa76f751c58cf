// Assertions on what the IPVS scenarios (ipvs.scenarios.ts) observed on the real kernel. Every
// observation carries ipvsadm's own reading of the table; `ipvsadmMismatch: null` means our dump and
// `ipvsadm -Ln` agree exactly on every service, flag, real server, weight and counter.
import { kernelResults, scenario } from './results.js';

const ids = (ipvsadm: Array<{ id: string; scheduler: string; options: string }>) => ipvsadm.map((s) => `${s.id} ${s.scheduler} ${s.options}`.trim());

test('the scenarios ran on a real kernel', () => {
  const r = kernelResults();
  expect(r.kernel).toMatch(/^\d+\.\d+/);
  console.log(`real-kernel scenarios: ${Object.keys(r.scenarios).length} on Linux ${r.kernel}`);
});

describe.each([
  ['TCP', 4, '10.96.0.10:443', '10.244.1.5:8080', '10.244.2.6:8080'],
  ['TCP', 6, '[fd00:96::10]:443', '[fd00:244:1::5]:8080', '[fd00:244:2::6]:8080'],
  ['UDP', 4, '10.96.0.10:443', '10.244.1.5:8080', '10.244.2.6:8080'],
  ['UDP', 6, '[fd00:96::10]:443', '[fd00:244:1::5]:8080', '[fd00:244:2::6]:8080'],
  ['SCTP', 4, '10.96.0.10:443', '10.244.1.5:8080', '10.244.2.6:8080'],
  ['SCTP', 6, '[fd00:96::10]:443', '[fd00:244:1::5]:8080', '[fd00:244:2::6]:8080'],
])('%s IPv%d: add, get, update, delete', (proto, family, vip, a, b) => {
  const v = () => scenario(`crud ${proto} IPv${family}`);
  const dest = (addr: string, weight: number) => ({ addr, forward: 'Masq', weight, active: 0, inactive: 0 });

  test('every step is applied and reads back identically through ipvsadm', () => {
    for (const s of v().steps) {
      expect(s.errors).toEqual([]);
      expect(s.ipvsadmMismatch).toBeNull();
    }
  });

  test('the table after each step', () => {
    const [added, updated, oneDeleted, deleted] = v().steps.map((s: { ipvsadm: unknown }) => s.ipvsadm);
    const id = `${proto}  ${vip}`;
    expect(added).toEqual([{ id, scheduler: 'rr', options: '', dests: [dest(a, 1), dest(b, 2)] }]);
    expect(updated).toEqual([{ id, scheduler: 'wlc', options: '', dests: [dest(a, 5), dest(b, 2)] }]);
    expect(oneDeleted).toEqual([{ id, scheduler: 'wlc', options: '', dests: [dest(a, 5)] }]);
    expect(deleted).toEqual([]);
  });

  test('GET_SERVICE returns the one service', () => {
    expect(v().getService).toMatchObject({ family, protocol: proto, port: 443, scheduler: 'rr', flags: 0, netmask: family === 4 ? 0xffffffff : 128 });
  });
});

test('schedulers rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh, fo, ovf are all programmable; a missing one is ENOENT', () => {
  const v = scenario('schedulers');
  expect(v.ipvsadmMismatch).toBeNull();
  const made = v.ipvsadm.map((s: { scheduler: string }) => s.scheduler);
  expect(made).toEqual(expect.arrayContaining(['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq', 'mh', 'fo', 'ovf']));
  for (const e of v.errors) expect(e).toMatchObject({ code: 'ENOENT', message: expect.stringMatching(/^addService TCP\/10\.96\.0\.10:10\d\d: ENOENT$/) });
  expect(made.length + v.errors.length).toBe(14);
});

test('persistence with timeout and netmask, sh/mh flags and one-packet scheduling', () => {
  const v = scenario('persistence and flags');
  expect(v.errors).toEqual([]);
  expect(v.ipvsadmMismatch).toBeNull();
  expect(ids(v.ipvsadm)).toEqual([
    'TCP  [fd00:96::10]:3 rr persistent 10800',
    'TCP  [fd00:96::10]:4 rr persistent 60 mask 64',
    'TCP  10.96.0.10:1 rr persistent 10800',
    'TCP  10.96.0.10:2 rr persistent 300 mask 255.255.255.0',
    'TCP  10.96.0.10:5 sh (sh-fallback,sh-port)',
    'TCP  10.96.0.10:6 mh (mh-port)',
    'UDP  10.96.0.10:7 rr persistent 30 ops',
  ]);
});

test('weights (0, >65535), forwarding methods and thresholds, then reweighting in place', () => {
  const v = scenario('weights and forwarding methods');
  expect(v.first.ipvsadmMismatch).toBeNull();
  expect(v.second.ipvsadmMismatch).toBeNull();
  expect(v.first.ipvsadm[0].dests.map((d: { addr: string; forward: string; weight: number }) => `${d.addr} ${d.forward} ${d.weight}`)).toEqual([
    '10.244.1.1:8080 Masq 0',
    '10.244.1.2:8080 Masq 65536',
    '10.244.1.3:80 Route 1',
    '10.244.1.4:8080 Tunnel 1',
  ]);
  const tunnel = v.first.table.services[0].destinations.find((d: { address: string }) => d.address === '10.244.1.4');
  expect(tunnel).toMatchObject({ upperThreshold: 100, lowerThreshold: 10 });
  expect(v.second.ipvsadm[0].dests.map((d: { weight: number }) => d.weight)).toEqual([7, 0, 1, 1]);
});

test('kernel refusals are typed errors attributed to the exact op, and the rest still applies', () => {
  const v = scenario('kernel errors are typed and attributed');
  expect(v.errors).toEqual([
    { index: 0, code: 'EEXIST', message: 'addService TCP/10.96.0.10:80: EEXIST' },
    { index: 1, code: 'ESRCH', message: 'updateService TCP/10.96.0.10:9: ESRCH' },
    { index: 2, code: 'ESRCH', message: 'deleteService TCP/10.96.0.10:9: ESRCH' },
    { index: 3, code: 'ESRCH', message: 'addDestination TCP/10.96.0.10:9 -> 10.244.1.1:8080: ESRCH' },
    { index: 4, code: 'EEXIST', message: 'addDestination TCP/10.96.0.10:80 -> 10.244.1.1:8080: EEXIST' },
    { index: 5, code: 'ENOENT', message: 'updateDestination TCP/10.96.0.10:80 -> 10.244.9.9:8080: ENOENT' },
    { index: 6, code: 'ENOENT', message: 'deleteDestination TCP/10.96.0.10:80 -> 10.244.9.9:8080: ENOENT' },
    { index: 7, code: 'ENOENT', message: 'addService TCP/10.96.0.10:10: ENOENT' },
    { index: 8, code: 'EINVAL', message: 'addDestination TCP/10.96.0.10:80 -> 224.0.0.1:8080: EINVAL' },
    { index: 9, code: 'EINVAL', message: expect.stringMatching(/^addService TCP\/not-an-ip:11: .*: EINVAL$/) },
  ]);
  expect(v.applied).toBe(1);
  expect(v.ipvsadm[0].dests.map((d: { addr: string }) => d.addr)).toEqual(['10.244.1.1:8080', '10.244.1.2:8080']);
  expect(v.getMissing).toEqual({ name: 'KernelError', code: 'ESRCH', message: 'IPVS GET_SERVICE TCP/10.96.0.10:9: ESRCH' });
  expect(v.destsOfMissing).toEqual([]);
});

test('a batch of 1,000 ops with one bad op applies 999 and reports the one', () => {
  const v = scenario('batch of 1000 ops with one bad op');
  expect(v).toMatchObject({ ops: 1000, applied: 999, services: 100, destinations: 899, ipvsadmMismatch: null });
  expect(v.errors).toEqual([{ index: 537, code: 'EINVAL', message: 'addDestination TCP/10.96.0.53:80 -> 255.255.255.255:8080: EINVAL' }]);
});

test('GET_INFO and GET/SET_CONFIG timeouts, with 0 leaving a value unchanged', () => {
  const v = scenario('info and timeouts');
  expect(v.info).toEqual({ version: '1.2.1', connTabSize: 4096 });
  expect(v.ipvsadmVersion).toBe('IP Virtual Server version 1.2.1 (size=4096)');
  expect(v.before).toEqual({ tcp: 900, tcpFin: 120, udp: 300 });
  expect(v.after).toEqual({ tcp: 1000, tcpFin: 60, udp: 200 });
  expect(v.partial).toEqual({ tcp: 1000, tcpFin: 30, udp: 200 });
  expect(v.ipvsadmTimeout).toBe('Timeout (tcp tcpfin udp): 1000 30 200');
});

test('services created by ipvsadm (fwmark, IPv6, SCTP, persistence, DR/tunnel) decode intact', () => {
  const v = scenario('foreign services created by ipvsadm decode intact');
  expect(v.ipvsadmMismatch).toBeNull();
  const byId = Object.fromEntries(
    v.table.services.map((e: { service: { fwmark: number; protocol: string; address: string; port: number } }) => [
      e.service.fwmark ? `FWM/${e.service.fwmark}` : `${e.service.protocol}/${e.service.address}:${e.service.port}`,
      e,
    ]),
  );
  expect(Object.keys(byId).sort()).toEqual(['FWM/42', 'FWM/43', 'SCTP/10.1.1.2:3868', 'TCP/10.1.1.1:80', 'UDP/10.1.1.3:5060', 'UDP/fd00::1:53']);
  expect(byId['TCP/10.1.1.1:80'].service).toMatchObject({ scheduler: 'wrr', flags: 1, timeout: 600, netmask: 0xffffff00 });
  expect(byId['TCP/10.1.1.1:80'].destinations).toEqual(
    expect.arrayContaining([
      expect.objectContaining({ address: '10.2.0.1', forward: 'droute', weight: 3 }),
      expect.objectContaining({ address: '10.2.0.2', forward: 'tunnel', weight: 2, upperThreshold: 100, lowerThreshold: 10 }),
    ]),
  );
  expect(byId['FWM/42'].service).toMatchObject({ family: 4, fwmark: 42, scheduler: 'rr' });
  expect(byId['FWM/43'].service).toMatchObject({ family: 6, fwmark: 43, scheduler: 'lc', netmask: 128 });
  expect(byId['SCTP/10.1.1.2:3868'].service).toMatchObject({ scheduler: 'sh', flags: 0x10 });
  expect(byId['UDP/10.1.1.3:5060'].service).toMatchObject({ flags: 0x1 | 0x4, timeout: 120 });
  expect(byId['UDP/fd00::1:53'].destinations[0]).toMatchObject({ family: 6, address: 'fd00::2', port: 5353, weight: 4 });
});

test('two network namespaces keep separate IPVS tables', () => {
  const v = scenario('two namespaces keep separate IPVS tables');
  expect(v.mine).toEqual(['1111 rr']);
  expect(v.theirs).toEqual(['2222 lc']);
  expect(v.ipvsadmMine).toContain('TCP  10.96.0.10:1111 rr');
  expect(v.ipvsadmMine).not.toContain(':2222');
  expect(v.ipvsadmTheirs).toContain('TCP  10.96.0.10:2222 lc');
  expect(v.outside).toBe(0);
});

test('real HTTP through a VIP shows up in connection counts and 64-bit stats', () => {
  const v = scenario('connection counts and 64-bit stats under real traffic');
  expect(v.bodies).toEqual(['hello-from-backend', 'hello-from-backend', 'hello-from-backend']);
  expect(v.ipvsadmMismatch).toBeNull();
  expect(Number(v.service.conns)).toBe(3);
  expect(Number(v.service.inPackets)).toBeGreaterThanOrEqual(9);
  expect(Number(v.service.inBytes)).toBeGreaterThan(0);
  expect(Number(v.service.outBytes)).toBeGreaterThan(Number('hello-from-backend'.length) * 3);
  expect(v.destination.activeConns + v.destination.inactiveConns).toBe(3);
  expect(Number(v.destination.stats.conns)).toBe(3);
});
