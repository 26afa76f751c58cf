// `kipvs status` on the fake kernel. The cluster in spec/fixtures/status/cluster/ is programmed by the
// agent's own Reconciler (so "in sync" means what the agent wrote), then drift is injected into the
// fake the way ipvsadm would make it. Golden files spec/fixtures/status/{table,wide,json}.txt hold the
// exact output; UPDATE_GOLDEN=1 rewrites them (review the diff).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { load as yamlLoad, loadAll as yamlLoadAll } from 'js-yaml';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { describeOp, hostNetmask, serviceKey, SVC_F_KIPVS } from '../../lib/kernel/ids.js';
import type { Destination, Family, Kernel, KernelOp, Protocol, ServiceId, VirtualServer } from '../../lib/kernel/types.js';
import { silentLogger } from '../../lib/log.js';
import { Reconciler } from '../../lib/proxy/reconciler.js';
import { DirSource } from '../../lib/sources/dir.js';
import {
  effectiveConfig, filterRows, formatColumns, renderJson, renderTable, rowsInSync, statusMain, statusRows,
  type StatusReport, type StatusRow,
} from '../../lib/status.js';
import { TestApiServer, type Resource, type WireObject } from '../support/apiserver.js';

const FIXTURES = 'spec/fixtures/status';
const CLUSTER = `${FIXTURES}/cluster`;
const IFNAME = 'kube-ipvs0';

// ---- the kernel: programmed by the agent, then drifted ------------------------------------------

const id = (protocol: Protocol, address: string, port: number): ServiceId =>
  ({ family: address.includes(':') ? 6 : 4, protocol, address, port, fwmark: 0 });
/** A virtual server; those at kipvs's addresses carry its mark (drift here changes settings, not ownership). */
const vs = (s: ServiceId, scheduler: string, flags = 0, timeout = 0): VirtualServer =>
  ({ ...s, scheduler, flags: flags | (s.address.startsWith('10.96.') ? SVC_F_KIPVS : 0), timeout, netmask: hostNetmask(s.family), peName: '' });
const dest = (address: string, port: number, weight = 1): Destination =>
  ({ family: (address.includes(':') ? 6 : 4) as Family, address, port, forward: 'masq', weight, upperThreshold: 0, lowerThreshold: 0 });
const addr = (address: string) => ({ family: (address.includes(':') ? 6 : 4) as Family, address, prefixLength: address.includes(':') ? 128 : 32 });

const WEB_HTTP = id('TCP', '10.96.0.10', 80);
const API = id('TCP', '10.96.0.20', 443);
const DB = id('TCP', '10.96.0.30', 5432);
const CACHE = id('TCP', '10.96.0.40', 6379);
const SESSION = id('TCP', '10.96.0.65', 80);
const METRICS = id('TCP', '10.96.0.70', 9090);
const STRAY = id('TCP', '10.96.0.99', 8080);
const FOREIGN = id('TCP', '10.1.1.1', 80);
const FWM: ServiceId = { family: 4, protocol: 'TCP', address: '0.0.0.0', port: 0, fwmark: 42 };

/** What `ipvsadm` and `ip` would do behind the agent's back: one change of every kind. */
const DRIFT: KernelOp[] = [
  { kind: 'updateService', service: vs(id('UDP', '10.96.0.10', 53), 'rr') },
  { kind: 'updateDestination', service: API, destination: dest('10.244.4.2', 8443, 7) },
  { kind: 'deleteDestination', service: DB, destination: dest('10.244.5.2', 5432) },
  { kind: 'addDestination', service: CACHE, destination: dest('10.244.7.9', 6379) },
  { kind: 'updateService', service: vs(SESSION, 'lc') },
  { kind: 'deleteAddress', ifname: IFNAME, address: addr('fd00:96::50') },
  { kind: 'deleteService', service: METRICS },
  { kind: 'addAddress', ifname: IFNAME, address: addr('10.96.0.99') },
  { kind: 'addService', service: vs(STRAY, 'rr') },
  { kind: 'addDestination', service: STRAY, destination: dest('10.244.99.1', 8080) },
  { kind: 'addAddress', ifname: IFNAME, address: addr('10.96.0.98') },
  { kind: 'addService', service: vs(FOREIGN, 'wrr') },
  { kind: 'addDestination', service: FOREIGN, destination: dest('10.2.0.1', 80, 3) },
  { kind: 'addService', service: vs(FWM, 'rr') },
  { kind: 'addDestination', service: FWM, destination: dest('10.2.0.3', 0, 2) },
];

function dirSource(dir = CLUSTER) {
  return new DirSource(dir, { configMap: 'kube-system/kipvs', watch: false, rescanMs: 0 });
}

