// Network programming latency on a real kernel (runs inside vm/run): the agent (startAgent, source
// kube, the real @kubernetes/client-node) against the test API server in this process, N Services × M
// endpoints. Once the first sync is done, U EndpointSlice updates are written at R per second to
// random Services, each swapping one endpoint for an address unique to that update. The agent's
// kernel is wrapped: when an apply() resolves (every message acknowledged by the kernel), each
// addDestination in it stamps its update as programmed. Latency = that stamp minus the moment the
// update was written to the API server: no polling, so no polling bias. The agent's own
// kubeproxy_network_programming_duration_seconds histogram (agent receipt to kernel) is printed
// beside it, as are the sync and op counts, and at the end the kernel is checked against the API.
// With several --ipvs-min-sync-period values the agent is run once for each, one after the other, on
// the same kernel: the later ones start onto a programmed table (the ops they write at start show).
// Usage: node build/bench/latency.js [services=1000] [endpoints=10] [updates=200] [perSecond=4] [minSyncMs=1000[,0...]]

import { writeFileSync } from 'node:fs';
import { startAgent } from '../lib/agent.js';
import { serviceKey } from '../lib/kernel/ids.js';
import { NetlinkKernel } from '../lib/kernel/netlink.js';
import { silentLogger } from '../lib/log.js';
import { TestApiServer } from '../spec/support/apiserver.js';
import { endpointSlice, node, service } from '../spec/support/kube-fixtures.js';

const args = process.argv.slice(2);
const [N = 1000, M = 10, U = 200, RATE = 4] = args.slice(0, 4).map(Number);
const MIN_SYNC_MS = (args[4] ?? '1000').split(',').map(Number);
const NODE = 'bench-node';
const WAIT_MS = 300_000;
const vip = (i: number) => `10.96.${i >> 8}.${i & 0xff}`;
const base = (i: number) => Array.from({ length: M }, (_, j) => `10.${128 + (i >> 8)}.${i & 0xff}.${j + 1}`);
/** The endpoint address update u brings: unique to it. */
const marker = (u: number) => `10.250.${u >> 8}.${u & 0xff}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const s = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;

async function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done after ${WAIT_MS} ms`)), WAIT_MS)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The q-quantile (nearest rank) of sorted xs. */
const quantile = (xs: number[], q: number) => xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(q * xs.length) - 1))];

/** A Prometheus histogram's cumulative buckets, as { le: count }. */
type Buckets = Map<number, number>;

/** The smallest bucket bound holding the q-quantile of the observations between two readings. */
function bucketQuantile(before: Buckets, after: Buckets, q: number): string {
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  for (const [le, count] of after) if (count - (before.get(le) ?? 0) >= q * total) return le === Infinity ? '+Inf' : `<= ${le} s`;
  return '-';
}

async function main() {
  const api = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
  api.create('nodes', node(NODE));
  const current = new Map<number, string[]>();
  for (let i = 0; i < N; i++) {
    current.set(i, base(i));
    api.create('services', service(`s${i}`, 'default', vip(i), 80));
    api.create('endpointslices', endpointSlice(`s${i}-a`, `s${i}`, base(i)));
  }
  const kubeconfig = '/tmp/kipvs-latency.kubeconfig';
  api.writeKubeconfig(kubeconfig);
  console.log(`network programming latency on Linux ${process.env.KIPVS_KERNEL_RELEASE ?? ''} (${process.env.KIPVS_KERNEL_MODE ?? 'host'}): ` +
    `${N} services x ${M} endpoints, ${U} EndpointSlice updates at ${RATE}/s to random services`);
  const writtenAt = new Map<string, number>();
  let next = 0;
  try {
    for (const minSync of MIN_SYNC_MS) {
      const updates = Array.from({ length: U }, () => next++);
      if (!(await churn(api, kubeconfig, current, writtenAt, updates, minSync))) process.exitCode = 1;
    }
  } finally {
    await api.stop();
    writeFileSync(kubeconfig, '');
  }
}

