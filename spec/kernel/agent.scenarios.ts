// The agent end to end on a real kernel: startAgent (source 'kube') with the real
// @kubernetes/client-node talking to the test API server, both in this node process inside the VM,
// programming the scenario's network namespace over netlink. Scenarios write API objects, wait for
// the kernel state they expect with bounded polls of the kernel (recording how long it took), and
// return what the kernel showed through the tools (`ipvsadm -Ln`, `ip -o addr show dev kube-ipvs0`)
// and every op the agent wrote. A wait that runs out does not throw: the last state is returned, so
// the host test shows the difference. Expectations live in agent.test.ts on the host.

import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { startAgent, type Agent, type AgentOptions } from '../../lib/agent.js';
import { describeOp } from '../../lib/kernel/ids.js';
import type { SyncReport } from '../../lib/proxy/reconciler.js';
import { TestApiServer, type Resource, type WireObject } from '../support/apiserver.js';
import { node, recordingLogger, type LogEntry } from '../support/kube-fixtures.js';
import { observe, sortIpvsadm, tableAsIpvsadm, type Ctx, type IpvsadmService, type Netns, type Scenario } from './harness.js';

/** --ipvs-sync-period and --ipvs-min-sync-period of every agent here. */
export const SYNC_PERIOD_MS = 2000;
const MIN_SYNC_PERIOD_MS = 100;
export const NODE = 'kipvs-node-1';
export const CONFIG_MAP = { namespace: 'kube-system', name: 'kipvs' };
export const IFNAME = 'kube-ipvs0';
/** Bound on every wait: node under TCG is 20-100x slower than native. */
export const WAIT_MS = 30_000;

// ---- API objects ---------------------------------------------------------------------------------

export interface PortSpec { name: string; protocol?: 'TCP' | 'UDP' | 'SCTP'; port: number; target: number }

export function svc(name: string, clusterIP: string, ports: PortSpec[], extra: { annotations?: Record<string, string>; affinity?: number } = {}): WireObject {
  return {
    metadata: { name, namespace: 'default', ...(extra.annotations ? { annotations: extra.annotations } : {}) },
    spec: {
      type: 'ClusterIP',
      clusterIP,
      clusterIPs: [clusterIP],
      ports: ports.map((p) => ({ name: p.name, protocol: p.protocol ?? 'TCP', port: p.port, targetPort: p.target })),
      ...(extra.affinity
        ? { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: extra.affinity } } }
        : { sessionAffinity: 'None' }),
    },
  };
}

/** An IPv4 slice of Service `service`; endpoints as 'ip' (ready) or '!ip' (not ready). */
export function slice(name: string, service: string, endpoints: string[], ports: PortSpec[]): WireObject {
  return {
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: endpoints.map((e) => ({ addresses: [e.replace('!', '')], conditions: { ready: !e.startsWith('!') } })),
    ports: ports.map((p) => ({ name: p.name, protocol: p.protocol ?? 'TCP', port: p.target })),
  };
}

export const cm = (data: Record<string, string>): WireObject => ({ metadata: { ...CONFIG_MAP }, data });

// ---- the agent, instrumented ---------------------------------------------------------------------

export interface SyncRecord { at: number; ms: number; result: string; full?: boolean; written?: number; failed?: number; skipped?: true }
interface OpRecord { at: number; op: string }

/** Milliseconds since the scenario's clock started. */
export type Clock = () => number;

export interface Launched {
  agent: Agent;
  /** Every op the agent handed to the kernel, in order (' FAILED' appended to refused ones). */
  ops: OpRecord[];
  /** Every sync the runner ran, with the reconciler's report. */
  syncs: SyncRecord[];
  log: LogEntry[];
  ready: Promise<void>;
  stop(): Promise<void>;
}

export async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms); });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let agents = 0;

/**
 * Starts an agent on `ctx`'s namespace against `api`, as the CLI would (kubeconfig file, node name,
 * ConfigMap, sync periods). The Kernel's apply and the Reconciler's sync are wrapped (delegating) so
 * every op and every sync is recorded; both are in place before the first sync can run, since that
 * waits on the API server's answers.
 */
