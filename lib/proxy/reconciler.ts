// The reconciler: turns Source changes into kernel writes. It keeps the desired state per Service
// (recomputing only the Services that changed), and the kernel state as last observed. A full sync
// dumps the kernel once and diffs everything (at start, periodically, after any failure); a partial
// sync diffs only the changed Services against the kept observation, so one endpoint change costs
// O(1) work and O(1) messages. Nothing is written before the Source has completed its first list.
// A full sync's kernel read may run beside partial syncs (the runner's overlap): the observation it
// builds from the dump then keeps, for every virtual server and address those wrote or tried to write
// during the read, the kept observation they updated (the dump may show it before or after them).

import type { V1EndpointSlice } from '@kubernetes/client-node';
import { serviceKey } from '../kernel/ids.js';
import type { IpvsTable, Kernel, KernelOp } from '../kernel/types.js';
import type { Logger } from '../log.js';
import { SERVICE_NAME_LABEL, type Change, type Source } from '../sources/types.js';
import { applyConfigMap, DEFAULT_CONFIG, type ProxyConfig } from './config.js';
import { desiredForService, sameDesired, type NodeContext, type ObjectError, type ServiceResult } from './desired.js';
import { nodeAddresses, parseCidrs, sameNode, ZONE_LABEL } from './node.js';
import { applyToObserved, diff, observedFromKernel, type DesiredState, type ObservedState } from './diff.js';
import type { Overlap } from './runner.js';
import { GracefulTermination, type GracefulOptions } from './graceful.js';
import { SetMap } from './setmap.js';
import { partFromAddress, partFromVirtualServer, type NftGlobals, type NftPart } from '../nft/model.js';

export const DUMMY_LINK = 'kube-ipvs0';

export interface SyncReport {
  full: boolean;
  /** Ops written, by kind. */
  ops: Partial<Record<KernelOp['kind'], number>>;
  written: number;
  failed: number;
  /** Kernel refusals (and a failed read) by errno code. */
  errors: Record<string, number>;
  ms: number;
  /** Where `ms` went: recomputing desired state, reading the kernel (full syncs), diffing, writing IPVS, the nftables table. */
  phases: { desired: number; read: number; diff: number; apply: number; firewall: number };
}

export interface ReconcilerOptions {
  kernel: Kernel;
  source: Source;
  logger: Logger;
  /** Defaults under the ConfigMap; `overrides` (command-line flags) win over both. */
  defaults?: ProxyConfig;
  overrides?: Partial<ProxyConfig>;
  ifname?: string;
  /** This node's name: its endpoints are local (traffic policies), its Node gives the zone. */
  nodeName?: string;
  /** --nodeport-addresses: CIDRs whose node addresses serve NodePorts (empty = all but loopback/link-local). */
  nodePortAddresses?: readonly string[];
  /** Called with a Service's errors whenever they change to a new, non-empty set (when they are logged). */
  onObjectErrors?: (service: string, errors: readonly ObjectError[]) => void;
  /** Graceful termination of removed real servers (maximum wait, clock, the periodic check's wake-up). */
  graceful?: GracefulOptions;
  /** kipvs's nftables table (masquerade and filtering, lib/nft/): applied before the IPVS writes of each sync that changes something. */
  firewall?: Firewall;
  /** --cluster-cidr: pod CIDRs; ClusterIP traffic from outside them is masqueraded. */
  clusterCIDRs?: readonly string[];
  /** --masquerade-all. */
  masqueradeAll?: boolean;
}

/** What the reconciler needs of lib/nft/nftables.ts's Nftables. */
export interface Firewall {
  /**
   * Full: replaces the table atomically with the one every part describes. Otherwise changes only the parts
   * named (undefined: gone). Throws with nft's reason. A partial update it cannot apply as such (none
   * applied yet, the last one failed, or the globals changed) rejects, without touching the table, with
   * an error whose `needsFull` is true: the caller then sends a full one.
   */
  update(globals: NftGlobals, parts: ReadonlyMap<string, NftPart | undefined>, opts: { full?: boolean }): Promise<boolean>;
}

