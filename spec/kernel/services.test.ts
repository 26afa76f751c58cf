// Assertions on services.scenarios.ts: NodePorts, external and load-balancer IPs, traffic policies and
// dual-stack on the real kernel, each proven with HTTP requests from a client outside the node. Every
// answer is "<pod> <source address the pod saw>"; pod a runs on this node, pod b on another.
import { scenario } from './results.js';

const NAME = 'agent: NodePort, external and load-balancer IPs, traffic policies and dual-stack with real traffic';

interface Value {
  programmed: { waitedMs: number; ipvsadm: string[]; kubeIpvs0: string[] };
  traffic: Record<string, Record<string, number>>;
  nodeAddress: { appearedMs: number; viaNewAddress: Record<string, number>; goneMs: number };
  deletedMs: number;
  zonedMs: number;
  nodeProcess: Record<string, Record<string, number>>;
  outsideRange: Record<string, number>;
  tableLines: number;
  problems: string[];
  healthCheck: string;
  afterDelete: string[];
}
const v = (): Value => scenario(NAME);

const BOTH4 = ' -> 10.244.1.10:8080 Masq 1 -> 10.244.2.10:8080 Masq 1';
const LOCAL4 = ' -> 10.244.1.10:8080 Masq 1';
const BOTH6 = ' -> [fd00:244::a]:8080 Masq 1 -> [fd00:244::b]:8080 Masq 1';
const DUAL = ' rr persistent 600';

test('the kernel has a virtual server per node address × NodePort, per external and load-balancer IP; only VIPs are on kube-ipvs0', () => {
  expect(v().programmed.ipvsadm).toEqual([
    `TCP  [fd00:244::1]:30090${DUAL}${BOTH6}`,
    `TCP  [fd00:60::1]:30090${DUAL}${BOTH6}`,
    `TCP  [fd00:96::30]:80${DUAL}${BOTH6}`,
    `TCP  10.244.0.1:30080 rr${BOTH4}`,
    `TCP  10.244.0.1:30081 rr${LOCAL4}`,
    `TCP  10.244.0.1:30090${DUAL}${BOTH4}`,
    `TCP  10.96.10.10:80 rr${BOTH4}`,
    `TCP  10.96.10.20:80 rr${BOTH4}`,
    `TCP  10.96.10.30:80${DUAL}${BOTH4}`,
    `TCP  10.96.10.40:80 rr${LOCAL4}`,
    `TCP  10.96.10.50:80 rr${LOCAL4}`,
    `TCP  10.96.10.60:80 rr${BOTH4}`,
    `TCP  192.168.60.1:30080 rr${BOTH4}`,
    `TCP  192.168.60.1:30081 rr${LOCAL4}`,
    `TCP  192.168.60.1:30090${DUAL}${BOTH4}`,
    'TCP  192.168.60.1:30999 wrr', // foreign (ipvsadm), on a node address
    `TCP  192.168.61.5:80 rr${LOCAL4}`,
    `TCP  192.168.62.5:80 rr${LOCAL4}`,
  ]);
  // Node addresses are never bound to kube-ipvs0; ClusterIPs, the external IP and the LB IP are.
  expect(v().programmed.kubeIpvs0).toEqual(['10.96.10.10/32', '10.96.10.20/32', '10.96.10.30/32', '10.96.10.40/32', '10.96.10.50/32', '10.96.10.60/32', '192.168.61.5/32', '192.168.62.5/32', 'fd00:96::30/128']);
});

test('externalTrafficPolicy Cluster: a NodePort and its ClusterIP spread over both pods, masqueraded to the node (the client is outside --cluster-cidr)', () => {
  expect(v().traffic.nodePort).toEqual({ 'a 10.244.0.1': 3, 'b 10.244.0.1': 3 });
  expect(v().traffic.clusterIP).toEqual({ 'a 10.244.0.1': 3, 'b 10.244.0.1': 3 });
});