/** The agent's Reconciler programs `fake` from the cluster directory (one full sync). */
async function programmed(dir = CLUSTER): Promise<{ fake: FakeKernel; rec: Reconciler; source: DirSource }> {
  const fake = new FakeKernel();
  const source = dirSource(dir);
  const rec = new Reconciler({ kernel: fake, source, logger: silentLogger });
  await source.start((c) => rec.noteChanges(c));
  expect(await rec.sync({ full: true })).toBe('ok');
  return { fake, rec, source };
}

async function drifted() {
  const p = await programmed();
  p.fake.inject(...DRIFT);
  p.fake.setConnections(WEB_HTTP, dest('10.244.1.5', 8080), { activeConns: 3, inactiveConns: 12 });
  return p;
}

/** The pure function on the source's snapshot and the fake's state. */
async function report(fake: FakeKernel, source: DirSource, overrides = {}): Promise<StatusReport> {
  const snap = source.snapshot();
  const { config, errors } = effectiveConfig(snap.configMap, overrides);
  expect(errors).toEqual([]);
  const bound = fake.localAddresses().filter((a) => a.ifname === IFNAME).map(({ family, address, prefixLength }) => ({ family, address, prefixLength }));
  return statusRows({ services: snap.services, endpointSlices: snap.endpointSlices, config, table: fake.table(), bound });
}

/**
 * Checks that the rows not in sync are exactly the rows the agent's next full sync writes to (an op
 * names the row's virtual server, or its address), that nothing is written that no row announced, and
 * that after that sync every row of kipvs's is in sync. Returns the ops written.
 */
async function agreement(fake: FakeKernel, source: DirSource, rec: Reconciler): Promise<KernelOp[]> {
  const before = (await report(fake, source)).rows;
  const written: KernelOp[] = [];
  const apply = fake.apply.bind(fake);
  fake.apply = async (ops) => (written.push(...ops), apply(ops));
  expect(await rec.sync({ full: true })).toBe('ok');
  const named = new Set(written.map((op) => ('service' in op ? serviceKey(op.service) : op.address.address)));
  const key = (r: StatusRow) => (r.port === null ? r.address! : serviceKey(r as unknown as ServiceId));
  const ours = before.filter((r) => !['invalid', 'conflict', 'foreign'].includes(r.state));
  expect(ours.filter((r) => !rowsInSync([r])).map(key)).toEqual(ours.filter((r) => named.has(key(r)) || named.has(r.address!)).map(key));
  expect([...named].filter((k) => !ours.some((r) => key(r) === k || r.address === k))).toEqual([]);
  const after = (await report(fake, source)).rows;
  expect(after.filter((r) => !rowsInSync([r])).map((r) => r.state)).toEqual(['invalid', 'conflict']);
  return written;
}

const brief = (rows: StatusRow[]) => rows.map((r) => `${r.namespace ?? '-'}/${r.name ?? '-'} ${r.vip} ${r.state}${r.details.length ? `: ${r.details.join(', ')}` : ''}`);

function golden(name: string, text: string): void {
  const file = `${FIXTURES}/${name}`;
  if (process.env.UPDATE_GOLDEN) writeFileSync(file, text);
  expect(text).toBe(readFileSync(file, 'utf8'));
}

/** The fake, lent to statusMain: its close() must not close the fake the test goes on reading. */
function lend(fake: FakeKernel, opened: string[] = []): (netns?: string) => Promise<Kernel> {
  return async (netns) => {
    opened.push(netns ?? '<current>');
    return new Proxy(fake, {
      get: (t, p) => (p === 'close' ? async () => {} : typeof Reflect.get(t, p) === 'function' ? Reflect.get(t, p).bind(t) : Reflect.get(t, p)),
    });
  };
}

/** Runs `kipvs status ARGS` against `fake`; the output as text. */
async function run(fake: FakeKernel, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await statusMain(argv, { openKernel: lend(fake), out: (t) => void (out += t), err: (t) => void (err += t) });
  return { code, out, err };
}

const WARNING = 'Warning: EndpointSlice default/cache-1: endpoint address "10.244.7.x" is not a valid IPv4 address\n';

// ---- the pure part -------------------------------------------------------------------------------

