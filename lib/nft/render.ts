// Renders kipvs's one nftables table, `inet kipvs`, from a plain model (lib/nft/model.ts): pure, no I/O.
// Every service, address and CIDR is an element of a named set, so the table has the same rules whatever
// the number of services; the script deletes and re-creates the whole table in one `nft -f -`
// transaction, so the kernel switches from the old table to the new one atomically and no other table is
// ever named.
//
// What it does, as kube-proxy's IPVS mode does (pkg/proxy/ipvs/proxier.go), with sets instead of ipsets:
// - input, priority filter (0), before IPVS's LOCAL_IN hooks (NF_IP_PRI_NAT_SRC-2/-1 = 98/99):
//   · a LoadBalancer IP:port with loadBalancerSourceRanges drops sources outside them
//     (KUBE-LOAD-BALANCER-FW / KUBE-LOAD-BALANCER-SOURCE-CIDR);
//   · a new TCP/UDP/SCTP connection to an address bound on kube-ipvs0 on a port that is no service is
//     rejected (KUBE-IPVS-FILTER, kubernetes#72236), so host processes listening on 0.0.0.0 are not exposed
//     on every VIP. Only `ct state new`: replies to the node's own connections from a VIP pass. Unlike
//     kube-proxy, ICMP (ping a VIP) is left alone.
// - output, priority mangle (-150), before IPVS's LOCAL_OUT hooks (-99/-98), which would otherwise send
//   the node's own connections to a LoadBalancer IP straight to a real server: the same source-range
//   drop. The node connects from the IP itself (bound on kube-ipvs0), so that source is allowed when a
//   range holds one of the node's addresses (KUBE-LOAD-BALANCER-SOURCE-IP, KUBE-IPVS-OUT-FILTER).
// - masquerade, decided in nat prerouting and nat output (priority dstnat, -100: before IPVS, whose
//   LOCAL_OUT hooks sit at -99/-98 and LOCAL_IN at 98/99, so the destination is still the VIP:port) by
//   setting kube-proxy's mark bit (KUBE-MARK-MASQ); nat postrouting masquerades marked packets and clears
//   the bit. (Deciding in postrouting on `ct original proto-dst` would need no mark, but nft 1.0.6 cannot
//   put that expression in a set lookup.) Marked:
//   · NodePort, ExternalIP, LoadBalancer unless Local (KUBE-NODE-PORT, KUBE-EXTERNAL-IP, KUBE-LOAD-BALANCER);
//   · ClusterIP from outside the cluster CIDRs, all of it with masqueradeAll; without cluster CIDRs of a
//     family, only traffic whose source is a bound VIP (the node's own connections), as kube-proxy does.
//   Hairpin (a real server reaching itself through a service, KUBE-LOOP-BACK) is matched in postrouting,
//   after IPVS chose the real server: source == destination == an endpoint address.

import ipaddr from 'ipaddr.js';
import type { NftFamily, NftModel, NftService } from './model.js';

export const TABLE = 'inet kipvs';

const PROTO = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;
const FAMILIES: readonly NftFamily[] = [4, 6];

/**
 * The packet mark bit that asks for masquerade: kube-proxy's (--iptables-masquerade-bit 14), so a node
 * still carrying kube-proxy's iptables rules agrees on its meaning. Cleared when the packet is masqueraded.
 */
export const MASQ_MARK = 0x4000;
const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;
const MARK_MASQ = `meta mark set meta mark | ${hex(MASQ_MARK)}`;

/** A bad value in the model: names the object it came from and the value. */
export class NftModelError extends Error {
  override readonly name = 'NftModelError';
}

interface FamilySets {
  /** addr . proto . port of every service: what the #72236 filter lets through. */
  services: Set<string>;
  /** services whose traffic is always masqueraded. */
  masq: Set<string>;
  /** ClusterIP services: masqueraded from outside the cluster CIDRs. */
  clusterIPs: Set<string>;
  /** LoadBalancer services with source ranges. */
  firewall: Set<string>;
  /** addr . proto . port . allowed source CIDR. */
  firewallAllow: Set<string>;
  bound: Set<string>;
  /** endpoint . endpoint: hairpin. */
  hairpin: Set<string>;
  cidrs: Set<string>;
}

