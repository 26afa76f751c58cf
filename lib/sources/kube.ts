// The Source that reads a live cluster: client-node ListWatch informers on Services and EndpointSlices
// (all namespaces), this node's Node and the agent's ConfigMap. client-node relists on 410 Gone by
// itself but stops for good on any other error (and emits one even when stopped on purpose), so this
// module owns resilience: each informer is restarted with jittered exponential backoff, resuming its
// watch from the last resourceVersion, and the objects held are never cleared while the API server is
// away. Like kube-proxy's change trackers, changes are kept as {previous, current} per object until
// they are reported, and dropped when the two have the same content.

import {
  CoreV1Api, DiscoveryV1Api, ListWatch, Watch,
  type KubeConfig, type KubernetesListObject, type KubernetesObject,
  type V1ConfigMap, type V1EndpointSlice, type V1Node, type V1Service,
} from '@kubernetes/client-node';
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from '../log.js';
import type { Change, ObjectKind, Snapshot, Source, SourceError } from './types.js';
import { SERVICE_NAME_LABEL } from './types.js';

export interface Backoff {
  /** First retry delay (default 1000 ms); doubles per consecutive failure. */
  initialMs: number;
  /** Cap on the doubled delay, before jitter (default 30000 ms). */
  maxMs: number;
  /** Up to this fraction of the delay is added at random (default 0.2). */
  jitter: number;
}

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
  /** This node's name: its Node object is watched with fieldSelector metadata.name=<nodeName>. */
  nodeName: string;
  /** The agent's ConfigMap; not watched when absent. */
  configMap?: { namespace: string; name: string };
  logger: Logger;
  backoff?: Partial<Backoff>;
  /** Source of randomness for the jitter (default Math.random). */
  random?: () => number;
  /** Ask the API server for BOOKMARK events, which keep the resume point fresh (default true). */
  bookmarks?: boolean;
  /** A watch that receives nothing (not even a bookmark) for this long is reopened (default
   *  300000 ms; 0 = never). The real API server sends a bookmark about once a minute. */
  watchIdleMs?: number;
}

/**
 * The kinds whose first list gates synced(): Services and EndpointSlices as in kube-proxy, and the
 * agent's ConfigMap when one is watched, so the first sync already uses its scheduler (otherwise a
 * restart would flip every service to the default and back). A ConfigMap that does not exist lists
 * as empty; one that cannot be listed (RBAC) holds the agent back, with the error logged per retry.
 */
const GATING = new Set<ObjectKind>(['Service', 'EndpointSlice', 'ConfigMap']);

/** The delay before retry number `attempt` (0-based). */
export function backoffDelay(b: Backoff, attempt: number, random: () => number): number {
  const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(base * (1 + b.jitter * random()));
}

type Obj = KubernetesObject;

/** What to list and watch for one kind. */
interface FeedSpec {
  kind: ObjectKind;
  apiVersion: string;
  /** Model type name for client-node's ObjectSerializer. */
  type: string;
  path: string;
  list: () => Promise<KubernetesListObject<Obj>>;
  fieldSelector?: string;
}

interface Pending { kind: ObjectKind; key: string; previous?: Obj; current?: Obj }

interface Feed extends FeedSpec {
  informer: ListWatch<Obj>;
  /** The first list has been applied. */
  listed: boolean;
  attempts: number;
  failedThisAttempt: boolean;
  timer?: NodeJS.Timeout;
}

/** A Watch that asks for bookmarks, gives up on a stream silent for `idleMs` (a half-open
 *  connection never ends by itself: client-node sets no read timeout) and can cut every stream it
 *  opened, including one still connecting when its informer was stopped (ListWatch.stop() misses those). */
class SourceWatch extends Watch {
  private readonly open = new Set<AbortController>();
  closed = false;
  constructor(config: KubeConfig, private readonly bookmarks: boolean, private readonly idleMs: number) { super(config); }