export async function launch(ctx: Ctx, api: TestApiServer, now: Clock, extra: Partial<AgentOptions> = {}): Promise<Launched> {
  const kubeconfig = `/tmp/${ctx.name}-agent${++agents}.kubeconfig`;
  api.writeKubeconfig(kubeconfig);
  const rec = recordingLogger();
  const agent = await startAgent({
    source: 'kube', kubeconfig, nodeName: NODE, configMap: `${CONFIG_MAP.namespace}/${CONFIG_MAP.name}`, netns: ctx.path,
    overrides: {}, syncPeriodMs: SYNC_PERIOD_MS, minSyncPeriodMs: MIN_SYNC_PERIOD_MS, logger: rec.logger, ...extra,
  });
  const ops: OpRecord[] = [];
  const syncs: SyncRecord[] = [];
  const { kernel, reconciler } = agent;
  const apply = kernel.apply.bind(kernel);
  kernel.apply = async (list) => {
    const result = await apply(list);
    const failed = new Set(result.errors.map((e) => e.index));
    list.forEach((op, i) => ops.push({ at: now(), op: `${describeOp(op)}${failed.has(i) ? ' FAILED' : ''}` }));
    return result;
  };
  const sync = reconciler.sync.bind(reconciler);
  reconciler.sync = async (opts) => {
    const before = reconciler.lastReport;
    const t0 = now();
    const result = await sync(opts);
    const r: SyncReport | undefined = reconciler.lastReport;
    syncs.push({ at: t0, ms: now() - t0, result, ...(r && r !== before ? { full: r.full, written: r.written, failed: r.failed } : { skipped: true }) });
    return result;
  };
  let stopped: Promise<void> | undefined;
  return {
    agent, ops, syncs, log: rec.entries, ready: agent.ready,
    stop: () => (stopped ??= bounded(agent.stop(), WAIT_MS, 'agent.stop()').finally(() => rmSync(kubeconfig, { force: true }))),
  };
}

export async function serve(objects: Array<[Resource, WireObject]>): Promise<TestApiServer> {
  const api = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
  for (const [resource, o] of objects) api.create(resource, o);
  return api;
}

export const clock = (): Clock => {
  const t0 = performance.now();
  return () => Math.round(performance.now() - t0);
};

/** Runs `fn` with an API server holding `objects` and a ready agent; stops both whatever happens. */
export async function withAgent<T>(
  ctx: Ctx, objects: Array<[Resource, WireObject]>, fn: (a: Launched, api: TestApiServer, now: Clock) => Promise<T>, extra: Partial<AgentOptions> = {},
): Promise<T> {
  const now = clock();
  const api = await serve([['nodes', node(NODE)], ...objects]);
  let a: Launched | undefined;
  try {
    a = await launch(ctx, api, now, extra);
    await bounded(a.ready, WAIT_MS, 'agent.ready');
    return await fn(a, api, now);
  } finally {
    try {
      await a?.stop();
    } finally {
      await api.stop();
    }
  }
}

// ---- kernel state --------------------------------------------------------------------------------

/** One line per virtual server, counters left out: 'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> ...'. */
export function compact(list: IpvsadmService[]): string[] {
  return sortIpvsadm(list).map((s) =>
    [`${s.id} ${s.scheduler}`, s.options, ...s.dests.map((d) => `-> ${d.addr} ${d.forward} ${d.weight}`)].filter(Boolean).join(' '));
}

export interface State { services: string[]; vips: string[] }

