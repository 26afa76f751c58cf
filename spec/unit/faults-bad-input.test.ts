// Bad input under load (issue 6): thousands of random objects (the fast-check arbitraries of
// spec/support/arbitraries.ts) streamed into the test API server among valid Services, read by the
// real agent (startAgent: the KubeSource with @kubernetes/client-node, the Reconciler, the runner)
// programming an in-memory kernel. What a user must see: the agent never crashes, every valid Service
// is programmed exactly, each malformed object is reported (naming it) once and never again however
// many syncs follow, and valid objects are never reported. Seeded (KIPVS_BAD_INPUT_SEED=n replays one).
import fc from 'fast-check';
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startAgent, type Agent } from '../../lib/agent.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { DUMMY_LINK, Reconciler } from '../../lib/proxy/reconciler.js';
import { KubeSource } from '../../lib/sources/kube.js';
import { TestApiServer, type Resource, type WireObject } from '../support/apiserver.js';
import * as A from '../support/arbitraries.js';
import { captureLogger } from '../support/logger.js';
import { MemorySource, service, slice } from '../support/memory-source.js';

const SEED = Number(process.env.KIPVS_BAD_INPUT_SEED ?? 20261123);
const VALID = 150;
const MUTATED = 150;
const BAD_SLICES = 300;
const JUNK = 1600;
const BATCH = 100;
const DEFAULTS: A.ExpectedConfig = { scheduler: 'rr', flags: [], timeouts: { tcp: 0, tcpFin: 0, udp: 0 } };

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The cases: valid Services and their slices, malformed Services, bad slices of valid Services, junk. */
function cases(): { all: A.Case[]; expected: A.ServiceModel[] } {
  const sample = <T>(arb: fc.Arbitrary<T>, n: number, salt: number) => fc.sample(arb, { seed: SEED + salt, numRuns: n });
  const valid = sample(A.serviceDraft(), VALID, 1).map((d, i) => A.place(d, 'default', `web-${i}`, A.VALID_VIPS, { 4: i, 6: i }));
  const mutated = sample(A.mutatedDraft(), MUTATED, 2).map((d, i) => A.mutate(d, 'team-a', `bad-${i}`, A.MUTATED_VIPS, { 4: i, 6: i }));
  const expected = [...valid, ...mutated.flatMap((m) => (m.expect ? [m.expect] : []))];
  const targets = expected.filter(A.isProgrammable);
  const badSlices = sample(fc.tuple(fc.nat(targets.length - 1), fc.nat(1), fc.nat(2), fc.boolean()), BAD_SLICES, 3).flatMap(([t, f, p, random], k) => {
    const svc = targets[t];
    const family = svc.families[f % svc.families.length];
    const port = svc.ports[p % svc.ports.length].name;
    return random
      ? sample(A.randomSliceOf(svc, `junk${k}`), 1, 100 + k).map(A.junkCase)
      : sample(A.badSlice(family, port), 1, 100 + k).map((bad) => A.badSliceCase(svc, family, port, `bad${k}`, bad, true));
  });
  const junk = sample(fc.oneof(A.plausibleService(A.JUNK_VIPS), A.randomObject('Service'), A.plausibleSlice, A.randomObject('EndpointSlice')), JUNK, 4)
    .filter((o) => isRecord(o.metadata)) // the API server only stores objects with metadata
    .map(A.junkCase);
  const modelled = [...valid.flatMap(A.validCases), ...mutated.flatMap((m) => m.cases), ...badSlices];
  const taken = new Set(modelled.map((c) => c.label));
  // Shuffled, seeded: valid, malformed and junk objects interleaved in the stream.
  const all = [...modelled, ...junk.filter((c) => !taken.has(c.label))];
  const order = sample(fc.shuffledSubarray(all.map((_, i) => i), { minLength: all.length, maxLength: all.length }), 1, 5)[0];
  return { all: order.map((i) => all[i]), expected };
}

