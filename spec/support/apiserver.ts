// A test kube-apiserver on 127.0.0.1: enough of the real wire protocol (list, watch as chunked JSON
// lines, resourceVersions, bookmarks, 410 Gone, Status errors) that the unmodified
// @kubernetes/client-node runs against it. State lives in memory and survives stop()/start(), so a
// test can take the server away, change objects meanwhile and bring it back on the same port.
// GET is served over HTTP for every resource; events.k8s.io/v1 Events can also be created (POST)
// and patched (merge or strategic-merge PATCH), as the agent's recorder does. Tests write the other
// objects through create/update/delete.

import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';

export type Resource = 'services' | 'endpointslices' | 'nodes' | 'configmaps' | 'events';

/** The wire form of any object: what the real server sends (dates as strings, kind on watch). */
export interface WireObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string; namespace?: string; uid?: string; resourceVersion?: string;
    creationTimestamp?: string; labels?: Record<string, string>; [k: string]: unknown;
  };
  [k: string]: unknown;
}

interface ResourceInfo { prefix: string; apiVersion: string; kind: string; namespaced: boolean }
const RESOURCES: Record<Resource, ResourceInfo> = {
  services: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Service', namespaced: true },
  nodes: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Node', namespaced: false },
  configmaps: { prefix: '/api/v1', apiVersion: 'v1', kind: 'ConfigMap', namespaced: true },
  endpointslices: {
    prefix: '/apis/discovery.k8s.io/v1', apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', namespaced: true,
  },
  events: { prefix: '/apis/events.k8s.io/v1', apiVersion: 'events.k8s.io/v1', kind: 'Event', namespaced: true },
};
/** Resources that may be written over HTTP (POST to create, PATCH to patch). */
const WRITABLE: ReadonlySet<Resource> = new Set(['events']);

export interface ApiServerOptions {
  /** Events kept for watches that resume from a resourceVersion (default 1000); older → 410 Gone. */
  historyLimit?: number;
  /** Period of BOOKMARK events on watches that asked for them (default 60000 ms, 0 = never). */
  bookmarkIntervalMs?: number;
  /** How an expired resourceVersion is refused on watch: an ERROR event in a 200 stream, as the
   *  real watch cache does (default), or an HTTP 410 response. */
  expiredAs?: 'event' | 'status';
  /** When set, requests must carry `Authorization: Bearer <token>` (else 401). */
  token?: string;
}

export interface RequestRecord {
  method: string; path: string; query: Record<string, string>; watch: boolean; status: number;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
interface Event { rv: number; resource: Resource; type: EventType; object: WireObject; old?: WireObject }
type Filter = (o: WireObject) => boolean;
interface Watcher { resource: Resource; filter: Filter; bookmarks: boolean; res: http.ServerResponse }

class HttpError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string) { super(message); }
}

export function status(code: number, reason: string, message: string): WireObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

// JSON, not structuredClone: under jest the latter builds objects of another realm, which
// isDeepStrictEqual then tells apart from identical ones.
const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o));
const keyOf = (o: WireObject): string => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
const now = (): string => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

export class TestApiServer {
  readonly requests: RequestRecord[] = [];
  private rv = 1;
  /** Lowest resourceVersion a watch may resume from. */
  private horizon = 1;
  private readonly history: Event[] = [];
  private readonly objects = new Map<Resource, Map<string, WireObject>>(
    (Object.keys(RESOURCES) as Resource[]).map((r) => [r, new Map()]));
  private readonly watchers = new Set<Watcher>();
  private readonly server = http.createServer((req, res) => this.handle(req, res));
  private bookmarkTimer?: NodeJS.Timeout;
  private port = 0;
  private readonly failures = new Map<Resource, number>();
  private readonly opts: Required<Omit<ApiServerOptions, 'token'>> & { token?: string };

  constructor(options: ApiServerOptions = {}) {
    this.opts = { historyLimit: 1000, bookmarkIntervalMs: 60000, expiredAs: 'event', ...options };
  }

