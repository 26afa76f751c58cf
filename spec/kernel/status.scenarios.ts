// `kipvs status` on a real kernel, run as the operator runs it: `node build/lib/cli.js status` in a
// child process, reading the scenario's namespace over netlink (--netns) and the Services from a
// directory (--source dir:). The kernel is first programmed the way the agent programs it (explicit
// ops through the kernel layer: VIPs on kube-ipvs0, virtual and real servers), then drifted with
// ipvsadm and ip. Scenarios return every run's exit code, stdout and stderr; status.test.ts on the host
// holds the exact expected output. A child process costs 25-45 s under TCG (loading client-node over
// 9p), so two run as children (in sync: --check, the table; drifted: -o json --all-ipvs --check) and
// the other variants call the same entry point, statusMain, in this process: the same real kernel
// through the same netlink sockets, minus the process start.
// A second scenario drains a real server with a live TCP connection the way the agent does (its own
// Reconciler, on the EndpointSlice change) and runs the CLI during the drain, then after a weight edit.

import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { load as yamlLoad } from 'js-yaml';
import { hostNetmask, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import { silentLogger } from '../../lib/log.js';
import { Reconciler } from '../../lib/proxy/reconciler.js';
import { DirSource } from '../../lib/sources/dir.js';
import { statusMain } from '../../lib/status.js';
import type { Destination, Family, KernelOp, LinkAddress, Protocol, ServiceId, VirtualServer } from '../../lib/kernel/types.js';
import { CLIENT_JS, ECHO_JS, nodeIn, type Child } from './agent.scenarios.js';
import { observe, type Ctx, type Scenario } from './harness.js';

const CLI = fileURLToPath(new URL('../../lib/cli.js', import.meta.url));
const IFNAME = 'kube-ipvs0';

const ipFamily = (address: string): Family => (address.includes(':') ? 6 : 4);
const id = (protocol: Protocol, address: string, port: number): ServiceId => ({ family: ipFamily(address), protocol, address, port, fwmark: 0 });
/** A virtual server as the agent programs it: those at Service addresses carry kipvs's mark. */
const vs = (s: ServiceId, scheduler: string, flags = 0, timeout = 0): VirtualServer =>
  ({ ...s, scheduler, flags: flags | (/^(10\.96\.|fd00:96:)/.test(s.address) ? SVC_F_KIPVS : 0), timeout, netmask: hostNetmask(s.family), peName: '' });
const dest = (address: string, port: number): Destination =>
  ({ family: ipFamily(address), address, port, forward: 'masq', weight: 1, upperThreshold: 0, lowerThreshold: 0 });
const vip = (address: string): LinkAddress => ({ family: ipFamily(address), address, prefixLength: address.includes(':') ? 128 : 32 });

/** The Services and EndpointSlices (and the ConfigMap: scheduler lc), as files in the source directory. */
const OBJECTS = `
apiVersion: v1
kind: ConfigMap
metadata: { name: kipvs, namespace: kube-system }
data: { scheduler: lc }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports: [{ name: http, protocol: TCP, port: 80 }, { name: dns, protocol: UDP, port: 53 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, protocol: TCP, port: 8080 }, { name: dns, protocol: UDP, port: 5353 }]
endpoints:
  - { addresses: [10.244.1.5] }
  - { addresses: [10.244.2.6] }
  - { addresses: [10.244.3.7], conditions: { ready: false } }
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: default
  annotations: { kipvs.io/scheduler: sh, kipvs.io/scheduler-flags: sh-port }
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  sessionAffinity: ClientIP
  ports: [{ name: https, protocol: TCP, port: 443 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: api-1, namespace: default, labels: { kubernetes.io/service-name: api } }
addressType: IPv4
ports: [{ name: https, protocol: TCP, port: 8443 }]
endpoints: [{ addresses: [10.244.4.1] }, { addresses: [10.244.4.2] }]
---
apiVersion: v1
kind: Service
metadata: { name: dual, namespace: apps }
spec:
  clusterIP: 10.96.0.30
  clusterIPs: [10.96.0.30, 'fd00:96::30']
  ports: [{ name: http, protocol: TCP, port: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: dual-v4, namespace: apps, labels: { kubernetes.io/service-name: dual } }
addressType: IPv4
ports: [{ name: http, protocol: TCP, port: 8080 }]
endpoints: [{ addresses: [10.244.5.1] }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: dual-v6, namespace: apps, labels: { kubernetes.io/service-name: dual } }
addressType: IPv6
ports: [{ name: http, protocol: TCP, port: 8080 }]
endpoints: [{ addresses: ['fd00:244:5::1'] }]
`;

const WEB_HTTP = id('TCP', '10.96.0.10', 80);
const WEB_DNS = id('UDP', '10.96.0.10', 53);
const API = id('TCP', '10.96.0.20', 443);
const DUAL4 = id('TCP', '10.96.0.30', 80);
const DUAL6 = id('TCP', 'fd00:96::30', 80);

/** What the agent writes for OBJECTS (lc from the ConfigMap; sh + sh-port and ClientIP 10800 s for api). */
const PROGRAM: KernelOp[] = [
  ...['10.96.0.10', '10.96.0.20', '10.96.0.30', 'fd00:96::30'].map((a): KernelOp => ({ kind: 'addAddress', ifname: IFNAME, address: vip(a) })),
  { kind: 'addService', service: vs(WEB_HTTP, 'lc') },
  { kind: 'addDestination', service: WEB_HTTP, destination: dest('10.244.1.5', 8080) },
  { kind: 'addDestination', service: WEB_HTTP, destination: dest('10.244.2.6', 8080) },
  { kind: 'addService', service: vs(WEB_DNS, 'lc') },
  { kind: 'addDestination', service: WEB_DNS, destination: dest('10.244.1.5', 5353) },
  { kind: 'addDestination', service: WEB_DNS, destination: dest('10.244.2.6', 5353) },
  { kind: 'addService', service: vs(API, 'sh', 0x1 | 0x10, 10800) },
  { kind: 'addDestination', service: API, destination: dest('10.244.4.1', 8443) },
  { kind: 'addDestination', service: API, destination: dest('10.244.4.2', 8443) },
  { kind: 'addService', service: vs(DUAL4, 'lc') },
  { kind: 'addDestination', service: DUAL4, destination: dest('10.244.5.1', 8080) },
  { kind: 'addService', service: vs(DUAL6, 'lc') },
  { kind: 'addDestination', service: DUAL6, destination: dest('fd00:244:5::1', 8080) },
];

/** Drift behind the agent's back, one command per kind of difference status must name. */
export const DRIFT = [
  'ipvsadm -d -t 10.96.0.10:80 -r 10.244.2.6:8080', // a real server deleted
  'ipvsadm -E -u 10.96.0.10:53 -s wrr', // scheduler changed
  'ipvsadm -e -t 10.96.0.20:443 -r 10.244.4.2:8443 -m -w 5', // a real server reweighted
  'ipvsadm -a -t 10.96.0.30:80 -r 10.244.9.9:8080 -m', // a stray real server
  'ipvsadm -D -t [fd00:96::30]:80', // a virtual server deleted
  'ip addr add 10.96.0.99/32 dev kube-ipvs0', // an address of kipvs's that no Service wants ...
  'ipvsadm -A -t 10.96.0.99:8080 -s rr', // ... with a virtual server on it
];

interface Run { code: number | null; out: string; err: string; ms: number }

/** `node build/lib/cli.js status ARGS` in a child process. */
function child(...args: string[]): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, 'status', ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
    p.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out, err, ms: Date.now() - t0 }));
  });
}

