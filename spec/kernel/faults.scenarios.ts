// Fault scenarios on a real kernel (issue 6, "Faults"): what a user sees when the agent is killed under
// live traffic, when the API server goes away and comes back with its history compacted (410 Gone), and
// when someone edits the IPVS table by hand. They build on agent.scenarios.ts (the instrumented in-process
// agent against the test API server, the echo server and client); the restart one runs the real CLI
// (`node build/lib/cli.js agent --source dir:...`) as a child process and kills it with SIGKILL rather
// than calling stop(): nothing of the agent runs at the kill (no stop(), no exit handler) and the new
// process starts with no state but the kernel's, as after a crash, an OOM kill or a node restart.
// Like the agent scenarios, waits are bounded and a wait that runs out returns the last state; the
// expectations live in faults.test.ts on the host.

import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { mulberry32 } from '../../lib/kernel/faulty.js';
import type { Resource, WireObject } from '../support/apiserver.js';
import {
  bounded, CLIENT_JS, compact, ECHO_JS, fullSyncs, HTTP, kernelState, nodeIn, problems, saved, sleep, slice, step, svc, tools, until,
  WAIT_MS, withAgent, type Child, type PortSpec, type State,
} from './agent.scenarios.js';
import type { Ctx, Netns, Scenario } from './harness.js';

const CLI = new URL('../../lib/cli.js', import.meta.url).pathname;
const vip32 = (ip: string) => `${ip}/32`;

// ---- 1. SIGKILL under live TCP traffic through several VIPs, then a restart --------------------------

/** Connects again and again, round robin over HOST:PORT targets, one line echoed per connection, each
 *  bounded by 3 s; a failure prints a line at once. 'stop' on stdin prints the totals per target. */
const LOOP_JS = `const net = require('net');
const targets = process.argv.slice(2);
const st = { ok: 0, failed: 0, byTarget: {}, failures: [], maxMs: 0 };
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let stopping = false;
let i = 0;
function once() {
  if (stopping) { out({ event: 'final', ...st }); setTimeout(() => process.exit(0), 100); return; }
  const target = targets[i++ % targets.length];
  const [host, port] = target.split(':');
  const t0 = Date.now();
  const msg = 'ping-' + i + '\\n';
  let got = '';
  let done = false;
  const sock = net.connect({ host, port: Number(port) });
  const finish = (error) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    sock.destroy();
    const ms = Date.now() - t0;
    const t = (st.byTarget[target] ??= { ok: 0, failed: 0 });
    if (error) { st.failed++; t.failed++; st.failures.push({ target, error, ms, at: t0 }); out({ event: 'failed', target, error, ms, at: t0 }); }
    else { st.ok++; t.ok++; st.maxMs = Math.max(st.maxMs, ms); if (st.ok === 1) out({ event: 'first' }); }
    setTimeout(once, 50);
  };
  const timer = setTimeout(() => finish('timeout'), 10000);
  sock.setEncoding('utf8');
  sock.on('connect', () => sock.write(msg));
  sock.on('data', (d) => { got += d; if (got === msg) finish(); else if (got.length >= msg.length) finish('bad echo ' + JSON.stringify(got)); });
  sock.on('error', (e) => finish(e.code || e.message));
  sock.on('close', () => finish(got === msg ? undefined : 'closed early'));
}
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { if (d.includes('stop')) stopping = true; });
once();
`;

const RESTART_VIPS = ['10.96.0.10', '10.96.0.11', '10.96.0.12'];
const BACKENDS = ['10.244.1.5', '10.244.1.6'];
const RESTART_SYNC_PERIOD_MS = 2000;
/** Where the CLI agent serves /metrics (the agent runs in the VM's root namespace; --netns points it at the scenario's). */
const METRICS = '127.0.0.1:10349';

/**
 * The node (ctx) forwards between a client namespace (192.168.100.2, default route via the node) and a
 * backend namespace holding every backend address (default route via the node), as demo/run.ts does.
 */
