// `kipvs agent --cleanup`: removes what kipvs created and nothing else — the virtual servers on
// addresses bound to its dummy link, then the link itself (which takes the addresses with it).
// Foreign IPVS services, fwmark services and every other link are left as they are.

import { KernelError } from './errors.js';
import type { Kernel } from './kernel/types.js';
import type { Logger } from './log.js';

export interface CleanupResult {
  services: number;
  addresses: number;
  link: boolean;
  errors: KernelError[];
}

export async function cleanup(kernel: Kernel, ifname: string, log: Logger): Promise<CleanupResult> {
  let bound;
  try {
    bound = await kernel.listAddresses(ifname);
  } catch (err) {
    if (err instanceof KernelError && err.code === 'ENODEV') {
      log.info(`no ${ifname}: nothing of kipvs to clean up`);
      return { services: 0, addresses: 0, link: false, errors: [] };
    }
    throw err;
  }
  const owned = new Set(bound.map((a) => a.address));
  const services = (await kernel.listServices()).filter((s) => !s.fwmark && owned.has(s.address));
  const result = await kernel.apply(services.map((service) => ({ kind: 'deleteService', service })));
  for (const e of result.errors) log.error(e.message, { op: e.op?.kind, errno: e.code });
  await kernel.deleteLink(ifname);
  log.info('cleaned up', { services: result.applied, addresses: bound.length, link: ifname });
  return { services: result.applied, addresses: bound.length, link: true, errors: result.errors };
}
