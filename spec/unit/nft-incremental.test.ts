// Incremental updates of kipvs's nftables table (lib/nft/incremental.ts + renderElementChanges): the exact
// element transaction for each kind of change, shared elements kept while any part holds them, a property
// that any sequence of changes leaves exactly the sets a full render of the final model has, and the work
// of a one-endpoint change counted at 1k and 10k Services.
import fc from 'fast-check';
import { NftElementIndex } from '../../lib/nft/incremental.js';
import { modelFromParts, type NftGlobals, type NftPart, type NftService } from '../../lib/nft/model.js';
import { renderElementChanges, renderRuleset } from '../../lib/nft/render.js';
import { elements, NFT_SETS } from '../support/nft-script.js';

const GLOBALS: NftGlobals = { nodeAddresses: [{ family: 4, address: '192.168.1.10' }], clusterCIDRs: ['10.244.0.0/16'], masqueradeAll: false };

const svc = (address: string, port: number, kind: NftService['kind'] = 'ClusterIP', over: Partial<NftService> = {}): NftService => ({
  family: address.includes(':') ? 6 : 4, address, protocol: 'TCP', port, kind, local: false, sourceRanges: [], ...over,
});
const part = (s: NftService, endpoints: string[]): NftPart => ({
  services: [s], boundAddresses: [], endpointAddresses: endpoints.map((address) => ({ family: address.includes(':') ? 6 : 4, address })),
});
const bound = (address: string): NftPart => ({ services: [], boundAddresses: [{ family: 4, address }], endpointAddresses: [] });

/** An index holding `parts`, changes taken (as after a full apply); `step` then returns the script of one change. */
function indexed(parts: Record<string, NftPart>) {
  const index = new NftElementIndex(GLOBALS);
  for (const [k, p] of Object.entries(parts)) index.set(k, p);
  index.takeChanges();
  return {
    index,
    step(key: string, p: NftPart | undefined): string {
      index.set(key, p);
      return renderElementChanges(index.takeChanges());
    },
  };
}

const WEB = svc('10.96.0.10', 80);

test('an endpoint added, then removed: one hairpin element, nothing else', () => {
  const { step } = indexed({ web: part(WEB, ['10.244.1.5']), 'addr 10.96.0.10': bound('10.96.0.10') });
  expect(step('web', part(WEB, ['10.244.1.5', '10.244.1.6']))).toBe('add element inet kipvs hairpin4 { 10.244.1.6 . 10.244.1.6 }\n');
  expect(step('web', part(WEB, ['10.244.1.6']))).toBe('delete element inet kipvs hairpin4 { 10.244.1.5 . 10.244.1.5 }\n');
  expect(step('web', part(WEB, ['10.244.1.6']))).toBe(''); // unchanged: nothing to run
});

test('a Service added, then removed: its elements in every set it is in, in one transaction', () => {
  const { step } = indexed({ web: part(WEB, ['10.244.1.5']) });
  const lb = svc('198.51.100.1', 443, 'LoadBalancer', { sourceRanges: ['10.1.2.3/16', '192.168.1.0/24'] });
  expect(step('lb', part(lb, ['10.244.2.7']))).toBe([
    'add element inet kipvs firewall4 { 198.51.100.1 . tcp . 443 }',
    // The node's own address is in a range: the LB IP itself is allowed as a source.
    'add element inet kipvs firewall_allow4 { 198.51.100.1 . tcp . 443 . 10.1.0.0/16, 198.51.100.1 . tcp . 443 . 192.168.1.0/24, 198.51.100.1 . tcp . 443 . 198.51.100.1 }',
    'add element inet kipvs hairpin4 { 10.244.2.7 . 10.244.2.7 }',
    'add element inet kipvs masq4 { 198.51.100.1 . tcp . 443 }',
    'add element inet kipvs services4 { 198.51.100.1 . tcp . 443 }',
    '',
  ].join('\n'));
  expect(step('lb', undefined)).toBe([
    'delete element inet kipvs firewall4 { 198.51.100.1 . tcp . 443 }',
    'delete element inet kipvs firewall_allow4 { 198.51.100.1 . tcp . 443 . 10.1.0.0/16, 198.51.100.1 . tcp . 443 . 192.168.1.0/24, 198.51.100.1 . tcp . 443 . 198.51.100.1 }',
    'delete element inet kipvs hairpin4 { 10.244.2.7 . 10.244.2.7 }',
    'delete element inet kipvs masq4 { 198.51.100.1 . tcp . 443 }',
    'delete element inet kipvs services4 { 198.51.100.1 . tcp . 443 }',
    '',
  ].join('\n'));
});

test('an endpoint address shared by two Services: removing one Service keeps its hairpin element', () => {
  const API = svc('10.96.0.20', 80);
  const { step } = indexed({ web: part(WEB, ['10.244.1.5']), api: part(API, ['10.244.1.5']) });
  expect(step('api', undefined)).toBe('delete element inet kipvs clusterips4 { 10.96.0.20 . tcp . 80 }\ndelete element inet kipvs services4 { 10.96.0.20 . tcp . 80 }\n');
  expect(step('web', undefined)).toBe([
    'delete element inet kipvs clusterips4 { 10.96.0.10 . tcp . 80 }',
    'delete element inet kipvs hairpin4 { 10.244.1.5 . 10.244.1.5 }',
    'delete element inet kipvs services4 { 10.96.0.10 . tcp . 80 }',
    '',
  ].join('\n'));
});

