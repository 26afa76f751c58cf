// Assertions on what the agent scenarios (agent.scenarios.ts) observed on the real kernel: the real
// client-node against the test API server, startAgent programming a fresh network namespace.
// Kernel states are ipvsadm -Ln lines (counters left out) and kube-ipvs0's addresses as `ip -o addr`
// shows them; `ops` are the exact kernel writes the agent made. A scenario that threw fails every
// test that reads it, with its stack.
import { kernelResults, scenario } from './results.js';

const LIFECYCLE = 'agent: a Service and its EndpointSlice from create to delete';
const DRIFT = 'agent: drift made with ipvsadm and ip is repaired by the next periodic sync';
const FOREIGN = 'agent: foreign IPVS services (another address, a fwmark) are never touched';
const RESTART = (from: string) => `agent: a restarted agent adopts the kernel table and writes nothing (lc from the ${from})`;
const LIVE = 'agent: scheduler switched through the ConfigMap under a live TCP connection';
const AWAY = 'agent: the API server goes away and comes back with a change';

/** Generous bound on any convergence under TCG (the figures are printed; typical is < 1.5 s). */
const CONVERGE_MS = 10_000;
const VIP = ['inet 10.96.0.10/32 scope global'];

interface Step { label: string; converged: boolean; ms: number; ipvsadm: string[]; addrs: string[]; ipvsadmMismatch: unknown; ops: string[] }
const sorted = (a: string[]) => [...a].sort();

/** The step converged in bound, the tools agree with our dump, and the kernel shows exactly this. */
function expectStep(s: Step, label: string, ipvsadm: string[], addrs: string[], ops: string[]) {
  expect(s.label).toBe(label);
  expect({ converged: s.converged, ipvsadm: s.ipvsadm, addrs: s.addrs, ipvsadmMismatch: s.ipvsadmMismatch }).toEqual({ converged: true, ipvsadm, addrs, ipvsadmMismatch: null });
  expect(sorted(s.ops)).toEqual(sorted(ops));
  expect(s.ms).toBeLessThan(CONVERGE_MS);
}

test('agent scenarios ran on a real kernel; figures', () => {
  const r = kernelResults();
  const names = [LIFECYCLE, DRIFT, FOREIGN, RESTART('annotation'), RESTART('ConfigMap'), LIVE, AWAY];
  const ran = names.filter((n) => r.scenarios[n]);
  const lines = [`agent scenarios on Linux ${r.kernel}: ${ran.length}/${names.length} ran`];
  const ok = (n: string) => r.scenarios[n]?.ok;
  if (ok(LIFECYCLE)) lines.push(`  converge (API write -> kernel): ${scenario(LIFECYCLE).steps.map((s: Step) => `${s.label} ${s.ms} ms`).join('; ')}`);
  if (ok(DRIFT)) {
    const d = scenario(DRIFT);
    lines.push(`  drift repaired ${d.repairMs} ms after injection (sync period ${d.syncPeriodMs} ms; last sync had ended ${d.sinceLastSyncMs} ms before)`);
  }
  if (ok(LIVE)) {
    const l = scenario(LIVE);
    lines.push(`  live connection: ${l.final.sent} sent, ${l.final.echoed} echoed, ${l.final.errors.length} errors, max RTT ${l.final.maxRttMs} ms; switches ${l.switches.map((s: Step) => `${s.label.split(' ').pop()} ${s.ms} ms`).join(', ')}`);
  }
  if (ok(AWAY)) {
    const a = scenario(AWAY);
    lines.push(`  API server away ${a.away.ms} ms (${a.away.fullSyncs} full syncs, ${a.away.ops.length} writes); converged ${a.back.ms} ms after it came back`);
  }
  console.log(lines.join('\n'));
  expect(ran).toEqual(names);
});