describe('statusRows', () => {
  test('what the agent programmed reads back in sync, row for row (only the Services it cannot serve are not)', async () => {
    const { fake, source } = await programmed();
    expect(brief((await report(fake, source)).rows)).toEqual([
      'default/api 10.96.0.20:443/TCP in sync',
      'default/bad null invalid: clusterIP "10.96.0.999" is not a valid IP address',
      'default/cache 10.96.0.40:6379/TCP in sync',
      'default/db 10.96.0.30:5432/TCP in sync',
      'default/dual 10.96.0.50:80/TCP in sync',
      'default/dual [fd00:96::50]:80/TCP in sync',
      'default/session 10.96.0.65:80/TCP in sync',
      'default/sticky 10.96.0.60:443/TCP in sync',
      'default/web 10.96.0.10:80/TCP in sync',
      'default/web 10.96.0.10:53/UDP in sync',
      'default/web-copy 10.96.0.10:80/TCP conflict: served for Service default/web',
      'monitoring/metrics 10.96.0.70:9090/TCP in sync',
    ]);
  });

  test('golden: the table after drift (default view: no foreign rows)', async () => {
    const { fake, source } = await drifted();
    const r = await report(fake, source);
    golden('table.txt', renderTable(filterRows(r.rows, {})));
  });

  test('golden: -o wide --all-ipvs, one row per real server with weight and connections', async () => {
    const { fake, source } = await drifted();
    const r = await report(fake, source);
    golden('wide.txt', renderTable(filterRows(r.rows, { allIpvs: true }), true));
  });

  test('golden: -o json --all-ipvs', async () => {
    const { fake, source } = await drifted();
    const r = await report(fake, source);
    golden('json.txt', renderJson(r, filterRows(r.rows, { allIpvs: true })));
  });

  test('every drift is named exactly: missing, mismatched (what, kernel≠wanted), extra, foreign', async () => {
    const { fake, source } = await drifted();
    expect(brief(filterRows((await report(fake, source)).rows, { allIpvs: true }))).toEqual([
      'default/api 10.96.0.20:443/TCP mismatched: 1 real server differs (weight 7≠1)',
      'default/bad null invalid: clusterIP "10.96.0.999" is not a valid IP address',
      'default/cache 10.96.0.40:6379/TCP mismatched: 1 extra real server',
      'default/db 10.96.0.30:5432/TCP mismatched: 1 real server missing',
      'default/dual 10.96.0.50:80/TCP in sync',
      'default/dual [fd00:96::50]:80/TCP mismatched: VIP not bound to kube-ipvs0',
      'default/session 10.96.0.65:80/TCP mismatched: affinity None≠ClientIP 1800s',
      'default/sticky 10.96.0.60:443/TCP in sync',
      'default/web 10.96.0.10:80/TCP in sync',
      'default/web 10.96.0.10:53/UDP mismatched: scheduler rr≠lc',
      'default/web-copy 10.96.0.10:80/TCP conflict: served for Service default/web',
      'monitoring/metrics 10.96.0.70:9090/TCP missing',
      '-/- 10.96.0.99:8080/TCP extra',
      '-/- 10.96.0.98 extra: address only',
      '-/- 10.1.1.1:80/TCP foreign',
      '-/- FWM 42/IPv4 foreign',
    ]);
  });

  test("status agrees with the agent: the rows not in sync are exactly what the agent's next full sync writes to", async () => {
    const { fake, source, rec } = await drifted();
    const written = await agreement(fake, source, rec);
    expect(written.map(describeOp)).toEqual([
      'addAddress fd00:96::50/128 dev kube-ipvs0',
      'updateService UDP/10.96.0.10:53',
      'updateDestination TCP/10.96.0.20:443 -> 10.244.4.2:8443',
      'addDestination TCP/10.96.0.30:5432 -> 10.244.5.2:5432',
      'deleteDestination TCP/10.96.0.40:6379 -> 10.244.7.9:6379',
      'updateService TCP/10.96.0.65:80',
      'addService TCP/10.96.0.70:9090',
      'addDestination TCP/10.96.0.70:9090 -> 10.244.10.1:9090',
      'deleteService TCP/10.96.0.99:8080',
      'deleteAddress 10.96.0.99/32 dev kube-ipvs0',
      'deleteAddress 10.96.0.98/32 dev kube-ipvs0',
    ]);
  });

  test('property: whatever drift (any subset of the drift ops, any order), status and the agent agree', async () => {
    const pool: KernelOp[] = [
      ...DRIFT,
      { kind: 'deleteAddress', ifname: IFNAME, address: addr('10.96.0.10') },
      { kind: 'deleteDestination', service: WEB_HTTP, destination: dest('10.244.2.6', 8080) },
      { kind: 'updateDestination', service: WEB_HTTP, destination: { ...dest('10.244.1.5', 8080), forward: 'tunnel' } },
      { kind: 'deleteService', service: API },
      { kind: 'updateService', service: vs(id('TCP', '10.96.0.60', 443), 'sh', 0x1 | 0x8, 300) },
      { kind: 'updateService', service: vs(CACHE, 'wlc', 0x1, 60) },
      { kind: 'addService', service: vs(id('TCP', '10.96.0.10', 8080), 'rr') },
      { kind: 'addAddress', ifname: IFNAME, address: addr('10.1.1.1') },
    ];
    await fc.assert(
      fc.asyncProperty(fc.shuffledSubarray(pool), async (ops) => {
        const { fake, source, rec } = await programmed();
        await fake.apply(ops); // refusals (an op on what an earlier one deleted) are just skipped
        await agreement(fake, source, rec);
      }),
      { numRuns: 60 },
    );
  });

  test('--ipvs-scheduler wins over the ConfigMap, as in the agent: lc rows turn mismatched, the rr one in sync', async () => {
    const { fake, source } = await drifted();
    const rows = filterRows((await report(fake, source, { scheduler: 'rr', schedulerFlags: [] })).rows, { names: ['web', 'db', 'sticky'] });
    expect(brief(rows)).toEqual([
      'default/db 10.96.0.30:5432/TCP mismatched: scheduler lc≠rr, 1 real server missing',
      'default/sticky 10.96.0.60:443/TCP in sync',
      'default/web 10.96.0.10:80/TCP mismatched: scheduler lc≠rr',
      'default/web 10.96.0.10:53/UDP in sync',
    ]);
  });

  test('an annotation naming an unknown scheduler keeps the kernel\'s, as the agent does (no mismatch)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-status-'));
    try {
      const text = readFileSync(`${CLUSTER}/objects.yaml`, 'utf8').replace('kipvs.io/scheduler: sh,', 'kipvs.io/scheduler: nope,');
      writeFileSync(`${dir}/objects.yaml`, text);
      const { fake, source } = await drifted();
      const other = dirSource(dir);
      await other.start(() => {});
      const r = await report(fake, other);
      await Promise.all([source.stop(), other.stop()]);
      expect(brief(filterRows(r.rows, { names: ['sticky'] }))).toEqual(['default/sticky 10.96.0.60:443/TCP in sync']);
      expect(filterRows(r.rows, { names: ['sticky'] })[0]).toMatchObject({ scheduler: 'sh', schedulerFlags: ['sh-port'] });
      expect(r.errors.map((e) => `${e.object}: ${e.reason}`)).toContain(
        'Service default/sticky: unknown scheduler "nope" in kipvs.io/scheduler; keeping the current scheduler');
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test('each kind of difference is named, kernel value first', async () => {
    const { fake, source } = await programmed();
    const STICKY = id('TCP', '10.96.0.60', 443);
    fake.inject(
      { kind: 'updateService', service: { ...vs(STICKY, 'sh', 0x1 | 0x8, 600), netmask: 0xffffff00 } },
      { kind: 'updateService', service: vs(id('UDP', '10.96.0.10', 53), 'lc', 0x4) },
      { kind: 'updateService', service: vs(DB, 'lc', 0, 60) },
      { kind: 'updateDestination', service: DB, destination: dest('10.244.5.1', 5432, 2) },
      { kind: 'updateDestination', service: DB, destination: dest('10.244.5.3', 5432, 3) },
      { kind: 'updateDestination', service: CACHE, destination: { ...dest('10.244.7.1', 6379), forward: 'droute', upperThreshold: 10, lowerThreshold: 5 } },
    );
    expect(brief(filterRows((await report(fake, source)).rows, { names: ['sticky', 'web', 'db', 'cache'] }))).toEqual([
      'default/cache 10.96.0.40:6379/TCP mismatched: 1 real server differs (forward droute≠masq, thresholds 10/5≠0/0)',
      'default/db 10.96.0.30:5432/TCP mismatched: timeout 60s≠0s, 2 real servers differ',
      'default/sticky 10.96.0.60:443/TCP mismatched: scheduler flags sh-fallback≠sh-port, affinity ClientIP 600s≠ClientIP 300s, netmask 255.255.255.0≠255.255.255.255',
      'default/web 10.96.0.10:80/TCP in sync',
      'default/web 10.96.0.10:53/UDP mismatched: flags 0x4≠0x0',
    ]);
  });

  test('a kernel without kube-ipvs0 and without services: every virtual server missing', async () => {
    const source = dirSource();
    await source.start(() => {});
    const r = await report(new FakeKernel(), source);
    expect(r.rows.filter((x) => x.vip !== null).map((x) => x.state)).toEqual([...Array(9).fill('missing'), 'conflict', 'missing']);
    expect(r.rows.find((x) => x.name === 'dual')).toMatchObject({ realServers: null, endpoints: { ready: 1, total: 1 } });
  });
});

