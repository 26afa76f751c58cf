// Nftables (the applier) against a stand-in nft: a shell script that records each run's arguments and
// stdin, and fails or hangs on demand. The real nft and kernel are exercised by the kernel scenarios.
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EMPTY_MODEL, modelFromParts, type NftModel, type NftPart } from '../../lib/nft/model.js';
import { findNft, Nftables } from '../../lib/nft/nftables.js';
import { renderRemove, renderRuleset } from '../../lib/nft/render.js';
import { captureLogger } from '../support/logger.js';

let dir: string;
let nft: string;

/** A fake nft: each run writes DIR/run-N.args and DIR/run-N.stdin; DIR/fail makes it print to stderr and exit 3; DIR/hang makes it sleep. */
const FAKE = `#!/bin/sh
d=$(dirname "$0")
n=$(ls "$d" | grep -c '^run-.*\\.args$')
echo "$@" > "$d/run-$n.args"
cat > "$d/run-$n.stdin"
if [ -e "$d/hang" ]; then sleep 5; fi
if [ -e "$d/fail" ]; then echo "Error: Could not process rule: No such file or directory" >&2; exit 3; fi
exit 0
`;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kipvs-nft-'));
  nft = join(dir, 'nft');
  writeFileSync(nft, FAKE);
  chmodSync(nft, 0o755);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const runs = () => readdirSync(dir).filter((f) => f.endsWith('.args')).sort().map((f) => ({
  args: readFileSync(join(dir, f), 'utf8').trim(),
  stdin: readFileSync(join(dir, f.replace('.args', '.stdin')), 'utf8'),
}));

const MODEL: NftModel = {
  ...EMPTY_MODEL,
  services: [{ family: 4, address: '10.96.0.10', protocol: 'TCP', port: 80, kind: 'ClusterIP', local: false, sourceRanges: [] }],
  boundAddresses: [{ family: 4, address: '10.96.0.10' }],
};

test('one nft -f - process per apply, fed the rendered script; an unchanged model runs nothing, force does', async () => {
  const n = new Nftables({ nft, logger: captureLogger() });
  expect(await n.apply(MODEL)).toBe(true);
  expect(await n.apply(MODEL)).toBe(false);
  expect(await n.apply(MODEL, { force: true })).toBe(true);
  expect(await n.apply(EMPTY_MODEL)).toBe(true);
  expect(runs()).toEqual([
    { args: '-f -', stdin: renderRuleset(MODEL) },
    { args: '-f -', stdin: renderRuleset(MODEL) },
    { args: '-f -', stdin: renderRuleset(EMPTY_MODEL) },
  ]);
});

test('a failure throws with nft\'s stderr and the table; the next apply of the same model runs again', async () => {
  const n = new Nftables({ nft, logger: captureLogger() });
  writeFileSync(join(dir, 'fail'), '');
  await expect(n.apply(MODEL)).rejects.toThrow('nftables: apply inet kipvs failed (exit 3): Error: Could not process rule: No such file or directory');
  rmSync(join(dir, 'fail'));
  expect(await n.apply(MODEL)).toBe(true);
  expect(runs()).toHaveLength(2);
});

test('remove runs the idempotent delete and forgets the last apply', async () => {
  const log = captureLogger();
  const n = new Nftables({ nft, logger: log });
  await n.apply(MODEL);
  await n.remove();
  expect(await n.apply(MODEL)).toBe(true);
  expect(runs().map((r) => r.stdin)).toEqual([renderRuleset(MODEL), renderRemove(), renderRuleset(MODEL)]);
  expect(log.lines.map((l) => l.msg)).toContain('nftables: removed inet kipvs');
});

test('update: full replaces the table; a partial one runs one element transaction, none when nothing changed; after a failure only a full update is accepted', async () => {
  const n = new Nftables({ nft, logger: captureLogger() });
  const globals = { nodeAddresses: [], clusterCIDRs: [], masqueradeAll: false };
  const web: NftPart = { services: MODEL.services, boundAddresses: [], endpointAddresses: [{ family: 4, address: '10.244.1.5' }] };
  const vip: NftPart = { services: [], boundAddresses: MODEL.boundAddresses, endpointAddresses: [] };
  const all = new Map([['web', web], ['vip', vip]]);
  await expect(n.update(globals, new Map([['web', web]]))).rejects.toThrow('nftables: inet kipvs needs a full update first (none yet, or the last one failed)');
  expect(await n.update(globals, all, { full: true })).toBe(true);
  const more = { ...web, endpointAddresses: [...web.endpointAddresses, { family: 4 as const, address: '10.244.1.6' }] };
  expect(await n.update(globals, new Map([['web', more]]))).toBe(true);
  expect(await n.update(globals, new Map([['web', more]]))).toBe(false);
  await expect(n.update({ ...globals, masqueradeAll: true }, new Map([['web', more]]))).rejects.toThrow('needs a full update first (node addresses, cluster CIDRs or masquerade-all changed)');
  // What the reconciler reads to send the whole table instead.
  await expect(n.update({ ...globals, masqueradeAll: true }, new Map([['web', more]]))).rejects.toMatchObject({ needsFull: true });
  expect(runs().map((r) => r.stdin)).toEqual([
    renderRuleset(modelFromParts(globals, all.values())),
    'add element inet kipvs hairpin4 { 10.244.1.6 . 10.244.1.6 }\n',
  ]);
  writeFileSync(join(dir, 'fail'), '');
  await expect(n.update(globals, new Map([['web', web]]))).rejects.toThrow('nftables: update inet kipvs failed (exit 3)');
  rmSync(join(dir, 'fail'));
  await expect(n.update(globals, new Map([['web', web]]))).rejects.toThrow('needs a full update first');
  expect(runs()).toHaveLength(3);
  expect(await n.update(globals, all, { full: true })).toBe(true);
  expect(await n.update(globals, new Map([['vip', undefined]]))).toBe(true);
  expect(runs().at(-1)!.stdin).toBe('delete element inet kipvs bound4 { 10.96.0.10 }\n');
});

test('a bad model throws before any process runs', async () => {
  const n = new Nftables({ nft, logger: captureLogger() });
  await expect(n.apply({ ...EMPTY_MODEL, clusterCIDRs: ['nope'] })).rejects.toThrow('clusterCIDRs: "nope" is not a CIDR');
  expect(runs()).toEqual([]);
});

test('an nft that hangs is killed after the bound and the apply fails', async () => {
  writeFileSync(join(dir, 'hang'), '');
  const n = new Nftables({ nft, logger: captureLogger(), timeoutMs: 300 });
  await expect(n.apply(MODEL)).rejects.toThrow(/apply inet kipvs failed \(timed out after 300 ms\)/);
});

test('a missing nft is a clear error, by path or by name', async () => {
  await expect(new Nftables({ nft: join(dir, 'absent'), logger: captureLogger() }).apply(MODEL)).rejects.toThrow(/absent is not an executable file .*nftables package/);
  expect(() => findNft('nft', dir)).not.toThrow();
  expect(findNft('nft', dir)).toBe(nft);
  expect(() => findNft('kipvs-absent-nft', dir)).toThrow(/kipvs-absent-nft not found in PATH .*install the nftables package/);
});
