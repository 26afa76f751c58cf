// Graceful termination through the reconciler and the in-memory kernel, with a fake clock: a removed
// endpoint's real server drains at weight 0 while the kernel counts connections on it, and is deleted
// once they end or after the maximum wait; UDP and whole Services go at once; a returning endpoint is
// restored; leftovers of an earlier run drain too; foreign services are never touched.
import { agentOptions } from '../../lib/cli.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { destinationKey, serviceKey, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import type { DestinationId, ServiceId, VirtualServer } from '../../lib/kernel/types.js';
import { Metrics } from '../../lib/metrics.js';
import { Reconciler } from '../../lib/proxy/reconciler.js';
import { FakeClock } from '../../lib/proxy/runner.js';
import { captureLogger } from '../support/logger.js';
import { MemorySource, service, slice } from '../support/memory-source.js';

const http = [{ name: 'http', port: 80 }];
const backend = [{ name: 'http', port: 8080 }];
const VS: ServiceId = { family: 4, protocol: 'TCP', address: '10.96.0.10', port: 80, fwmark: 0 };
const A: DestinationId = { family: 4, address: '10.244.1.5', port: 8080 };
const B = ['10.244.2.6'];

function setup(opts: { maxWaitMs?: number; kernel?: FakeKernel; source?: MemorySource } = {}) {
  const kernel = opts.kernel ?? new FakeKernel();
  const source = opts.source ?? new MemorySource();
  const logger = captureLogger();
  const clock = new FakeClock(1_000_000);
  let wakes = 0;
  const rec = new Reconciler({ kernel, source, logger, graceful: { maxWaitMs: opts.maxWaitMs, clock, wake: () => wakes++ } });
  void source.start((c) => rec.noteChanges(c));
  return { kernel, source, logger, rec, clock, wakes: () => wakes };
}

/** Real servers of every virtual server as 'KEY -> dest w<weight>', sorted. */
const realServers = (k: FakeKernel) =>
  k.table().services.flatMap(({ service: s, destinations }) => destinations.map((d) => `${serviceKey(s)} -> ${destinationKey(d)} w${d.weight}`)).sort();

const messages = (logger: ReturnType<typeof captureLogger>) => logger.lines.map((l) => `${l.level} ${l.msg}`);

/** web with endpoints A and B, synced; returns after removing A from its slice (not yet synced). */
async function webWithoutA(s: ReturnType<typeof setup>, conns = { activeConns: 3, inactiveConns: 1 }) {
  s.source.put(service('web', VS.address, http), slice('web', 'a', [A.address, ...B], backend));
  expect(await s.rec.sync()).toBe('ok');
  s.kernel.setConnections(VS, A, conns);
  s.source.put(slice('web', 'a', B, backend));
}