/** One agent with --ipvs-min-sync-period `minSync`: started, churned by `updates`, checked, stopped. */
async function churn(api: TestApiServer, kubeconfig: string, current: Map<number, string[]>, writtenAt: Map<string, number>,
  updates: number[], minSync: number): Promise<boolean> {
  // The kernel, wrapped before the agent sees it: each update's marker stamped when its apply resolves.
  const kernel = await NetlinkKernel.open();
  const programmedAt = new Map<string, number>();
  const counts = { applies: 0, ops: 0, failed: 0 };
  const apply = kernel.apply.bind(kernel);
  kernel.apply = async (ops) => {
    const result = await apply(ops);
    const t = performance.now();
    counts.applies++;
    counts.ops += ops.length;
    counts.failed += result.errors.length;
    const failed = new Set(result.errors.map((e) => e.index));
    ops.forEach((op, i) => {
      if (op.kind === 'addDestination' && !failed.has(i) && writtenAt.has(op.destination.address)) programmedAt.set(op.destination.address, t);
    });
    return result;
  };

  console.log(`  --ipvs-min-sync-period ${minSync} ms:`);
  const t0 = performance.now();
  const agent = await startAgent({
    source: 'kube', kubeconfig, nodeName: NODE, configMap: 'kube-system/kipvs', overrides: {},
    syncPeriodMs: 30_000, minSyncPeriodMs: minSync, logger: silentLogger, kernel,
  });
  try {
    await bounded(agent.ready, 'the agent\'s first sync');
    const first = agent.reconciler.lastReport!;
    console.log(`    agent start to first sync done: ${s(performance.now() - t0)} (the sync itself ${s(first.ms)}, ${first.written} ops, ${first.failed} refused)`);

    const histogram = async (): Promise<Buckets> => {
      const got = await agent.metrics.registry.getSingleMetric('kubeproxy_network_programming_duration_seconds')!.get();
      return new Map((got.values as Array<{ metricName?: string; labels: Record<string, string | number>; value: number }>)
        .filter((v) => v.metricName?.endsWith('_bucket')).map((v) => [v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), v.value]));
    };
    const before = await histogram();
    const countsBefore = { ...counts };

    // Update u at start + u/RATE seconds (written late if the event loop is busy, and stamped then).
    let seed = 1 + updates[0];
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const start = performance.now();
    for (const [n, u] of updates.entries()) {
      const wait = start + (n * 1000) / RATE - performance.now();
      if (wait > 0) await sleep(wait);
      const k = Math.floor(rnd() * N);
      const eps = [...current.get(k)!];
      eps[u % M] = marker(u);
      current.set(k, eps);
      writtenAt.set(marker(u), performance.now());
      api.update('endpointslices', endpointSlice(`s${k}-a`, `s${k}`, eps));
    }
    const churnEnd = performance.now();
    // Every update programmed, or the bound runs out (an update overtaken by a later one to the same
    // Service before a sync never reaches the kernel: counted as superseded, not as a latency).
    const live = () => new Set([...current.values()].flat());
    const superseded = () => { const l = live(); return updates.filter((u) => !l.has(marker(u)) && !programmedAt.has(marker(u))).length; };
    const deadline = performance.now() + 60_000;
    while (programmedAt.size + superseded() < updates.length && performance.now() < deadline) await sleep(50);

    const lat = [...programmedAt].map(([m, t]) => t - writtenAt.get(m)!).sort((a, b) => a - b);
    const after = await histogram();
    const missing = updates.length - lat.length - superseded();
    console.log(`    ${updates.length} updates written in ${s(churnEnd - start)}; programmed ${lat.length}, superseded ${superseded()}, ` +
      `missing ${missing}; ${counts.applies - countsBefore.applies} kernel batches, ${counts.ops - countsBefore.ops} ops, ${counts.failed - countsBefore.failed} refused`);
    if (lat.length) {
      console.log(`    API write -> kernel programmed: p50 ${s(quantile(lat, 0.5))}, p90 ${s(quantile(lat, 0.9))}, p99 ${s(quantile(lat, 0.99))}, ` +
        `max ${s(lat[lat.length - 1])}, min ${s(lat[0])}`);
    }
    const observed = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
    console.log(`    the agent's own kubeproxy_network_programming_duration_seconds over the churn (one per sync): ${observed} observations, ` +
      `p50 ${bucketQuantile(before, after, 0.5)}, p99 ${bucketQuantile(before, after, 0.99)}`);

    // The kernel against the API: every Service's destinations are its slice's endpoints.
    const table = await kernel.dumpTable();
    const byVip = new Map(table.services.map((sv) => [serviceKey(sv.service), sv.destinations.map((d) => d.address).sort().join(',')]));
    let wrong = 0;
    for (const [i, eps] of current) if (byVip.get(`TCP/${vip(i)}:80`) !== [...eps].sort().join(',')) wrong++;
    console.log(`    kernel matches the API afterwards: ${wrong === 0 ? 'yes' : `NO, ${wrong} services differ`} (${N} services)`);
    return wrong === 0 && missing === 0;
  } finally {
    await agent.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