const familyName = (f: NftFamily) => `IPv${f}`;

function address(family: NftFamily, text: string, what: string): string {
  if (family !== 4 && family !== 6) throw new NftModelError(`nftables: ${what}: family ${String(family)} is neither 4 nor 6`);
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(String(text).trim());
  } catch {
    throw new NftModelError(`nftables: ${what}: "${text}" is not an IP address`);
  }
  if (ip.kind() !== (family === 4 ? 'ipv4' : 'ipv6')) throw new NftModelError(`nftables: ${what}: "${text}" is not an ${familyName(family)} address`);
  return ip.toString();
}

/** A CIDR, canonical (host bits cleared), with its family. */
function cidr(text: string, what: string): { family: NftFamily; text: string } {
  try {
    const [ip, bits] = ipaddr.parseCIDR(String(text).trim());
    const v4 = ip.kind() === 'ipv4';
    const net = (v4 ? ipaddr.IPv4 : ipaddr.IPv6).networkAddressFromCIDR(`${ip.toString()}/${bits}`);
    return { family: v4 ? 4 : 6, text: `${net.toString()}/${bits}` };
  } catch {
    throw new NftModelError(`nftables: ${what}: "${text}" is not a CIDR (e.g. 10.0.0.0/8 or fd00::/64)`);
  }
}

/** The service as a set element `addr . proto . port`, and its canonical address. */
function serviceKey(s: NftService): { key: string; addr: string } {
  const what = `Service ${s.owner ?? `${s.address} ${s.protocol}/${s.port}`}`;
  const addr = address(s.family, s.address, what);
  const proto = PROTO[s.protocol];
  if (!proto) throw new NftModelError(`nftables: ${what}: protocol "${s.protocol}" is not TCP, UDP or SCTP`);
  if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) throw new NftModelError(`nftables: ${what}: port ${s.port} is not 1-65535`);
  return { key: `${addr} . ${proto} . ${s.port}`, addr };
}

function collect(model: NftModel): Record<NftFamily, FamilySets> {
  const empty = (): FamilySets => ({
    services: new Set(), masq: new Set(), clusterIPs: new Set(), firewall: new Set(), firewallAllow: new Set(),
    bound: new Set(), hairpin: new Set(), cidrs: new Set(),
  });
  const sets: Record<NftFamily, FamilySets> = { 4: empty(), 6: empty() };
  const nodeAddrs: Record<NftFamily, Array<ipaddr.IPv4 | ipaddr.IPv6>> = { 4: [], 6: [] };
  for (const n of model.nodeAddresses) nodeAddrs[n.family].push(ipaddr.parse(address(n.family, n.address, 'node address')));
  for (const s of model.services) {
    const { key, addr } = serviceKey(s);
    const f = sets[s.family];
    f.services.add(key);
    if (s.kind === 'ClusterIP') (model.masqueradeAll ? f.masq : f.clusterIPs).add(key);
    else if (!s.local) f.masq.add(key);
    if (s.kind === 'LoadBalancer' && s.sourceRanges.length) {
      // Fail closed: ranges of the other family allow nothing here, but the IP stays firewalled.
      f.firewall.add(key);
      const ranges = s.sourceRanges.map((r) => cidr(r, `Service ${s.owner ?? key} loadBalancerSourceRanges`)).filter((r) => r.family === s.family);
      for (const range of ranges) f.firewallAllow.add(`${key} . ${range.text}`);
      // The node reaches the IP from the IP itself (it is bound here): allowed when a range holds a node address.
      const parsed = ranges.map((r) => ipaddr.parseCIDR(r.text));
      if (nodeAddrs[s.family].some((n) => parsed.some((range) => n.match(range)))) f.firewallAllow.add(`${key} . ${addr}`);
    }
  }
  for (const b of model.boundAddresses) sets[b.family].bound.add(address(b.family, b.address, 'bound address'));
  for (const e of model.endpointAddresses) {
    const a = address(e.family, e.address, 'endpoint address');
    sets[e.family].hairpin.add(`${a} . ${a}`);
  }
  for (const c of model.clusterCIDRs) {
    const range = cidr(c, 'clusterCIDRs');
    sets[range.family].cidrs.add(range.text);
  }
  return sets;
}

