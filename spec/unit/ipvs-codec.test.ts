// The IPVS attribute codec: wire layout facts from ip_vs.h, and round trips through the tables.
import { decodeAttrs, encodeAttrs } from '../../lib/netlink/attrs.js';
import { CmdAttrs, DestAttrs, ServiceAttrs } from '../../lib/ipvs/schema.js';
import {
  decodeDestination,
  decodeService,
  destinationAttrs,
  encodeAddress,
  serviceAttrs,
  serviceIdAttrs,
} from '../../lib/ipvs/messages.js';
import type { Destination, VirtualServer } from '../../lib/kernel/types.js';
import { dst, svc } from '../support/kernel-values.js';

const hex = (b: Buffer) => b.toString('hex');

const vs = svc;
const dest = (over: Partial<Destination> = {}) => dst('10.244.1.5', over);

describe('wire layout', () => {
  test('PORT is big-endian u16, AF and PROTOCOL host-endian u16 (padded to 4)', () => {
    expect(hex(encodeAttrs(ServiceAttrs, { port: 80 }))).toBe('060004000050' + '0000');
    expect(hex(encodeAttrs(ServiceAttrs, { af: 2, protocol: 6 }))).toBe('0600010002000000' + '0600020006000000');
  });

  test('ADDR is the 16-byte nf_inet_addr union with IPv4 in the first four bytes', () => {
    expect(hex(encodeAddress(4, '10.96.0.10'))).toBe('0a60000a' + '00'.repeat(12));
    expect(hex(encodeAddress(6, 'fd00::1'))).toBe('fd00' + '00'.repeat(13) + '01');
    expect(() => encodeAddress(4, 'fd00::1')).toThrow(/not IPv4/);
  });

  test('FLAGS is {u32 flags, u32 mask}; HASHED is never sent', () => {
    const rec = serviceAttrs(vs({ flags: 0x1 | 0x2 | 0x8 }));
    expect(rec.flags).toEqual({ flags: 0x9, mask: 0xffffffff });
    const bytes = encodeAttrs(ServiceAttrs, { flags: rec.flags });
    expect(hex(bytes)).toBe('0c000700' + '09000000' + 'ffffffff');
  });

  test('an IPv4 NETMASK travels in network byte order (as ipvsadm -M writes it), an IPv6 one as a prefix length', () => {
    const v4 = encodeAttrs(ServiceAttrs, { netmask: serviceAttrs(vs({ netmask: 0xffffff00 })).netmask });
    expect(hex(v4)).toBe('08000900' + 'ffffff00');
    const v6 = encodeAttrs(ServiceAttrs, { netmask: serviceAttrs(vs({ family: 6, address: 'fd00::1', netmask: 64 })).netmask });
    expect(hex(v6)).toBe('08000900' + '40000000');
  });

  test('nested SERVICE carries NLA_F_NESTED and the inner attributes', () => {
    const bytes = encodeAttrs(CmdAttrs, { service: { fwmark: 7 } });
    expect(bytes.readUInt16LE(2)).toBe(0x8001);
    expect(decodeAttrs(CmdAttrs, bytes)).toEqual({ service: { fwmark: 7 } });
  });

  test('a nested value may be given already encoded, with the same bytes as the record', () => {
    const id = serviceIdAttrs({ family: 4, protocol: 'TCP', address: '10.96.0.10', port: 80, fwmark: 0 });
    const d = destinationAttrs(dest());
    expect(hex(encodeAttrs(CmdAttrs, { service: encodeAttrs(ServiceAttrs, id), dest: d }))).toBe(hex(encodeAttrs(CmdAttrs, { service: id, dest: d })));
    expect(hex(encodeAttrs(CmdAttrs, { service: id }, 4))).toBe('00000000' + hex(encodeAttrs(CmdAttrs, { service: id })));
  });

  test('WEIGHT is u32 (moby/ipvs reads it as u16) and DEST_ADDR_FAMILY is sent', () => {
    const rec = destinationAttrs(dest({ weight: 70000 }));
    expect(rec.addrFamily).toBe(2);
    const back = decodeAttrs(DestAttrs, encodeAttrs(DestAttrs, rec));
    expect(back.weight).toBe(70000);
  });

  test('a service is named by AF + FWMARK alone for fwmark services', () => {
    expect(serviceIdAttrs({ family: 6, protocol: 'TCP', address: '::', port: 0, fwmark: 9 })).toEqual({ af: 10, fwmark: 9 });
  });

  test('attributes unknown to the table are kept by id, truncated ones are refused', () => {
    const unknown = Buffer.from('08006300' + '01020304', 'hex');
    expect(decodeAttrs(ServiceAttrs, unknown)).toEqual({ attr99: Buffer.from([1, 2, 3, 4]) });
    expect(() => decodeAttrs(ServiceAttrs, Buffer.from('0c000100', 'hex'))).toThrow(/malformed/);
    expect(() => decodeAttrs(ServiceAttrs, Buffer.from('05000100' + '02000000', 'hex'))).toThrow(/IPVS_SVC_ATTR_AF/);
  });
});

