// Kubernetes Events on Services, as kube-proxy records them: events.k8s.io/v1 Warnings regarding the
// Service, from reportingController kipvs.io/agent on this node. A repeat of the same (Service, reason,
// note) within the series window patches the first event's series (count, lastObservedTime) instead
// of creating another. Fire and forget: warn() never throws and never waits; requests go out one at a
// time from a bounded queue, with a token bucket per Service against spam, and API errors are logged.

import { EventsV1Api, KubeConfig, PatchStrategy, setHeaderOptions, V1MicroTime, type EventsV1Event } from '@kubernetes/client-node';
import type { Logger } from './log.js';
import { ANNOTATION_SCHEDULER } from './proxy/desired.js';

export const REPORTING_CONTROLLER = 'kipvs.io/agent';
/** The API's limit on an Event's note. */
export const MAX_NOTE_BYTES = 1024;

export interface ServiceRef { namespace: string; name: string; uid?: string }

export interface EventRecorderOptions {
  /** Where to send Events: a KubeConfig (an EventsV1Api is made from it) or the API itself. */
  api: KubeConfig | Pick<EventsV1Api, 'createNamespacedEvent' | 'patchNamespacedEvent'>;
  /** reportingInstance: the node name. */
  instance: string;
  logger: Logger;
  /** Milliseconds since the epoch (tests pass their own). */
  now?: () => number;
  /** A repeat within this long of the last occurrence joins its series (default 10 minutes). */
  seriesWindowMs?: number;
  /** Per Service: at most `burst` Events at once, refilled one every `refillMs` (default 25, 5 minutes, as client-go's spam filter). */
  burst?: number;
  refillMs?: number;
  /** Queued Events beyond this are dropped (default 1000). */
  maxQueue?: number;
  /** The action field (default 'Programming'). */
  action?: string;
}

interface Task { service: ServiceRef; reason: string; note: string; at: number }
interface Series { namespace: string; name: string; count: number; last: number }
interface Bucket { tokens: number; at: number }

/** `text` cut to at most `max` bytes of UTF-8 (on a character boundary). */
export function truncateBytes(text: string, max = MAX_NOTE_BYTES): string {
  if (Buffer.byteLength(text) <= max) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > max - 3) break;
    out += ch;
    bytes += n;
  }
  return `${out}...`;
}

export class EventRecorder {
  private readonly api: Pick<EventsV1Api, 'createNamespacedEvent' | 'patchNamespacedEvent'>;
  private readonly instance: string;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly window: number;
  private readonly burst: number;
  private readonly refillMs: number;
  private readonly maxQueue: number;
  private readonly action: string;
  private readonly queue: Task[] = [];
  private readonly series = new Map<string, Series>();
  private readonly buckets = new Map<string, Bucket>();
  private running: Promise<void> | undefined;
  private closed = false;
  private seq = 0;
  /** Events dropped (queue full, rate-limited) and requests that failed; for tests and metrics. */
  readonly stats = { created: 0, patched: 0, failed: 0, dropped: 0 };

  constructor(o: EventRecorderOptions) {
    this.api = o.api instanceof KubeConfig ? o.api.makeApiClient(EventsV1Api) : o.api;
    this.instance = o.instance;
    this.log = o.logger;
    this.now = o.now ?? Date.now;
    this.window = o.seriesWindowMs ?? 10 * 60_000;
    this.burst = o.burst ?? 25;
    this.refillMs = o.refillMs ?? 5 * 60_000;
    this.maxQueue = o.maxQueue ?? 1000;
    this.action = o.action ?? 'Programming';
  }

