// Assertions on what the rtnetlink scenarios (links.scenarios.ts) observed on the real kernel,
// cross-checked with iproute2's reading of the same link and addresses.
import { scenario } from './results.js';

test('kube-ipvs0 is created once as a dummy link and left down', () => {
  const v = scenario('dummy link and VIP addresses');
  expect(v.first.created).toBe(true);
  expect(v.second).toEqual({ ifindex: v.first.ifindex, created: false });
  expect(v.link).toMatch(/kube-ipvs0: <BROADCAST,NOARP> .* state DOWN /);
  expect(v.link).toMatch(/\bdummy\b/);
});

test('VIPs bind as /32 and /128, idempotently, and read back through ip addr', () => {
  const v = scenario('dummy link and VIP addresses');
  expect(v.added).toEqual([]);
  expect(v.addedAgain).toEqual([]);
  expect(v.listed).toEqual([
    { family: 4, address: '10.96.0.10', prefixLength: 32 },
    { family: 4, address: '10.96.0.11', prefixLength: 32 },
    { family: 6, address: 'fd00:96::10', prefixLength: 128 },
  ]);
  expect(v.ipAddr).toEqual(['10.96.0.10/32', '10.96.0.11/32', 'fd00:96::10/128']);
});

test('unbinding is idempotent and leaves the other VIPs', () => {
  const v = scenario('dummy link and VIP addresses');
  expect(v.deleted).toEqual([]);
  expect(v.deletedAgain).toEqual([]);
  expect(v.afterDelete).toEqual(['10.96.0.10/32', 'fd00:96::10/128']);
});

test('local addresses of every link are listed by name', () => {
  const v = scenario('dummy link and VIP addresses');
  expect(v.local).toEqual(['kube-ipvs0 10.96.0.10/32', 'kube-ipvs0 fd00:96::10/128', 'lo 127.0.0.1/8', 'lo ::1/128']);
});

test('errors: an address on a missing link is ENODEV; a non-dummy link of that name is refused', () => {
  const v = scenario('dummy link and VIP addresses');
  expect(v.noLink).toEqual([{ index: 0, code: 'ENODEV' }]);
  expect(v.notDummy).toBe('link lo exists and is a non-dummy link: EEXIST');
});

test('the link is deleted, and deleting it again is not an error', () => {
  expect(scenario('dummy link and VIP addresses').linkAfterDelete).toBe('Device "kube-ipvs0" does not exist.');
});

test('500 VIPs bind and unbind in one batch each', () => {
  const v = scenario('500 addresses in one batch');
  expect(v).toMatchObject({ applied: 500, errors: [], counted: 500, removedErrors: [], left: 0 });
});

test('--cleanup removes kipvs\' virtual servers and kube-ipvs0; ipvsadm\'s own services stay', () => {
  const v = scenario('cleanup removes only what kipvs created');
  expect(v.result).toEqual({ services: 1, addresses: 1, link: true, errors: [] });
  expect(v.ipvsadm).toEqual(['-A -f 5 -s rr', '-A -t 192.168.9.9:80 -s wrr']);
  expect(v.link).toBe('Device "kube-ipvs0" does not exist.');
});
