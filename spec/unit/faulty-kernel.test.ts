// The faulty wrapper must fail deterministically per seed, report every failure at the index of the
// op that caused it, and let a retry of only the failed ops reach the full state.

import { FakeKernel } from '../../lib/kernel/fake.js';
import { destinationKey, serviceKey } from '../../lib/kernel/ids.js';
import { FaultyKernel } from '../../lib/kernel/faulty.js';
import type { ApplyResult, Destination, KernelOp, VirtualServer } from '../../lib/kernel/types.js';

const svc = (port: number): VirtualServer => ({
  family: 4, protocol: 'TCP', address: '10.96.0.1', port, fwmark: 0,
  scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff, peName: '',
});
const dst = (n: number): Destination => ({
  family: 4, address: `10.244.0.${n}`, port: 8080, forward: 'masq', weight: 1, upperThreshold: 0, lowerThreshold: 0,
});

/** A desired state as ops: services, each with destinations, and the VIP bound to the dummy link. */
function desiredOps(services = 6, perService = 3): KernelOp[] {
  const ops: KernelOp[] = [{ kind: 'addAddress', ifname: 'kube-ipvs0', address: { family: 4, address: '10.96.0.1', prefixLength: 32 } }];
  for (let s = 0; s < services; s++) {
    ops.push({ kind: 'addService', service: svc(8000 + s) });
    for (let d = 1; d <= perService; d++) ops.push({ kind: 'addDestination', service: svc(8000 + s), destination: dst(d) });
  }
  return ops;
}

async function freshFake(): Promise<FakeKernel> {
  const fake = new FakeKernel();
  await fake.ensureDummyLink('kube-ipvs0');
  return fake;
}

const summary = (r: ApplyResult) => r.errors.map((e) => `${e.index}:${e.code}`);

/** The fake's state with services and destinations in key order: a retry adds them in another order. */
function state(fake: FakeKernel) {
  const byKey = <T>(key: (x: T) => string) => (a: T, b: T) => key(a).localeCompare(key(b));
  const services = fake.table().services
    .map((s) => ({ ...s, destinations: [...s.destinations].sort(byKey(destinationKey)) }))
    .sort(byKey((s) => serviceKey(s.service)));
  return { services, addresses: fake.localAddresses() };
}