/** The same command through statusMain in this process. */
async function inProcess(...args: string[]): Promise<Run> {
  const t0 = Date.now();
  let out = '';
  let err = '';
  const code = await statusMain(args, { out: (t) => void (out += t), err: (t) => void (err += t) });
  return { code, out, err, ms: Date.now() - t0 };
}

/** JSON output as 'ns/name vip state: details' lines, or the parse error. */
function items(run: Run): string[] | string {
  try {
    const doc = JSON.parse(run.out) as { items: Array<{ namespace: string | null; name: string | null; vip: string; state: string; details: string[] }> };
    return doc.items.map((r) => `${r.namespace ?? '-'}/${r.name ?? '-'} ${r.vip} ${r.state}${r.details.length ? `: ${r.details.join(', ')}` : ''}`);
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
}

const inSyncThenDrift: Scenario = {
  name: 'status: in sync as programmed, then drift made with ipvsadm and ip named row by row',
  async run(ctx: Ctx) {
    const dir = `/tmp/${ctx.name}-status`;
    mkdirSync(dir, { recursive: true });
    try {
      writeFileSync(`${dir}/objects.yaml`, OBJECTS);
      ctx.sh('ipvsadm -A -t 10.1.1.1:80 -s wrr && ipvsadm -a -t 10.1.1.1:80 -r 10.2.0.1:80 -m -w 3'); // someone else's
      await ctx.kernel.ensureDummyLink(IFNAME);
      const programmed = await ctx.kernel.apply(PROGRAM);
      const base = [`--source=dir:${dir}`, '--netns', ctx.path];

      const inSync = {
        check: await child(...base, '--check'),
        wide: await inProcess(...base, '-o', 'wide', '--all-ipvs'),
      };
      const driftErrors: string[] = [];
      for (const cmd of DRIFT) {
        try {
          ctx.sh(cmd);
        } catch (err) {
          driftErrors.push(`${cmd}: ${(err as Error).message}`);
        }
      }
      const ipvsadm = (await observe(ctx)).ipvsadm.map((s) => `${s.id} ${s.scheduler} ${s.dests.map((d) => `${d.addr}/${d.weight}`).join(' ')}`.trim());
      const json = await child(...base, '-o', 'json', '--all-ipvs', '--check');
      const yaml = await inProcess(...base, '-o', 'yaml', '--all-ipvs');
      let yamlSameAsJson: boolean | string;
      try {
        yamlSameAsJson = JSON.stringify(yamlLoad(yaml.out)) === JSON.stringify(JSON.parse(json.out));
      } catch (err) {
        yamlSameAsJson = (err as Error).message;
      }
      const drifted = {
        check: await inProcess(...base, '--check'),
        json: { code: json.code, err: json.err, items: items(json), ms: json.ms },
        yamlSameAsJson,
        // --ipvs-scheduler wrr, as an agent started with it would see things: dns is then in sync.
        flag: await inProcess(...base, '--ipvs-scheduler', 'wrr', '-n', 'default', 'web'),
        namespace: await inProcess(...base, '-n', 'apps', '--check'),
      };
      const noNetns = await inProcess(`--source=dir:${dir}`, '--netns', '/run/netns/kipvs-no-such-netns');
      return { programmed: programmed.errors.map((e) => e.message), inSync, driftErrors, ipvsadm, drifted, noNetns };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

/** One Service, one TCP port, its endpoints `eps` (the ConfigMap: rr). */
const drainObjects = (eps: string[]) => `
apiVersion: v1
kind: ConfigMap
metadata: { name: kipvs, namespace: kube-system }
data: { scheduler: rr }
---
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: default }
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports: [{ name: echo, protocol: TCP, port: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: echo-1, namespace: default, labels: { kubernetes.io/service-name: echo } }
addressType: IPv4
ports: [{ name: echo, protocol: TCP, port: 8080 }]
endpoints: [${eps.map((a) => `{ addresses: [${a}] }`).join(', ')}]
`;

const DRAIN_A = '10.244.1.5';
const DRAIN_B = '10.244.1.6';

const whileDraining: Scenario = {
  name: 'status: a real server draining a live TCP connection is draining and --check passes; a weight edited by hand still fails it',
  async run(ctx: Ctx) {
    const be = ctx.extraNetns('be');
    ctx.sh(['sysctl -qw net.ipv4.ip_forward=1', `ip link add veth-be type veth peer name eth0 netns ${be.name}`,
      'ip addr add 10.244.1.1/24 dev veth-be', 'ip link set veth-be up'].join(' && '));
    be.sh([`ip addr add ${DRAIN_A}/24 dev eth0`, `ip addr add ${DRAIN_B}/24 dev eth0`, 'ip link set eth0 up', 'ip route add default via 10.244.1.1'].join(' && '));
    const dir = `/tmp/${ctx.name}-drain`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}/echo.cjs`, ECHO_JS);
    writeFileSync(`${dir}/client.cjs`, CLIENT_JS);
    const objects = `${dir}/objects/objects.yaml`;
    mkdirSync(`${dir}/objects`);
    writeFileSync(objects, drainObjects([DRAIN_A]));
    const source = new DirSource(`${dir}/objects`, { configMap: 'kube-system/kipvs', watch: false, rescanMs: 0 });
    // The agent's own reconciler (no firewall: the client is on the node, nothing to masquerade).
    const rec = new Reconciler({ kernel: ctx.kernel, source, logger: silentLogger, graceful: { maxWaitMs: 600_000 } });
    let server: Child | undefined;
    let client: Child | undefined;
    try {
      await ctx.kernel.ensureDummyLink(IFNAME);
      await source.start((c) => rec.noteChanges(c));
      const first = await rec.sync({ full: true });
      server = nodeIn(be, `${dir}/echo.cjs`, ['8080']);
      await server.line((l) => l.event === 'listening', 'echo server listening');
      client = nodeIn(ctx, `${dir}/client.cjs`, ['10.96.0.10', '80', '200']);
      const c = client;
      const echoes = () => c.lines.filter((l) => l.event === 'echo').length;
      const more = async (n: number, what: string) => {
        const base = echoes();
        await c.line((l) => l.event === 'echo' && (l.n as number) >= base + n, what);
        return echoes() - base;
      };
      await c.line((l) => l.event === 'connected', 'client connected');
      await more(3, 'first echoes');

      // A's endpoint goes, B's comes: the EndpointSlice change, as the agent sees it.
      writeFileSync(objects, drainObjects([DRAIN_B]));
      await source.rescan();
      const removal = await rec.sync({ full: false });
      const base = [`--source=dir:${dir}/objects`, '--netns', ctx.path];
      const drainingBefore = ctx.ipvsadm().map((x) => `${x.id} ${x.dests.map((d) => `${d.addr}/${d.weight}/${d.active}`).join(' ')}`);
      const draining = {
        check: await child(...base, '--check'),
        json: await inProcess(...base, '-o', 'json'),
        wide: await inProcess(...base, '-o', 'wide'),
      };
      const echoedDuring = await more(3, 'echoes after status ran');
      const drainingAfter = ctx.ipvsadm().map((x) => `${x.id} ${x.dests.map((d) => `${d.addr}/${d.weight}/${d.active}`).join(' ')}`);

      ctx.sh(`ipvsadm -e -t 10.96.0.10:80 -r ${DRAIN_B}:8080 -m -w 5`);
      const edited = await child(...base, '--check');
      return {
        first, removal, drainingTable: [...rec.graceful.draining.keys()], drainingBefore, draining, echoedDuring, drainingAfter, edited,
        troubles: c.lines.filter((l) => l.event === 'error' || l.event === 'mismatch' || l.event === 'closed'),
      };
    } finally {
      await Promise.all([client?.kill(), server?.kill()]);
      rec.graceful.stop();
      await source.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export const scenarios: Scenario[] = [inSyncThenDrift, whileDraining];
