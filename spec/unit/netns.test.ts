// withNetns / netnsId against real network namespaces (`ip netns add`), and netlink sockets
// created inside them. Needs root and `ip netns`; skipped with a message otherwise.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { createRtNetlink, type RtNetlinkSocket } from 'netlink';
import { NetnsError, netnsId, withNetns } from '../../lib/netns.js';

const tag = `kipvs-t${process.pid}`;
const NS_A = `${tag}-a`;
const NS_B = `${tag}-b`;
const nsPath = (name: string): string => `/var/run/netns/${name}`;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Why the suite cannot run here, or undefined when it can. */
function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  const probe = `${tag}-probe`;
  try {
    ip('netns', 'add', probe);
  } catch (e) {
    return `\`ip netns add\` failed: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`;
  }
  ip('netns', 'del', probe);
  return undefined;
}

const reason = skipReason();
if (reason) console.warn(`netns tests skipped: ${reason}`);
const suite = reason ? describe.skip : describe;

/** name -> IFF_UP, as seen through `sock`. */
async function links(sock: RtNetlinkSocket): Promise<Map<string, boolean>> {
  const msgs = await sock.getLinks();
  return new Map(msgs.map((m) => [String(m.attrs.ifname), Boolean(m.data.flags?.up)]));
}

suite('withNetns (real network namespaces)', () => {
  const sockets: RtNetlinkSocket[] = [];
  let host: number;
  let idA: number;
  let idB: number;
  let vethSupported = false;

  beforeAll(() => {
    ip('netns', 'add', NS_A);
    ip('netns', 'add', NS_B);
    ip('-n', NS_A, 'link', 'set', 'lo', 'up'); // lo: up in A, down (fresh) in B
    try {
      ip('-n', NS_A, 'link', 'add', 'kt-va0', 'type', 'veth', 'peer', 'name', 'kt-va1');
      vethSupported = true;
    } catch (e) {
      console.warn(`veth not available, veth case skipped: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`);
    }
    host = statSync('/proc/self/ns/net').ino;
    idA = statSync(nsPath(NS_A)).ino;
    idB = statSync(nsPath(NS_B)).ino;
  });

  afterAll(() => {
    for (const s of sockets) s.socket.close();
    for (const ns of [NS_A, NS_B]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    }
  });

  function rtnlIn(path: string | undefined): RtNetlinkSocket {
    const s = withNetns(path, () => createRtNetlink());
    sockets.push(s);
    return s;
  }

  test('the namespaces are distinct and netnsId names the current one', () => {
    expect(new Set([host, idA, idB]).size).toBe(3);
    expect(netnsId()).toBe(host);
  });

  test('switches the thread into the namespace for fn only, and passes the result through', () => {
    const seen = withNetns(nsPath(NS_A), () => netnsId());
    expect(seen).toBe(idA);
    expect(netnsId()).toBe(host);
    expect(withNetns(nsPath(NS_B), () => ({ id: netnsId() }))).toEqual({ id: idB });
    expect(netnsId()).toBe(host);
  });

  test('undefined path just calls fn in the current namespace', () => {
    let calls = 0;
    expect(withNetns(undefined, () => { calls++; return netnsId(); })).toBe(host);
    expect(calls).toBe(1);
  });

  test('nested calls return to the enclosing namespace, not to the host', () => {
    const trail: number[] = [];
    withNetns(nsPath(NS_A), () => {
      trail.push(netnsId());
      withNetns(nsPath(NS_B), () => trail.push(netnsId()));
      trail.push(netnsId());
    });
    trail.push(netnsId());
    expect(trail).toEqual([idA, idB, idA, host]);
  });

  test('restores the thread when fn throws, and rethrows the same value', () => {
    const boom = new Error('boom');
    let inside = 0;
    let caught: unknown;
    try {
      withNetns(nsPath(NS_A), () => {
        inside = netnsId();
        throw boom;
      });
    } catch (e) {
      caught = e;
    }
    expect(inside).toBe(idA);
    expect(caught).toBe(boom);
    expect(netnsId()).toBe(host);

    // non-Error values too, through a nested level
    let caught2: unknown;
    try {
      withNetns(nsPath(NS_A), () => withNetns(nsPath(NS_B), () => { throw 42; }));
    } catch (e) {
      caught2 = e;
    }
    expect(caught2).toBe(42);
    expect(netnsId()).toBe(host);
  });

  test('a missing path is ENOENT naming the path, without calling fn or moving', () => {
    const missing = `/var/run/netns/${tag}-does-not-exist`;
    let called = false;
    let err: NetnsError | undefined;
    try {
      withNetns(missing, () => { called = true; });
    } catch (e) {
      err = e as NetnsError;
    }
    expect(err).toBeInstanceOf(NetnsError);
    expect(err?.code).toBe('ENOENT');
    expect(err?.errno).toBe(2);
    expect(err?.syscall).toBe('open');
    expect(err?.path).toBe(missing);
    expect(err?.message).toContain(missing);
    expect(err?.message).toContain('ENOENT');
    expect(called).toBe(false);
    expect(netnsId()).toBe(host);
  });

  test('a file that is not a network namespace is EINVAL from setns, without calling fn', () => {
    for (const path of ['/proc/self/ns/uts', '/etc/hostname']) {
      let called = false;
      let err: NetnsError | undefined;
      try {
        withNetns(path, () => { called = true; });
      } catch (e) {
        err = e as NetnsError;
      }
      expect(err).toBeInstanceOf(NetnsError);
      expect(err?.code).toBe('EINVAL');
      expect(err?.syscall).toBe('setns');
      expect(err?.message).toContain(path);
      expect(called).toBe(false);
      expect(netnsId()).toBe(host);
    }
  });

  test('bad arguments are TypeErrors', () => {
    expect(() => withNetns('', () => 1)).toThrow(TypeError);
    expect(() => withNetns('/var/run/netns/a\0b', () => 1)).toThrow(TypeError);
  });

  test('accepts /proc/PID/ns/net of a process living in the namespace', async () => {
    const child: ChildProcess = spawn('ip', ['netns', 'exec', NS_B, 'sleep', '30'], { stdio: 'ignore' });
    try {
      const procPath = `/proc/${child.pid}/ns/net`;
      // `ip netns exec` enters the namespace, then execs sleep: wait for it
      for (let i = 0; i < 100 && statSync(procPath).ino !== idB; i++) await new Promise((r) => setTimeout(r, 20));
      expect(withNetns(procPath, () => netnsId())).toBe(idB);
      expect(netnsId()).toBe(host);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('a netlink socket created inside keeps talking to that namespace after withNetns returns', async () => {
    const inA = rtnlIn(nsPath(NS_A));
    const inB = rtnlIn(nsPath(NS_B));
    const onHost = rtnlIn(undefined);
    expect(netnsId()).toBe(host);

    // queried from the host thread, answered by each socket's own namespace
    const a = await links(inA);
    const b = await links(inB);
    const h = await links(onHost);

    expect([...b.keys()]).toEqual(['lo']); // a fresh namespace has only lo...
    expect(b.get('lo')).toBe(false); // ...and it is down
    expect(a.get('lo')).toBe(true); // set up with `ip -n A` only
    expect(h.has('lo')).toBe(true);

    // and a change made with `ip -n B` now is seen only through B's socket
    ip('-n', NS_B, 'link', 'set', 'lo', 'up');
    expect((await links(inB)).get('lo')).toBe(true);
    ip('-n', NS_B, 'link', 'set', 'lo', 'down');
    expect((await links(inB)).get('lo')).toBe(false);
    expect((await links(inA)).get('lo')).toBe(true);
  });

  test('links created in one namespace are seen only through the socket opened there (veth)', async () => {
    if (!vethSupported) {
      console.warn('veth case skipped: this kernel cannot create veth links');
      return;
    }
    const a = await links(rtnlIn(nsPath(NS_A)));
    const b = await links(rtnlIn(nsPath(NS_B)));
    const h = await links(rtnlIn(undefined));
    expect([...a.keys()].sort()).toEqual(['kt-va0', 'kt-va1', 'lo']);
    expect([...b.keys()]).toEqual(['lo']);
    expect(h.has('kt-va0')).toBe(false);
    expect(h.has('kt-va1')).toBe(false);
  });
});
