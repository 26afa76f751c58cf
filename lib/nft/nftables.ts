// Applies kipvs's nftables table: one `nft -f -` process per apply (never one per entry), run inside the
// target network namespace through `nsenter --net=PATH`, skipped when the rendered text equals what was
// last applied. update() keeps the table in parts (lib/nft/incremental.ts): a full update replaces the
// whole table, a partial one only adds and deletes the set elements of the parts that changed. Owns
// nothing but the table `inet kipvs` (lib/nft/render.ts).

import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Logger } from '../log.js';
import { NftElementIndex } from './incremental.js';
import { modelFromParts, type NftGlobals, type NftModel, type NftPart } from './model.js';
import { renderElementChanges, renderRemove, renderRuleset, TABLE } from './render.js';

export interface NftablesOptions {
  /** Network namespace to program (/run/netns/NAME or /proc/PID/ns/net); default: the current one. */
  netns?: string;
  logger: Logger;
  /** The nft binary: a path, or a name looked up in PATH (and /usr/sbin, /sbin); default 'nft'. */
  nft?: string;
  /** Bound on one nft run, in ms (default 30 s): the process is killed and apply fails after it. */
  timeoutMs?: number;
}

const SBIN = ['/usr/sbin', '/sbin', '/usr/local/sbin'];

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The absolute path of `name` (PATH, then the sbin directories); a clear Error when there is none. */
export function findNft(name: string, path = process.env.PATH ?? ''): string {
  if (name.includes('/')) {
    if (executable(name)) return name;
    throw new Error(`nftables: ${name} is not an executable file (kipvs needs nft, from the nftables package, for ${TABLE})`);
  }
  for (const dir of [...path.split(delimiter).filter(Boolean), ...SBIN]) {
    if (executable(join(dir, name))) return join(dir, name);
  }
  throw new Error(`nftables: ${name} not found in PATH or ${SBIN.join(', ')}: install the nftables package (kipvs needs nft for ${TABLE})`);
}

export class Nftables {
  private readonly log: Logger;
  private readonly netns?: string;
  private readonly nftName: string;
  private readonly timeoutMs: number;
  private nftPath?: string;
  /** The script last applied successfully; undefined after a failure or remove(), so the next apply runs. */
  private last?: string;
  /** What update() last put in the table, by part; undefined unless the table is exactly that (no failure since). */
  private index?: NftElementIndex;

  constructor(opts: NftablesOptions) {
    this.log = opts.logger;
    this.netns = opts.netns;
    this.nftName = opts.nft ?? 'nft';
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  /**
   * Replaces the table with the one `model` describes, atomically (one nft transaction). Does nothing when
   * the rendered script equals the last one applied, unless `force`.
   * @throws {NftModelError} a bad value in the model (nothing is run).
   * @throws {Error} nft is missing or failed: the message names the table and carries nft's stderr; the
   *   kernel keeps the previous table (the transaction is all or nothing).
   */
  async apply(model: NftModel, opts: { force?: boolean } = {}): Promise<boolean> {
    const script = renderRuleset(model);
    if (!opts.force && script === this.last) return false;
    this.last = undefined;
    this.index = undefined;
    await this.run(script, 'apply');
    this.last = script;
    this.log.debug(`nftables: applied ${TABLE}`, { services: model.services.length, bytes: script.length });
    return true;
  }

  /**
   * Full: replaces the table (forced) with the one `globals` and `parts` (every part) describe. Otherwise:
   * replaces only the parts named (undefined: gone), in one transaction of element additions and deletions,
   * none when nothing changed; returns whether nft ran. After any failure (and before the first full
   * update, or when the globals changed) a partial update throws, without running nft, an error whose
   * `needsFull` is true: the caller's full update repairs the table.
   * @throws {NftModelError} a bad value in a part. @throws {Error} as apply.
   */
  async update(globals: NftGlobals, parts: ReadonlyMap<string, NftPart | undefined>, opts: { full?: boolean } = {}): Promise<boolean> {
    if (opts.full) {
      const index = new NftElementIndex(globals);
      for (const [key, part] of parts) index.set(key, part);
      index.takeChanges();
      await this.apply(modelFromParts(globals, [...parts.values()].filter((p) => p !== undefined)), { force: true });
      this.index = index;
      return true;
    }
    const index = this.index;
    if (!index || JSON.stringify(index.globals) !== JSON.stringify(globals)) {
      const why = index ? 'node addresses, cluster CIDRs or masquerade-all changed' : 'none yet, or the last one failed';
      throw Object.assign(new Error(`nftables: ${TABLE} needs a full update first (${why})`), { needsFull: true });
    }
    this.index = undefined; // until the kernel has the change
    for (const [key, part] of parts) index.set(key, part);
    const changes = index.takeChanges();
    const script = renderElementChanges(changes);
    if (script) {
      this.last = undefined;
      await this.run(script, 'update');
      this.log.debug(`nftables: updated ${TABLE}`, { added: changes.add.length, deleted: changes.delete.length, bytes: script.length });
    }
    this.index = index;
    return script !== '';
  }

  /** Removes the table; idempotent (no table is not an error). @throws {Error} as apply. */
  async remove(): Promise<void> {
    this.last = undefined;
    this.index = undefined;
    await this.run(renderRemove(), 'remove');
    this.log.info(`nftables: removed ${TABLE}`);
  }

  private run(script: string, what: string): Promise<void> {
    this.nftPath ??= findNft(this.nftName);
    const [cmd, args] = this.netns
      ? ['nsenter', [`--net=${this.netns}`, '--', this.nftPath, '-f', '-']]
      : [this.nftPath, ['-f', '-']];
    const where = this.netns ? ` in ${this.netns}` : '';
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      let settled = false;
      const settle = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const failed = (why: string) => new Error(`nftables: ${what} ${TABLE}${where} failed (${why}): ${stderr.trim() || '(no output)'}`);
      // Settles at once: a child of the killed process may keep stderr open for longer, so it is
      // destroyed too (the agent holds no pipe to an orphan).
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        child.stderr.destroy();
        settle(failed(`timed out after ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (err) => settle(new Error(`nftables: ${what} ${TABLE}${where}: cannot run ${cmd}: ${err.message}`)));
      child.on('close', (code, signal) => settle(code === 0 ? undefined : failed(code !== null ? `exit ${code}` : `signal ${signal}`)));
      child.stdin.on('error', () => {}); // an early exit shows up in 'close' with its stderr
      child.stdin.end(script);
    });
  }
}
