// Real-kernel benchmark (runs inside vm/run): for each size, program N services × M destinations from
// empty with our batched client and with `ipvsadm -R` of the same rules, check both tables are
// identical, and time a full dump against `ipvsadm -Ln`. Prints figures and ratios (best of the rounds,
// the two tools alternating within each round, so ratios compare like with like).
// Usage: node build/bench/kernel.js [sizes=1000:2,5000:1 (services:rounds)] [destinations=10]

import { execFileSync, execSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { NetlinkKernel } from '../lib/kernel/netlink.js';
import type { KernelOp, VirtualServer } from '../lib/kernel/types.js';

const [sizesArg = '1000:2,5000:1', destsArg = '10'] = process.argv.slice(2);
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
  for (let round = 0; round < nRounds; round++) {
    execFileSync('ipvsadm', ['-C']);
    let t0 = process.hrtime.bigint();
    const r = await kernel.apply(list);
    const ours = ms(t0);
    if (r.errors.length) throw new Error(`our batch had ${r.errors.length} errors, first: ${r.errors[0].message}`);
    t0 = process.hrtime.bigint();
    const table = await kernel.dumpTable();
    const dumpOurs = ms(t0);
    const entries = table.services.length + table.services.reduce((n, s) => n + s.destinations.length, 0);
    if (entries !== nServices * (nDests + 1)) throw new Error(`dump returned ${entries} entries`);
    t0 = process.hrtime.bigint();
    execSync('ipvsadm -Ln > /dev/null');
    const dumpIpvsadm = ms(t0);
    const mine = saved();

    execFileSync('ipvsadm', ['-C']);
    t0 = process.hrtime.bigint();
    execSync(`ipvsadm -R < ${file}`);
    const ipvsadm = ms(t0);
    identical &&= saved() === mine;
    rounds.push({ ours, ipvsadm, dumpOurs, dumpIpvsadm });
  }
  execFileSync('ipvsadm', ['-C']);

  const best = (k: keyof (typeof rounds)[0]) => Math.min(...rounds.map((r) => r[k]));
  const n = list.length;
  console.log(`  program ${nServices} services x ${nDests} destinations (${n} ops) from empty, best of ${rounds.length}:`);
  console.log(`    kipvs batched netlink : ${best('ours').toFixed(0)} ms  (${((n / best('ours')) * 1000).toFixed(0)} ops/s)`);
  console.log(`    ipvsadm -R            : ${best('ipvsadm').toFixed(0)} ms`);
  const perRound = (a: keyof (typeof rounds)[0], b: keyof (typeof rounds)[0]) => rounds.map((r) => (r[a] / r[b]).toFixed(2)).join(', ');
  console.log(`    ratio kipvs/ipvsadm   : ${(best('ours') / best('ipvsadm')).toFixed(2)}x  (target <= 0.70x; each round: ${perRound('ours', 'ipvsadm')})`);
  console.log(`    tables identical (ipvsadm -Sn): ${identical}`);
  console.log(`  dump of all ${n} entries:`);
  console.log(`    kipvs dumpTable       : ${best('dumpOurs').toFixed(0)} ms`);
  console.log(`    ipvsadm -Ln           : ${best('dumpIpvsadm').toFixed(0)} ms`);
  console.log(`    ratio kipvs/ipvsadm   : ${(best('dumpOurs') / best('dumpIpvsadm')).toFixed(2)}x  (each round: ${perRound('dumpOurs', 'dumpIpvsadm')})`);
  console.log(`  rounds: ${JSON.stringify(rounds.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.round(v)]))))}`);
  return identical;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
