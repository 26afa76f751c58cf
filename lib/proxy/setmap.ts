// A map from keys to insertion-ordered sets of strings, for the reconciler's indexes (the Services
// wanting a virtual server or an address, the EndpointSlices of a Service). Nearly every key has one
// value, so a set of one is kept as the string itself: a Set per key cost 1.4 MB per index at 10k Services.

export class SetMap {
  private readonly map = new Map<string, string | Set<string>>();

  /** Adds `value` to the set of `key` (at its end; nothing if already there). */
  add(key: string, value: string): void {
    const cur = this.map.get(key);
    if (cur === undefined) this.map.set(key, value);
    else if (typeof cur === 'string') {
      if (cur !== value) this.map.set(key, new Set([cur, value]));
    } else cur.add(value);
  }

  /** Removes `value` from the set of `key`; true when that emptied it (the key is then gone). */
  delete(key: string, value: string): boolean {
    const cur = this.map.get(key);
    if (cur === undefined) return false;
    if (typeof cur === 'string') {
      if (cur !== value) return false;
      this.map.delete(key);
      return true;
    }
    if (!cur.delete(value)) return false;
    if (cur.size === 1) this.map.set(key, cur.values().next().value!);
    return false;
  }

  /** The oldest value of `key`'s set. */
  first(key: string): string | undefined {
    const cur = this.map.get(key);
    return typeof cur === 'string' ? cur : cur?.values().next().value;
  }

  /** The values of `key`'s set, oldest first (none when absent). */
  values(key: string): Iterable<string> {
    const cur = this.map.get(key);
    return cur === undefined ? [] : typeof cur === 'string' ? [cur] : cur;
  }
}