test('a VIP with two ports: dropping one port deletes that port only; the bound address stays while its part does', () => {
  const HTTPS = svc('10.96.0.10', 443);
  const { step } = indexed({ 'web:80': part(WEB, ['10.244.1.5']), 'web:443': part(HTTPS, ['10.244.1.5']), 'addr 10.96.0.10': bound('10.96.0.10') });
  expect(step('web:443', undefined)).toBe('delete element inet kipvs clusterips4 { 10.96.0.10 . tcp . 443 }\ndelete element inet kipvs services4 { 10.96.0.10 . tcp . 443 }\n');
  expect(step('web:443', part(HTTPS, ['10.244.1.5']))).toBe('add element inet kipvs clusterips4 { 10.96.0.10 . tcp . 443 }\nadd element inet kipvs services4 { 10.96.0.10 . tcp . 443 }\n');
  expect(step('addr 10.96.0.10', undefined)).toBe('delete element inet kipvs bound4 { 10.96.0.10 }\n');
});

test('a bad value throws naming its object and changes nothing', () => {
  const { index, step } = indexed({ web: part(WEB, ['10.244.1.5']) });
  expect(() => index.set('web', part(svc('10.96.0.300', 80, 'ClusterIP', { owner: 'default/web:http' }), []))).toThrow('nftables: Service default/web:http: "10.96.0.300" is not an IP address');
  expect(step('web', part(WEB, ['10.244.1.5']))).toBe('');
});

/** The sets of a whole-table script, as set name → sorted elements. */
const fullSets = (script: string) => Object.fromEntries(NFT_SETS.map((s) => [s, elements(script, s)]));

test('property: any sequence of incremental changes leaves exactly the elements a full render of the final model has', () => {
  const address = fc.constantFrom('10.96.0.1', '10.96.0.2', '192.168.1.10', 'fd00::1');
  const service = fc.record({
    address, port: fc.constantFrom(80, 443), protocol: fc.constantFrom('TCP' as const, 'UDP' as const),
    kind: fc.constantFrom('ClusterIP' as const, 'NodePort' as const, 'ExternalIP' as const, 'LoadBalancer' as const),
    local: fc.boolean(), sourceRanges: fc.subarray(['10.0.0.0/8', '192.168.1.0/24', 'fd00::/8']),
  }).map((s) => svc(s.address, s.port, s.kind, s));
  const vsPart = fc.tuple(service, fc.subarray(['10.244.1.1', '10.244.1.2', '10.244.1.3', 'fd00:244::1'])).map(([s, e]) => part(s, e.filter((a) => a.includes(':') === s.address.includes(':'))));
  const change = fc.oneof(
    fc.tuple(fc.constantFrom('vs0', 'vs1', 'vs2', 'vs3'), fc.option(vsPart, { nil: undefined })),
    fc.tuple(fc.constantFrom('addr 10.96.0.1', 'addr 10.96.0.2'), fc.option(fc.constantFrom(bound('10.96.0.1'), bound('10.96.0.2')), { nil: undefined })),
  );
  fc.assert(fc.property(fc.boolean(), fc.array(change, { maxLength: 6 }), fc.array(change, { maxLength: 12 }), (masqueradeAll, initial, changes) => {
    const globals = { ...GLOBALS, masqueradeAll };
    const parts = new Map<string, NftPart>();
    const put = (k: string, p: NftPart | undefined) => (p ? parts.set(k, p) : parts.delete(k));
    for (const [k, p] of initial) put(k, p);
    const index = new NftElementIndex(globals);
    for (const [k, p] of parts) index.set(k, p);
    index.takeChanges();
    // The kernel's sets after the full apply, then after each transaction (delete must find, add must not).
    const kernel = new Map(Object.entries(fullSets(renderRuleset(modelFromParts(globals, parts.values())))).map(([s, e]) => [s, new Set(e)]));
    for (const [k, p] of changes) {
      put(k, p);
      index.set(k, p);
      const step = index.takeChanges();
      for (const [s, e] of step.delete) expect(kernel.get(s)!.delete(e)).toBe(true);
      for (const [s, e] of step.add) {
        expect(kernel.get(s)!.has(e)).toBe(false);
        kernel.get(s)!.add(e);
      }
    }
    const want = fullSets(renderRuleset(modelFromParts(globals, parts.values())));
    expect(Object.fromEntries([...kernel].map(([s, e]) => [s, [...e].sort()]))).toEqual(want);
  }), { numRuns: 300 });
});

test('work of a one-endpoint change is independent of the number of Services (elements built, counted)', () => {
  const figures = [1_000, 10_000].map((n) => {
    const index = new NftElementIndex(GLOBALS);
    const ep = (i: number, j: number) => `10.${(i >> 8) & 255}.${i & 255}.${j + 1}`;
    const vs = (i: number, count: number) => part(svc(`10.96.${(i >> 8) & 255}.${i & 255}`, 80), Array.from({ length: count }, (_, j) => ep(i, j)));
    for (let i = 0; i < n; i++) {
      index.set(`vs${i}`, vs(i, 10));
      index.set(`addr${i}`, bound(`10.96.${(i >> 8) & 255}.${i & 255}`));
    }
    index.takeChanges();
    const full = index.built;
    index.set('vs7', vs(7, 11)); // one endpoint more
    const script = renderElementChanges(index.takeChanges());
    return { n, full, change: index.built - full, script };
  });
  // A full build: per Service 1 services + 1 clusterips + 10 hairpin + 1 bound element.
  expect(figures.map((f) => f.full)).toEqual([13_000, 130_000]);
  // The change: the one virtual server's part again (1 + 1 + 11), whatever the number of Services.
  expect(figures.map((f) => f.change)).toEqual([13, 13]);
  expect(figures.map((f) => f.script)).toEqual(Array(2).fill('add element inet kipvs hairpin4 { 10.0.7.11 . 10.0.7.11 }\n'));
});
