// Native benchmark with the in-memory kernel: N Services × M endpoints, driven through the Reconciler
// the way the agent drives it; the bench keeps no state of its own beyond the Kubernetes objects in
// the source. With no size given it runs each size of SIZES in a child process of its own (so each
// peak RSS is that size's alone) and prints them side by side with the growth 10k/1k; with a size it
// runs that one and prints its rows. Times come from the reconciler's SyncReport (and its phases);
// repeated figures are the median (min..max) after a warm-up. Peak RSS is the process's own
// (resourceUsage().maxRSS), noted after each step so the step that raised it shows. The heap after
// GC is then split into what the agent holds, the Kubernetes objects and the in-memory kernel's table
// (which in production lives in the kernel).
// Usage: node build/bench/native.js [services [endpoints [runs]]]   (default: 1000, 5000, 10000 × 10)

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { V1Node } from '@kubernetes/client-node';
import { FakeKernel } from '../lib/kernel/fake.js';
import { silentLogger } from '../lib/log.js';
import { ZONE_LABEL } from '../lib/proxy/node.js';
import { Reconciler, type SyncReport } from '../lib/proxy/reconciler.js';
import { MemorySource, service, slice } from '../spec/support/memory-source.js';

const SIZES = [1000, 5000, 10000];
const ENDPOINTS = 10;
const RUNS = 5;
/** V8 flags of one more 10k child: old and young space capped, so V8 collects before garbage piles up (README). */
const CAPPED = ['--max-old-space-size=160', '--max-semi-space-size=2'];
const http = [{ name: 'http', port: 80 }];
const backend = [{ name: 'http', port: 8080 }];
const vip = (i: number) => `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;
/** Endpoint j of service i: unique within the service (j < 100, i < 65536). */
const endpoints = (i: number, m: number) => Array.from({ length: m }, (_, j) => `10.${128 + j}.${(i >> 8) & 0xff}.${i & 0xff}`);
/**
 * An object as the agent gets it from the API server: parsed from JSON. Built here with template
 * literals, its strings would be V8 cons strings (three or four heap objects per address instead of
 * one), which made the Kubernetes objects and everything sharing their strings larger than in production.
 */
const fromApi = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;
/** A Node moving to another zone: the reconciler recomputes every Service (none has topology hints, so nothing to write). */
const node = (run: number): V1Node => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'bench', labels: { [ZONE_LABEL]: `zone-${run}` } } });

const MB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 0)} ms`;
const timing = (xs: number[]) => `${ms(median(xs))} (${ms(Math.min(...xs))}..${ms(Math.max(...xs))})`;
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');
const peakRss = () => process.resourceUsage().maxRSS * 1024;

/** What one size measured: printed by the child, read back by the parent. */
interface Result {
  services: number;
  endpoints: number;
  rows: Array<[label: string, value: string, note: string]>;
  cold: { ms: number; ops: number };
  resync: { ms: number; ops: number };
  noChangeOps: number;
  recompute: number;
  one: { ms: number; ops: number };
  churn: { ms: number; ops: number };
  /** Peak RSS after each step, bytes. */
  peaks: Record<string, number>;
  heap: { total: number; agent: number; kernel: number; objects: number; runtime: number; rss: number };
}

interface Env {
  source?: MemorySource;
  kernel?: FakeKernel;
  reconciler?: Reconciler;
}

/** The source filled with N Services and their slices, an empty kernel, a reconciler over both. */
async function setup(n: number, m: number): Promise<Env> {
  const source = new MemorySource();
  const kernel = new FakeKernel();
  const env: Env = { source, kernel, reconciler: new Reconciler({ kernel, source, logger: silentLogger }) };
  await source.start((c) => env.reconciler?.noteChanges(c));
  for (let i = 0; i < n; i++) source.put(fromApi(service(`s${i}`, vip(i), http)), fromApi(slice(`s${i}`, 'a', endpoints(i, m), backend)));
  return env;
}

async function measure(n: number, m: number, runs: number): Promise<Result> {
  const peaks: Record<string, number> = { start: peakRss() };
  const env = await setup(n, m);
  peaks['API objects'] = peakRss();
  const r = await timings(env, n, m, runs, peaks);
  // Out of timings(), whose locals would keep every holder alive.
  const heap = await heapBreakdown(env);
  r.rows.push(['heap after GC', MB(heap.total), [
    `agent state ${MB(heap.agent)}`, `in-memory kernel table ${MB(heap.kernel)}`, `Kubernetes objects ${MB(heap.objects)}`, `runtime ${MB(heap.runtime)}`,
  ].join(', ') + `; RSS then ${MB(heap.rss)}`]);
  return { ...r, heap };
}

