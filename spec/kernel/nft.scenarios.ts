// kipvs's nftables table on a real kernel, with real packets. Topology per scenario (network namespaces
// joined by veth pairs): a client outside the cluster (192.168.10.2 and .3, fd00:10::2) — the node (the
// scenario's namespace: IPVS virtual servers programmed through NetlinkKernel, VIPs on kube-ipvs0) — a
// backend "pod" 10.244.1.5 / fd00:244::5 whose HTTP server answers with the peer address it sees, and a
// second pod 10.244.2.7 inside the cluster CIDR. The table is applied with the Nftables class through
// nsenter, as the agent would. Each observation is what curl printed (the address the backend saw) or
// how it failed; expectations live in nft.test.ts on the host. Every wait is bounded.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cleanup } from '../../lib/cleanup.js';
import { silentLogger } from '../../lib/log.js';
import type { NftModel, NftPart, NftService } from '../../lib/nft/model.js';
import { Nftables } from '../../lib/nft/nftables.js';
import { dst, svc } from '../support/kernel-values.js';
import type { Ctx, Netns, Scenario } from './harness.js';

const WAIT_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** HTTP server answering every request with the peer address it sees: `node peer.cjs PORT`. */
const PEER_JS = `require('http').createServer((q, s) => s.end(q.socket.remoteAddress.replace(/^::ffff:/, '')))
  .listen(Number(process.argv[2]), '::', () => process.stdout.write('listening\\n'));
`;