  /** Records a Warning regarding the Service. Never throws, never waits. */
  warn(service: ServiceRef, reason: string, note: string): void {
    try {
      if (this.closed) return;
      const at = this.now();
      if (!this.take(`${service.namespace}/${service.name}`, at) || this.queue.length >= this.maxQueue) {
        this.stats.dropped++;
        this.log.debug('event dropped', { service: `${service.namespace}/${service.name}`, reason });
        return;
      }
      this.queue.push({ service, reason, note: truncateBytes(note), at });
      this.running ??= this.drain().finally(() => (this.running = undefined));
    } catch (err) {
      this.log.warn(`recording an event failed: ${(err as Error).message}`);
    }
  }

  /** Resolves when every queued Event has been sent (or has failed). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Drops what is queued, waits for the request in flight; later warn()s are ignored. */
  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    await this.idle();
  }

  private take(key: string, at: number): boolean {
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { tokens: this.burst, at }));
    const refill = Math.floor((at - b.at) / this.refillMs);
    if (refill > 0) {
      b.tokens = Math.min(this.burst, b.tokens + refill);
      b.at = b.tokens === this.burst ? at : b.at + refill * this.refillMs;
    }
    if (b.tokens < 1) return false;
    b.tokens--;
    return true;
  }

  private async drain(): Promise<void> {
    for (let task = this.queue.shift(); task; task = this.queue.shift()) {
      try {
        await this.send(task);
      } catch (err) {
        this.stats.failed++;
        const e = err as { code?: number; message?: string };
        this.log.warn(`event on Service ${task.service.namespace}/${task.service.name} not recorded: ${e.message ?? String(err)}`, {
          service: `${task.service.namespace}/${task.service.name}`, reason: task.reason, code: e.code,
        });
      }
    }
  }

  private async send(t: Task): Promise<void> {
    const { namespace, name } = t.service;
    const key = `${namespace}/${name}\0${t.reason}\0${t.note}`;
    this.expire(t.at);
    const known = this.series.get(key);
    if (known && t.at - known.last <= this.window) {
      try {
        await this.api.patchNamespacedEvent(
          { namespace, name: known.name, body: { series: { count: known.count + 1, lastObservedTime: new V1MicroTime(t.at) } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
        known.count++;
        known.last = t.at;
        this.stats.patched++;
        return;
      } catch (err) {
        if ((err as { code?: number }).code !== 404) throw err;
        this.series.delete(key); // gone (expired on the server): start anew
      }
    }
    const eventName = `${name}.${(BigInt(t.at) * 1_000_000n + BigInt(this.seq++ % 1_000_000)).toString(16)}`;
    const body: EventsV1Event = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name: eventName, namespace },
      eventTime: new V1MicroTime(t.at),
      type: 'Warning',
      action: this.action,
      reason: t.reason,
      note: t.note,
      regarding: { apiVersion: 'v1', kind: 'Service', namespace, name, ...(t.service.uid ? { uid: t.service.uid } : {}) },
      reportingController: REPORTING_CONTROLLER,
      reportingInstance: this.instance,
      // No deprecatedSource/deprecated*: the API server refuses them on events.k8s.io/v1 creates.
    };
    await this.api.createNamespacedEvent({ namespace, body });
    this.series.set(key, { namespace, name: eventName, count: 1, last: t.at });
    this.stats.created++;
  }

  private expire(at: number): void {
    if (this.series.size < 1024) return;
    for (const [k, s] of this.series) if (at - s.last > this.window) this.series.delete(k);
  }
}

/** The Event reason for an object error on a Service (kube-proxy's style: CamelCase, machine-readable). */
export function reasonFor(e: { object: string; reason: string }): string {
  if (e.object.startsWith('EndpointSlice ')) return 'InvalidEndpoints';
  if (e.reason.includes(ANNOTATION_SCHEDULER)) return 'InvalidScheduler';
  if (/sessionAffinity/.test(e.reason)) return 'InvalidSessionAffinity';
  if (/\bport\b/i.test(e.reason)) return 'InvalidPort';
  if (/clusterIP/.test(e.reason)) return 'InvalidClusterIP';
  return 'InvalidObject';
}
