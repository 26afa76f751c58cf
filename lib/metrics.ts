// Prometheus metrics (prom-client): kube-proxy's names where the meaning is the same, so existing
// dashboards keep working, plus kipvs' own: ops written per sync by kind, kernel errors by errno, and
// per-Service IPVS counters read from the kernel at scrape time (one service dump per scrape).

import client from 'prom-client';
import { serviceKey } from './kernel/ids.js';
import type { Kernel } from './kernel/types.js';
import type { Reconciler, SyncReport } from './proxy/reconciler.js';
import type { Change } from './sources/types.js';

const SYNC_BUCKETS = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];

export class Metrics {
  readonly registry = new client.Registry();
  private readonly syncDuration = new client.Histogram({
    name: 'kubeproxy_sync_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds',
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });
  private readonly lastSync = new client.Gauge({
    name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
    help: 'The last time proxy rules were successfully synced',
    registers: [this.registry],
  });
  private readonly programming = new client.Histogram({
    name: 'kubeproxy_network_programming_duration_seconds',
    help: 'In-cluster network programming latency: from the agent receiving a change to the kernel holding it',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  private readonly endpointChanges = new client.Counter({
    name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
    help: 'Cumulative EndpointSlice changes',
    registers: [this.registry],
  });
  private readonly serviceChanges = new client.Counter({
    name: 'kubeproxy_sync_proxy_rules_service_changes_total',
    help: 'Cumulative Service changes',
    registers: [this.registry],
  });
  private readonly ops = new client.Counter({
    name: 'kipvs_sync_operations_total',
    help: 'Kernel operations written, by kind (addService, addDestination, addAddress, ...)',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  private readonly syncs = new client.Counter({
    name: 'kipvs_syncs_total',
    help: 'Syncs run, by type (full: one kernel dump, everything diffed; partial: changed Services only) and result',
    labelNames: ['type', 'result'],
    registers: [this.registry],
  });
  private readonly kernelErrors = new client.Counter({
    name: 'kipvs_kernel_errors_total',
    help: 'Kernel operations refused, by errno',
    labelNames: ['errno'],
    registers: [this.registry],
  });
  /** When the oldest change not yet programmed arrived. */
  private pendingSince: number | undefined;

  constructor(kernel: Kernel, reconciler: Reconciler) {
    const registry = this.registry;
    const perService = (name: string, help: string, labelNames: string[], collect: () => Promise<void>) =>
      new client.Gauge({ name, help, labelNames: ['service', 'vip', ...labelNames], registers: [registry], collect });
    // One service dump per scrape: the registry collects metrics concurrently, so the three gauges
    // share one in-flight read of the kernel and fill all three from it.
    let scrape: Promise<void> | undefined;
    const refresh = () =>
      (scrape ??= (async () => {
        for (const g of [conns, packets, bytes]) g.reset();
        const desired = reconciler.desiredState().services;
        for (const s of await kernel.listServices().catch(() => [])) {
          const want = desired.get(serviceKey(s));
          if (!want) continue; // only what kipvs programs
          const labels = { service: want.owner, vip: serviceKey(s) };
          conns.set(labels, Number(s.stats.conns));
          packets.set({ ...labels, direction: 'in' }, Number(s.stats.inPackets));
          packets.set({ ...labels, direction: 'out' }, Number(s.stats.outPackets));
          bytes.set({ ...labels, direction: 'in' }, Number(s.stats.inBytes));
          bytes.set({ ...labels, direction: 'out' }, Number(s.stats.outBytes));
        }
      })().finally(() => (scrape = undefined)));
    const conns = perService('kipvs_ipvs_service_connections', 'Connections IPVS scheduled for the virtual server (kernel counter)', [], refresh);
    const packets = perService('kipvs_ipvs_service_packets', 'Packets through the virtual server (kernel counter)', ['direction'], refresh);
    const bytes = perService('kipvs_ipvs_service_bytes', 'Bytes through the virtual server (kernel counter)', ['direction'], refresh);
    new client.Gauge({
      name: 'kipvs_draining_real_servers',
      help: 'Real servers at weight 0 waiting for their connections to end before their delete (graceful termination)',
      registers: [registry],
      collect() {
        this.set(reconciler.graceful.draining.size);
      },
    });
    new client.Gauge({
      name: 'kipvs_object_errors',
      help: 'Services whose objects (Service, EndpointSlices) have errors and are skipped in part or whole',
      registers: [registry],
      collect() {
        this.set(reconciler.objectErrors.size);
      },
    });
  }

  noteChanges(changes: readonly Change[], now = Date.now()): void {
    for (const c of changes) {
      if (c.kind === 'EndpointSlice') this.endpointChanges.inc();
      else if (c.kind === 'Service') this.serviceChanges.inc();
    }
    if (changes.length) this.pendingSince ??= now;
  }

  /** Records one sync; `ok` syncs also close the network-programming interval of pending changes. */
  noteSync(report: SyncReport | undefined, result: 'ok' | 'failed', now = Date.now()): void {
    if (!report) return;
    this.syncDuration.observe(report.ms / 1000);
    this.syncs.inc({ type: report.full ? 'full' : 'partial', result });
    for (const [kind, n] of Object.entries(report.ops)) this.ops.inc({ kind }, n);
    for (const [errno, n] of Object.entries(report.errors)) this.kernelErrors.inc({ errno }, n);
    if (result === 'ok') {
      this.lastSync.set(now / 1000);
      if (this.pendingSince !== undefined) this.programming.observe((now - this.pendingSince) / 1000);
      this.pendingSince = undefined;
    }
  }
}
