// `kipvs agent --cleanup`: removes what kipvs created and nothing else — the virtual servers on
// addresses bound to its dummy link or carrying its mark (NodePorts on node addresses), then the link
// itself (which takes the addresses with it), then its nftables table (inet kipvs). Foreign IPVS
// services, fwmark services, every other link and every other nftables table are left as they are.

import { KernelError } from './errors.js';
import { SVC_F_KIPVS } from './kernel/ids.js';
import type { Kernel, LinkAddress } from './kernel/types.js';
import type { Logger } from './log.js';

export interface CleanupResult {
  services: number;
  addresses: number;
  link: boolean;
  errors: KernelError[];
  /** With `nft`: whether kipvs's nftables table was removed (false: removing it failed, logged). */
  nftTable?: boolean;
}

/** What cleanup needs of lib/nft/nftables.ts's Nftables. */
export interface NftRemover {
  remove(): Promise<void>;
}

/** Removes the table whether or not kube-ipvs0 exists; a failure is logged and reported, not thrown. */
async function removeTable(nft: NftRemover | undefined, log: Logger): Promise<{ nftTable?: boolean }> {
  if (!nft) return {};
  try {
    await nft.remove();
    return { nftTable: true };
  } catch (err) {
    log.error((err as Error).message);
    return { nftTable: false };
  }
}

export async function cleanup(kernel: Kernel, ifname: string, log: Logger, nft?: NftRemover): Promise<CleanupResult> {
  let bound: LinkAddress[] = [];
  let link = true;
  try {
    bound = await kernel.listAddresses(ifname);
  } catch (err) {
    if (!(err instanceof KernelError && err.code === 'ENODEV')) throw err;
    link = false;
  }
  const owned = new Set(bound.map((a) => a.address));
  const services = (await kernel.listServices()).filter((s) => !s.fwmark && (owned.has(s.address) || (s.flags & SVC_F_KIPVS) !== 0));
  if (!link && !services.length) {
    log.info(`no ${ifname} and no virtual server of kipvs's to clean up`);
    return { services: 0, addresses: 0, link: false, errors: [], ...(await removeTable(nft, log)) };
  }
  const result = await kernel.apply(services.map((service) => ({ kind: 'deleteService', service })));
  for (const e of result.errors) log.error(e.message, { op: e.op?.kind, errno: e.code });
  if (link) await kernel.deleteLink(ifname);
  log.info('cleaned up', { services: result.applied, addresses: bound.length, link: ifname });
  return { services: result.applied, addresses: bound.length, link, errors: result.errors, ...(await removeTable(nft, log)) };
}
