// Beyond ClusterIP on a real kernel, with real packets: NodePorts on the node's addresses, external and
// load-balancer IPs, externalTrafficPolicy/internalTrafficPolicy Local, dual-stack with IPv6 traffic,
// node addresses that come and go, and ownership of NodePort virtual servers by kipvs's mark.
// Topology: the scenario's namespace is the node (the agent programs it); a client namespace sits
// outside on 192.168.60.0/24 + fd00:60::/64; two pod namespaces hang off the node on point-to-point
// veths: pod A "on this node" (its endpoints carry this node's name), pod B "on another node". Each pod
// runs a small HTTP server answering "<pod> <peer address>", so a request shows who served it and
// which source address the pod saw. Expectations live in services.test.ts.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import type { Resource, WireObject } from '../support/apiserver.js';
import { node } from '../support/kube-fixtures.js';
import { compact, fullSyncs, NODE, sleep, WAIT_MS, withAgent, type Launched } from './agent.scenarios.js';
import type { Ctx, Netns, Scenario } from './harness.js';

const NODE_IP = '192.168.60.1';
const NODE_IP6 = 'fd00:60::1';
const CLIENT_IP = '192.168.60.2';
const PODS = [
  { name: 'a', ip: '10.244.1.10', ip6: 'fd00:244::a', node: NODE },
  { name: 'b', ip: '10.244.2.10', ip6: 'fd00:244::b', node: 'kipvs-node-2' },
];
const SERVER = '/tmp/kipvs-services-server.mjs';

/** A command's stdout, or its error text: without blocking the event loop (the agent shares it). */
const run = (cmd: string, args: string[]) =>
  promisify(execFile)(cmd, args, { encoding: 'utf8' }).then((r) => r.stdout, (e: { stdout?: string; message: string }) => `${e.stdout ?? ''}${e.message}`);

/** The pods' server: one line per request, the pod's name and the peer address it saw. */
const SERVER_JS = `import http from 'node:http';
http.createServer((req, res) => res.end(process.argv[2] + ' ' + req.socket.remoteAddress.replace(/^::ffff:/, '') + '\\n'))
  .listen(8080, '::', () => console.log('listening'));`;

interface Topology { client: Netns; pods: Netns[]; servers: ChildProcess[] }

async function build(ctx: Ctx): Promise<Topology> {
  writeFileSync(SERVER, SERVER_JS);
  ctx.sh('sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv4.vs.conntrack=1');
  const client = ctx.extraNetns('client');
  ctx.sh(`ip link add c0 type veth peer name eth0 netns ${client.name}`);
  ctx.sh(`ip addr add ${NODE_IP}/24 dev c0 && ip -6 addr add ${NODE_IP6}/64 dev c0 nodad && ip link set c0 up`);
  client.sh(`ip addr add ${CLIENT_IP}/24 dev eth0 && ip -6 addr add fd00:60::2/64 dev eth0 nodad && ip link set eth0 up` +
    ` && ip route add default via ${NODE_IP} && ip -6 route add default via ${NODE_IP6}`);
  const pods: Netns[] = [];
  const servers: ChildProcess[] = [];
  PODS.forEach((p, i) => {
    const pod = ctx.extraNetns(`pod${p.name}`);
    pods.push(pod);
    ctx.sh(`ip link add p${i} type veth peer name eth0 netns ${pod.name} && ip link set p${i} up` +
      ` && ip addr add 10.244.0.1/32 dev p${i} && ip route add ${p.ip}/32 dev p${i}` +
      ` && ip -6 addr add fd00:244::1/128 dev p${i} nodad && ip -6 route add ${p.ip6}/128 dev p${i}`);
    pod.sh(`ip addr add ${p.ip}/32 dev eth0 && ip -6 addr add ${p.ip6}/128 dev eth0 nodad && ip link set eth0 up` +
      ` && ip route add 10.244.0.1 dev eth0 && ip route add default via 10.244.0.1` +
      ` && ip -6 route add fd00:244::1 dev eth0 && ip -6 route add default via fd00:244::1`);
    servers.push(spawn('ip', ['netns', 'exec', pod.name, process.execPath, SERVER, p.name], { stdio: ['ignore', 'pipe', 'inherit'] }));
  });
  // Each server prints a line once it listens.
  await Promise.all(servers.map((s) => new Promise((resolve, reject) => {
    s.stdout!.once('data', resolve);
    s.once('exit', (code) => reject(new Error(`pod server exited ${code}`)));
  })));
  return { client, pods, servers };
}

/** `n` requests from the client to `url`; answers counted by "pod peer" line ('error' when none). */
function requests(client: Netns, url: string, n: number): Record<string, number> {
  const out = client.sh(`for i in $(seq ${n}); do curl -sS -g -m 3 ${url} 2>/dev/null || echo error; done`);
  const counts: Record<string, number> = {};
  for (const line of out.split('\n').filter(Boolean)) counts[line] = (counts[line] ?? 0) + 1;
  return counts;
}