describe('a Service and its EndpointSlice, create to delete', () => {
  const v = () => scenario(LIFECYCLE);

  test('before any Service: kube-ipvs0 exists as a dummy link, down, with no address; no virtual server', () => {
    expect(v().initial).toEqual({ ipvsadm: [], addrs: [], ipvsadmMismatch: null, link: 'dummy DOWN' });
  });

  test('ClusterIP with 2 ports and 2 ready endpoints: both virtual servers, their real servers, the VIP bound', () => {
    expectStep(v().steps[0], 'create', [
      'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1',
      'UDP  10.96.0.10:53 rr -> 10.244.1.5:5353 Masq 1 -> 10.244.2.6:5353 Masq 1',
    ], VIP, [
      'addAddress 10.96.0.10/32 dev kube-ipvs0',
      'addService TCP/10.96.0.10:80',
      'addDestination TCP/10.96.0.10:80 -> 10.244.1.5:8080',
      'addDestination TCP/10.96.0.10:80 -> 10.244.2.6:8080',
      'addService UDP/10.96.0.10:53',
      'addDestination UDP/10.96.0.10:53 -> 10.244.1.5:5353',
      'addDestination UDP/10.96.0.10:53 -> 10.244.2.6:5353',
    ]);
  });

  test('scaling to 3 endpoints adds one real server per port and nothing else', () => {
    expectStep(v().steps[1], 'scale to 3 endpoints', [
      'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1 -> 10.244.3.7:8080 Masq 1',
      'UDP  10.96.0.10:53 rr -> 10.244.1.5:5353 Masq 1 -> 10.244.2.6:5353 Masq 1 -> 10.244.3.7:5353 Masq 1',
    ], VIP, ['addDestination TCP/10.96.0.10:80 -> 10.244.3.7:8080', 'addDestination UDP/10.96.0.10:53 -> 10.244.3.7:5353']);
  });

  test('an endpoint that is not ready loses its real servers', () => {
    expectStep(v().steps[2], 'one endpoint not ready', [
      'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.3.7:8080 Masq 1',
      'UDP  10.96.0.10:53 rr -> 10.244.1.5:5353 Masq 1 -> 10.244.3.7:5353 Masq 1',
    ], VIP, ['deleteDestination TCP/10.96.0.10:80 -> 10.244.2.6:8080', 'deleteDestination UDP/10.96.0.10:53 -> 10.244.2.6:5353']);
  });

  test('a new port, ClientIP affinity (300 s) and the lc annotation: one new virtual server, the others updated in place', () => {
    expectStep(v().steps[3], 'add a port, ClientIP affinity 300 s, scheduler lc', [
      'TCP  10.96.0.10:443 lc persistent 300 -> 10.244.1.5:8443 Masq 1 -> 10.244.3.7:8443 Masq 1',
      'TCP  10.96.0.10:80 lc persistent 300 -> 10.244.1.5:8080 Masq 1 -> 10.244.3.7:8080 Masq 1',
      'UDP  10.96.0.10:53 lc persistent 300 -> 10.244.1.5:5353 Masq 1 -> 10.244.3.7:5353 Masq 1',
    ], VIP, [
      'updateService TCP/10.96.0.10:80',
      'updateService UDP/10.96.0.10:53',
      'addService TCP/10.96.0.10:443',
      'addDestination TCP/10.96.0.10:443 -> 10.244.1.5:8443',
      'addDestination TCP/10.96.0.10:443 -> 10.244.3.7:8443',
    ]);
  });

  test('deleting the Service removes its virtual servers and unbinds the VIP; its orphaned slice changes nothing', () => {
    expectStep(v().steps[4], 'delete the Service', [], [], [
      'deleteService TCP/10.96.0.10:80',
      'deleteService UDP/10.96.0.10:53',
      'deleteService TCP/10.96.0.10:443',
      'deleteAddress 10.96.0.10/32 dev kube-ipvs0',
    ]);
    expect(v().afterSliceDelete).toEqual({ ipvsadm: [], addrs: [], ipvsadmMismatch: null, ops: [] });
    expect(v().steps).toHaveLength(5);
    expect(v().problems).toEqual([]);
  });
});

describe('drift made behind the agent\'s back', () => {
  const v = () => scenario(DRIFT);

  test('the injection took effect: a real server gone, one reweighted, a stray one, the scheduler changed, the VIP unbound', () => {
    expect(v().start).toBe(true);
    expect(v().drifted).toEqual({ services: ['TCP  10.96.0.10:80 wlc -> 10.244.2.6:8080 Masq 7 -> 10.244.9.9:8080 Masq 1'], vips: [] });
  });

  test('the next periodic (full) sync repairs all of it at once, with exactly the five writes needed', () => {
    expect(v().repaired).toBe(true);
    expect(v().repairedBy).toEqual([expect.objectContaining({ full: true, written: 5, failed: 0, result: 'ok' })]);
    expect(v().repairOps).toEqual([
      'addAddress 10.96.0.10/32 dev kube-ipvs0',
      'updateService TCP/10.96.0.10:80',
      'addDestination TCP/10.96.0.10:80 -> 10.244.1.5:8080',
      'updateDestination TCP/10.96.0.10:80 -> 10.244.2.6:8080',
      'deleteDestination TCP/10.96.0.10:80 -> 10.244.9.9:8080',
    ]);
    expect(v().after).toEqual({
      ipvsadm: ['TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1'],
      addrs: VIP,
      ipvsadmMismatch: null,
    });
    expect(v().nextSync).toEqual([{ full: true, written: 0, failed: 0 }]);
    expect(v().problems).toEqual([]);
  });

  test('repair time is within one sync period (plus the sync itself)', () => {
    const { repairMs, syncPeriodMs, sinceLastSyncMs, repairedBy } = v();
    expect(syncPeriodMs).toBe(2000);
    // Due syncPeriodMs after the previous sync ended; the injection itself took sinceLastSyncMs of that.
    expect(repairMs).toBeLessThanOrEqual(Math.max(0, syncPeriodMs - sinceLastSyncMs) + repairedBy[0].ms + 1000);
  });
});

