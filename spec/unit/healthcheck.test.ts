// healthCheckNodePort servers over real HTTP on 127.0.0.1, read as a cloud load balancer's probe
// would: status, kube-proxy's JSON body and headers; ports opened and closed as the wanted set changes.
import { Agent as HttpAgent, get as httpGet } from 'node:http';
import { createServer as createTcpServer, type Server } from 'node:net';
import { HealthCheckServers, healthCheckWant, type HealthCheckWant } from '../../lib/healthcheck.js';
import { captureLogger } from '../support/logger.js';

/** Ports free right now (bound to 0, then released). */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  for (let i = 0; i < n; i++) {
    const s = createTcpServer();
    await new Promise<void>((r) => s.listen(0, r));
    servers.push(s);
  }
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

const probe = (port: number, path = '/') => fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close' } });
const refused = async (port: number) => probe(port).then(() => false, () => true);
const want = (entries: [number, HealthCheckWant][]) => new Map(entries);

let hc: HealthCheckServers;
afterEach(() => hc?.close());

test('answers 200 with local endpoints and 503 without, with kube-proxy\'s body and headers', async () => {
  const [a, b] = await freePorts(2);
  hc = new HealthCheckServers({ logger: captureLogger() });
  expect(await hc.update(want([[a, { service: 'shop/web', localEndpoints: 2 }], [b, { service: 'shop/db', localEndpoints: 0 }]]))).toEqual([]);

  const ok = await probe(a, '/healthz');
  expect(ok.status).toBe(200);
  expect(ok.headers.get('content-type')).toBe('application/json');
  expect(ok.headers.get('x-content-type-options')).toBe('nosniff');
  expect(ok.headers.get('x-load-balancing-endpoint-weight')).toBe('2');
  const text = await ok.text();
  expect(JSON.parse(text)).toEqual({ service: { namespace: 'shop', name: 'web' }, localEndpoints: 2, serviceProxyHealthy: true });
  expect(text).toBe('{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}');

  const none = await probe(b);
  expect(none.status).toBe(503);
  expect(none.headers.get('x-load-balancing-endpoint-weight')).toBe('0');
  expect(await none.json()).toEqual({ service: { namespace: 'shop', name: 'db' }, localEndpoints: 0, serviceProxyHealthy: true });
});

test('an unhealthy proxy answers 503 even with local endpoints, as kube-proxy does', async () => {
  const [a] = await freePorts(1);
  let healthy = false;
  hc = new HealthCheckServers({ logger: captureLogger(), healthy: () => healthy });
  await hc.update(want([[a, { service: 'shop/web', localEndpoints: 3 }]]));
  const res = await probe(a);
  expect(res.status).toBe(503);
  expect((await res.json()).serviceProxyHealthy).toBe(false);
  healthy = true;
  expect((await probe(a)).status).toBe(200);
});

test('update opens new ports, closes dropped ones and keeps the same server for ports that stay', async () => {
  const [a, b, c] = await freePorts(3);
  const log = captureLogger();
  hc = new HealthCheckServers({ logger: log });
  await hc.update(want([[a, { service: 'shop/web', localEndpoints: 1 }], [b, { service: 'shop/db', localEndpoints: 1 }]]));
  expect(hc.ports()).toEqual([a, b].sort((x, y) => x - y));
  // A kept-alive connection to `a` survives the update only if its server is not restarted.
  const keep = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  const get = () =>
    new Promise<{ status: number; body: string; socket: unknown }>((resolve, reject) => {
      const req = httpGet({ host: '127.0.0.1', port: a, agent: keep }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body, socket: req.socket }));
      });
      req.on('error', reject);
    });
  const first = await get();
  expect(first.status).toBe(200);

  await hc.update(want([[a, { service: 'shop/web', localEndpoints: 0 }], [c, { service: 'shop/cache', localEndpoints: 4 }]]));
  expect(hc.ports()).toEqual([a, c].sort((x, y) => x - y));
  const second = await get();
  expect(second.socket).toBe(first.socket); // same connection: the server on `a` was not closed
  expect(second.status).toBe(503);
  expect(JSON.parse(second.body).localEndpoints).toBe(0);
  keep.destroy();
  expect(await refused(b)).toBe(true);
  expect((await probe(c)).headers.get('x-load-balancing-endpoint-weight')).toBe('4');
  expect(log.lines.filter((l) => l.msg.startsWith('serving')).map((l) => l.meta?.port)).toEqual([a, b, c]);

  await hc.update(new Map());
  expect(hc.ports()).toEqual([]);
  expect(await refused(a)).toBe(true);
  expect(await refused(c)).toBe(true);
});

test('a busy port is an error naming the Service and port; the other ports keep working; it is retried', async () => {
  const [busy, fine] = await freePorts(2);
  const squatter = createTcpServer();
  await new Promise<void>((r) => squatter.listen(busy, r));
  const log = captureLogger();
  hc = new HealthCheckServers({ logger: log });
  const wanted = want([[busy, { service: 'shop/web', localEndpoints: 1 }], [fine, { service: 'shop/db', localEndpoints: 1 }]]);
  expect(await hc.update(wanted)).toEqual([{ service: 'shop/web', port: busy, reason: 'EADDRINUSE' }]);
  expect(log.errors()).toEqual([expect.stringMatching(new RegExp(`^Service shop/web: cannot serve its healthCheckNodePort ${busy}: .*EADDRINUSE`))]);
  expect(hc.ports()).toEqual([fine]);
  expect((await probe(fine)).status).toBe(200);

  // Still busy at the next sync: reported again, logged once. Freed: opened.
  expect(await hc.update(wanted)).toHaveLength(1);
  expect(log.errors()).toHaveLength(1);
  await new Promise((r) => squatter.close(r));
  expect(await hc.update(wanted)).toEqual([]);
  expect((await probe(busy)).status).toBe(200);
});

test('healthCheckWant takes the Services that have a health check, first claim of a port wins', () => {
  const results: [string, { healthCheck?: { port: number; localEndpoints: number } }][] = [
    ['shop/web', { healthCheck: { port: 30100, localEndpoints: 2 } }],
    ['shop/plain', {}],
    ['shop/late', { healthCheck: { port: 30100, localEndpoints: 5 } }],
    ['shop/db', { healthCheck: { port: 30101, localEndpoints: 0 } }],
  ];
  expect([...healthCheckWant(results)]).toEqual([
    [30100, { service: 'shop/web', localEndpoints: 2 }],
    [30101, { service: 'shop/db', localEndpoints: 0 }],
  ]);
});