/** The service keys and addresses a sync's recomputes touched, in order, a key possibly more than once (diff's Scope). */
interface Touched {
  services: string[];
  addresses: string[];
}

/** The virtual servers (service keys) and addresses written during a full sync's read; removed: any deleted. */
interface Raced {
  services: Set<string>;
  addresses: Set<string>;
  removed: boolean;
}

function noteRaced(raced: Raced, ops: readonly KernelOp[]): void {
  for (const op of ops) {
    if (op.kind === 'addAddress' || op.kind === 'deleteAddress') raced.addresses.add(op.address.address);
    else raced.services.add(serviceKey(op.service));
    if (op.kind === 'deleteAddress' || op.kind === 'deleteService') raced.removed = true;
  }
}

/**
 * Puts the kept observation back into `observed` (from a dump) where writes raced the read: for each
 * virtual server and address written, the kept entry (or its absence). And when something was deleted
 * during the read, also every kept entry the dump lacks: the kernel dumps services and addresses by
 * position, so a delete before the dump's cursor makes it skip the next entry. Drift that this hides
 * is repaired by the next full sync.
 */
function keepRaced(observed: ObservedState, kept: ObservedState, raced: Raced): void {
  const restore = <V>(into: Map<string, V>, from: Map<string, V>, key: string) => {
    const v = from.get(key);
    if (v) into.set(key, v);
    else into.delete(key);
  };
  for (const key of raced.services) restore(observed.services, kept.services, key);
  for (const address of raced.addresses) restore(observed.addresses, kept.addresses, address);
  if (!raced.removed) return;
  for (const key of kept.services.keys()) if (!observed.services.has(key)) restore(observed.services, kept.services, key);
  for (const address of kept.addresses.keys()) if (!observed.addresses.has(address)) restore(observed.addresses, kept.addresses, address);
}

export class Reconciler {
  private readonly kernel: Kernel;
  private readonly source: Source;
  private readonly log: Logger;
  private readonly ifname: string;
  private readonly defaults: ProxyConfig;
  private readonly overrides: Partial<ProxyConfig>;
  private readonly onObjectErrors: ReconcilerOptions['onObjectErrors'];
  private readonly firewall: Firewall | undefined;
  private readonly clusterCIDRs: readonly string[];
  private readonly masqueradeAll: boolean;
  private readonly nodePortCidrs: ReturnType<typeof parseCidrs>;
  /** What desired state knows of this node; a change recomputes every Service. */
  node: NodeContext;
  config: ProxyConfig;
  private configMapVersion: string | undefined = '\0';

  /** Per Service (namespace/name): its last valid result. */
  private readonly results = new Map<string, ServiceResult>();
  /** The Services among them with a healthCheckNodePort (few): what the health-check servers follow each sync. */
  private readonly healthChecked = new Map<string, ServiceResult>();
  /** EndpointSlice key → the Service it belongs to, to find slices by Service. */
  private readonly sliceOwner = new Map<string, string>();
  private readonly slicesByService = new SetMap();
  private readonly desired: DesiredState = { services: new Map(), addresses: new Map() };
  /** Which Service holds each kernel service key / address (first claim wins on a conflict). */
  private readonly claims = new Map<string, string>();
  /** Every Service whose result asks for a kernel service key, in claim order: the next holder when one lets go. */
  private readonly wanted = new SetMap();
  private readonly addressClaims = new SetMap();
  private observed: ObservedState | undefined;
  /** While a full sync reads the kernel beside partial syncs: what those wrote (or tried to). */
  private racing: Raced | undefined;
  private readonly dirty = new Set<string>();
  private allDirty = true;
  private needFull = true;
  lastReport: SyncReport | undefined;
  /** Object errors currently in force, by Service; for status and metrics. */
  readonly objectErrors = new Map<string, ObjectError[]>();
  /** Real servers draining at weight 0 before their delete. */
  readonly graceful: GracefulTermination;

