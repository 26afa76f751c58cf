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
