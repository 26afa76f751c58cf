// IPVS scenarios on the real kernel: every operation of the kernel layer, observed through our own
// dump and through `ipvsadm -Ln`. Expectations live in ipvs.test.ts on the host.

import { execSync } from 'node:child_process';
import { NetlinkKernel } from '../../lib/kernel/netlink.js';
import type { Family, KernelOp, Protocol } from '../../lib/kernel/types.js';
import { dst, svc } from '../support/kernel-values.js';
import { jsonSafe, observe, type Ctx, type Scenario } from './harness.js';

const errorsOf = (r: Awaited<ReturnType<NetlinkKernel['apply']>>) =>
  r.errors.map((e) => ({ index: e.index, code: e.code, message: e.message }));

/** Applies ops and records the result with an observation of the table afterwards. */
async function step(ctx: Ctx, label: string, ops: KernelOp[]) {
  const r = await ctx.kernel.apply(ops);
  return { label, applied: r.applied, errors: errorsOf(r), ...(await observe(ctx)) };
}

const VIPS: Record<Family, [string, string, string]> = {
  4: ['10.96.0.10', '10.244.1.5', '10.244.2.6'],
  6: ['fd00:96::10', 'fd00:244:1::5', 'fd00:244:2::6'],
};

function crud(protocol: Protocol, family: Family): Scenario {
  return {
    name: `crud ${protocol} IPv${family}`,
    async run(ctx) {
      const [vip, a, b] = VIPS[family];
      const s = svc({ family, protocol, address: vip, port: 443 });
      const steps = [];
      steps.push(
        await step(ctx, 'add service + 2 destinations', [
          { kind: 'addService', service: s },
          { kind: 'addDestination', service: s, destination: dst(a) },
          { kind: 'addDestination', service: s, destination: dst(b, { weight: 2 }) },
        ]),
      );
      const got = jsonSafe(await ctx.kernel.getService(s));
      steps.push(
        await step(ctx, 'update scheduler + weight', [
          { kind: 'updateService', service: { ...s, scheduler: 'wlc' } },
          { kind: 'updateDestination', service: s, destination: dst(a, { weight: 5 }) },
        ]),
      );
      steps.push(await step(ctx, 'delete one destination', [{ kind: 'deleteDestination', service: s, destination: dst(b) }]));
      steps.push(await step(ctx, 'delete service', [{ kind: 'deleteService', service: s }]));
      return { steps, getService: got };
    },
  };
}

/** Every scheduler a kernel may ship; one it lacks is refused with ENOENT (twos arrived in 6.2). */
const SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq', 'mh', 'fo', 'ovf', 'twos'];

const schedulers: Scenario = {
  name: 'schedulers',
  async run(ctx) {
    const ops: KernelOp[] = SCHEDULERS.map((scheduler, i) => ({ kind: 'addService', service: svc({ port: 1000 + i, scheduler }) }));
    return step(ctx, 'one service per scheduler', ops);
  },
};

const persistence: Scenario = {
  name: 'persistence and flags',
  async run(ctx) {
    return step(ctx, 'persistence, netmask, sh/mh flags, one-packet', [
      { kind: 'addService', service: svc({ port: 1, flags: 0x1, timeout: 10800 }) },
      { kind: 'addService', service: svc({ port: 2, flags: 0x1, timeout: 300, netmask: 0xffffff00 }) },
      { kind: 'addService', service: svc({ family: 6, address: 'fd00:96::10', port: 3, flags: 0x1, timeout: 10800 }) },
      { kind: 'addService', service: svc({ family: 6, address: 'fd00:96::10', port: 4, flags: 0x1, timeout: 60, netmask: 64 }) },
      { kind: 'addService', service: svc({ port: 5, scheduler: 'sh', flags: 0x8 | 0x10 }) },
      { kind: 'addService', service: svc({ port: 6, scheduler: 'mh', flags: 0x10 }) },
      { kind: 'addService', service: svc({ port: 7, protocol: 'UDP', flags: 0x1 | 0x4, timeout: 30 }) },
    ]);
  },
};