  override async watch(...[path, params, cb, done]: Parameters<Watch['watch']>): Promise<AbortController> {
    const query = this.bookmarks ? { ...params, allowWatchBookmarks: true } : params;
    let c: AbortController | undefined;
    let idle: NodeJS.Timeout | undefined;
    let idled = false;
    const arm = () => {
      clearTimeout(idle);
      if (c && this.idleMs > 0) idle = setTimeout(() => { idled = true; c!.abort(); }, this.idleMs);
    };
    c = await super.watch(path, query, (...event) => { arm(); cb(...event); }, (err) => {
      clearTimeout(idle);
      done(idled ? new Error(`watch ${path} silent for ${this.idleMs} ms`) : err);
    });
    if (this.closed) c.abort();
    else if (!c.signal.aborted) {
      this.open.add(c);
      c.signal.addEventListener('abort', () => { clearTimeout(idle); this.open.delete(c!); }, { once: true });
      arm();
    }
    return c;
  }

  close(): void {
    this.closed = true;
    for (const c of this.open) c.abort();
  }
}

export class KubeSource implements Source {
  private readonly services = new Map<string, V1Service>();
  private readonly endpointSlices = new Map<string, V1EndpointSlice>();
  private node?: V1Node;
  private configMap?: V1ConfigMap;
  private readonly feeds: Feed[] = [];
  private readonly watch: SourceWatch;
  private readonly backoff: Backoff;
  private readonly random: () => number;
  private readonly log: Logger;
  private pending = new Map<string, Pending>();
  private flushTimer?: NodeJS.Immediate;
  private onChange?: (changes: Change[]) => void;
  private onError?: (err: SourceError) => void;
  private isSynced = false;
  private state: 'new' | 'running' | 'stopped' = 'new';
  private settle?: { resolve: () => void; reject: (e: Error) => void };

  constructor(opts: KubeSourceOptions) {
    this.log = opts.logger;
    this.backoff = { initialMs: 1000, maxMs: 30000, jitter: 0.2, ...opts.backoff };
    this.random = opts.random ?? Math.random;
    this.watch = new SourceWatch(opts.kubeConfig, opts.bookmarks ?? true, opts.watchIdleMs ?? 300000);
    const core = opts.kubeConfig.makeApiClient(CoreV1Api);
    const discovery = opts.kubeConfig.makeApiClient(DiscoveryV1Api);
    const nodeSelector = `metadata.name=${opts.nodeName}`;
    const specs: FeedSpec[] = [
      { kind: 'Service', apiVersion: 'v1', type: 'V1Service', path: '/api/v1/services',
        list: () => core.listServiceForAllNamespaces() },
      { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', type: 'V1EndpointSlice',
        path: '/apis/discovery.k8s.io/v1/endpointslices', list: () => discovery.listEndpointSliceForAllNamespaces() },
      { kind: 'Node', apiVersion: 'v1', type: 'V1Node', path: '/api/v1/nodes', fieldSelector: nodeSelector,
        list: () => core.listNode({ fieldSelector: nodeSelector }) },
    ];
    if (opts.configMap) {
      const { namespace, name } = opts.configMap;
      const fieldSelector = `metadata.name=${name}`;
      specs.push({ kind: 'ConfigMap', apiVersion: 'v1', type: 'V1ConfigMap', path: `/api/v1/namespaces/${namespace}/configmaps`,
        fieldSelector, list: () => core.listNamespacedConfigMap({ namespace, fieldSelector }) });
    }
    for (const spec of specs) this.addFeed(spec);
  }

  /**
   * Lists and watches all four kinds. Resolves once Services and EndpointSlices have both been
   * listed, after `onChange` has been given everything the lists held. Changes are batched per turn
   * of the event loop; a slice whose service label changed yields one record per service. Connection
   * and API errors never reject: they are logged and the informer retried with backoff, so start()
   * waits as long as the API server is unreachable. Rejects if stop() is called first; throws if
   * called twice. `onError` hears of objects skipped as unreadable (no metadata.name, or a field of a type the
   * client model cannot read).
   */
  start(onChange: (changes: Change[]) => void, onError?: (err: SourceError) => void): Promise<void> {
    if (this.state !== 'new') throw new Error('KubeSource.start() may be called only once');
    this.state = 'running';
    this.onChange = onChange;
    this.onError = onError;
    const done = new Promise<void>((resolve, reject) => { this.settle = { resolve, reject }; });
    for (const feed of this.feeds) this.run(feed);
    return done;
  }

  /** The live maps (updated in place); node and configMap as last seen. Never cleared on errors. */
  snapshot(): Snapshot {
    return { services: this.services, endpointSlices: this.endpointSlices, node: this.node, configMap: this.configMap };
  }

