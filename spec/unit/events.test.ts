// Events on Services: the EventRecorder against the test API server through the real client-node
// EventsV1Api, and a whole agent (API server source, in-memory kernel) reporting a bad Service.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type Agent } from '../../lib/agent.js';
import { EventRecorder, MAX_NOTE_BYTES, reasonFor, REPORTING_CONTROLLER, truncateBytes } from '../../lib/events.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { ANNOTATION_SCHEDULER } from '../../lib/proxy/desired.js';
import { TestApiServer, type WireObject } from '../support/apiserver.js';
import { endpointSlice, node, recordingLogger, service, waitFor } from '../support/kube-fixtures.js';

const NODE = 'node-a';

describe('EventRecorder against the API server', () => {
  let server: TestApiServer;
  let clock: number;
  const svc = { namespace: 'team-a', name: 'web', uid: 'uid-1' };
  const make = (extra: Partial<ConstructorParameters<typeof EventRecorder>[0]> = {}) => {
    const log = recordingLogger();
    const recorder = new EventRecorder({ api: server.kubeConfig(), instance: NODE, logger: log.logger, now: () => clock, ...extra });
    return { recorder, log };
  };
  beforeEach(async () => {
    server = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
    clock = Date.parse('2026-01-01T00:00:00Z');
  });
  afterEach(() => server.stop());

  test('a Warning regarding the Service, as events.k8s.io/v1 with a MicroTime eventTime', async () => {
    const { recorder } = make();
    recorder.warn(svc, 'InvalidScheduler', 'bad scheduler');
    await recorder.idle();
    const events = server.all('events');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      apiVersion: 'events.k8s.io/v1', kind: 'Event',
      metadata: { namespace: 'team-a', name: expect.stringMatching(/^web\.[0-9a-f]+$/) },
      type: 'Warning', action: 'Programming', reason: 'InvalidScheduler', note: 'bad scheduler',
      regarding: { apiVersion: 'v1', kind: 'Service', namespace: 'team-a', name: 'web', uid: 'uid-1' },
      reportingController: REPORTING_CONTROLLER, reportingInstance: NODE,
      eventTime: '2026-01-01T00:00:00.000000Z',
    });
    expect(server.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.path} ${r.status}`))
      .toEqual(['POST /apis/events.k8s.io/v1/namespaces/team-a/events 201']);
  });

  test('a repeat within the window patches the series; after it, a new event', async () => {
    const { recorder } = make();
    recorder.warn(svc, 'InvalidScheduler', 'bad scheduler');
    clock += 60_000;
    recorder.warn(svc, 'InvalidScheduler', 'bad scheduler');
    clock += 60_000;
    recorder.warn(svc, 'InvalidScheduler', 'bad scheduler');
    await recorder.idle();
    let events = server.all('events');
    expect(events).toHaveLength(1);
    expect(events[0].series).toEqual({ count: 3, lastObservedTime: '2026-01-01T00:02:00.000000Z' });
    expect(server.requests.filter((r) => r.method === 'PATCH').map((r) => r.status)).toEqual([200, 200]);
    // Another note or reason is another event.
    recorder.warn(svc, 'InvalidScheduler', 'another');
    clock += 11 * 60_000;
    recorder.warn(svc, 'InvalidScheduler', 'bad scheduler');
    await recorder.idle();
    events = server.all('events');
    expect(events).toHaveLength(3);
    expect(recorder.stats).toEqual({ created: 3, patched: 2, failed: 0, dropped: 0 });
  });

  test('a series whose event is gone starts a new event', async () => {
    const { recorder } = make();
    recorder.warn(svc, 'R', 'n');
    await recorder.idle();
    server.delete('events', 'team-a', server.all('events')[0].metadata!.name!);
    recorder.warn(svc, 'R', 'n');
    await recorder.idle();
    expect(server.all('events')).toHaveLength(1);
    expect(recorder.stats).toMatchObject({ created: 2, failed: 0 });
  });

  test('notes are cut to 1 kB; rate-limited per Service; a full queue drops', async () => {
    expect(Buffer.byteLength(truncateBytes('é'.repeat(2000)))).toBeLessThanOrEqual(MAX_NOTE_BYTES);
    expect(truncateBytes('short')).toBe('short');
    const { recorder } = make({ burst: 2, refillMs: 60_000 });
    recorder.warn(svc, 'R', 'x'.repeat(5000));
    for (let i = 0; i < 5; i++) recorder.warn(svc, 'R', `n${i}`);
    recorder.warn({ namespace: 'team-a', name: 'other' }, 'R', 'n');
    await recorder.idle();
    expect(server.all('events')).toHaveLength(3);
    expect(Math.max(...server.all('events').map((e) => Buffer.byteLength(e.note as string)))).toBe(MAX_NOTE_BYTES);
    expect(recorder.stats.dropped).toBe(4);
    clock += 60_000;
    recorder.warn(svc, 'R', 'later');
    await recorder.idle();
    expect(server.all('events')).toHaveLength(4);

    const small = make({ maxQueue: 1 }).recorder;
    for (let i = 0; i < 3; i++) small.warn({ namespace: 'team-a', name: `s${i}` }, 'R', 'n');
    await small.idle();
    expect(small.stats.created + small.stats.dropped).toBe(3);
    expect(small.stats.dropped).toBeGreaterThanOrEqual(1);
  });

  test('a refusal (403) is logged, never thrown', async () => {
    server.setFailure('events', 403);
    const { recorder, log } = make();
    expect(() => recorder.warn(svc, 'R', 'n')).not.toThrow();
    await recorder.idle();
    expect(recorder.stats).toMatchObject({ created: 0, failed: 1 });
    expect(log.entries.filter((e) => e.level === 'warn').map((e) => e.msg)).toEqual([expect.stringContaining('team-a/web not recorded')]);
  });

  test('reasons by error', () => {
    expect(reasonFor({ object: 'Service a/b', reason: `${ANNOTATION_SCHEDULER}: "x" is not a scheduler; keeping the current scheduler` })).toBe('InvalidScheduler');
    expect(reasonFor({ object: 'Service a/b', reason: 'unknown sessionAffinity "Sticky"' })).toBe('InvalidSessionAffinity');
    expect(reasonFor({ object: 'Service a/b', reason: 'http: port 0 is not in 1..65535' })).toBe('InvalidPort');
    expect(reasonFor({ object: 'Service a/b', reason: 'clusterIP "x" is not a valid IP address' })).toBe('InvalidClusterIP');
    expect(reasonFor({ object: 'EndpointSlice a/b-1', reason: 'endpoint 0: address "x" is not valid' })).toBe('InvalidEndpoints');
    expect(reasonFor({ object: 'Service a/b', reason: 'spec is missing' })).toBe('InvalidObject');
  });
});

describe('an agent on the API server', () => {
  let server: TestApiServer;
  let dir: string;
  let agent: Agent | undefined;
  let kernel: FakeKernel;
  let log: ReturnType<typeof recordingLogger>;

  const bad = (): WireObject => {
    const s = service('bad', 'team-a', '10.96.0.99');
    s.metadata!.annotations = { [ANNOTATION_SCHEDULER]: 'no-such-scheduler' };
    return s;
  };
  const regarding = (name: string) => server.all('events').filter((e) => (e.regarding as { name?: string }).name === name);
  const start = async () => {
    const kubeconfig = join(dir, 'kubeconfig');
    server.writeKubeconfig(kubeconfig);
    agent = await startAgent({
      source: 'kube', kubeconfig, nodeName: NODE, configMap: 'kube-system/kipvs', overrides: {},
      syncPeriodMs: 30000, minSyncPeriodMs: 10, logger: log.logger, kernel,
    });
    await agent.ready;
    return agent;
  };
  const vips = () => kernel.table().services.map((s) => s.service.address).sort();

  beforeEach(async () => {
    server = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
    dir = mkdtempSync(join(tmpdir(), 'kipvs-events-'));
    kernel = new FakeKernel();
    log = recordingLogger();
    server.create('nodes', node(NODE));
    server.create('services', service('web'));
    server.create('endpointslices', endpointSlice('web-1', 'web', ['10.244.1.10']));
  });
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('an unknown scheduler annotation: one Warning on that Service, not repeated by later syncs; a valid Service none', async () => {
    const created = server.create('services', bad());
    const a = await start();
    await waitFor(() => regarding('bad').length > 0, 'an event on team-a/bad');
    await a.recorder!.idle();
    const [ev] = regarding('bad');
    expect(ev).toMatchObject({
      metadata: { namespace: 'team-a' }, type: 'Warning', reason: 'InvalidScheduler',
      regarding: { kind: 'Service', namespace: 'team-a', name: 'bad', uid: created.metadata!.uid },
      reportingController: 'kipvs.io/agent', reportingInstance: NODE,
    });
    expect(ev.note).toMatch(/Service team-a\/bad: .*no-such-scheduler/);
    // Programmed anyway, with the default scheduler.
    expect(vips()).toEqual(['10.96.0.10', '10.96.0.99']);

    // More syncs, partial (an endpoint change) and full: no new event, no patch.
    server.create('endpointslices', endpointSlice('web-2', 'web', ['10.244.2.10']));
    await waitFor(() => kernel.table().services.some((s) => s.destinations.length === 2), 'the second endpoint programmed');
    a.reconciler.requestFullSync();
    a.runner.run();
    await new Promise((r) => setTimeout(r, 100));
    await a.recorder!.idle();
    expect(server.all('events')).toHaveLength(1);
    expect(server.requests.filter((r) => r.method === 'PATCH')).toEqual([]);
    expect(regarding('web')).toEqual([]);

    // Fixed, then broken again the same way: the repeat joins the series.
    const fixed = bad();
    fixed.metadata!.annotations = {};
    server.update('services', fixed);
    await waitFor(() => !a.reconciler.objectErrors.has('team-a/bad'), 'the error cleared');
    server.update('services', bad());
    await waitFor(() => server.requests.some((r) => r.method === 'PATCH' && r.status === 200), 'the series patched');
    await a.recorder!.idle();
    expect(server.all('events')).toHaveLength(1);
    expect(server.all('events')[0].series).toMatchObject({ count: 2, lastObservedTime: expect.stringMatching(/\.\d{6}Z$/) });
    expect(log.entries.filter((e) => e.level === 'warn')).toEqual([]);
  });

  test('an API server that refuses Events does not stop programming', async () => {
    server.setFailure('events', 403);
    server.create('services', bad());
    const a = await start();
    await waitFor(() => server.requests.some((r) => r.method === 'POST' && r.status === 403), 'the refused event');
    await a.recorder!.idle();
    expect(vips()).toEqual(['10.96.0.10', '10.96.0.99']);
    expect(log.entries.filter((e) => e.level === 'warn').map((e) => e.msg)).toEqual([expect.stringContaining('team-a/bad not recorded')]);
    // Still programming after it.
    server.create('services', service('db', 'default', '10.96.0.20'));
    await waitFor(() => vips().includes('10.96.0.20'), 'a later Service programmed');
    expect(a.runner.status().consecutiveFailures).toBe(0);
  });

  test('a directory source records no events', async () => {
    const a = await startAgent({
      source: 'dir:manifests/examples', nodeName: NODE, configMap: 'kube-system/kipvs', overrides: {},
      syncPeriodMs: 30000, minSyncPeriodMs: 10, logger: log.logger, kernel,
    });
    agent = a;
    await a.ready;
    expect(a.recorder).toBeUndefined();
  });
});

describe('the test API server\'s Events', () => {
  let server: TestApiServer;
  beforeAll(async () => { server = await new TestApiServer({ bookmarkIntervalMs: 0 }).start(); });
  afterAll(() => server.stop());
  const call = (method: string, path: string, body: unknown, type = 'application/json') =>
    fetch(`${server.url}${path}`, { method, headers: { 'Content-Type': type }, body: JSON.stringify(body) });
  const valid = {
    metadata: { name: 'e1' }, eventTime: '2026-01-01T00:00:00.000000Z', type: 'Warning', action: 'A', reason: 'R',
    reportingController: 'c', reportingInstance: 'i', regarding: { kind: 'Service', namespace: 'default', name: 's' },
  };
  const events = '/apis/events.k8s.io/v1/namespaces/default/events';

  test('creates, refuses what the real server refuses, patches by merge, lists', async () => {
    expect((await call('POST', events, { ...valid, deprecatedSource: { component: 'x' } })).status).toBe(422);
    expect((await call('POST', events, { ...valid, eventTime: undefined })).status).toBe(422);
    expect((await call('POST', events, valid)).status).toBe(201);
    expect((await call('POST', events, valid)).status).toBe(409);
    expect((await call('PATCH', `${events}/e1`, [{ op: 'add', path: '/note', value: 'x' }], 'application/json-patch+json')).status).toBe(415);
    expect((await call('PATCH', `${events}/nope`, { note: 'x' }, 'application/merge-patch+json')).status).toBe(404);
    const res = await call('PATCH', `${events}/e1`, { series: { count: 2, lastObservedTime: '2026-01-01T00:01:00.000000Z' } }, 'application/strategic-merge-patch+json');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ reason: 'R', series: { count: 2 } });
    expect((await call('POST', '/api/v1/namespaces/default/services', { metadata: { name: 'x' } })).status).toBe(405);
    const list = await (await fetch(`${server.url}${events}`)).json();
    expect(list.items.map((e: WireObject) => e.metadata?.name)).toEqual(['e1']);
  });
});
