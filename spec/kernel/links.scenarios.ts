// rtnetlink scenarios on the real kernel: the dummy link kube-ipvs0 and its VIP addresses,
// cross-checked with iproute2. Expectations live in links.test.ts on the host.

import { cleanup } from '../../lib/cleanup.js';
import type { KernelOp, LinkAddress } from '../../lib/kernel/types.js';
import { silentLogger } from '../../lib/log.js';
import { dst, svc } from '../support/kernel-values.js';
import type { Scenario } from './harness.js';

const v4 = (address: string): LinkAddress => ({ family: 4, address, prefixLength: 32 });
const v6 = (address: string): LinkAddress => ({ family: 6, address, prefixLength: 128 });
const errs = (r: { errors: Array<{ code: string; index?: number }> }) => r.errors.map((e) => ({ index: e.index, code: e.code }));

const dummy: Scenario = {
  name: 'dummy link and VIP addresses',
  async run(ctx) {
    const IF = 'kube-ipvs0';
    const first = await ctx.kernel.ensureDummyLink(IF);
    const second = await ctx.kernel.ensureDummyLink(IF);
    const link = ctx.sh(`ip -d -o link show ${IF}`);
    const add: KernelOp[] = [v4('10.96.0.10'), v4('10.96.0.11'), v6('fd00:96::10')].map((address) => ({ kind: 'addAddress', ifname: IF, address }));
    const added = errs(await ctx.kernel.apply(add));
    const addedAgain = errs(await ctx.kernel.apply(add));
    const listed = await ctx.kernel.listAddresses(IF);
    const ipAddr = ctx.sh(`ip -o addr show dev ${IF} | awk '{print $4}'`).trim().split('\n').sort();
    const del: KernelOp = { kind: 'deleteAddress', ifname: IF, address: v4('10.96.0.11') };
    const deleted = errs(await ctx.kernel.apply([del]));
    const deletedAgain = errs(await ctx.kernel.apply([del]));
    const afterDelete = (await ctx.kernel.listAddresses(IF)).map((a) => `${a.address}/${a.prefixLength}`).sort();
    const local = (await ctx.kernel.listLocalAddresses()).map((a) => `${a.ifname} ${a.address}/${a.prefixLength}`).sort();
    const noLink = errs(await ctx.kernel.apply([{ kind: 'addAddress', ifname: 'nosuch0', address: v4('10.0.0.1') }]));
    let notDummy: string | null = null;
    try {
      await ctx.kernel.ensureDummyLink('lo');
    } catch (err) {
      notDummy = (err as Error).message;
    }
    await ctx.kernel.deleteLink(IF);
    const linkAfterDelete = ctx.sh(`ip -o link show ${IF} 2>&1 || true`).trim();
    await ctx.kernel.deleteLink(IF);
    return { first, second, link, added, addedAgain, listed, ipAddr, deleted, deletedAgain, afterDelete, local, noLink, notDummy, linkAfterDelete };
  },
};

const manyAddresses: Scenario = {
  name: '500 addresses in one batch',
  async run(ctx) {
    await ctx.kernel.ensureDummyLink('kube-ipvs0');
    const ops: KernelOp[] = [];
    for (let i = 0; i < 500; i++) ops.push({ kind: 'addAddress', ifname: 'kube-ipvs0', address: v4(`10.97.${i >> 8}.${i & 0xff}`) });
    const t0 = Date.now();
    const r = await ctx.kernel.apply(ops);
    const ms = Date.now() - t0;
    const counted = Number(ctx.sh('ip -o -4 addr show dev kube-ipvs0 | wc -l').trim());
    const removed = await ctx.kernel.apply(ops.map((op) => ({ ...op, kind: 'deleteAddress' }) as KernelOp));
    const left = Number(ctx.sh('ip -o -4 addr show dev kube-ipvs0 | wc -l').trim());
    return { applied: r.applied, errors: errs(r), ms, counted, removedErrors: errs(removed), left };
  },
};

/** --cleanup on the real kernel: kipvs' virtual servers and link go, ipvsadm's own services stay. */
const cleanupScenario: Scenario = {
  name: 'cleanup removes only what kipvs created',
  async run(ctx) {
    await ctx.kernel.ensureDummyLink('kube-ipvs0');
    const service = svc();
    await ctx.kernel.apply([
      { kind: 'addAddress', ifname: 'kube-ipvs0', address: v4('10.96.0.10') },
      { kind: 'addService', service },
      { kind: 'addDestination', service, destination: dst('10.244.1.5') },
    ]);
    ctx.sh('ipvsadm -A -t 192.168.9.9:80 -s wrr && ipvsadm -A -f 5 -s rr');
    const result = await cleanup(ctx.kernel, 'kube-ipvs0', silentLogger);
    return { result, ipvsadm: ctx.sh('ipvsadm -Sn').trim().split('\n').sort(), link: ctx.sh('ip -o link show kube-ipvs0 2>&1 || true').trim() };
  },
};

export const scenarios: Scenario[] = [dummy, manyAddresses, cleanupScenario];
