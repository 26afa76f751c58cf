// Assertions on what the graceful termination scenario (graceful.scenarios.ts) observed on the real
// kernel: live TCP connections from a client namespace through the VIP to two backends while one
// endpoint is removed, restored, removed again and its connections reset, then the other is removed
// and drains until the maximum wait. Counts are the kernel's (ipvsadm -Ln, ipvsadm -Lnc).
import { scenario } from './results.js';

const DRAINS = 'graceful: a removed endpoint drains under live TCP connections, UDP goes at once, a returning one is restored, max wait bounds it';
const A = '10.244.1.5';
const B = '10.244.1.6';
/** Generous bound on a convergence under TCG (figures are printed). */
const CONVERGE_MS = 10_000;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const r = (): any => scenario(DRAINS);

test('figures', () => {
  const s = r();
  console.log([
    `graceful termination on a real kernel (${s.totalMs} ms in all):`,
    `  connections: ${s.backendOf.join(', ')}`,
    `  removal -> weight 0: ${s.removed.ms} ms (${s.removed.tcpA?.active} active on A); restore: ${s.restored.ms} ms; removed again: ${s.removedAgain.ms} ms`,
    `  RST -> no connection counted on A: ${s.zeroMs} ms; -> A deleted: ${s.goneMs} ms (${s.goneAfterZeroMs} ms after the count reached 0); states after the RST: ${s.afterReset.states.join(' ')}`,
    `  B removed -> deleted at the maximum wait of ${s.maxWaitMs} ms: ${s.bGoneMs} ms (it had ${s.removedB.tcpB?.active} active, ${s.removedB.tcpB?.inactive} inactive: ${s.removedB.states?.join(' ')})`,
    ...s.drainLog.map((l: string) => `  log ${l}`),
  ].join('\n'));
});

test('the four connections are spread over both backends', () => {
  const s = r();
  expect(s.start).toBe(true);
  expect(s.backendOf.filter((b: string) => b === A).length).toBeGreaterThan(0);
  expect(s.backendOf.filter((b: string) => b === B).length).toBeGreaterThan(0);
});

test('a removed endpoint: TCP real server at weight 0 with its active connections, UDP real server deleted at once', () => {
  const s = r();
  const onA = s.backendOf.filter((b: string) => b === A).length;
  expect(s.udpBefore.A?.inactive + s.udpBefore.A?.active).toBeGreaterThan(0);
  expect(s.removed.converged).toBe(true);
  expect(s.removed.ms).toBeLessThan(CONVERGE_MS);
  expect(s.removed.tcpA).toMatchObject({ weight: 0, active: onA });
  expect(s.removed.gauge).toBe(1);
});

test('while it drains every connection keeps echoing, none is reset, and new connections go only to the other backend', () => {
  const s = r();
  expect(s.afterRemoval.every((n: number) => n >= 5)).toBe(true);
  expect(s.troublesBeforeReset).toEqual([[], [], [], []]);
  expect(s.fresh).toEqual(['hi-1', 'hi-2', 'hi-3', 'hi-4', 'hi-5', 'hi-6']);
  expect(s.freshBackends).toEqual(Array(6).fill(`${B}:8080`));
});

test('an endpoint that returns while draining gets weight 1 back, its connections still there', () => {
  const s = r();
  const onA = s.backendOf.filter((b: string) => b === A).length;
  expect(s.restored.converged).toBe(true);
  expect(s.restored.ms).toBeLessThan(CONVERGE_MS);
  expect(s.restored.tcpA).toMatchObject({ weight: 1, active: onA });
  expect(s.drainLog.some((l: string) => l.startsWith(`info: real server TCP/10.96.0.10:80 -> ${A}:8080 is an endpoint again`))).toBe(true);
});

test('once the kernel counts no connection on the draining real server it is deleted within 2.5 s', () => {
  const s = r();
  expect(s.removedAgain.converged).toBe(true);
  expect(s.afterReset.tcpA).toMatchObject({ weight: 0, active: 0 });
  expect(s.zeroMs).not.toBeNull();
  expect(s.goneMs).not.toBeNull();
  expect(s.goneAfterZeroMs).toBeLessThan(2500);
  expect(s.afterA.state.services).toEqual([`TCP  10.96.0.10:80 rr -> ${B}:8080 Masq 1`, `UDP  10.96.0.10:53 rr -> ${B}:5353 Masq 1`]);
  expect(s.afterA.gauge).toBe(0);
  expect(s.bStillEchoes.every((n: number) => n >= 3)).toBe(true);
  expect(s.drainLog).toContainEqual(expect.stringMatching(new RegExp(`^info: real server TCP/10.96.0.10:80 -> ${A.replace(/\./g, '\\.')}:8080 deleted: its connections ended`)));
});

test('a real server whose connections stay is deleted at the maximum wait, not before, with a warning', () => {
  const s = r();
  expect(s.removedB.converged).toBe(true);
  expect(s.removedB.tcpB.weight).toBe(0);
  expect(s.removedB.tcpB.active).toBeGreaterThan(0);
  expect(s.whileBDrains.every((n: number) => n >= 3)).toBe(true);
  expect(s.troublesOnBWhileDraining.every((t: string[]) => t.length === 0)).toBe(true);
  expect(s.bGoneMs).toBeGreaterThanOrEqual(s.maxWaitMs);
  expect(s.bGoneMs).toBeLessThan(s.maxWaitMs + 5000);
  expect(s.afterB.state.services).toEqual(['TCP  10.96.0.10:80 rr', 'UDP  10.96.0.10:53 rr']);
  expect(s.problems).toEqual([
    expect.stringMatching(new RegExp(`^warn: real server TCP/10.96.0.10:80 -> ${B.replace(/\./g, '\\.')}:8080 deleted after the maximum wait of 15.0 s with [1-9]\\d* active`)),
  ]);
});