function topology(ctx: Ctx): { client: Netns; backend: Netns } {
  const client = ctx.extraNetns('cl');
  const backend = ctx.extraNetns('be');
  ctx.sh([
    'sysctl -qw net.ipv4.ip_forward=1',
    `ip link add veth-cl type veth peer name eth0 netns ${client.name}`,
    'ip addr add 192.168.100.1/24 dev veth-cl && ip link set veth-cl up',
    `ip link add veth-be type veth peer name eth0 netns ${backend.name}`,
    'ip addr add 10.244.1.1/24 dev veth-be && ip link set veth-be up',
  ].join(' && '));
  client.sh('ip addr add 192.168.100.2/24 dev eth0 && ip link set eth0 up && ip route add default via 192.168.100.1');
  backend.sh([...BACKENDS.map((a) => `ip addr add ${a}/24 dev eth0`), 'ip link set eth0 up', 'ip route add default via 10.244.1.1'].join(' && '));
  return { client, backend };
}

/** A Kubernetes object as a manifest file wants it (kind and apiVersion set). */
const manifest = (kind: string, apiVersion: string, o: WireObject): WireObject => ({ apiVersion, kind, ...o });

interface CliAgent {
  pid: number;
  /** The agent's JSON log lines (stderr). */
  log: Array<Record<string, unknown>>;
  /** Exit code or signal once it has exited. */
  exited(): number | string | undefined;
  kill(): Promise<void>;
}

/** `kipvs agent --source dir:DIR --netns NETNS` as a child process, metrics on METRICS. */
function cliAgent(ctx: Ctx, dir: string): CliAgent {
  const proc = spawn(process.execPath, [CLI, 'agent', `--source=dir:${dir}`, `--netns=${ctx.path}`, '--hostname-override=kipvs-node-1',
    `--ipvs-sync-period=${RESTART_SYNC_PERIOD_MS}ms`, '--ipvs-min-sync-period=100ms', '--healthz-bind-address=', `--metrics-bind-address=${METRICS}`],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  const log: Array<Record<string, unknown>> = [];
  let buf = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) {
      try {
        log.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
      } catch {
        log.push({ level: 'unparsed', message: buf.slice(0, i) });
      }
    }
  });
  const exited = new Promise<void>((resolve) => proc.on('close', () => resolve()));
  return {
    pid: proc.pid!,
    log,
    exited: () => proc.exitCode ?? proc.signalCode ?? undefined,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await bounded(exited, WAIT_MS, 'agent exit');
    },
  };
}

