// DirSource against real temporary directories: what a scan reads, which changes it reports across
// rewrites, how bad files are held, and that fs.watch and the interval re-scan pick changes up.
import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirSource, stableJson, type DirSourceOptions } from '../../lib/sources/dir.js';
import type { Change, SourceError } from '../../lib/sources/types.js';

const svc = (name: string, ip: string, ns?: string) => `
apiVersion: v1
kind: Service
metadata: {name: ${name}${ns ? `, namespace: ${ns}` : ''}}
spec: {clusterIP: ${ip}, ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}
`;
const slice = (name: string, service: string, ip: string) => `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}, labels: {kubernetes.io/service-name: ${service}}}
addressType: IPv4
endpoints: [{addresses: [${ip}], conditions: {ready: true}}]
ports: [{name: http, port: 8080, protocol: TCP}]
`;
const docs = (...d: string[]) => d.join('---\n');

let dir: string;
let changes: Change[][];
let errors: SourceError[];
let source: DirSource | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kipvs-dir-'));
  changes = [];
  errors = [];
});
afterEach(async () => {
  await source?.stop();
  source = undefined;
  await rm(dir, { recursive: true, force: true });
});

const write = (name: string, text: string) => writeFile(join(dir, name), text);
/** Starts a source on `dir` that scans only when told (no watch, no interval) unless opts say so. */
async function open(opts: DirSourceOptions = {}): Promise<DirSource> {
  source = new DirSource(dir, { watch: false, rescanMs: 0, nodeName: 'node-a', configMap: 'kube-system/kipvs', ...opts });
  await source.start((c) => changes.push(c), (e) => errors.push(e));
  return source;
}
const sorted = (c: Change[]) => [...c].sort((a, b) => `${a.kind} ${a.key}`.localeCompare(`${b.kind} ${b.key}`));
/** The changes reported since the last call, as one sorted list. */
function taken(): Change[] {
  const all = changes.flat();
  changes = [];
  return sorted(all);
}

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('DirSource initial scan', () => {
  test('reads multi-document YAML, Lists, typed lists and JSON; ignores other kinds and files', async () => {
    await write('web.yaml', docs(svc('web', '10.96.0.10'), '# only a comment\n', slice('web-abc', 'web', '10.244.1.5'),
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n'));
    await write('list.yml', `apiVersion: v1\nkind: List\nitems:\n- ${svc('db', '10.96.0.20', 'data').trim().replace(/\n/g, '\n  ')}\n`);
    await write('typed.yaml', 'apiVersion: v1\nkind: ServiceList\nitems:\n- metadata: {name: cache}\n  spec: {clusterIP: 10.96.0.30}\n');
    await write('api.json', JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'j', namespace: 'x' }, spec: { clusterIP: '10.96.0.40' } }));
    await write('notes.txt', svc('ignored', '10.96.0.99'));
    await write('.hidden.yaml', svc('hidden', '10.96.0.98'));

    const s = new DirSource(dir, { watch: false, rescanMs: 0 });
    source = s;
    expect(s.synced()).toBe(false);
    await s.start((c) => changes.push(c), (e) => errors.push(e));
    expect(s.synced()).toBe(true);
    expect(errors).toEqual([]);
    expect(changes).toHaveLength(1); // the initial scan reports in one batch
    expect(taken()).toEqual([
      { kind: 'EndpointSlice', key: 'default/web-abc', service: 'default/web' },
      { kind: 'Service', key: 'data/db' },
      { kind: 'Service', key: 'default/cache' },
      { kind: 'Service', key: 'default/web' },
      { kind: 'Service', key: 'x/j' },
    ]);
    const snap = s.snapshot();
    expect(snap.services.get('default/web')).toMatchObject({
      kind: 'Service',
      metadata: { name: 'web', namespace: 'default' },
      spec: { clusterIP: '10.96.0.10', ports: [{ port: 80, targetPort: 8080 }] },
    });
    expect(snap.services.get('default/cache')).toMatchObject({ apiVersion: 'v1', kind: 'Service', spec: { clusterIP: '10.96.0.30' } });
    expect(snap.endpointSlices.get('default/web-abc')?.endpoints[0]?.addresses).toEqual(['10.244.1.5']);
    expect(snap.node).toBeUndefined();
    expect(snap.configMap).toBeUndefined();
  });

  test('objects come in the client model, like the informers deliver them', async () => {
    await write('a.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: a, creationTimestamp: "2024-05-01T10:00:00Z"}\nspec: {clusterIP: 10.96.0.1, notAField: 1}\n');
    const s = await open();
    const a = s.snapshot().services.get('default/a')!;
    expect(a.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(a.spec).toEqual({ clusterIP: '10.96.0.1' });
  });

  test('keeps only the named Node and ConfigMap; without a node name no Node', async () => {
    await write('cluster.yaml', docs(
      'apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: 10.244.1.0/24}\n',
      'apiVersion: v1\nkind: Node\nmetadata: {name: node-b}\n',
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kipvs, namespace: kube-system}\ndata: {scheduler: wrr}\n',
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kipvs}\ndata: {scheduler: sh}\n',
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: kube-system}\n',
    ));
    const s = await open();
    expect(taken()).toEqual([{ kind: 'ConfigMap', key: 'kube-system/kipvs' }, { kind: 'Node', key: 'node-a' }]);
    expect(s.snapshot().node?.spec?.podCIDR).toBe('10.244.1.0/24');
    expect(s.snapshot().configMap?.data).toEqual({ scheduler: 'wrr' });
    await s.stop();

    source = new DirSource(dir, { watch: false, rescanMs: 0, configMap: 'kipvs' });
    await source.start(() => {});
    expect(source.snapshot().node).toBeUndefined();
    expect(source.snapshot().configMap?.data).toEqual({ scheduler: 'sh' }); // a bare name is in 'default'
  });

  test('an empty directory is synced with no changes; a missing one rejects start()', async () => {
    const s = await open();
    expect(s.synced()).toBe(true);
    expect(changes).toEqual([]);
    await s.stop();
    source = new DirSource(join(dir, 'nope'), { rescanMs: 0 });
    await expect(source.start(() => {})).rejects.toThrow(/nope.*ENOENT|ENOENT.*nope/);
    expect(source.synced()).toBe(false);
  });
});

