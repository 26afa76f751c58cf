// Native benchmark with the in-memory kernel: N Services × M endpoints. Prints the pure desired-state
// + diff time, a cold sync, what a no-change sync writes, what one endpoint change costs, 1,000 random
// endpoint changes, and peak RSS. Usage: node build/bench/native.js [services=10000] [endpoints=10]

import { FakeKernel } from '../lib/kernel/fake.js';
import { serviceKey } from '../lib/kernel/ids.js';
import { DEFAULT_CONFIG } from '../lib/proxy/config.js';
import { desiredForService, type DesiredVirtualServer } from '../lib/proxy/desired.js';
import { diff, observedFromKernel, type DesiredState } from '../lib/proxy/diff.js';
import { Reconciler } from '../lib/proxy/reconciler.js';
import { MemorySource, service, slice } from '../spec/support/memory-source.js';

const [N = 10000, M = 10] = process.argv.slice(2).map(Number);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const http = [{ name: 'http', port: 80 }];
const backend = [{ name: 'http', port: 8080 }];
const vip = (i: number) => `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;
/** Endpoint j of service i: unique within the service (j < 100, i < 65536). */
const endpoints = (i: number, m: number) => Array.from({ length: m }, (_, j) => `10.${128 + j}.${(i >> 8) & 0xff}.${i & 0xff}`);

const ms = (t0: number) => performance.now() - t0;
let peak = 0;
const sample = () => (peak = Math.max(peak, process.memoryUsage().rss));

async function main() {
  const source = new MemorySource();
  const kernel = new FakeKernel();
  const rec = new Reconciler({ kernel, source, logger: quiet });
  await source.start((c) => rec.noteChanges(c));
  const svcs = Array.from({ length: N }, (_, i) => service(`s${i}`, vip(i), http));
  const slices = Array.from({ length: N }, (_, i) => slice(`s${i}`, 'a', endpoints(i, M), backend));
  for (let i = 0; i < N; i++) source.put(svcs[i], slices[i]);
  sample();

  let t0 = performance.now();
  await rec.sync();
  const cold = ms(t0);
  const coldOps = kernel.counters.messages;
  sample();

  // Pure desired state + diff over everything, against a kernel already in sync.
  const observed = observedFromKernel(await kernel.dumpTable(), await kernel.listAddresses('kube-ipvs0'));
  t0 = performance.now();
  const desired: DesiredState = { services: new Map(), addresses: new Map() };
  for (let i = 0; i < N; i++) {
    const r = desiredForService(svcs[i], [slices[i]], DEFAULT_CONFIG);
    for (const v of r.virtualServers as DesiredVirtualServer[]) desired.services.set(serviceKey(v.service), v);
    for (const a of r.addresses) desired.addresses.set(a.address, a);
  }
  const fullOps = diff(desired, observed, 'kube-ipvs0');
  const pure = ms(t0);
  sample();

  kernel.resetCounters();
  t0 = performance.now();
  await rec.sync();
  const noChange = ms(t0);
  const noChangeOps = kernel.counters.messages;
  t0 = performance.now();
  await rec.sync({ full: true });
  const noChangeFull = ms(t0);
  const noChangeFullOps = kernel.counters.messages;

  kernel.resetCounters();
  const i = N >> 1;
  t0 = performance.now();
  source.put(slice(`s${i}`, 'a', [...endpoints(i, M), '10.250.0.1'], backend));
  await rec.sync();
  const one = ms(t0);
  const oneOps = kernel.counters.messages;

  kernel.resetCounters();
  let seed = 1;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  t0 = performance.now();
  for (let c = 0; c < 1000; c++) {
    const k = Math.floor(rnd() * N);
    source.put(slice(`s${k}`, 'a', endpoints(k, M).slice(0, 1 + Math.floor(rnd() * M)), backend));
    await rec.sync();
  }
  const churn = ms(t0);
  const churnOps = kernel.counters.messages;
  sample();

  const maxRss = Math.max(peak, process.resourceUsage().maxRSS * 1024);
  const row = (label: string, value: string, target = '') => console.log(`  ${label.padEnd(46)} ${value.padStart(12)}  ${target}`);
  console.log(`native bench, in-memory kernel: ${N} services x ${M} endpoints`);
  row('cold sync (desired + dump + diff + apply)', `${cold.toFixed(0)} ms`, `${coldOps} ops`);
  row('full desired state + diff (pure)', `${pure.toFixed(1)} ms`, `target < 150 ms; ${fullOps.length} ops`);
  row('no-change sync', `${noChange.toFixed(2)} ms`, `${noChangeOps} ops (target 0)`);
  row('no-change full resync (with kernel dump)', `${noChangeFull.toFixed(0)} ms`, `${noChangeFullOps} ops (target 0)`);
  row('one endpoint change', `${one.toFixed(2)} ms`, `${oneOps} ops (target < 5 ms, O(1))`);
  row('1,000 random endpoint changes, one sync each', `${churn.toFixed(0)} ms`, `${churnOps} ops, ${(churn / 1000).toFixed(2)} ms/change`);
  row('peak RSS', `${(maxRss / 2 ** 20).toFixed(0)} MB`, 'target < 200 MB');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
