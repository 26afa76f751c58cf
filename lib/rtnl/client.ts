// rtnetlink for what kipvs needs of links: the dummy device (kube-ipvs0) and the addresses bound to it,
// plus a read of every local address (NodePort). Messages are struct ifinfomsg / ifaddrmsg followed by
// attribute tables. Provenance: include/uapi/linux/rtnetlink.h, if_link.h, if_addr.h.

import { Protocol as NetlinkProtocol } from 'netlink';
import ipaddr from 'ipaddr.js';
import { KernelError } from '../errors.js';
import type { Family, LinkAddress } from '../kernel/types.js';
import { decodeAttrs, defineTable, encodeAttrs, type AttrRecord } from '../netlink/attrs.js';
import { NetlinkChannel, NetlinkErrno, type NlRequest } from '../netlink/channel.js';

/** RTM_* message types. */
export const Rtm = { NEWLINK: 16, DELLINK: 17, GETLINK: 18, NEWADDR: 20, DELADDR: 21, GETADDR: 22 } as const;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const IFA_F_NODAD = 0x02;
const AF = { 4: 2, 6: 10 } as const;

const LinkInfoAttrs = defineTable('IFLA_INFO', [['kind', 1, 'string', 'IFLA_INFO_KIND']]);
const LinkAttrs = defineTable('IFLA', [
  ['ifname', 3, 'string', 'IFLA_IFNAME'],
  ['linkinfo', 18, 'nested', 'IFLA_LINKINFO', LinkInfoAttrs],
]);
const AddrAttrs = defineTable('IFA', [
  ['address', 1, 'binary', 'IFA_ADDRESS'],
  ['local', 2, 'binary', 'IFA_LOCAL'],
]);

/** struct ifinfomsg (16 bytes) + attributes. */
function linkPayload(ifindex: number, attrs: AttrRecord): Buffer {
  const hdr = Buffer.alloc(16);
  hdr.writeInt32LE(ifindex, 4);
  return Buffer.concat([hdr, encodeAttrs(LinkAttrs, attrs)]);
}

/** struct ifaddrmsg (8 bytes) + attributes. */
function addrPayload(ifindex: number, a: LinkAddress): Buffer {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt8(AF[a.family], 0);
  hdr.writeUInt8(a.prefixLength, 1);
  hdr.writeUInt8(a.family === 6 ? IFA_F_NODAD : 0, 2);
  hdr.writeUInt32LE(ifindex, 4);
  const bytes = Buffer.from(ipaddr.parse(a.address).toByteArray());
  return Buffer.concat([hdr, encodeAttrs(AddrAttrs, { address: bytes, local: bytes })]);
}

export interface LinkInfo {
  ifindex: number;
  ifname: string;
  kind: string;
}

export class RtnlClient {
  private constructor(private readonly chan: NetlinkChannel) {}

  static open(netns?: string): RtnlClient {
    return new RtnlClient(new NetlinkChannel(NetlinkProtocol.ROUTE, netns));
  }

  private async call(what: string, run: () => Promise<import('netlink').NetlinkMessage[]>) {
    try {
      return await run();
    } catch (err) {
      if (err instanceof NetlinkErrno) throw new KernelError(err.errno, what);
      throw err;
    }
  }

  /** The link named `ifname`, or undefined when there is none. */
  async getLink(ifname: string): Promise<LinkInfo | undefined> {
    try {
      const [msg] = await this.chan.request({ type: Rtm.GETLINK, payload: linkPayload(0, { ifname }) });
      const attrs = decodeAttrs(LinkAttrs, msg.data.subarray(16));
      const kind = ((attrs.linkinfo as AttrRecord | undefined)?.kind as string | undefined) ?? '';
      return { ifindex: msg.data.readInt32LE(4), ifname, kind };
    } catch (err) {
      if (err instanceof NetlinkErrno && err.errno === 19 /* ENODEV */) return undefined;
      throw new KernelError((err as NetlinkErrno).errno ?? 5, `get link ${ifname}`);
    }
  }

  /** Creates a dummy link (left down). EEXIST if a link of that name exists. */
  async createDummy(ifname: string): Promise<void> {
    await this.call(`create dummy link ${ifname}`, () =>
      this.chan.request({
        type: Rtm.NEWLINK,
        flags: NLM_F_CREATE | NLM_F_EXCL,
        payload: linkPayload(0, { ifname, linkinfo: { kind: 'dummy' } }),
      }),
    );
  }

  async deleteLink(ifindex: number, ifname: string): Promise<void> {
    await this.call(`delete link ${ifname}`, () => this.chan.request({ type: Rtm.DELLINK, payload: linkPayload(ifindex, {}) }));
  }

  /** Every address of the namespace (one dump), optionally only those of `ifindex`. */
  async listAddresses(ifindex?: number): Promise<Array<LinkAddress & { ifindex: number }>> {
    const msgs = await this.call('dump addresses', () => this.chan.dump({ type: Rtm.GETADDR, payload: Buffer.alloc(8) }));
    const out: Array<LinkAddress & { ifindex: number }> = [];
    for (const m of msgs) {
      const index = m.data.readUInt32LE(4);
      if (ifindex !== undefined && index !== ifindex) continue;
      const attrs = decodeAttrs(AddrAttrs, m.data.subarray(8));
      const bytes = (attrs.local ?? attrs.address) as Buffer | undefined;
      if (!bytes) continue;
      const family: Family = m.data.readUInt8(0) === AF[4] ? 4 : 6;
      out.push({ family, address: ipaddr.fromByteArray([...bytes]).toString(), prefixLength: m.data.readUInt8(1), ifindex: index });
    }
    return out;
  }

  /** Index → name of every link (one dump); IPv6 addresses carry no label, so names come from here. */
  async linkNames(): Promise<Map<number, string>> {
    const msgs = await this.call('dump links', () => this.chan.dump({ type: Rtm.GETLINK, payload: Buffer.alloc(16) }));
    return new Map(msgs.map((m) => [m.data.readInt32LE(4), decodeAttrs(LinkAttrs, m.data.subarray(16)).ifname as string]));
  }

  addAddressRequest(ifindex: number, a: LinkAddress): NlRequest {
    return { type: Rtm.NEWADDR, flags: NLM_F_CREATE | NLM_F_EXCL, payload: addrPayload(ifindex, a) };
  }

  deleteAddressRequest(ifindex: number, a: LinkAddress): NlRequest {
    return { type: Rtm.DELADDR, payload: addrPayload(ifindex, a) };
  }

  batch(reqs: readonly NlRequest[]): Promise<number[]> {
    return this.chan.batch(reqs);
  }

  close(): void {
    this.chan.close();
  }
}
