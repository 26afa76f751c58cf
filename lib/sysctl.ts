// Kernel settings (sysctls) the proxy needs, in the network namespace it programs. This module owns
// which settings kipvs wants (a pure function of its flags and of whether IPv6 is in use) and writing
// them: a setting already right is neither written nor logged, one that changes is logged once with
// its old and new value, and one that cannot be set is a logged error naming it; nothing here throws.
//
// /proc/sys/net/* belongs to the network namespace of the thread that OPENS the file, so every file is
// opened (and read and written, synchronously) inside withNetns(). `root` stands for /proc/sys so the
// logic can be tested against a directory shaped like it.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from './log.js';
import { withNetns } from './netns.js';

export interface Sysctl {
  /** Dotted name as `sysctl` spells it, e.g. 'net.ipv4.vs.conntrack'. */
  name: string;
  value: string;
}

export interface SysctlOptions {
  /**
   * --ipvs-strict-arp (kube-proxy's flag): answer ARP only for addresses on the receiving interface and
   * announce only the best local source, so the VIPs on kube-ipvs0 are not advertised on the node's
   * network (what bare-metal load balancers such as MetalLB in L2 mode need).
   */
  strictArp?: boolean;
  /**
   * IPv6 virtual servers are programmed: IPVS in NAT mode forwards their packets, so IPv6 forwarding is
   * needed too. Only then: turning it on makes the kernel ignore router advertisements on interfaces
   * with accept_ra=1, which a node that has no IPv6 Service should not pay for.
   */
  ipv6?: boolean;
}

/** The settings kipvs wants, in the order they are applied. */
export function wantedSysctls(o: SysctlOptions = {}): Sysctl[] {
  const want: Sysctl[] = [
    // Keep conntrack entries for IPVS connections, so masquerade (nftables) and the filters see them.
    { name: 'net.ipv4.vs.conntrack', value: '1' },
    // Drop a connection whose real server is gone at its next packet instead of black-holing it.
    { name: 'net.ipv4.vs.expire_nodest_conn', value: '1' },
    // Expire persistence (ClientIP affinity) templates pointing at a quiesced (weight 0) real server.
    { name: 'net.ipv4.vs.expire_quiescent_template', value: '1' },
    { name: 'net.ipv4.ip_forward', value: '1' },
  ];
  if (o.ipv6) want.push({ name: 'net.ipv6.conf.all.forwarding', value: '1' });
  if (o.strictArp) {
    want.push({ name: 'net.ipv4.conf.all.arp_ignore', value: '1' }, { name: 'net.ipv4.conf.all.arp_announce', value: '2' });
  }
  return want;
}

export interface SysctlResult {
  /** Settings written this time, with the value they had. */
  changed: { name: string; old: string; new: string }[];
  /** Settings that could not be read or written, with why. */
  failed: { name: string; reason: string }[];
}

/** Multi-value settings read back tab-separated; compare them word by word. */
const normalize = (text: string) => text.trim().split(/\s+/).join(' ');

export class Sysctls {
  private readonly root: string;
  private readonly netns: string | undefined;
  private readonly log: Logger;
  /** Last failure reported per setting: the same failure at every full sync is logged once. */
  private readonly failing = new Map<string, string>();

  constructor(opts: { logger: Logger; netns?: string; root?: string }) {
    this.log = opts.logger;
    this.netns = opts.netns;
    this.root = opts.root ?? '/proc/sys';
  }

  /** The file standing for `name` under the root (/proc/sys/net/ipv4/vs/conntrack). */
  path(name: string): string {
    return join(this.root, ...name.split('.'));
  }

  /**
   * Brings every setting of `want` to its value. Idempotent and cheap when nothing changed (one read
   * per setting, no write). Never throws: a failure is logged (once until it changes) and returned.
   */
  apply(want: readonly Sysctl[]): SysctlResult {
    const result: SysctlResult = { changed: [], failed: [] };
    const fail = (name: string, reason: string) => {
      result.failed.push({ name, reason });
      if (this.failing.get(name) === reason) return;
      this.failing.set(name, reason);
      this.log.error(`sysctl ${name} could not be set: ${reason}`, { sysctl: name, netns: this.netns ?? 'current' });
    };
    try {
      withNetns(this.netns, () => {
        for (const { name, value } of want) {
          const file = this.path(name);
          try {
            const old = normalize(readFileSync(file, 'utf8'));
            if (old !== normalize(value)) {
              writeFileSync(file, `${value}\n`);
              result.changed.push({ name, old, new: value });
            }
            this.failing.delete(name);
          } catch (err) {
            fail(name, (err as Error).message); // e.g. "ENOENT: no such file or directory, open '/proc/sys/...'"
          }
        }
      });
    } catch (err) {
      // The namespace could not be entered: nothing was read or written.
      for (const { name } of want) fail(name, (err as Error).message);
    }
    for (const c of result.changed) {
      this.log.info(`sysctl ${c.name} set: ${c.old} → ${c.new}`, { sysctl: c.name, old: c.old, new: c.new, netns: this.netns ?? 'current' });
    }
    return result;
  }
}