/** JSON with keys sorted, for comparisons where key order does not matter. */
const stable = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) =>
  isRecord(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a.localeCompare(b))) : x);

/**
 * What the client model (which both sources read objects through) makes of `o`: 'same' when it reads
 * it back unchanged, 'throws' when it cannot read it (the source reports it), 'changed' when it reads
 * it as another object (`spec: 5` becomes `spec: {}`): a malformation that never reaches the agent as
 * such (a real API server, which validates types, would not have served it anyway).
 */
function throughTheModel(o: A.Json): 'same' | 'changed' | 'throws' {
  const model = o.kind === 'Service' ? 'V1Service' : 'V1EndpointSlice';
  try {
    return stable(ObjectSerializer.serialize(ObjectSerializer.deserialize(o, model, ''), model, '')) === stable(o) ? 'same' : 'changed';
  } catch {
    return 'throws';
  }
}

const named = (o: A.Json) => isRecord(o.metadata) && typeof o.metadata.name === 'string' && o.metadata.name !== '';

const resourceOf = (o: A.Json): Resource => (o.kind === 'Service' ? 'services' : 'endpointslices');

/** Writes one object as a client would: create it, or replace what is stored under its key. */
function write(api: TestApiServer, o: A.Json): void {
  const meta = o.metadata as { name?: unknown };
  try {
    api.create(resourceOf(o), o as WireObject, { validate: typeof meta.name === 'string' && meta.name !== '' });
  } catch (err) {
    if (!/already exists/.test((err as Error).message)) throw err;
    api.update(resourceOf(o), o as WireObject, { force: true });
  }
}

test(`${VALID} valid Services among thousands of bad objects, streamed through the API server into the agent`, async () => {
  const { all, expected } = cases();
  console.log(`bad input under load: seed ${SEED}, ${all.length} objects (${all.filter((c) => c.valid).length} valid, ${all.filter((c) => c.report).length} to report, ${all.filter((c) => !c.valid && !c.report).length} junk)`);
  expect(all.length).toBeGreaterThan(2000);
  const api = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
  const kubeconfig = `${tmpdir()}/kipvs-faults-bad-input-${process.pid}.kubeconfig`;
  api.writeKubeconfig(kubeconfig);
  const logger = captureLogger();
  const kernel = new FakeKernel();
  let agent: Agent | undefined;
  try {
    agent = await startAgent({
      source: 'kube', kubeconfig, nodeName: 'node-1', configMap: 'kube-system/kipvs', kernel,
      overrides: {}, syncPeriodMs: 300, minSyncPeriodMs: 20, logger,
    });
    await agent.ready;
    // The stream: batches of objects, the agent syncing in between.
    for (let i = 0; i < all.length; i += BATCH) {
      for (const c of all.slice(i, i + BATCH)) write(api, c.object);
      await sleep(30);
    }
    // Until every valid Service is programmed (bounded), then a few more full syncs.
    const want = A.expectedKernel(expected, DEFAULTS);
    const table = () => A.tableLines(kernel.table(), (k) => !A.atJunkVip(k));
    const vips = () => kernel.localAddresses().filter((a) => a.ifname === DUMMY_LINK && !A.atJunkVip(a.address)).map((a) => `${a.address}/${a.prefixLength}`).sort();
    for (const t0 = Date.now(); Date.now() - t0 < 30_000 && JSON.stringify([table(), vips()]) !== JSON.stringify([want.table, want.vips]);) await sleep(50);
    const logged = logger.lines.length;
    const syncsBefore = agent.runner.status().lastEnd;
    await sleep(1500);
    expect(agent.runner.status().lastEnd).not.toBe(syncsBefore);

    expect(table()).toEqual(want.table);
    expect(vips()).toEqual(want.vips);
    expect(agent.runner.status().consecutiveFailures).toBe(0);
    // Each malformed object is reported, naming it; valid ones never are.
    const errors = logger.lines.filter((l) => l.level === 'error').map((l) => l.msg);
    const labelled = (label: string) => errors.filter((m) => m.startsWith(`${label}: `));
    const mustReport = all.filter((c) => c.report && named(c.object) && throughTheModel(c.object) !== 'changed');
    console.log(`${mustReport.length} malformed objects reach the agent as such; ${all.filter((c) => c.report).length - mustReport.length} others the client model reads as something else, or lack a name`);
    expect(mustReport.length).toBeGreaterThan(200);
    expect(mustReport.filter((c) => labelled(c.label).length === 0).map((c) => `${c.label} (${c.what})`)).toEqual([]);
    // Nameless ones are reported by kind and namespace.
    for (const c of all.filter((x) => x.report && !named(x.object))) expect(errors.some((m) => m.startsWith(`${c.object.kind} ${c.object.metadata?.namespace ?? 'default'}/<no name>: `))).toBe(true);
    expect(all.filter((c) => c.valid && labelled(c.label).length > 0).map((c) => c.label)).toEqual([]);
    // Once: no report of a modelled object repeats, and later syncs report nothing new.
    const modelledLabels = new Set(all.filter((c) => c.valid || c.report).map((c) => c.label));
    const modelledErrors = errors.filter((m) => [...modelledLabels].some((l) => m.startsWith(`${l}: `)));
    expect(modelledErrors.filter((m, i) => modelledErrors.indexOf(m) !== i)).toEqual([]);
    // (Warnings may still come in: Events for junk Services that the test API server refuses to record.)
    expect(logger.lines.slice(logged).filter((l) => l.level === 'error')).toEqual([]);
  } finally {
    await agent?.stop();
    await api.stop();
    rmSync(kubeconfig, { force: true });
  }
}, 90_000);