test("externalTrafficPolicy Local: NodePort, external IP and load-balancer IP reach only this node's pod, with the client's own address; the ClusterIP still reaches both", () => {
  const t = v().traffic;
  for (const path of ['localNodePort', 'localExternalIP', 'localLoadBalancer']) expect([path, t[path]]).toEqual([path, { 'a 192.168.60.2': 4 }]);
  expect(t.localClusterIP).toEqual({ 'a 10.244.0.1': 3, 'b 10.244.0.1': 3 });
});

test('the healthCheckNodePort of the Local LoadBalancer answers 200 with the count of local endpoints, as kube-proxy does', () => {
  const text = v().healthCheck;
  expect(text).toMatch(/^HTTP\/1\.1 200 OK\n/);
  expect(text).toMatch(/\nContent-Type: application\/json\n/i);
  expect(text).toMatch(/\nX-Load-Balancing-Endpoint-Weight: 1\n/i);
  expect(JSON.parse(text.slice(text.indexOf('\n\n') + 2))).toEqual({ service: { namespace: 'default', name: 'shop' }, localEndpoints: 1, serviceProxyHealthy: true });
});

test("internalTrafficPolicy Local: the ClusterIP reaches only this node's pod", () => {
  expect(v().traffic.internalLocal).toEqual({ 'a 10.244.0.1': 4 });
});

test('dual-stack: IPv6 NodePort and ClusterIP answer over IPv6; ClientIP affinity keeps each client on one pod per family', () => {
  const t = v().traffic;
  for (const path of ['dualNodePort6', 'dualClusterIP6', 'dualClusterIP4']) {
    const answers = Object.entries(t[path]);
    expect([path, answers.length, answers[0]?.[1]]).toEqual([path, 1, 4]); // one pod, all 4 requests
    expect(answers[0][0]).toMatch(path.endsWith('6') ? /^[ab] fd00:244::1$/ : /^[ab] 10\.244\.0\.1$/); // masqueraded
  }
});

test('a node address that appears is served by the next full sync (period 2 s), and dropped once it goes', () => {
  const n = v().nodeAddress;
  expect(n.appearedMs).toBeGreaterThanOrEqual(0);
  expect(n.appearedMs).toBeLessThan(10_000);
  expect(n.viaNewAddress).toEqual({ 'a 10.244.0.1': 2, 'b 10.244.0.1': 2 });
  expect(n.goneMs).toBeGreaterThanOrEqual(0);
  expect(n.goneMs).toBeLessThan(10_000);
});

test("deleting the NodePort Service removes its virtual servers on every node address (kipvs's mark), never the foreign one", () => {
  expect(v().deletedMs).toBeGreaterThanOrEqual(0);
  const after = v().afterDelete;
  expect(after.filter((l) => /:30080 |10\.96\.10\.10:/.test(l))).toEqual([]);
  expect(after).toContain('TCP  192.168.60.1:30999 wrr');
  expect(after).toHaveLength(15);
});

test('terminating endpoints: with none ready, the serving-terminating one keeps serving', () => {
  expect(v().traffic.terminating).toEqual({ 'a 10.244.0.1': 4 });
});

test("topology hints: ignored while the node has no zone, then only the endpoint hinted for the node's zone", () => {
  expect(v().traffic.zonedBefore).toEqual({ 'a 10.244.0.1': 2, 'b 10.244.0.1': 2 });
  expect(v().zonedMs).toBeGreaterThanOrEqual(0);
  expect(v().traffic.zonedAfter).toEqual({ 'a 10.244.0.1': 4 });
});

test("kipvs's nftables table: a node process on 0.0.0.0:9999 answers on the node's address but not through a VIP (kubernetes#72236), IPv4 and IPv6", () => {
  expect(v().nodeProcess).toEqual({ viaNodeAddress: { node: 1 }, viaVIP: { error: 1 }, viaVIP6: { error: 1 } });
  expect(v().tableLines).toBeGreaterThan(50);
});

test('loadBalancerSourceRanges: the client inside 192.168.60.0/24 gets in (above), the same client from 192.168.70.2 does not', () => {
  expect(v().outsideRange).toEqual({ error: 1 });
});

test('the agent logged no error', () => {
  expect(v().problems).toEqual([]);
});
