// Golden tables: each spec/fixtures/desired/NAME.yaml (Services + EndpointSlices) must produce exactly
// the kernel state written in NAME.golden. UPDATE_GOLDEN=1 rewrites the golden files (review the diff).
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadAllYaml, type V1EndpointSlice, type V1Service } from '@kubernetes/client-node';
import { DEFAULT_CONFIG } from '../../lib/proxy/config.js';
import { desiredForService, objectKey, type NodeContext } from '../../lib/proxy/desired.js';
import { SERVICE_NAME_LABEL } from '../../lib/sources/types.js';
import { renderDesired } from '../support/render.js';

const DIR = 'spec/fixtures/desired';

/** The node every case runs on: zone-a, two NodePort addresses, and one more address on another interface. */
const NODE: NodeContext = {
  name: 'node-a',
  zone: 'zone-a',
  nodePortAddresses: [{ family: 4, address: '192.168.1.10' }, { family: 6, address: 'fd00:1::10' }],
  localAddresses: new Set(['192.168.1.10', 'fd00:1::10', '203.0.113.50']),
};
const cases = readdirSync(DIR).filter((f) => f.endsWith('.yaml')).map((f) => f.replace(/\.yaml$/, ''));

test('there are golden cases', () => expect(cases.length).toBeGreaterThanOrEqual(6));

test.each(cases)('%s', (name) => {
  const objects = loadAllYaml(readFileSync(`${DIR}/${name}.yaml`, 'utf8')) as Array<{ kind: string }>;
  const services = objects.filter((o) => o.kind === 'Service') as V1Service[];
  const slices = objects.filter((o) => o.kind === 'EndpointSlice') as V1EndpointSlice[];
  const results = services.map((svc) =>
    desiredForService(
      svc,
      slices.filter((s) => `${s.metadata?.namespace}/${s.metadata?.labels?.[SERVICE_NAME_LABEL]}` === objectKey(svc)),
      DEFAULT_CONFIG,
      NODE,
    ),
  );
  const text = renderDesired(
    results.flatMap((r) => r.virtualServers),
    results.flatMap((r) => r.addresses),
    results.flatMap((r) => r.errors.map((e) => ({ ...e, reason: r.valid ? e.reason : `${e.reason} (Service skipped)` }))),
    results.flatMap((r, i) => (r.healthCheck ? [{ service: objectKey(services[i]), ...r.healthCheck }] : [])),
  );
  const file = `${DIR}/${name}.golden`;
  if (process.env.UPDATE_GOLDEN) writeFileSync(file, text);
  expect(text).toBe(readFileSync(file, 'utf8'));
});

// `previous` only lends objects: with any earlier result (its own, another Service's, one computed for
// another node) the result equals the one computed from scratch, and an unchanged Service without
// errors gets its earlier result back itself, so a full recompute of it allocates nothing to keep.
let reused = 0;
afterAll(() => expect(reused).toBeGreaterThan(0)); // the identity clause below was exercised
test.each(cases)('%s: the same with any previous result; unchanged and without errors, the previous result itself', (name) => {
  const objects = loadAllYaml(readFileSync(`${DIR}/${name}.yaml`, 'utf8')) as Array<{ kind: string }>;
  const services = objects.filter((o) => o.kind === 'Service') as V1Service[];
  const slices = objects.filter((o) => o.kind === 'EndpointSlice') as V1EndpointSlice[];
  const slicesOf = (svc: V1Service) => slices.filter((s) => `${s.metadata?.namespace}/${s.metadata?.labels?.[SERVICE_NAME_LABEL]}` === objectKey(svc));
  const otherNode: NodeContext = { name: 'node-b', zone: 'zone-b', nodePortAddresses: [{ family: 4, address: '192.168.1.11' }], localAddresses: new Set() };
  const fresh = services.map((svc) => desiredForService(svc, slicesOf(svc), DEFAULT_CONFIG, NODE));
  services.forEach((svc, i) => {
    const elsewhere = desiredForService(svc, slicesOf(svc), DEFAULT_CONFIG, otherNode);
    for (const previous of [fresh[i], elsewhere, ...fresh]) {
      const r = desiredForService(svc, slicesOf(svc), DEFAULT_CONFIG, NODE, previous);
      expect(r).toEqual(fresh[i]);
      const full = fresh[i].valid && !fresh[i].errors.length && fresh[i].virtualServers.length; // not an early return
      if (previous === fresh[i] && full) (expect(r).toBe(previous), reused++);
    }
  });
});