  synced(): boolean { return this.isSynced; }

  /** Stops every informer and pending retry; no callback is made afterwards. Idempotent. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    clearImmediate(this.flushTimer);
    for (const feed of this.feeds) clearTimeout(feed.timer);
    this.watch.close();
    await Promise.all(this.feeds.map((f) => f.informer.stop()));
    this.settle?.reject(new Error('KubeSource stopped before Services and EndpointSlices were listed'));
  }

  private addFeed(spec: FeedSpec): void {
    const informer = new ListWatch<Obj>(spec.path, this.watch, () => this.list(feed), false, undefined, spec.fieldSelector);
    const feed: Feed = { ...spec, informer, listed: false, attempts: 0, failedThisAttempt: false };
    informer.on('add', (o) => this.upsert(feed, o));
    informer.on('update', (o) => this.upsert(feed, o));
    informer.on('delete', (o) => this.remove(feed, o));
    informer.on('error', (e) => this.failed(feed, e));
    this.feeds.push(feed);
  }

  /** The informer's list function: drops unreadable items, and marks the feed listed once
   *  ListWatch has applied the items (it does so synchronously after this promise resolves). */
  private async list(feed: Feed): Promise<KubernetesListObject<Obj>> {
    // Throwing here, rather than returning, keeps ListWatch from opening a watch after stop().
    const check = () => { if (this.state === 'stopped') throw new Error('KubeSource stopped'); };
    check();
    const result = await feed.list();
    check();
    if (feed.listed) this.log.info('relisting', { kind: feed.kind, resourceVersion: result.metadata?.resourceVersion });
    result.items = result.items.filter((o) => this.named(feed, o));
    setImmediate(() => this.listed(feed));
    return result;
  }

  private listed(feed: Feed): void {
    if (this.state !== 'running' || feed.listed) return;
    feed.listed = true;
    if (!this.isSynced && this.feeds.every((f) => f.listed || !GATING.has(f.kind))) {
      this.isSynced = true;
      this.flush();
      this.log.info('Services and EndpointSlices synced', { services: this.services.size, endpointSlices: this.endpointSlices.size });
      this.settle?.resolve();
      this.settle = undefined;
    }
  }

  /** One (re)start of an informer. ListWatch resumes from its last resourceVersion, or lists. */
  private run(feed: Feed): void {
    feed.timer = undefined;
    if (this.state !== 'running') return;
    feed.failedThisAttempt = false;
    feed.informer.start().then(() => {
      // start() resolves once the watch is connected, or after the error it emitted.
      if (feed.failedThisAttempt || this.state !== 'running') return;
      if (feed.attempts > 0) this.log.info('watch re-established', { kind: feed.kind, after: feed.attempts });
      feed.attempts = 0;
    }, (e: unknown) => this.failed(feed, e));
  }

  private failed(feed: Feed, err: unknown): void {
    if (this.state !== 'running' || feed.timer) return;
    feed.failedThisAttempt = true;
    const delayMs = backoffDelay(this.backoff, feed.attempts++, this.random);
    const e = err as { message?: string; statusCode?: number; code?: number | string } | undefined;
    this.log.warn('informer failed, retrying', {
      kind: feed.kind, error: e?.message ?? String(err), code: e?.statusCode ?? e?.code, attempt: feed.attempts, retryInMs: delayMs,
    });
    feed.timer = setTimeout(() => this.run(feed), delayMs);
  }

  /** False, after reporting it, for an object without metadata.name. */
  private named(feed: Feed, o: Obj | undefined): boolean {
    if (o?.metadata?.name) return true;
    const ns = o?.metadata?.namespace;
    this.unreadable({ object: `${feed.kind} ${ns ? `${ns}/` : ''}<no name>`, reason: 'metadata.name is missing; object skipped' });
    return false;
  }

  private unreadable(err: SourceError): void {
    this.log.warn('unreadable object', { ...err });
    this.onError?.(err);
  }

