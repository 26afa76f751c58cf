#!/usr/bin/env node
// The kipvs command line: `kipvs agent` runs the node agent. Flags keep kube-proxy's names where the
// meaning is the same. A bad flag or value is one clear line on stderr and exit code 2.

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cleanup } from './cleanup.js';
import { NetlinkKernel } from './kernel/netlink.js';
import { DUMMY_LINK } from './proxy/reconciler.js';
import { KernelSupportError } from './errors.js';
import { parseBindAddress } from './http.js';
import { createLogger } from './log.js';
import { parseSeconds, schedulerOverrides, SCHEDULERS, type ProxyConfig } from './proxy/config.js';
import { cidrFlag } from './proxy/node.js';
import { Nftables } from './nft/nftables.js';
import { Sysctls, wantedSysctls } from './sysctl.js';

const AGENT_FLAGS = {
  source: { type: 'string', default: 'kube', help: 'where Services/EndpointSlices come from: "kube" (API server) or "dir:PATH" (YAML files)' },
  kubeconfig: { type: 'string', help: 'kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)' },
  'hostname-override': { type: 'string', help: "this node's name (default: the host name)" },
  'config-map': { type: 'string', default: 'kube-system/kipvs', help: 'namespace/name of the ConfigMap with scheduler and timeouts (hot-reloaded)' },
  netns: { type: 'string', help: 'network namespace to program, e.g. /var/run/netns/NAME or /proc/PID/ns/net' },
  'ipvs-scheduler': { type: 'string', help: `default IPVS scheduler, overriding the ConfigMap (${SCHEDULERS.join(' ')})` },
  'ipvs-scheduler-flags': { type: 'string', help: 'flags for the default scheduler: sh-fallback,sh-port,mh-fallback,mh-port' },
  'nodeport-addresses': { type: 'string', help: 'comma-separated CIDRs whose node addresses serve NodePorts (default: every address but loopback, link-local and kube-ipvs0\'s)' },
  'cluster-cidr': { type: 'string', help: 'comma-separated pod CIDRs (one per family): ClusterIP traffic from outside them is masqueraded' },
  'masquerade-all': { type: 'boolean', help: 'masquerade all traffic to Services (nftables table inet kipvs)' },
  'ipvs-sync-period': { type: 'string', default: '30s', help: 'full resync period: one kernel dump, everything diffed' },
  'ipvs-min-sync-period': { type: 'string', default: '1s', help: 'least time between two syncs' },
  'ipvs-tcp-timeout': { type: 'string', help: 'IPVS TCP timeout (e.g. 900s); 0 leaves the kernel value' },
  'ipvs-tcpfin-timeout': { type: 'string', help: 'IPVS TCP FIN_WAIT timeout' },
  'ipvs-udp-timeout': { type: 'string', help: 'IPVS UDP timeout' },
  'ipvs-strict-arp': { type: 'boolean', help: 'set net.ipv4.conf.all.arp_ignore=1 and arp_announce=2, so VIPs on kube-ipvs0 are not answered by ARP' },
  'graceful-termination-max-wait': { type: 'string', default: '60s', help: 'longest a removed endpoint\'s real server drains at weight 0 before its delete (0 = delete at once)' },
  'healthz-bind-address': { type: 'string', default: '0.0.0.0:10256', help: 'HOST:PORT for /healthz and /livez ("" to disable)' },
  'metrics-bind-address': { type: 'string', default: '127.0.0.1:10249', help: 'HOST:PORT for /metrics ("" to disable)' },
  'init-only': { type: 'boolean', help: "set the kernel settings (sysctls) that need a writable /proc/sys, then exit: run once privileged (an init container), then run the agent with NET_ADMIN only (kube-proxy's --init-only)" },
  cleanup: { type: 'boolean', help: 'remove what kipvs created (its virtual servers, their addresses, kube-ipvs0, the nftables table inet kipvs) and exit' },
  v: { type: 'string', default: '0', help: 'log verbosity (0-1 info, 2+ debug)' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
} as const;

class UsageError extends Error {}

function usage(): string {
  const lines = ['Usage: kipvs agent [flags]', '', 'Runs the node agent: watches Services and EndpointSlices and programs IPVS.', '', 'Flags:'];
  for (const [name, f] of Object.entries(AGENT_FLAGS)) {
    const def = 'default' in f ? ` (default ${f.default})` : '';
    lines.push(`  --${name.padEnd(22)} ${f.help}${def}`);
  }
  return lines.join('\n');
}

/** Go-style durations as kube-proxy takes them: 30s, 1m30s, 500ms, 2h. → milliseconds. */
export function parseDuration(text: string, flag: string): number {
  if (text === '0') return 0; // as Go's time.ParseDuration
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    consumed += m[0].length;
  }
  if (!text || consumed !== text.length) throw new UsageError(`--${flag}: "${text}" is not a duration (e.g. 30s, 1m30s, 500ms)`);
  return total;
}