describe('DirSource change detection', () => {
  test('reports adds, modifications and deletions across rewrites, and nothing else', async () => {
    await write('a.yaml', docs(svc('web', '10.96.0.10'), svc('db', '10.96.0.20'), slice('web-1', 'web', '10.244.1.5')));
    await write('b.yaml', svc('other', '10.96.0.30'));
    const s = await open();
    taken();

    await write('a.yaml', docs(svc('web', '10.96.0.11'), slice('web-1', 'web', '10.244.1.5'), svc('new', '10.96.0.40')));
    await s.rescan();
    expect(taken()).toEqual([
      { kind: 'Service', key: 'default/db' },
      { kind: 'Service', key: 'default/new' },
      { kind: 'Service', key: 'default/web' },
    ]);
    expect(s.snapshot().services.has('default/db')).toBe(false);
    expect(s.snapshot().services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.11');

    // an object may move to another file: no change
    await write('a.yaml', docs(svc('web', '10.96.0.11'), slice('web-1', 'web', '10.244.1.5')));
    await write('b.yaml', docs(svc('other', '10.96.0.30'), svc('new', '10.96.0.40')));
    await s.rescan();
    expect(taken()).toEqual([]);
  });

  test('an identical rewrite, or the same objects reformatted, reports no change', async () => {
    const text = docs(svc('web', '10.96.0.10'), slice('web-1', 'web', '10.244.1.5'));
    await write('a.yaml', text);
    const s = await open();
    taken();
    await write('a.yaml', text);
    await s.rescan();
    const reordered = JSON.stringify({ spec: { ports: [{ targetPort: 8080, protocol: 'TCP', port: 80, name: 'http' }], clusterIP: '10.96.0.10' }, metadata: { name: 'web', namespace: 'default' }, kind: 'Service', apiVersion: 'v1' });
    await write('a.yaml', `${reordered}\n---\n${slice('web-1', 'web', '10.244.1.5')}`);
    await s.rescan();
    expect(changes).toEqual([]);
    expect(errors).toEqual([]);
  });

  test('a file that stops parsing keeps its objects, is reported once by name, and recovers', async () => {
    await write('a.yaml', docs(svc('web', '10.96.0.10'), slice('web-1', 'web', '10.244.1.5')));
    await write('b.yaml', svc('db', '10.96.0.20'));
    const s = await open();
    taken();

    await write('a.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: web\n'); // half-written
    await write('b.yaml', svc('db', '10.96.0.21'));
    await s.rescan();
    await s.rescan();
    expect(errors).toHaveLength(1);
    expect(errors[0]!.object).toBe(`file ${join(dir, 'a.yaml')}`);
    expect(errors[0]!.reason).toBe('unexpected end of the stream within a flow collection at line 4, column 1');
    expect(taken()).toEqual([{ kind: 'Service', key: 'default/db' }]); // other files still apply
    expect(s.snapshot().services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.10');
    expect(s.snapshot().endpointSlices.has('default/web-1')).toBe(true);

    await write('a.yaml', svc('web', '10.96.0.12'));
    await s.rescan();
    expect(taken()).toEqual([{ kind: 'EndpointSlice', key: 'default/web-1', service: 'default/web' }, { kind: 'Service', key: 'default/web' }]);
    expect(s.snapshot().endpointSlices.has('default/web-1')).toBe(false);
  });

  test('an object without kind or metadata.name holds its whole file and is named in the error', async () => {
    await write('a.yaml', docs(svc('web', '10.96.0.10'), svc('db', '10.96.0.20')));
    const s = await open();
    taken();
    await write('a.yaml', docs(svc('web', '10.96.0.99'), 'apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n', 'metadata: {name: what}\n'));
    await s.rescan();
    const file = join(dir, 'a.yaml');
    expect(errors).toEqual([
      { object: `file ${file}: document 2 (Service)`, reason: 'no metadata.name' },
      { object: `file ${file}: document 3`, reason: 'no kind' },
    ]);
    expect(changes).toEqual([]);
    expect(s.snapshot().services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.10');
  });

  test('a bad file seen first contributes nothing and does not stop the scan', async () => {
    await write('a.yaml', '{{{');
    await write('b.yaml', svc('db', '10.96.0.20'));
    const s = await open();
    expect(s.synced()).toBe(true);
    expect(errors.map((e) => e.object)).toEqual([`file ${join(dir, 'a.yaml')}`]);
    expect(taken()).toEqual([{ kind: 'Service', key: 'default/db' }]);
  });

  test('deleting a file deletes its objects (also one that had stopped parsing)', async () => {
    await write('a.yaml', docs(svc('web', '10.96.0.10'), slice('web-1', 'web', '10.244.1.5')));
    await write('b.yaml', svc('db', '10.96.0.20'));
    const s = await open();
    taken();
    await unlink(join(dir, 'a.yaml'));
    await write('b.yaml', 'kind: [');
    await s.rescan();
    expect(taken()).toEqual([{ kind: 'EndpointSlice', key: 'default/web-1', service: 'default/web' }, { kind: 'Service', key: 'default/web' }]);
    await unlink(join(dir, 'b.yaml'));
    await s.rescan();
    expect(taken()).toEqual([{ kind: 'Service', key: 'default/db' }]);
    expect(s.snapshot().services.size).toBe(0);
  });

  test('Node and ConfigMap changes, and changes to objects that are not ours', async () => {
    const node = (cidr: string) => `apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: ${cidr}}\n`;
    const cm = (sched: string) => `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kipvs, namespace: kube-system}\ndata: {scheduler: ${sched}}\n`;
    await write('node.yaml', node('10.244.1.0/24'));
    await write('cm.yaml', docs(cm('rr'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: "1"}\n'));
    const s = await open();
    taken();
    await write('cm.yaml', docs(cm('wrr'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: "2"}\n'));
    await write('node.yaml', docs(node('10.244.1.0/24'), 'apiVersion: v1\nkind: Node\nmetadata: {name: node-b}\n'));
    await s.rescan();
    expect(taken()).toEqual([{ kind: 'ConfigMap', key: 'kube-system/kipvs' }]);
    expect(s.snapshot().configMap?.data).toEqual({ scheduler: 'wrr' });
    await unlink(join(dir, 'node.yaml'));
    await s.rescan();
    expect(taken()).toEqual([{ kind: 'Node', key: 'node-a' }]);
    expect(s.snapshot().node).toBeUndefined();
  });

  test('an object defined in two files: the later file (by name) wins, reported once', async () => {
    await write('a.yaml', svc('web', '10.96.0.10'));
    await write('b.yaml', svc('web', '10.96.0.11'));
    const s = await open();
    await s.rescan();
    expect(s.snapshot().services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.11');
    expect(errors).toEqual([{ object: 'Service default/web', reason: 'defined in a.yaml and b.yaml; the last one is used' }]);
    await unlink(join(dir, 'b.yaml'));
    await s.rescan();
    expect(s.snapshot().services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.10');
  });

  test('an EndpointSlice moving to another Service reports its new service', async () => {
    await write('a.yaml', slice('s-1', 'web', '10.244.1.5'));
    const s = await open();
    taken();
    await write('a.yaml', slice('s-1', 'api', '10.244.1.5'));
    await s.rescan();
    expect(taken()).toEqual([{ kind: 'EndpointSlice', key: 'default/s-1', service: 'default/api' }]);
  });
});

describe('DirSource watching', () => {
  test('a mounted ConfigMap volume (files behind the ..data symlink) is read and followed', async () => {
    const version = async (v: string, ip: string) => {
      await mkdir(join(dir, v));
      await writeFile(join(dir, v, 'web.yaml'), svc('web', ip));
      await symlink(v, join(dir, '..data_tmp'));
      await rename(join(dir, '..data_tmp'), join(dir, '..data')); // kubelet's atomic swap
    };
    await version('..v1', '10.96.0.10');
    await symlink('..data/web.yaml', join(dir, 'web.yaml'));
    const s = await open();
    expect(taken()).toEqual([{ kind: 'Service', key: 'default/web' }]);
    await version('..v2', '10.96.0.11');
    await s.rescan();
    expect(taken()).toEqual([{ kind: 'Service', key: 'default/web' }]);
    expect(s.snapshot().services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.11');
  });

  test('fs.watch (debounced) picks up a write without an explicit rescan', async () => {
    await write('a.yaml', svc('web', '10.96.0.10'));
    const s = await open({ watch: true, debounceMs: 20 });
    taken();
    await write('a.yaml', svc('web', '10.96.0.11'));
    await write('b.yaml', svc('db', '10.96.0.20'));
    await waitFor(() => changes.flat().length >= 2);
    expect(taken()).toEqual([{ kind: 'Service', key: 'default/db' }, { kind: 'Service', key: 'default/web' }]);
    expect(s.snapshot().services.get('default/web')?.spec?.clusterIP).toBe('10.96.0.11');
  });

  test('the interval re-scan picks up changes without fs.watch; nothing is reported after stop()', async () => {
    const s = await open({ rescanMs: 20 });
    await write('a.yaml', svc('web', '10.96.0.10'));
    await waitFor(() => changes.length > 0);
    expect(taken()).toEqual([{ kind: 'Service', key: 'default/web' }]);
    await s.stop();
    await write('a.yaml', svc('web', '10.96.0.11'));
    await new Promise((r) => setTimeout(r, 80));
    expect(changes).toEqual([]);
  });
});

test('stableJson ignores key order and keeps array order', () => {
  expect(stableJson({ b: 1, a: { d: [2, 1], c: null } })).toBe(stableJson({ a: { c: null, d: [2, 1] }, b: 1 }));
  expect(stableJson({ a: [1, 2] })).not.toBe(stableJson({ a: [2, 1] }));
});