  private upsert(feed: Feed, raw: Obj): void {
    if (this.state !== 'running' || !this.named(feed, raw)) return;
    // Listed objects arrive as client-node model instances (Dates) without kind and apiVersion,
    // watched ones as plain JSON with them: make both alike so comparisons are like for like.
    let obj: Obj;
    try {
      obj = ObjectSerializer.deserialize(raw, feed.type, '') as Obj;
    } catch (err) {
      // A field of the wrong type (say, ports: 5) makes the model throw: skip the object, as the
      // reconciler skips what it cannot read, rather than let the exception escape the informer.
      const ns = raw.metadata?.namespace;
      this.unreadable({ object: `${feed.kind} ${ns ? `${ns}/` : ''}${raw.metadata?.name}`, reason: `${(err as Error).message}; object skipped` });
      return;
    }
    obj.apiVersion = feed.apiVersion;
    obj.kind = feed.kind;
    const key = keyOf(feed.kind, obj);
    const previous = this.get(feed.kind, key);
    const rv = obj.metadata?.resourceVersion;
    if (previous && rv && previous.metadata?.resourceVersion === rv) return;
    this.set(feed.kind, key, obj);
    this.record(feed.kind, key, previous, obj);
  }

  private remove(feed: Feed, raw: Obj): void {
    if (this.state !== 'running' || !raw.metadata?.name) return;
    const key = keyOf(feed.kind, raw);
    const previous = this.get(feed.kind, key);
    if (!previous) return;
    this.set(feed.kind, key, undefined);
    this.record(feed.kind, key, previous, undefined);
  }

  private get(kind: ObjectKind, key: string): Obj | undefined {
    switch (kind) {
      case 'Service': return this.services.get(key);
      case 'EndpointSlice': return this.endpointSlices.get(key);
      case 'Node': return this.node;
      case 'ConfigMap': return this.configMap;
    }
  }

  private set(kind: ObjectKind, key: string, o: Obj | undefined): void {
    switch (kind) {
      case 'Service': if (o) this.services.set(key, o as V1Service); else this.services.delete(key); break;
      case 'EndpointSlice': if (o) this.endpointSlices.set(key, o as V1EndpointSlice); else this.endpointSlices.delete(key); break;
      case 'Node': this.node = o; break;
      case 'ConfigMap': this.configMap = o; break;
    }
  }

  /** Merges a change into the pending {previous, current} of its object; flushed on the next turn. */
  private record(kind: ObjectKind, key: string, previous: Obj | undefined, current: Obj | undefined): void {
    const id = `${kind}\0${key}`;
    const p = this.pending.get(id);
    if (p) p.current = current;
    else this.pending.set(id, { kind, key, previous, current });
    if (this.isSynced) this.flushTimer ??= setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushTimer = undefined;
    const changes: Change[] = [];
    for (const { kind, key, previous, current } of this.pending.values()) {
      if (sameContent(previous, current)) continue;
      if (kind !== 'EndpointSlice') { changes.push({ kind, key }); continue; }
      // A slice whose service label changed leaves one service and joins another: report both.
      const services = new Set([previous, current].map(serviceOf).filter((s) => s !== undefined));
      if (services.size === 0) changes.push({ kind, key });
      for (const service of services) changes.push({ kind, key, service });
    }
    this.pending = new Map();
    if (changes.length === 0 || this.state !== 'running') return;
    this.log.debug('changes', { count: changes.length });
    this.onChange?.(changes);
  }
}

function keyOf(kind: ObjectKind, o: Obj): string {
  return kind === 'Node' ? o.metadata!.name! : `${o.metadata?.namespace ?? ''}/${o.metadata!.name}`;
}

function serviceOf(o: Obj | undefined): string | undefined {
  const name = o?.metadata?.labels?.[SERVICE_NAME_LABEL];
  return o && name ? `${o.metadata?.namespace ?? ''}/${name}` : undefined;
}

/** Same object content, ignoring what every write changes (resourceVersion, managedFields). */
function sameContent(a: Obj | undefined, b: Obj | undefined): boolean {
  if (!a || !b) return a === b;
  const strip = (o: Obj) => ({ ...o, metadata: { ...o.metadata, resourceVersion: undefined, managedFields: undefined } });
  return isDeepStrictEqual(plain(strip(a)), plain(strip(b)));
}

/** JSON-shaped copy without undefined members, so model instances and plain objects compare equal. */
function plain(o: unknown): unknown {
  return JSON.parse(JSON.stringify(o));
}