/** Starts the peer server in `ns` on `port`; resolves once it listens. */
async function peerServer(ns: Netns, port: number): Promise<{ stop(): void }> {
  const script = `/tmp/kipvs-nft-peer.cjs`;
  writeFileSync(script, PEER_JS);
  const proc = spawn('ip', ['netns', 'exec', ns.name, process.execPath, script, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const t0 = Date.now();
  while (!out.includes('listening')) {
    if (proc.exitCode !== null) throw new Error(`peer server in ${ns.name}:${port} exited: ${out}`);
    if (Date.now() - t0 > WAIT_MS) throw new Error(`peer server in ${ns.name}:${port} not listening after ${WAIT_MS} ms: ${out}`);
    await sleep(20);
  }
  return { stop: () => void proc.kill('SIGKILL') };
}

/**
 * One HTTP GET from `ns`: 'seen <address>' (the address the backend saw) or 'failed <curl exit code>'
 * (7 refused, 28 timed out). `from` picks the source address.
 */
function get(ns: Netns, url: string, from?: string): string {
  const out = ns.sh(`curl -gs --max-time 3 ${from ? `--interface ${from} ` : ''}'${url}' || echo "failed $?"`).trim();
  return out.startsWith('failed') ? out : `seen ${out}`;
}

const IFNAME = 'kube-ipvs0';
const CLUSTER_IP = '10.96.0.10';
const EXTERNAL_LOCAL = '10.96.0.20';
const EXTERNAL_CLUSTER = '10.96.0.21';
const LOAD_BALANCER = '10.96.0.30';
/** A load balancer whose source ranges hold the node's address 192.168.10.1. */
const LOAD_BALANCER_NODE = '10.96.0.31';
const CLUSTER_IP6 = 'fd00:96::10';
const BACKEND = '10.244.1.5';
const BACKEND6 = 'fd00:244::5';

const service = (family: 4 | 6, address: string, kind: NftService['kind'], over: Partial<NftService> = {}): NftService =>
  ({ family, address, protocol: 'TCP', port: 80, kind, local: false, sourceRanges: [], ...over });

/** What the scenarios apply: the services above, all bound on kube-ipvs0, pod CIDRs 10.244/16 and fd00:244::/48. */
const MODEL: NftModel = {
  services: [
    service(4, CLUSTER_IP, 'ClusterIP'),
    service(4, EXTERNAL_LOCAL, 'ExternalIP', { local: true }),
    service(4, EXTERNAL_CLUSTER, 'ExternalIP'),
    service(4, LOAD_BALANCER, 'LoadBalancer', { sourceRanges: ['192.168.10.2/32'] }),
    service(4, LOAD_BALANCER_NODE, 'LoadBalancer', { sourceRanges: ['192.168.10.2/32', '192.168.10.1/32'] }),
    service(6, CLUSTER_IP6, 'ClusterIP'),
  ],
  boundAddresses: [CLUSTER_IP, EXTERNAL_LOCAL, EXTERNAL_CLUSTER, LOAD_BALANCER, LOAD_BALANCER_NODE, CLUSTER_IP6].map((address) => ({ family: address.includes(':') ? 6 : 4, address })),
  endpointAddresses: [{ family: 4, address: BACKEND }, { family: 6, address: BACKEND6 }],
  nodeAddresses: [{ family: 4, address: '192.168.10.1' }, { family: 4, address: '10.244.1.1' }, { family: 4, address: '10.244.2.1' }, { family: 6, address: 'fd00:10::1' }, { family: 6, address: 'fd00:244::1' }],
  clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/48'],
  masqueradeAll: false,
};

interface Topology {
  client: Netns;
  backend: Netns;
  pod: Netns;
  nft: Nftables;
  stop(): void;
}

/** veth pair node:`nodeIf` — `ns`:eth0 with the given node/peer addresses (v4 /24, v6 /64), default route via the node. */
function wire(ctx: Ctx, ns: Netns, nodeIf: string, v4: [string, string[]], v6?: [string, string]) {
  ctx.sh([
    `ip link add ${nodeIf} type veth peer name eth0 netns ${ns.name}`,
    `ip addr add ${v4[0]}/24 dev ${nodeIf}`,
    ...(v6 ? [`ip addr add ${v6[0]}/64 dev ${nodeIf} nodad`] : []),
    `ip link set ${nodeIf} up`,
  ].join(' && '));
  ns.sh([
    ...v4[1].map((a) => `ip addr add ${a}/24 dev eth0`),
    ...(v6 ? [`ip addr add ${v6[1]}/64 dev eth0 nodad`] : []),
    'ip link set eth0 up',
    `ip route add default via ${v4[0]}`,
    ...(v6 ? [`ip -6 route add default via ${v6[0]}`] : []),
  ].join(' && '));
}

/** Each service as an IPVS virtual server with the backend as real server, its address on kube-ipvs0. */
async function programIpvs(ctx: Ctx, services: readonly NftService[]): Promise<void> {
  const ops = services.flatMap((s) => {
    const vs = svc({ family: s.family, address: s.address, port: s.port });
    return [
      { kind: 'addAddress' as const, ifname: IFNAME, address: { family: s.family, address: s.address, prefixLength: s.family === 4 ? 32 : 128 } },
      { kind: 'addService' as const, service: vs },
      { kind: 'addDestination' as const, service: vs, destination: dst(s.family === 4 ? BACKEND : BACKEND6) },
    ];
  });
  const result = await ctx.kernel.apply(ops);
  if (result.errors.length) throw new Error(`programming IPVS: ${result.errors.map((e) => e.message).join('; ')}`);
}

async function topology(ctx: Ctx): Promise<Topology> {
  const client = ctx.extraNetns('cl');
  const backend = ctx.extraNetns('be');
  const pod = ctx.extraNetns('pod');
  wire(ctx, client, 'veth-cl', ['192.168.10.1', ['192.168.10.2', '192.168.10.3']], ['fd00:10::1', 'fd00:10::2']);
  wire(ctx, backend, 'veth-be', ['10.244.1.1', [BACKEND]], ['fd00:244::1', BACKEND6]);
  wire(ctx, pod, 'veth-pod', ['10.244.2.1', ['10.244.2.7']]);
  ctx.sh('sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1');
  await ctx.kernel.ensureDummyLink(IFNAME);
  await programIpvs(ctx, MODEL.services);
  // After ip_vs is loaded (the ops above): IPVS NAT needs conntrack for nft's masquerade to see its packets.
  ctx.sh('sysctl -qw net.ipv4.vs.conntrack=1');
  const server = await peerServer(backend, 8080);
  return { client, backend, pod, nft: new Nftables({ netns: ctx.path, logger: silentLogger }), stop: () => server.stop() };
}

async function withTopology<T>(ctx: Ctx, fn: (t: Topology) => Promise<T>): Promise<T> {
  const t = await topology(ctx);
  try {
    return await fn(t);
  } finally {
    t.stop();
  }
}

const url = (address: string, port = 80) => (address.includes(':') ? `http://[${address}]:${port}/` : `http://${address}:${port}/`);

/** Every connection the scenarios check for masquerade, as the backend saw it. */
function masqueradeReadings(t: Topology) {
  return {
    clientToClusterIP: get(t.client, url(CLUSTER_IP)),
    podToClusterIP: get(t.pod, url(CLUSTER_IP)),
    clientToExternalLocal: get(t.client, url(EXTERNAL_LOCAL)),
    clientToExternalCluster: get(t.client, url(EXTERNAL_CLUSTER)),
    hairpin: get(t.backend, url(CLUSTER_IP)),
    clientToClusterIP6: get(t.client, url(CLUSTER_IP6)),
  };
}

const masquerade: Scenario = {
  name: 'nft: masquerade from outside the cluster CIDR, Local external traffic, hairpin, IPv6',
  run: (ctx) => withTopology(ctx, async (t) => {
    const without = masqueradeReadings(t);
    const applied = await t.nft.apply(MODEL);
    const withTable = masqueradeReadings(t);
    return { without, applied, with: withTable };
  }),
};

/** A process listening on the node's 0.0.0.0:9999 (not a service port) and on [::]:9999. */
const hostPort: Scenario = {
  name: 'nft: a host port is not reachable through a VIP (kubernetes#72236), the node\'s own connections from a VIP are',
  run: (ctx) => withTopology(ctx, async (t) => {
    const host = await peerServer(ctx, 9999);
    const outside = await peerServer(t.client, 8081);
    try {
      const read = () => ({
        viaVip: get(t.client, url(CLUSTER_IP, 9999)),
        viaVip6: get(t.client, url(CLUSTER_IP6, 9999)),
        viaNodeAddress: get(t.client, url('192.168.10.1', 9999)),
        servicePort: get(t.client, url(CLUSTER_IP)),
        // The node itself connecting out from a VIP: the replies come back to VIP:ephemeral port.
        nodeFromVip: get(ctx, url('192.168.10.2', 8081), CLUSTER_IP),
      });
      const without = read();
      await t.nft.apply(MODEL);
      return { without, with: read() };
    } finally {
      host.stop();
      outside.stop();
    }
  }),
};

const sourceRanges: Scenario = {
  name: 'nft: loadBalancerSourceRanges admit the clients inside them only, and the node when they hold its address',
  run: (ctx) => withTopology(ctx, async (t) => {
    const read = () => ({
      inside: get(t.client, url(LOAD_BALANCER), '192.168.10.2'),
      outside: get(t.client, url(LOAD_BALANCER), '192.168.10.3'),
      // The same client on a service without ranges.
      outsideOnClusterIP: get(t.client, url(EXTERNAL_CLUSTER), '192.168.10.3'),
      // The node itself (its connection leaves from the load-balancer IP, bound here).
      node: get(ctx, url(LOAD_BALANCER)),
      nodeWhenRangesHoldNode: get(ctx, url(LOAD_BALANCER_NODE)),
      clientWhenRangesHoldNode: get(t.client, url(LOAD_BALANCER_NODE), '192.168.10.2'),
    });
    const without = read();
    await t.nft.apply(MODEL);
    return { without, with: read() };
  }),
};

const OTHER_TABLE = [
  'table ip other {',
  '  set blocked { type ipv4_addr; elements = { 203.0.113.9 } }',
  '  chain input { type filter hook input priority 10; policy accept; ip saddr @blocked drop; }',
  '}',
].join('\n');

const ownership: Scenario = {
  name: 'nft: apply, remove and --cleanup touch no other table; remove is idempotent; an unchanged model runs no nft',
  async run(ctx) {
    ctx.sh(`nft -f - <<'EOF'\n${OTHER_TABLE}\nEOF`);
    const other = () => ctx.sh('nft list table ip other');
    const tables = () => ctx.sh('nft list tables').trim().split('\n').sort();
    const nft = new Nftables({ netns: ctx.path, logger: silentLogger });
    const before = other();
    const applied = await nft.apply(MODEL);
    const afterApply = { other: other(), tables: tables() };
    const again = await nft.apply(MODEL);
    const changed = await nft.apply({ ...MODEL, services: MODEL.services.slice(1) });
    const forced = await nft.apply({ ...MODEL, services: MODEL.services.slice(1) }, { force: true });
    const kipvsAfterChange = ctx.sh('nft list set inet kipvs services4');
    await nft.remove();
    const afterRemove = { other: other(), tables: tables() };
    let secondRemove = 'ok';
    await nft.remove().catch((e: Error) => (secondRemove = e.message));
    // --cleanup's path: the table applied again, then cleanup() with the same remover the CLI passes.
    await nft.apply(MODEL);
    const cleaned = await cleanup(ctx.kernel, 'kube-ipvs0', silentLogger, nft);
    const afterCleanup = { other: other(), tables: tables() };
    const missing = new Nftables({ netns: ctx.path, logger: silentLogger, nft: 'kipvs-no-such-nft' });
    const missingError = await missing.apply(MODEL).then(() => 'applied', (e: Error) => e.message);
    return { before, applied, afterApply, again, changed, forced, kipvsAfterChange, afterRemove, secondRemove, cleaned, afterCleanup, finalOther: other(), missingError };
  },
};

/** MODEL in parts, as the reconciler gives them: one per service (with the backend as its endpoint), one per bound address. */
const servicePart = (s: NftService, endpoints: string[]): NftPart =>
  ({ services: [s], boundAddresses: [], endpointAddresses: endpoints.map((address) => ({ family: s.family, address })) });
const addressPart = (address: string): NftPart => ({ services: [], boundAddresses: [{ family: address.includes(':') ? 6 : 4, address }], endpointAddresses: [] });
const MODEL_PARTS = new Map<string, NftPart>([
  ...MODEL.services.map((s): [string, NftPart] => [`service ${s.address}`, servicePart(s, [s.family === 4 ? BACKEND : BACKEND6])]),
  ...MODEL.boundAddresses.map((a): [string, NftPart] => [`address ${a.address}`, addressPart(a.address)]),
]);
const GLOBALS = { nodeAddresses: MODEL.nodeAddresses, clusterCIDRs: MODEL.clusterCIDRs, masqueradeAll: MODEL.masqueradeAll };
/** Added incrementally: a LoadBalancer (masqueraded, source range 192.168.10.2/32) with a second, unreal endpoint to remove. */
const ADDED_LB = service(4, '10.96.0.32', 'LoadBalancer', { sourceRanges: ['192.168.10.2/32'] });

/** The table as the kernel lists it (nft -j), order-free: each set's elements sorted, rules without handles. */
function listedTable(ctx: Ctx): unknown {
  const { nftables } = JSON.parse(ctx.sh('nft -j list table inet kipvs')) as { nftables: Array<Record<string, Record<string, unknown>>> };
  return nftables.flatMap((o): unknown[] => {
    if (o.set) return [{ set: o.set.name, elements: ((o.set.elem ?? []) as unknown[]).map((e) => JSON.stringify(e)).sort() }];
    if (o.rule) return [{ chain: o.rule.chain, expr: o.rule.expr }];
    return [];
  });
}

const incremental: Scenario = {
  name: 'nft: incremental updates (Service added, endpoint removed, endpoint added) leave the table a full apply would load',
  run: (ctx) => withTopology(ctx, async (t) => {
    await programIpvs(ctx, [ADDED_LB]);
    const lbUrl = url(ADDED_LB.address);
    const read = () => ({ inside: get(t.client, lbUrl, '192.168.10.2'), outside: get(t.client, lbUrl, '192.168.10.3') });
    const full = await t.nft.update(GLOBALS, MODEL_PARTS, { full: true });
    const beforeAdd = read();
    const steps = [
      await t.nft.update(GLOBALS, new Map([[`service ${ADDED_LB.address}`, servicePart(ADDED_LB, [BACKEND, '10.244.1.9'])], [`address ${ADDED_LB.address}`, addressPart(ADDED_LB.address)]])),
      await t.nft.update(GLOBALS, new Map([[`service ${ADDED_LB.address}`, servicePart(ADDED_LB, [BACKEND])]])),
      await t.nft.update(GLOBALS, new Map([[`service ${ADDED_LB.address}`, servicePart(ADDED_LB, [BACKEND, '10.244.1.8'])]])),
      // Unchanged: nothing to run.
      await t.nft.update(GLOBALS, new Map([[`service ${ADDED_LB.address}`, servicePart(ADDED_LB, [BACKEND, '10.244.1.8'])]])),
    ];
    const afterSteps = read();
    const hairpin = ctx.sh('nft list set inet kipvs hairpin4');
    const incrementalTable = listedTable(ctx);
    // The same final parts, loaded whole.
    const finalParts = new Map(MODEL_PARTS)
      .set(`service ${ADDED_LB.address}`, servicePart(ADDED_LB, [BACKEND, '10.244.1.8']))
      .set(`address ${ADDED_LB.address}`, addressPart(ADDED_LB.address));
    await t.nft.update(GLOBALS, finalParts, { full: true });
    const fullTable = listedTable(ctx);
    return { full, beforeAdd, steps, afterSteps, hairpin, incrementalTable, fullTable };
  }),
};

export const scenarios: Scenario[] = [masquerade, hostPort, sourceRanges, ownership, incremental];
