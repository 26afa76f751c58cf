// `make demo`: the main job on an embedded default, on a real kernel (run inside vm/run). Builds a
// small node out of network namespaces — "pods" with HTTP servers behind veth pairs, a client outside —
// runs `kipvs agent` on the sample Services of manifests/examples through the directory source, sends
// real HTTP requests through every VIP and prints who answered. Then switches the scheduler live via
// the ConfigMap file and scales an endpoint away. `kipvs status` is printed after each step; any
// expectation that fails makes the demo exit non-zero.

import { execFileSync, execSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

const NODE = 'kipvs-demo-node';
const CLIENT = 'kipvs-demo-client';
const WORK = '/tmp/kipvs-demo';
const MANIFESTS = `${WORK}/manifests`;
const CLI = new URL('../lib/cli.js', import.meta.url).pathname;

/** Every endpoint of manifests/examples, by the port its Service's slice names. */
const PODS = [
  { ip: '10.244.1.10', port: 8080 },
  { ip: '10.244.2.10', port: 8080 },
  { ip: '10.244.3.10', port: 8080 },
  { ip: '10.244.1.20', port: 8080 },
  { ip: '10.244.2.20', port: 8080 },
  { ip: '10.244.1.30', port: 6379 },
  { ip: '10.244.2.30', port: 6379 },
  { ip: '10.244.2.40', port: 8080 },
  { ip: '10.244.3.40', port: 8080 },
];

const sh = (cmd: string) => execSync(cmd, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const inNs = (ns: string, cmd: string) => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let failures = 0;

function expect(ok: boolean, what: string): void {
  console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

function setUp(): void {
  for (const ns of [NODE, CLIENT]) execFileSync('ip', ['netns', 'add', ns]);
  inNs(NODE, 'ip link set lo up && sysctl -qw net.ipv4.ip_forward=1');
  // The client sits outside the node, like a pod on another node or an external host.
  sh(`ip link add c-node netns ${NODE} type veth peer name eth0 netns ${CLIENT}`);
  inNs(NODE, 'ip addr add 192.168.100.1/24 dev c-node && ip link set c-node up');
  inNs(CLIENT, 'ip link set lo up && ip addr add 192.168.100.2/24 dev eth0 && ip link set eth0 up && ip route add default via 192.168.100.1');
  PODS.forEach((pod, i) => {
    const ns = `kipvs-demo-pod${i}`;
    execFileSync('ip', ['netns', 'add', ns]);
    // Point-to-point pod networking: the pod's /32 behind a veth, the node's side answers as 10.244.0.1.
    sh(`ip link add p${i} netns ${NODE} type veth peer name eth0 netns ${ns}`);
    inNs(NODE, `ip addr add 10.244.0.1/32 dev p${i} && ip link set p${i} up && ip route add ${pod.ip}/32 dev p${i}`);
    inNs(ns, `ip link set lo up && ip addr add ${pod.ip}/32 dev eth0 && ip link set eth0 up && ip route add 10.244.0.1 dev eth0 && ip route add default via 10.244.0.1`);
    mkdirSync(`${WORK}/www/${i}`, { recursive: true });
    writeFileSync(`${WORK}/www/${i}/index.html`, `${pod.ip}\n`);
    inNs(ns, `busybox httpd -p ${pod.port} -h ${WORK}/www/${i}`);
  });
}

function tearDown(): void {
  for (const ns of sh('ip netns list').split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith('kipvs-demo-'))) {
    try {
      sh(`ip netns pids ${ns} | xargs -r kill`);
      execFileSync('ip', ['netns', 'del', ns]);
    } catch {
      /* best effort */
    }
  }
}

/** N requests from the client through `vip`; returns how many each backend answered. */
function requests(vip: string, n: number): Record<string, number> {
  const out = inNs(CLIENT, `for i in $(seq ${n}); do curl -sS -m 5 http://${vip}/ || echo error; done`);
  const counts: Record<string, number> = {};
  for (const line of out.split('\n').filter(Boolean)) counts[line] = (counts[line] ?? 0) + 1;
  return counts;
}

function show(counts: Record<string, number>): string {
  return Object.entries(counts)
    .sort()
    .map(([k, v]) => `${k}×${v}`)
    .join('  ');
}

function status(): void {
  console.log('\n$ kipvs status');
  try {
    process.stdout.write(execFileSync('node', [CLI, 'status', `--source=dir:${MANIFESTS}`, `--netns=/run/netns/${NODE}`], { encoding: 'utf8' }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    process.stdout.write(`${e.stdout ?? ''}${e.stderr ?? ''}`);
    expect(false, 'kipvs status reports everything in sync');
  }
}

/**
 * Polls ipvsadm in the node until `pred` holds. Changes land within the agent's min sync period; the
 * first wait also covers the agent's start, which under TCG emulation takes tens of seconds.
 */
async function until(what: string, pred: (ipvsadm: string) => boolean, timeoutMs = 120000): Promise<void> {
  const t0 = Date.now();
  let text = '';
  while (Date.now() - t0 < timeoutMs) {
    text = inNs(NODE, 'ipvsadm -Ln');
    if (pred(text)) {
      console.log(`  (${what}: ${Date.now() - t0} ms)`);
      return;
    }
    await sleep(200);
  }
  expect(false, `${what} within ${timeoutMs / 1000} s; ipvsadm -Ln shows:\n${text}`);
}

function editYaml(file: string, from: string | RegExp, to: string): void {
  const path = `${MANIFESTS}/${file}`;
  writeFileSync(path, readFileSync(path, 'utf8').replace(from, to));
}

async function main(): Promise<void> {
  tearDown();
  rmSync(WORK, { recursive: true, force: true });
  cpSync(new URL('../../manifests/examples', import.meta.url).pathname, MANIFESTS, { recursive: true });
  console.log(`kipvs demo on Linux ${sh('uname -r').trim()}: a node, a client and ${PODS.length} pods as network namespaces\n`);
  setUp();
  let agent: ChildProcess | undefined;
  try {
    console.log('$ kipvs agent --source dir:manifests/examples --netns /run/netns/kipvs-demo-node');
    agent = spawn('node', [CLI, 'agent', `--source=dir:${MANIFESTS}`, `--netns=/run/netns/${NODE}`, '--config-map=kube-system/kipvs',
      '--ipvs-min-sync-period=100ms', '--healthz-bind-address=', '--metrics-bind-address=',
      // Pods live in 10.244.0.0/16: the client's traffic to Services is masqueraded (kipvs's nftables table).
      '--cluster-cidr=10.244.0.0/16', '--graceful-termination-max-wait=10s'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const log: string[] = [];
    agent.stderr!.on('data', (b: Buffer) => log.push(b.toString()));
    agent.on('exit', (code) => code && console.log(`agent exited ${code}:\n${log.join('')}`));
    await until('4 services and the NodePort programmed', (t) => t.includes('TCP  192.168.100.1:30080') && t.includes('10.244.3.40:8080'), 300000);
    status();

    console.log('\n1. web (10.96.0.10, rr from the ConfigMap): 30 requests');
    const rr = requests('10.96.0.10', 30);
    console.log(`   ${show(rr)}`);
    expect(Object.keys(rr).length === 3 && Object.values(rr).every((n) => n === 10), 'round robin: 10 each over 3 backends');

    console.log('\n1b. web through its NodePort, from outside the node (192.168.100.1:30080): 30 requests');
    const np = requests('192.168.100.1:30080', 30);
    console.log(`   ${show(np)}`);
    expect(Object.keys(np).length === 3 && Object.values(np).every((n) => n === 10), 'NodePort: round robin, 10 each over the same 3 backends');
    console.log(`   the node's nftables table inet kipvs: ${inNs(NODE, 'nft list table inet kipvs | grep -c ""').trim()} lines, the same whatever the number of Services`);

    console.log('\n2. api (10.96.0.20, kipvs.io/scheduler: lc): 20 requests');
    const lc = requests('10.96.0.20', 20);
    console.log(`   ${show(lc)}`);
    expect(Object.keys(lc).length === 2 && !('error' in lc), 'least connection: both backends answer');

    console.log('\n3. cache (10.96.0.30:6379, kipvs.io/scheduler: sh): 20 requests from one client');
    const shd = requests('10.96.0.30:6379', 20);
    console.log(`   ${show(shd)}`);
    expect(Object.keys(shd).length === 1 && !('error' in shd), 'source hashing: one client, one backend');

    console.log('\n4. session (10.96.0.40, sessionAffinity: ClientIP): 20 requests');
    const aff = requests('10.96.0.40', 20);
    console.log(`   ${show(aff)}`);
    expect(Object.keys(aff).length === 1 && !('error' in aff), 'ClientIP affinity: every request to the same backend');
    console.log(inNs(NODE, 'ipvsadm -Ln -t 10.96.0.40:80').trim().split('\n').slice(-3).join('\n'));

    console.log('\n5. the ConfigMap switches the default scheduler rr → sh, live');
    editYaml('kipvs-configmap.yaml', /scheduler: .*/, 'scheduler: "sh"');
    await until('web updated to sh', (t) => /TCP {2}10\.96\.0\.10:80 sh/.test(t));
    const switched = requests('10.96.0.10', 20);
    console.log(`   web: ${show(switched)}`);
    expect(Object.keys(switched).length === 1, 'web now hashes the one client to one backend');
    status();

    console.log('\n6. back to rr, and 10.244.3.10 is scaled away from web (it drains at weight 0 first: graceful termination)');
    editYaml('kipvs-configmap.yaml', /scheduler: .*/, 'scheduler: "rr"');
    editYaml('web.yaml', /\s+- addresses: \[10\.244\.3\.10\][^\n]*\n[^\n]*\n[^\n]*nodeName: node-3/, '');
    await until('web back to rr with 2 backends', (t) => /TCP {2}10\.96\.0\.10:80 rr/.test(t) && !t.includes('10.244.3.10'));
    const scaled = requests('10.96.0.10', 20);
    console.log(`   web: ${show(scaled)}`);
    expect(Object.keys(scaled).length === 2 && !('10.244.3.10' in scaled) && Object.values(scaled).every((n) => n === 10), 'rr over the 2 remaining backends, 10 each');
    status();
  } finally {
    agent?.kill('SIGTERM');
    tearDown();
  }
  console.log(failures ? `\ndemo: ${failures} expectation(s) failed` : '\ndemo: every expectation held');
  process.exitCode = failures ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  tearDown();
  process.exit(1);
});
