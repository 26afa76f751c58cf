// The node's side of desired state: which of its addresses serve NodePorts and which addresses
// already live on its interfaces (an external IP there is not bound to kube-ipvs0), from one dump of
// the node's addresses. Pure; the reconciler refreshes it on every full sync, so addresses that
// appear or disappear are picked up by the next one.

import ipaddr from 'ipaddr.js';
import type { LocalAddress } from '../kernel/types.js';
import { splitList } from './config.js';
import type { NodeContext } from './desired.js';

/** Parses --nodeport-addresses CIDRs; throws naming the bad one. */
export function parseCidrs(texts: readonly string[]): Array<[ipaddr.IPv4 | ipaddr.IPv6, number]> {
  return texts.map((t) => {
    try {
      return ipaddr.parseCIDR(t);
    } catch {
      throw new Error(`"${t}" is not a CIDR (e.g. 10.0.0.0/8 or fd00::/64)`);
    }
  });
}

/** A --FLAG of comma-separated CIDRs (agent and status take the same ones): the list; throws naming the flag. */
export function cidrFlag(flag: string, text: string | undefined): string[] {
  const list = splitList(text ?? '');
  try {
    parseCidrs(list);
  } catch (err) {
    throw new Error(`--${flag}: ${(err as Error).message}`);
  }
  return list;
}

/**
 * NodePort addresses and local addresses from the node's addresses. With `cidrs`, NodePorts are served
 * on the addresses inside them; without, on every address but loopback, IPv6 link-local and those on
 * `dummy` (kube-ipvs0). Sorted, so an unchanged node compares equal.
 */
export function nodeAddresses(
  local: readonly LocalAddress[],
  dummy: string,
  cidrs: ReturnType<typeof parseCidrs>,
): Pick<NodeContext, 'nodePortAddresses' | 'localAddresses'> {
  const others = local.filter((a) => a.ifname !== dummy);
  const serving = others.filter((a) => {
    const ip = ipaddr.parse(a.address);
    if (cidrs.length) return cidrs.some(([net, bits]) => net.kind() === ip.kind() && ip.match(net, bits));
    const range = ip.range();
    return range !== 'loopback' && range !== 'linkLocal' && range !== 'unspecified';
  });
  const unique = new Map(serving.map((a) => [a.address, { family: a.family, address: a.address }]));
  return {
    nodePortAddresses: [...unique.values()].sort((a, b) => a.family - b.family || (a.address < b.address ? -1 : a.address > b.address ? 1 : 0)),
    localAddresses: new Set(others.map((a) => a.address)),
  };
}

/** Whether two node contexts ask the same of desired state. */
export function sameNode(a: NodeContext, b: NodeContext): boolean {
  return a.name === b.name && a.zone === b.zone &&
    a.nodePortAddresses.length === b.nodePortAddresses.length &&
    a.nodePortAddresses.every((x, i) => x.address === b.nodePortAddresses[i].address) &&
    a.localAddresses.size === b.localAddresses.size && [...a.localAddresses].every((x) => b.localAddresses.has(x));
}

/** The Node's topology.kubernetes.io/zone label. */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
