// Kernel settings against a temporary directory shaped like /proc/sys: what is written, what is left
// alone, and what an operator reads in the log (each change once, with old and new value; failures named).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startAgent } from '../../lib/agent.js';
import { agentOptions } from '../../lib/cli.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { Sysctls, wantedSysctls } from '../../lib/sysctl.js';
import { captureLogger } from '../support/logger.js';

let root: string;
const file = (name: string) => join(root, ...name.split('.'));
const put = (name: string, value: string) => {
  mkdirSync(dirname(file(name)), { recursive: true });
  writeFileSync(file(name), `${value}\n`);
};
const read = (name: string) => readFileSync(file(name), 'utf8').trim();

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'kipvs-sysctl-'));
  for (const s of wantedSysctls({ strictArp: true, ipv6: true })) put(s.name, '0');
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

describe('wantedSysctls', () => {
  test('IPVS conntrack and expiry settings and IPv4 forwarding always; strict ARP and IPv6 forwarding on request', () => {
    const names = (o: Parameters<typeof wantedSysctls>[0]) => wantedSysctls(o).map((s) => `${s.name}=${s.value}`);
    const base = ['net.ipv4.vs.conntrack=1', 'net.ipv4.vs.expire_nodest_conn=1', 'net.ipv4.vs.expire_quiescent_template=1', 'net.ipv4.ip_forward=1'];
    expect(names({})).toEqual(base);
    expect(names({ strictArp: true })).toEqual([...base, 'net.ipv4.conf.all.arp_ignore=1', 'net.ipv4.conf.all.arp_announce=2']);
    expect(names({ ipv6: true })).toEqual([...base, 'net.ipv6.conf.all.forwarding=1']);
  });
});

describe('Sysctls.apply', () => {
  test('writes what differs and logs each change once with its old and new value', () => {
    put('net.ipv4.ip_forward', '1'); // already right
    put('net.ipv4.vs.conntrack', '2');
    const log = captureLogger();
    const s = new Sysctls({ logger: log, root });
    const want = wantedSysctls();
    const r = s.apply(want);
    expect(r.failed).toEqual([]);
    expect(r.changed).toEqual([
      { name: 'net.ipv4.vs.conntrack', old: '2', new: '1' },
      { name: 'net.ipv4.vs.expire_nodest_conn', old: '0', new: '1' },
      { name: 'net.ipv4.vs.expire_quiescent_template', old: '0', new: '1' },
    ]);
    for (const w of want) expect(read(w.name)).toBe('1');
    expect(log.lines.map((l) => `${l.level} ${l.msg}`)).toEqual([
      'info sysctl net.ipv4.vs.conntrack set: 2 → 1',
      'info sysctl net.ipv4.vs.expire_nodest_conn set: 0 → 1',
      'info sysctl net.ipv4.vs.expire_quiescent_template set: 0 → 1',
    ]);
    expect(log.lines[0].meta).toMatchObject({ sysctl: 'net.ipv4.vs.conntrack', old: '2', new: '1' });

    // Again: nothing differs, so no file is written (their modification times stay) and nothing is logged.
    const before = log.lines.length;
    const past = new Date('2020-01-01T00:00:00Z');
    for (const w of want) utimesSync(file(w.name), past, past);
    expect(s.apply(want)).toEqual({ changed: [], failed: [] });
    for (const w of want) expect(statSync(file(w.name)).mtime).toEqual(past);
    expect(log.lines.length).toBe(before);
  });

  test('a setting reset behind its back is repaired and logged again', () => {
    const log = captureLogger();
    const s = new Sysctls({ logger: log, root });
    s.apply(wantedSysctls());
    put('net.ipv4.ip_forward', '0');
    expect(s.apply(wantedSysctls()).changed).toEqual([{ name: 'net.ipv4.ip_forward', old: '0', new: '1' }]);
    expect(log.lines.filter((l) => l.msg.startsWith('sysctl net.ipv4.ip_forward'))).toHaveLength(2);
    expect(read('net.ipv4.ip_forward')).toBe('1');
  });

  test('strict ARP writes arp_ignore=1 and arp_announce=2', () => {
    new Sysctls({ logger: captureLogger(), root }).apply(wantedSysctls({ strictArp: true }));
    expect(read('net.ipv4.conf.all.arp_ignore')).toBe('1');
    expect(read('net.ipv4.conf.all.arp_announce')).toBe('2');
    expect(read('net.ipv6.conf.all.forwarding')).toBe('0');
  });

  test('a setting that cannot be set is an error naming it, logged once, and the others are still set', () => {
    rmSync(file('net.ipv4.vs.conntrack')); // as when ip_vs is not loaded
    const log = captureLogger();
    const s = new Sysctls({ logger: log, root });
    const r = s.apply(wantedSysctls());
    expect(r.failed.map((f) => f.name)).toEqual(['net.ipv4.vs.conntrack']);
    expect(r.failed[0].reason).toMatch(/ENOENT/);
    expect(log.errors()).toEqual([expect.stringMatching(/^sysctl net\.ipv4\.vs\.conntrack could not be set: ENOENT/)]);
    expect(read('net.ipv4.ip_forward')).toBe('1');
    // The same failure at the next full sync is not logged again; once it works, it is logged as a change.
    s.apply(wantedSysctls());
    expect(log.errors()).toHaveLength(1);
    put('net.ipv4.vs.conntrack', '0');
    expect(s.apply(wantedSysctls())).toEqual({ changed: [{ name: 'net.ipv4.vs.conntrack', old: '0', new: '1' }], failed: [] });
  });

  test('a namespace that cannot be entered fails every setting by name and does not throw', () => {
    const log = captureLogger();
    const r = new Sysctls({ logger: log, root, netns: join(root, 'no-such-netns') }).apply(wantedSysctls());
    expect(r.failed.map((f) => f.name)).toEqual(wantedSysctls().map((w) => w.name));
    expect(log.errors()[0]).toMatch(/^sysctl net\.ipv4\.vs\.conntrack could not be set: .*no-such-netns/);
  });
});

