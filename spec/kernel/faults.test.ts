// Assertions on what the fault scenarios (faults.scenarios.ts) observed on the real kernel: a SIGKILLed
// agent under live traffic, the API server back with 410 Gone, seeded random drift made with ipvsadm.
// The SIGKILL-under-traffic scenario is long: it runs, and is asserted, with KIPVS_SOAK=1 (make test-soak).
import { kernelResults, scenario } from './results.js';

const SOAK = process.env.KIPVS_SOAK === '1';

const RESTART = 'faults: the agent SIGKILLed under live TCP traffic through 3 VIPs and started again';
const GONE = 'faults: the API server goes away and comes back with 410 Gone for every watch';
const DRIFT = 'faults: a seeded random mix of drift made with ipvsadm is repaired by one full sync';

/** Generous bound on a convergence under TCG (the figures are printed). */
const CONVERGE_MS = 10_000;
const VIPS = ['10.96.0.10', '10.96.0.11', '10.96.0.12'];

test('fault scenarios ran on a real kernel; figures', () => {
  const r = kernelResults();
  const names = [...(SOAK ? [RESTART] : []), GONE, DRIFT];
  const ok = (n: string) => r.scenarios[n]?.ok;
  const lines = [`fault scenarios on Linux ${r.kernel}: ${names.filter((n) => r.scenarios[n]).length}/${names.length} ran`];
  if (ok(RESTART)) {
    const v = scenario(RESTART);
    lines.push(`  SIGKILL + restart: new agent done with 2 full syncs ${v.restartMs} ms after the kill; ` +
      `${v.loopFinal.ok} new connections ok, ${v.loopFinal.failed} failed; long-lived echoes ${v.finals.map((f: { echoed: number }) => f.echoed).join('/')}; ` +
      `second agent wrote ${v.secondAgent.ops} ops`);
  }
  if (ok(GONE)) {
    const v = scenario(GONE);
    lines.push(`  API server away ${v.away.ms} ms (${v.away.fullSyncs} full syncs, ${v.away.ops.length} writes), back with ${v.expiredWatches} watches refused 410; converged in ${v.back.ms} ms`);
  }
  if (ok(DRIFT)) {
    const v = scenario(DRIFT);
    lines.push(`  drift seed ${v.seed}: ${v.actions.length} ipvsadm commands, repaired by one full sync with ${v.repairOps.length} ops`);
  }
  console.log(lines.join('\n'));
  expect(names.filter((n) => !r.scenarios[n])).toEqual([]);
});

(SOAK ? describe : describe.skip)('the agent SIGKILLed under live TCP traffic, then started again (make test-soak)', () => {
  const v = () => scenario(RESTART);

  test('the first agent programmed the 3 VIPs before the traffic started', () => {
    expect(v().programmed.converged).toBe(true);
    expect(v().firstAgent.ops).toBeGreaterThan(0);
  });

  test('no long-lived connection is lost: each kept echoing in order through the kill and the restart', () => {
    const { finals, atKill, afterRestart, clientEvents } = v();
    expect(finals).toHaveLength(3);
    for (const [i, f] of finals.entries()) {
      expect({ errors: f.errors, mismatches: f.mismatches, closed: f.closed, unanswered: f.sent - f.echoed }).toEqual({ errors: [], mismatches: 0, closed: false, unanswered: 0 });
      // It carried messages while no agent was running or the new one was starting.
      expect(afterRestart.echoed[i]).toBeGreaterThan(atKill.echoed[i] + 3);
    }
    // Each one reached its own VIP.
    expect(clientEvents.map((e: Array<{ event: string; remote?: string }>) => e.find((x) => x.event === 'connected')?.remote)).toEqual(VIPS.map((ip) => `${ip}:80`));
  });

  test('every new connection during the restart succeeded, on all three VIPs', () => {
    const { loopFinal } = v();
    expect(loopFinal.failures).toEqual([]);
    expect(loopFinal.failed).toBe(0);
    for (const ip of VIPS) expect(loopFinal.byTarget[`${ip}:80`]?.ok).toBeGreaterThan(2);
  });

  test('the restarted agent writes nothing: 0 ops and 0 errors in its metrics over 2 full syncs, no sync logged, table identical', () => {
    const { secondAgent, identical, saved } = v();
    expect(secondAgent.syncs).toBeGreaterThanOrEqual(2);
    expect({ ops: secondAgent.ops, kernelErrors: secondAgent.kernelErrors, syncLogLines: secondAgent.syncLogLines, problems: secondAgent.problems })
      .toEqual({ ops: 0, kernelErrors: 0, syncLogLines: 0, problems: [] });
    expect(saved.after).toBe(saved.before);
    expect(identical).toBe(true);
    expect(v().ipvsadmMismatch).toBeNull();
  });
});

