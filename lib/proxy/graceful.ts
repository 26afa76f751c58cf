// Graceful termination of real servers. The diff deletes a real server as soon as its endpoint is
// gone; here, between diff and apply, such a delete becomes "weight 0" (no new connections, live ones
// keep flowing) while the kernel still counts active or inactive connections on it, and becomes the
// delete again once they are gone or after a maximum wait (kube-proxy waits without bound). UDP real
// servers are deleted at once (nothing to drain: expire_nodest_conn reroutes the next datagram), as is
// everything under a virtual server that is deleted whole. An endpoint that comes back while its
// real server drains gets its weight back. Weight-0 leftovers of an earlier run drain the same way.
// planDrain is pure (ops, draining table, connection counts, time) → (ops, table, events); the class
// around it reads the counts (from the full sync's dump, else one destination dump per affected
// virtual server), logs what happened and asks for a sync every second while anything drains.

import { destinationKey, serviceKey } from '../kernel/ids.js';
import type { Destination, DestinationId, IpvsTable, Kernel, KernelOp, ServiceId } from '../kernel/types.js';
import type { Logger } from '../log.js';
import type { ObservedState } from './diff.js';
import { realClock, type Clock } from './runner.js';

/** --graceful-termination-max-wait's default. */
export const DEFAULT_MAX_WAIT_MS = 60_000;
/** How often a sync is requested while real servers drain: a partial sync of the draining ones is cheap. */
export const DEFAULT_CHECK_INTERVAL_MS = 1000;

export interface Connections {
  activeConns: number;
  inactiveConns: number;
}

/** A real server's connection counts as the kernel reports them; undefined when not known. */
export type ConnectionLookup = (service: string, destination: DestinationId) => Connections | undefined;

/** A real server at weight 0 waiting for its connections to end. */
export interface Draining {
  service: ServiceId;
  /** As in the kernel, at weight 0. */
  destination: Destination;
  /** Clock time draining started (for a leftover: when this run first saw it). */
  since: number;
  /** Connection counts last read. */
  activeConns: number;
  inactiveConns: number;
}

export type DrainEvent =
  | { kind: 'drain'; key: string; leftover: boolean; activeConns: number; inactiveConns: number }
  | { kind: 'restore'; key: string; ms: number }
  | { kind: 'delete'; key: string; reason: 'idle' | 'max-wait' | 'udp' | 'no-wait' | 'service'; ms?: number; activeConns?: number; inactiveConns?: number };

export interface DrainPlan {
  ops: KernelOp[];
  draining: Map<string, Draining>;
  events: DrainEvent[];
}

/** 'TCP/10.96.0.10:80 -> 10.244.1.5:8080', as describeOp writes it. */
export const realServerKey = (service: ServiceId, destination: DestinationId): string =>
  `${serviceKey(service)} -> ${destinationKey(destination)}`;

/**
 * The ops with graceful termination applied. `draining` is not changed (a new table is returned).
 * Each deleteDestination under a kept virtual server is kept when the real server is UDP, has no
 * connections, or has drained for maxWaitMs (0 = no draining at all); otherwise it becomes an
 * updateDestination to weight 0 (or nothing, when already at 0) and the real server is draining.
 * An add/update with a weight restores a draining one; a deleteService ends its real servers' draining.
 * Entries whose real server the kernel no longer has (per `observed`) are dropped.
 */
export function planDrain(
  ops: readonly KernelOp[],
  draining: ReadonlyMap<string, Draining>,
  observed: ObservedState,
  conns: ConnectionLookup,
  now: number,
  maxWaitMs: number,
): DrainPlan {
  const next = new Map(draining);
  const events: DrainEvent[] = [];
  const out: KernelOp[] = [];
  const since = (key: string) => {
    const e = next.get(key);
    return e === undefined ? undefined : now - e.since;
  };
  for (const op of ops) {
    switch (op.kind) {
      case 'deleteService': {
        const prefix = `${serviceKey(op.service)} -> `;
        for (const key of [...next.keys()].filter((k) => k.startsWith(prefix))) {
          events.push({ kind: 'delete', key, reason: 'service', ms: since(key) });
          next.delete(key);
        }
        out.push(op);
        break;
      }
      case 'addDestination':
      case 'updateDestination': {
        const key = realServerKey(op.service, op.destination);
        if (op.destination.weight > 0 && next.has(key)) {
          events.push({ kind: 'restore', key, ms: since(key)! });
          next.delete(key);
        }
        out.push(op);
        break;
      }
      case 'deleteDestination': {
        const key = realServerKey(op.service, op.destination);
        const skey = serviceKey(op.service);
        const have = observed.services.get(skey)?.destinations.get(op.destination);
        const entry = next.get(key);
        const reason = op.service.protocol === 'UDP' ? 'udp' : maxWaitMs <= 0 ? 'no-wait' : undefined;
        const c = have && !reason ? conns(skey, op.destination) : undefined;
        if (!have || reason) {
          if (reason) events.push({ kind: 'delete', key, reason, ms: since(key) });
          next.delete(key);
          out.push(op);
        } else if (c && c.activeConns + c.inactiveConns === 0) {
          if (entry) events.push({ kind: 'delete', key, reason: 'idle', ms: since(key) });
          next.delete(key);
          out.push(op);
        } else if (entry && now - entry.since >= maxWaitMs) {
          const left = c ?? entry;
          events.push({ kind: 'delete', key, reason: 'max-wait', ms: since(key), activeConns: left.activeConns, inactiveConns: left.inactiveConns });
          next.delete(key);
          out.push(op);
        } else {
          const counts = c ?? entry ?? { activeConns: 0, inactiveConns: 0 };
          const destination: Destination = have.weight === 0 ? have : { ...have, weight: 0 };
          next.set(key, {
            service: op.service, destination, since: entry?.since ?? now,
            activeConns: counts.activeConns, inactiveConns: counts.inactiveConns,
          });
          if (!entry) events.push({ kind: 'drain', key, leftover: have.weight === 0, activeConns: counts.activeConns, inactiveConns: counts.inactiveConns });
          if (have.weight !== 0) out.push({ kind: 'updateDestination', service: op.service, destination });
        }
        break;
      }
      default:
        out.push(op);
    }
  }
  for (const [key, e] of next) {
    if (!observed.services.get(serviceKey(e.service))?.destinations.get(e.destination)) next.delete(key);
  }
  return { ops: out, draining: next, events };
}