async function timings(env: Env, n: number, m: number, runs: number, peaks: Record<string, number>): Promise<Omit<Result, 'heap'>> {
  const { source, kernel } = env;
  const rec = env.reconciler!;
  const rows: Result['rows'] = [];
  const row = (label: string, value: string, note = '') => rows.push([label, value, note]);
  /** One sync: its report (the reconciler's own timing) and the messages the kernel received. */
  const sync = async (opts?: { full?: boolean }): Promise<SyncReport & { messages: number }> => {
    kernel!.resetCounters();
    await rec.sync(opts);
    return { ...rec.lastReport!, messages: kernel!.counters.messages };
  };
  /** The phases of one sync or, for several, the median of each. */
  const phases = (...rs: SyncReport[]) => {
    const med = (k: keyof SyncReport['phases']) => ms(median(rs.map((r) => r.phases[k])));
    return `desired ${med('desired')}, kernel read ${med('read')}, diff ${med('diff')}, apply ${med('apply')}`;
  };

  const cold = await sync();
  peaks['cold sync'] = peakRss();
  row('cold sync', ms(cold.ms), `${cold.messages} ops; ${phases(cold)}`);

  const noChange = await sync();
  row('no-change sync: ops written', `${noChange.messages}`, `target 0  ${verdict(noChange.messages === 0)}`);
  const resync = await sync({ full: true });
  peaks['full resync'] = peakRss();
  row('no-change full resync: ops written', `${resync.messages}`, `target 0  ${verdict(resync.messages === 0)}; ${ms(resync.ms)}: ${phases(resync)}`);

  // A Node zone change: every Service recomputed and diffed against the kept observation (no kernel read).
  const full: SyncReport[] = [];
  for (let run = 0; run <= runs; run++) {
    source!.put(node(run));
    const r = await sync();
    if (r.messages !== 0) throw new Error(`a full recompute with nothing changed wrote ${r.messages} ops`);
    if (r.phases.desired === 0 && r.phases.diff === 0) throw new Error('a Node zone change recomputed nothing');
    if (run > 0) full.push(r); // run 0 warms up
  }
  const fullMs = full.map((r) => r.ms);
  row(`full desired state + diff, ${runs} runs`, timing(fullMs), `target < 150 ms  ${verdict(median(fullMs) < 150)}; ${phases(...full)}`);
  peaks['full recomputes'] = peakRss();

  // One endpoint added to one Service, from the source event to the end of the sync.
  const one: number[] = [];
  let oneOps = 0;
  for (let run = 0; run < 5 + 4 * runs; run++) {
    const i = (n >> 1) + run;
    kernel!.resetCounters();
    const t0 = performance.now();
    source!.put(fromApi(slice(`s${i}`, 'a', [...endpoints(i, m), '10.250.0.1'], backend)));
    await rec.sync();
    if (run >= 5) one.push(performance.now() - t0); // the first 5 warm up
    oneOps = Math.max(oneOps, kernel!.counters.messages);
  }
  row(`one endpoint change, ${one.length} runs`, timing(one), `target < 5 ms  ${verdict(median(one) < 5)}; ${oneOps} op(s) each`);

  let seed = 1;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  let churnOps = 0;
  const t0 = performance.now();
  for (let c = 0; c < 1000; c++) {
    const k = Math.floor(rnd() * n);
    source!.put(fromApi(slice(`s${k}`, 'a', endpoints(k, m).slice(0, 1 + Math.floor(rnd() * m)), backend)));
    churnOps += (await sync()).messages;
  }
  const churn = performance.now() - t0;
  row('1,000 random endpoint changes, one sync each', ms(churn), `${churnOps} ops, ${ms(churn / 1000)}/change`);
  peaks['endpoint changes'] = peakRss();
  const peak = peakRss();
  row('peak RSS (the whole run)', MB(peak), `target < 200 MB  ${verdict(peak < 200 * 2 ** 20)}; after: ${Object.entries(peaks).map(([k, v]) => `${k} ${MB(v)}`).join(', ')}`);
  return {
    services: n, endpoints: m, rows, peaks,
    cold: { ms: cold.ms, ops: cold.messages }, resync: { ms: resync.ms, ops: resync.messages }, noChangeOps: noChange.messages,
    recompute: median(fullMs), one: { ms: median(one), ops: oneOps }, churn: { ms: churn, ops: churnOps },
  };
}