test('a removed endpoint with connections goes to weight 0, and is deleted once they end', async () => {
  const s = setup();
  await webWithoutA(s);
  s.kernel.resetCounters();
  expect(await s.rec.sync()).toBe('ok');
  expect(realServers(s.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.1.5:8080 w0', 'TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
  // One destination dump of the one virtual server concerned, then one write: weight 0.
  expect(s.kernel.counters.reads).toBe(1);
  expect(s.kernel.counters.writes).toMatchObject({ updateDestination: 1, deleteDestination: 0 });
  expect([...s.rec.graceful.draining.keys()]).toEqual(['TCP/10.96.0.10:80 -> 10.244.1.5:8080']);
  expect(messages(s.logger)).toContainEqual(expect.stringMatching(
    /^info real server TCP\/10.96.0.10:80 -> 10.244.1.5:8080 draining: weight 0 until its 3 active and 1 inactive connections end, at most 60.0 s$/));

  // Periodic checks while it drains: nothing is written while connections remain.
  await s.clock.advance(1000);
  expect(s.wakes()).toBe(1);
  s.kernel.resetCounters();
  s.kernel.setConnections(VS, A, { activeConns: 0, inactiveConns: 2 });
  await s.clock.advance(5000);
  expect(await s.rec.sync()).toBe('ok');
  expect(s.kernel.counters.messages).toBe(0);
  expect(realServers(s.kernel)).toContain('TCP/10.96.0.10:80 -> 10.244.1.5:8080 w0');

  s.kernel.setConnections(VS, A, { inactiveConns: 0 });
  await s.clock.advance(1000);
  expect(await s.rec.sync()).toBe('ok');
  expect(realServers(s.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
  expect(s.rec.graceful.draining.size).toBe(0);
  expect(messages(s.logger)).toContainEqual('info real server TCP/10.96.0.10:80 -> 10.244.1.5:8080 deleted: its connections ended after draining 7.0 s');
  // Nothing drains: no check stays armed.
  await s.clock.advance(10_000);
  expect(s.clock.pending()).toBe(0);
});

test('full syncs take the connection counts from their one dump', async () => {
  const s = setup();
  s.source.put(service('web', VS.address, http), slice('web', 'a', [A.address, ...B], backend));
  await s.rec.sync();
  s.kernel.setConnections(VS, A, { activeConns: 3, inactiveConns: 1 });
  s.kernel.resetCounters();
  await s.rec.sync({ full: true });
  const plain = s.kernel.counters.reads; // a full sync with nothing to drain
  s.source.put(slice('web', 'a', B, backend));
  s.kernel.resetCounters();
  expect(await s.rec.sync({ full: true })).toBe('ok');
  expect(s.kernel.counters.reads).toBe(plain);
  expect(realServers(s.kernel)).toContain('TCP/10.96.0.10:80 -> 10.244.1.5:8080 w0');
  s.kernel.setConnections(VS, A, { activeConns: 0, inactiveConns: 0 });
  expect(await s.rec.sync({ full: true })).toBe('ok');
  expect(realServers(s.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
});

test('a removed endpoint without connections is deleted at once', async () => {
  const s = setup();
  await webWithoutA(s, { activeConns: 0, inactiveConns: 0 });
  s.kernel.resetCounters();
  await s.rec.sync();
  expect(s.kernel.counters.writes).toMatchObject({ updateDestination: 0, deleteDestination: 1 });
  expect(realServers(s.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
  expect(s.clock.pending()).toBe(0);
});

test('after the maximum wait the real server is deleted with its connections left, and that is a warning', async () => {
  const s = setup({ maxWaitMs: 20_000 });
  await webWithoutA(s, { activeConns: 2, inactiveConns: 0 });
  await s.rec.sync();
  await s.clock.advance(19_999);
  await s.rec.sync();
  expect(realServers(s.kernel)).toContain('TCP/10.96.0.10:80 -> 10.244.1.5:8080 w0');
  await s.clock.advance(1);
  await s.rec.sync();
  expect(realServers(s.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
  expect(messages(s.logger)).toContainEqual(
    'warn real server TCP/10.96.0.10:80 -> 10.244.1.5:8080 deleted after the maximum wait of 20.0 s with 2 active and 0 inactive connections left');
});

test('a maximum wait of 0 turns draining off', async () => {
  const s = setup({ maxWaitMs: 0 });
  await webWithoutA(s);
  s.kernel.resetCounters();
  await s.rec.sync();
  expect(s.kernel.counters.reads).toBe(0);
  expect(realServers(s.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
});

test('UDP real servers are deleted at once, connections or not', async () => {
  const s = setup();
  const dns = [{ name: 'dns', port: 53, protocol: 'UDP' }];
  const udp = { ...VS, protocol: 'UDP' as const, port: 53 };
  s.source.put(service('dns', VS.address, dns), slice('dns', 'a', [A.address, ...B], [{ name: 'dns', port: 5353, protocol: 'UDP' }]));
  await s.rec.sync();
  s.kernel.setConnections(udp, { ...A, port: 5353 }, { activeConns: 0, inactiveConns: 4 });
  s.source.put(slice('dns', 'a', B, [{ name: 'dns', port: 5353, protocol: 'UDP' }]));
  s.kernel.resetCounters();
  await s.rec.sync();
  expect(s.kernel.counters.writes).toMatchObject({ updateDestination: 0, deleteDestination: 1 });
  expect(s.kernel.counters.reads).toBe(0);
  expect(realServers(s.kernel)).toEqual(['UDP/10.96.0.10:53 -> 10.244.2.6:5353 w1']);
});

test('an endpoint that returns while draining gets its weight back and stays', async () => {
  const s = setup();
  await webWithoutA(s);
  await s.rec.sync();
  await s.clock.advance(2500);
  s.source.put(slice('web', 'a', [A.address, ...B], backend));
  await s.rec.sync();
  expect(realServers(s.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.1.5:8080 w1', 'TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
  expect(s.rec.graceful.draining.size).toBe(0);
  expect(messages(s.logger)).toContainEqual('info real server TCP/10.96.0.10:80 -> 10.244.1.5:8080 is an endpoint again after draining 2.5 s: weight restored');
  s.kernel.setConnections(VS, A, { activeConns: 0, inactiveConns: 0 });
  await s.clock.advance(120_000);
  await s.rec.sync({ full: true });
  expect(realServers(s.kernel)).toContain('TCP/10.96.0.10:80 -> 10.244.1.5:8080 w1');
});

test('deleting the whole Service deletes its virtual server at once, draining real servers included', async () => {
  const s = setup();
  await webWithoutA(s);
  await s.rec.sync();
  expect(s.rec.graceful.draining.size).toBe(1);
  s.source.delete(service('web', VS.address, http), slice('web', 'a', B, backend));
  await s.rec.sync();
  expect(s.kernel.table().services).toEqual([]);
  expect(s.rec.graceful.draining.size).toBe(0);
  expect(messages(s.logger)).toContainEqual(
    'info real server TCP/10.96.0.10:80 -> 10.244.1.5:8080 deleted after draining 0.0 s: its virtual server is deleted');
});

test('after a restart, weight-0 leftovers that are not desired drain the same way; idle ones go at once', async () => {
  const first = setup();
  await webWithoutA(first);
  await first.rec.sync();
  const C: DestinationId = { family: 4, address: '10.244.3.7', port: 8080 };
  first.kernel.inject({ kind: 'addDestination', service: VS, destination: { ...C, forward: 'masq', weight: 0, upperThreshold: 0, lowerThreshold: 0 } });

  // A new agent on the same kernel: its first sync is a full one.
  const second = setup({ kernel: first.kernel, source: first.source });
  second.source.put(service('web', VS.address, http), slice('web', 'a', B, backend)); // its informers' first list
  second.kernel.resetCounters();
  expect(await second.rec.sync()).toBe('ok');
  expect(realServers(second.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.1.5:8080 w0', 'TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
  expect(second.kernel.counters.writes).toMatchObject({ updateDestination: 0, deleteDestination: 1 });
  expect(messages(second.logger)).toContainEqual(expect.stringMatching(/^info real server TCP\/10.96.0.10:80 -> 10.244.1.5:8080 draining \(left at weight 0 by an earlier run\)/));
  second.kernel.setConnections(VS, A, { activeConns: 0, inactiveConns: 0 });
  await second.clock.advance(1000);
  expect(second.wakes()).toBe(1);
  await second.rec.sync();
  expect(realServers(second.kernel)).toEqual(['TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1']);
});

test('foreign virtual servers and their weight-0 real servers are never touched', async () => {
  const s = setup();
  const foreign: VirtualServer = { family: 4, protocol: 'TCP', address: '192.168.7.7', port: 80, fwmark: 0, scheduler: 'wrr', flags: 0, timeout: 0, netmask: 0xffffffff, peName: '' };
  const rs = { family: 4 as const, address: '192.168.7.8', port: 80, forward: 'droute' as const, weight: 0, upperThreshold: 0, lowerThreshold: 0 };
  s.kernel.inject({ kind: 'addService', service: foreign }, { kind: 'addDestination', service: foreign, destination: rs });
  s.kernel.setConnections(foreign, rs, { activeConns: 0, inactiveConns: 0 });
  await webWithoutA(s);
  for (let i = 0; i < 3; i++) {
    await s.rec.sync({ full: i % 2 === 0 });
    await s.clock.advance(30_000);
  }
  expect(realServers(s.kernel)).toEqual([
    'TCP/10.96.0.10:80 -> 10.244.2.6:8080 w1',
    'TCP/192.168.7.7:80 -> 192.168.7.8:80 w0',
  ]);
  expect(s.kernel.table().services.find((x) => x.service.address === foreign.address)?.service.flags).toBe(0);
  expect(SVC_F_KIPVS & foreign.flags).toBe(0);
});

test('the kipvs_draining_real_servers gauge counts what drains', async () => {
  const s = setup();
  const metrics = new Metrics(s.kernel, s.rec);
  const gauge = async () => /^kipvs_draining_real_servers (\d+)$/m.exec(await metrics.registry.metrics())?.[1];
  expect(await gauge()).toBe('0');
  await webWithoutA(s);
  await s.rec.sync();
  expect(await gauge()).toBe('1');
  s.kernel.setConnections(VS, A, { activeConns: 0, inactiveConns: 0 });
  await s.rec.sync();
  expect(await gauge()).toBe('0');
});

test('--graceful-termination-max-wait takes a Go duration, 60s by default, 0 to turn draining off', () => {
  expect(agentOptions([]).gracefulTerminationMaxWaitMs).toBe(60_000);
  expect(agentOptions(['--graceful-termination-max-wait', '2m30s']).gracefulTerminationMaxWaitMs).toBe(150_000);
  expect(agentOptions(['--graceful-termination-max-wait', '0']).gracefulTerminationMaxWaitMs).toBe(0);
  expect(() => agentOptions(['--graceful-termination-max-wait', 'soon'])).toThrow(/--graceful-termination-max-wait: "soon" is not a duration/);
});
