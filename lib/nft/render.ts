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
import type { NftFamily, NftGlobals, NftModel, NftPart, NftService } from './model.js';

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

/**
 * A set element: the set's name (services4, masq6, ...) and the element as nft spells it. The full render
 * and the incremental updates (lib/nft/incremental.ts) both spell elements here, so they always agree.
 */
export type NftElement = readonly [set: string, element: string];

/** What elements depend on besides their part (from the globals, lib/nft/model.ts). */
export interface ElementContext {
  masqueradeAll: boolean;
  nodeAddresses: Record<NftFamily, Array<ipaddr.IPv4 | ipaddr.IPv6>>;
}

/** @throws {NftModelError} a node address that is none. */
export function elementContext(g: Pick<NftGlobals, 'nodeAddresses' | 'masqueradeAll'>): ElementContext {
  const nodeAddresses: ElementContext['nodeAddresses'] = { 4: [], 6: [] };
  for (const n of g.nodeAddresses) nodeAddresses[n.family].push(ipaddr.parse(address(n.family, n.address, 'node address')));
  return { masqueradeAll: g.masqueradeAll, nodeAddresses };
}

/**
 * The set elements one part of the model contributes (pure; a whole model is a part):
 * - services: addr . proto . port of every service, what the #72236 filter lets through;
 * - masq: services whose traffic is always masqueraded; clusterips: ClusterIP services, masqueraded from
 *   outside the cluster CIDRs; firewall: LoadBalancer services with source ranges; firewall_allow:
 *   addr . proto . port . allowed source CIDR;
 * - bound: addresses on kube-ipvs0; hairpin: endpoint . endpoint.
 * @throws {NftModelError} a bad value, naming its object.
 */
export function partElements(part: NftPart, ctx: ElementContext): NftElement[] {
  const out: NftElement[] = [];
  for (const s of part.services) {
    const { key, addr } = serviceKey(s);
    const f = s.family;
    out.push([`services${f}`, key]);
    if (s.kind === 'ClusterIP') out.push([`${ctx.masqueradeAll ? 'masq' : 'clusterips'}${f}`, key]);
    else if (!s.local) out.push([`masq${f}`, key]);
    if (s.kind === 'LoadBalancer' && s.sourceRanges.length) {
      // Fail closed: ranges of the other family allow nothing here, but the IP stays firewalled.
      out.push([`firewall${f}`, key]);
      const ranges = s.sourceRanges.map((r) => cidr(r, `Service ${s.owner ?? key} loadBalancerSourceRanges`)).filter((r) => r.family === f);
      for (const range of ranges) out.push([`firewall_allow${f}`, `${key} . ${range.text}`]);
      // The node reaches the IP from the IP itself (it is bound here): allowed when a range holds a node address.
      const parsed = ranges.map((r) => ipaddr.parseCIDR(r.text));
      if (ctx.nodeAddresses[f].some((n) => parsed.some((range) => n.match(range)))) out.push([`firewall_allow${f}`, `${key} . ${addr}`]);
    }
  }
  for (const b of part.boundAddresses) out.push([`bound${b.family}`, address(b.family, b.address, 'bound address')]);
  for (const e of part.endpointAddresses) {
    const a = address(e.family, e.address, 'endpoint address');
    out.push([`hairpin${e.family}`, `${a} . ${a}`]);
  }
  return out;
}

/** Every set's elements, by set name. */
function collect(model: NftModel): Map<string, Set<string>> {
  const sets = new Map<string, Set<string>>();
  const cidrs = model.clusterCIDRs.map((c): NftElement => {
    const range = cidr(c, 'clusterCIDRs');
    return [`cluster_cidrs${range.family}`, range.text];
  });
  for (const [name, element] of [...partElements(model, elementContext(model)), ...cidrs]) {
    let set = sets.get(name);
    if (!set) sets.set(name, (set = new Set()));
    set.add(element);
  }
  return sets;
}

function set(name: string, type: string, elements: Set<string> = new Set(), interval = false): string {
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
    const ip = family === 4 ? 'ip' : 'ip6';
    const addr = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
    const svc = `${addr} . inet_proto . inet_service`;
    out.push(
      set(`services${family}`, svc, sets.get(`services${family}`)),
      set(`masq${family}`, svc, sets.get(`masq${family}`)),
      set(`clusterips${family}`, svc, sets.get(`clusterips${family}`)),
      set(`firewall${family}`, svc, sets.get(`firewall${family}`)),
      set(`firewall_allow${family}`, `${svc} . ${addr}`, sets.get(`firewall_allow${family}`), true),
      set(`bound${family}`, addr, sets.get(`bound${family}`)),
      set(`hairpin${family}`, `${addr} . ${addr}`, sets.get(`hairpin${family}`)),
      set(`cluster_cidrs${family}`, addr, sets.get(`cluster_cidrs${family}`), true),
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
      sets.has(`cluster_cidrs${family}`)
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

/**
 * The nft script (one transaction) that deletes and adds the given elements in kipvs's existing table,
 * one line per set; '' when there is nothing to change. Sorted, as the full render.
 */
export function renderElementChanges(changes: { add: readonly NftElement[]; delete: readonly NftElement[] }): string {
  const lines = (verb: string, elements: readonly NftElement[]) => {
    const bySet = new Map<string, string[]>();
    for (const [name, element] of elements) {
      let list = bySet.get(name);
      if (!list) bySet.set(name, (list = []));
      list.push(element);
    }
    return [...bySet.keys()].sort().map((name) => `${verb} element ${TABLE} ${name} { ${bySet.get(name)!.sort().join(', ')} }`);
  };
  const out = [...lines('delete', changes.delete), ...lines('add', changes.add)];
  return out.length ? `${out.join('\n')}\n` : '';
}
