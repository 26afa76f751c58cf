// The agent's /healthz, /livez and /metrics, served by a whole agent (directory source, in-memory
// kernel), read over HTTP as a kubelet probe and a Prometheus scrape would.
import { startAgent, type Agent } from '../../lib/agent.js';
import { health } from '../../lib/http.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { silentLogger } from '../../lib/log.js';

describe('health()', () => {
  const base = { running: false, consecutiveFailures: 0 };
  test('healthy when the last success is within the timeout, unhealthy after', () => {
    expect(health({ ...base, lastSuccess: 1000 }, 0, 60000, 61000).healthy).toBe(true);
    expect(health({ ...base, lastSuccess: 1000 }, 0, 60000, 61001).healthy).toBe(false);
  });
  test('a starting agent is healthy until its first timeout, unless a sync already failed', () => {
    expect(health(base, 5000, 60000, 6000).healthy).toBe(true);
    expect(health({ ...base, consecutiveFailures: 1 }, 5000, 60000, 6000).healthy).toBe(false);
    expect(health(base, 5000, 60000, 65001).healthy).toBe(false);
  });
});

describe('a running agent', () => {
  let agent: Agent;
  let kernel: FakeKernel;
  beforeAll(async () => {
    kernel = new FakeKernel();
    agent = await startAgent({
      source: 'dir:manifests/examples',
      configMap: 'kube-system/kipvs',
      overrides: {},
      syncPeriodMs: 30000,
      minSyncPeriodMs: 10,
      logger: silentLogger,
      kernel,
      healthzBindAddress: '127.0.0.1:0',
      metricsBindAddress: '127.0.0.1:0',
    });
    await agent.ready;
  });
  afterAll(() => agent.stop());

  test('/healthz and /livez answer 200 with kube-proxy\'s JSON', async () => {
    for (const path of ['/healthz', '/livez']) {
      const res = await fetch(`http://${agent.addresses.healthz}${path}`);
      expect(res.status).toBe(200);
      const body = await res.json();
      expect(body).toMatchObject({ healthy: true });
      expect(Date.parse(body.lastUpdated)).toBeLessThanOrEqual(Date.parse(body.currentTime));
    }
    expect((await fetch(`http://${agent.addresses.healthz}/nope`)).status).toBe(404);
  });

  test('/metrics has kube-proxy\'s sync metrics, ops by kind and per-Service kernel counters', async () => {
    const web = kernel.table().services.find((s) => s.service.address === '10.96.0.10')!.service;
    kernel.setStats(web, { conns: 42n, inBytes: 5000n });
    const text = await (await fetch(`http://${agent.addresses.metrics}/metrics`)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1]);
    expect(value(/^kubeproxy_sync_proxy_rules_last_timestamp_seconds (\S+)$/m)).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(value(/^kubeproxy_sync_proxy_rules_duration_seconds_count (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^kipvs_sync_operations_total\{kind="addService"\} (\d+)$/m)).toBe(kernel.table().services.length);
    expect(value(/^kubeproxy_sync_proxy_rules_service_changes_total (\d+)$/m)).toBe(4);
    expect(value(/^kipvs_ipvs_service_connections\{service="default\/web:http",vip="TCP\/10\.96\.0\.10:80"\} (\d+)$/m)).toBe(42);
    expect(value(/^kipvs_ipvs_service_bytes\{service="default\/web:http",vip="TCP\/10\.96\.0\.10:80",direction="in"\} (\d+)$/m)).toBe(5000);
    expect(value(/^kubeproxy_network_programming_duration_seconds_count (\d+)$/m)).toBeGreaterThanOrEqual(1);
  });
});