  constructor(opts: ReconcilerOptions) {
    this.kernel = opts.kernel;
    this.source = opts.source;
    this.log = opts.logger;
    this.ifname = opts.ifname ?? DUMMY_LINK;
    this.defaults = opts.defaults ?? DEFAULT_CONFIG;
    this.overrides = opts.overrides ?? {};
    this.onObjectErrors = opts.onObjectErrors;
    this.config = { ...this.defaults, ...this.overrides };
    this.nodePortCidrs = parseCidrs(opts.nodePortAddresses ?? []);
    this.node = { name: opts.nodeName ?? '', nodePortAddresses: [], localAddresses: new Set() };
    this.graceful = new GracefulTermination(this.kernel, this.log, opts.graceful);
    this.firewall = opts.firewall;
    this.clusterCIDRs = opts.clusterCIDRs ?? [];
    this.masqueradeAll = opts.masqueradeAll ?? false;
  }

  /** Records source changes; the next sync recomputes the Services they touch. */
  noteChanges(changes: readonly Change[]): void {
    for (const c of changes) {
      if (c.kind === 'Service') this.dirty.add(c.key);
      else if (c.kind === 'EndpointSlice') {
        const before = this.sliceOwner.get(c.key);
        if (before) this.dirty.add(before);
        this.indexSlice(c.key, this.source.snapshot().endpointSlices.get(c.key));
        const after = this.sliceOwner.get(c.key);
        if (after) this.dirty.add(after);
      } else if (c.kind === 'ConfigMap') this.allDirty = true; // settings that apply to every Service
      // A Node change matters only through its zone (refreshNode): most Node updates are status heartbeats.
    }
  }

  /** Forces the next sync to dump the kernel and diff everything (periodic resync, after errors). */
  requestFullSync(): void {
    this.needFull = true;
  }

  private indexSlice(key: string, slice: V1EndpointSlice | undefined): void {
    const before = this.sliceOwner.get(key);
    if (before) {
      this.slicesByService.delete(before, key);
      this.sliceOwner.delete(key);
    }
    const name = slice?.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (!slice || !name) return;
    const owner = `${slice.metadata?.namespace ?? 'default'}/${name}`;
    this.sliceOwner.set(key, owner);
    this.slicesByService.add(owner, key);
  }

  private refreshConfig(): void {
    const cm = this.source.snapshot().configMap;
    const version = cm ? JSON.stringify(cm.data ?? {}) : undefined;
    if (version === this.configMapVersion) return;
    this.configMapVersion = version;
    const { config, errors } = applyConfigMap(this.defaults, cm, this.config);
    for (const e of errors) this.log.error(`${e.object}: ${e.reason}`, { object: e.object });
    const next = { ...config, ...this.overrides };
    if (JSON.stringify(next) !== JSON.stringify(this.config)) {
      this.log.info('proxy configuration changed', { scheduler: next.scheduler, schedulerFlags: next.schedulerFlags, timeouts: next.timeouts });
      this.config = next;
      this.allDirty = true;
      this.needFull = true;
    }
  }

  /** Takes a new node context; every Service is recomputed when it differs. */
  private setNode(next: NodeContext): void {
    if (sameNode(next, this.node)) return;
    this.log.info('node addresses or zone changed', { zone: next.zone, nodePortAddresses: next.nodePortAddresses.map((a) => a.address) });
    this.node = next;
    this.allDirty = true;
  }

  /** The zone from the Node; on full syncs also the node's addresses (NodePorts, local external IPs). */
  private async refreshNode(full: boolean): Promise<void> {
    const labels: unknown = this.source.snapshot().node?.metadata?.labels;
    const zone = labels && typeof labels === 'object' ? (labels as Record<string, unknown>)[ZONE_LABEL] : undefined;
    const next: NodeContext = { ...this.node, zone: typeof zone === 'string' && zone ? zone : undefined };
    if (full) Object.assign(next, nodeAddresses(await this.kernel.listLocalAddresses(), this.ifname, this.nodePortCidrs));
    this.setNode(next);
  }

