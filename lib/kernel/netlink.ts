// The real Kernel: IPVS over generic netlink and links/addresses over rtnetlink, both sockets opened
// in the target network namespace. apply() runs consecutive ops of one socket as one batch, in order,
// and attributes each kernel refusal to its op. Address ops are made idempotent here (EEXIST on add,
// EADDRNOTAVAIL on delete are success), as the interface promises.

import { KernelError } from '../errors.js';
import { DUMP_SOCKETS, IpvsClient } from '../ipvs/client.js';
import type { NlRequest } from '../netlink/channel.js';
import { RtnlClient } from '../rtnl/client.js';
import { describeOp } from './ids.js';
import type {
  ApplyResult,
  DestinationStatus,
  IpvsInfo,
  IpvsTable,
  IpvsTimeouts,
  Kernel,
  KernelOp,
  LinkAddress,
  LocalAddress,
  ServiceId,
  VirtualServerStatus,
} from './types.js';

const EEXIST = 17;
const ENODEV = 19;
const EADDRNOTAVAIL = 99;

const isAddressOp = (op: KernelOp): op is Extract<KernelOp, { ifname: string }> =>
  op.kind === 'addAddress' || op.kind === 'deleteAddress';

export class NetlinkKernel implements Kernel {
  private constructor(
    private readonly ipvs: IpvsClient,
    private readonly rtnl: RtnlClient,
  ) {}

  /** Opens both sockets in `netns` (a path such as /var/run/netns/NAME), or in the current namespace. */
  static async open(netns?: string): Promise<NetlinkKernel> {
    const rtnl = RtnlClient.open(netns);
    try {
      return new NetlinkKernel(await IpvsClient.open(netns), rtnl);
    } catch (err) {
      rtnl.close();
      throw err;
    }
  }

  ipvsInfo(): Promise<IpvsInfo> {
    return this.ipvs.info();
  }

  /** One service by identity; ESRCH when missing. (Not part of Kernel: syncs read the whole table.) */
  getService(id: ServiceId): Promise<VirtualServerStatus> {
    return this.ipvs.getService(id);
  }

  listServices(): Promise<VirtualServerStatus[]> {
    return this.ipvs.listServices();
  }

  listDestinations(service: ServiceId): Promise<DestinationStatus[]> {
    return this.ipvs.listDestinations(service);
  }

  async dumpTable(): Promise<IpvsTable> {
    const services = await this.ipvs.listServices();
    // One destination dump in flight per dump socket, not one queued per service: a partial sync's
    // own dump (graceful termination) running beside this read then waits for a few, not the table.
    const dests = new Array<DestinationStatus[]>(services.length);
    let next = 0;
    await Promise.all(Array.from({ length: DUMP_SOCKETS }, async () => {
      while (next < services.length) {
        const i = next++;
        dests[i] = await this.ipvs.listDestinations(services[i]);
      }
    }));
    return { services: services.map((service, i) => ({ service, destinations: dests[i] })) };
  }

  async apply(ops: readonly KernelOp[]): Promise<ApplyResult> {
    const errors: KernelError[] = [];
    let start = 0;
    while (start < ops.length) {
      const rtnl = isAddressOp(ops[start]);
      let end = start;
      while (end < ops.length && isAddressOp(ops[end]) === rtnl) end++;
      await (rtnl ? this.applyAddressRun(ops, start, end, errors) : this.applyIpvsRun(ops, start, end, errors));
      start = end;
    }
    return { applied: ops.length - errors.length, errors };
  }

