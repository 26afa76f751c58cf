// modelFromDesired: the agent's desired state (lib/proxy/desired.ts, from real Service and EndpointSlice
// objects) becomes the nftables model, and the rendered sets hold what kube-proxy would put in its ipsets.
import { DEFAULT_CONFIG } from '../../lib/proxy/config.js';
import { desiredForService, type NodeContext } from '../../lib/proxy/desired.js';
import { modelFromDesired } from '../../lib/nft/model.js';
import { renderRuleset } from '../../lib/nft/render.js';
import { service, slice } from '../support/memory-source.js';

const NODE: NodeContext = {
  name: 'node-1',
  nodePortAddresses: [{ family: 4, address: '192.168.1.10' }],
  localAddresses: new Set(['192.168.1.10']),
};

const port = [{ name: 'http', port: 80, protocol: 'TCP' }];
const lb = service('front', '10.96.0.20', [{ ...port[0], nodePort: 30080 } as (typeof port)[0]], {
  spec: { type: 'LoadBalancer', externalTrafficPolicy: 'Local', loadBalancerSourceRanges: ['203.0.113.0/24', '192.168.1.0/24'] },
  status: { loadBalancer: { ingress: [{ ip: '198.51.100.7' }] } },
});
const web = service('web', '10.96.0.10', port);
const results = [
  desiredForService(lb, [slice('front', 'a', ['10.244.1.5'], [{ name: 'http', port: 8080, protocol: 'TCP' }])], DEFAULT_CONFIG, NODE),
  desiredForService(web, [slice('web', 'a', ['10.244.1.5', '10.244.2.6'], [{ name: 'http', port: 8080, protocol: 'TCP' }])], DEFAULT_CONFIG, NODE),
];

const model = modelFromDesired({
  virtualServers: results.flatMap((r) => r.virtualServers),
  boundAddresses: results.flatMap((r) => r.addresses),
  nodeAddresses: [{ family: 4, address: '192.168.1.10' }],
  clusterCIDRs: ['10.244.0.0/16'],
  masqueradeAll: false,
});

test('desired state from real objects has no errors (the fixture is valid)', () => {
  expect(results.flatMap((r) => r.errors)).toEqual([]);
});

test('one service per virtual server, with its kind, policy, ranges and owner', () => {
  expect(model.services.map((s) => `${s.kind} ${s.address}:${s.port} local=${s.local} ${s.sourceRanges.join(',')}`).sort()).toEqual([
    'ClusterIP 10.96.0.10:80 local=false ',
    'ClusterIP 10.96.0.20:80 local=false ',
    'LoadBalancer 198.51.100.7:80 local=true 203.0.113.0/24,192.168.1.0/24',
    'NodePort 192.168.1.10:30080 local=true ',
  ]);
  expect(model.services.find((s) => s.kind === 'LoadBalancer')?.owner).toMatch(/default\/front/);
});

test('every real server address once, bound addresses as desired state binds them', () => {
  expect(model.endpointAddresses.map((e) => e.address).sort()).toEqual(['10.244.1.5', '10.244.2.6']);
  expect(model.boundAddresses.map((b) => b.address).sort()).toEqual(['10.96.0.10', '10.96.0.20', '198.51.100.7']);
});

test('rendered: Local external traffic is not masqueraded, the ranges and the node (inside one) are allowed', () => {
  const text = renderRuleset(model);
  const set = (name: string) => new RegExp(`set ${name} \\{[^}]*\\{([^}]*)\\}`).exec(text)?.[1].split(',').map((e) => e.trim()).filter(Boolean) ?? [];
  expect(set('masq4')).toEqual([]);
  expect(set('clusterips4')).toEqual(['10.96.0.10 . tcp . 80', '10.96.0.20 . tcp . 80']);
  expect(set('firewall_allow4')).toEqual([
    '198.51.100.7 . tcp . 80 . 192.168.1.0/24',
    '198.51.100.7 . tcp . 80 . 198.51.100.7',
    '198.51.100.7 . tcp . 80 . 203.0.113.0/24',
  ]);
});