// ---- API objects ---------------------------------------------------------------------------------

const port = (nodePort?: number) => [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, ...(nodePort ? { nodePort } : {}) }];

function service(name: string, spec: Record<string, unknown>, status?: Record<string, unknown>): [Resource, WireObject] {
  return ['services', { metadata: { name, namespace: 'default' }, spec, ...(status ? { status } : {}) }];
}

/** The Service's slices, one per family; `endpoint` adds fields to each pod's endpoint (conditions, hints). */
function slices(service: string, families: Array<4 | 6> = [4], endpoint: (pod: number) => Record<string, unknown> = () => ({})): Array<[Resource, WireObject]> {
  return families.map((f) => ['endpointslices', {
    metadata: { name: `${service}-v${f}`, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: f === 4 ? 'IPv4' : 'IPv6',
    endpoints: PODS.map((p, i) => ({ addresses: [f === 4 ? p.ip : p.ip6], conditions: { ready: true }, nodeName: p.node, ...endpoint(i) })),
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
  }]);
}

const OBJECTS: Array<[Resource, WireObject]> = [
  // NodePort, externalTrafficPolicy Cluster: both pods through every node address.
  service('web', { type: 'NodePort', clusterIP: '10.96.10.10', clusterIPs: ['10.96.10.10'], ports: port(30080) }),
  ...slices('web'),
  // LoadBalancer, externalTrafficPolicy Local: the external paths reach only pod A; the ClusterIP both.
  service('shop', {
    type: 'LoadBalancer', clusterIP: '10.96.10.20', clusterIPs: ['10.96.10.20'], externalTrafficPolicy: 'Local',
    healthCheckNodePort: 32000, externalIPs: ['192.168.61.5'], ports: port(30081), loadBalancerSourceRanges: ['192.168.60.0/24'],
  }, { loadBalancer: { ingress: [{ ip: '192.168.62.5' }] } }),
  ...slices('shop'),
  // internalTrafficPolicy Local: the ClusterIP reaches only pod A.
  service('internal', { clusterIP: '10.96.10.40', clusterIPs: ['10.96.10.40'], internalTrafficPolicy: 'Local', ports: port() }),
  ...slices('internal'),
  // Dual-stack NodePort with ClientIP affinity: IPv6 traffic, netmask 128.
  service('dual', {
    type: 'NodePort', clusterIP: '10.96.10.30', clusterIPs: ['10.96.10.30', 'fd00:96::30'], ipFamilies: ['IPv4', 'IPv6'],
    sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } }, ports: port(30090),
  }),
  ...slices('dual', [4, 6]),
  // Every endpoint terminating: the serving one keeps taking traffic, the other gets none.
  service('term', { clusterIP: '10.96.10.50', clusterIPs: ['10.96.10.50'], ports: port() }),
  ...slices('term', [4], (i) => ({ conditions: { ready: false, serving: i === 0, terminating: true } })),
  // Topology hints: pod a for zone-a, pod b for zone-b; used once the Node says it is in zone-a.
  service('zoned', { clusterIP: '10.96.10.60', clusterIPs: ['10.96.10.60'], trafficDistribution: 'PreferClose', ports: port() }),
  ...slices('zoned', [4], (i) => ({ hints: { forZones: [{ name: i === 0 ? 'zone-a' : 'zone-b' }] } })),
];

/** Polls `ipvsadm -Ln` (compacted) until `pred` holds; the milliseconds it took, or -1. */
async function waitIpvs(ctx: Ctx, pred: (lines: string[]) => boolean, timeoutMs = WAIT_MS): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    if (pred(compact(ctx.ipvsadm()))) return Math.round(performance.now() - t0);
    await sleep(100);
  }
  return -1;
}

const has = (prefix: string) => (lines: string[]) => lines.some((l) => l.startsWith(prefix));

