// Real-kernel benchmark (runs inside vm/run): for each size, program N services × M destinations from
// empty with our batched client and with `ipvsadm -R` of the same rules, check both tables are
// identical, and time a full dump against `ipvsadm -Ln`. Prints the best times and, as the ratio, the
// median of the ratios within each round (the two tools taking turns to go first), so ratios compare
// like with like on a noisy machine.
// Usage: node build/bench/kernel.js [sizes=1000:3,5000:1 (services:rounds)] [destinations=10]

import { execFileSync, execSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { NetlinkKernel } from '../lib/kernel/netlink.js';
import type { KernelOp, VirtualServer } from '../lib/kernel/types.js';

const [sizesArg = '1000:3,5000:1', destsArg = '10'] = process.argv.slice(2);
const nDests = Number(destsArg);
const vip = (i: number) => `10.96.${i >> 8}.${i & 0xff}`;
const rip = (i: number, j: number) => `10.${128 + (i >> 8)}.${i & 0xff}.${j + 1}`;

function ops(nServices: number): KernelOp[] {
  const out: KernelOp[] = [];
  for (let i = 0; i < nServices; i++) {
    const service: VirtualServer = { family: 4, protocol: 'TCP', address: vip(i), port: 80, fwmark: 0, scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff, peName: '' };
    out.push({ kind: 'addService', service });
    for (let j = 0; j < nDests; j++) {
      out.push({ kind: 'addDestination', service, destination: { family: 4, address: rip(i, j), port: 8080, forward: 'masq', weight: 1, upperThreshold: 0, lowerThreshold: 0 } });
    }
  }
  return out;
}

function rules(nServices: number): string {
  const lines: string[] = [];
  for (let i = 0; i < nServices; i++) {
    lines.push(`-A -t ${vip(i)}:80 -s rr`);
    for (let j = 0; j < nDests; j++) lines.push(`-a -t ${vip(i)}:80 -r ${rip(i, j)}:8080 -m -w 1`);
  }
  return lines.join('\n') + '\n';
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const saved = () => execSync('ipvsadm -Sn', { maxBuffer: 1 << 28, encoding: 'utf8' }).split('\n').sort().join('\n');

async function main() {
  const kernel = await NetlinkKernel.open();
  console.log(`kernel bench on Linux ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()} (${process.env.KIPVS_KERNEL_MODE ?? 'host'})`);
  let identical = true;
  for (const spec of sizesArg.split(',')) {
    const [n, rounds = 1] = spec.split(':').map(Number);
    identical = (await size(kernel, n, rounds)) && identical;
  }
  await kernel.close();
  if (!identical) process.exitCode = 1;
}

/** Programs and dumps `nServices` × nDests both ways, prints the figures; whether the tables were identical. */
async function size(kernel: NetlinkKernel, nServices: number, nRounds: number): Promise<boolean> {
  const list = ops(nServices);
  const file = '/tmp/kipvs-bench.rules';
  writeFileSync(file, rules(nServices));
  const rounds: Array<{ ours: number; ipvsadm: number; dumpOurs: number; dumpIpvsadm: number }> = [];
  let identical = true;
  /** Our batch from empty, then both dumps of that table; its `ipvsadm -Sn`. */
  const kipvs = async (into: (typeof rounds)[0]) => {
    execFileSync('ipvsadm', ['-C']);
    let t0 = process.hrtime.bigint();
    const r = await kernel.apply(list);
    into.ours = ms(t0);
    if (r.errors.length) throw new Error(`our batch had ${r.errors.length} errors, first: ${r.errors[0].message}`);
    t0 = process.hrtime.bigint();
    const table = await kernel.dumpTable();
    into.dumpOurs = ms(t0);
    const entries = table.services.length + table.services.reduce((n, s) => n + s.destinations.length, 0);
    if (entries !== nServices * (nDests + 1)) throw new Error(`dump returned ${entries} entries`);
    t0 = process.hrtime.bigint();
    execSync('ipvsadm -Ln > /dev/null');
    into.dumpIpvsadm = ms(t0);
    return saved();
  };
  /** `ipvsadm -R` of the same rules from empty; its `ipvsadm -Sn`. */
  const restore = (into: (typeof rounds)[0]) => {
    execFileSync('ipvsadm', ['-C']);
    const t0 = process.hrtime.bigint();
    execSync(`ipvsadm -R < ${file}`);
    into.ipvsadm = ms(t0);
    return saved();
  };
  for (let round = 0; round < nRounds; round++) {
    const r = { ours: 0, ipvsadm: 0, dumpOurs: 0, dumpIpvsadm: 0 };
    // Who goes first alternates, so neither always meets the kernel right after the other's flush.
    if (round % 2 === 0) identical = (await kipvs(r)) === restore(r) && identical;
    else identical = restore(r) === (await kipvs(r)) && identical;
    rounds.push(r);
  }
  execFileSync('ipvsadm', ['-C']);

  const best = (k: keyof (typeof rounds)[0]) => Math.min(...rounds.map((r) => r[k]));
  const n = list.length;
  console.log(`  program ${nServices} services x ${nDests} destinations (${n} ops) from empty, best time of ${rounds.length} round(s), kipvs and ipvsadm -R taking turns to go first:`);
  console.log(`    kipvs batched netlink : ${best('ours').toFixed(0)} ms  (${((n / best('ours')) * 1000).toFixed(0)} ops/s)`);
  console.log(`    ipvsadm -R            : ${best('ipvsadm').toFixed(0)} ms`);
  /** The median of the ratios within each round (one round: its own), and each of them. */
  const ratio = (a: keyof (typeof rounds)[0], b: keyof (typeof rounds)[0]) => {
    const each = rounds.map((r) => r[a] / r[b]);
    const sorted = [...each].sort((x, y) => x - y);
    const mid = sorted.length >> 1;
    const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    return `${median.toFixed(2)}x median of the rounds' ratios (${each.map((x) => x.toFixed(2)).join(', ')})`;
  };
  console.log(`    ratio kipvs/ipvsadm   : ${ratio('ours', 'ipvsadm')}; target <= 0.70x`);
  console.log(`    tables identical (ipvsadm -Sn): ${identical}`);
  console.log(`  dump of all ${n} entries:`);
  console.log(`    kipvs dumpTable       : ${best('dumpOurs').toFixed(0)} ms`);
  console.log(`    ipvsadm -Ln           : ${best('dumpIpvsadm').toFixed(0)} ms`);
  console.log(`    ratio kipvs/ipvsadm   : ${ratio('dumpOurs', 'dumpIpvsadm')}`);
  console.log(`  rounds: ${JSON.stringify(rounds.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.round(v)]))))}`);
  return identical;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
