// healthCheckNodePort servers over real HTTP on 127.0.0.1, read as a cloud load balancer's probe
// would: status, kube-proxy's JSON body and headers; ports opened and closed as the wanted set changes;
// listeners on the --nodeport-addresses node addresses only (127.0.0.1 vs 127.0.0.2, both on lo), and
// inside another network namespace (as root, with `ip netns`; skipped with a message otherwise).
import { execFile, execFileSync } from 'node:child_process';
import { Agent as HttpAgent, get as httpGet } from 'node:http';
import { createServer as createTcpServer, type Server } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startAgent } from '../../lib/agent.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { silentLogger } from '../../lib/log.js';
import { HealthCheckServers, healthCheckAddresses, healthCheckWant, type HealthCheckWant } from '../../lib/healthcheck.js';
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

const probe = (port: number, path = '/', host = '127.0.0.1') => fetch(`http://${host}:${port}${path}`, { headers: { connection: 'close' } });
const refused = async (port: number, host = '127.0.0.1') => probe(port, '/', host).then(() => false, (e: { cause?: { code?: string } }) => e.cause?.code === 'ECONNREFUSED');
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

describe('listening on the --nodeport-addresses node addresses, as kube-proxy', () => {
  test('healthCheckAddresses: every address without the flag or with a zero CIDR, else the node addresses inside it', () => {
    const node = [{ address: '10.0.0.5' }, { address: 'fd00::5' }, { address: '10.0.0.5' }];
    expect(healthCheckAddresses([])(node)).toBeUndefined();
    expect(healthCheckAddresses(['0.0.0.0/0'])(node)).toBeUndefined();
    expect(healthCheckAddresses(['10.0.0.0/8', '::/0'])(node)).toBeUndefined();
    expect(healthCheckAddresses(['10.0.0.0/8', 'fd00::/64'])(node)).toEqual(['10.0.0.5', 'fd00::5']);
    expect(healthCheckAddresses(['192.168.0.0/16'])([])).toEqual([]);
  });

  test('one listener per address; other local addresses refuse; the listeners follow the addresses as they change', async () => {
    const [a] = await freePorts(1);
    const log = captureLogger();
    hc = new HealthCheckServers({ logger: log });
    const w = want([[a, { service: 'shop/web', localEndpoints: 1 }]]);
    expect(await hc.update(w, ['127.0.0.1'])).toEqual([]);
    expect(hc.listeners()).toEqual([`127.0.0.1:${a}`]);
    expect((await probe(a, '/', '127.0.0.1')).status).toBe(200);
    expect(await refused(a, '127.0.0.2')).toBe(true);

    // A full sync found the node's address changed: the listener moves with it.
    expect(await hc.update(w, ['127.0.0.2'])).toEqual([]);
    expect(hc.listeners()).toEqual([`127.0.0.2:${a}`]);
    expect(await refused(a, '127.0.0.1')).toBe(true);
    expect((await probe(a, '/', '127.0.0.2')).status).toBe(200);
    expect(log.lines.map((l) => l.msg).filter((m) => /^(serving|closing)/.test(m))).toEqual([
      `serving healthCheckNodePort ${a} on 127.0.0.1 for Service shop/web`,
      `closing healthCheckNodePort ${a} on 127.0.0.1 of Service shop/web`,
      `serving healthCheckNodePort ${a} on 127.0.0.2 for Service shop/web`,
    ]);

    expect(await hc.update(w, ['127.0.0.1', '127.0.0.2'])).toEqual([]);
    expect(hc.listeners()).toEqual([`127.0.0.1:${a}`, `127.0.0.2:${a}`]);
    expect(((await Promise.all([probe(a, '/', '127.0.0.1'), probe(a, '/', '127.0.0.2')])).map((r) => r.status))).toEqual([200, 200]);

    // No node address in the CIDRs: no listener at all (kube-proxy's too); without the flag: every address.
    expect(await hc.update(w, [])).toEqual([]);
    expect({ ports: hc.ports(), listeners: hc.listeners() }).toEqual({ ports: [], listeners: [] });
    expect(await refused(a, '127.0.0.1')).toBe(true);
    expect(await hc.update(w)).toEqual([]);
    expect(hc.listeners()).toEqual([`*:${a}`]);
    expect((await probe(a, '/', '127.0.0.2')).status).toBe(200);
  });

  test('an address the node does not have is an error naming the Service, port and address; the others serve', async () => {
    const [a] = await freePorts(1);
    const log = captureLogger();
    hc = new HealthCheckServers({ logger: log });
    const w = want([[a, { service: 'shop/web', localEndpoints: 2 }]]);
    expect(await hc.update(w, ['192.0.2.1', '127.0.0.1'])).toEqual([{ service: 'shop/web', port: a, address: '192.0.2.1', reason: 'EADDRNOTAVAIL' }]);
    expect(log.errors()).toEqual([
      `Service shop/web: cannot serve its healthCheckNodePort ${a} on 192.0.2.1: listen EADDRNOTAVAIL: address not available 192.0.2.1:${a}`,
    ]);
    expect(hc.listeners()).toEqual([`127.0.0.1:${a}`]);
    expect((await probe(a)).status).toBe(200);
    expect(await hc.update(w, ['192.0.2.1', '127.0.0.1'])).toHaveLength(1); // retried, logged once
    expect(log.errors()).toHaveLength(1);
  });
});