export function agentOptions(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: AGENT_FLAGS as never, strict: true, allowPositionals: false });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const str = (k: string) => v[k] as string | undefined;
  let overrides: Partial<ProxyConfig>;
  try {
    overrides = schedulerOverrides(str('ipvs-scheduler'), str('ipvs-scheduler-flags'));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const timeout = (flag: string) => {
    const t = str(flag);
    if (t === undefined) return 0;
    try {
      return parseSeconds(t);
    } catch (err) {
      throw new UsageError(`--${flag}: ${(err as Error).message}`);
    }
  };
  const timeouts = { tcp: timeout('ipvs-tcp-timeout'), tcpFin: timeout('ipvs-tcpfin-timeout'), udp: timeout('ipvs-udp-timeout') };
  if (timeouts.tcp || timeouts.tcpFin || timeouts.udp) overrides.timeouts = timeouts;
  const verbosity = Number(str('v'));
  if (!Number.isInteger(verbosity) || verbosity < 0) throw new UsageError(`--v: "${str('v')}" is not a verbosity level`);
  const bind = (flag: string) => {
    const text = str(flag)!;
    if (text === '') return '';
    try {
      parseBindAddress(text);
    } catch (err) {
      throw new UsageError(`--${flag}: ${(err as Error).message}`);
    }
    return text;
  };
  const cidrs = (flag: string) => {
    try {
      return cidrFlag(flag, str(flag));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  };
  const source = str('source')!;
  if (source !== 'kube' && !/^dir:.+/.test(source)) throw new UsageError(`--source: must be "kube" or "dir:PATH", not "${source}"`);
  return {
    help: v.help === true,
    cleanup: v.cleanup === true,
    initOnly: v['init-only'] === true,
    verbosity,
    source,
    kubeconfig: str('kubeconfig'),
    nodeName: str('hostname-override'),
    configMap: str('config-map')!,
    netns: str('netns'),
    overrides,
    nodePortAddresses: cidrs('nodeport-addresses'),
    clusterCIDRs: cidrs('cluster-cidr'),
    masqueradeAll: v['masquerade-all'] === true,
    strictArp: v['ipvs-strict-arp'] === true,
    healthzBindAddress: bind('healthz-bind-address'),
    metricsBindAddress: bind('metrics-bind-address'),
    syncPeriodMs: parseDuration(str('ipvs-sync-period')!, 'ipvs-sync-period'),
    minSyncPeriodMs: parseDuration(str('ipvs-min-sync-period')!, 'ipvs-min-sync-period'),
    gracefulTerminationMaxWaitMs: parseDuration(str('graceful-termination-max-wait')!, 'graceful-termination-max-wait'),
  };
}

/** Runs the agent (resolves -1: keep running) or its --help/--cleanup/--init-only (resolves an exit code). */
async function agent(argv: string[]): Promise<number> {
  const o = agentOptions(argv);
  if (o.help) {
    console.log(usage());
    return 0;
  }
  const logger = createLogger(o.verbosity);
  if (o.cleanup) {
    const kernel = await NetlinkKernel.open(o.netns);
    try {
      const r = await cleanup(kernel, DUMMY_LINK, logger, new Nftables({ netns: o.netns, logger }));
      return r.errors.length || r.nftTable === false ? 1 : 0;
    } finally {
      await kernel.close();
    }
  }
  if (o.initOnly) {
    // Opening the kernel resolves the IPVS family, which loads ip_vs: that is what makes net.ipv4.vs.* exist.
    const kernel = await NetlinkKernel.open(o.netns);
    try {
      await kernel.ipvsInfo();
      const ipv6 = o.clusterCIDRs.some((c) => c.includes(':'));
      const r = new Sysctls({ logger, netns: o.netns }).apply(wantedSysctls({ strictArp: o.strictArp, ipv6 }));
      logger.info('kernel settings done', { changed: r.changed.length, failed: r.failed.map((f) => f.name) });
      return r.failed.length ? 1 : 0;
    } finally {
      await kernel.close();
    }
  }
  // Loaded here, not at the top: @kubernetes/client-node is heavy (seconds under emulation) and
  // --help, --cleanup and flag errors never need it.
  const { startAgent } = await import('./agent.js');
  const a = await startAgent({ ...o, logger });
  const stop = async (signal: string) => {
    logger.info(`${signal}: stopping; the kernel state is left as it is`);
    await a.stop();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  await a.ready;
  return -1;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'agent':
        return await agent(rest);
      case 'status':
        return await (await import('./status.js')).statusMain(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        console.log(`kipvs — Kubernetes services in IPVS mode\n\nCommands:\n  agent    run the node agent (kipvs agent --help)\n  status   compare the kernel's IPVS table with the Services (kipvs status --help)\n`);
        return 0;
      default:
        throw new UsageError(`unknown command "${cmd}" (commands: agent, status)`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`kipvs: ${err.message}`);
      return 2;
    }
    if (err instanceof KernelSupportError) {
      console.error(`kipvs: ${err.message}`);
      return 1;
    }
    console.error(`kipvs: ${(err as Error).stack ?? err}`);
    return 1;
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => {
    if (code >= 0) process.exit(code);
  });
}
