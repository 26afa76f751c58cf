// IPVS over generic netlink: resolves the IPVS family through nlctrl, turns kernel ops into
// genl requests (header + CmdAttrs table) and runs them single, as dumps, or batched.

import { Protocol as NetlinkProtocol } from 'netlink';
import { KernelError, KernelSupportError } from '../errors.js';
import { serviceKey } from '../kernel/ids.js';
import type {
  DestinationStatus,
  IpvsInfo,
  IpvsTimeouts,
  KernelOp,
  ServiceId,
  VirtualServerStatus,
} from '../kernel/types.js';
import { decodeAttrs, encodeAttrs, type AttrRecord, type AttrTable } from '../netlink/attrs.js';
import { NetlinkChannel, NetlinkErrno, type NlRequest } from '../netlink/channel.js';
import {
  decodeDestination,
  decodeService,
  destinationAttrs,
  destinationIdAttrs,
  formatVersion,
  serviceAttrs,
  serviceIdAttrs,
} from './messages.js';
import { Cmd, CmdAttrs, CtrlAttrs, ServiceAttrs, CTRL_CMD_GETFAMILY, GENL_ID_CTRL, InfoAttrs, IPVS_GENL_NAME, IPVS_GENL_VERSION } from './schema.js';

type IpvsOp = Extract<KernelOp, { service: unknown }>;

/** genl header {cmd u8, version u8, reserved u16} followed by the attributes, in one buffer. */
function genlPayload(cmd: number, version: number, table: AttrTable, attrs: AttrRecord): Buffer {
  const buf = encodeAttrs(table, attrs, 4);
  buf.writeUInt8(cmd, 0);
  buf.writeUInt8(version, 1);
  return buf;
}

/** Sockets that dump in parallel: a socket runs one dump at a time, and a full sync dumps every service. */
export const DUMP_SOCKETS = 4;

export class IpvsClient {
  private readonly dumpers: NetlinkChannel[];
  private readonly idCache = new WeakMap<ServiceId, Buffer>();
  private nextDumper = 0;

  private constructor(
    private readonly chan: NetlinkChannel,
    readonly familyId: number,
    netns?: string,
  ) {
    this.dumpers = [chan, ...Array.from({ length: DUMP_SOCKETS - 1 }, () => new NetlinkChannel(NetlinkProtocol.GENERIC, netns))];
  }

  /** Opens a generic netlink socket (in `netns` when given) and resolves the IPVS family. */
  static async open(netns?: string): Promise<IpvsClient> {
    const chan = new NetlinkChannel(NetlinkProtocol.GENERIC, netns);
    try {
      const payload = genlPayload(CTRL_CMD_GETFAMILY, 1, CtrlAttrs, { familyName: IPVS_GENL_NAME });
      const [reply] = await chan.request({ type: GENL_ID_CTRL, payload });
      const attrs = decodeAttrs(CtrlAttrs, reply.data.subarray(4));
      return new IpvsClient(chan, attrs.familyId as number, netns);
    } catch (err) {
      chan.close();
      if (err instanceof NetlinkErrno && err.errno === 2 /* ENOENT */) {
        throw new KernelSupportError(
          'the kernel has no IPVS generic netlink family: load the ip_vs module (modprobe ip_vs) or run on a kernel built with CONFIG_IP_VS',
        );
      }
      throw err;
    }
  }

  private req(cmd: number, attrs: AttrRecord, flags = 0): NlRequest {
    return { type: this.familyId, flags, payload: genlPayload(cmd, IPVS_GENL_VERSION, CmdAttrs, attrs) };
  }

  private async call(what: string, req: NlRequest, dump = false, table: AttrTable = CmdAttrs): Promise<AttrRecord[]> {
    try {
      const msgs = dump ? await this.dumper().dump(req) : await this.chan.request(req);
      return msgs.map((m) => decodeAttrs(table, m.data.subarray(4)));
    } catch (err) {
      if (err instanceof NetlinkErrno) throw new KernelError(err.errno, what);
      throw err;
    }
  }