/** The agent's /metrics as { 'name{labels}': value }, or the error (one fresh connection per scrape). */
function scrape(): Promise<Record<string, number> | { error: string }> {
  return new Promise((resolve) => {
    const req = http.get(`http://${METRICS}/metrics`, { agent: false, timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => { text += d; }).on('end', () => {
        const out: Record<string, number> = {};
        for (const line of text.split('\n')) {
          const m = /^(kipvs_\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
          if (m) out[m[1]] = Number(m[2]);
        }
        resolve(out);
      }).on('error', (e) => resolve({ error: e.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ error: e.message }));
  });
}

/** Sum of every series of metric `name`. */
const total = (m: Record<string, number> | { error: string }, name: string) =>
  Object.entries(m).filter(([k]) => k !== 'error').filter(([k]) => k === name || k.startsWith(`${name}{`)).reduce((n, [, v]) => n + Number(v), 0);

/** Waits (bounded) until the agent has finished `n` full syncs, by its metrics; returns the last scrape. */
async function fullSyncsDone(agent: CliAgent, n: number): Promise<Record<string, number> | { error: string }> {
  const t0 = Date.now();
  let m: Record<string, number> | { error: string } = { error: 'not scraped' };
  // Import of client-node alone takes 10-20 s under TCG: a generous bound.
  while (Date.now() - t0 < 4 * WAIT_MS && agent.exited() === undefined) {
    m = await scrape();
    const full = Object.entries(m).filter(([k]) => k.startsWith('kipvs_syncs_total{') && k.includes('type="full"')).reduce((s, [, v]) => s + Number(v), 0);
    if (full >= n) return m;
    await sleep(200);
  }
  return m;
}

const restartUnderTraffic: Scenario = {
  name: 'faults: the agent SIGKILLed under live TCP traffic through 3 VIPs and started again',
  async run(ctx) {
    const { client, backend } = topology(ctx);
    const dir = `/tmp/${ctx.name}-manifests`;
    const scripts = { echo: `/tmp/${ctx.name}-echo.cjs`, client: `/tmp/${ctx.name}-client.cjs`, loop: `/tmp/${ctx.name}-loop.cjs` };
    mkdirSync(dir, { recursive: true });
    writeFileSync(scripts.echo, ECHO_JS);
    writeFileSync(scripts.client, CLIENT_JS);
    writeFileSync(scripts.loop, LOOP_JS);
    const port: PortSpec = { name: 'echo', port: 80, target: 8080 };
    RESTART_VIPS.forEach((ip, i) => {
      writeFileSync(`${dir}/svc-${i}.json`, JSON.stringify(manifest('Service', 'v1', svc(`echo-${i}`, ip, [port]))));
      writeFileSync(`${dir}/eps-${i}.json`, JSON.stringify(manifest('EndpointSlice', 'discovery.k8s.io/v1', slice(`echo-${i}-a`, `echo-${i}`, BACKENDS, [port]))));
    });
    const want: State = {
      services: RESTART_VIPS.map((ip) => `TCP  ${ip}:80 rr ${BACKENDS.map((b) => `-> ${b}:8080 Masq 1`).join(' ')}`),
      vips: RESTART_VIPS.map(vip32),
    };
    const children: Child[] = [];
    const agents: CliAgent[] = [];
    const t0 = performance.now();
    const at = () => Math.round(performance.now() - t0);
    try {
      const first = cliAgent(ctx, dir);
      agents.push(first);
      const programmed = await until(ctx, want, t0, 4 * WAIT_MS);
      const firstMetrics = await fullSyncsDone(first, 1);
      const server = nodeIn(backend, scripts.echo, ['8080']);
      children.push(server);
      await server.line((l) => l.event === 'listening', 'echo server listening');
      // One long-lived connection per VIP, a line every 500 ms (TCG: a light load); and a loop of new connections over all three.
      const conns = RESTART_VIPS.map((ip) => nodeIn(client, scripts.client, [ip, '80', '500']));
      children.push(...conns);
      const loop = nodeIn(client, scripts.loop, RESTART_VIPS.map((ip) => `${ip}:80`));
      children.push(loop);
      for (const c of conns) await c.line((l) => l.event === 'echo' && (l.n as number) >= 3, 'first echoes');
      await loop.line((l) => l.event === 'first', 'first new connection');
      const echoed = () => conns.map((c) => c.lines.filter((l) => l.event === 'echo').length);
      const before = saved(ctx);
      const atKill = { ms: at(), epochMs: Date.now(), echoed: echoed() };
      await first.kill();
      const killedAt = performance.now();
      const second = cliAgent(ctx, dir);
      agents.push(second);
      // Its first sync is a full one onto the unchanged table; a periodic full sync follows 2 s later.
      const secondMetrics = await fullSyncsDone(second, 2);
      const restartMs = Math.round(performance.now() - killedAt);
      const afterRestart = { ms: at(), epochMs: Date.now(), echoed: echoed() };
      const after = saved(ctx);
      // Traffic keeps going a little longer under the new agent.
      await sleep(1000);
      for (const c of conns) c.proc.stdin!.write('stop\n');
      loop.proc.stdin!.write('stop\n');
      const finals = await Promise.all(conns.map((c) => c.line((l) => l.event === 'final', 'client totals')));
      const loopFinal = await loop.line((l) => l.event === 'final', 'loop totals');
      return {
        programmed: { converged: programmed.converged, ms: programmed.ms, last: programmed.last },
        firstAgent: { fullSyncs: total(firstMetrics, 'kipvs_syncs_total'), ops: total(firstMetrics, 'kipvs_sync_operations_total') },
        atKill,
        restartMs,
        afterRestart,
        secondAgent: {
          metrics: secondMetrics,
          syncs: total(secondMetrics, 'kipvs_syncs_total'),
          ops: total(secondMetrics, 'kipvs_sync_operations_total'),
          kernelErrors: total(secondMetrics, 'kipvs_kernel_errors_total'),
          /** 'sync' lines are logged for syncs that wrote something. */
          syncLogLines: second.log.filter((l) => l.message === 'sync').length,
          problems: second.log.filter((l) => l.level !== 'info' && l.level !== 'debug').map((l) => `${String(l.level)}: ${String(l.message)}`),
          exited: second.exited() ?? null,
        },
        identical: after === before,
        saved: { before, after },
        finals,
        loopFinal,
        clientEvents: conns.map((c) => c.lines.filter((l) => l.event !== 'echo')),
        stderr: children.map((c) => c.stderr()).filter(Boolean),
        ...(await tools(ctx)),
      };
    } finally {
      await Promise.all([...children.map((c) => c.kill()), ...agents.map((a) => a.kill())]);
      rmSync(dir, { recursive: true, force: true });
      for (const f of Object.values(scripts)) rmSync(f, { force: true });
    }
  },
};

// ---- 2. the API server away, back with its history compacted (410 Gone → relist) -------------------

const gone: Scenario = {
  name: 'faults: the API server goes away and comes back with 410 Gone for every watch',
  async run(ctx) {
    const apiPort: PortSpec = { name: 'grpc', port: 443, target: 9443 };
    const objects: Array<[Resource, WireObject]> = [
      ['services', svc('web', '10.96.0.10', [HTTP])], ['endpointslices', slice('web-a', 'web', ['10.244.1.5', '10.244.2.6'], [HTTP])],
      ['services', svc('api', '10.96.0.20', [apiPort])], ['endpointslices', slice('api-a', 'api', ['10.244.4.1'], [apiPort])],
    ];
    const WEB2 = 'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1';
    const API = 'TCP  10.96.0.20:443 rr -> 10.244.4.1:9443 Masq 1';
    return withAgent(ctx, objects, async (a, api) => {
      const start = await until(ctx, { services: [WEB2, API], vips: [vip32('10.96.0.10'), vip32('10.96.0.20')] }, performance.now());
      const before = saved(ctx);
      const marks = { syncs: a.syncs.length, ops: a.ops.length, log: a.log.length };
      await api.stop();
      const stoppedAt = performance.now();
      // While it is away: web scales to 3, a Service db appears, and etcd compacts past every
      // resourceVersion the agent holds, so each watch it resumes is answered 410 Gone.
      api.update('endpointslices', slice('web-a', 'web', ['10.244.1.5', '10.244.2.6', '10.244.3.7'], [HTTP]));
      api.create('services', svc('db', '10.96.0.30', [{ name: 'pg', port: 5432, target: 5432 }]));
      api.create('endpointslices', slice('db-a', 'db', ['10.244.5.1'], [{ name: 'pg', port: 5432, target: 5432 }]));
      api.compact();
      const horizon = Number(api.resourceVersion);
      const requestMark = api.requests.length;
      const awaySyncs = await fullSyncs(a, 2);
      const away = {
        ms: Math.round(performance.now() - stoppedAt),
        fullSyncs: awaySyncs.length,
        syncs: a.syncs.slice(marks.syncs).map(({ full, written, failed, result }) => ({ full, written, failed, result })),
        ops: a.ops.slice(marks.ops).map((o) => o.op),
        unchanged: saved(ctx) === before,
      };
      const back = await step(ctx, a, 'API server back, history compacted', () => api.start().then(() => undefined), {
        services: ['TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1 -> 10.244.3.7:8080 Masq 1', API,
          'TCP  10.96.0.30:5432 rr -> 10.244.5.1:5432 Masq 1'],
        vips: ['10.96.0.10', '10.96.0.20', '10.96.0.30'].map(vip32),
      });
      // Every feed relists (bounded wait: each retries on its own jittered backoff).
      const relisted = () => new Set(a.log.slice(marks.log).filter((e) => e.msg === 'relisting').map((e) => String(e.meta?.kind)));
      await bounded((async () => { while (relisted().size < 4) await sleep(20); })(), WAIT_MS, '').catch(() => undefined);
      const settle = await fullSyncs(a, 1);
      return {
        start: start.converged,
        away,
        back,
        relisted: [...relisted()].sort(),
        /** Watches resumed from a resourceVersion older than the compaction: each one was answered 410 Gone. */
        expiredWatches: api.requests.slice(requestMark).filter((r) => r.watch && Number(r.query.resourceVersion) > 0 && Number(r.query.resourceVersion) < horizon).length,
        settle: settle.map(({ full, written, failed }) => ({ full, written, failed })),
        allOpsSinceAway: a.ops.slice(marks.ops).map((o) => o.op),
        problems: problems(a.log.slice(marks.log)).filter((p) => !p.startsWith('warn: informer failed')),
      };
    });
  },
};

// ---- 3. random drift by hand, seeded -----------------------------------------------------------------

const DRIFT_SERVICES = 6;
const DRIFT_ENDPOINTS = 3;

const randomDrift: Scenario = {
  name: 'faults: a seeded random mix of drift made with ipvsadm is repaired by one full sync',
  async run(ctx) {
    const seed = Number(process.env.KIPVS_DRIFT_SEED ?? Date.now() % 2 ** 31);
    console.log(`  drift seed ${seed} (KIPVS_DRIFT_SEED=${seed} repeats it)`);
    const random = mulberry32(seed);
    const pick = (n: number) => Math.floor(random() * n);
    const ips = Array.from({ length: DRIFT_SERVICES }, (_, i) => `10.96.0.${10 + i}`);
    const eps = (i: number) => Array.from({ length: DRIFT_ENDPOINTS }, (_, j) => `10.244.${i + 1}.${j + 5}`);
    const objects: Array<[Resource, WireObject]> = ips.flatMap((ip, i): Array<[Resource, WireObject]> => [
      ['services', svc(`s${i}`, ip, [HTTP])], ['endpointslices', slice(`s${i}-a`, `s${i}`, eps(i), [HTTP])],
    ]);
    const good: State = {
      services: compact(ips.map((ip, i) => ({ id: `TCP  ${ip}:80`, scheduler: 'rr', options: '', dests: eps(i).map((e) => ({ addr: `${e}:8080`, forward: 'Masq', weight: 1, active: 0, inactive: 0 })) }))),
      vips: ips.map(vip32).sort(),
    };
    return withAgent(ctx, objects, async (a, _api, now) => {
      const start = await until(ctx, good, performance.now());
      // The mix: destinations deleted, weights changed, foreign services added by hand (each with a real server).
      const actions: string[] = [];
      const foreign: string[] = [];
      const deleted = new Set<string>();
      const count = 4 + pick(6);
      for (let k = 0; k < count; k++) {
        const i = pick(DRIFT_SERVICES);
        const dest = `${eps(i)[pick(DRIFT_ENDPOINTS)]}:8080`;
        const kind = k < 3 ? k : pick(3); // at least one of each
        if (kind === 0 && !deleted.has(`${i} ${dest}`)) {
          deleted.add(`${i} ${dest}`);
          actions.push(`ipvsadm -d -t ${ips[i]}:80 -r ${dest}`);
        } else if (kind === 1 && !deleted.has(`${i} ${dest}`)) {
          actions.push(`ipvsadm -e -t ${ips[i]}:80 -r ${dest} -m -w ${2 + pick(50)}`);
        } else {
          const addr = `10.1.${k}.${1 + pick(250)}:${1000 + pick(9000)}`;
          foreign.push(addr);
          actions.push(`ipvsadm -A -t ${addr} -s wrr`, `ipvsadm -a -t ${addr} -r 10.2.0.${1 + pick(250)}:80 -m -w ${1 + pick(9)}`);
        }
      }
      // Inject just after a sync ended (the injection blocks this process, agent included: no sync sees half of it).
      const n = a.syncs.length;
      await bounded((async () => { while (a.syncs.length === n) await sleep(2); })(), WAIT_MS, 'a sync');
      ctx.sh(actions.join(' && '));
      const injectedAt = now();
      const drifted = await kernelState(ctx);
      const foreignSaved = () => saved(ctx).split('\n').filter((l) => l.includes(' -t 10.1.')).sort();
      const foreignBefore = foreignSaved();
      const opsMark = a.ops.length;
      // The first full sync that starts after the injection must leave kipvs' state exactly as desired.
      const [repair] = await fullSyncs(a, 1);
      const repairedState = await kernelState(ctx);
      const repairOps = a.ops.slice(opsMark).map((o) => o.op);
      const foreignLines = repairedState.services.filter((l) => l.startsWith('TCP  10.1.'));
      const next = await fullSyncs(a, 1);
      return {
        seed,
        actions,
        start: start.converged,
        drifted,
        repair: { ...repair, startedAfterInjectionMs: repair.at - injectedAt },
        repaired: { services: repairedState.services.filter((l) => !l.startsWith('TCP  10.1.')), vips: repairedState.vips },
        good,
        repairOps,
        foreign: { added: foreign, lines: foreignLines, before: foreignBefore, after: foreignSaved() },
        nextSync: next.map(({ full, written, failed }) => ({ full, written, failed })),
        ...(await tools(ctx)),
        problems: problems(a.log),
      };
    });
  },
};

/** The restart under traffic takes 2-4 minutes under TCG (two CLI agents importing client-node, live
 *  traffic on one vCPU): it runs with `make test-soak` (KIPVS_SOAK=1), the others with `make test`. */
const SOAK = process.env.KIPVS_SOAK === '1';
export const scenarios: Scenario[] = [...(SOAK ? [restartUnderTraffic] : []), gone, randomDrift];