function set(name: string, type: string, elements: Set<string>, interval = false): string {
  const lines = [`\tset ${name} {`, `\t\ttype ${type}`];
  if (interval) lines.push('\t\tflags interval');
  // Sorted: the same model renders the same text, so an unchanged model is never re-applied.
  if (elements.size) lines.push(`\t\telements = {\n${[...elements].sort().map((e) => `\t\t\t${e}`).join(',\n')}\n\t\t}`);
  lines.push('\t}');
  return lines.join('\n');
}

/** The nft script that atomically replaces kipvs's table with the one `model` describes. @throws {NftModelError} */
export function renderRuleset(model: NftModel): string {
  const sets = collect(model);
  const out: string[] = [
    '# kipvs: masquerade and filtering for the services it serves; generated, replaced whole on every apply.',
    `add table ${TABLE}`,
    `delete table ${TABLE}`,
    `table ${TABLE} {`,
  ];
  const input: string[] = [];
  const output: string[] = [];
  const mark: string[] = [];
  const nat: string[] = [];
  for (const family of FAMILIES) {
    const f = sets[family];
    const ip = family === 4 ? 'ip' : 'ip6';
    const addr = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
    const svc = `${addr} . inet_proto . inet_service`;
    out.push(
      set(`services${family}`, svc, f.services),
      set(`masq${family}`, svc, f.masq),
      set(`clusterips${family}`, svc, f.clusterIPs),
      set(`firewall${family}`, svc, f.firewall),
      set(`firewall_allow${family}`, `${svc} . ${addr}`, f.firewallAllow, true),
      set(`bound${family}`, addr, f.bound),
      set(`hairpin${family}`, `${addr} . ${addr}`, f.hairpin),
      set(`cluster_cidrs${family}`, addr, f.cidrs, true),
    );
    const dst = `${ip} daddr . meta l4proto . th dport`;
    const firewall = `\t\t${dst} @firewall${family} ${dst} . ${ip} saddr != @firewall_allow${family} drop`;
    output.push(firewall);
    input.push(
      firewall,
      `\t\tct state new meta l4proto { tcp, udp, sctp } ${ip} daddr @bound${family} ${dst} != @services${family} reject`,
    );
    mark.push(
      `\t\t${dst} @masq${family} ${MARK_MASQ}`,
      f.cidrs.size
        ? `\t\t${dst} @clusterips${family} ${ip} saddr != @cluster_cidrs${family} ${MARK_MASQ}`
        : `\t\t${dst} @clusterips${family} ${ip} saddr @bound${family} ${MARK_MASQ}`,
    );
    nat.push(`\t\t${ip} saddr . ${ip} daddr @hairpin${family} masquerade fully-random`);
  }
  out.push(
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    ...input,
    '\t}',
    '\tchain output_filter {',
    '\t\ttype filter hook output priority mangle; policy accept;',
    ...output,
    '\t}',
    '\tchain services {',
    ...mark,
    '\t}',
    '\tchain prerouting {',
    '\t\ttype nat hook prerouting priority dstnat; policy accept;',
    '\t\tjump services',
    '\t}',
    '\tchain output {',
    '\t\ttype nat hook output priority -100; policy accept;',
    '\t\tjump services',
    '\t}',
    '\tchain postrouting {',
    '\t\ttype nat hook postrouting priority srcnat; policy accept;',
    ...nat,
    `\t\tmeta mark & ${hex(MASQ_MARK)} == ${hex(MASQ_MARK)} meta mark set meta mark & ${hex(~MASQ_MARK >>> 0)} masquerade fully-random`,
    '\t}',
    '}',
    '',
  );
  return out.join('\n');
}

/** The nft script that removes kipvs's table if it exists (idempotent, one transaction). */
export function renderRemove(): string {
  return `add table ${TABLE}\ndelete table ${TABLE}\n`;
}