describe('FaultyKernel', () => {
  test('the same seed gives the same faults; another seed gives others', async () => {
    const run = async (seed: number) => summary(await new FaultyKernel(await freshFake(), { seed, rate: 0.3 }).apply(desiredOps()));
    const first = await run(42);
    expect(first.length).toBeGreaterThan(0);
    expect(await run(42)).toEqual(first);
    expect(await run(43)).not.toEqual(first);
  });

  test('injected errnos come from the list and are counted', async () => {
    const faulty = new FaultyKernel(await freshFake(), { seed: 5, rate: 0.5, errnos: ['EBUSY', 'ENOMEM'] });
    const result = await faulty.apply(desiredOps(12, 0)); // independent ops: every error is injected
    const codes = new Set(result.errors.map((e) => e.code));
    expect(codes).toEqual(new Set(['EBUSY', 'ENOMEM']));
    expect(faulty.faults.ops).toBe(result.errors.length);
    expect((faulty.faults.byCode.EBUSY ?? 0) + (faulty.faults.byCode.ENOMEM ?? 0)).toBe(result.errors.length);
  });

  test('a faulted op never reaches the wrapped kernel', async () => {
    const fake = await freshFake();
    fake.resetCounters();
    const result = await new FaultyKernel(fake, { seed: 1, rate: 1 }).apply(desiredOps());
    expect(result.applied).toBe(0);
    expect(result.errors).toHaveLength(desiredOps().length);
    expect(fake.counters.messages).toBe(0);
    expect(fake.table().services).toEqual([]);
  });

  test("the wrapped kernel's own refusals come back at the index of their op in the caller's batch", async () => {
    const fake = await freshFake();
    const faulty = new FaultyKernel(fake, { seed: 1, rate: 0.4, errnos: ['EBUSY'] });
    // Ops 3 and 7 update services that do not exist: the fake answers ESRCH unless the op was faulted.
    const ops: KernelOp[] = Array.from({ length: 10 }, (_, i): KernelOp =>
      i === 3 || i === 7 ? { kind: 'updateService', service: svc(9000 + i) } : { kind: 'addService', service: svc(8000 + i) },
    );
    const result = await faulty.apply(ops);
    const faulted = result.errors.filter((e) => e.code === 'EBUSY').map((e) => e.index);
    const refused = result.errors.filter((e) => e.code === 'ESRCH').map((e) => e.index);

    // Seed 1 faults ops 1 and 4 and neither update, so the inner kernel sees them at 2 and 5.
    expect(faulted).toEqual([1, 4]);
    expect(refused).toEqual([3, 7]);
    expect(result.errors.map((e) => e.index)).toEqual([...faulted, ...refused].sort((a, b) => a! - b!));
    for (const e of result.errors) expect(e.op).toBe(ops[e.index!]);
    expect(result.applied).toBe(ops.length - result.errors.length);
    const added = ops.filter((op, i) => op.kind === 'addService' && !faulted.includes(i)).map((op) => (op as { service: VirtualServer }).service.port);
    expect(fake.table().services.map((s) => s.service.port)).toEqual(added);
  });

  test('setFaultRate(0) stops faults', async () => {
    const faulty = new FaultyKernel(await freshFake(), { seed: 9, rate: 1, reads: true });
    faulty.setFaultRate(0);
    expect(await faulty.apply(desiredOps())).toEqual({ applied: desiredOps().length, errors: [] });
    await expect(faulty.dumpTable()).resolves.toBeDefined();
    expect(faulty.faults).toEqual({ ops: 0, reads: 0, byCode: {} });
  });

  test('reads fail only when asked to', async () => {
    const quiet = new FaultyKernel(await freshFake(), { seed: 2, rate: 1 });
    await expect(quiet.dumpTable()).resolves.toEqual({ services: [] });
    const loud = new FaultyKernel(await freshFake(), { seed: 2, rate: 1, reads: true, errnos: ['EINTR'] });
    for (const read of [() => loud.dumpTable(), () => loud.listServices(), () => loud.listLocalAddresses(), () => loud.getTimeouts()]) {
      await expect(read()).rejects.toMatchObject({ name: 'KernelError', code: 'EINTR' });
    }
    expect(loud.faults.reads).toBe(4);
  });

  test.each([42, 7, 1234])('retrying only the failed ops with rate 0 reaches the full state (seed %d)', async (seed) => {
    const reference = await freshFake();
    await reference.apply(desiredOps());

    const fake = await freshFake();
    const faulty = new FaultyKernel(fake, { seed, rate: 0.5 });
    const first = await faulty.apply(desiredOps());
    expect(first.errors.length).toBeGreaterThan(0);
    expect(state(fake)).not.toEqual(state(reference));

    faulty.setFaultRate(0);
    const retry = await faulty.apply(first.errors.map((e) => e.op!));
    expect(retry.errors).toEqual([]);
    expect(state(fake)).toEqual(state(reference));
  });

  test('retrying the failed ops while faults continue converges too', async () => {
    const reference = await freshFake();
    await reference.apply(desiredOps());
    const fake = await freshFake();
    const faulty = new FaultyKernel(fake, { seed: 11, rate: 0.3 });
    let pending = desiredOps();
    for (let round = 0; round < 30 && pending.length > 0; round++) {
      pending = (await faulty.apply(pending)).errors.map((e) => e.op!);
    }
    expect(pending).toEqual([]);
    expect(state(fake)).toEqual(state(reference));
  });

  test('rejects bad options', () => {
    const fake = new FakeKernel();
    expect(() => new FaultyKernel(fake, { seed: 1, errnos: ['ENOTANERRNO'] })).toThrow(/unknown errno/);
    expect(() => new FaultyKernel(fake, { seed: 1, errnos: [] })).toThrow(RangeError);
    expect(() => new FaultyKernel(fake, { seed: 1, rate: 1.5 })).toThrow(RangeError);
  });
});
