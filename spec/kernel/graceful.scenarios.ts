// Graceful termination on a real kernel with real traffic: the agent (test API server, as in
// agent.scenarios.ts) serves a ClusterIP with a TCP and a UDP port over two backends in a backend
// namespace; four long-lived TCP connections come from a client namespace through the node. One
// endpoint is removed, restored, removed again and its connections reset; then the other is removed
// and drains until --graceful-termination-max-wait. Everything is observed through the kernel's
// own counts (`ipvsadm -Ln`, `ipvsadm -Lnc`) and the connections' echoes; expectations live in
// graceful.test.ts on the host.

import { rmSync, writeFileSync } from 'node:fs';
import type { Ctx, Netns, Scenario } from './harness.js';
import {
  CLIENT_JS, ECHO_JS, kernelState, nodeIn, problems, sleep, slice, svc, until, VIP, VIP32, WAIT_MS, withAgent,
  type Child, type Launched, type PortSpec,
} from './agent.scenarios.js';

const MAX_WAIT_MS = 15_000;
const TCP: PortSpec = { name: 'echo', port: 80, target: 8080 };
const UDP: PortSpec = { name: 'dns', protocol: 'UDP', port: 53, target: 5353 };
const PORTS = [TCP, UDP];
const A = '10.244.1.5';
const B = '10.244.1.6';
const CLIENT = '192.168.100.2';

/** `ipvsadm -Lnc`: one entry per IPVS connection. */
function connections(ctx: Ctx) {
  return ctx.sh('ipvsadm -Lnc').split('\n')
    .map((l) => /^(TCP|UDP)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)/.exec(l))
    .filter((m) => m !== null)
    .map((m) => ({ proto: m[1], expire: m[2], state: m[3], source: m[4], virtual: m[5], dest: m[6] }));
}

/** A real server's weight and counts as `ipvsadm -Ln` shows them; undefined when it is gone. */
function realServer(ctx: Ctx, proto: 'TCP' | 'UDP', dest: string) {
  const s = ctx.ipvsadm().find((x) => x.id.startsWith(proto));
  return s?.dests.find((d) => d.addr === dest);
}

/** The compact `until` state for TCP real servers with the given weights and UDP ones at weight 1. */
function want(tcp: Array<[string, number]>, udp: string[]) {
  const tcpLine = [`TCP  ${VIP}:80 rr`, ...tcp.map(([d, w]) => `-> ${d}:8080 Masq ${w}`)].join(' ');
  const udpLine = [`UDP  ${VIP}:53 rr`, ...udp.map((d) => `-> ${d}:5353 Masq 1`)].join(' ');
  return { services: [tcpLine, udpLine], vips: [VIP32] };
}

async function gauge(a: Launched): Promise<number | undefined> {
  const m = /^kipvs_draining_real_servers (\d+)$/m.exec(await a.agent.metrics.registry.metrics());
  return m ? Number(m[1]) : undefined;
}

/** Waits for `pred` on the kernel (polling our dump), bounded; returns ms since `since`. */
async function waitFor(pred: () => Promise<boolean> | boolean, since: number, timeoutMs: number): Promise<number | null> {
  for (;;) {
    if (await pred()) return Math.round(performance.now() - since);
    if (performance.now() - since > timeoutMs) return null;
    await sleep(50);
  }
}

const echoes = (c: Child) => c.lines.filter((l) => l.event === 'echo').length;
/** What a client saw go wrong: errors, out-of-order echoes, its connection closing. */
const troubles = (c: Child) => c.lines.filter((l) => l.event === 'error' || l.event === 'mismatch' || l.event === 'closed').map((l) => JSON.stringify(l));

/** Resolves once every client has echoed `n` more messages than now (each connection still carries data). */
async function moreEchoes(clients: Child[], n: number, what: string): Promise<number[]> {
  const base = clients.map(echoes);
  await Promise.all(clients.map((c, i) => c.line((l) => l.event === 'echo' && (l.n as number) >= base[i] + n, `${what}: client ${i}`)));
  return clients.map((c, i) => echoes(c) - base[i]);
}