// ---- graceful termination ---------------------------------------------------------------------------

describe('a real server that drains (graceful termination) is draining, not drift', () => {
  const WEB_DNS = id('UDP', '10.96.0.10', 53);
  const GONE = '10.244.2.6';

  /**
   * web's endpoint 10.244.2.6 is removed while its TCP real server carries connections: the agent's own
   * Reconciler (as the agent after the EndpointSlice change) takes it to weight 0 and deletes the UDP one.
   */
  async function drainingOne(conns = { activeConns: 3, inactiveConns: 12 }) {
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-status-'));
    const text = readFileSync(`${CLUSTER}/objects.yaml`, 'utf8');
    writeFileSync(`${dir}/objects.yaml`, text.replace(`  - { addresses: [${GONE}], conditions: { ready: true } }\n`, ''));
    expect(readFileSync(`${dir}/objects.yaml`, 'utf8')).not.toContain(GONE);
    const { fake, source: before } = await programmed();
    await before.stop();
    fake.setConnections(WEB_HTTP, dest(GONE, 8080), conns);
    const source = dirSource(dir);
    const rec = new Reconciler({ kernel: fake, source, logger: silentLogger });
    await source.start((c) => rec.noteChanges(c));
    expect(await rec.sync({ full: true })).toBe('ok');
    expect(rec.graceful.draining.size).toBe(1);
    const web = (what: ServiceId) => fake.table().services.find((e) => serviceKey(e.service) === serviceKey(what))!.destinations;
    expect(web(WEB_HTTP).map((d) => `${d.address} w${d.weight}`)).toEqual(['10.244.1.5 w1', `${GONE} w0`]);
    expect(web(WEB_DNS).map((d) => d.address)).toEqual(['10.244.1.5']);
    return { fake, source, rec, dir, DIR: `--source=dir:${dir}`, done: async () => { await source.stop(); rmSync(dir, { recursive: true }); } };
  }

  test('the row says draining with the connections left; the agent writes nothing for it; --check exits 0', async () => {
    const d = await drainingOne();
    try {
      const rows = (await report(d.fake, d.source)).rows;
      expect(brief(filterRows(rows, { names: ['web'] }))).toEqual([
        'default/web 10.96.0.10:80/TCP draining: 1 real server (3 active, 12 inactive)',
        'default/web 10.96.0.10:53/UDP in sync',
      ]);
      expect(filterRows(rows, { names: ['web'] })[0].destinations.map((x) => `${x.address} ${x.weight} ${x.activeConns}/${x.inactiveConns} ${x.state}`))
        .toEqual(['10.244.1.5 1 0/0 in sync', `${GONE} 0 3/12 draining`]);
      expect(await agreement(d.fake, d.source, d.rec)).toEqual([]); // the next full sync keeps it at weight 0
      const check = await run(d.fake, d.DIR, '--check', 'web');
      expect(check).toEqual({
        code: 0,
        err: '',
        out: 'NAMESPACE   NAME   TYPE        VIP:PORT/PROTO      SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   STATE\n' +
          'default     web    ClusterIP   10.96.0.10:80/TCP   lc          None       1/2         2              draining: 1 real server (3 active, 12 inactive)\n' +
          'default     web    ClusterIP   10.96.0.10:53/UDP   lc          None       1/2         1              in sync\n',
      });
      const wide = await run(d.fake, d.DIR, '-o', 'wide', 'web');
      expect(wide.out.split('\n').slice(1, 4)).toEqual([
        'default     web    ClusterIP   10.96.0.10:80/TCP      lc          None       1/2         2                       3        12         draining: 1 real server (3 active, 12 inactive)',
        '                                 -> 10.244.1.5:8080                                                     1        0        0          in sync',
        '                                 -> 10.244.2.6:8080                                                     0        3        12         draining',
      ]);
      const json = JSON.parse((await run(d.fake, d.DIR, '-o', 'json', 'web')).out);
      expect(json.inSync).toBe(true);
      expect(json.items[0]).toMatchObject({ state: 'draining', details: ['1 real server (3 active, 12 inactive)'] });
    } finally {
      await d.done();
    }
  });

  test('drift beside a drain is still drift: a weight edited by hand on a wanted real server makes --check exit 1', async () => {
    const d = await drainingOne();
    try {
      d.fake.inject({ kind: 'updateDestination', service: WEB_HTTP, destination: dest('10.244.1.5', 8080, 5) });
      const check = await run(d.fake, d.DIR, '--check', 'web');
      expect(check.code).toBe(1);
      expect(check.out.split('\n')[1]).toMatch(/ mismatched: 1 real server differs \(weight 5≠1\), 1 real server draining \(3 active, 12 inactive\)$/);
      d.fake.inject({ kind: 'updateDestination', service: API, destination: dest('10.244.4.2', 8443, 7) });
      d.fake.inject({ kind: 'updateDestination', service: WEB_HTTP, destination: dest('10.244.1.5', 8080, 1) });
      expect((await run(d.fake, d.DIR, '--check', 'web')).code).toBe(0);
      expect((await run(d.fake, d.DIR, '--check', 'web', 'api')).code).toBe(1);
    } finally {
      await d.done();
    }
  });

  test('not wanted with a weight is extra, whatever its connections; a UDP one at weight 0 is extra (the agent never drains UDP)', async () => {
    const d = await drainingOne();
    try {
      d.fake.inject(
        { kind: 'updateDestination', service: WEB_HTTP, destination: dest(GONE, 8080, 1) },
        { kind: 'addDestination', service: WEB_DNS, destination: dest(GONE, 5353, 0) },
      );
      d.fake.setConnections(WEB_DNS, dest(GONE, 5353), { activeConns: 0, inactiveConns: 4 });
      const check = await run(d.fake, d.DIR, '--check', 'web', '-o', 'json');
      expect(check.code).toBe(1);
      expect(JSON.parse(check.out).items.map((r: StatusRow) => `${r.state}: ${r.details.join(', ')}`)).toEqual([
        'mismatched: 1 extra real server', 'mismatched: 1 extra real server',
      ]);
      expect(await agreement(d.fake, d.source, d.rec)).toEqual(expect.arrayContaining([
        expect.objectContaining({ kind: 'updateDestination', destination: expect.objectContaining({ address: GONE, weight: 0 }) }),
        expect.objectContaining({ kind: 'deleteDestination', service: expect.objectContaining({ protocol: 'UDP' }) }),
      ]));
    } finally {
      await d.done();
    }
  });

  test('a wanted real server set to weight 0 by hand is drift, not draining', async () => {
    const { fake, source } = await programmed();
    await source.stop();
    fake.inject({ kind: 'updateDestination', service: WEB_HTTP, destination: dest(GONE, 8080, 0) });
    fake.setConnections(WEB_HTTP, dest(GONE, 8080), { activeConns: 2 });
    const check = await run(fake, `--source=dir:${CLUSTER}`, '--check', 'web', '-o', 'json');
    expect(check.code).toBe(1);
    expect(JSON.parse(check.out).items[0]).toMatchObject({
      state: 'mismatched', details: ['1 real server differs (weight 0≠1)'],
      destinations: [expect.objectContaining({ state: 'in sync' }), expect.objectContaining({ address: GONE, weight: 0, activeConns: 2, state: 'mismatched' })],
    });
  });

  test('once its connections end the agent deletes it and the row is in sync', async () => {
    const d = await drainingOne();
    try {
      d.fake.setConnections(WEB_HTTP, dest(GONE, 8080), { activeConns: 0, inactiveConns: 0 });
      expect(brief(filterRows((await report(d.fake, d.source)).rows, { names: ['web'] }))[0])
        .toBe('default/web 10.96.0.10:80/TCP draining: 1 real server (0 active, 0 inactive)');
      expect(await d.rec.sync({ full: true })).toBe('ok');
      expect(brief(filterRows((await report(d.fake, d.source)).rows, { names: ['web'] }))[0]).toBe('default/web 10.96.0.10:80/TCP in sync');
    } finally {
      await d.done();
    }
  });
});

