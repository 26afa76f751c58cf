// Plain-text renderings of desired state for golden files: one line per virtual server, real server,
// VIP and error, in a stable order, so a reviewer reads the expected kernel state as a value.

import type { DesiredVirtualServer, ObjectError } from '../../lib/proxy/desired.js';
import { destinationKey, serviceKey, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import type { LinkAddress } from '../../lib/kernel/types.js';

export function renderService(v: DesiredVirtualServer): string[] {
  const s = v.service;
  // kipvs's ownership mark is on every virtual server it makes: left out, as in `ipvsadm -Ln`.
  const opts = [s.scheduler, `flags=0x${(s.flags & ~SVC_F_KIPVS).toString(16)}`];
  if (s.timeout) opts.push(`timeout=${s.timeout}`);
  opts.push(`netmask=${s.family === 4 ? '0x' + s.netmask.toString(16) : s.netmask}`);
  if (v.keepScheduler) opts.push('keep-scheduler');
  if (v.local) opts.push('local');
  if (v.sourceRanges.length) opts.push(`source-ranges=${v.sourceRanges.join(',')}`);
  const kind = v.kind === 'ClusterIP' ? '' : ` ${v.kind}`;
  const lines = [`${serviceKey(s)} ${opts.join(' ')}  # ${v.owner}${kind}`];
  for (const d of [...v.destinations].sort((a, b) => destinationKey(a).localeCompare(destinationKey(b)))) {
    lines.push(`  -> ${destinationKey(d)} ${d.forward} w=${d.weight}`);
  }
  return lines;
}

export function renderDesired(
  vs: DesiredVirtualServer[],
  addresses: LinkAddress[],
  errors: ObjectError[],
  healthChecks: Array<{ service: string; port: number; localEndpoints: number }> = [],
): string {
  const lines = [
    ...vs.flatMap(renderService),
    ...addresses.map((a) => `VIP ${a.address}/${a.prefixLength}`),
    ...healthChecks.map((h) => `HEALTHCHECK ${h.service} :${h.port} localEndpoints=${h.localEndpoints}`),
    ...errors.map((e) => `ERROR ${e.object}: ${e.reason}`),
  ];
  return lines.join('\n') + '\n';
}