  /** Recomputes one Service's desired state and swaps its claims; returns the kernel keys it touched. */
  private recompute(key: string, touched: Touched): void {
    const snap = this.source.snapshot();
    const svc = snap.services.get(key);
    let result: ServiceResult | undefined;
    if (svc) {
      const slices: V1EndpointSlice[] = [];
      for (const k of this.slicesByService.values(key)) {
        const slice = snap.endpointSlices.get(k);
        if (slice) slices.push(slice);
      }
      result = desiredForService(svc, slices, this.config, this.node, this.results.get(key));
      const errors = result.errors;
      const previous = this.objectErrors.get(key);
      if (errors.length) this.objectErrors.set(key, errors);
      else this.objectErrors.delete(key);
      if ((errors.length || previous) && JSON.stringify(errors) !== JSON.stringify(previous ?? [])) {
        // Only the errors that are new: another slice arriving with its own error must not repeat those already reported.
        const reported = new Set((previous ?? []).map((e) => `${e.object}: ${e.reason}`));
        for (const e of errors) if (!reported.has(`${e.object}: ${e.reason}`)) this.log.error(`${e.object}: ${e.reason}`, { object: e.object, service: key });
        if (errors.length) this.onObjectErrors?.(key, errors);
      }
      if (!result.valid) {
        // Keep what was programmed for it: a Service that became unreadable must not lose its VIP.
        return;
      }
    } else {
      this.objectErrors.delete(key);
    }
    const old = this.results.get(key);
    if (old && result && sameDesired(old, result) && old.virtualServers.every((vs) => this.claims.get(vs.key) === key)) {
      // Already in force, claims and all: keep the objects we hold, so an unchanged Service (most of
      // them when a Node change or a relist recomputes everything) leaves no garbage. Still diffed.
      for (const vs of old.virtualServers) touched.services.push(vs.key);
      for (const a of old.addresses) touched.addresses.push(a.address);
      return;
    }
    for (const vs of old?.virtualServers ?? []) {
      touched.services.push(vs.key);
      this.wanted.delete(vs.key, key);
      if (this.claims.get(vs.key) !== key) continue;
      this.claims.delete(vs.key);
      this.desired.services.delete(vs.key);
      // Hand the virtual server to the next Service that wants it (the oldest contender).
      const next = this.wanted.first(vs.key);
      const theirs = next === undefined ? undefined : this.results.get(next)?.virtualServers.find((v) => v.key === vs.key);
      if (next !== undefined && theirs) {
        this.claims.set(vs.key, next);
        this.desired.services.set(vs.key, theirs);
        this.log.info(`${vs.key} is now served for Service ${next}`, { service: next });
      }
    }
    for (const a of old?.addresses ?? []) {
      touched.addresses.push(a.address);
      if (this.addressClaims.delete(a.address, key)) this.desired.addresses.delete(a.address);
    }
    if (!result) {
      this.results.delete(key);
      this.healthChecked.delete(key);
      return;
    }
    this.results.set(key, result);
    if (result.healthCheck) this.healthChecked.set(key, result);
    else this.healthChecked.delete(key);
    for (const vs of result.virtualServers) {
      touched.services.push(vs.key);
      this.wanted.add(vs.key, key);
      const holder = this.claims.get(vs.key);
      if (holder && holder !== key) {
        this.log.error(`Service ${key}: ${vs.key} is already served for Service ${holder}; skipped`, { service: key });
        continue;
      }
      this.claims.set(vs.key, key);
      this.desired.services.set(vs.key, vs);
    }
    for (const a of result.addresses) {
      touched.addresses.push(a.address);
      this.addressClaims.add(a.address, key);
      this.desired.addresses.set(a.address, a);
    }
  }

