// The bookkeeping behind incremental updates of kipvs's nftables table (pure, no I/O): which set elements
// each part (a virtual server, a bound address; lib/nft/model.ts) contributes, with a reference count per
// element, since many parts share one (an endpoint address in many Services: one hairpin element). Replacing
// one part costs work in proportion to that part, never to the number of parts; takeChanges() then gives
// the elements that appeared and disappeared since the last call, which render.ts turns into one
// `add element` / `delete element` transaction.

import type { NftGlobals, NftPart } from './model.js';
import { elementContext, partElements, type ElementContext, type NftElement } from './render.js';

/** An element as one string (set names hold no space). */
const id = ([set, element]: NftElement) => `${set} ${element}`;
const unid = (s: string): NftElement => {
  const at = s.indexOf(' ');
  return [s.slice(0, at), s.slice(at + 1)];
};

export class NftElementIndex {
  private readonly ctx: ElementContext;
  private readonly parts = new Map<string, readonly string[]>();
  private readonly refs = new Map<string, number>();
  /** Net changes since takeChanges(): true = added, false = deleted. */
  private readonly pending = new Map<string, boolean>();
  /** Element strings built so far: the work done, in a unit a test can count. */
  built = 0;

  /** @throws {NftModelError} a bad node address. */
  constructor(readonly globals: NftGlobals) {
    this.ctx = elementContext(globals);
  }

  /** Replaces the part under `key` (undefined: it is gone). @throws {NftModelError} a bad value; nothing changes then. */
  set(key: string, part: NftPart | undefined): void {
    const next = part ? [...new Set(partElements(part, this.ctx).map(id))] : [];
    this.built += next.length;
    const prev = this.parts.get(key) ?? [];
    // Counted up first: an element the part keeps never drops to zero on the way.
    for (const e of next) this.count(e, 1);
    for (const e of prev) this.count(e, -1);
    if (next.length) this.parts.set(key, next);
    else this.parts.delete(key);
  }

  /** The elements added and deleted since the last call (or since construction). */
  takeChanges(): { add: NftElement[]; delete: NftElement[] } {
    const out = { add: [] as NftElement[], delete: [] as NftElement[] };
    for (const [e, added] of this.pending) (added ? out.add : out.delete).push(unid(e));
    this.pending.clear();
    return out;
  }

  /** Every element now in force. */
  elements(): NftElement[] {
    return [...this.refs.keys()].map(unid);
  }

  private count(e: string, by: 1 | -1): void {
    const n = (this.refs.get(e) ?? 0) + by;
    if (n) this.refs.set(e, n);
    else this.refs.delete(e);
    if (n !== (by > 0 ? 1 : 0)) return;
    // Appeared or disappeared: cancels an opposite pending change, else is one.
    if (this.pending.has(e)) this.pending.delete(e);
    else this.pending.set(e, by > 0);
  }
}