describe('foreign IPVS services', () => {
  const v = () => scenario(FOREIGN);
  const foreign = ['FWM  42 rr -> 10.2.0.3:0 Masq 2', 'TCP  10.1.1.1:80 wrr -> 10.2.0.1:80 Masq 3'];
  const WEB = 'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1';
  const API = 'TCP  10.96.0.20:8080 rr -> 10.244.4.1:9000 Masq 1';

  test('kipvs services come and go beside them', () => {
    const [create, delWeb, delApi] = v().steps;
    expect(v().started).toEqual({ converged: true, ops: [
      'addAddress 10.96.0.10/32 dev kube-ipvs0',
      'addService TCP/10.96.0.10:80',
      'addDestination TCP/10.96.0.10:80 -> 10.244.1.5:8080',
      'addDestination TCP/10.96.0.10:80 -> 10.244.2.6:8080',
    ] });
    expectStep(create, 'create Service api', [...foreign, WEB, API], [...VIP, 'inet 10.96.0.20/32 scope global'], [
      'addAddress 10.96.0.20/32 dev kube-ipvs0', 'addService TCP/10.96.0.20:8080', 'addDestination TCP/10.96.0.20:8080 -> 10.244.4.1:9000',
    ]);
    expectStep(delWeb, 'delete Service web', [...foreign, API], ['inet 10.96.0.20/32 scope global'], [
      'deleteService TCP/10.96.0.10:80', 'deleteAddress 10.96.0.10/32 dev kube-ipvs0',
    ]);
    expectStep(delApi, 'delete Service api', foreign, [], ['deleteService TCP/10.96.0.20:8080', 'deleteAddress 10.96.0.20/32 dev kube-ipvs0']);
  });

  test('across every sync (3 more full ones at the end) they are never written to and read back byte-identical', () => {
    const saved = '-A -t 10.1.1.1:80 -s wrr\n-a -t 10.1.1.1:80 -r 10.2.0.1:80 -m -w 3\n-A -f 42 -s rr\n-a -f 42 -r 10.2.0.3:0 -m -w 2\n';
    expect(v().before).toBe(saved);
    expect(v().after).toBe(saved);
    expect(v().quiet).toEqual({
      syncs: [1, 2, 3].map(() => ({ full: true, written: 0, failed: 0 })),
      ops: [], ipvsadm: foreign, addrs: [], ipvsadmMismatch: null,
    });
    expect(v().fullSyncs).toBeGreaterThanOrEqual(4);
    expect(v().allOps.filter((op: string) => /10\.1\.1\.1|10\.2\.0\.|FWM/.test(op))).toEqual([]);
    expect(v().problems).toEqual([]);
  });
});

describe.each(['annotation', 'ConfigMap'])('restart (scheduler lc from the %s)', (from) => {
  const v = () => scenario(RESTART(from));
  const table = [
    'TCP  10.96.0.10:80 lc -> 10.244.1.5:8080 Masq 1 -> 10.244.3.7:8080 Masq 1',
    'TCP  10.96.0.20:443 sh (sh-port) persistent 600 -> 10.244.4.1:9443 Masq 1 -> 10.244.4.2:9443 Masq 1',
    'UDP  10.96.0.10:53 lc -> 10.244.1.5:5353 Masq 1 -> 10.244.3.7:5353 Masq 1',
  ];

  test('the first agent programs the table with no intermediate state (each virtual server added once, never updated)', () => {
    expect(v().converged).toBe(true);
    expect(v().firstAgent.ops.filter((op: string) => !op.startsWith('add'))).toEqual([]);
    expect(v().firstAgent.ops).toHaveLength(2 + 3 + 6);
    expect(v().firstAgent.problems).toEqual([]);
  });

  test('stopping the agent flushes nothing', () => {
    expect(v().stopKeptTable).toBe(true);
  });

  test('the new agent\'s first sync is a full sync that writes nothing (lastReport.written === 0)', () => {
    expect(v().firstSync).toEqual({ full: true, written: 0, failed: 0, ops: {} });
    expect(v().firstSyncOps).toEqual([]);
  });

  test('nor does its next periodic sync; ipvsadm -Sn is byte-identical before and after', () => {
    expect(v().laterSyncs).toEqual([{ full: true, written: 0, failed: 0 }]);
    expect(v().laterOps).toEqual([]);
    expect(v().saved.after).toBe(v().saved.before);
    expect(v().identical).toBe(true);
    expect({ ipvsadm: v().ipvsadm, addrs: v().addrs, ipvsadmMismatch: v().ipvsadmMismatch })
      .toEqual({ ipvsadm: table, addrs: [...VIP, 'inet 10.96.0.20/32 scope global'], ipvsadmMismatch: null });
    expect(v().problems).toEqual([]);
  });
});

