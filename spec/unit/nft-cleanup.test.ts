// --cleanup also removes kipvs's nftables table, with or without kube-ipvs0; a failure to remove it is
// logged and reported (the CLI exits 1), and the rest of the cleanup still happens.
import { cleanup } from '../../lib/cleanup.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { svc } from '../support/kernel-values.js';
import { captureLogger } from '../support/logger.js';

const remover = (fail?: string) => {
  const calls: string[] = [];
  return {
    calls,
    async remove() {
      calls.push('remove');
      if (fail) throw new Error(fail);
    },
  };
};

test('the table goes after the virtual servers and the link', async () => {
  const k = new FakeKernel();
  await k.ensureDummyLink('kube-ipvs0');
  k.inject(
    { kind: 'addAddress', ifname: 'kube-ipvs0', address: { family: 4, address: '10.96.0.10', prefixLength: 32 } },
    { kind: 'addService', service: svc() },
  );
  const nft = remover();
  expect(await cleanup(k, 'kube-ipvs0', captureLogger(), nft)).toEqual({ services: 1, addresses: 1, link: true, errors: [], nftTable: true });
  expect(nft.calls).toEqual(['remove']);
});

test('without kube-ipvs0 the table is still removed', async () => {
  const nft = remover();
  expect(await cleanup(new FakeKernel(), 'kube-ipvs0', captureLogger(), nft)).toEqual({ services: 0, addresses: 0, link: false, errors: [], nftTable: true });
  expect(nft.calls).toEqual(['remove']);
});

test('a failure to remove the table is logged and reported, not thrown', async () => {
  const log = captureLogger();
  const r = await cleanup(new FakeKernel(), 'kube-ipvs0', log, remover('nftables: remove inet kipvs failed (exit 1): boom'));
  expect(r.nftTable).toBe(false);
  expect(log.errors()).toEqual(['nftables: remove inet kipvs failed (exit 1): boom']);
});
