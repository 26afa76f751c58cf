// The node agent: wires a Source (API server or directory), the real Kernel in the target network
// namespace, the Reconciler and the one SyncRunner together. Changes request a partial sync; the
// runner's periodic sync and every retry are full syncs (one kernel dump, everything diffed).
// Stopping never flushes anything: what is programmed keeps serving while the agent is away.

import { KubeConfig } from '@kubernetes/client-node';
import { hostname } from 'node:os';
import { EventRecorder, reasonFor } from './events.js';
import { NetlinkKernel } from './kernel/netlink.js';
import type { Kernel } from './kernel/types.js';
import type { Logger } from './log.js';
import type { ProxyConfig } from './proxy/config.js';
import { Nftables } from './nft/nftables.js';
import { Reconciler, type Firewall } from './proxy/reconciler.js';
import { SyncRunner } from './proxy/runner.js';
import { health, serve } from './http.js';
import { Metrics } from './metrics.js';
import { DirSource } from './sources/dir.js';
import { HealthCheckServers, healthCheckAddresses, healthCheckWant } from './healthcheck.js';
import { Sysctls, wantedSysctls } from './sysctl.js';
import { KubeSource } from './sources/kube.js';
import type { Source } from './sources/types.js';

export interface AgentOptions {
  /** 'kube' (the API server from kubeconfig or in-cluster) or 'dir:PATH'. */
  source: string;
  kubeconfig?: string;
  nodeName?: string;
  /** namespace/name of the agent's ConfigMap. */
  configMap: string;
  netns?: string;
  /** --nodeport-addresses: CIDRs (empty: every address but loopback, link-local and kube-ipvs0's). */
  nodePortAddresses?: string[];
  /** Config flags: win over the ConfigMap, which wins over the defaults. */
  overrides: Partial<ProxyConfig>;
  syncPeriodMs: number;
  minSyncPeriodMs: number;
  /** --graceful-termination-max-wait: longest a removed real server drains at weight 0 (default 60 s). */
  gracefulTerminationMaxWaitMs?: number;
  logger: Logger;
  /** HOST:PORT for /healthz and /livez ('' = off). */
  healthzBindAddress?: string;
  /** HOST:PORT for /metrics ('' = off). */
  metricsBindAddress?: string;
  /** --cluster-cidr: pod CIDRs; ClusterIP traffic from outside them is masqueraded. */
  clusterCIDRs?: string[];
  /** --masquerade-all. */
  masqueradeAll?: boolean;
  /**
   * kipvs's nftables table (masquerade, filtering): `nft` in the target namespace by default; null: none.
   * With an injected `kernel` (tests) the default is null.
   */
  firewall?: Firewall | null;
  /** --ipvs-strict-arp: also set arp_ignore=1 and arp_announce=2 (see lib/sysctl.ts). */
  strictArp?: boolean;
  /**
   * Where the kernel settings live: '/proc/sys' by default, read in the target namespace; null leaves
   * them alone. With an injected `kernel` (tests) the default is null: a test never writes the host's.
   */
  sysctlRoot?: string | null;
  /** For tests: a kernel to use instead of opening one. */
  kernel?: Kernel;
}

export interface Agent {
  reconciler: Reconciler;
  metrics: Metrics;
  runner: SyncRunner;
  source: Source;
  kernel: Kernel;
  /** The healthCheckNodePort servers; feed them with healthChecks.update(healthCheckWant(...)). */
  healthChecks: HealthCheckServers;
  /** The kernel settings, applied at start and again at every full sync; undefined when left alone. */
  sysctls?: Sysctls;
  /** Events on Services in error (kube source only). */
  recorder?: EventRecorder;
  /** Where /healthz and /metrics listen (host:port as bound), when enabled. */
  addresses: { healthz?: string; metrics?: string };
  /** Resolves once Services and EndpointSlices are listed and the first sync has run. */
  ready: Promise<void>;
  stop(): Promise<void>;
}

export function splitName(text: string): { namespace: string; name: string } {
  const [a, b] = text.split('/');
  return b === undefined ? { namespace: 'default', name: a } : { namespace: a, name: b };
}

function makeSource(o: AgentOptions, nodeName: string): { source: Source; kubeConfig?: KubeConfig } {
  const cm = splitName(o.configMap);
  if (o.source.startsWith('dir:')) {
    return { source: new DirSource(o.source.slice(4), { nodeName, configMap: `${cm.namespace}/${cm.name}` }) };
  }
  if (o.source !== 'kube') throw new Error(`--source must be "kube" or "dir:PATH", not "${o.source}"`);
  const kubeConfig = new KubeConfig();
  if (o.kubeconfig) kubeConfig.loadFromFile(o.kubeconfig);
  else kubeConfig.loadFromDefault();
  return { kubeConfig, source: new KubeSource({ kubeConfig, nodeName, configMap: cm, logger: o.logger }) };
}