describe('the agent', () => {
  test('--ipvs-strict-arp is a flag, off by default', () => {
    expect(agentOptions(['--ipvs-strict-arp']).strictArp).toBe(true);
    expect(agentOptions([]).strictArp).toBe(false);
  });

  test('sets the kernel settings at start, logs each once, and repairs a reset at the next full sync', async () => {
    const log = captureLogger();
    const agent = await startAgent({
      source: 'dir:manifests/examples',
      configMap: 'kube-system/kipvs',
      overrides: {},
      syncPeriodMs: 200,
      minSyncPeriodMs: 10,
      logger: log,
      kernel: new FakeKernel(),
      sysctlRoot: root,
      strictArp: true,
    });
    try {
      await agent.ready;
      for (const w of wantedSysctls({ strictArp: true })) expect(read(w.name)).toBe(w.value);
      expect(read('net.ipv6.conf.all.forwarding')).toBe('0'); // the examples are IPv4 only
      const changes = () => log.lines.filter((l) => l.msg.startsWith('sysctl ')).map((l) => l.msg);
      expect(changes()).toEqual(wantedSysctls({ strictArp: true }).map((w) => `sysctl ${w.name} set: 0 → ${w.value}`));

      put('net.ipv4.ip_forward', '0');
      for (const t0 = Date.now(); read('net.ipv4.ip_forward') !== '1' && Date.now() - t0 < 5000; ) await new Promise((r) => setTimeout(r, 50));
      expect(read('net.ipv4.ip_forward')).toBe('1');
      await new Promise((r) => setTimeout(r, 500)); // more full syncs: nothing else to log
      expect(changes().slice(6)).toEqual(['sysctl net.ipv4.ip_forward set: 0 → 1']);
    } finally {
      await agent.stop();
    }
  });

  test('with an injected kernel and no sysctl root, the host\'s settings are left alone', async () => {
    const agent = await startAgent({
      source: 'dir:manifests/examples',
      configMap: 'kube-system/kipvs',
      overrides: {},
      syncPeriodMs: 30000,
      minSyncPeriodMs: 10,
      logger: captureLogger(),
      kernel: new FakeKernel(),
    });
    await agent.ready;
    expect(agent.sysctls).toBeUndefined();
    await agent.stop();
  });
});