  /**
   * One sync. Returns 'ok' when every op was applied (or there was nothing to do), 'failed' when the
   * kernel refused something or could not be read; failed ops are retried by the next (full) sync.
   * A full sync reads the kernel through `overlap` (the runner's), letting partial syncs run meanwhile;
   * a sync that starts during that read is partial (the full sync in flight diffs everything after it).
   */
  async sync(opts: { full?: boolean; overlap?: Overlap } = {}): Promise<'ok' | 'failed'> {
    if (!this.source.synced()) return 'ok';
    const t0 = performance.now();
    this.refreshConfig();
    const full = !this.racing && (opts.full || this.needFull || !this.observed);
    const touched: Touched = { services: [], addresses: [] };
    let t1 = t0;
    let timeoutsError: string | undefined;
    try {
      await this.refreshNode(full);
      if (this.allDirty) {
        // Every Service we hold a result for, then every other one the source has, without a list of all
        // keys: recompute changes results only at its own key, and keeps it for a Service the source has.
        for (const key of this.results.keys()) this.recompute(key, touched);
        for (const key of this.source.snapshot().services.keys()) if (!this.results.has(key)) this.recompute(key, touched);
        this.allDirty = false;
      } else {
        for (const key of this.dirty) this.recompute(key, touched);
      }
      this.dirty.clear();
      // Draining real servers are diffed on every sync until their delete is written.
      if (!full) for (const key of this.graceful.serviceKeys()) touched.services.push(key);
      t1 = performance.now();
      let table: IpvsTable | undefined;
      if (full) {
        await this.kernel.ensureDummyLink(this.ifname);
        timeoutsError = await this.syncTimeouts();
        // Cleared before the read: a partial sync failing during it asks for the next full one.
        this.needFull = false;
        // One read after the other: with both in flight, a second failure would be dropped unlogged.
        const read = async () => {
          const bound = await this.kernel.listAddresses(this.ifname);
          return { bound, table: await this.kernel.dumpTable() };
        };
        // Partial syncs need an observation to diff against: the first full sync reads alone.
        const kept = opts.overlap && this.observed;
        const raced: Raced = { services: new Set(), addresses: new Set(), removed: false };
        let got: Awaited<ReturnType<typeof read>>;
        if (kept) {
          this.racing = raced;
          try {
            got = await opts.overlap!(read);
          } finally {
            this.racing = undefined;
          }
        } else got = await read();
        table = got.table;
        this.observed = observedFromKernel(table, got.bound, this.desired, this.observed);
        if (kept) keepRaced(this.observed, kept, raced);
      }
      const observed = this.observed!;
      const t2 = performance.now();
      const ops = await this.graceful.plan(diff(this.desired, observed, this.ifname, full ? undefined : touched), observed, table);
      const t3 = performance.now();
      // The table follows desired state, before the IPVS writes: a new virtual server must never take a
      // connection before its masquerade and filter elements exist (a NodePort answered unmasqueraded
      // breaks the reply path). A failure still lets the IPVS writes go ahead and fails the sync.
      // Re-applied whole on full syncs to repair drift.
      const firewallOk = !this.firewall || (!full && !touched.services.length && !touched.addresses.length) || (await this.syncFirewall(full, touched));
      const t4 = performance.now();
      if (this.racing) noteRaced(this.racing, ops);
      const result = ops.length ? await this.kernel.apply(ops) : { applied: 0, errors: [] };
      applyToObserved(observed, ops, new Set(result.errors.map((e) => e.index!)));
      const t5 = performance.now();
      for (const e of result.errors) this.log.error(e.message, { op: e.op?.kind, errno: e.code });
      const counts: SyncReport['ops'] = {};
      for (const op of ops) counts[op.kind] = (counts[op.kind] ?? 0) + 1;
      const errnos: Record<string, number> = {};
      for (const e of result.errors) errnos[e.code] = (errnos[e.code] ?? 0) + 1;
      if (!firewallOk) errnos.nftables = 1;
      if (timeoutsError) errnos[timeoutsError] = (errnos[timeoutsError] ?? 0) + 1;
      this.lastReport = {
        full, ops: counts, written: ops.length, failed: result.errors.length, errors: errnos, ms: t5 - t0,
        phases: { desired: t1 - t0, read: t2 - t1, diff: t3 - t2, firewall: t4 - t3, apply: t5 - t4 },
      };
      if (ops.length) this.log.info('sync', { ...this.lastReport });
      if (result.errors.length || timeoutsError || !firewallOk) {
        this.needFull = true;
        return 'failed';
      }
      return 'ok';
    } catch (err) {
      this.needFull = true;
      const code = (err as { code?: string }).code ?? 'unknown';
      this.log.error(`sync failed: ${(err as Error).message}`, { errno: code });
      const errors: Record<string, number> = { [code]: 1 };
      if (timeoutsError) errors[timeoutsError] = (errors[timeoutsError] ?? 0) + 1;
      this.lastReport = { full, ops: {}, written: 0, failed: 0, errors, ms: performance.now() - t0, phases: { desired: 0, read: 0, diff: 0, apply: 0, firewall: 0 } };
      return 'failed';
    }
  }

