// Node configuration on a real kernel: the agent's kernel settings (sysctls) and its healthCheckNodePort
// servers, each in the scenario's fresh network namespace. What the scenarios return is read back with
// the tools (`ip netns exec N sysctl`, `ss`, curl from another namespace over veth); every wait is
// bounded, and a wait that runs out returns the last state instead of throwing, so the host test
// (nodecfg.test.ts) shows the difference.

import { execFile, execSync, spawn, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { HealthCheckServers, type HealthCheckWant } from '../../lib/healthcheck.js';
import { withNetns } from '../../lib/netns.js';
import { wantedSysctls } from '../../lib/sysctl.js';
import { captureLogger } from '../support/logger.js';
import type { Netns, Scenario } from './harness.js';

const CLI = fileURLToPath(new URL('../../lib/cli.js', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../../../manifests/examples', import.meta.url));
/** Bound on every wait: node under TCG is 20-100x slower than native (client-node alone takes 10-20 s). */
const WAIT_MS = 90_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every setting kipvs may write, strict ARP and IPv6 forwarding included. */
const ALL = wantedSysctls({ strictArp: true, ipv6: true }).map((w) => w.name);
/** The VM's own (root namespace) values, read by this process, which runs there. */
const rootValues = () => Object.fromEntries(ALL.map((n) => [n, readFileSync(`/proc/sys/${n.replaceAll('.', '/')}`, 'utf8').trim()]));

/** `kipvs agent --ipvs-strict-arp --netns N`, the CLI as an operator runs it, with a directory source. */
const agentSysctls: Scenario = {
  name: 'nodecfg: the agent sets the kernel settings in its namespace once, repairs a reset, leaves the root namespace alone',
  async run(ctx) {
    const values = () => Object.fromEntries(ALL.map((n) => [n, ctx.sh(`sysctl -n ${n}`).trim()]));
    // Known starting points: everything off in the namespace except one setting already right (never
    // written or logged); in the VM's root namespace, two settings the agent would change were it there.
    ctx.sh(ALL.map((n) => `sysctl -qw ${n}=0`).join(' && ') + ' && sysctl -qw net.ipv4.vs.expire_nodest_conn=1');
    execSync('sysctl -qw net.ipv4.vs.conntrack=0 net.ipv4.conf.all.arp_announce=0'); // this process runs in the root namespace
    const rootBefore = rootValues();
    const before = values();

    const proc = spawn(process.execPath, [
      CLI, 'agent', '--source', `dir:${EXAMPLES}`, '--netns', ctx.path, '--hostname-override', 'kipvs-node-1',
      '--ipvs-strict-arp', '--ipvs-sync-period', '1s', '--ipvs-min-sync-period', '100ms',
      '--healthz-bind-address', '', '--metrics-bind-address', '',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const logs = () =>
      stderr.split('\n').flatMap((l) => {
        try {
          return [JSON.parse(l) as { level: string; message: string }];
        } catch {
          return [];
        }
      });
    const sysctlLogs = () => logs().filter((l) => /^sysctl /.test(l.message)).map((l) => `${l.level} ${l.message}`);
    const until = async (what: () => boolean) => {
      const t0 = Date.now();
      while (!what() && Date.now() - t0 < WAIT_MS && proc.exitCode === null) await sleep(100);
      return Date.now() - t0;
    };
    try {
      const msToProgrammed = await until(() => logs().some((l) => l.message.startsWith('sources synced')) && values()['net.ipv4.conf.all.arp_announce'] === '2');
      const after = values();
      const logsAtStart = sysctlLogs();
      // A reset behind the agent's back: repaired at the next full sync (every 1 s here), logged once more.
      ctx.sh('sysctl -qw net.ipv4.ip_forward=0');
      const msToRepair = await until(() => ctx.sh('sysctl -n net.ipv4.ip_forward').trim() === '1');
      await sleep(3000); // a few more full syncs: nothing more to write or log
      return {
        before, after, msToProgrammed, msToRepair, logsAtStart, logsAtEnd: sysctlLogs(),
        repaired: values()['net.ipv4.ip_forward'],
        errors: logs().filter((l) => l.level === 'error').map((l) => l.message),
        rootBefore, rootAfter: rootValues(),
        exited: proc.exitCode,
        stderrTail: proc.exitCode === null ? undefined : stderr.slice(-2000),
      };
    } finally {
      proc.kill('SIGKILL');
    }
  },
};

/**
 * curl from namespace `ns`: status, the headers we care about, body; or curl's error. Asynchronous:
 * the servers answering run in this very process, so a synchronous exec would block them.
 */
async function probe(ns: Netns, url: string) {
  const cmd = `curl -sS -m 10 -i ${url} 2>&1; rc=$?; echo; echo "curl-exit=$rc"`;
  const { stdout: out } = await promisify(execFile)('ip', ['netns', 'exec', ns.name, 'sh', '-c', cmd], { encoding: 'utf8', timeout: 30_000 });
  const exit = Number(/curl-exit=(\d+)/.exec(out)?.[1]);
  const [head, ...rest] = out.replace(/\ncurl-exit=\d+\s*$/, '').split('\r\n\r\n');
  const lines = head.split('\r\n');
  const header = (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))?.split(': ')[1];
  return exit !== 0 || !lines[0].startsWith('HTTP/')
    ? { exit, error: out.trim() }
    : {
        exit,
        status: Number(lines[0].split(' ')[1]),
        contentType: header('Content-Type'),
        nosniff: header('X-Content-Type-Options'),
        weight: header('X-Load-Balancing-Endpoint-Weight'),
        body: rest.join('\r\n\r\n').trim(),
      };
}

const healthCheckServers: Scenario = {
  name: 'nodecfg: healthCheckNodePort servers listen in the namespace and answer curl from another over veth',
  async run(ctx) {
    const client = ctx.extraNetns('cl');
    ctx.sh([`ip link add veth-cl type veth peer name eth0 netns ${client.name}`, 'ip addr add 10.250.0.1/24 dev veth-cl', 'ip link set veth-cl up'].join(' && '));
    client.sh(['ip addr add 10.250.0.2/24 dev eth0', 'ip link set eth0 up'].join(' && '));
    // A port already taken inside the namespace, by someone else.
    const squatter = withNetns(ctx.path, () => createServer().listen(30102));
    const log = captureLogger();
    const hc = new HealthCheckServers({ logger: log, netns: ctx.path });
    const want = (entries: [number, HealthCheckWant][]) => new Map(entries);
    const url = (port: number) => `http://10.250.0.1:${port}/healthz`;
    try {
      const errors = await hc.update(
        want([
          [30100, { service: 'shop/web', localEndpoints: 2 }],
          [30101, { service: 'shop/db', localEndpoints: 0 }],
          [30102, { service: 'shop/busy', localEndpoints: 1 }],
        ]),
      );
      const listening = ctx.sh('ss -ltnH').trim().split('\n').map((l) => l.split(/\s+/)[3]).sort();
      const listeningInRoot = execSync('ss -ltnH', { encoding: 'utf8' });
      const first = { web: await probe(client, url(30100)), db: await probe(client, url(30101)) };
      // Drop web, keep db with a new count, add cache.
      const errorsAfter = await hc.update(want([[30101, { service: 'shop/db', localEndpoints: 3 }], [30103, { service: 'shop/cache', localEndpoints: 1 }]]));
      const second = { web: await probe(client, url(30100)), db: await probe(client, url(30101)), cache: await probe(client, url(30103)) };
      return {
        errors,
        errorLogs: log.errors(),
        listening,
        rootHas30100: /:30100\b/.test(listeningInRoot),
        first,
        errorsAfter,
        second,
        ports: hc.ports(),
      };
    } finally {
      await hc.close();
      squatter.close();
    }
  },
};

/** `kipvs agent --init-only`, as the DaemonSet's privileged init container runs it: sets, exits, no agent. */
const initOnly: Scenario = {
  name: 'nodecfg: agent --init-only sets the kernel settings in its namespace and exits 0',
  async run(ctx) {
    ctx.sh(ALL.map((n) => `sysctl -qw ${n}=0`).join(' && '));
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [CLI, 'agent', '--init-only', `--netns=${ctx.path}`, '--ipvs-strict-arp', '--cluster-cidr=10.244.0.0/16,fd00:244::/64'],
      { encoding: 'utf8', timeout: WAIT_MS });
    return {
      status: r.status,
      ms: Math.round(performance.now() - t0),
      values: Object.fromEntries(ALL.map((n) => [n, ctx.sh(`sysctl -n ${n}`).trim()])),
      logged: r.stderr.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { message: string }).message),
    };
  },
};

export const scenarios: Scenario[] = [agentSysctls, healthCheckServers, initOnly];