const weights: Scenario = {
  name: 'weights and forwarding methods',
  async run(ctx) {
    const s = svc();
    const first = await step(ctx, 'add', [
      { kind: 'addService', service: s },
      { kind: 'addDestination', service: s, destination: dst('10.244.1.1', { weight: 0 }) },
      { kind: 'addDestination', service: s, destination: dst('10.244.1.2', { weight: 65536 }) },
      { kind: 'addDestination', service: s, destination: dst('10.244.1.3', { forward: 'droute', port: 80 }) },
      { kind: 'addDestination', service: s, destination: dst('10.244.1.4', { forward: 'tunnel', upperThreshold: 100, lowerThreshold: 10 }) },
    ]);
    const second = await step(ctx, 'reweight', [
      { kind: 'updateDestination', service: s, destination: dst('10.244.1.1', { weight: 7 }) },
      { kind: 'updateDestination', service: s, destination: dst('10.244.1.2', { weight: 0 }) },
    ]);
    return { first, second };
  },
};

const errors: Scenario = {
  name: 'kernel errors are typed and attributed',
  async run(ctx) {
    const s = svc();
    const missing = svc({ port: 9 });
    await ctx.kernel.apply([{ kind: 'addService', service: s }, { kind: 'addDestination', service: s, destination: dst('10.244.1.1') }]);
    const r = await ctx.kernel.apply([
      { kind: 'addService', service: s },
      { kind: 'updateService', service: missing },
      { kind: 'deleteService', service: missing },
      { kind: 'addDestination', service: missing, destination: dst('10.244.1.1') },
      { kind: 'addDestination', service: s, destination: dst('10.244.1.1') },
      { kind: 'updateDestination', service: s, destination: dst('10.244.9.9') },
      { kind: 'deleteDestination', service: s, destination: dst('10.244.9.9') },
      { kind: 'addService', service: svc({ port: 10, scheduler: 'nosuch' }) },
      { kind: 'addDestination', service: s, destination: dst('224.0.0.1') },
      { kind: 'addService', service: svc({ port: 11, address: 'not-an-ip' }) },
      { kind: 'addDestination', service: s, destination: dst('10.244.1.2') },
    ]);
    let getMissing: unknown = null;
    try {
      await ctx.kernel.getService(missing);
    } catch (err) {
      getMissing = { name: (err as Error).name, code: (err as { code: string }).code, message: (err as Error).message };
    }
    const destsOfMissing = await ctx.kernel.listDestinations(missing);
    return { applied: r.applied, errors: errorsOf(r), getMissing, destsOfMissing, ...(await observe(ctx)) };
  },
};

const batch1000: Scenario = {
  name: 'batch of 1000 ops with one bad op',
  async run(ctx) {
    const ops: KernelOp[] = [];
    for (let i = 0; i < 100; i++) {
      const s = svc({ address: `10.96.${i >> 8}.${i & 0xff}`, port: 80 });
      ops.push({ kind: 'addService', service: s });
      for (let j = 1; j <= 9; j++) ops.push({ kind: 'addDestination', service: s, destination: dst(`10.244.${i}.${j}`) });
    }
    const bad = 537;
    const op = ops[bad] as Extract<KernelOp, { kind: 'addDestination' }>;
    ops[bad] = { ...op, destination: { ...op.destination, address: '255.255.255.255' } };
    const t0 = Date.now();
    const r = await ctx.kernel.apply(ops);
    const ms = Date.now() - t0;
    const table = await ctx.kernel.dumpTable();
    const o = await observe(ctx);
    return {
      ops: ops.length,
      applied: r.applied,
      errors: errorsOf(r),
      ms,
      services: table.services.length,
      destinations: table.services.reduce((n, s) => n + s.destinations.length, 0),
      ipvsadmMismatch: o.ipvsadmMismatch,
    };
  },
};

const infoAndTimeouts: Scenario = {
  name: 'info and timeouts',
  async run(ctx) {
    const info = await ctx.kernel.ipvsInfo();
    const before = await ctx.kernel.getTimeouts();
    await ctx.kernel.setTimeouts({ tcp: 1000, tcpFin: 60, udp: 200 });
    const after = await ctx.kernel.getTimeouts();
    await ctx.kernel.setTimeouts({ tcp: 0, tcpFin: 30, udp: 0 });
    const partial = await ctx.kernel.getTimeouts();
    return { info, before, after, partial, ipvsadmTimeout: ctx.sh('ipvsadm -L --timeout').trim(), ipvsadmVersion: ctx.sh('ipvsadm -Ln | head -1').trim() };
  },
};

