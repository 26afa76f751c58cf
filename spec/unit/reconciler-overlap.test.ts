// The reconciler and runner together while a full sync's kernel read is held open: changes are written
// beside the read instead of waiting for it, and the full sync that follows writes only what the kernel
// really lacks (drift), never what those changes already wrote: no spurious op, no EEXIST/ENOENT.
import { FakeKernel } from '../../lib/kernel/fake.js';
import { FaultyKernel } from '../../lib/kernel/faulty.js';
import { describeOp, destinationKey, serviceKey } from '../../lib/kernel/ids.js';
import type { IpvsTable, KernelOp } from '../../lib/kernel/types.js';
import type { NftGlobals, NftPart } from '../../lib/nft/model.js';
import { Reconciler, type Firewall } from '../../lib/proxy/reconciler.js';
import { FakeClock, SyncRunner } from '../../lib/proxy/runner.js';
import { captureLogger } from '../support/logger.js';
import { MemorySource, service, slice } from '../support/memory-source.js';

const http = [{ name: 'http', port: 80 }];
const backend = [{ name: 'http', port: 8080 }];
const PERIOD = 30_000;

interface HeldDump {
  /** The table when the dump was asked for. */
  before: IpvsTable;
  resolve(table: IpvsTable): void;
  reject(err: Error): void;
}

/** Services s0..s3, each with two endpoints, programmed by a first sync; dumps are held from then on. */
async function setup(opts: { firewall?: Firewall } = {}) {
  const fake = new FakeKernel();
  const held: HeldDump[] = [];
  let holding = false;
  const realDump = fake.dumpTable.bind(fake);
  fake.dumpTable = () => {
    if (!holding) return realDump();
    return new Promise<IpvsTable>((resolve, reject) => held.push({ before: fake.table(), resolve, reject }));
  };
  const kernel = new FaultyKernel(fake, { seed: 1, errnos: ['ENOMEM'] });
  /** Every apply, as describeOp lines, with whether a dump was held open at the time. */
  const writes: { ops: string[]; beside: boolean }[] = [];
  const apply = kernel.apply.bind(kernel);
  kernel.apply = (ops: readonly KernelOp[]) => {
    writes.push({ ops: ops.map(describeOp), beside: held.length > 0 });
    return apply(ops);
  };
  const source = new MemorySource();
  const clock = new FakeClock(0);
  const logger = captureLogger();
  const rec = new Reconciler({ kernel, source, logger, graceful: { maxWaitMs: 0, clock }, firewall: opts.firewall });
  const runner = new SyncRunner((reason, overlap) => rec.sync({ full: reason !== 'requested', overlap }), { minInterval: 0, maxInterval: PERIOD, clock });
  void source.start((changes) => {
    rec.noteChanges(changes);
    runner.run();
  });
  for (let i = 0; i < 4; i++) source.put(service(`s${i}`, `10.96.0.${i + 1}`, http), slice(`s${i}`, 'a', [`10.244.${i}.1`, `10.244.${i}.2`], backend));
  /** Lets due timers fire and the fake kernel's turns run until everything started has settled. */
  const settle = async () => {
    for (let i = 0; i < 10; i++) {
      await clock.advance(0);
      for (let j = 0; j < 10; j++) await new Promise((r) => setImmediate(r));
    }
  };
  await settle();
  expect(rec.lastReport?.full).toBe(true);
  holding = true;
  writes.length = 0;
  /** Starts the periodic full sync and lets it run up to its (held) dump. */
  const periodic = async () => {
    await clock.advance(PERIOD);
    await settle();
    expect(held).toHaveLength(1);
  };
  /** Holds the next dumps open (until released), or stops holding them. */
  const hold = (on = true) => (holding = on);
  /** Ends the held dump with `table`, then lets the full sync finish. */
  const release = async (table: IpvsTable) => {
    holding = false;
    held.shift()!.resolve(table);
    await settle();
  };
  return { fake, kernel, held, writes, source, clock, rec, runner, settle, periodic, hold, release, logger };
}

/** The table as sorted 'KEY scheduler -> dest:port wN' lines. */
const lines = (t: IpvsTable) =>
  t.services.flatMap(({ service: s, destinations }) => [`${serviceKey(s)} ${s.scheduler}`, ...destinations.map((d) => `${serviceKey(s)} -> ${destinationKey(d)} w${d.weight}`)]).sort();
const vips = (k: FakeKernel) => k.localAddresses().filter((a) => a.ifname === 'kube-ipvs0').map((a) => a.address).sort();

