// `kipvs agent --cleanup`: removes what kipvs created and nothing else — the virtual servers on
// addresses bound to its dummy link or carrying its mark (NodePorts on node addresses), then the link
// itself (which takes the addresses with it). Foreign IPVS services, fwmark services and every other
// link are left as they are.

import { KernelError } from './errors.js';
import { SVC_F_KIPVS } from './kernel/ids.js';
import type { Kernel, LinkAddress } from './kernel/types.js';
import type { Logger } from './log.js';

export interface CleanupResult {
  services: number;
  addresses: number;
  link: boolean;
  errors: KernelError[];
}

export async function cleanup(kernel: Kernel, ifname: string, log: Logger): Promise<CleanupResult> {
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
    log.info(`no ${ifname} and no virtual server of kipvs's: nothing to clean up`);
    return { services: 0, addresses: 0, link: false, errors: [] };
  }
  const result = await kernel.apply(services.map((service) => ({ kind: 'deleteService', service })));
  for (const e of result.errors) log.error(e.message, { op: e.op?.kind, errno: e.code });
  if (link) await kernel.deleteLink(ifname);
  log.info('cleaned up', { services: result.applied, addresses: bound.length, link: ifname });
  return { services: result.applied, addresses: bound.length, link, errors: result.errors };
}