  /** Listens on 127.0.0.1 (a random port the first time, the same port after stop()). */
  async start(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => { this.server.off('error', reject); resolve(); });
    });
    this.port = (this.server.address() as AddressInfo).port;
    if (this.opts.bookmarkIntervalMs > 0) {
      this.bookmarkTimer = setInterval(() => this.bookmark(), this.opts.bookmarkIntervalMs).unref();
    }
    return this;
  }

  /** Goes away like a crashed server: open connections are cut, new ones refused. State is kept. */
  async stop(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    this.watchers.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  get url(): string { return `http://127.0.0.1:${this.port}`; }
  get resourceVersion(): string { return String(this.rv); }
  get openWatches(): number { return this.watchers.size; }

  /** A KubeConfig for this server (plain HTTP, so skipTLSVerify as client-node requires). */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'test', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'test', ...(this.opts.token ? { token: this.opts.token } : {}) }],
      contexts: [{ name: 'test', cluster: 'test', user: 'test' }],
      currentContext: 'test',
    });
    return kc;
  }

  /** Writes a kubeconfig file (JSON, which is YAML) pointing at this server. */
  writeKubeconfig(path: string): void { writeFileSync(path, this.kubeConfig().exportConfig()); }

  /** Creates an object, assigning uid, creationTimestamp and resourceVersion; returns the stored
   *  copy. Throws on a duplicate or, unless `validate` is false, a missing name. */
  create(resource: Resource, obj: WireObject, { validate = true } = {}): WireObject {
    const info = RESOURCES[resource];
    const o = clone(obj);
    o.apiVersion = info.apiVersion;
    o.kind = info.kind;
    const meta = (o.metadata ??= {});
    if (validate && !meta.name) throw new Error(`${info.kind}: metadata.name is required`);
    if (info.namespaced) meta.namespace ??= 'default';
    else delete meta.namespace;
    const key = validate ? keyOf(o) : `${meta.namespace ?? ''}/${meta.name ?? randomUUID()}`;
    if (this.objects.get(resource)!.has(key)) throw new Error(`${info.kind} ${key} already exists`);
    Object.assign(meta, { uid: randomUUID(), creationTimestamp: now() });
    return this.commit(resource, key, 'ADDED', o);
  }

  /** Replaces an existing object (optimistic concurrency: a resourceVersion, if given, must be the
   *  current one). Like the real server, an update that changes nothing is not written: no new
   *  resourceVersion, no event. Set `force` to write it anyway (a new resourceVersion, same content). */
  update(resource: Resource, obj: WireObject, { force = false } = {}): WireObject {
    const key = `${RESOURCES[resource].namespaced ? obj.metadata?.namespace ?? 'default' : ''}/${obj.metadata?.name}`;
    const old = this.objects.get(resource)!.get(key);
    if (!old) throw new Error(`${RESOURCES[resource].kind} ${key} not found`);
    const rv = obj.metadata?.resourceVersion;
    if (rv && rv !== old.metadata!.resourceVersion) throw new Error(`conflict on ${key}: ${rv}`);
    const o = clone(obj);
    o.apiVersion = old.apiVersion;
    o.kind = old.kind;
    o.metadata = { ...o.metadata, namespace: old.metadata!.namespace, uid: old.metadata!.uid,
      creationTimestamp: old.metadata!.creationTimestamp, resourceVersion: old.metadata!.resourceVersion };
    if (!RESOURCES[resource].namespaced) delete o.metadata.namespace;
    if (!force && isDeepStrictEqual(o, old)) return clone(old);
    return this.commit(resource, key, 'MODIFIED', o, old);
  }

  /** Deletes an object; the DELETED event carries its last state with a new resourceVersion. */
  delete(resource: Resource, namespace: string | undefined, name: string): void {
    const key = `${RESOURCES[resource].namespaced ? namespace ?? 'default' : ''}/${name}`;
    const old = this.objects.get(resource)!.get(key);
    if (!old) throw new Error(`${RESOURCES[resource].kind} ${key} not found`);
    this.commit(resource, key, 'DELETED', clone(old));
  }

  /** The stored object, or undefined. */
  get(resource: Resource, namespace: string | undefined, name: string): WireObject | undefined {
    const o = this.objects.get(resource)!.get(`${RESOURCES[resource].namespaced ? namespace ?? 'default' : ''}/${name}`);
    return o && clone(o);
  }

  /** Every stored object of `resource` (in `namespace` when given), sorted by namespace/name. */
  all(resource: Resource, namespace?: string): WireObject[] {
    return [...this.objects.get(resource)!.values()].filter((o) => namespace === undefined || o.metadata?.namespace === namespace)
      .sort((a, b) => keyOf(a).localeCompare(keyOf(b))).map(clone);
  }

  /** Makes every request on `resource` (list and watch) answer this HTTP status as a Status
   *  error, like an overloaded or misconfigured server; undefined clears it. */
  setFailure(resource: Resource, code: number | undefined): void {
    if (code === undefined) this.failures.delete(resource);
    else this.failures.set(resource, code);
  }

  /** Ends every open watch cleanly, as the real server does when a watch times out. */
  closeWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Forgets the event history as if other writes had happened and etcd had compacted: every
   *  resourceVersion handed out so far becomes too old to watch from (410 Gone). */
  compact(): void {
    this.rv += 1;
    this.horizon = this.rv;
    this.history.length = 0;
  }

  /** Sends a BOOKMARK now on every watch that asked for bookmarks. */
  bookmark(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      const { apiVersion, kind } = RESOURCES[w.resource];
      send(w.res, 'BOOKMARK', { apiVersion, kind, metadata: { resourceVersion: String(this.rv) } });
    }
  }

  private commit(resource: Resource, key: string, type: EventType, o: WireObject, old?: WireObject): WireObject {
    this.rv += 1;
    o.metadata!.resourceVersion = String(this.rv);
    if (type === 'DELETED') this.objects.get(resource)!.delete(key);
    else this.objects.get(resource)!.set(key, o);
    const ev: Event = { rv: this.rv, resource, type, object: o, old };
    this.history.push(ev);
    while (this.history.length > this.opts.historyLimit) this.horizon = this.history.shift()!.rv;
    for (const w of this.watchers) if (w.resource === resource) deliver(w, ev);
    return clone(o);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true' || query.watch === '1';
    const record: RequestRecord = { method: req.method ?? '', path: url.pathname, query, watch, status: 200 };
    this.requests.push(record);
    res.on('finish', () => { record.status = res.statusCode; });
    try {
      if (this.opts.token && req.headers.authorization !== `Bearer ${this.opts.token}`) {
        throw new HttpError(401, 'Unauthorized', 'Unauthorized');
      }
      const { resource, namespace, name } = route(url.pathname);
      const failure = this.failures.get(resource);
      if (failure) {
        const reason = failure === 403 ? 'Forbidden' : failure === 401 ? 'Unauthorized' : 'InternalError';
        throw new HttpError(failure, reason, `injected failure ${failure} on ${resource}`);
      }
      if (req.method === 'POST' || req.method === 'PATCH') {
        if (!WRITABLE.has(resource)) throw new HttpError(405, 'MethodNotAllowed', `${req.method} on ${resource} is not supported by the test server`);
        this.write(req, res, resource, namespace, name);
        return;
      }
      if (req.method !== 'GET') throw new HttpError(405, 'MethodNotAllowed', `${req.method} is not supported by the test server`);
      if (name !== undefined) return this.getOne(res, resource, namespace, name);
      const filter = selectorFilter(namespace, query.fieldSelector, query.labelSelector);
      if (watch) this.watch(res, resource, filter, query);
      else this.list(res, resource, filter, query);
    } catch (e) {
      const err = e instanceof HttpError ? e : new HttpError(500, 'InternalError', String(e));
      reply(res, err.code, status(err.code, err.reason, err.message));
    }
  }

  /** POST (create) on a namespaced collection, PATCH (JSON merge; strategic merge is the same for
   *  Events, which have no merge keys) on a named object. */
  private write(req: http.IncomingMessage, res: http.ServerResponse, resource: Resource, namespace: string | undefined, name: string | undefined): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        if (req.method === 'PATCH') {
          const type = String(req.headers['content-type'] ?? '').split(';')[0].trim();
          if (type !== 'application/merge-patch+json' && type !== 'application/strategic-merge-patch+json') {
            throw new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got "${type}")`);
          }
        }
        let body: unknown;
        try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch { throw new HttpError(400, 'BadRequest', 'the body is not JSON'); }
        if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'BadRequest', 'the body is not an object');
        if (req.method === 'POST') {
          if (name !== undefined || namespace === undefined) throw new HttpError(405, 'MethodNotAllowed', 'POST is for a namespaced collection');
          const o = body as WireObject;
          const bodyNs = o.metadata?.namespace;
          if (bodyNs !== undefined && bodyNs !== namespace) {
            throw new HttpError(400, 'BadRequest', `the namespace of the object (${bodyNs}) does not match the namespace on the request (${namespace})`);
          }
          if (!o.metadata?.name) throw new HttpError(422, 'Invalid', 'metadata.name: Required value');
          if (this.get(resource, namespace, o.metadata.name)) throw new HttpError(409, 'AlreadyExists', `${resource} "${o.metadata.name}" already exists`);
          if (resource === 'events') eventProblems(o, namespace);
          const { resourceVersion: _rv, ...meta } = o.metadata;
          return reply(res, 201, this.create(resource, { ...o, metadata: { ...meta, namespace } }));
        }
        if (name === undefined) throw new HttpError(405, 'MethodNotAllowed', 'PATCH needs a name');
        const old = this.get(resource, namespace, name);
        if (!old) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
        const patched = mergePatch(old, body) as WireObject;
        patched.metadata = { ...patched.metadata, resourceVersion: undefined };
        reply(res, 200, this.update(resource, patched));
      } catch (e) {
        const err = e instanceof HttpError ? e : new HttpError(500, 'InternalError', String(e));
        reply(res, err.code, status(err.code, err.reason, err.message));
      }
    });
  }

  private getOne(res: http.ServerResponse, resource: Resource, namespace: string | undefined, name: string): void {
    const o = this.get(resource, namespace, name);
    if (!o) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
    reply(res, 200, o);
  }

  private list(res: http.ServerResponse, resource: Resource, filter: Filter, query: Record<string, string>): void {
    const rv = parseRv(query.resourceVersion);
    if (rv !== undefined && rv > this.rv) {
      throw new HttpError(504, 'Timeout', `Too large resource version: ${rv}, current: ${this.rv}`);
    }
    const { apiVersion, kind } = RESOURCES[resource];
    const items = [...this.objects.get(resource)!.values()].filter(filter)
      .sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
      .map(({ apiVersion: _a, kind: _k, ...rest }) => rest); // list items carry no kind, like the real server
    reply(res, 200, { kind: `${kind}List`, apiVersion, metadata: { resourceVersion: String(this.rv) }, items });
  }

  private watch(res: http.ServerResponse, resource: Resource, filter: Filter, query: Record<string, string>): void {
    const from = parseRv(query.resourceVersion) ?? 0;
    if (from !== 0 && from < this.horizon) {
      const gone = status(410, 'Expired', `too old resource version: ${from} (${this.horizon})`);
      if (this.opts.expiredAs === 'status') return reply(res, 410, gone);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
      send(res, 'ERROR', gone);
      res.end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { resource, filter, bookmarks: query.allowWatchBookmarks === 'true', res };
    if (from === 0) {
      // "Start at most recent": the current objects as synthetic ADDED events, then changes.
      for (const o of this.objects.get(resource)!.values()) if (filter(o)) send(res, 'ADDED', o);
    } else {
      for (const ev of this.history) if (ev.rv > from && ev.resource === resource) deliver(w, ev);
    }
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
    const timeout = Number(query.timeoutSeconds);
    if (timeout > 0) setTimeout(() => res.end(), timeout * 1000).unref();
  }
}

/** Sends one event to a watcher, turning selector transitions into ADDED/DELETED as the real server does. */
function deliver(w: Watcher, ev: Event): void {
  const now = w.filter(ev.object);
  const before = ev.type === 'MODIFIED' ? w.filter(ev.old!) : now;
  if (now && before) send(w.res, ev.type, ev.object);
  else if (now) send(w.res, 'ADDED', ev.object);
  else if (before) send(w.res, 'DELETED', ev.object);
}

/** The real server's checks on an events.k8s.io/v1 create (ValidateEventCreate), as a 422. */
function eventProblems(o: WireObject, namespace: string): void {
  const problems: string[] = [];
  const regarding = o.regarding as { namespace?: string } | undefined;
  if (typeof o.eventTime !== 'string' || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(o.eventTime)) problems.push('eventTime: Required value (a MicroTime)');
  if (o.type !== 'Normal' && o.type !== 'Warning') problems.push(`type: Invalid value: ${JSON.stringify(o.type)}`);
  for (const f of ['reportingController', 'reportingInstance', 'action', 'reason']) {
    if (typeof o[f] !== 'string' || !o[f]) problems.push(`${f}: Required value`);
  }
  if (typeof o.note === 'string' && Buffer.byteLength(o.note) > 1024) problems.push('note: Too long: may not be more than 1024 bytes');
  if (regarding?.namespace !== undefined && regarding.namespace !== namespace) problems.push('regarding.namespace: does not match event.namespace');
  for (const f of ['deprecatedSource', 'deprecatedFirstTimestamp', 'deprecatedLastTimestamp', 'deprecatedCount']) {
    if (o[f] !== undefined && o[f] !== null) problems.push(`${f}: Forbidden: needs to be unset`);
  }
  if (problems.length) throw new HttpError(422, 'Invalid', `Event.events.k8s.io "${o.metadata?.name}" is invalid: ${problems.join(', ')}`);
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function send(res: http.ServerResponse, type: string, object: WireObject): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify({ type, object })}\n`);
}

