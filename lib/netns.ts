// Network namespaces: this module owns stepping the main JS thread into another network namespace
// to create kernel sockets there (native addon native-bindings/, kipvs_netns.node), and nothing
// else. A socket belongs for life to the namespace of the thread that created it, and setns() moves
// only the calling thread, so sockets created synchronously inside withNetns() talk to the target
// namespace while the rest of the agent (and libuv's thread pool) stays where it was.
//
// The addon is loaded lazily on the first withNetns(path, ...) / netnsId(): without a namespace
// (path undefined) nothing native is needed, so importing this module never fails.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A namespace could not be opened or entered (see {@link withNetns}). Created here, in the
 * caller's JS realm, from the addon's error, so `instanceof` works (also under jest's vm realms).
 */
export class NetnsError extends Error {
  override readonly name = 'NetnsError';
  /** Positive errno, e.g. 2. */
  readonly errno: number;
  /** Symbolic errno, e.g. 'ENOENT', 'EPERM', 'EINVAL'. */
  readonly code: string;
  /** The failing call: 'open' | 'setns' (withNetns), 'stat' (netnsId). */
  readonly syscall: string;
  /** The namespace file involved. */
  readonly path: string;

  constructor(message: string, errno: number, code: string, syscall: string, path: string) {
    super(message);
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
    this.path = path;
  }
}

/** Re-creates an addon error (thrown from the addon's realm) as a NetnsError of this realm. */
function fromAddon(e: unknown): Error {
  const n = e as Partial<NetnsError> | null;
  if (n && typeof n.errno === 'number' && typeof n.code === 'string') {
    return new NetnsError(String(n.message), n.errno, n.code, String(n.syscall), String(n.path));
  }
  return new Error(String(n?.message ?? e));
}

interface Addon {
  withNetns<T>(path: string, fn: () => T): T;
  currentNetnsId(): number;
}

const ADDON_REL = join('native-bindings', 'build', 'Release', 'kipvs_netns.node');

/** The package root: the nearest ancestor with kipvs's package.json (works from lib/ and build/lib/). */
function packageRoot(): string {
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'kipvs') return dir;
      } catch {
        // an unreadable package.json is not ours; keep looking
      }
    }
    if (dirname(dir) === dir) throw new Error(`kipvs package root not found above ${start}`);
  }
}

let addon: Addon | undefined;

function load(): Addon {
  if (addon) return addon;
  const file = join(packageRoot(), ADDON_REL);
  if (!existsSync(file)) {
    throw new Error(`network namespace support needs the native addon ${file}, which is not built: run make build`);
  }
  addon = createRequire(import.meta.url)(file) as Addon;
  return addon;
}

/**
 * Calls `fn` with the calling thread inside the network namespace at `path` (a bind-mounted
 * namespace such as /var/run/netns/NAME, or /proc/PID/ns/net), then returns the thread to the
 * namespace it was in, also when `fn` throws, and returns what `fn` returned. With `path`
 * undefined, just calls `fn` (the addon is not needed).
 *
 * `fn` must do its namespace-bound work synchronously: sockets it creates (e.g. `new
 * RawNetlinkSocket(...)`) stay in the namespace for life, but anything after an `await`, timers,
 * and thread-pool work (dns.lookup, async fs) run outside it. Calls may nest.
 *
 * @throws {NetnsError} `fn` is not called, and the thread has not moved, when the namespace cannot be
 *   opened (syscall 'open': ENOENT no such file, EACCES) or entered (syscall 'setns': EINVAL not a
 *   network namespace, EPERM no CAP_SYS_ADMIN); the message names the path and the errno code.
 * @throws {TypeError} `path` is empty or contains a NUL byte, or `fn` is not a function.
 * @throws {Error} the addon is not built ("run make build").
 * @throws whatever `fn` throws, unchanged, after the thread is back in its namespace. If going back
 *   fails the process aborts with a fatal message: it must not keep running in the wrong namespace.
 */
export function withNetns<T>(path: string | undefined, fn: () => T): T {
  if (path === undefined) return fn();
  if (typeof path !== 'string' || path === '' || path.includes('\0')) {
    throw new TypeError(`withNetns: path must be a non-empty string without NUL bytes, got ${JSON.stringify(path)}`);
  }
  if (typeof fn !== 'function') throw new TypeError('withNetns: fn must be a function');
  const a = load();
  // The addon fails only before calling fn (open/setns of the target); once fn has run, every
  // exception is fn's own and passes through untouched. (Failing to go back aborts the process.)
  let entered = false;
  try {
    return a.withNetns(path, () => {
      entered = true;
      return fn();
    });
  } catch (e) {
    if (entered) throw e;
    throw fromAddon(e);
  }
}

/**
 * The calling thread's network namespace id: the inode of /proc/thread-self/ns/net, equal to
 * `fs.statSync(path).ino` of any file naming that namespace (/var/run/netns/NAME, /proc/PID/ns/net).
 * @throws {NetnsError} (syscall 'stat') when /proc is unavailable.
 * @throws {Error} the addon is not built ("run make build").
 */
export function netnsId(): number {
  const a = load();
  try {
    return a.currentNetnsId();
  } catch (e) {
    throw fromAddon(e);
  }
}