// ---- the two defects the load test found, as examples --------------------------------------------

test('a watched object with a field the client model cannot read (ports: 5) is reported and skipped; the watch goes on', async () => {
  const api = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
  const logger = captureLogger();
  const errors: string[] = [];
  const source = new KubeSource({ kubeConfig: api.kubeConfig(), nodeName: 'node-1', logger });
  try {
    await source.start(() => undefined, (e) => errors.push(`${e.object}: ${e.reason}`));
    api.create('endpointslices', { metadata: { name: 'web-a', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', ports: 5, endpoints: [] });
    api.create('services', { metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }] } });
    // Services and EndpointSlices come over separate watches: wait for both.
    for (const t0 = Date.now(); Date.now() - t0 < 5000 && !(source.snapshot().services.has('default/web') && errors.length);) await sleep(10);
    expect(source.snapshot().services.has('default/web')).toBe(true);
    expect(source.snapshot().endpointSlices.has('default/web-a')).toBe(false);
    expect(errors).toEqual([expect.stringMatching(/^EndpointSlice default\/web-a: .+; object skipped$/)]);
  } finally {
    await source.stop();
    await api.stop();
  }
});

test('a Service whose second slice arrives with its own error reports that one only, not again the first', async () => {
  const source = new MemorySource();
  const logger = captureLogger();
  const rec = new Reconciler({ kernel: new FakeKernel(), source, logger });
  await source.start((c) => rec.noteChanges(c));
  const bad = (suffix: string, address: string) => slice('web', suffix, [address], [{ name: 'http', port: 8080 }]);
  source.put(service('web', '10.96.0.10', [{ name: 'http', port: 80 }]), bad('a', '10.0.0.256'));
  await rec.sync();
  source.put(bad('b', '1.2.3'));
  await rec.sync();
  await rec.sync({ full: true });
  expect(logger.errors()).toEqual([
    expect.stringMatching(/^EndpointSlice default\/web-a: .*10\.0\.0\.256/),
    expect.stringMatching(/^EndpointSlice default\/web-b: .*1\.2\.3/),
  ]);
});