const drains: Scenario = {
  name: 'graceful: a removed endpoint drains under live TCP connections, UDP goes at once, a returning one is restored, max wait bounds it',
  async run(ctx) {
    const be = ctx.extraNetns('be');
    const cl: Netns = ctx.extraNetns('cl');
    ctx.sh([
      'sysctl -qw net.ipv4.ip_forward=1',
      `ip link add veth-be type veth peer name eth0 netns ${be.name}`,
      'ip addr add 10.244.1.1/24 dev veth-be',
      'ip link set veth-be up',
      `ip link add veth-cl type veth peer name eth0 netns ${cl.name}`,
      'ip addr add 192.168.100.1/24 dev veth-cl',
      'ip link set veth-cl up',
    ].join(' && '));
    be.sh([`ip addr add ${A}/24 dev eth0`, `ip addr add ${B}/24 dev eth0`, 'ip link set eth0 up', 'ip route add default via 10.244.1.1'].join(' && '));
    cl.sh([`ip addr add ${CLIENT}/24 dev eth0`, 'ip link set eth0 up', 'ip route add default via 192.168.100.1'].join(' && '));
    const echoJs = `/tmp/${ctx.name}-echo.cjs`;
    const clientJs = `/tmp/${ctx.name}-client.cjs`;
    writeFileSync(echoJs, ECHO_JS);
    writeFileSync(clientJs, CLIENT_JS);
    let server: Child | undefined;
    const clients: Child[] = [];
    try {
      return await withAgent(ctx, [['services', svc('echo', VIP, PORTS)], ['endpointslices', slice('echo-a', 'echo', [A, B], PORTS)]], async (a, api) => {
        const t0 = performance.now();
        const ms = () => Math.round(performance.now() - t0);
        const update = (eps: string[]) => api.update('endpointslices', slice('echo-a', 'echo', eps, PORTS));
        const start = await until(ctx, want([[A, 1], [B, 1]], [A, B]), t0);
        server = nodeIn(be, echoJs, ['8080']);
        await server.line((l) => l.event === 'listening', 'echo server listening');
        for (let i = 0; i < 4; i++) clients.push(nodeIn(cl, clientJs, [VIP, '80', '200']));
        const ports = await Promise.all(clients.map(async (c, i) => String((await c.line((l) => l.event === 'connected', `client ${i} connected`)).local)));
        await moreEchoes(clients, 3, 'first echoes');
        // Which backend each connection went to, from the kernel's connection table.
        const table0 = connections(ctx);
        const backendOf = ports.map((p) => table0.find((e) => e.proto === 'TCP' && e.source === p)?.dest.split(':')[0]);
        const onA = clients.filter((_, i) => backendOf[i] === A);
        const onB = clients.filter((_, i) => backendOf[i] === B);
        // Two datagrams from two source ports: round robin puts one on each UDP real server.
        cl.sh(`bash -c 'for i in 1 2; do echo x >/dev/udp/${VIP}/53; done'`);
        const udpBefore = { A: realServer(ctx, 'UDP', `${A}:5353`), B: realServer(ctx, 'UDP', `${B}:5353`) };

        // 1. A's endpoint goes away: TCP A to weight 0 with its connections, UDP A deleted.
        let t = performance.now();
        update([B]);
        const removed = await until(ctx, want([[A, 0], [B, 1]], [B]), t);
        const drainingA = { tcpA: realServer(ctx, 'TCP', `${A}:8080`), gauge: await gauge(a), connections: connections(ctx) };
        const afterRemoval = await moreEchoes(clients, 5, 'echoes while A drains');
        const acceptedMark = server.lines.length;
        const fresh = cl.sh(`bash -c 'for i in 1 2 3 4 5 6; do exec 3<>/dev/tcp/${VIP}/80; echo hi-$i >&3; read -t 10 l <&3; echo "$l"; exec 3<&-; done'`)
          .split('\n').filter(Boolean);
        // The server's lines are read while this process waits, not during the blocking shell above.
        const accepted = () => server!.lines.slice(acceptedMark).filter((l) => l.event === 'accepted').map((l) => String(l.local));
        await waitFor(() => accepted().length >= fresh.length, performance.now(), WAIT_MS);
        const freshBackends = accepted();

        // 2. A's endpoint comes back while draining: weight 1 again, its connections untouched.
        t = performance.now();
        update([A, B]);
        const restored = await until(ctx, want([[A, 1], [B, 1]], [A, B]), t);
        const restoredA = realServer(ctx, 'TCP', `${A}:8080`);

        // 3. Removed again, then A's connections end (with a RST: IPVS then keeps them in CLOSE for 10 s,
        //    where a FIN leaves them in TIME_WAIT for 2 min). The real server goes once the kernel counts none.
        t = performance.now();
        update([B]);
        const removedAgain = await until(ctx, want([[A, 0], [B, 1]], [B]), t);
        const troublesBeforeReset = clients.map(troubles);
        const resetAt = performance.now();
        for (const c of onA) c.proc.stdin!.write('reset\n');
        const finals = await Promise.all(onA.map((c, i) => c.line((l) => l.event === 'final', `client on A ${i} final`)));
        await sleep(300);
        const afterReset = { tcpA: realServer(ctx, 'TCP', `${A}:8080`), states: connections(ctx).filter((e) => e.dest === `${A}:8080`).map((e) => e.state) };
        let zeroAt: number | undefined;
        const goneMs = await waitFor(async () => {
          const d = (await ctx.kernel.dumpTable()).services.find((s) => s.service.protocol === 'TCP')?.destinations.find((x) => x.address === A);
          if (d && d.activeConns + d.inactiveConns === 0) zeroAt ??= performance.now();
          return !d;
        }, resetAt, 30_000 + WAIT_MS);
        const goneAt = performance.now();
        const afterA = { state: await kernelState(ctx), gauge: await gauge(a) };
        const bStillEchoes = await moreEchoes(onB, 3, 'echoes on B after A is gone');

        // 4. B's endpoint goes too: it drains with live connections until the maximum wait.
        t = performance.now();
        update([]);
        const removedB = await until(ctx, want([[B, 0]], []), t);
        const drainingB = {
          tcpB: realServer(ctx, 'TCP', `${B}:8080`), gauge: await gauge(a),
          states: connections(ctx).filter((e) => e.dest === `${B}:8080`).map((e) => e.state).sort(),
        };
        const whileBDrains = await moreEchoes(onB, 3, 'echoes while B drains');
        const troublesOnBWhileDraining = onB.map(troubles);
        const bGoneMs = await waitFor(() => !realServer(ctx, 'TCP', `${B}:8080`), t, MAX_WAIT_MS + WAIT_MS);
        const afterB = { state: await kernelState(ctx), gauge: await gauge(a) };

        return {
          maxWaitMs: MAX_WAIT_MS,
          start: start.converged,
          backendOf,
          udpBefore,
          removed: { converged: removed.converged, ms: removed.ms, last: removed.last, ...drainingA },
          afterRemoval,
          fresh,
          freshBackends,
          restored: { converged: restored.converged, ms: restored.ms, last: restored.last, tcpA: restoredA },
          removedAgain: { converged: removedAgain.converged, ms: removedAgain.ms },
          finals,
          afterReset,
          /** From the RST to the kernel counting no connection on A, and to A being gone. */
          zeroMs: zeroAt === undefined ? null : Math.round(zeroAt - resetAt),
          goneMs,
          goneAfterZeroMs: zeroAt === undefined ? null : Math.round(goneAt - zeroAt),
          afterA,
          bStillEchoes,
          removedB: { converged: removedB.converged, ms: removedB.ms, last: removedB.last, ...drainingB },
          whileBDrains,
          /** From B's removal to B being gone. */
          bGoneMs,
          afterB,
          troublesBeforeReset,
          troublesOnBWhileDraining,
          drainLog: a.log.filter((e) => e.msg.startsWith('real server')).map((e) => `${e.level}: ${e.msg}`),
          problems: problems(a.log),
          totalMs: ms(),
        };
      }, { gracefulTerminationMaxWaitMs: MAX_WAIT_MS });
    } finally {
      await Promise.all([...clients.map((c) => c.kill()), server?.kill()]);
      rmSync(echoJs, { force: true });
      rmSync(clientJs, { force: true });
    }
  },
};

export const scenarios: Scenario[] = [drains];
