// KubeSource against the test API server with the real client-node underneath: sync gating, change
// records, no-op suppression, the API server going away, 410 Gone relists, bookmarks, bad objects.

import winston from 'winston';
import { TestApiServer, type ApiServerOptions } from '../support/apiserver.js';
import { configMap, endpointSlice, node, recordingLogger, service, waitFor, type LogEntry } from '../support/kube-fixtures.js';
import { backoffDelay, KubeSource, type KubeSourceOptions } from '../../lib/sources/kube.js';
import type { Logger } from '../../lib/log.js';
import type { Change, SourceError } from '../../lib/sources/types.js';

const NODE = 'node-1';
const FAST = { initialMs: 10, maxMs: 80, jitter: 0 };

let server: TestApiServer;
let source: KubeSource | undefined;
let log: LogEntry[];
let batches: Change[][];
let errors: SourceError[];

async function serve(options: ApiServerOptions = {}): Promise<void> {
  server = await new TestApiServer({ bookmarkIntervalMs: 0, ...options }).start();
}

/** Creates the source and starts it; awaits start() and the four watches unless `wait` is false.
 *  Returns start()'s promise boxed (an async function would flatten it). */
async function begin(options: Partial<KubeSourceOptions> = {}, wait = true): Promise<{ started: Promise<void> }> {
  const rec = recordingLogger();
  log = rec.entries;
  const mine = { batches: [] as Change[][], errors: [] as SourceError[] };
  ({ batches, errors } = mine);
  source = new KubeSource({
    kubeConfig: server.kubeConfig(), nodeName: NODE, configMap: { namespace: 'kipvs', name: 'kipvs' },
    logger: rec.logger, backoff: FAST, ...options,
  });
  const started = source.start((c) => mine.batches.push(c), (e) => mine.errors.push(e));
  if (wait) {
    await started;
    // start() resolves after the lists; the watches may still be connecting.
    await waitFor(() => server.openWatches === 4, 'four open watches');
  }
  return { started };
}

const all = (from = 0): Change[] => batches.slice(from).flat();
const sorted = (cs: Change[]): Change[] => [...cs].sort((a, b) => `${a.kind}${a.key}${a.service}`.localeCompare(`${b.kind}${b.key}${b.service}`));
const requestsFor = (path: string, watch: boolean) => server.requests.filter((r) => r.path === path && r.watch === watch);
const SERVICES = '/api/v1/services';

afterEach(async () => {
  await source?.stop();
  source = undefined;
  await server.stop();
});