describe('the API server away, then back with 410 Gone', () => {
  const v = () => scenario(GONE);

  test('while it is away the kernel is kept as is (ipvsadm -Sn identical, no write) and syncs keep running', () => {
    const { start, away } = v();
    expect(start).toBe(true);
    expect(away.fullSyncs).toBe(2);
    expect(away.ops).toEqual([]);
    expect(away.unchanged).toBe(true);
    expect(away.syncs.every((s: { written: number; result: string }) => s.written === 0 && s.result === 'ok')).toBe(true);
  });

  test('back, its watches are refused 410 Gone and every feed relists', () => {
    expect(v().expiredWatches).toBeGreaterThanOrEqual(4);
    expect(v().relisted).toEqual(['ConfigMap', 'EndpointSlice', 'Node', 'Service']);
  });

  test('it converges to what changed meanwhile, with no flush: no delete at all, the untouched Service never written', () => {
    const { back, allOpsSinceAway, settle, problems } = v();
    expect({ converged: back.converged, ipvsadmMismatch: back.ipvsadmMismatch }).toEqual({ converged: true, ipvsadmMismatch: null });
    expect(back.ms).toBeLessThan(CONVERGE_MS);
    expect([...allOpsSinceAway].sort()).toEqual([
      expect.stringMatching(/^addAddress .*10\.96\.0\.30/),
      expect.stringMatching(/^addDestination TCP\/10\.96\.0\.10:80 -> 10\.244\.3\.7:8080/),
      expect.stringMatching(/^addDestination TCP\/10\.96\.0\.30:5432 -> 10\.244\.5\.1:5432/),
      expect.stringMatching(/^addService TCP\/10\.96\.0\.30:5432/),
    ]);
    expect(allOpsSinceAway.filter((o: string) => o.includes('10.96.0.20'))).toEqual([]);
    expect(settle.every((s: { written: number }) => s.written === 0)).toBe(true);
    expect(problems).toEqual([]);
  });
});

describe('seeded random drift made with ipvsadm', () => {
  const v = () => scenario(DRIFT);

  test('the drift took effect: the table differed from the desired state', () => {
    expect(v().start).toBe(true);
    expect(v().actions.length).toBeGreaterThanOrEqual(4);
    expect(v().drifted.services.filter((l: string) => !l.startsWith('TCP  10.1.'))).not.toEqual(v().good.services);
  });

  test("kipvs' own state is repaired by the first full sync after the drift, and stays so", () => {
    const { repaired, good, repair, nextSync } = v();
    expect(repair.full).toBe(true);
    expect(repair.failed).toBe(0);
    expect(repaired).toEqual(good);
    expect(nextSync).toEqual([{ full: true, written: 0, failed: 0 }]);
  });

  test('the repair writes only to kipvs-owned services, and the hand-added services are untouched', () => {
    const { repairOps, foreign } = v();
    expect(repairOps.filter((o: string) => !/ TCP\/10\.96\.0\.\d+:80\b/.test(o))).toEqual([]);
    expect(foreign.after).toEqual(foreign.before);
    expect(foreign.lines).toHaveLength(foreign.added.length);
    expect(v().problems).toEqual([]);
  });
});