/** The state through our own netlink dump: cheap enough to poll. */
export async function kernelState(ctx: Ctx): Promise<State> {
  const table = await ctx.kernel.dumpTable();
  let vips: string[] = [];
  try {
    vips = (await ctx.kernel.listAddresses(IFNAME)).map((a) => `${a.address}/${a.prefixLength}`).sort();
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENODEV') throw err;
  }
  return { services: compact(tableAsIpvsadm(table)), vips };
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Polls the kernel until it is in state `want`; ms counted from `since` (performance.now()). */
export async function until(ctx: Ctx, want: State, since: number, timeoutMs = WAIT_MS): Promise<{ converged: boolean; ms: number; last: State }> {
  for (;;) {
    const last = await kernelState(ctx);
    const ms = Math.round(performance.now() - since);
    if (same(last, want)) return { converged: true, ms, last };
    if (ms > timeoutMs) return { converged: false, ms, last };
    await sleep(20);
  }
}

/** `ip -o addr show dev kube-ipvs0` as 'inet 10.96.0.10/32 scope global' lines, sorted. */
export function addrs(ns: Netns): string[] {
  return ns.sh(`ip -o addr show dev ${IFNAME} 2>/dev/null || true`).split('\n')
    .map((l) => /\s(inet6?) (\S+) .*?scope (\S+)/.exec(l))
    .filter((m) => m !== null)
    .map((m) => `${m[1]} ${m[2]} scope ${m[3]}`)
    .sort();
}

/** The kernel as the tools show it: ipvsadm -Ln (compacted), kube-ipvs0's addresses, and whether
 *  ipvsadm and our dump agree (null when they do). */
export async function tools(ctx: Ctx) {
  const o = await observe(ctx);
  return { ipvsadm: compact(o.ipvsadm), addrs: addrs(ctx), ipvsadmMismatch: o.ipvsadmMismatch };
}

/** kube-ipvs0's kind and state from `ip -d -o link show`, e.g. 'dummy DOWN'. */
function link(ns: Netns): string {
  const text = ns.sh(`ip -d -o link show dev ${IFNAME}`);
  return `${/\sdummy\s/.test(text) ? 'dummy' : 'not-dummy'} ${/ state (\S+)/.exec(text)?.[1] ?? '?'}`;
}

/** The save form, byte for byte (for "nothing changed" comparisons). */
export const saved = (ctx: Ctx) => ctx.sh('ipvsadm -Sn');

export interface Step {
  label: string;
  converged: boolean;
  /** From the API write to the kernel showing the expected state. */
  ms: number;
  ipvsadm: string[];
  addrs: string[];
  ipvsadmMismatch: unknown;
  /** Ops the agent wrote from the API write until the state was reached. */
  ops: string[];
}

/** Does `act` (API writes), waits for `want` and observes. */
export async function step(ctx: Ctx, a: Launched, label: string, act: () => void | Promise<void>, want: State): Promise<Step> {
  const mark = a.ops.length;
  const t0 = performance.now();
  await act();
  const { converged, ms, last } = await until(ctx, want, t0);
  return { label, converged, ms, ...(await tools(ctx)), ops: a.ops.slice(mark).map((o) => o.op), ...(converged ? {} : { last }) };
}

/** Resolves after `n` full (periodic or retry) syncs that started from now have finished. */
export async function fullSyncs(a: Launched, n: number): Promise<SyncRecord[]> {
  const from = a.syncs.length;
  const full = () => a.syncs.slice(from).filter((s) => s.full);
  await bounded((async () => { while (full().length < n) await sleep(10); })(), n * SYNC_PERIOD_MS + WAIT_MS, `${n} full syncs`);
  return full();
}

/** Errors and warnings the agent logged (JSON-safe). */
export const problems = (log: LogEntry[]) => log.filter((e) => e.level === 'error' || e.level === 'warn').map((e) => `${e.level}: ${e.msg}`);

// ---- 1. a Service's life -------------------------------------------------------------------------

export const HTTP: PortSpec = { name: 'http', port: 80, target: 8080 };
const DNS: PortSpec = { name: 'dns', protocol: 'UDP', port: 53, target: 5353 };
const HTTPS: PortSpec = { name: 'https', port: 443, target: 8443 };
export const VIP = '10.96.0.10';
export const VIP32 = `${VIP}/32`;

const lifecycle: Scenario = {
  name: 'agent: a Service and its EndpointSlice from create to delete',
  async run(ctx) {
    return withAgent(ctx, [], async (a, api) => {
      const initial = { ...(await tools(ctx)), link: link(ctx) };
      const both = (...eps: string[]) => [
        `TCP  10.96.0.10:80 rr ${eps.map((e) => `-> ${e}:8080 Masq 1`).join(' ')}`,
        `UDP  10.96.0.10:53 rr ${eps.map((e) => `-> ${e}:5353 Masq 1`).join(' ')}`,
      ];
      const plan: Array<[label: string, act: () => void, services: string[]]> = [
        ['create', () => {
          api.create('endpointslices', slice('web-a', 'web', ['10.244.1.5', '10.244.2.6'], [HTTP, DNS]));
          api.create('services', svc('web', VIP, [HTTP, DNS]));
        }, both('10.244.1.5', '10.244.2.6')],
        ['scale to 3 endpoints', () => {
          api.update('endpointslices', slice('web-a', 'web', ['10.244.1.5', '10.244.2.6', '10.244.3.7'], [HTTP, DNS]));
        }, both('10.244.1.5', '10.244.2.6', '10.244.3.7')],
        ['one endpoint not ready', () => {
          api.update('endpointslices', slice('web-a', 'web', ['10.244.1.5', '!10.244.2.6', '10.244.3.7'], [HTTP, DNS]));
        }, both('10.244.1.5', '10.244.3.7')],
        ['add a port, ClientIP affinity 300 s, scheduler lc', () => {
          api.update('endpointslices', slice('web-a', 'web', ['10.244.1.5', '!10.244.2.6', '10.244.3.7'], [HTTP, DNS, HTTPS]));
          api.update('services', svc('web', VIP, [HTTP, DNS, HTTPS], { annotations: { 'kipvs.io/scheduler': 'lc' }, affinity: 300 }));
        }, [
          'TCP  10.96.0.10:443 lc persistent 300 -> 10.244.1.5:8443 Masq 1 -> 10.244.3.7:8443 Masq 1',
          'TCP  10.96.0.10:80 lc persistent 300 -> 10.244.1.5:8080 Masq 1 -> 10.244.3.7:8080 Masq 1',
          'UDP  10.96.0.10:53 lc persistent 300 -> 10.244.1.5:5353 Masq 1 -> 10.244.3.7:5353 Masq 1',
        ]],
      ];
      const steps: Step[] = [];
      for (const [label, act, services] of plan) steps.push(await step(ctx, a, label, act, { services, vips: [VIP32] }));
      steps.push(await step(ctx, a, 'delete the Service', () => api.delete('services', 'default', 'web'), { services: [], vips: [] }));
      // Its orphaned slice goes last, separately: nothing is left for it to change.
      api.delete('endpointslices', 'default', 'web-a');
      const mark = a.ops.length;
      await fullSyncs(a, 1);
      const afterSliceDelete = { ...(await tools(ctx)), ops: a.ops.slice(mark).map((o) => o.op) };
      return { initial, steps, afterSliceDelete, problems: problems(a.log) };
    });
  },
};

// ---- 2. drift ------------------------------------------------------------------------------------

const drift: Scenario = {
  name: 'agent: drift made with ipvsadm and ip is repaired by the next periodic sync',
  async run(ctx) {
    const web = svc('web', VIP, [HTTP]);
    const eps = slice('web-a', 'web', ['10.244.1.5', '10.244.2.6'], [HTTP]);
    return withAgent(ctx, [['services', web], ['endpointslices', eps]], async (a, _api, now) => {
      const good = { services: ['TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1'], vips: [VIP32] };
      const start = await until(ctx, good, performance.now());
      // Inject just after a sync ended. The injection blocks this process (execFileSync), agent included,
      // so no sync can see half of it; the next periodic one is due SYNC_PERIOD_MS after that sync.
      const n = a.syncs.length;
      await bounded((async () => { while (a.syncs.length === n) await sleep(2); })(), WAIT_MS, 'a sync');
      const lastSyncEnd = a.syncs[a.syncs.length - 1];
      ctx.sh([
        'ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.5:8080',
        'ipvsadm -e -t 10.96.0.10:80 -r 10.244.2.6:8080 -m -w 7',
        'ipvsadm -a -t 10.96.0.10:80 -r 10.244.9.9:8080 -m -w 1',
        'ipvsadm -E -t 10.96.0.10:80 -s wlc',
        `ip addr del ${VIP32} dev ${IFNAME}`,
      ].join(' && '));
      const injected = performance.now();
      const sinceLastSyncMs = now() - (lastSyncEnd.at + lastSyncEnd.ms);
      const drifted = await kernelState(ctx);
      const syncMark = a.syncs.length;
      const opsMark = a.ops.length;
      const repair = await until(ctx, good, injected);
      // The kernel can show the repair before the sync that wrote it has returned.
      while (a.agent.runner.status().running) await sleep(10);
      const repairedBy = a.syncs.slice(syncMark);
      const repairOps = a.ops.slice(opsMark).map((o) => o.op);
      const after = await tools(ctx);
      const next = await fullSyncs(a, 1);
      return {
        syncPeriodMs: SYNC_PERIOD_MS,
        start: start.converged,
        drifted,
        /** From the end of the injection to the kernel being back in the desired state. */
        repairMs: repair.ms,
        repaired: repair.converged,
        /** The last sync before the injection had ended this long before the injection finished. */
        sinceLastSyncMs,
        repairedBy,
        repairOps,
        after,
        nextSync: next.map(({ full, written, failed }) => ({ full, written, failed })),
        problems: problems(a.log),
      };
    });
  },
};

// ---- 3. foreign services -------------------------------------------------------------------------

const foreign: Scenario = {
  name: 'agent: foreign IPVS services (another address, a fwmark) are never touched',
  async run(ctx) {
    ctx.sh([
      'ipvsadm -A -t 10.1.1.1:80 -s wrr',
      'ipvsadm -a -t 10.1.1.1:80 -r 10.2.0.1:80 -m -w 3',
      'ipvsadm -A -f 42 -s rr',
      'ipvsadm -a -f 42 -r 10.2.0.3:0 -m -w 2',
    ].join(' && '));
    const foreignSaved = () => saved(ctx).split('\n').filter((l) => !l.includes('10.96.')).join('\n');
    const before = foreignSaved();
    const FOREIGN = ['FWM  42 rr -> 10.2.0.3:0 Masq 2', 'TCP  10.1.1.1:80 wrr -> 10.2.0.1:80 Masq 3'];
    const WEB = 'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1';
    const API = 'TCP  10.96.0.20:8080 rr -> 10.244.4.1:9000 Masq 1';
    const apiPort: PortSpec = { name: 'http', port: 8080, target: 9000 };
    const objects: Array<[Resource, WireObject]> = [
      ['services', svc('web', VIP, [HTTP])], ['endpointslices', slice('web-a', 'web', ['10.244.1.5', '10.244.2.6'], [HTTP])],
    ];
    return withAgent(ctx, objects, async (a, api) => {
      const started = await until(ctx, { services: [...FOREIGN, WEB], vips: [VIP32] }, performance.now());
      const startOps = a.ops.map((o) => o.op);
      const steps: Step[] = [];
      steps.push(await step(ctx, a, 'create Service api', () => {
        api.create('endpointslices', slice('api-a', 'api', ['10.244.4.1'], [apiPort]));
        api.create('services', svc('api', '10.96.0.20', [apiPort]));
      }, { services: [...FOREIGN, WEB, API], vips: [VIP32, '10.96.0.20/32'] }));
      steps.push(await step(ctx, a, 'delete Service web', () => api.delete('services', 'default', 'web'),
        { services: [...FOREIGN, API], vips: ['10.96.0.20/32'] }));
      steps.push(await step(ctx, a, 'delete Service api', () => api.delete('services', 'default', 'api'),
        { services: FOREIGN, vips: [] }));
      const mark = a.ops.length;
      const quietSyncs = await fullSyncs(a, 3);
      return {
        before,
        after: foreignSaved(),
        started: { converged: started.converged, ops: startOps },
        steps,
        quiet: { syncs: quietSyncs.map(({ full, written, failed }) => ({ full, written, failed })), ops: a.ops.slice(mark).map((o) => o.op), ...(await tools(ctx)) },
        allOps: a.ops.map((o) => o.op),
        fullSyncs: a.syncs.filter((x) => x.full).length,
        problems: problems(a.log),
      };
    });
  },
};

// ---- 4. restart ----------------------------------------------------------------------------------

/** Two Services whose schedulers come from the ConfigMap (lc) and from an annotation (sh), or both
 *  from annotations; a second agent started on the same table and the same objects must adopt it. */
function restart(lcFrom: 'ConfigMap' | 'annotation'): Scenario {
  return {
    name: `agent: a restarted agent adopts the kernel table and writes nothing (lc from the ${lcFrom})`,
    async run(ctx) {
      const now = clock();
      const apiPort: PortSpec = { name: 'grpc', port: 443, target: 9443 };
      const api = await serve([
        ['nodes', node(NODE)],
        ...(lcFrom === 'ConfigMap' ? [['configmaps', cm({ scheduler: 'lc' })] as [Resource, WireObject]] : []),
        ['services', svc('web', VIP, [HTTP, DNS], lcFrom === 'annotation' ? { annotations: { 'kipvs.io/scheduler': 'lc' } } : {})],
        ['endpointslices', slice('web-a', 'web', ['10.244.1.5', '!10.244.2.6', '10.244.3.7'], [HTTP, DNS])],
        ['services', svc('api', '10.96.0.20', [apiPort], { annotations: { 'kipvs.io/scheduler': 'sh', 'kipvs.io/scheduler-flags': 'sh-port' }, affinity: 600 })],
        ['endpointslices', slice('api-a', 'api', ['10.244.4.1', '10.244.4.2'], [apiPort])],
      ]);
      let first: Launched | undefined;
      let second: Launched | undefined;
      try {
        first = await launch(ctx, api, now);
        await bounded(first.ready, WAIT_MS, 'first agent ready');
        const converged = await until(ctx, {
          services: [
            'TCP  10.96.0.10:80 lc -> 10.244.1.5:8080 Masq 1 -> 10.244.3.7:8080 Masq 1',
            'TCP  10.96.0.20:443 sh (sh-port) persistent 600 -> 10.244.4.1:9443 Masq 1 -> 10.244.4.2:9443 Masq 1',
            'UDP  10.96.0.10:53 lc -> 10.244.1.5:5353 Masq 1 -> 10.244.3.7:5353 Masq 1',
          ],
          vips: [VIP32, '10.96.0.20/32'],
        }, performance.now());
        // Let the first agent settle (one more full sync) before taking the reference.
        await fullSyncs(first, 1);
        const before = saved(ctx);
        const firstAgent = { ops: first.ops.map((o) => o.op), problems: problems(first.log) };
        await first.stop();
        const afterStop = saved(ctx);
        second = await launch(ctx, api, now);
        await bounded(second.ready, WAIT_MS, 'second agent ready');
        const report = second.agent.reconciler.lastReport;
        const firstSync = report && { full: report.full, written: report.written, failed: report.failed, ops: report.ops };
        const firstSyncOps = second.ops.map((o) => o.op);
        const later = await fullSyncs(second, 1);
        const after = saved(ctx);
        return {
          converged: converged.converged,
          firstAgent,
          stopKeptTable: afterStop === before,
          firstSync,
          firstSyncOps,
          laterSyncs: later.map(({ full, written, failed }) => ({ full, written, failed })),
          laterOps: second.ops.map((o) => o.op).slice(firstSyncOps.length),
          identical: after === before,
          saved: { before, after },
          ...(await tools(ctx)),
          problems: problems(second.log),
        };
      } finally {
        try {
          await second?.stop();
          await first?.stop();
        } finally {
          await api.stop();
        }
      }
    },
  };
}

// ---- 5. scheduler switch under a live connection -------------------------------------------------

export interface Child {
  proc: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stderr: () => string;
  /** Resolves with the first line that `pred` accepts; throws if the process exits or WAIT_MS passes first. */
  line(pred: (l: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
  /** SIGKILL (by pid: `ip netns exec` execs node in place) unless it has exited; resolves once it has. */
  kill(): Promise<void>;
}

/** Runs `node script args` inside namespace `ns`; its stdout is JSON lines. */
export function nodeIn(ns: Netns, script: string, args: string[]): Child {
  const proc = spawn('ip', ['netns', 'exec', ns.name, process.execPath, script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    for (let i; (i = out.indexOf('\n')) >= 0; out = out.slice(i + 1)) {
      const text = out.slice(0, i);
      try {
        lines.push(JSON.parse(text) as Record<string, unknown>);
      } catch {
        lines.push({ event: 'unparsed', text });
      }
    }
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  proc.on('error', (e) => { err += `spawn: ${e.message}\n`; });
  const exited = new Promise<void>((resolve) => proc.on('close', () => resolve()));
  return {
    proc,
    lines,
    stderr: () => err,
    async line(pred, what) {
      const found = () => lines.find(pred);
      const t0 = Date.now();
      while (!found()) {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what}: ${script} exited (${proc.exitCode ?? proc.signalCode}): ${err}`);
        if (Date.now() - t0 > WAIT_MS) throw new Error(`${what}: nothing after ${WAIT_MS} ms from ${script}; last lines ${JSON.stringify(lines.slice(-5))}; stderr: ${err}`);
        await sleep(20);
      }
      return found()!;
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await bounded(exited, WAIT_MS, `${script} exit`);
    },
  };
}

/** TCP echo server: `node echo.cjs PORT`; JSON lines on stdout. */
export const ECHO_JS = `const net = require('net');
let n = 0;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
net.createServer((s) => {
  n++;
  out({ event: 'accepted', n, local: s.localAddress + ':' + s.localPort, remote: s.remoteAddress });
  s.on('error', (e) => out({ event: 'error', error: e.code || e.message }));
  s.on('close', () => out({ event: 'closed', n }));
  s.pipe(s);
}).listen(Number(process.argv[2]), '0.0.0.0', () => out({ event: 'listening' }));
`;

/** One TCP connection, a numbered line every EVERY ms, each echo checked in order; 'stop' on stdin
 *  waits for the outstanding echoes, prints the totals and closes ('reset': closes with a RST). Never reconnects. */
export const CLIENT_JS = `const net = require('net');
const [host, port, every] = process.argv.slice(2);
const st = { sent: 0, echoed: 0, mismatches: 0, errors: [], closed: false, maxRttMs: 0 };
const sentAt = [];
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let timer;
let buf = '';
const sock = net.connect({ host, port: Number(port) });
const tick = () => {
  if (st.closed) return;
  st.sent++;
  sentAt[st.sent] = Date.now();
  sock.write('msg-' + st.sent + '\\n');
  timer = setTimeout(tick, Number(every));
};
sock.on('connect', () => { out({ event: 'connected', local: sock.localAddress + ':' + sock.localPort, remote: sock.remoteAddress + ':' + sock.remotePort }); tick(); });
sock.setEncoding('utf8');
sock.on('data', (d) => {
  buf += d;
  for (let i; (i = buf.indexOf('\\n')) >= 0; buf = buf.slice(i + 1)) {
    const n = st.echoed + 1;
    if (buf.slice(0, i) === 'msg-' + n) {
      st.echoed = n;
      st.maxRttMs = Math.max(st.maxRttMs, Date.now() - sentAt[n]);
      out({ event: 'echo', n });
    } else {
      st.mismatches++;
      out({ event: 'mismatch', got: buf.slice(0, i) });
    }
  }
});
sock.on('error', (e) => { st.errors.push(e.code || e.message); out({ event: 'error', error: e.code || e.message }); });
sock.on('close', () => { st.closed = true; clearTimeout(timer); out({ event: 'closed' }); });
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  if (!d.includes('stop') && !d.includes('reset')) return;
  const reset = d.includes('reset');
  clearTimeout(timer);
  const t0 = Date.now();
  const finish = () => { out({ event: 'final', ...st }); if (reset) sock.resetAndDestroy(); else sock.end(); setTimeout(() => process.exit(0), 100); };
  (function wait() { if (st.echoed >= st.sent || st.closed || Date.now() - t0 > 5000) finish(); else setTimeout(wait, 20); })();
});
`;

const liveConnection: Scenario = {
  name: 'agent: scheduler switched through the ConfigMap under a live TCP connection',
  async run(ctx) {
    const be = ctx.extraNetns('be');
    ctx.sh([
      `ip link add veth-be type veth peer name eth0 netns ${be.name}`,
      'ip addr add 10.244.1.1/24 dev veth-be',
      'ip link set veth-be up',
    ].join(' && '));
    be.sh([
      'ip addr add 10.244.1.5/24 dev eth0',
      'ip addr add 10.244.1.6/24 dev eth0',
      'ip link set eth0 up',
      'ip route add default via 10.244.1.1',
    ].join(' && '));
    const echoJs = `/tmp/${ctx.name}-echo.cjs`;
    const clientJs = `/tmp/${ctx.name}-client.cjs`;
    writeFileSync(echoJs, ECHO_JS);
    writeFileSync(clientJs, CLIENT_JS);
    const port: PortSpec = { name: 'echo', port: 80, target: 8080 };
    const objects: Array<[Resource, WireObject]> = [
      ['configmaps', cm({ scheduler: 'rr' })],
      ['services', svc('echo', VIP, [port])],
      ['endpointslices', slice('echo-a', 'echo', ['10.244.1.5', '10.244.1.6'], [port])],
    ];
    const line = (sched: string) => `TCP  10.96.0.10:80 ${sched} -> 10.244.1.5:8080 Masq 1 -> 10.244.1.6:8080 Masq 1`;
    let server: Child | undefined;
    let client: Child | undefined;
    try {
      return await withAgent(ctx, objects, async (a, api) => {
        const start = await until(ctx, { services: [line('rr')], vips: [VIP32] }, performance.now());
        server = nodeIn(be, echoJs, ['8080']);
        await server.line((l) => l.event === 'listening', 'echo server listening');
        client = nodeIn(ctx, clientJs, [VIP, '80', '200']);
        const c = client;
        const connected = await c.line((l) => l.event === 'connected', 'client connected');
        const connectedAt = performance.now();
        const echoed = () => c.lines.filter((l) => l.event === 'echo').length;
        const echoes = (n: number, what: string) => c.line((l) => l.event === 'echo' && (l.n as number) >= n, what);
        await echoes(3, 'first echoes');
        const dests = async () => (await ctx.kernel.dumpTable()).services.flatMap((e) =>
          e.destinations.map((d) => ({ dest: `${d.address}:${d.port}`, active: d.activeConns, inactive: d.inactiveConns })));
        const switches = [];
        const opsMark = a.ops.length;
        for (const sched of ['lc', 'sh', 'rr']) {
          const before = echoed();
          const s = await step(ctx, a, `ConfigMap scheduler ${sched}`, () => {
            api.update('configmaps', cm({ scheduler: sched }));
          }, { services: [line(sched)], vips: [VIP32] });
          // The one connection keeps carrying messages under the new scheduler.
          await echoes(before + 3, `echoes after switching to ${sched}`);
          switches.push({ ...s, echoedBefore: before, echoedAfter: echoed(), dests: await dests() });
        }
        // The kernel folds per-CPU counters into the dumped stats every 2 s.
        const wait = 4500 - (performance.now() - connectedAt);
        if (wait > 0) await sleep(wait);
        const [entry] = (await ctx.kernel.dumpTable()).services;
        const stats = { serviceConns: Number(entry?.service.stats.conns), dests: await dests() };
        /** Every op from the first switch to now (the steps' own lists end when each state is reached). */
        const switchOps = a.ops.slice(opsMark).map((o) => o.op);
        c.proc.stdin!.write('stop\n');
        const final = await c.line((l) => l.event === 'final', 'client totals');
        return {
          start: start.converged,
          connected,
          switches,
          switchOps,
          stats,
          final,
          clientEvents: c.lines.filter((l) => l.event !== 'echo'),
          serverEvents: server.lines,
          stderr: { client: c.stderr(), server: server.stderr() },
          problems: problems(a.log),
        };
      });
    } finally {
      await Promise.all([client?.kill(), server?.kill()]);
      rmSync(echoJs, { force: true });
      rmSync(clientJs, { force: true });
    }
  },
};

// ---- 6. API server away --------------------------------------------------------------------------

const apiAway: Scenario = {
  name: 'agent: the API server goes away and comes back with a change',
  async run(ctx) {
    const objects: Array<[Resource, WireObject]> = [
      ['services', svc('web', VIP, [HTTP])], ['endpointslices', slice('web-a', 'web', ['10.244.1.5', '10.244.2.6'], [HTTP])],
    ];
    return withAgent(ctx, objects, async (a, api) => {
      const start = await until(ctx, { services: ['TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1'], vips: [VIP32] }, performance.now());
      const before = saved(ctx);
      const addrsBefore = addrs(ctx);
      const syncMark = a.syncs.length;
      const opsMark = a.ops.length;
      const logMark = a.log.length;
      await api.stop();
      const stoppedAt = performance.now();
      // Made while the server is away: the agent can only learn of it once the server is back.
      api.update('endpointslices', slice('web-a', 'web', ['10.244.1.5', '10.244.2.6', '10.244.3.7'], [HTTP]));
      // Away for at least 3 s and two full syncs.
      const awaySyncs = await fullSyncs(a, 2);
      await sleep(3000 - (performance.now() - stoppedAt));
      const away = {
        ms: Math.round(performance.now() - stoppedAt),
        syncs: a.syncs.slice(syncMark).map(({ full, written, failed, result }) => ({ full, written, failed, result })),
        fullSyncs: awaySyncs.length,
        ops: a.ops.slice(opsMark).map((o) => o.op),
        unchanged: saved(ctx) === before,
        addrs: addrs(ctx),
        informerFailures: a.log.slice(logMark).filter((e) => e.msg === 'informer failed, retrying').length,
      };
      const back = await step(ctx, a, 'API server back', () => api.start().then(() => undefined), {
        services: ['TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1 -> 10.244.3.7:8080 Masq 1'],
        vips: [VIP32],
      });
      // The slice's watch may be back before the other three (each retries on its own jittered backoff).
      const reopened = () => a.log.filter((e) => e.msg === 'watch re-established').length;
      await bounded((async () => { while (reopened() < 4) await sleep(20); })(), WAIT_MS, '').catch(() => undefined);
      return {
        start: start.converged,
        addrsBefore,
        away,
        back,
        reestablished: reopened(),
        openWatches: api.openWatches,
        errors: a.log.filter((e) => e.level === 'error').map((e) => e.msg),
      };
    });
  },
};

export const scenarios: Scenario[] = [lifecycle, drift, foreign, restart('annotation'), restart('ConfigMap'), liveConnection, apiAway];