export async function startAgent(o: AgentOptions): Promise<Agent> {
  const log = o.logger;
  const nodeName = o.nodeName ?? hostname();
  const kernel = o.kernel ?? (await NetlinkKernel.open(o.netns));
  const info = await kernel.ipvsInfo();
  log.info('kernel IPVS ready', { version: info.version, connTabSize: info.connTabSize, netns: o.netns ?? 'current' });
  // After the kernel is open: that loads ip_vs, which is what makes net.ipv4.vs.* exist.
  const sysctlRoot = o.sysctlRoot === undefined ? (o.kernel ? null : '/proc/sys') : o.sysctlRoot;
  const sysctls = sysctlRoot === null ? undefined : new Sysctls({ logger: log, netns: o.netns, root: sysctlRoot });
  sysctls?.apply(wantedSysctls({ strictArp: o.strictArp }));
  const { source, kubeConfig } = makeSource(o, nodeName);
  // Events on the Services in error, with the API server as source only (there is none to tell otherwise).
  const recorder = kubeConfig && new EventRecorder({ api: kubeConfig, instance: nodeName, logger: log });
  const onObjectErrors = recorder && ((key: string, errors: readonly { object: string; reason: string }[]) => {
    const { namespace, name } = splitName(key);
    const uid = source.snapshot().services.get(key)?.metadata?.uid;
    for (const e of errors) recorder.warn({ namespace, name, uid }, reasonFor(e), `${e.object}: ${e.reason}`);
  });
  const startedAt = Date.now();
  // kube-proxy's serviceProxyHealthy: a node whose proxy is not syncing answers 503 to every probe.
  const healthChecks = new HealthCheckServers({
    logger: log,
    netns: o.netns,
    healthy: () => health(runner.status(), startedAt, 2 * o.syncPeriodMs).healthy,
  });
  const reconciler = new Reconciler({
    kernel, source, logger: log, overrides: o.overrides, onObjectErrors, nodeName, nodePortAddresses: o.nodePortAddresses,
    // While real servers drain, a (cheap, partial) sync every second deletes each once its connections end.
    graceful: { maxWaitMs: o.gracefulTerminationMaxWaitMs, wake: () => runner.run() },
    firewall: (o.firewall === undefined ? (o.kernel ? null : new Nftables({ netns: o.netns, logger: log })) : o.firewall) ?? undefined,
    clusterCIDRs: o.clusterCIDRs,
    masqueradeAll: o.masqueradeAll,
  });
  const metrics = new Metrics(kernel, reconciler);
  let firstSync: () => void = () => {};
  const synced = new Promise<void>((resolve) => (firstSync = resolve));
  const healthCheckOn = healthCheckAddresses(o.nodePortAddresses ?? []);
  const runner = new SyncRunner(async (reason, overlap) => {
    // A full sync's kernel read lets changes through (overlap): they need not wait for the dump.
    const result = await reconciler.sync({ full: reason !== 'requested', overlap });
    // Cheap (one read per setting when nothing changed): repairs a setting reset behind our back.
    if (reconciler.lastReport?.full && sysctls) {
      const ipv6 = [...reconciler.desiredState().services.values()].some((vs) => vs.service.family === 6);
      sysctls.apply(wantedSysctls({ strictArp: o.strictArp, ipv6 }));
    }
    // The healthCheckNodePort servers follow this node's local endpoints and, with --nodeport-addresses,
    // its addresses as the last full sync read them (never rejects).
    void healthChecks.update(healthCheckWant(reconciler.healthCheckResults()), healthCheckOn(reconciler.node.nodePortAddresses));
    metrics.noteSync(reconciler.lastReport, result);
    firstSync();
    return result;
  }, {
    minInterval: o.minSyncPeriodMs,
    maxInterval: o.syncPeriodMs,
  });
  const ready = (async () => {
    await source.start(
      (changes) => {
        metrics.noteChanges(changes);
        reconciler.noteChanges(changes);
        if (source.synced()) runner.run();
      },
      (err) => log.error(`${err.object}: ${err.reason}`, { object: err.object }),
    );
    log.info('sources synced; programming the kernel', { node: nodeName });
    runner.run();
    await synced;
  })();
  const healthRoute = async () => {
    const h = health(runner.status(), startedAt, 2 * o.syncPeriodMs);
    return { status: h.healthy ? 200 : 503, type: 'application/json', body: JSON.stringify(h) };
  };
  const servers = await Promise.all([
    o.healthzBindAddress ? serve(o.healthzBindAddress, { '/healthz': healthRoute, '/livez': healthRoute }) : undefined,
    o.metricsBindAddress
      ? serve(o.metricsBindAddress, {
          '/metrics': async () => ({ status: 200, type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
        })
      : undefined,
  ]);
  const bound = (i: number) => {
    const a = servers[i]?.address();
    return a && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : undefined;
  };
  return {
    reconciler,
    metrics,
    addresses: { healthz: bound(0), metrics: bound(1) },
    runner,
    source,
    kernel,
    healthChecks,
    sysctls,
    recorder,
    ready,
    async stop() {
      for (const s of servers) s?.close();
      await healthChecks.close();
      await runner.stop();
      reconciler.graceful.stop();
      await source.stop();
      await recorder?.close();
      await kernel.close();
    },
  };
}
