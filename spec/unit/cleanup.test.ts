// --cleanup removes what kipvs created (virtual servers on kube-ipvs0 addresses, the link) and nothing else.
import { cleanup } from '../../lib/cleanup.js';
import { agentOptions } from '../../lib/cli.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { serviceKey, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import type { VirtualServer } from '../../lib/kernel/types.js';
import { svc } from '../support/kernel-values.js';
import { captureLogger } from '../support/logger.js';

const vs = (address: string, over: Partial<VirtualServer> = {}) => svc({ address, ...over });

test('only virtual servers on kube-ipvs0 addresses go, then the link; foreign and fwmark services stay', async () => {
  const k = new FakeKernel();
  await k.ensureDummyLink('kube-ipvs0');
  await k.ensureDummyLink('other0');
  k.inject(
    { kind: 'addAddress', ifname: 'kube-ipvs0', address: { family: 4, address: '10.96.0.10', prefixLength: 32 } },
    { kind: 'addAddress', ifname: 'other0', address: { family: 4, address: '192.168.5.5', prefixLength: 32 } },
    { kind: 'addService', service: vs('10.96.0.10') },
    { kind: 'addService', service: vs('10.96.0.10', { port: 443, protocol: 'UDP' }) },
    { kind: 'addService', service: vs('192.168.5.5') },
    { kind: 'addService', service: vs('0.0.0.0', { fwmark: 7, port: 0 }) },
    // A NodePort of kipvs's on a node address (its mark), and someone else's on the same address.
    { kind: 'addService', service: vs('192.168.5.5', { port: 30080, flags: SVC_F_KIPVS }) },
    { kind: 'addService', service: vs('192.168.5.5', { port: 30081 }) },
  );
  const r = await cleanup(k, 'kube-ipvs0', captureLogger());
  expect(r).toEqual({ services: 3, addresses: 1, link: true, errors: [] });
  expect(k.table().services.map((s) => serviceKey(s.service)).sort()).toEqual(['FWM/4/7', 'TCP/192.168.5.5:30081', 'TCP/192.168.5.5:80']);
  expect(k.localAddresses().map((a) => `${a.ifname} ${a.address}`)).toEqual(['lo 127.0.0.1', 'other0 192.168.5.5', 'lo ::1']);
});

test('without kube-ipvs0 and without marked virtual servers there is nothing to clean up; marked ones go without it', async () => {
  const k = new FakeKernel();
  k.inject({ kind: 'addService', service: vs('10.96.0.10') });
  expect(await cleanup(k, 'kube-ipvs0', captureLogger())).toEqual({ services: 0, addresses: 0, link: false, errors: [] });
  expect(k.table().services).toHaveLength(1);
  k.inject({ kind: 'addService', service: vs('192.168.5.5', { port: 30080, flags: SVC_F_KIPVS }) });
  expect(await cleanup(k, 'kube-ipvs0', captureLogger())).toEqual({ services: 1, addresses: 0, link: false, errors: [] });
  expect(k.table().services.map((s) => serviceKey(s.service))).toEqual(['TCP/10.96.0.10:80']);
});

test('the agent takes --cleanup', () => {
  expect(agentOptions(['--cleanup']).cleanup).toBe(true);
  expect(agentOptions([]).cleanup).toBe(false);
  expect(agentOptions(['--init-only']).initOnly).toBe(true);
  expect(agentOptions([]).initOnly).toBe(false);
});