test('the agent with --nodeport-addresses: the health check listens on the node addresses inside it, and follows them at full syncs', async () => {
  const [port] = await freePorts(1);
  const dir = mkdtempSync(join(tmpdir(), 'kipvs-hc-'));
  writeFileSync(join(dir, 'shop.yaml'), `
apiVersion: v1
kind: Service
metadata: { name: shop, namespace: default }
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: ${port}
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ports: [{ name: http, protocol: TCP, port: 80, nodePort: 30080 }]
`);
  // The in-memory kernel's node addresses; the listeners are real sockets on the host's loopback.
  const kernel = new FakeKernel().inject({ kind: 'addAddress', ifname: 'lo', address: { family: 4, address: '127.0.0.2', prefixLength: 32 } });
  const agent = await startAgent({
    source: `dir:${dir}`, configMap: 'kube-system/kipvs', overrides: {}, syncPeriodMs: 100, minSyncPeriodMs: 10, logger: silentLogger, kernel,
    nodeName: 'node-1', nodePortAddresses: ['127.0.0.2/31'],
  });
  const until = async (want: string[]) => {
    for (const t0 = Date.now(); Date.now() - t0 < 5000; await new Promise((r) => setTimeout(r, 20))) {
      if (JSON.stringify(agent.healthChecks.listeners()) === JSON.stringify(want)) return want;
    }
    return agent.healthChecks.listeners();
  };
  try {
    await agent.ready;
    expect(await until([`127.0.0.2:${port}`])).toEqual([`127.0.0.2:${port}`]);
    expect((await probe(port, '/', '127.0.0.2')).status).toBe(503); // no local endpoint
    expect(await refused(port, '127.0.0.1')).toBe(true); // outside the CIDR
    // 127.0.0.3 appears on the node, 127.0.0.2 goes: the next full sync moves the listener.
    kernel.inject(
      { kind: 'addAddress', ifname: 'lo', address: { family: 4, address: '127.0.0.3', prefixLength: 32 } },
      { kind: 'deleteAddress', ifname: 'lo', address: { family: 4, address: '127.0.0.2', prefixLength: 32 } },
    );
    expect(await until([`127.0.0.3:${port}`])).toEqual([`127.0.0.3:${port}`]);
    expect((await probe(port, '/', '127.0.0.3')).status).toBe(503);
    expect(await refused(port, '127.0.0.2')).toBe(true);
  } finally {
    await agent.stop();
    rmSync(dir, { recursive: true });
  }
});

const run = promisify(execFile);
const NS = `kipvs-hc${process.pid}`;
function netnsSkip(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  try {
    execFileSync('ip', ['netns', 'add', NS], { stdio: 'pipe' });
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up'], { stdio: 'pipe' });
    for (const a of ['10.77.0.1/32', '10.77.0.2/32']) execFileSync('ip', ['-n', NS, 'addr', 'add', a, 'dev', 'lo'], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    return `\`ip netns\` failed: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`;
  }
}
const skip = netnsSkip();
if (skip) console.warn(`healthcheck netns test skipped: ${skip}`);
(skip ? describe.skip : describe)('inside another network namespace (--netns)', () => {
  afterAll(() => execFileSync('ip', ['netns', 'del', NS]));

  /** curl from inside the namespace (async: the server answering runs in this process): the HTTP code, or curl's error. */
  const curl = (url: string) => run('ip', ['netns', 'exec', NS, 'curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', url])
    .then((r) => r.stdout, (e: { stderr: string }) => e.stderr.trim());

  test('a listener on one address of the namespace: served there, refused on its other address, absent from ours', async () => {
    const [a] = await freePorts(1);
    hc = new HealthCheckServers({ logger: captureLogger(), netns: `/var/run/netns/${NS}` });
    expect(await hc.update(want([[a, { service: 'shop/web', localEndpoints: 1 }]]), ['10.77.0.1'])).toEqual([]);
    expect(await curl(`http://10.77.0.1:${a}/`)).toBe('200');
    expect(await curl(`http://10.77.0.2:${a}/`)).toMatch(/Failed to connect .*Connection refused|Couldn't connect/);
    expect(await refused(a, '127.0.0.1')).toBe(true);
    // Every address of the namespace, still inside it.
    expect(await hc.update(want([[a, { service: 'shop/web', localEndpoints: 0 }]]))).toEqual([]);
    expect([await curl(`http://10.77.0.1:${a}/`), await curl(`http://10.77.0.2:${a}/`)]).toEqual(['503', '503']);
    expect(await refused(a, '127.0.0.1')).toBe(true);
  });
});
