// renderRuleset: the nft script of kipvs's one table, from a plain model. The golden file is the exact
// text (UPDATE_GOLDEN=1 rewrites it: review the diff); the real-kernel scenarios (spec/kernel/nft.scenarios.ts) load the same renderer's output into
// nf_tables and send packets through it.
import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { EMPTY_MODEL, type NftModel, type NftService } from '../../lib/nft/model.js';
import { NftModelError, renderRemove, renderRuleset } from '../../lib/nft/render.js';
import { elements } from '../support/nft-script.js';

const GOLDEN = 'spec/fixtures/nft/small.nft';

const service = (address: string, kind: NftService['kind'], over: Partial<NftService> = {}): NftService => ({
  family: address.includes(':') ? 6 : 4, address, protocol: 'TCP', port: 80, kind, local: false, sourceRanges: [], ...over,
});

const SMALL: NftModel = {
  services: [
    service('10.96.0.10', 'ClusterIP', { owner: 'default/web:http' }),
    service('10.96.0.10', 'ClusterIP', { protocol: 'UDP', port: 53 }),
    service('192.168.1.10', 'NodePort', { port: 30080 }),
    service('203.0.113.7', 'ExternalIP', { local: true }),
    service('198.51.100.1', 'LoadBalancer', { protocol: 'SCTP', port: 9000, sourceRanges: ['10.1.2.3/16', '192.0.2.0/24'] }),
    service('fd00:96::a', 'ClusterIP', { port: 443 }),
  ],
  boundAddresses: [{ family: 4, address: '10.96.0.10' }, { family: 4, address: '203.0.113.7' }, { family: 4, address: '198.51.100.1' }, { family: 6, address: 'fd00:96::a' }],
  endpointAddresses: [{ family: 4, address: '10.244.1.5' }, { family: 6, address: 'fd00:244::5' }],
  nodeAddresses: [{ family: 4, address: '192.168.1.10' }, { family: 4, address: '192.0.2.1' }],
  clusterCIDRs: ['10.244.0.0/16'],
  masqueradeAll: false,
};

/** Rule lines: inside chains, neither the base chain's type line nor a comment. */
function rules(script: string): string[] {
  const out: string[] = [];
  let inChain = false;
  for (const line of script.split('\n')) {
    if (/^\tchain /.test(line)) inChain = true;
    else if (line === '\t}') inChain = false;
    else if (inChain && !/^\t\ttype /.test(line)) out.push(line.trim());
  }
  return out;
}

test('golden: a small dual-stack model renders exactly the reviewed script', () => {
  const text = renderRuleset(SMALL);
  if (process.env.UPDATE_GOLDEN) writeFileSync(GOLDEN, text);
  expect(text).toBe(readFileSync(GOLDEN, 'utf8'));
});

test('the script replaces the whole table in one transaction and names no other table', () => {
  const text = renderRuleset(SMALL);
  expect(text.split('\n').slice(1, 4)).toEqual(['add table inet kipvs', 'delete table inet kipvs', 'table inet kipvs {']);
  expect([...text.matchAll(/\btable (\S+ \S+)/g)].map((m) => m[1])).toEqual(['inet kipvs', 'inet kipvs', 'inet kipvs']);
  expect(renderRemove()).toBe('add table inet kipvs\ndelete table inet kipvs\n');
});

test('an empty model: every set empty, the same rules', () => {
  const empty = renderRuleset(EMPTY_MODEL);
  expect(empty).not.toMatch(/elements/);
  for (const set of ['services4', 'masq6', 'bound4', 'hairpin6', 'firewall_allow4']) expect(elements(empty, set)).toEqual([]);
  expect(rules(empty).length).toBe(rules(renderRuleset(SMALL)).length);
});