function reply(res: http.ServerResponse, code: number, body: WireObject): void {
  res.writeHead(code, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

function parseRv(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v)) throw new HttpError(400, 'BadRequest', `invalid resource version "${v}"`);
  return Number(v);
}

const PATTERNS = [
  /^(?<prefix>\/api\/v1|\/apis\/(?:discovery|events)\.k8s\.io\/v1)\/namespaces\/(?<namespace>[^/]+)\/(?<resource>[^/]+)(?:\/(?<name>[^/]+))?$/,
  /^(?<prefix>\/api\/v1|\/apis\/(?:discovery|events)\.k8s\.io\/v1)\/(?<resource>[^/]+)(?:\/(?<name>[^/]+))?$/,
];

function route(path: string): { resource: Resource; namespace?: string; name?: string } {
  for (const re of PATTERNS) {
    const g = re.exec(path)?.groups;
    if (!g) continue;
    const info = RESOURCES[g.resource as Resource] as ResourceInfo | undefined;
    if (!info || info.prefix !== g.prefix || (g.namespace !== undefined && !info.namespaced)) break;
    // A name on an all-namespaces path of a namespaced resource is not a route.
    if (info.namespaced && g.namespace === undefined && g.name !== undefined) break;
    return { resource: g.resource as Resource, namespace: g.namespace, name: g.name };
  }
  throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
}