describe('formatColumns: kubectl\'s tabwriter (minwidth 6, padding 3)', () => {
  test('widest cell + 3, at least 6; the last cell of a line unpadded and not counted; width in characters', () => {
    expect(formatColumns([['A', 'NAME', 'X'], ['bb', 'a≠b', 'last column is not padded'], ['c', 'longer-name']])).toBe(
      'A     NAME   X\n' +
      'bb    a≠b    last column is not padded\n' +
      'c     longer-name\n');
  });

  test('an empty cell is padded like any other; trailing blanks are trimmed', () => {
    expect(formatColumns([['NAME', 'W', 'S'], ['', '1', ''], ['web', '', 'ok']])).toBe('NAME   W     S\n       1\nweb          ok\n');
  });
});

// ---- the command ---------------------------------------------------------------------------------

describe('kipvs status', () => {
  const DIR = `--source=dir:${CLUSTER}`;

  test('default: the golden table on stdout, warnings on stderr, exit 0; reads only, writes nothing', async () => {
    const { fake } = await drifted();
    const opened: string[] = [];
    fake.resetCounters();
    let out = '';
    let err = '';
    const code = await statusMain([DIR, '--netns', '/run/netns/x'], { openKernel: lend(fake, opened), out: (t) => void (out += t), err: (t) => void (err += t) });
    expect({ code, err }).toEqual({ code: 0, err: WARNING });
    golden('table.txt', out);
    expect(opened).toEqual(['/run/netns/x']);
    expect(fake.counters.messages).toBe(0);
  });

  test('-o wide --all-ipvs, -o json --all-ipvs: the golden files; -o yaml is the same document', async () => {
    const { fake } = await drifted();
    const wide = await run(fake, DIR, '-o', 'wide', '--all-ipvs');
    expect(wide.code).toBe(0);
    golden('wide.txt', wide.out);
    const json = await run(fake, DIR, '-ojson', '--all-ipvs');
    golden('json.txt', json.out);
    const yaml = await run(fake, DIR, '--output=yaml', '--all-ipvs');
    expect(yamlLoad(yaml.out)).toEqual(JSON.parse(json.out));
    expect(JSON.parse(json.out)).toMatchObject({ inSync: false, config: { scheduler: 'lc', schedulerFlags: [] } });
  });

  test('--check: exit 1 on drift (the table still printed); 0 once the agent has repaired it, -n leaving out what is not in sync', async () => {
    const { fake, rec } = await drifted();
    const checked = await run(fake, DIR, '--check');
    expect(checked.code).toBe(1);
    golden('table.txt', checked.out);
    expect(await rec.sync({ full: true })).toBe('ok');
    expect((await run(fake, DIR, '--check')).code).toBe(1); // bad and web-copy stay unservable
    const ns = await run(fake, DIR, '--check', '-n', 'monitoring');
    expect(ns).toEqual({
      code: 0,
      out: 'NAMESPACE    NAME      TYPE        VIP:PORT/PROTO        SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   STATE\n' +
        'monitoring   metrics   ClusterIP   10.96.0.70:9090/TCP   lc          None       1/1         1              in sync\n',
      err: '',
    });
    expect((await run(fake, DIR, '--check', 'web', 'api', 'dual')).code).toBe(0);
  });

  test('Service names and -n filter rows; extra rows only show unfiltered; an unknown name is exit 1', async () => {
    const { fake } = await drifted();
    const named = await run(fake, DIR, 'web', 'metrics', '-o', 'json');
    expect(JSON.parse(named.out).items.map((r: StatusRow) => `${r.namespace}/${r.name} ${r.vip}`)).toEqual([
      'default/web 10.96.0.10:80/TCP', 'default/web 10.96.0.10:53/UDP', 'monitoring/metrics 10.96.0.70:9090/TCP',
    ]);
    const ns = await run(fake, DIR, '-n', 'default', 'metrics');
    expect(ns).toEqual({ code: 1, out: '', err: 'No virtual servers found in namespace default.\nkipvs: Service "metrics" not found in namespace default\n' });
    const cache = await run(fake, DIR, 'cache', 'bad');
    expect(cache.err).toBe(WARNING); // bad's error is its row; web's and others' are not asked for
    const all = await run(fake, DIR, '-A', '-o', 'json');
    expect(JSON.parse(all.out).items).toHaveLength(14);
  });

  test('--ipvs-scheduler is taken as the agent takes it', async () => {
    const { fake } = await drifted();
    const r = await run(fake, DIR, '--ipvs-scheduler', 'rr', 'web', '-o', 'json');
    expect(JSON.parse(r.out).items.map((x: StatusRow) => x.details)).toEqual([['scheduler lc≠rr'], []]);
  });

  test('the same view through --source kube (the ConfigMap listed by name, as the agent does): the same golden table', async () => {
    const { fake } = await drifted();
    const api = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-status-'));
    try {
      const resources: Record<string, Resource> = { Service: 'services', EndpointSlice: 'endpointslices', ConfigMap: 'configmaps' };
      for (const o of yamlLoadAll(readFileSync(`${CLUSTER}/objects.yaml`, 'utf8')) as WireObject[]) api.create(resources[o.kind!], o);
      api.writeKubeconfig(`${dir}/kubeconfig`);
      const r = await run(fake, '--source', 'kube', '--kubeconfig', `${dir}/kubeconfig`);
      expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: WARNING });
      golden('table.txt', r.out);
      expect(api.requests.filter((q) => q.path.includes('configmaps') && !q.watch).map((q) => [q.path, q.query.fieldSelector]))
        .toEqual([['/api/v1/namespaces/kube-system/configmaps', 'metadata.name=kipvs']]);
    } finally {
      await api.stop();
      rmSync(dir, { recursive: true });
    }
  });

  test('nothing of kipvs\'s: a note on stderr, exit 0; json is an empty list; foreign services only with --all-ipvs, never failing --check', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-status-'));
    try {
      expect(await run(new FakeKernel(), `--source=dir:${dir}`)).toEqual({ code: 0, out: '', err: 'No virtual servers found.\n' });
      const json = await run(new FakeKernel(), `--source=dir:${dir}`, '-o', 'json', '--check');
      expect({ code: json.code, doc: JSON.parse(json.out) }).toEqual({
        code: 0, doc: { config: { scheduler: 'rr', schedulerFlags: [] }, inSync: true, items: [], errors: [] },
      });
      // Only someone else's services: listed with --all-ipvs, and they do not fail a check.
      const foreign = new FakeKernel().inject(...DRIFT.slice(-4));
      expect(await run(foreign, `--source=dir:${dir}`, '--all-ipvs', '--check')).toEqual({
        code: 0,
        err: '',
        out: 'NAMESPACE   NAME     TYPE     VIP:PORT/PROTO    SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   STATE\n' +
          '<none>      <none>   <none>   10.1.1.1:80/TCP   wrr         None       <none>      1              foreign\n' +
          '<none>      <none>   <none>   FWM 42/IPv4       rr          None       <none>      1              foreign\n',
      });
      expect(await run(foreign, `--source=dir:${dir}`)).toEqual({ code: 0, out: '', err: 'No virtual servers found.\n' });
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test.each([
    [['--bogus'], /^kipvs status: Unknown option '--bogus'\.[^\n]* \(see kipvs status --help\)\n$/], // node's own wording
    [['-o', 'xml'], 'kipvs status: --output: must be wide, json or yaml, not "xml" (see kipvs status --help)'],
    [['-n', 'a', '-A'], 'kipvs status: -n/--namespace and -A/--all-namespaces exclude each other (see kipvs status --help)'],
    [['--ipvs-scheduler', 'fastest'], 'kipvs status: --ipvs-scheduler: unknown scheduler "fastest" (known: rr wrr lc wlc lblc lblcr dh sh sed nq mh fo ovf twos) (see kipvs status --help)'],
    [['--ipvs-scheduler', 'rr', '--ipvs-scheduler-flags', 'sh-port'], 'kipvs status: --ipvs-scheduler-flags: scheduler flag "sh-port" does not apply to scheduler "rr" (see kipvs status --help)'],
    [['--source', 'http://x'], 'kipvs status: --source: must be "kube" or "dir:PATH", not "http://x" (see kipvs status --help)'],
    [['--sync-timeout', 'soon'], 'kipvs status: --sync-timeout: "soon" is not a duration (e.g. 900s, 15m, 1h) (see kipvs status --help)'],
  ] as Array<[string[], string | RegExp]>)('usage error %j: one line, exit 2, nothing read', async (argv, line) => {
    const opened: string[] = [];
    let err = '';
    const code = await statusMain(argv, { openKernel: lend(new FakeKernel(), opened), out: () => {}, err: (t) => void (err += t) });
    expect({ code, opened }).toEqual({ code: 2, opened: [] });
    if (line instanceof RegExp) expect(err).toMatch(line);
    else expect(err).toBe(`${line}\n`);
  });

  test('--help prints the flags, exit 0', async () => {
    const r = await run(new FakeKernel(), '--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Usage: kipvs status \[NAME\.\.\.\] \[flags\]\n/);
    for (const flag of ['-o, --output', '-n, --namespace', '-A, --all-namespaces', '--all-ipvs', '--check', '--netns', '--config-map']) expect(r.out).toContain(flag);
  });

  test('what cannot be read is one line and exit 3: the kernel, the directory, an API server that does not answer', async () => {
    let err = '';
    const failing = async () => { throw new Error('ENOENT: no such file or directory, open \'/run/netns/gone\''); };
    expect(await statusMain([DIR, '--netns', '/run/netns/gone'], { openKernel: failing, out: () => {}, err: (t) => void (err += t) })).toBe(3);
    expect(err).toBe("kipvs status: cannot open the kernel's IPVS in /run/netns/gone: ENOENT: no such file or directory, open '/run/netns/gone'\n");

    const missing = await run(new FakeKernel(), '--source', 'dir:/nonexistent/kipvs');
    expect(missing).toEqual({ code: 3, out: '', err: "kipvs status: cannot read /nonexistent/kipvs: dir /nonexistent/kipvs: ENOENT: no such file or directory, scandir '/nonexistent/kipvs'\n" });

    const api = await new TestApiServer().start();
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-status-'));
    try {
      api.writeKubeconfig(`${dir}/kubeconfig`);
      await api.stop();
      const t0 = Date.now();
      const away = await run(new FakeKernel(), '--kubeconfig', `${dir}/kubeconfig`, '--sync-timeout', '1s');
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(away.code).toBe(3);
      expect(away.err).toMatch(/^kipvs status: no Services, EndpointSlices and ConfigMap kube-system\/kipvs from the API server within 1s \(informer failed, retrying: .*ECONNREFUSED.*\)\n$/);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