/** What one sync from scratch programs for the source as it stands: the table every race must end in. */
async function reference(source: MemorySource) {
  const fake = new FakeKernel();
  const rec = new Reconciler({ kernel: fake, source, logger: captureLogger() });
  for (const key of source.snapshot().services.keys()) rec.noteChanges([{ kind: 'Service', key }]);
  for (const key of source.snapshot().endpointSlices.keys()) rec.noteChanges([{ kind: 'EndpointSlice', key }]);
  expect(await rec.sync()).toBe('ok');
  return { table: lines(fake.table()), vips: vips(fake) };
}

const s3 = { family: 4, protocol: 'TCP', address: '10.96.0.4', port: 80, fwmark: 0 } as const;

test.each(['before', 'after'] as const)(
  'an endpoint change during a held full-sync dump is written before the dump ends; the full sync then writes only the drift (dump taken %s the change)',
  async (when) => {
    const t = await setup();
    // Drift elsewhere, before the dump: someone deleted a real server of s3.
    t.fake.inject({ kind: 'deleteDestination', service: s3, destination: { family: 4, address: '10.244.3.2', port: 8080 } });
    await t.periodic();
    t.source.put(slice('s0', 'a', ['10.244.0.1', '10.244.0.2', '10.244.0.3'], backend));
    await t.settle();
    expect(t.held).toHaveLength(1); // the dump is still open...
    expect(lines(t.fake.table())).toContain('TCP/10.96.0.1:80 -> 10.244.0.3:8080 w1'); // ...and the change is in the kernel
    expect(t.writes).toEqual([{ ops: ['addDestination TCP/10.96.0.1:80 -> 10.244.0.3:8080'], beside: true }]);
    expect(t.rec.lastReport?.full).toBe(false);

    await t.release(when === 'before' ? t.held[0]!.before : t.fake.table());
    expect(t.rec.lastReport?.full).toBe(true);
    expect(t.writes.slice(1)).toEqual([{ ops: ['addDestination TCP/10.96.0.4:80 -> 10.244.3.2:8080'], beside: false }]);
    expect(t.fake.counters.refused).toBe(0);
    expect(t.runner.status().consecutiveFailures).toBe(0);
    const want = await reference(t.source);
    expect(lines(t.fake.table())).toEqual(want.table);
    expect(vips(t.fake)).toEqual(want.vips);
    // And the next full sync agrees: nothing left to write.
    await t.clock.advance(PERIOD);
    await t.settle();
    expect(t.writes).toHaveLength(2);
    await t.runner.stop();
  },
);

test('changes to the same Service racing the dump, a Service created and one deleted: the right table, nothing refused', async () => {
  const t = await setup();
  await t.periodic();
  t.source.put(slice('s0', 'a', ['10.244.0.2', '10.244.0.7'], backend));
  await t.settle();
  t.source.put(slice('s0', 'a', ['10.244.0.7', '10.244.0.8'], backend)); // a second partial sync, same Service
  t.source.delete(service('s1', '10.96.0.2', http), slice('s1', 'a', [], backend));
  t.source.put(service('s4', '10.96.0.5', http), slice('s4', 'a', ['10.244.4.1'], backend));
  await t.settle();
  expect(t.held).toHaveLength(1);
  expect(t.writes.every((w) => w.beside)).toBe(true);
  const beside = t.writes.length;
  const want = await reference(t.source);
  expect(lines(t.fake.table())).toEqual(want.table); // all of it programmed while the dump was open

  await t.release(t.held[0]!.before); // a dump of s0's old endpoints, with s1 and without s4
  expect(t.rec.lastReport?.full).toBe(true);
  expect(t.writes.slice(beside)).toEqual([]);
  expect(t.fake.counters.refused).toBe(0);
  expect(t.runner.status().consecutiveFailures).toBe(0);
  expect(lines(t.fake.table())).toEqual(want.table);
  expect(vips(t.fake)).toEqual(want.vips);
  await t.runner.stop();
});