/** Connection counts from one dump, indexed only for the virtual servers asked about. */
function lookupFrom(entries: Iterable<{ key: string; destinations: readonly (DestinationId & Connections)[] }>): ConnectionLookup {
  const index = new Map<string, Map<string, Connections>>();
  for (const { key, destinations } of entries) index.set(key, new Map(destinations.map((d) => [destinationKey(d), d])));
  return (service, destination) => index.get(service)?.get(destinationKey(destination));
}

export interface GracefulOptions {
  /** Longest a real server drains before it is deleted with connections left (ms; 0 = delete at once). */
  maxWaitMs?: number;
  /** Time source for draining ages and the check timer. */
  clock?: Clock;
  checkIntervalMs?: number;
  /** Called every checkIntervalMs while anything drains: should request a sync. */
  wake?: () => void;
}

export class GracefulTermination {
  private readonly kernel: Kernel;
  private readonly log: Logger;
  readonly maxWaitMs: number;
  private readonly clock: Clock;
  private readonly checkIntervalMs: number;
  private readonly wake: (() => void) | undefined;
  private table: Map<string, Draining> = new Map();
  private cancelTimer: (() => void) | undefined;

  constructor(kernel: Kernel, logger: Logger, opts: GracefulOptions = {}) {
    this.kernel = kernel;
    this.log = logger;
    this.maxWaitMs = opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
    this.clock = opts.clock ?? realClock;
    this.checkIntervalMs = opts.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    this.wake = opts.wake;
  }

  /** The real servers draining now, by realServerKey. */
  get draining(): ReadonlyMap<string, Draining> {
    return this.table;
  }

  /** Service keys with draining real servers: a partial sync must diff them too, to finish the drain. */
  serviceKeys(): Set<string> {
    return new Set([...this.table.values()].map((e) => serviceKey(e.service)));
  }

  /**
   * Applies graceful termination to one sync's ops. Connection counts come from `table` (a full
   * sync's dump) or else from one destination dump per virtual server with a real server to delete;
   * a failed read throws (the sync fails and is retried as a full one).
   */
  async plan(ops: readonly KernelOp[], observed: ObservedState, table?: IpvsTable): Promise<KernelOp[]> {
    const asked = new Map<string, ServiceId>();
    if (this.maxWaitMs > 0) {
      for (const op of ops) if (op.kind === 'deleteDestination' && op.service.protocol !== 'UDP') asked.set(serviceKey(op.service), op.service);
    }
    if (!asked.size && !this.table.size) return ops as KernelOp[]; // the caller's own list (a copy was 1 MB at a cold sync's 120,000 ops)
    let lookup: ConnectionLookup = () => undefined;
    if (asked.size && table) {
      lookup = lookupFrom(table.services
        .map((s) => ({ key: serviceKey(s.service), destinations: s.destinations }))
        .filter((s) => asked.has(s.key)));
    } else if (asked.size) {
      lookup = lookupFrom(await Promise.all([...asked].map(async ([key, s]) => ({ key, destinations: await this.kernel.listDestinations(s) }))));
    }
    const plan = planDrain(ops, this.table, observed, lookup, this.clock.now(), this.maxWaitMs);
    this.table = plan.draining;
    for (const e of plan.events) this.report(e);
    this.arm();
    return plan.ops;
  }

  private report(e: DrainEvent): void {
    const secs = (ms: number | undefined) => `${((ms ?? 0) / 1000).toFixed(1)} s`;
    const meta = { realServer: e.key, draining: this.table.size };
    switch (e.kind) {
      case 'drain':
        this.log.info(`real server ${e.key} draining${e.leftover ? ' (left at weight 0 by an earlier run)' : ''}: weight 0 until its ` +
          `${e.activeConns} active and ${e.inactiveConns} inactive connections end, at most ${secs(this.maxWaitMs)}`, meta);
        break;
      case 'restore':
        this.log.info(`real server ${e.key} is an endpoint again after draining ${secs(e.ms)}: weight restored`, meta);
        break;
      case 'delete':
        if (e.reason === 'max-wait') {
          this.log.warn(`real server ${e.key} deleted after the maximum wait of ${secs(this.maxWaitMs)} with ` +
            `${e.activeConns} active and ${e.inactiveConns} inactive connections left`, meta);
        } else if (e.reason === 'idle') {
          this.log.info(`real server ${e.key} deleted: its connections ended after draining ${secs(e.ms)}`, meta);
        } else if (e.ms !== undefined) {
          this.log.info(`real server ${e.key} deleted after draining ${secs(e.ms)}: ${e.reason === 'service' ? 'its virtual server is deleted' : e.reason}`, meta);
        }
        break;
    }
  }

  /** Keeps one check timer armed while anything drains. */
  private arm(): void {
    if (!this.table.size || !this.wake) return this.stop();
    this.cancelTimer ??= this.clock.timer(this.checkIntervalMs, () => {
      this.cancelTimer = undefined;
      this.wake?.();
    });
  }

  /** Cancels the check timer (the agent is stopping). */
  stop(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }
}