/** The heap after GC, split by dropping one holder at a time. */
async function heapBreakdown(env: Env): Promise<Result['heap']> {
  // gc() without asking for --expose-gc on the command line.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const heapAfterGc = () => (gc(), gc(), process.memoryUsage().heapUsed);
  const total = heapAfterGc();
  const rss = process.memoryUsage().rss;
  await env.source!.stop();
  env.reconciler = undefined;
  const withoutAgent = heapAfterGc();
  env.kernel = undefined;
  const withoutKernel = heapAfterGc();
  env.source = undefined;
  const runtime = heapAfterGc();
  return { total, agent: total - withoutAgent, kernel: withoutAgent - withoutKernel, objects: withoutKernel - runtime, runtime, rss };
}

function printRows(r: Result) {
  console.log(`native bench, in-memory kernel: ${r.services} services x ${r.endpoints} endpoints; timings are median (min..max)`);
  for (const [label, value, note] of r.rows) console.log(`  ${label.padEnd(44)} ${value.padStart(20)}  ${note}`);
}

/** One child process per size; then the growth table: each figure per size, per service, and 10k/1k. */
function growth() {
  const self = fileURLToPath(import.meta.url);
  const child = (n: number, flags: string[] = []) =>
    JSON.parse(execFileSync(process.execPath, [...flags, self, String(n), String(ENDPOINTS), String(RUNS), '--json'], { encoding: 'utf8', maxBuffer: 1 << 24 })) as Result;
  const results: Result[] = [];
  for (const n of SIZES) {
    const r = child(n);
    printRows(r);
    results.push(r);
  }
  const first = results[0];
  const last = results[results.length - 1];
  const label = (n: number) => `${n / 1000}k`;
  console.log(`growth, ${ENDPOINTS} endpoints per service, one child process per size:`);
  const cols = results.map((r) => label(r.services).padStart(22)).join('');
  console.log(`  ${'measure'.padEnd(36)}${cols}  ${`${label(last.services)}/${label(first.services)}`.padStart(8)}  (services x${last.services / first.services})`);
  const line = (name: string, value: ((r: Result) => number) | undefined, show: (r: Result) => string) => {
    const ratio = value ? `${(value(last) / value(first)).toFixed(1)}x` : '';
    console.log(`  ${name.padEnd(36)}${results.map((r) => show(r).padStart(22)).join('')}  ${ratio.padStart(8)}`);
  };
  const perService = (x: number, r: Result) => `${((x / r.services) * 1000).toFixed(1)} us/svc`;
  line('cold sync: time', (r) => r.cold.ms, (r) => `${ms(r.cold.ms)} ${perService(r.cold.ms, r)}`);
  line('cold sync: ops', (r) => r.cold.ops, (r) => `${r.cold.ops}`);
  line('no-change full resync: time', (r) => r.resync.ms, (r) => `${ms(r.resync.ms)} ${perService(r.resync.ms, r)}`);
  line('no-change sync + full resync: ops', undefined, (r) => `${r.noChangeOps}, ${r.resync.ops}`);
  line('full desired state + diff', (r) => r.recompute, (r) => `${ms(r.recompute)} ${perService(r.recompute, r)}`);
  line('one endpoint change: time', (r) => r.one.ms, (r) => `${ms(r.one.ms)}, ${r.one.ops} op`);
  line('1,000 random endpoint changes', (r) => r.churn.ms, (r) => `${ms(r.churn.ms)}, ${r.churn.ops} ops`);
  line('peak RSS', (r) => r.peaks['endpoint changes'], (r) => MB(r.peaks['endpoint changes']));
  line('heap after GC', (r) => r.heap.total, (r) => MB(r.heap.total));
  line('RSS after GC', (r) => r.heap.rss, (r) => MB(r.heap.rss));
  const big = results.find((r) => r.services === 10000);
  if (big) {
    const peak = big.peaks['endpoint changes'];
    console.log(`  targets at 10k: full desired + diff < 150 ms ${verdict(big.recompute < 150)}, one change < 5 ms ${verdict(big.one.ms < 5)}, ` +
      `no-change ops 0 ${verdict(big.noChangeOps + big.resync.ops === 0)}, peak RSS < 200 MB ${verdict(peak < 200 * 2 ** 20)}`);
  }
  const capped = child(last.services, CAPPED);
  const peak = capped.peaks['endpoint changes'];
  console.log(`  ${label(last.services)} again with node ${CAPPED.join(' ')}: peak RSS ${MB(peak)} (${verdict(peak < 200 * 2 ** 20)} < 200 MB), ` +
    `cold sync ${ms(capped.cold.ms)}, full desired + diff ${ms(capped.recompute)}, 1,000 changes ${ms(capped.churn.ms)}, heap after GC ${MB(capped.heap.total)}`);
}

async function main() {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const [n, m = ENDPOINTS, runs = RUNS] = args.filter((a) => a !== '--json').map(Number);
  if (n === undefined) return growth();
  const r = await measure(n, m, runs);
  if (json) process.stdout.write(JSON.stringify(r));
  else printRows(r);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