export const scenarios: Scenario[] = [{
  name: 'agent: NodePort, external and load-balancer IPs, traffic policies and dual-stack with real traffic',
  async run(ctx) {
    const topo = await build(ctx);
    const { client } = topo;
    // A foreign virtual server on a node address, in the NodePort range: never kipvs's to delete.
    ctx.sh(`ipvsadm -A -t ${NODE_IP}:30999 -s wrr`);
    // Routes on the client to what the node serves: the service CIDR, the external and LB IPs.
    client.sh(`ip route add 10.96.0.0/16 via ${NODE_IP} && ip route add 192.168.61.0/24 via ${NODE_IP} && ip route add 192.168.62.0/24 via ${NODE_IP}` +
      ` && ip -6 route add fd00:96::/64 via ${NODE_IP6}`);
    // A second client address, outside shop's loadBalancerSourceRanges.
    client.sh('ip addr add 192.168.70.2/24 dev eth0');
    ctx.sh('ip route add 192.168.70.0/24 via 192.168.60.2');
    // A process of the node's own on 0.0.0.0:9999: reachable on the node's address, never through a VIP.
    ctx.sh('mkdir -p /tmp/kipvs-services-www && echo node > /tmp/kipvs-services-www/index.html && busybox httpd -p 9999 -h /tmp/kipvs-services-www');
    try {
      return await withAgent(ctx, OBJECTS, async (a: Launched, api) => {
        const nodeProcess = {
          viaNodeAddress: requests(client, `http://${NODE_IP}:9999/`, 1),
          viaVIP: requests(client, 'http://10.96.10.10:9999/', 1),
          viaVIP6: requests(client, 'http://[fd00:96::30]:9999/', 1),
        };
        const outsideRange = requests(client, '--interface 192.168.70.2 http://192.168.62.5/', 1);
        const table = ctx.sh('nft list table inet kipvs | grep -c "" || true').trim();
        const ready = await waitIpvs(ctx, has(`TCP  [${NODE_IP6}]:30090`));
        const programmed = { waitedMs: ready, ipvsadm: compact(ctx.ipvsadm()), kubeIpvs0: ctx.sh('ip -o addr show dev kube-ipvs0').split('\n').map((l) => l.split(/\s+/)[3]).filter(Boolean).sort() };
        const traffic: Record<string, Record<string, number>> = {
          nodePort: requests(client, `http://${NODE_IP}:30080/`, 6),
          clusterIP: requests(client, 'http://10.96.10.10/', 6),
          localNodePort: requests(client, `http://${NODE_IP}:30081/`, 4),
          localExternalIP: requests(client, 'http://192.168.61.5/', 4),
          localLoadBalancer: requests(client, 'http://192.168.62.5/', 4),
          localClusterIP: requests(client, 'http://10.96.10.20/', 6),
          internalLocal: requests(client, 'http://10.96.10.40/', 4),
          dualNodePort6: requests(client, `http://[${NODE_IP6}]:30090/`, 4),
          dualClusterIP6: requests(client, 'http://[fd00:96::30]/', 4),
          dualClusterIP4: requests(client, 'http://10.96.10.30/', 4),
          terminating: requests(client, 'http://10.96.10.50/', 4),
          zonedBefore: requests(client, 'http://10.96.10.60/', 4),
        };
        // shop's healthCheckNodePort, asked from outside as a cloud load balancer would, once the agent has
        // synced again (the synchronous requests above held its event loop, so it would rightly say unhealthy). Asynchronously:
        // the agent answering it runs in this process, and execFileSync would block its event loop.
        await fullSyncs(a, 1);
        const healthCheck = (await run('ip', ['netns', 'exec', client.name, 'curl', '-sS', '-i', '-m', '5', `http://${NODE_IP}:32000/`])).replace(/\r/g, '');
        // The Node gets its zone label: topology hints now apply.
        api.update('nodes', { ...node(NODE), metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': 'zone-a' } } });
        // Pod b leaves the virtual server: at once, or draining at weight 0 while the client's closed connections linger.
        const zonedMs = await waitIpvs(ctx, (l) => l.some((x) => /^TCP {2}10\.96\.10\.60:80 rr -> 10\.244\.1\.10:8080 Masq 1( -> 10\.244\.2\.10:8080 Masq 0)?$/.test(x)));
        traffic.zonedAfter = requests(client, 'http://10.96.10.60/', 4);
        // A node address that appears is served by the next full sync; one that goes is dropped.
        ctx.sh('ip addr add 192.168.60.100/24 dev c0');
        const appearedMs = await waitIpvs(ctx, has('TCP  192.168.60.100:30080'), 4 * 2000 + WAIT_MS);
        const viaNewAddress = requests(client, 'http://192.168.60.100:30080/', 4);
        ctx.sh('ip addr del 192.168.60.100/24 dev c0');
        const goneMs = await waitIpvs(ctx, (l) => !has('TCP  192.168.60.100:')(l), 4 * 2000 + WAIT_MS);
        // The NodePort Service deleted: its virtual servers on node addresses go; the foreign one stays.
        api.delete('services', 'default', 'web');
        const deletedMs = await waitIpvs(ctx, (l) => !has(`TCP  ${NODE_IP}:30080`)(l));
        await fullSyncs(a, 1);
        const afterDelete = compact(ctx.ipvsadm());
        return { problems: a.log.filter((e) => e.level === 'error').map((e) => e.msg), programmed, traffic, nodeProcess, outsideRange, tableLines: Number(table), healthCheck, zonedMs, nodeAddress: { appearedMs, viaNewAddress, goneMs }, deletedMs, afterDelete };
      }, { clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/64'] });
    } finally {
      for (const s of topo.servers) s.kill();
      ctx.sh('pkill -f "httpd -p [9]999" || true');
    }
  },
}];
