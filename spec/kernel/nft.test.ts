// Assertions on what the nftables scenarios (nft.scenarios.ts) observed with real packets on the real
// kernel: each reading is the address the backend saw ("seen A") or how curl failed ("failed 7" refused,
// "failed 28" timed out). Every check is paired with the reading without kipvs's table, so each can fail.
import { scenario } from './results.js';

const NODE_ON_BACKEND = 'seen 10.244.1.1';
const NODE_ON_BACKEND6 = 'seen fd00:244::1';
const CLIENT = 'seen 192.168.10.2';

describe('masquerade', () => {
  const v = () => scenario('nft: masquerade from outside the cluster CIDR, Local external traffic, hairpin, IPv6');

  test('a client outside the cluster CIDR reaching a ClusterIP: the backend sees the node, not the client', () => {
    expect(v().without.clientToClusterIP).toBe(CLIENT);
    expect(v().with.clientToClusterIP).toBe(NODE_ON_BACKEND);
  });

  test('a pod inside the cluster CIDR keeps its own address', () => {
    expect(v().with.podToClusterIP).toBe('seen 10.244.2.7');
  });

  test('external traffic: masqueraded unless the policy is Local, which keeps the client address', () => {
    expect(v().without.clientToExternalCluster).toBe(CLIENT);
    expect(v().with.clientToExternalCluster).toBe(NODE_ON_BACKEND);
    expect(v().with.clientToExternalLocal).toBe(CLIENT);
  });

  test('hairpin: a pod reaching itself through its ClusterIP works only with the table (masqueraded)', () => {
    expect(v().without.hairpin).toMatch(/^failed/);
    expect(v().with.hairpin).toBe(NODE_ON_BACKEND);
  });

  test('IPv6 ClusterIP from outside the cluster CIDR is masqueraded too', () => {
    expect(v().without.clientToClusterIP6).toBe('seen fd00:10::2');
    expect(v().with.clientToClusterIP6).toBe(NODE_ON_BACKEND6);
  });

  test('the first apply runs nft', () => {
    expect(v().applied).toBe(true);
  });
});

describe('filtering', () => {
  const h = () => scenario("nft: a host port is not reachable through a VIP (kubernetes#72236), the node's own connections from a VIP are");
  const r = () => scenario('nft: loadBalancerSourceRanges admit the clients inside them only, and the node when they hold its address');

  test('a host process on 0.0.0.0:9999 is reachable through a VIP without the table, refused with it (IPv4 and IPv6)', () => {
    expect(h().without.viaVip).toBe(CLIENT);
    expect(h().without.viaVip6).toBe('seen fd00:10::2');
    expect(h().with.viaVip).toBe('failed 7');
    expect(h().with.viaVip6).toBe('failed 7');
  });

  test('the same host port on the node address, the service port, and the node connecting out from a VIP still work', () => {
    expect(h().with.viaNodeAddress).toBe(CLIENT);
    expect(h().with.servicePort).toBe(NODE_ON_BACKEND);
    expect(h().with.nodeFromVip).toBe('seen 10.96.0.10');
  });

  test('loadBalancerSourceRanges: the client inside the range connects, the one outside is dropped', () => {
    expect(r().without.outside).toBe('seen 192.168.10.3');
    expect(r().with.inside).toBe(NODE_ON_BACKEND);
    expect(r().with.outside).toBe('failed 28');
  });

  test('the node itself reaches a load balancer with ranges only when they hold a node address (kube-proxy #119656)', () => {
    expect(r().without.node).toMatch(/^seen /);
    expect(r().with.node).toMatch(/^failed/);
    expect(r().with.nodeWhenRangesHoldNode).toMatch(/^seen /);
    expect(r().with.clientWhenRangesHoldNode).toBe(NODE_ON_BACKEND);
  });

  test('the client outside the range still reaches services without ranges', () => {
    expect(r().with.outsideOnClusterIP).toBe(NODE_ON_BACKEND);
  });
});

describe('ownership', () => {
  const o = () => scenario('nft: apply, remove and --cleanup touch no other table; remove is idempotent; an unchanged model runs no nft');

  test('another table is identical before, after apply, after remove', () => {
    expect(o().before).toMatch(/203\.0\.113\.9/);
    expect(o().afterApply.other).toBe(o().before);
    expect(o().afterRemove.other).toBe(o().before);
    expect(o().finalOther).toBe(o().before);
  });

  test('apply adds exactly inet kipvs; remove takes it away and a second remove is no error', () => {
    expect(o().afterApply.tables).toEqual(['table inet kipvs', 'table ip other']);
    expect(o().afterRemove.tables).toEqual(['table ip other']);
    expect(o().secondRemove).toBe('ok');
  });

  test('an unchanged model is not re-applied; a changed one replaces the sets; force re-applies', () => {
    expect([o().applied, o().again, o().changed, o().forced]).toEqual([true, false, true, true]);
    expect(o().kipvsAfterChange).not.toMatch(/10\.96\.0\.10 /);
    expect(o().kipvsAfterChange).toMatch(/10\.96\.0\.21 \. tcp \. 80/);
  });

  test('--cleanup (cleanup() with the Nftables remover) takes the table away, no kube-ipvs0 needed, and leaves the other', () => {
    expect(o().cleaned).toEqual({ services: 0, addresses: 0, link: false, errors: [], nftTable: true });
    expect(o().afterCleanup).toEqual({ other: o().before, tables: ['table ip other'] });
  });

  test('a missing nft is a clear error naming the package and the table', () => {
    expect(o().missingError).toMatch(/kipvs-no-such-nft not found .*install the nftables package.*inet kipvs/);
  });
});

describe('incremental updates', () => {
  const i = () => scenario('nft: incremental updates (Service added, endpoint removed, endpoint added) leave the table a full apply would load');

  test('a LoadBalancer added by element updates is masqueraded and firewalled at once (it was neither before)', () => {
    expect(i().full).toBe(true);
    expect(i().beforeAdd).toEqual({ inside: CLIENT, outside: 'seen 192.168.10.3' });
    expect(i().afterSteps).toEqual({ inside: NODE_ON_BACKEND, outside: 'failed 28' });
  });

  test('each change ran nft; an unchanged part ran nothing', () => {
    expect(i().steps).toEqual([true, true, true, false]);
  });

  test('the removed endpoint left the hairpin set, the added one joined it', () => {
    expect(i().hairpin).toContain('10.244.1.8 . 10.244.1.8');
    expect(i().hairpin).not.toContain('10.244.1.9');
  });

  test('the table after the element updates equals the one a full apply of the final parts loads (sets and rules)', () => {
    expect(i().incrementalTable).toEqual(i().fullTable);
    expect(JSON.stringify(i().incrementalTable)).toContain('10.96.0.32');
  });
});