test('what goes where: ClusterIP masqueraded from outside the CIDRs, external kinds unless Local, LB ranges firewalled', () => {
  const text = renderRuleset(SMALL);
  expect(elements(text, 'clusterips4')).toEqual(['10.96.0.10 . tcp . 80', '10.96.0.10 . udp . 53']);
  expect(elements(text, 'masq4')).toEqual(['192.168.1.10 . tcp . 30080', '198.51.100.1 . sctp . 9000']);
  expect(elements(text, 'services4')).toContain('203.0.113.7 . tcp . 80');
  expect(elements(text, 'masq4').join()).not.toMatch(/203\.0\.113\.7/);
  expect(elements(text, 'firewall4')).toEqual(['198.51.100.1 . sctp . 9000']);
  expect(elements(text, 'hairpin4')).toEqual(['10.244.1.5 . 10.244.1.5']);
});

test('masqueradeAll masquerades every ClusterIP, still not Local external traffic', () => {
  const text = renderRuleset({ ...SMALL, masqueradeAll: true });
  expect(elements(text, 'clusterips4')).toEqual([]);
  expect(elements(text, 'masq4')).toEqual(['10.96.0.10 . tcp . 80', '10.96.0.10 . udp . 53', '192.168.1.10 . tcp . 30080', '198.51.100.1 . sctp . 9000']);
  expect(elements(text, 'masq6')).toEqual(['fd00:96::a . tcp . 443']);
});

test('IPv6: canonical addresses in the *6 sets, ip6 rules', () => {
  const text = renderRuleset({
    ...EMPTY_MODEL,
    services: [service('FD00:96:0::000A', 'ExternalIP', { protocol: 'UDP', port: 53 })],
    boundAddresses: [{ family: 6, address: 'fd00:96:0:0::a' }],
    endpointAddresses: [{ family: 6, address: 'FD00:244::5' }],
    clusterCIDRs: ['fd00:244::1/48'],
  });
  expect(elements(text, 'services6')).toEqual(['fd00:96::a . udp . 53']);
  expect(elements(text, 'masq6')).toEqual(['fd00:96::a . udp . 53']);
  expect(elements(text, 'services4')).toEqual([]);
  expect(elements(text, 'bound6')).toEqual(['fd00:96::a']);
  expect(elements(text, 'hairpin6')).toEqual(['fd00:244::5 . fd00:244::5']);
  expect(elements(text, 'cluster_cidrs6')).toEqual(['fd00:244::/48']);
  expect(text).toMatch(/ip6 daddr \. meta l4proto \. th dport @clusterips6 ip6 saddr != @cluster_cidrs6 meta mark set/);
});

test('ranges: host bits cleared, other-family ranges admit nothing (fail closed), CIDRs split by family', () => {
  const text = renderRuleset({
    ...EMPTY_MODEL,
    services: [service('198.51.100.1', 'LoadBalancer', { sourceRanges: ['10.1.2.3/16', '2001:db8::/32'] }), service('198.51.100.2', 'LoadBalancer', { sourceRanges: ['2001:db8::/32'] })],
    clusterCIDRs: ['10.244.7.0/16', 'fd00:244::/48'],
  });
  expect(elements(text, 'firewall_allow4')).toEqual(['198.51.100.1 . tcp . 80 . 10.1.0.0/16']);
  expect(elements(text, 'firewall4')).toEqual(['198.51.100.1 . tcp . 80', '198.51.100.2 . tcp . 80']);
  expect(elements(text, 'cluster_cidrs4')).toEqual(['10.244.0.0/16']);
  expect(elements(text, 'cluster_cidrs6')).toEqual(['fd00:244::/48']);
});

test('the node may reach a load balancer from its own IP only when a source range holds a node address', () => {
  const lb = (ranges: string[]) => service('198.51.100.1', 'LoadBalancer', { sourceRanges: ranges });
  const allow = (ranges: string[], node: string) =>
    elements(renderRuleset({ ...EMPTY_MODEL, services: [lb(ranges)], nodeAddresses: [{ family: 4, address: node }] }), 'firewall_allow4');
  expect(allow(['192.0.2.0/24'], '192.0.2.1')).toEqual(['198.51.100.1 . tcp . 80 . 192.0.2.0/24', '198.51.100.1 . tcp . 80 . 198.51.100.1']);
  expect(allow(['192.0.2.0/24'], '192.0.3.1')).toEqual(['198.51.100.1 . tcp . 80 . 192.0.2.0/24']);
  expect(rules(renderRuleset(EMPTY_MODEL))).toContain('ip daddr . meta l4proto . th dport @firewall4 ip daddr . meta l4proto . th dport . ip saddr != @firewall_allow4 drop');
});

