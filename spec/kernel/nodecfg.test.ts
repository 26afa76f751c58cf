// Assertions on what the node-configuration scenarios (nodecfg.scenarios.ts) observed on the real
// kernel: sysctls read back with `ip netns exec N sysctl`, health checks read with curl over veth.
import { wantedSysctls } from '../../lib/sysctl.js';
import { scenario } from './results.js';

const AGENT = 'nodecfg: the agent sets the kernel settings in its namespace once, repairs a reset, leaves the root namespace alone';
const HC = 'nodecfg: healthCheckNodePort servers listen in the namespace and answer curl from another over veth';

describe('kernel settings, set by `kipvs agent --ipvs-strict-arp --netns N`', () => {
  const want = wantedSysctls({ strictArp: true });

  test('every setting reads back in the namespace with its value; IPv6 forwarding (no IPv6 Service) untouched', () => {
    const v = scenario(AGENT);
    expect(v.exited).toBeNull();
    expect(v.errors).toEqual([]);
    for (const w of want) expect([w.name, v.after[w.name]]).toEqual([w.name, w.value]);
    expect(v.after['net.ipv6.conf.all.forwarding']).toBe(v.before['net.ipv6.conf.all.forwarding']);
  });

  test('each change is logged once with its old and new value; the setting already right is not', () => {
    const v = scenario(AGENT);
    const changed = want.filter((w) => v.before[w.name] !== w.value);
    expect(changed.map((w) => w.name)).not.toContain('net.ipv4.vs.expire_nodest_conn'); // set to 1 beforehand
    expect(v.logsAtStart).toEqual(changed.map((w) => `info sysctl ${w.name} set: ${v.before[w.name]} → ${w.value}`));
  });

  test('a setting reset behind the agent is repaired at the next full sync and logged once more, nothing else', () => {
    const v = scenario(AGENT);
    expect(v.repaired).toBe('1');
    expect(v.logsAtEnd).toEqual([...v.logsAtStart, 'info sysctl net.ipv4.ip_forward set: 0 → 1']);
  });

  test("the VM's root namespace keeps its own values", () => {
    const v = scenario(AGENT);
    expect(v.rootAfter).toEqual(v.rootBefore);
    // Two of them differ from what the agent writes, so a write in the wrong namespace would show.
    expect(v.rootBefore['net.ipv4.vs.conntrack']).toBe('0');
    expect(v.rootBefore['net.ipv4.conf.all.arp_announce']).toBe('0');
  });
});

describe('healthCheckNodePort servers in the namespace', () => {
  const body = (namespace: string, name: string, localEndpoints: number) => ({ service: { namespace, name }, localEndpoints, serviceProxyHealthy: true });

  test('listen in the namespace only, and a port taken there is an error naming the Service and port', () => {
    const v = scenario(HC);
    expect(v.listening).toEqual(['*:30100', '*:30101', '*:30102']); // 30102 is the squatter's
    expect(v.rootHas30100).toBe(false);
    expect(v.errors).toEqual([{ service: 'shop/busy', port: 30102, reason: 'EADDRINUSE' }]);
    expect(v.errorLogs).toEqual([expect.stringMatching(/^Service shop\/busy: cannot serve its healthCheckNodePort 30102: .*EADDRINUSE/)]);
  });

  test('answer curl from another namespace: 200 with local endpoints, 503 without, kube-proxy\'s body and headers', () => {
    const { web, db } = scenario(HC).first;
    expect(web).toMatchObject({ exit: 0, status: 200, contentType: 'application/json', nosniff: 'nosniff', weight: '2' });
    expect(JSON.parse(web.body)).toEqual(body('shop', 'web', 2));
    expect(db).toMatchObject({ exit: 0, status: 503, contentType: 'application/json', nosniff: 'nosniff', weight: '0' });
    expect(JSON.parse(db.body)).toEqual(body('shop', 'db', 0));
  });

  test('an update closes the dropped port, updates the kept one in place and opens the new one', () => {
    const v = scenario(HC);
    expect(v.errorsAfter).toEqual([]);
    expect(v.second.web.exit).toBe(7); // curl: connection refused
    expect(v.second.db).toMatchObject({ status: 200, weight: '3' });
    expect(JSON.parse(v.second.db.body)).toEqual(body('shop', 'db', 3));
    expect(v.second.cache).toMatchObject({ status: 200, weight: '1' });
    expect(v.ports).toEqual([30101, 30103]);
  });
});

describe('kipvs agent --init-only (the DaemonSet init container)', () => {
  const INIT = 'nodecfg: agent --init-only sets the kernel settings in its namespace and exits 0';
  test('every setting is set (IPv6 forwarding too, for an IPv6 --cluster-cidr), each change logged, exit 0', () => {
    const v = scenario(INIT);
    expect(v.status).toBe(0);
    expect(v.values).toEqual({
      'net.ipv4.vs.conntrack': '1', 'net.ipv4.vs.expire_nodest_conn': '1', 'net.ipv4.vs.expire_quiescent_template': '1',
      'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1', 'net.ipv4.conf.all.arp_ignore': '1', 'net.ipv4.conf.all.arp_announce': '2',
    });
    expect(v.logged.filter((m: string) => m.startsWith('sysctl '))).toHaveLength(7);
    expect(v.logged.at(-1)).toBe('kernel settings done');
  });
});