const foreign: Scenario = {
  name: 'foreign services created by ipvsadm decode intact',
  async run(ctx) {
    ctx.sh(
      [
        'ipvsadm -A -t 10.1.1.1:80 -s wrr -p 600 -M 255.255.255.0',
        'ipvsadm -a -t 10.1.1.1:80 -r 10.2.0.1:80 -g -w 3',
        'ipvsadm -a -t 10.1.1.1:80 -r 10.2.0.2:80 -i -w 2 -x 100 -y 10',
        'ipvsadm -A -f 42 -s rr',
        'ipvsadm -a -f 42 -r 10.2.0.3:0 -m',
        'ipvsadm -A -f 43 -6 -s lc',
        'ipvsadm -A -u [fd00::1]:53 -s lc',
        'ipvsadm -a -u [fd00::1]:53 -r [fd00::2]:5353 -m -w 4',
        'ipvsadm -A --sctp-service 10.1.1.2:3868 -s sh -b sh-port',
        'ipvsadm -A -u 10.1.1.3:5060 -s rr -p 120 -o',
      ].join(' && '),
    );
    return observe(ctx);
  },
};

const netnsIsolation: Scenario = {
  name: 'two namespaces keep separate IPVS tables',
  async run(ctx) {
    const other = ctx.extraNetns('b');
    const k2 = await NetlinkKernel.open(other.path);
    try {
      await ctx.kernel.apply([{ kind: 'addService', service: svc({ port: 1111 }) }]);
      await k2.apply([{ kind: 'addService', service: svc({ port: 2222, scheduler: 'lc' }) }]);
      const mine = (await ctx.kernel.listServices()).map((s) => `${s.port} ${s.scheduler}`);
      const theirs = (await k2.listServices()).map((s) => `${s.port} ${s.scheduler}`);
      const outside = (await (await NetlinkKernel.open()).listServices()).length;
      return { mine, theirs, ipvsadmMine: ctx.sh('ipvsadm -Ln'), ipvsadmTheirs: other.sh('ipvsadm -Ln'), outside };
    } finally {
      await k2.close();
    }
  },
};

/** Real traffic through a VIP: a backend namespace joined by veth, busybox httpd, wget through IPVS. */
const traffic: Scenario = {
  name: 'connection counts and 64-bit stats under real traffic',
  async run(ctx) {
    const be = ctx.extraNetns('be');
    ctx.sh(
      [
        `ip link add veth-be type veth peer name eth0 netns ${be.name}`,
        'ip addr add 10.244.1.1/24 dev veth-be',
        'ip link set veth-be up',
      ].join(' && '),
    );
    be.sh(
      [
        'ip addr add 10.244.1.5/24 dev eth0',
        'ip link set eth0 up',
        'ip route add default via 10.244.1.1',
        'mkdir -p /tmp/www-kipvs && echo hello-from-backend > /tmp/www-kipvs/index.html',
        'busybox httpd -p 8080 -h /tmp/www-kipvs',
      ].join(' && '),
    );
    await ctx.kernel.ensureDummyLink('kube-ipvs0');
    const s = svc({ address: '10.96.0.10', port: 80 });
    await ctx.kernel.apply([
      { kind: 'addAddress', ifname: 'kube-ipvs0', address: { family: 4, address: '10.96.0.10', prefixLength: 32 } },
      { kind: 'addService', service: s },
      { kind: 'addDestination', service: s, destination: dst('10.244.1.5') },
    ]);
    try {
      const bodies = [1, 2, 3].map(() => ctx.sh('curl -sS -m 10 http://10.96.0.10/').trim());
      // Since 6.x the kernel folds per-CPU counters into the dumped stats from its estimator, every 2 s.
      await new Promise((r) => setTimeout(r, 4000));
      const [entry] = (await ctx.kernel.dumpTable()).services;
      return { bodies, service: jsonSafe(entry.service.stats), destination: jsonSafe(entry.destinations[0]), ...(await observe(ctx)) };
    } finally {
      execSync(`ip netns pids ${be.name} | xargs -r kill`);
    }
  },
};

export const scenarios: Scenario[] = [
  ...(['TCP', 'UDP', 'SCTP'] as const).flatMap((p) => [crud(p, 4), crud(p, 6)]),
  schedulers,
  persistence,
  weights,
  errors,
  batch1000,
  infoAndTimeouts,
  foreign,
  netnsIsolation,
  traffic,
];
