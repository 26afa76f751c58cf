// Real-kernel scenario harness. Runs INSIDE the kernel under test (the qemu VM, or a fresh netns on a
// host with IPVS): each scenario gets its own network namespace, a NetlinkKernel opened in it through
// the netns addon, and shell helpers (ip, ipvsadm) bound to the same namespace. Scenarios return
// observations; jest on the host asserts on them (spec/kernel/*.test.ts read results.json).

import { execFileSync } from 'node:child_process';
import { NetlinkKernel } from '../../lib/kernel/netlink.js';
import type { IpvsTable } from '../../lib/kernel/types.js';

export interface Netns {
  name: string;
  path: string;
  /** Runs a shell command inside the namespace; returns stdout, throws with stderr on failure. */
  sh(cmd: string): string;
}

export interface Ctx extends Netns {
  kernel: NetlinkKernel;
  /** Another namespace, deleted after the scenario. */
  extraNetns(suffix: string): Netns;
  /** `ipvsadm -Ln` in this namespace, parsed. */
  ipvsadm(): IpvsadmService[];
}

export interface Scenario {
  name: string;
  run(ctx: Ctx): Promise<unknown>;
}

export function makeNetns(name: string): Netns {
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    path: `/run/netns/${name}`,
    sh: (cmd) => execFileSync('ip', ['netns', 'exec', name, 'sh', '-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
  };
}

export function deleteNetns(name: string): void {
  execFileSync('ip', ['netns', 'del', name]);
}

// ---- ipvsadm -Ln, parsed -------------------------------------------------------------------------

export interface IpvsadmDest {
  addr: string;
  forward: string;
  weight: number;
  active: number;
  inactive: number;
}

export interface IpvsadmService {
  /** e.g. 'TCP  10.0.0.1:80', 'FWM  7 IPv6': ipvsadm's own spelling of the identity. */
  id: string;
  scheduler: string;
  /** The rest of the service line: '(sh-fallback,sh-port) persistent 300 mask 255.255.255.0'. */
  options: string;
  dests: IpvsadmDest[];
}

export function parseIpvsadm(text: string): IpvsadmService[] {
  const out: IpvsadmService[] = [];
  for (const line of text.split('\n')) {
    const svc = /^(TCP|UDP|SCTP|FWM)\s+(\S+)( IPv6)? (\S+)\s*(.*)$/.exec(line);
    if (svc) {
      out.push({ id: `${svc[1]}  ${svc[2]}${svc[3] ?? ''}`, scheduler: svc[4], options: svc[5].trim(), dests: [] });
      continue;
    }
    const dest = /^\s+-> (\S+)\s+(\S+)\s+(-?\d+)\s+(\d+)\s+(\d+)\s*$/.exec(line);
    if (dest && out.length) {
      out[out.length - 1].dests.push({ addr: dest[1], forward: dest[2], weight: +dest[3], active: +dest[4], inactive: +dest[5] });
    }
  }
  return out;
}

const FWD = { masq: 'Masq', droute: 'Route', tunnel: 'Tunnel', local: 'Local' } as const;
const hp = (family: number, a: string, p: number) => (family === 6 ? `[${a}]:${p}` : `${a}:${p}`);

function maskText(family: number, netmask: number): string {
  if (family === 6) return netmask === 128 ? '' : ` mask ${netmask}`;
  if (netmask === 0xffffffff) return '';
  return ` mask ${[24, 16, 8, 0].map((s) => (netmask >>> s) & 0xff).join('.')}`;
}

function schedFlags(scheduler: string, flags: number): string {
  const names = scheduler === 'sh' || scheduler === 'mh' ? [`${scheduler}-fallback`, `${scheduler}-port`, 'flag-3'] : ['flag-1', 'flag-2', 'flag-3'];
  const set = names.filter((_, i) => flags & (0x8 << i));
  return set.length ? `(${set.join(',')})` : '';
}

/** Our own dump rendered in ipvsadm -Ln's terms, for an exact comparison with parseIpvsadm(). */
export function tableAsIpvsadm(table: IpvsTable): IpvsadmService[] {
  return table.services.map(({ service: s, destinations }) => {
    const persistent = s.flags & 0x1 ? ` persistent ${s.timeout}${maskText(s.family, s.netmask)}${s.peName ? ` pe ${s.peName}` : ''}${s.flags & 0x4 ? ' ops' : ''}` : '';
    return {
      id: s.fwmark ? `FWM  ${s.fwmark}${s.family === 6 ? ' IPv6' : ''}` : `${s.protocol}  ${hp(s.family, s.address, s.port)}`,
      scheduler: s.scheduler,
      options: `${schedFlags(s.scheduler, s.flags)}${persistent}`.trim(),
      dests: destinations.map((d) => ({
        addr: hp(d.family, d.address, d.port),
        forward: FWD[d.forward],
        weight: d.weight,
        active: d.activeConns,
        inactive: d.inactiveConns,
      })),
    };
  });
}

/** Sorted the same way on both sides (ipvsadm sorts; the kernel dumps in hash order). */
export function sortIpvsadm(list: IpvsadmService[]): IpvsadmService[] {
  return list
    .map((s) => ({ ...s, dests: [...s.dests].sort((a, b) => a.addr.localeCompare(b.addr)) }))
    .sort((a, b) => a.id.localeCompare(b.id));
}

/**
 * One observation of the namespace's IPVS table: our dump (JSON-safe) and whether it reads back
 * identically through ipvsadm. `ipvsadmMismatch` is null when both agree.
 */
export async function observe(ctx: Ctx) {
  const table = await ctx.kernel.dumpTable();
  const ours = sortIpvsadm(tableAsIpvsadm(table));
  const theirs = sortIpvsadm(ctx.ipvsadm());
  const same = JSON.stringify(ours) === JSON.stringify(theirs);
  return { ipvsadm: theirs, ipvsadmMismatch: same ? null : { ours, theirs }, table: jsonSafe(table) };
}

/** BigInt → string so results survive JSON. */
export function jsonSafe<T>(v: T): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x)));
}