test('a delete during the read: a virtual server the dump skipped (as the kernel\'s positional dump does) is not added again', async () => {
  const t = await setup();
  await t.periodic();
  t.source.delete(service('s1', '10.96.0.2', http));
  await t.settle();
  expect(t.writes.map((w) => w.ops).flat()).toContain('deleteService TCP/10.96.0.2:80');
  // IPVS dumps services by position: deleting one before the dump's cursor makes it skip the next.
  const skipped = t.held[0]!.before;
  await t.release({ services: skipped.services.filter((s) => s.service.address !== '10.96.0.3') });
  expect(t.writes.filter((w) => !w.beside)).toEqual([]);
  expect(t.fake.counters.refused).toBe(0);
  expect(t.runner.status().consecutiveFailures).toBe(0);
  expect(lines(t.fake.table())).toEqual((await reference(t.source)).table);
  await t.runner.stop();
});

test('a kernel fault in the partial sync beside the read, and one in the dump itself: both converge', async () => {
  const t = await setup();
  await t.periodic();
  t.kernel.setFaultRate(1);
  t.source.put(slice('s0', 'a', ['10.244.0.1', '10.244.0.2', '10.244.0.3'], backend));
  await t.settle();
  t.kernel.setFaultRate(0);
  expect(t.runner.status().consecutiveFailures).toBe(1);
  expect(lines(t.fake.table())).not.toContain('TCP/10.96.0.1:80 -> 10.244.0.3:8080 w1');
  // The dump shows the real server absent, as the kept observation does: the full sync writes it.
  await t.release(t.fake.table());
  expect(t.writes.filter((w) => !w.beside)).toEqual([{ ops: ['addDestination TCP/10.96.0.1:80 -> 10.244.0.3:8080'], beside: false }]);
  expect(t.runner.status().consecutiveFailures).toBe(0);

  // Now the dump fails while a change is written beside it: the full sync is retried and converges.
  t.hold();
  await t.periodic();
  t.source.put(slice('s3', 'a', ['10.244.3.9'], backend));
  await t.settle();
  expect(lines(t.fake.table())).toContain('TCP/10.96.0.4:80 -> 10.244.3.9:8080 w1');
  t.hold(false);
  t.held.shift()!.reject(Object.assign(new Error('dump: ENOBUFS'), { code: 'ENOBUFS' }));
  await t.settle();
  expect(t.runner.status().consecutiveFailures).toBe(1);
  await t.clock.advance(1000); // the retry (retryInterval 1 s), a full sync
  await t.settle();
  expect(t.runner.status().consecutiveFailures).toBe(0);
  expect(t.rec.lastReport?.full).toBe(true);
  expect(t.fake.counters.refused).toBe(0);
  expect(lines(t.fake.table())).toEqual((await reference(t.source)).table);
  await t.runner.stop();
});

test('a partial sync beside the read of a full sync that found a new node address sends the whole nftables table first, with no error', async () => {
  // As lib/nft/nftables.ts: a partial update under other globals than the table in force is refused (needsFull).
  let inForce: string | undefined;
  let probe = () => false;
  const calls: { full: boolean; parts: number; kernelHadIt: boolean }[] = [];
  const firewall: Firewall = {
    async update(globals: NftGlobals, parts: ReadonlyMap<string, NftPart | undefined>, { full }: { full?: boolean }) {
      const g = JSON.stringify(globals);
      if (!full && g !== inForce) throw Object.assign(new Error('nftables: inet kipvs needs a full update first'), { needsFull: true });
      calls.push({ full: !!full, parts: parts.size, kernelHadIt: probe() });
      inForce = g;
      return true;
    },
  };
  const t = await setup({ firewall });
  probe = () => lines(t.fake.table()).includes('TCP/10.96.0.1:80 -> 10.244.0.3:8080 w1');
  await t.fake.ensureDummyLink('eth0');
  t.fake.inject({ kind: 'addAddress', ifname: 'eth0', address: { family: 4, address: '192.168.1.10', prefixLength: 24 } });
  calls.length = 0;
  await t.periodic(); // reads the node's addresses, then holds its dump
  t.source.put(slice('s0', 'a', ['10.244.0.1', '10.244.0.2', '10.244.0.3'], backend));
  await t.settle();
  expect(t.writes).toEqual([{ ops: ['addDestination TCP/10.96.0.1:80 -> 10.244.0.3:8080'], beside: true }]);
  // The whole table (4 virtual servers, 4 VIPs) under the new node address, before the IPVS write.
  expect(calls).toEqual([{ full: true, parts: 8, kernelHadIt: false }]);
  await t.release(t.fake.table());
  expect(calls.map((c) => c.full)).toEqual([true, true]); // the full sync's own
  expect(t.logger.errors()).toEqual([]);
  expect(t.runner.status().consecutiveFailures).toBe(0);
  await t.runner.stop();
});
