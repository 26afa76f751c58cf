// A Kernel wrapper that fails on purpose, for fault tests: apply() ops refused with an errno drawn
// from a list (never passed to the wrapped kernel) and, when asked, read calls that reject. Faults
// come from a seeded PRNG, so one seed and one sequence of calls give the same faults every run.

import { KernelError, errnoNumber } from '../errors.js';
import { describeOp, serviceKey } from './ids.js';
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

export interface FaultOptions {
  /** PRNG seed. */
  seed: number;
  /** Probability in [0, 1] that an op (and, with `reads`, a read call) fails. Default 0. */
  rate?: number;
  /** Errno codes injected, picked uniformly. Default ['EBUSY', 'ENOMEM', 'EINVAL']. */
  errnos?: readonly string[];
  /** Also fail read calls: ipvsInfo, listServices, listDestinations, dumpTable, getTimeouts, listAddresses, listLocalAddresses. */
  reads?: boolean;
}

export interface FaultCounters {
  /** apply() ops refused by injection. */
  ops: number;
  /** Read calls failed by injection. */
  reads: number;
  /** Injected faults by errno code. */
  byCode: Record<string, number>;
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FaultyKernel implements Kernel {
  readonly faults: FaultCounters = { ops: 0, reads: 0, byCode: {} };
  private rate = 0;
  private readonly random: () => number;
  private readonly codes: readonly string[];
  private readonly failReads: boolean;

  /** Throws for an unknown errno code, an empty list or a rate outside [0, 1]. */
  constructor(
    readonly inner: Kernel,
    options: FaultOptions,
  ) {
    this.codes = options.errnos ?? ['EBUSY', 'ENOMEM', 'EINVAL'];
    if (this.codes.length === 0) throw new RangeError('FaultyKernel needs at least one errno code');
    this.codes.forEach(errnoNumber);
    this.random = mulberry32(options.seed);
    this.failReads = options.reads ?? false;
    this.setFaultRate(options.rate ?? 0);
  }

  /** Probability of a fault from the next call on; 0 stops faults. */
  setFaultRate(rate: number): void {
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`fault rate ${rate} is not in [0, 1]`);
    this.rate = rate;
  }

  /**
   * Draws each op: a faulted one becomes a KernelError (op, index) and is not sent; the rest go to the
   * wrapped kernel in order, and its errors come back with their indices mapped to `ops`. Errors are
   * in op order; `applied` is what the wrapped kernel applied.
   */
  async apply(ops: readonly KernelOp[]): Promise<ApplyResult> {
    const injected: KernelError[] = [];
    const passed: number[] = [];
    ops.forEach((op, index) => {
      const errno = this.draw('ops');
      if (errno === undefined) passed.push(index);
      else injected.push(new KernelError(errno, `${describeOp(op)} (injected)`, op, index));
    });
    if (passed.length === 0) return { applied: 0, errors: injected };
    const result = await this.inner.apply(passed.map((i) => ops[i]));
    const mapped = result.errors.map((e) => {
      if (e.index === undefined) return e;
      const out = new KernelError(e.errno, '', e.op, passed[e.index]);
      out.message = e.message;
      return out;
    });
    const errors = [...injected, ...mapped].sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
    return { applied: result.applied, errors };
  }

  ipvsInfo(): Promise<IpvsInfo> {
    return this.read('ipvsInfo', () => this.inner.ipvsInfo());
  }
  listServices(): Promise<VirtualServerStatus[]> {
    return this.read('listServices', () => this.inner.listServices());
  }
  listDestinations(service: ServiceId): Promise<DestinationStatus[]> {
    return this.read(`listDestinations ${serviceKey(service)}`, () => this.inner.listDestinations(service));
  }
  dumpTable(): Promise<IpvsTable> {
    return this.read('dumpTable', () => this.inner.dumpTable());
  }
  getTimeouts(): Promise<IpvsTimeouts> {
    return this.read('getTimeouts', () => this.inner.getTimeouts());
  }
  listAddresses(ifname: string): Promise<LinkAddress[]> {
    return this.read(`listAddresses dev ${ifname}`, () => this.inner.listAddresses(ifname));
  }
  listLocalAddresses(): Promise<LocalAddress[]> {
    return this.read('listLocalAddresses', () => this.inner.listLocalAddresses());
  }

  /** Passed through, never faulted. */
  setTimeouts(timeouts: IpvsTimeouts): Promise<void> {
    return this.inner.setTimeouts(timeouts);
  }
  /** Passed through, never faulted. */
  ensureDummyLink(ifname: string): Promise<{ ifindex: number; created: boolean }> {
    return this.inner.ensureDummyLink(ifname);
  }
  /** Passed through, never faulted. */
  deleteLink(ifname: string): Promise<void> {
    return this.inner.deleteLink(ifname);
  }
  close(): Promise<void> {
    return this.inner.close();
  }

  /** One draw decides a fault, a second picks its errno; counts it. */
  private draw(kind: 'ops' | 'reads'): number | undefined {
    if (this.random() >= this.rate) return undefined;
    const code = this.codes[Math.floor(this.random() * this.codes.length)];
    this.faults[kind]++;
    this.faults.byCode[code] = (this.faults.byCode[code] ?? 0) + 1;
    return errnoNumber(code);
  }

  private async read<T>(what: string, call: () => Promise<T>): Promise<T> {
    const errno = this.failReads ? this.draw('reads') : undefined;
    if (errno !== undefined) throw new KernelError(errno, `${what} (injected)`);
    return call();
  }
}
