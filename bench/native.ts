// Native benchmark with the in-memory kernel: N Services × M endpoints, driven through the Reconciler
// the way the agent drives it; the bench keeps no state of its own beyond the Kubernetes objects in
// the source. Times come from the reconciler's SyncReport (and its phases); each timed figure is the
// median (min) of several runs after a warm-up, printed with its target and PASS/MISS. Peak RSS is the
// process's own (resourceUsage().maxRSS). The heap after GC is then split into what the agent holds,
// the Kubernetes objects, and the in-memory kernel's table (which in production lives in the kernel).
// Usage: node build/bench/native.js [services=10000] [endpoints=10] [runs=5]

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { V1Node } from '@kubernetes/client-node';
import { FakeKernel } from '../lib/kernel/fake.js';
import { Reconciler, type SyncReport } from '../lib/proxy/reconciler.js';
import { MemorySource, service, slice } from '../spec/support/memory-source.js';

const [N = 10000, M = 10, RUNS = 5] = process.argv.slice(2).map(Number);
const ONE_CHANGE_RUNS = 4 * RUNS;
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const http = [{ name: 'http', port: 80 }];
const backend = [{ name: 'http', port: 8080 }];
const vip = (i: number) => `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;
/** Endpoint j of service i: unique within the service (j < 100, i < 65536). */
const endpoints = (i: number, m: number) => Array.from({ length: m }, (_, j) => `10.${128 + j}.${(i >> 8) & 0xff}.${i & 0xff}`);
/** A Node update: the reconciler recomputes every Service (node settings apply to all of them). */
const node = (run: number): V1Node => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'bench', labels: { run: `${run}` } } });

// gc() for the heap figures, without asking for --expose-gc on the command line.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapAfterGc = () => (gc(), gc(), process.memoryUsage().heapUsed);
const MB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 0)} ms`;
const timing = (xs: number[]) => `${ms(median(xs))} (${ms(Math.min(...xs))}..${ms(Math.max(...xs))})`;
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');
const row = (label: string, value: string, note = '') => console.log(`  ${label.padEnd(44)} ${value.padStart(20)}  ${note}`);

interface Env {
  source?: MemorySource;
  kernel?: FakeKernel;
  reconciler?: Reconciler;
}

async function main() {
  const env = await setup();
  await measure(env.source!, env.kernel!, env.reconciler!);
  await heapBreakdown(env);
}

/** The source filled with N Services and their slices, an empty kernel, a reconciler over both. */
async function setup(): Promise<Env> {
  const source = new MemorySource();
  const kernel = new FakeKernel();
  const env: Env = { source, kernel, reconciler: new Reconciler({ kernel, source, logger: quiet }) };
  await source.start((c) => env.reconciler?.noteChanges(c));
  for (let i = 0; i < N; i++) source.put(service(`s${i}`, vip(i), http), slice(`s${i}`, 'a', endpoints(i, M), backend));
  return env;
}

async function measure(source: MemorySource, kernel: FakeKernel, rec: Reconciler) {
  /** One sync: its report (the reconciler's own timing) and the messages the kernel received. */
  const sync = async (opts?: { full?: boolean }): Promise<SyncReport & { messages: number }> => {
    kernel.resetCounters();
    await rec.sync(opts);
    return { ...rec.lastReport!, messages: kernel.counters.messages };
  };
  /** The phases of one sync or, for several, the median of each. */
  const phases = (...rs: SyncReport[]) => {
    const m = (k: keyof SyncReport['phases']) => ms(median(rs.map((r) => r.phases[k])));
    return `desired ${m('desired')}, kernel read ${m('read')}, diff ${m('diff')}, apply ${m('apply')}`;
  };

  console.log(`native bench, in-memory kernel: ${N} services x ${M} endpoints; timings are median (min..max)`);
  const cold = await sync();
  row('cold sync', ms(cold.ms), `${cold.messages} ops; ${phases(cold)}`);

  const noChange = await sync();
  row('no-change sync: ops written', `${noChange.messages}`, `target 0  ${verdict(noChange.messages === 0)}`);
  const resync = await sync({ full: true });
  row('no-change full resync: ops written', `${resync.messages}`, `target 0  ${verdict(resync.messages === 0)}; ${ms(resync.ms)}: ${phases(resync)}`);

  // A Node change: every Service recomputed and diffed against the kept observation (no kernel read).
  const full: SyncReport[] = [];
  for (let run = 0; run <= RUNS; run++) {
    source.put(node(run));
    const r = await sync();
    if (r.messages !== 0) throw new Error(`a full recompute with nothing changed wrote ${r.messages} ops`);
    if (run > 0) full.push(r); // run 0 warms up
  }
  const fullMs = full.map((r) => r.ms);
  row(`full desired state + diff, ${RUNS} runs`, timing(fullMs), `target < 150 ms  ${verdict(median(fullMs) < 150)}; ${phases(...full)}`);

  // One endpoint added to one Service, from the source event to the end of the sync.
  const one: number[] = [];
  let oneOps = 0;
  for (let run = 0; run < 5 + ONE_CHANGE_RUNS; run++) {
    const i = (N >> 1) + run;
    kernel.resetCounters();
    const t0 = performance.now();
    source.put(slice(`s${i}`, 'a', [...endpoints(i, M), '10.250.0.1'], backend));
    await rec.sync();
    if (run >= 5) one.push(performance.now() - t0); // the first 5 warm up
    oneOps = Math.max(oneOps, kernel.counters.messages);
  }
  row(`one endpoint change, ${ONE_CHANGE_RUNS} runs`, timing(one), `target < 5 ms  ${verdict(median(one) < 5)}; ${oneOps} op(s) each`);

  let seed = 1;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  let churnOps = 0;
  const t0 = performance.now();
  for (let c = 0; c < 1000; c++) {
    const k = Math.floor(rnd() * N);
    source.put(slice(`s${k}`, 'a', endpoints(k, M).slice(0, 1 + Math.floor(rnd() * M)), backend));
    churnOps += (await sync()).messages;
  }
  const churn = performance.now() - t0;
  row('1,000 random endpoint changes, one sync each', ms(churn), `${churnOps} ops, ${ms(churn / 1000)}/change`);

  const peak = process.resourceUsage().maxRSS * 1024;
  row('peak RSS (the whole run)', MB(peak), `target < 200 MB  ${verdict(peak < 200 * 2 ** 20)}`);
}

/** The heap after GC, split by dropping one holder at a time. */
async function heapBreakdown(env: Env) {
  const total = heapAfterGc();
  await env.source!.stop();
  env.reconciler = undefined;
  const withoutAgent = heapAfterGc();
  env.kernel = undefined;
  const withoutKernel = heapAfterGc();
  env.source = undefined;
  const rest = heapAfterGc();
  row('heap after GC', MB(total), [
    `agent state ${MB(total - withoutAgent)}`,
    `in-memory kernel table ${MB(withoutAgent - withoutKernel)}`,
    `Kubernetes objects ${MB(withoutKernel - rest)}`,
    `runtime ${MB(rest)}`,
  ].join(', '));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