/** Namespace, field selector (metadata.name / metadata.namespace, = == !=) and label selector
 *  (k=v, k==v, k!=v, k, !k) as one predicate; anything else is a 400 like the real server's. */
function selectorFilter(namespace: string | undefined, fields = '', labels = ''): Filter {
  const tests: Filter[] = [];
  if (namespace !== undefined) tests.push((o) => o.metadata?.namespace === namespace);
  for (const term of fields.split(',').filter(Boolean)) {
    const m = /^([\w.]+)\s*(!=|==|=)\s*(.*)$/.exec(term);
    if (!m) throw new HttpError(400, 'BadRequest', `invalid field selector: ${term}`);
    const [, field, op, value] = m;
    if (field !== 'metadata.name' && field !== 'metadata.namespace') {
      throw new HttpError(400, 'BadRequest', `field label not supported: ${field}`);
    }
    const get = (o: WireObject) => (field === 'metadata.name' ? o.metadata?.name : o.metadata?.namespace) ?? '';
    tests.push(op === '!=' ? (o) => get(o) !== value : (o) => get(o) === value);
  }
  for (const term of labels.split(',').filter(Boolean)) {
    const m = /^\s*(!?)([\w./-]+)\s*(?:(!=|==|=)\s*([\w.-]*))?\s*$/.exec(term);
    if (!m || (m[1] && m[3])) throw new HttpError(400, 'BadRequest', `unable to parse requirement: ${term}`);
    const [, not, key, op, value] = m;
    const get = (o: WireObject) => o.metadata?.labels?.[key];
    if (!op) tests.push(not ? (o) => get(o) === undefined : (o) => get(o) !== undefined);
    else tests.push(op === '!=' ? (o) => get(o) !== value : (o) => get(o) === value);
  }
  return (o) => tests.every((t) => t(o));
}
