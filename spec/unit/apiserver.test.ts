// The test API server speaks the wire protocol the real one does (checked here over raw HTTP), and the
// real client-node informer runs against it; the last block pins down client-node's ListWatch
// behaviour that lib/sources/kube.ts relies on or works around.

import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig, makeInformer, type V1Service } from '@kubernetes/client-node';
import { TestApiServer, type WireObject } from '../support/apiserver.js';
import { configMap, endpointSlice, node, service, waitFor } from '../support/kube-fixtures.js';

interface WatchStream { status: number; events: { type: string; object: WireObject }[]; ended: boolean; close(): void }

/** Opens a raw watch; resolves once the response headers arrived. */
function watch(server: TestApiServer, path: string): Promise<WatchStream> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${server.url}${path}`, (res) => {
      const s: WatchStream = { status: res.statusCode ?? 0, events: [], ended: false, close: () => req.destroy() };
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          s.events.push(JSON.parse(buf.slice(0, i)));
          buf = buf.slice(i + 1);
        }
      });
      res.on('close', () => { s.ended = true; });
      resolve(s);
    });
    req.on('error', reject);
  });
}

async function get(server: TestApiServer, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${server.url}${path}`);
  return { status: res.status, body: await res.json() };
}

describe('test API server', () => {
  let server: TestApiServer;
  beforeEach(async () => { server = await new TestApiServer({ bookmarkIntervalMs: 0 }).start(); });
  afterEach(async () => { await server.stop(); });

  test('lists across and within namespaces with the list resourceVersion; items carry no kind', async () => {
    server.create('services', service('b', 'default'));
    server.create('services', service('a', 'kube-system'));
    server.create('endpointslices', endpointSlice('b-1', 'b', ['10.0.0.1']));
    const all = await get(server, '/api/v1/services');
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ kind: 'ServiceList', apiVersion: 'v1', metadata: { resourceVersion: server.resourceVersion } });
    expect(all.body.items.map((o: WireObject) => o.metadata!.name)).toEqual(['b', 'a']);
    expect(all.body.items[0].kind).toBeUndefined();
    expect(all.body.items[0].metadata).toMatchObject({ uid: expect.any(String), resourceVersion: '2', creationTimestamp: expect.stringMatching(/Z$/) });
    const ns = await get(server, '/api/v1/namespaces/kube-system/services');
    expect(ns.body.items.map((o: WireObject) => o.metadata!.name)).toEqual(['a']);
    const slices = await get(server, '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices');
    expect(slices.body).toMatchObject({ kind: 'EndpointSliceList', apiVersion: 'discovery.k8s.io/v1' });
    expect(slices.body.items).toHaveLength(1);
    expect((await get(server, '/api/v1/namespaces/default/services/b')).body).toMatchObject({ kind: 'Service', metadata: { name: 'b' } });
  });

  test('field and label selectors filter lists', async () => {
    server.create('nodes', node('n1'));
    server.create('nodes', node('n2'));
    server.create('configmaps', configMap('kipvs', 'kipvs', { a: '1' }));
    server.create('configmaps', configMap('kipvs', 'other', {}));
    server.create('endpointslices', endpointSlice('x-1', 'x', []));
    server.create('endpointslices', endpointSlice('y-1', 'y', []));
    const names = async (path: string) => (await get(server, path)).body.items.map((o: WireObject) => o.metadata!.name);
    expect(await names('/api/v1/nodes?fieldSelector=metadata.name%3Dn2')).toEqual(['n2']);
    expect(await names('/api/v1/nodes?fieldSelector=metadata.name!%3Dn2')).toEqual(['n1']);
    expect(await names('/api/v1/namespaces/kipvs/configmaps?fieldSelector=metadata.name%3Dkipvs')).toEqual(['kipvs']);
    expect(await names('/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dy')).toEqual(['y-1']);
  });

  test('watch replays history after the given resourceVersion, then streams ADDED/MODIFIED/DELETED', async () => {
    const a = server.create('services', service('a'));
    server.create('services', service('b'));
    server.create('nodes', node('n1')); // another resource: not on this watch
    const w = await watch(server, `/api/v1/services?watch=true&resourceVersion=${a.metadata!.resourceVersion}`);
    expect(w.status).toBe(200);
    server.update('services', { ...service('a', 'default', '10.96.0.99') });
    server.delete('services', 'default', 'b');
    await waitFor(() => w.events.length === 3, 'three events');
    expect(w.events.map((e) => [e.type, e.object.metadata!.name, e.object.kind])).toEqual([
      ['ADDED', 'b', 'Service'], ['MODIFIED', 'a', 'Service'], ['DELETED', 'b', 'Service']]);
    const rvs = w.events.map((e) => Number(e.object.metadata!.resourceVersion));
    expect(rvs).toEqual([...rvs].sort((x, y) => x - y));
    expect(rvs[2]).toBe(Number(server.resourceVersion));
    w.close();
  });

  test('watch without a resourceVersion starts with the current objects as ADDED', async () => {
    server.create('services', service('a'));
    const w = await watch(server, '/api/v1/services?watch=1');
    await waitFor(() => w.events.length === 1, 'synthetic ADDED');
    expect(w.events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'a' } } });
    w.close();
  });

  test('a watch with a label selector sees an object leave and join it', async () => {
    server.create('endpointslices', endpointSlice('s', 'x', []));
    const w = await watch(server, `/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=${server.resourceVersion}&labelSelector=kubernetes.io%2Fservice-name%3Dx`);
    server.update('endpointslices', endpointSlice('s', 'y', []));
    server.update('endpointslices', endpointSlice('s', 'x', []));
    await waitFor(() => w.events.length === 2, 'two events');
    expect(w.events.map((e) => e.type)).toEqual(['DELETED', 'ADDED']);
    w.close();
  });

  test('bookmarks go only to watches that asked, carrying the current resourceVersion', async () => {
    const plain = await watch(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    const asked = await watch(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}&allowWatchBookmarks=true`);
    server.create('nodes', node('n1'));
    server.bookmark();
    await waitFor(() => asked.events.length === 1, 'bookmark');
    expect(asked.events[0]).toEqual({ type: 'BOOKMARK', object: { apiVersion: 'v1', kind: 'Service', metadata: { resourceVersion: server.resourceVersion } } });
    await new Promise((r) => setImmediate(r));
    expect(plain.events).toEqual([]);
    plain.close();
    asked.close();
  });

  test('periodic bookmarks follow bookmarkIntervalMs', async () => {
    const fast = await new TestApiServer({ bookmarkIntervalMs: 10 }).start();
    const w = await watch(fast, '/api/v1/nodes?watch=true&resourceVersion=1&allowWatchBookmarks=true');
    await waitFor(() => w.events.filter((e) => e.type === 'BOOKMARK').length >= 2, 'two bookmarks');
    w.close();
    await fast.stop();
  });

  test('a resourceVersion older than the history window answers 410 Expired as an ERROR event, then ends', async () => {
    const old = server.resourceVersion;
    server.create('services', service('a'));
    server.compact();
    const w = await watch(server, `/api/v1/services?watch=true&resourceVersion=${old}`);
    await waitFor(() => w.ended, 'stream end');
    expect(w.status).toBe(200);
    expect(w.events).toEqual([{ type: 'ERROR', object: expect.objectContaining({ kind: 'Status', code: 410, reason: 'Expired' }) }]);
    // The list's resourceVersion is watchable again.
    const now = await watch(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    expect(now.status).toBe(200);
    expect(now.ended).toBe(false);
    now.close();
  });

  test('the history window is historyLimit events; expiredAs status answers HTTP 410', async () => {
    const small = await new TestApiServer({ historyLimit: 2, expiredAs: 'status', bookmarkIntervalMs: 0 }).start();
    const rvs = ['a', 'b', 'c'].map((n) => small.create('services', service(n)).metadata!.resourceVersion!);
    const gone = await get(small, `/api/v1/services?watch=true&resourceVersion=${Number(rvs[0]) - 1}`);
    expect(gone).toEqual({ status: 410, body: expect.objectContaining({ kind: 'Status', code: 410, reason: 'Expired' }) });
    const ok = await watch(small, `/api/v1/services?watch=true&resourceVersion=${rvs[0]}`);
    await waitFor(() => ok.events.length === 2, 'the two kept events');
    ok.close();
    await small.stop();
  });

  test.each([
    ['/api/v1/pods', 404, 'NotFound'],
    ['/api/v1/namespaces/default/nodes', 404, 'NotFound'],
    ['/apis/discovery.k8s.io/v1/services', 404, 'NotFound'],
    ['/api/v1/namespaces/default/services/missing', 404, 'NotFound'],
    ['/api/v1/services?resourceVersion=abc', 400, 'BadRequest'],
    ['/api/v1/services?watch=true&resourceVersion=-1', 400, 'BadRequest'],
    ['/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue', 400, 'BadRequest'],
    ['/api/v1/nodes?fieldSelector=garbage', 400, 'BadRequest'],
    ['/api/v1/nodes?labelSelector=!a%3Db', 400, 'BadRequest'],
    ['/api/v1/services?resourceVersion=999999', 504, 'Timeout'],
  ])('GET %s answers %i %s as a Status', async (path, code, reason) => {
    const r = await get(server, path);
    expect(r).toEqual({ status: code, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: expect.any(String), reason, code } });
  });

  test('writes other than GET are refused; a token, when set, is required', async () => {
    expect((await fetch(`${server.url}/api/v1/services`, { method: 'POST', body: '{}' })).status).toBe(405);
    const locked = await new TestApiServer({ token: 's3cret', bookmarkIntervalMs: 0 }).start();
    expect((await get(locked, '/api/v1/services')).body).toMatchObject({ code: 401, reason: 'Unauthorized' });
    const list = await locked.kubeConfig().makeApiClient(CoreV1Api).listServiceForAllNamespaces();
    expect(list.items).toEqual([]);
    await locked.stop();
  });

  test('setFailure makes a resource answer an error until cleared', async () => {
    server.setFailure('endpointslices', 503);
    expect((await get(server, '/apis/discovery.k8s.io/v1/endpointslices')).status).toBe(503);
    expect((await get(server, '/api/v1/services')).status).toBe(200);
    server.setFailure('endpointslices', undefined);
    expect((await get(server, '/apis/discovery.k8s.io/v1/endpointslices')).status).toBe(200);
  });

  test('a re-put without changes is not written; force and stale resourceVersions behave like the real server', () => {
    const a = server.create('services', service('a'));
    expect(server.update('services', service('a'))).toEqual(a);
    expect(server.resourceVersion).toBe(a.metadata!.resourceVersion);
    const forced = server.update('services', service('a'), { force: true });
    expect(Number(forced.metadata!.resourceVersion)).toBe(Number(a.metadata!.resourceVersion) + 1);
    expect(forced.metadata!.uid).toBe(a.metadata!.uid);
    expect(() => server.update('services', { ...service('a'), metadata: { name: 'a', resourceVersion: a.metadata!.resourceVersion } })).toThrow(/conflict/);
    expect(() => server.create('services', service('a'))).toThrow(/exists/);
    expect(() => server.create('services', { metadata: {} })).toThrow(/name/);
    expect(() => server.delete('services', 'default', 'nope')).toThrow(/not found/);
  });

  test('closeWatches ends open streams; the request log records each request', async () => {
    const w = await watch(server, '/api/v1/services?watch=true&resourceVersion=1');
    expect(server.openWatches).toBe(1);
    server.closeWatches();
    await waitFor(() => w.ended, 'stream end');
    expect(server.openWatches).toBe(0);
    await get(server, '/api/v1/pods');
    expect(server.requests).toEqual([
      { method: 'GET', path: '/api/v1/services', query: { watch: 'true', resourceVersion: '1' }, watch: true, status: 200 },
      { method: 'GET', path: '/api/v1/pods', query: {}, watch: false, status: 404 },
    ]);
  });

  test('stop() cuts connections and refuses new ones; start() comes back on the same port with the same state', async () => {
    server.create('services', service('a'));
    const url = server.url;
    const w = await watch(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    await server.stop();
    await waitFor(() => w.ended, 'stream cut');
    await expect(fetch(`${url}/api/v1/services`)).rejects.toThrow();
    server.create('services', service('b'));
    await server.start();
    expect(server.url).toBe(url);
    expect((await get(server, '/api/v1/services')).body.items).toHaveLength(2);
  });

  test('writeKubeconfig writes a file the real client loads and lists with', async () => {
    server.create('services', service('a'));
    const file = join(mkdtempSync(join(tmpdir(), 'kipvs-')), 'kubeconfig');
    server.writeKubeconfig(file);
    const kc = new KubeConfig();
    kc.loadFromFile(file);
    const list = await kc.makeApiClient(CoreV1Api).listServiceForAllNamespaces();
    expect(list.items.map((s) => s.metadata?.name)).toEqual(['a']);
  });
});

describe('client-node ListWatch against the test server (behaviour kube.ts relies on)', () => {
  let server: TestApiServer;
  let events: string[];
  let errors: unknown[];
  let informer: ReturnType<typeof makeInformer<V1Service>>;
  beforeEach(async () => {
    server = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
    server.create('services', service('a'));
    const kc = server.kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    informer = makeInformer<V1Service>(kc, '/api/v1/services', () => core.listServiceForAllNamespaces());
    // Fresh arrays per informer: a stopped informer of an earlier test may still call back.
    const mine = { events: [] as string[], errors: [] as unknown[] };
    ({ events, errors } = mine);
    for (const verb of ['add', 'update', 'delete'] as const) informer.on(verb, (o) => mine.events.push(`${verb} ${o.metadata!.name}`));
    informer.on('error', (e) => mine.errors.push(e));
    await informer.start();
  });
  afterEach(async () => { await informer.stop(); await server.stop(); });

  const lists = () => server.requests.filter((r) => !r.watch).length;
  const watches = () => server.requests.filter((r) => r.watch);

  test('a watch the server ends is resumed from the last resourceVersion, without a relist', async () => {
    server.create('services', service('b'));
    await waitFor(() => events.length === 2, 'add b');
    server.closeWatches();
    await waitFor(() => watches().length === 2, 'second watch');
    expect(watches()[1].query.resourceVersion).toBe(server.resourceVersion);
    expect(lists()).toBe(1);
    expect(errors).toEqual([]);
  });

  test('410 Gone makes it relist, and objects deleted meanwhile are reported deleted', async () => {
    server.closeWatches();
    server.delete('services', 'default', 'a');
    server.create('services', service('c'));
    server.compact();
    await waitFor(() => events.length === 3, 'relist');
    expect(events).toEqual(['add a', 'delete a', 'add c']);
    expect(lists()).toBe(2);
    expect(errors).toEqual([]);
  });

  test('a connection error is emitted once and the informer does not retry by itself', async () => {
    await server.stop();
    await waitFor(() => errors.length === 1, 'error');
    await server.start();
    const before = server.requests.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(server.requests.length).toBe(before);
    expect(errors).toHaveLength(1);
  });

  test('stop() itself emits an error (an AbortError)', async () => {
    await informer.stop();
    await waitFor(() => errors.length === 1, 'error');
    expect(errors[0]).toMatchObject({ name: 'AbortError' });
  });

  test('listed objects are model instances with Dates, watched ones plain JSON with strings', async () => {
    server.create('services', service('b'));
    await waitFor(() => events.length === 2, 'add b');
    const a = informer.get('a', 'default')!;
    const b = informer.get('b', 'default')!;
    expect(a.metadata!.creationTimestamp).toBeInstanceOf(Date);
    expect(typeof b.metadata!.creationTimestamp).toBe('string');
  });
});