test('without cluster CIDRs of a family only traffic from a VIP itself (the node) is masqueraded, as kube-proxy does', () => {
  const text = renderRuleset({ ...SMALL, clusterCIDRs: [] });
  expect(rules(text)).toContain('ip daddr . meta l4proto . th dport @clusterips4 ip saddr @bound4 meta mark set meta mark | 0x00004000');
  expect(text).not.toMatch(/!= @cluster_cidrs/);
});

test('property: the rules are the same whatever the services, endpoints and addresses; only set elements grow', () => {
  const ip4 = fc.tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 })).map((o) => o.join('.'));
  const svc = fc.record({
    address: ip4,
    protocol: fc.constantFrom<NftService['protocol']>('TCP', 'UDP', 'SCTP'),
    port: fc.integer({ min: 1, max: 65535 }),
    kind: fc.constantFrom<NftService['kind']>('ClusterIP', 'NodePort', 'ExternalIP', 'LoadBalancer'),
    local: fc.boolean(),
    sourceRanges: fc.array(ip4.map((a) => `${a}/24`), { maxLength: 3 }),
  }).map((s): NftService => ({ family: 4, ...s }));
  const reference = rules(renderRuleset(SMALL));
  fc.assert(
    fc.property(fc.array(svc, { maxLength: 60 }), fc.array(ip4, { maxLength: 20 }), fc.boolean(), (services, endpoints, masqueradeAll) => {
      const text = renderRuleset({
        services,
        boundAddresses: services.map((s) => ({ family: 4, address: s.address })),
        endpointAddresses: endpoints.map((address) => ({ family: 4, address })),
        nodeAddresses: endpoints.map((address) => ({ family: 4, address })),
        clusterCIDRs: ['10.244.0.0/16'],
        masqueradeAll,
      });
      expect(rules(text)).toEqual(reference);
      expect(elements(text, 'services4')).toEqual([...new Set(services.map((s) => `${s.address} . ${s.protocol.toLowerCase()} . ${s.port}`))].sort());
    }),
    { numRuns: 60 },
  );
});

test('the same model in another order renders the same text (so an unchanged model is not re-applied)', () => {
  const shuffled = { ...SMALL, services: [...SMALL.services].reverse(), boundAddresses: [...SMALL.boundAddresses].reverse() };
  expect(renderRuleset(shuffled)).toBe(renderRuleset(SMALL));
});

describe('bad values are errors naming the object and the value', () => {
  const bad = (over: Partial<NftModel>) => () => renderRuleset({ ...SMALL, ...over });

  test('a bad CIDR in loadBalancerSourceRanges names the Service and the CIDR', () => {
    const lb = service('198.51.100.1', 'LoadBalancer', { owner: 'shop/front:https', sourceRanges: ['10.0.0.0/8', '10.0.0.0/33'] });
    expect(bad({ services: [lb] })).toThrow(NftModelError);
    expect(bad({ services: [lb] })).toThrow('Service shop/front:https loadBalancerSourceRanges: "10.0.0.0/33" is not a CIDR');
  });

  test('a bad cluster CIDR, address, family or port', () => {
    expect(bad({ clusterCIDRs: ['10.244.0.0'] })).toThrow('clusterCIDRs: "10.244.0.0" is not a CIDR');
    expect(bad({ services: [service('10.96.0.300', 'ClusterIP', { owner: 'default/web:http' })] })).toThrow('Service default/web:http: "10.96.0.300" is not an IP address');
    expect(bad({ services: [{ ...service('10.96.0.1', 'ClusterIP'), family: 6 }] })).toThrow('"10.96.0.1" is not an IPv6 address');
    expect(bad({ services: [service('10.96.0.1', 'ClusterIP', { port: 0 })] })).toThrow('Service 10.96.0.1 TCP/0: port 0 is not 1-65535');
    expect(bad({ boundAddresses: [{ family: 4, address: 'fd00::1' }] })).toThrow('bound address: "fd00::1" is not an IPv4 address');
  });
});