describe('round trips through the tables', () => {
  const services: VirtualServer[] = [
    vs(),
    vs({ protocol: 'UDP', port: 53, scheduler: 'lc' }),
    vs({ family: 6, protocol: 'SCTP', address: 'fd00:10:96::a', port: 3868, netmask: 128 }),
    vs({ scheduler: 'sh', flags: 0x1 | 0x8 | 0x10, timeout: 10800 }),
    vs({ flags: 0x1, timeout: 300, netmask: 0xffff0000 }),
    vs({ scheduler: 'mh', flags: 0x10, peName: 'sip', protocol: 'UDP', port: 5060 }),
  ];
  test.each(services.map((s) => [`${s.protocol} ${s.address}:${s.port} ${s.scheduler}`, s]))('service %s', (_n, s) => {
    const wire = encodeAttrs(ServiceAttrs, serviceAttrs(s));
    const { stats, ...back } = decodeService(decodeAttrs(ServiceAttrs, wire));
    expect(back).toEqual(s);
    expect(stats.conns).toBe(0n);
  });

  const dests: Destination[] = [
    dest(),
    dest({ family: 6, address: 'fd00:244::5', forward: 'droute', weight: 0 }),
    dest({ forward: 'tunnel', upperThreshold: 100, lowerThreshold: 10, weight: 2147483647 }),
    dest({ forward: 'local', address: '127.0.0.1' }),
  ];
  test.each(dests.map((d) => [`${d.address}:${d.port} ${d.forward}`, d]))('destination %s', (_n, d) => {
    const wire = encodeAttrs(DestAttrs, destinationAttrs(d));
    const { stats, activeConns, inactiveConns, persistConns, ...back } = decodeDestination(decodeAttrs(DestAttrs, wire), 4);
    expect(back).toEqual(d);
    expect([activeConns, inactiveConns, persistConns, stats.inBytes]).toEqual([0, 0, 0, 0n]);
  });

  test('decoding prefers STATS64 and strips HASHED', () => {
    const rec = decodeService({
      af: 2,
      protocol: 6,
      addr: encodeAddress(4, '10.0.0.1'),
      port: 80,
      flags: { flags: 0x3, mask: 0xffffffff },
      stats: { conns: 1, inBytes: 5n },
      stats64: { conns: 2n ** 40n, inBytes: 2n ** 50n },
    });
    expect(rec.flags).toBe(0x1);
    expect(rec.stats.conns).toBe(2n ** 40n);
    expect(rec.stats.inBytes).toBe(2n ** 50n);
  });

  test('unknown protocols and foreign forward bits decode without throwing', () => {
    const rec = decodeService({ af: 2, protocol: 47, addr: encodeAddress(4, '10.0.0.1'), port: 0, fwmark: 0 });
    expect(rec.protocol).toBe('IPPROTO-47');
  });
});