  /**
   * Applies the nftables table for the desired state: whole on full syncs, else only the touched virtual
   * servers' and addresses' parts. A failure is logged and fails the sync (retried by a full one).
   */
  private async syncFirewall(full: boolean, touched: Touched): Promise<boolean> {
    const globals: NftGlobals = {
      nodeAddresses: [...this.node.localAddresses].map((address) => ({ family: address.includes(':') ? 6 : 4, address })),
      clusterCIDRs: this.clusterCIDRs,
      masqueradeAll: this.masqueradeAll,
    };
    const update = (whole: boolean) => {
      const parts = new Map<string, NftPart | undefined>();
      for (const key of whole ? this.desired.services.keys() : touched.services) {
        const vs = this.desired.services.get(key);
        parts.set(`service ${key}`, vs && partFromVirtualServer(vs));
      }
      for (const address of whole ? this.desired.addresses.keys() : touched.addresses) {
        const a = this.desired.addresses.get(address);
        parts.set(`address ${address}`, a && partFromAddress(a));
      }
      return this.firewall!.update(globals, parts, { full: whole });
    };
    try {
      try {
        await update(full);
      } catch (err) {
        // A partial sync beside a full sync's read can be the first to see new node addresses (the full
        // sync read them) or follow a failed apply: then the whole table goes now, before its IPVS writes.
        if (full || !(err as { needsFull?: boolean }).needsFull) throw err;
        await update(true);
      }
      return true;
    } catch (err) {
      this.log.error((err as Error).message, { errno: 'nftables' });
      return false;
    }
  }

  /**
   * Sets the configured IPVS timeouts when the kernel's differ (0 = leave the kernel's value). A refusal
   * is logged and fails the sync (so it is retried), but never holds back the services' programming.
   * Returns the errno code of a failure (counted with the sync's kernel errors), undefined when done.
   */
  private async syncTimeouts(): Promise<string | undefined> {
    const want = this.config.timeouts;
    if (!want.tcp && !want.tcpFin && !want.udp) return undefined;
    try {
      const have = await this.kernel.getTimeouts();
      if ((want.tcp && want.tcp !== have.tcp) || (want.tcpFin && want.tcpFin !== have.tcpFin) || (want.udp && want.udp !== have.udp)) {
        await this.kernel.setTimeouts(want);
        this.log.info('IPVS timeouts set', { old: have, new: want });
      }
      return undefined;
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'unknown';
      this.log.error(`setting IPVS timeouts ${JSON.stringify(want)} failed: ${(err as Error).message}`, { errno: code });
      return code;
    }
  }

  /**
   * The last results of the Services that have a healthCheckNodePort, by namespace/name (read-only).
   * Kept as results change, so following them costs nothing per sync for the thousands of others.
   */
  healthCheckResults(): ReadonlyMap<string, ServiceResult> {
    return this.healthChecked;
  }

  /** The desired state as it stands (read-only view for status and tests). */
  desiredState(): DesiredState {
    return this.desired;
  }
}