  async info(): Promise<IpvsInfo> {
    // GET_INFO answers with IPVS_INFO_ATTR_* at the top level, not IPVS_CMD_ATTR_*.
    const [rec] = await this.call('IPVS GET_INFO', this.req(Cmd.GET_INFO, {}), false, InfoAttrs);
    return { version: formatVersion(rec.version as number), connTabSize: rec.connTabSize as number };
  }

  /** One service by identity (GET_SERVICE without DUMP); KernelError ESRCH when it does not exist. */
  async getService(id: ServiceId): Promise<VirtualServerStatus> {
    const [rec] = await this.call(`IPVS GET_SERVICE ${serviceKey(id)}`, this.req(Cmd.GET_SERVICE, { service: serviceIdAttrs(id) }));
    return decodeService(rec.service as AttrRecord);
  }

  async listServices(): Promise<VirtualServerStatus[]> {
    const recs = await this.call('IPVS GET_SERVICE dump', this.req(Cmd.GET_SERVICE, {}), true);
    return recs.filter((r) => r.service).map((r) => decodeService(r.service as AttrRecord));
  }

  async listDestinations(service: ServiceId): Promise<DestinationStatus[]> {
    const recs = await this.call(
      `IPVS GET_DEST dump ${serviceKey(service)}`,
      this.req(Cmd.GET_DEST, { service: serviceIdAttrs(service) }),
      true,
    );
    return recs.filter((r) => r.dest).map((r) => decodeDestination(r.dest as AttrRecord, service.family));
  }

  async getTimeouts(): Promise<IpvsTimeouts> {
    const [rec] = await this.call('IPVS GET_CONFIG', this.req(Cmd.GET_CONFIG, {}));
    return {
      tcp: (rec.timeoutTcp as number | undefined) ?? 0,
      tcpFin: (rec.timeoutTcpFin as number | undefined) ?? 0,
      udp: (rec.timeoutUdp as number | undefined) ?? 0,
    };
  }

  async setTimeouts(t: IpvsTimeouts): Promise<void> {
    await this.call('IPVS SET_CONFIG', this.req(Cmd.SET_CONFIG, { timeoutTcp: t.tcp, timeoutTcpFin: t.tcpFin, timeoutUdp: t.udp }));
  }

  /** The genl request for one IPVS op. Throws (before anything is sent) on values that cannot be encoded. */
  opRequest(op: IpvsOp): NlRequest {
    switch (op.kind) {
      case 'addService':
        return this.req(Cmd.NEW_SERVICE, { service: serviceAttrs(op.service) });
      case 'updateService':
        return this.req(Cmd.SET_SERVICE, { service: serviceAttrs(op.service) });
      case 'deleteService':
        return this.req(Cmd.DEL_SERVICE, { service: serviceIdAttrs(op.service) });
      case 'addDestination':
        return this.req(Cmd.NEW_DEST, { service: this.encodedId(op.service), dest: destinationAttrs(op.destination) });
      case 'updateDestination':
        return this.req(Cmd.SET_DEST, { service: this.encodedId(op.service), dest: destinationAttrs(op.destination) });
      case 'deleteDestination':
        return this.req(Cmd.DEL_DEST, { service: this.encodedId(op.service), dest: destinationIdAttrs(op.destination) });
    }
  }

  /**
   * The service-identity attributes, encoded once per service object: a sync's destination ops share
   * their service's object, so a service with N real servers is encoded once, not N times.
   */
  private encodedId(service: ServiceId): Buffer {
    let buf = this.idCache.get(service);
    if (!buf) this.idCache.set(service, (buf = encodeAttrs(ServiceAttrs, serviceIdAttrs(service))));
    return buf;
  }

  /** Batched writes; errnos per request (0 = applied). */
  batch(reqs: readonly NlRequest[]): Promise<number[]> {
    return this.chan.batch(reqs);
  }

  close(): void {
    for (const c of this.dumpers) c.close();
  }

  private dumper(): NetlinkChannel {
    this.nextDumper = (this.nextDumper + 1) % this.dumpers.length;
    return this.dumpers[this.nextDumper];
  }
}