describe('scheduler switched through the ConfigMap under one live TCP connection', () => {
  const v = () => scenario(LIVE);
  const line = (s: string) => `TCP  10.96.0.10:80 ${s} -> 10.244.1.5:8080 Masq 1 -> 10.244.1.6:8080 Masq 1`;
  interface Dest { dest: string; active: number; inactive: number }
  const holder = (dests: Dest[]) => dests.filter((d) => d.active > 0).map((d) => `${d.dest} ${d.active}`);

  test('rr -> lc -> sh -> rr: each shows in ipvsadm, written as one in-place SET_SERVICE, real servers untouched', () => {
    expect(v().start).toBe(true);
    expect(v().switches).toHaveLength(3);
    for (const [i, sched] of ['lc', 'sh', 'rr'].entries()) {
      expectStep(v().switches[i], `ConfigMap scheduler ${sched}`, [line(sched)], VIP, ['updateService TCP/10.96.0.10:80']);
    }
    expect(v().switchOps).toEqual(['updateService TCP/10.96.0.10:80', 'updateService TCP/10.96.0.10:80', 'updateService TCP/10.96.0.10:80']);
  });

  test('the connection stays on the same real server throughout (one active connection, never moved)', () => {
    const holders = [...v().switches.map((s: { dests: Dest[] }) => holder(s.dests)), holder(v().stats.dests)];
    expect(holders[0]).toHaveLength(1);
    expect(holders).toEqual(holders.map(() => holders[0]));
    expect(holders[0][0]).toMatch(/^10\.244\.1\.[56]:8080 1$/);
    // Conns counts since the virtual server was created: a delete + re-add would have reset it to 0.
    expect(v().stats.serviceConns).toBe(1);
  });

  test('the one connection keeps carrying messages after every switch, with no reset, error or mismatch', () => {
    for (const s of v().switches) expect(s.echoedAfter).toBeGreaterThanOrEqual(s.echoedBefore + 3);
    const { final } = v();
    expect(final).toMatchObject({ event: 'final', errors: [], mismatches: 0, closed: false });
    expect(final.echoed).toBe(final.sent);
    expect(final.sent).toBeGreaterThanOrEqual(15);
    expect(v().connected).toMatchObject({ event: 'connected', remote: '10.96.0.10:80' });
    expect(v().clientEvents.map((e: { event: string }) => e.event)).toEqual(['connected', 'final']);
    expect(v().serverEvents.filter((e: { event: string }) => e.event === 'accepted')).toHaveLength(1);
    expect(v().serverEvents.filter((e: { event: string }) => e.event === 'error')).toEqual([]);
    expect(v().stderr).toEqual({ client: '', server: '' });
    expect(v().problems).toEqual([]);
  });
});

describe('the API server goes away and comes back', () => {
  const v = () => scenario(AWAY);

  test('while it is away the kernel is left exactly as it was: no flush, no writes, syncs keep running', () => {
    const { away } = v();
    expect(v().start).toBe(true);
    expect(away.informerFailures).toBeGreaterThanOrEqual(4); // every feed noticed
    expect(away.fullSyncs).toBe(2);
    expect(away.ms).toBeGreaterThanOrEqual(3000);
    expect(away.syncs.every((s: { written: number; result: string }) => s.written === 0 && s.result === 'ok')).toBe(true);
    expect(away.ops).toEqual([]);
    expect(away.unchanged).toBe(true);
    expect(away.addrs).toEqual(VIP);
    expect(v().addrsBefore).toEqual(VIP);
  });

  test('once it is back, the change made meanwhile is programmed, and nothing else', () => {
    expectStep(v().back, 'API server back', [
      'TCP  10.96.0.10:80 rr -> 10.244.1.5:8080 Masq 1 -> 10.244.2.6:8080 Masq 1 -> 10.244.3.7:8080 Masq 1',
    ], VIP, ['addDestination TCP/10.96.0.10:80 -> 10.244.3.7:8080']);
    expect({ reestablished: v().reestablished, openWatches: v().openWatches }).toEqual({ reestablished: 4, openWatches: 4 });
    expect(v().errors).toEqual([]);
  });
});