  /** Encodes each op (an op that cannot be encoded is refused with EINVAL) and sends the rest as one batch. */
  private async runBatch(
    ops: readonly KernelOp[],
    start: number,
    end: number,
    errors: KernelError[],
    encode: (op: KernelOp) => NlRequest,
    send: (reqs: NlRequest[]) => Promise<number[]>,
    ignore: (op: KernelOp, errno: number) => boolean = () => false,
  ): Promise<void> {
    const reqs: NlRequest[] = [];
    const index: number[] = [];
    const found: KernelError[] = [];
    for (let i = start; i < end; i++) {
      try {
        reqs.push(encode(ops[i]));
        index.push(i);
      } catch (err) {
        const errno = err instanceof KernelError ? err.errno : 22; /* EINVAL: a value that cannot be encoded */
        found.push(new KernelError(errno, `${describeOp(ops[i])}: ${(err as Error).message}`, ops[i], i));
      }
    }
    const errnos = await send(reqs);
    errnos.forEach((errno, k) => {
      const op = ops[index[k]];
      if (errno && !ignore(op, errno)) found.push(new KernelError(errno, describeOp(op), op, index[k]));
    });
    errors.push(...found.sort((a, b) => a.index! - b.index!));
  }

  private applyIpvsRun(ops: readonly KernelOp[], start: number, end: number, errors: KernelError[]) {
    return this.runBatch(
      ops,
      start,
      end,
      errors,
      (op) => this.ipvs.opRequest(op as Exclude<KernelOp, { ifname: string }>),
      (reqs) => this.ipvs.batch(reqs),
    );
  }

  private async applyAddressRun(ops: readonly KernelOp[], start: number, end: number, errors: KernelError[]) {
    const ifindex = new Map<string, number | undefined>();
    for (let i = start; i < end; i++) {
      const name = (ops[i] as Extract<KernelOp, { ifname: string }>).ifname;
      if (!ifindex.has(name)) ifindex.set(name, (await this.rtnl.getLink(name))?.ifindex);
    }
    await this.runBatch(
      ops,
      start,
      end,
      errors,
      (o) => {
        const op = o as Extract<KernelOp, { ifname: string }>;
        const index = ifindex.get(op.ifname);
        if (index === undefined) throw new KernelError(ENODEV, `no link ${op.ifname}`);
        return op.kind === 'addAddress' ? this.rtnl.addAddressRequest(index, op.address) : this.rtnl.deleteAddressRequest(index, op.address);
      },
      (reqs) => this.rtnl.batch(reqs),
      (op, errno) => (op.kind === 'addAddress' ? errno === EEXIST : errno === EADDRNOTAVAIL),
    );
  }

  getTimeouts(): Promise<IpvsTimeouts> {
    return this.ipvs.getTimeouts();
  }

  setTimeouts(timeouts: IpvsTimeouts): Promise<void> {
    return this.ipvs.setTimeouts(timeouts);
  }

  async ensureDummyLink(ifname: string): Promise<{ ifindex: number; created: boolean }> {
    const existing = await this.rtnl.getLink(ifname);
    if (existing) {
      if (existing.kind !== 'dummy') throw new KernelError(EEXIST, `link ${ifname} exists and is a ${existing.kind || 'non-dummy'} link`);
      return { ifindex: existing.ifindex, created: false };
    }
    try {
      await this.rtnl.createDummy(ifname);
    } catch (err) {
      // Lost a race with another creator: fine if what exists now is a dummy.
      if (!(err instanceof KernelError && err.errno === EEXIST)) throw err;
    }
    const link = await this.rtnl.getLink(ifname);
    if (!link) throw new KernelError(ENODEV, `link ${ifname} vanished after creation`);
    return { ifindex: link.ifindex, created: true };
  }

  async deleteLink(ifname: string): Promise<void> {
    const link = await this.rtnl.getLink(ifname);
    if (link) await this.rtnl.deleteLink(link.ifindex, ifname);
  }

  async listAddresses(ifname: string): Promise<LinkAddress[]> {
    const link = await this.rtnl.getLink(ifname);
    if (!link) throw new KernelError(ENODEV, `list addresses of ${ifname}`);
    return (await this.rtnl.listAddresses(link.ifindex)).map(({ family, address, prefixLength }) => ({ family, address, prefixLength }));
  }

  async listLocalAddresses(): Promise<LocalAddress[]> {
    const [names, addrs] = await Promise.all([this.rtnl.linkNames(), this.rtnl.listAddresses()]);
    return addrs.map((a) => ({ ...a, ifname: names.get(a.ifindex) ?? '' }));
  }

  async close(): Promise<void> {
    this.ipvs.close();
    this.rtnl.close();
  }
}