describe('KubeSource', () => {
  test('start() resolves only once Services and EndpointSlices are both listed, with earlier objects reported', async () => {
    await serve();
    server.create('services', service('web'));
    server.create('endpointslices', endpointSlice('web-abc', 'web', ['10.0.1.1']));
    server.create('nodes', node(NODE));
    server.create('nodes', node('node-2'));
    server.create('configmaps', configMap('kipvs', 'kipvs', { scheduler: 'rr' }));
    server.create('configmaps', configMap('kipvs', 'other', {}));
    server.setFailure('endpointslices', 503);
    let resolved = false;
    const started = (await begin({}, false)).started.then(() => { resolved = true; });
    await waitFor(() => requestsFor('/apis/discovery.k8s.io/v1/endpointslices', false).length >= 3
      && requestsFor('/api/v1/nodes', true).length === 1 && requestsFor(SERVICES, true).length === 1, 'slice list retries');
    expect(source!.synced()).toBe(false);
    expect(resolved).toBe(false);
    expect(batches).toEqual([]);
    expect(log.filter((e) => e.level === 'warn').map((e) => e.meta)).toContainEqual(expect.objectContaining({ kind: 'EndpointSlice', code: 503 }));

    server.setFailure('endpointslices', undefined);
    await started;
    expect(source!.synced()).toBe(true);
    const snap = source!.snapshot();
    expect([...snap.services.keys()]).toEqual(['default/web']);
    expect([...snap.endpointSlices.keys()]).toEqual(['default/web-abc']);
    expect(snap.node?.metadata?.name).toBe(NODE);
    expect(snap.configMap?.data).toEqual({ scheduler: 'rr' });
    expect(batches).toHaveLength(1);
    expect(sorted(batches[0])).toEqual([
      { kind: 'ConfigMap', key: 'kipvs/kipvs' },
      { kind: 'EndpointSlice', key: 'default/web-abc', service: 'default/web' },
      { kind: 'Node', key: NODE },
      { kind: 'Service', key: 'default/web' },
    ]);
    expect(server.requests.find((r) => r.path === '/api/v1/nodes')?.query.fieldSelector).toBe(`metadata.name=${NODE}`);
  });

  test('adds, updates and deletes become Change records and the snapshot follows', async () => {
    await serve();
    await begin();
    expect(batches).toEqual([]);
    const step = async (act: () => void, expected: Change[]) => {
      const from = batches.length;
      act();
      await waitFor(() => all(from).length >= expected.length, `changes ${JSON.stringify(expected)}`);
      await new Promise((r) => setImmediate(r));
      expect(sorted(all(from))).toEqual(sorted(expected));
    };
    await step(() => server.create('services', service('web', 'shop')), [{ kind: 'Service', key: 'shop/web' }]);
    await step(() => server.create('endpointslices', endpointSlice('web-1', 'web', ['10.0.1.1'], 'shop')),
      [{ kind: 'EndpointSlice', key: 'shop/web-1', service: 'shop/web' }]);
    await step(() => server.update('endpointslices', endpointSlice('web-1', 'web', ['10.0.1.1', '10.0.1.2'], 'shop')),
      [{ kind: 'EndpointSlice', key: 'shop/web-1', service: 'shop/web' }]);
    expect(source!.snapshot().endpointSlices.get('shop/web-1')?.endpoints.map((e) => e.addresses[0])).toEqual(['10.0.1.1', '10.0.1.2']);
    // A slice that moves to another service is a change for both.
    await step(() => server.update('endpointslices', endpointSlice('web-1', 'api', ['10.0.1.1'], 'shop')), [
      { kind: 'EndpointSlice', key: 'shop/web-1', service: 'shop/web' },
      { kind: 'EndpointSlice', key: 'shop/web-1', service: 'shop/api' }]);
    await step(() => server.create('endpointslices', { ...endpointSlice('loose', 'x', []), metadata: { name: 'loose', namespace: 'shop' } }),
      [{ kind: 'EndpointSlice', key: 'shop/loose' }]);
    await step(() => server.create('nodes', node(NODE)), [{ kind: 'Node', key: NODE }]);
    await step(() => server.update('nodes', node(NODE, '192.168.1.99')), [{ kind: 'Node', key: NODE }]);
    await step(() => { server.create('configmaps', configMap('kipvs', 'other', {})); server.create('configmaps', configMap('kipvs', 'kipvs', { a: '1' })); },
      [{ kind: 'ConfigMap', key: 'kipvs/kipvs' }]);
    await step(() => server.delete('services', 'shop', 'web'), [{ kind: 'Service', key: 'shop/web' }]);
    await step(() => server.delete('configmaps', 'kipvs', 'kipvs'), [{ kind: 'ConfigMap', key: 'kipvs/kipvs' }]);
    const snap = source!.snapshot();
    expect([...snap.services.keys()]).toEqual([]);
    expect(snap.configMap).toBeUndefined();
    expect(snap.node?.status?.addresses?.[0].address).toBe('192.168.1.99');
  });

  test('an unchanged re-put, a write that only bumps resourceVersion, and a relist that finds nothing new report nothing', async () => {
    await serve();
    server.create('services', service('web'));
    await begin();
    const from = batches.length;
    server.update('services', service('web'));
    const bumped = server.update('services', service('web'), { force: true });
    server.compact();
    server.closeWatches();
    await waitFor(() => requestsFor(SERVICES, false).length === 2 && requestsFor(SERVICES, true).length >= 3, 'relist');
    server.create('services', service('marker'));
    await waitFor(() => all(from).length > 0, 'marker change');
    expect(all(from)).toEqual([{ kind: 'Service', key: 'default/marker' }]);
    expect(source!.snapshot().services.get('default/web')?.metadata?.resourceVersion).toBe(bumped.metadata!.resourceVersion);
  });

  test('keeps its objects while the API server is away, retries with capped backoff, then converges', async () => {
    await serve();
    server.create('services', service('web'));
    server.create('services', service('old'));
    server.create('endpointslices', endpointSlice('web-1', 'web', ['10.0.1.1']));
    await begin();
    const from = batches.length;
    const lists = requestsFor(SERVICES, false).length;
    const resumeRv = server.resourceVersion;
    await server.stop();
    const retries = () => log.filter((e) => e.level === 'warn' && e.meta?.kind === 'Service').map((e) => e.meta!.retryInMs);
    await waitFor(() => retries().length >= 6, 'six Service retries');
    expect(retries().slice(0, 6)).toEqual([10, 20, 40, 80, 80, 80]);
    expect(source!.synced()).toBe(true);
    expect([...source!.snapshot().services.keys()].sort()).toEqual(['default/old', 'default/web']);
    expect(source!.snapshot().endpointSlices.size).toBe(1);

    server.delete('services', 'default', 'old');
    server.create('services', service('api'));
    server.update('endpointslices', endpointSlice('web-1', 'web', ['10.0.1.2']));
    await server.start();
    await waitFor(() => all(from).length >= 3, 'convergence');
    await new Promise((r) => setImmediate(r));
    expect(sorted(all(from))).toEqual([
      { kind: 'EndpointSlice', key: 'default/web-1', service: 'default/web' },
      { kind: 'Service', key: 'default/api' }, { kind: 'Service', key: 'default/old' }]);
    expect([...source!.snapshot().services.keys()].sort()).toEqual(['default/api', 'default/web']);
    // Resumed by watching from the last resourceVersion: no relist was needed.
    expect(requestsFor(SERVICES, false)).toHaveLength(lists);
    expect(requestsFor(SERVICES, true).at(-1)?.query.resourceVersion).toBe(resumeRv);
    await waitFor(() => log.some((e) => e.msg === 'watch re-established' && e.meta?.kind === 'Service'), 'recovery logged');
  });

  test.each(['event', 'status'] as const)('a 410 Gone (as %s) relists and converges, deletions in the gap included', async (expiredAs) => {
    await serve({ expiredAs });
    server.create('services', service('web'));
    server.create('services', service('old'));
    server.create('endpointslices', endpointSlice('old-1', 'old', ['10.0.2.1']));
    await begin();
    const from = batches.length;
    // One synchronous step: the source cannot reconnect before the history is gone.
    server.closeWatches();
    server.delete('services', 'default', 'old');
    server.delete('endpointslices', 'default', 'old-1');
    server.update('services', service('web', 'default', '10.96.0.77'));
    server.create('services', service('api'));
    server.compact();
    await waitFor(() => all(from).length >= 4, 'convergence');
    await new Promise((r) => setImmediate(r));
    expect(sorted(all(from))).toEqual([
      { kind: 'EndpointSlice', key: 'default/old-1', service: 'default/old' },
      { kind: 'Service', key: 'default/api' }, { kind: 'Service', key: 'default/old' }, { kind: 'Service', key: 'default/web' }]);
    const snap = source!.snapshot();
    expect([...snap.services.keys()].sort()).toEqual(['default/api', 'default/web']);
    expect(snap.services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.77');
    expect(snap.endpointSlices.size).toBe(0);
    expect(requestsFor(SERVICES, false)).toHaveLength(2);
    expect(log).toContainEqual(expect.objectContaining({ msg: 'relisting', meta: expect.objectContaining({ kind: 'Service' }) }));
  });

  test('a history compacted while the API server was away ends in a relist too', async () => {
    await serve();
    server.create('services', service('web'));
    server.create('services', service('old'));
    await begin();
    const from = batches.length;
    await server.stop();
    await waitFor(() => log.some((e) => e.level === 'warn' && e.meta?.kind === 'Service'), 'a retry');
    server.delete('services', 'default', 'old');
    server.compact();
    await server.start();
    await waitFor(() => all(from).length >= 1, 'deletion');
    expect(all(from)).toEqual([{ kind: 'Service', key: 'default/old' }]);
    expect([...source!.snapshot().services.keys()]).toEqual(['default/web']);
  });

  test('bookmarks are asked for, produce no change, and move the resume point forward', async () => {
    await serve();
    server.create('services', service('web'));
    await begin();
    const from = batches.length;
    expect(requestsFor(SERVICES, true)[0].query.allowWatchBookmarks).toBe('true');
    server.create('nodes', node('node-2')); // another node: not seen, but the resourceVersion moves on
    server.create('configmaps', configMap('default', 'unrelated', {}));
    const rv = server.resourceVersion;
    server.bookmark();
    server.closeWatches(); // the bookmark is read before the end of the stream
    await waitFor(() => requestsFor(SERVICES, true).length === 2, 'rewatch');
    expect(requestsFor(SERVICES, true)[1].query.resourceVersion).toBe(rv);
    expect(all(from)).toEqual([]);
  });

  test('objects without a name are reported through onError, by kind and namespace, and skipped', async () => {
    await serve();
    server.create('services', { metadata: { namespace: 'shop' }, spec: {} }, { validate: false });
    server.create('services', service('web'));
    await begin();
    expect(errors).toEqual([{ object: 'Service shop/<no name>', reason: expect.stringMatching(/metadata.name/) }]);
    expect([...source!.snapshot().services.keys()]).toEqual(['default/web']);
    server.create('endpointslices', { metadata: { namespace: 'shop' }, addressType: 'IPv4', endpoints: [] }, { validate: false });
    server.create('endpointslices', endpointSlice('web-1', 'web', []));
    await waitFor(() => all().some((c) => c.key === 'default/web-1'), 'valid slice');
    expect(errors.map((e) => e.object)).toEqual(['Service shop/<no name>', 'EndpointSlice shop/<no name>']);
    expect(all().map((c) => c.key).sort()).toEqual(['default/web', 'default/web-1']);
  });

  test('a watch that stays silent for watchIdleMs is reopened from the same resourceVersion', async () => {
    await serve();
    await begin({ watchIdleMs: 40 });
    const rv = requestsFor(SERVICES, true)[0].query.resourceVersion;
    await waitFor(() => requestsFor(SERVICES, true).length >= 2, 'reopened watch');
    expect(requestsFor(SERVICES, true)[1].query.resourceVersion).toBe(rv);
    expect(requestsFor(SERVICES, false)).toHaveLength(1);
    expect(log).toContainEqual(expect.objectContaining({ level: 'warn', meta: expect.objectContaining({ error: expect.stringMatching(/silent for 40 ms/) }) }));
  });

  test('stop() before sync rejects start(); after stop() no callbacks and no open watches', async () => {
    await serve();
    server.setFailure('services', 500);
    const { started: pending } = await begin({}, false);
    await waitFor(() => requestsFor(SERVICES, false).length >= 1, 'a failed list');
    await source!.stop();
    await expect(pending).rejects.toThrow(/stopped/);

    server.setFailure('services', undefined);
    await begin();
    await source!.stop();
    await source!.stop(); // idempotent
    await waitFor(() => server.openWatches === 0, 'watches closed');
    const seen = batches.length;
    server.create('services', service('late'));
    await new Promise((r) => setTimeout(r, 30));
    expect(batches).toHaveLength(seen);
  });

  test('snapshot objects are client-node models whether listed or watched', async () => {
    await serve();
    server.create('services', service('listed'));
    await begin();
    server.create('services', service('watched'));
    await waitFor(() => source!.snapshot().services.has('default/watched'), 'watched service');
    for (const key of ['default/listed', 'default/watched']) {
      expect(source!.snapshot().services.get(key)?.metadata?.creationTimestamp).toBeInstanceOf(Date);
    }
  });

  test('accepts a winston logger', async () => {
    await serve();
    const logger: Logger = winston.createLogger({ silent: true });
    await begin({ logger });
    expect(source!.synced()).toBe(true);
  });
});

describe('backoffDelay', () => {
  test('doubles from initialMs up to maxMs, then adds up to jitter × delay', () => {
    const b = { initialMs: 1000, maxMs: 30000, jitter: 0 };
    expect([0, 1, 2, 3, 4, 5, 6, 60].map((n) => backoffDelay(b, n, Math.random)))
      .toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    expect(backoffDelay({ ...b, jitter: 0.2 }, 0, () => 0.999)).toBe(1200);
    expect(backoffDelay({ ...b, jitter: 0.2 }, 9, () => 0.5)).toBe(33000);
  });
});
