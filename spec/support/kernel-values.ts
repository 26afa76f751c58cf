// Builders for kernel values in tests and scenarios: a TCP virtual server on 10.96.0.10:80 with rr and a
// masq real server of weight 1 unless told otherwise, so each test spells out only what it is about.
import type { Destination, VirtualServer } from '../../lib/kernel/types.js';

export const svc = (over: Partial<VirtualServer> = {}): VirtualServer => ({
  family: 4,
  protocol: 'TCP',
  address: '10.96.0.10',
  port: 80,
  fwmark: 0,
  scheduler: 'rr',
  flags: 0,
  timeout: 0,
  netmask: over.family === 6 ? 128 : 0xffffffff,
  peName: '',
  ...over,
});

export const dst = (address: string, over: Partial<Destination> = {}): Destination => ({
  family: address.includes(':') ? 6 : 4,
  address,
  port: 8080,
  forward: 'masq',
  weight: 1,
  upperThreshold: 0,
  lowerThreshold: 0,
  ...over,
});
