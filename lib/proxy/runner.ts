// The one coalescing sync runner, after kubernetes pkg/util/async/bounded_frequency_runner.go: run()
// only asks for a sync; requests made before a sync starts are served by it, at most one sync runs at
// a time and at most one waits behind it. Syncs start no sooner than minInterval after the previous
// one ended; maxInterval after the last periodic or retried one (the agent's full syncs; requested,
// partial syncs never postpone it) a periodic one runs anyway; a failed sync is retried
// with exponential backoff (retryInterval doubling up to maxRetryInterval, reset by a success). A
// run() during backoff is not held back by it (only by minInterval): new changes may be what fixes
// the failure, as in kube-proxy. Nothing runs before the first run(). Time comes from a Clock.
// One exception to "one at a time": a sync may hand the runner back while it only reads (overlap(),
// the full sync's kernel dump). Requested syncs then run beside that read, by the same rules (one at a
// time, minInterval, coalescing); when the read is done, the reading sync waits for the one running to
// end and has the runner to itself again, so no two syncs ever write at once.

/** Why a sync runs: run() was called, a failed sync is retried, or maxInterval elapsed. */
export type SyncReason = 'requested' | 'retry' | 'periodic';
export type SyncResult = 'ok' | 'failed';
/**
 * Runs `read` (which must not write) while requested syncs may start and run beside it; resolves (or
 * rejects) as `read` does, once no other sync is running: what follows has the runner to itself again.
 * Only the first level overlaps: called by a sync that itself runs beside a read, it just runs `read`.
 */
export type Overlap = <T>(read: () => Promise<T>) => Promise<T>;
/** One sync. Resolving 'failed' or throwing schedules a retry. */
export type SyncFn = (reason: SyncReason, overlap: Overlap) => Promise<SyncResult>;

/** Time source: milliseconds, and one-shot timers cancelled by calling what `timer` returns. */
export interface Clock {
  now(): number;
  timer(ms: number, fn: () => void): () => void;
}

/** Monotonic milliseconds anchored at the epoch (an NTP step must not stall or rush syncs). */
export const realClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  timer(ms, fn) {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

export interface RunnerOptions {
  /** Least time between the end of one sync and the start of the next (ms). Default 1000. */
  minInterval?: number;
  /** A periodic sync runs at the latest this long after the previous periodic or retried one ended (ms). Default 30000. */
  maxInterval?: number;
  /** Delay before the first retry after a failure (ms). Default max(minInterval, 1000). */
  retryInterval?: number;
  /** Cap on the doubling retry delay (ms). Default maxInterval. */
  maxRetryInterval?: number;
  clock?: Clock;
}

export interface RunnerStatus {
  running: boolean;
  /** Failed syncs since the last success. */
  consecutiveFailures: number;
  /** Clock time the last successful sync ended. */
  lastSuccess?: number;
  /** Clock time the last sync (of any result) ended. */
  lastEnd?: number;
  /** What the last failed sync threw, if it threw; cleared by a success. */
  lastError?: unknown;
  /** The sync planned next (when it is due, which may be now, and why). */
  next?: { at: number; reason: SyncReason };
}

interface Plan {
  at: number;
  reason: SyncReason;
}

export class SyncRunner {
  private readonly fn: SyncFn;
  private readonly clock: Clock;
  private readonly minInterval: number;
  private readonly maxInterval: number;
  private readonly retryInterval: number;
  private readonly maxRetryInterval: number;
  private requested = false;
  private stopped = false;
  /** A sync holds the runner (it is running, and not inside overlap()). */
  private busy = false;
  /** Every sync not yet ended, for stop(). */
  private readonly inFlight = new Set<Promise<void>>();
  /** The sync inside overlap(); `resume` is set once its read is done and it waits for the runner. */
  private parked: { resume?: () => void } | undefined;
  private planned: Plan | undefined;
  private cancelTimer: (() => void) | undefined;
  private failures = 0;
  private lastEnd: number | undefined;
  private lastSuccess: number | undefined;
  private lastError: unknown;

  constructor(fn: SyncFn, opts: RunnerOptions = {}) {
    this.fn = fn;
    this.clock = opts.clock ?? realClock;
    this.minInterval = opts.minInterval ?? 1000;
    this.maxInterval = opts.maxInterval ?? 30_000;
    this.retryInterval = opts.retryInterval ?? Math.max(this.minInterval, 1000);
    this.maxRetryInterval = opts.maxRetryInterval ?? this.maxInterval;
    const bad = Object.entries({ minInterval: this.minInterval, maxInterval: this.maxInterval, retryInterval: this.retryInterval, maxRetryInterval: this.maxRetryInterval })
      .filter(([, v]) => !(v >= 0 && v < Infinity));
    if (bad.length) throw new RangeError(`SyncRunner: ${bad.map(([k, v]) => `${k}=${v}`).join(', ')} must be finite and >= 0`);
    if (this.maxInterval < this.minInterval) throw new RangeError('SyncRunner: maxInterval must be >= minInterval');
  }

  /**
   * Asks for a sync. Never blocks and never runs `fn` synchronously: every run() before the sync
   * starts is served by that one sync. Ignored after stop().
   */
  run(): void {
    if (this.stopped) return;
    this.requested = true;
    if (!this.busy && this.planned?.reason !== 'requested') this.plan();
  }

  /** Cancels planned syncs; resolves once in-flight syncs have finished. Nothing runs afterwards. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.setPlan(undefined);
    while (this.inFlight.size) await Promise.all(this.inFlight);
  }

  /** State for health checks and metrics. */
  status(): RunnerStatus {
    return {
      running: this.inFlight.size > 0,
      consecutiveFailures: this.failures,
      lastSuccess: this.lastSuccess,
      lastEnd: this.lastEnd,
      lastError: this.lastError,
      next: this.planned && { ...this.planned },
    };
  }

  /** The retry delay after `failures` consecutive failures (>= 1). */
  private backoff(): number {
    return Math.min(this.maxRetryInterval, this.retryInterval * 2 ** Math.min(this.failures - 1, 40));
  }

  /** The next sync due, from the state between syncs; ties go to the more specific reason. */
  private next(): Plan | undefined {
    if (this.lastEnd === undefined) return this.requested ? { at: this.clock.now(), reason: 'requested' } : undefined;
    const earliest = this.lastEnd + this.minInterval;
    // Beside a read, only requested syncs: the reading sync is the periodic or retried one.
    if (this.parked) return this.requested ? { at: earliest, reason: 'requested' } : undefined;
    const options: Plan[] = [];
    if (this.requested) options.push({ at: earliest, reason: 'requested' });
    if (this.failures > 0) options.push({ at: Math.max(earliest, this.lastEnd + this.backoff()), reason: 'retry' });
    options.push({ at: Math.max(earliest, (this.lastPeriodicEnd ?? this.lastEnd) + this.maxInterval), reason: 'periodic' });
    return options.reduce((a, b) => (b.at < a.at ? b : a));
  }

  private plan(): void {
    this.setPlan(this.next());
  }

  private setPlan(plan: Plan | undefined): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.planned = plan;
    if (!plan) return;
    this.cancelTimer = this.clock.timer(Math.max(0, plan.at - this.clock.now()), () => {
      this.cancelTimer = undefined;
      this.planned = undefined;
      this.requested = false;
      this.busy = true;
      const running = this.sync(plan.reason);
      this.inFlight.add(running);
      void running.then(() => this.inFlight.delete(running));
    });
  }

  /** Overlap for the sync holding the runner: hands it over for `read`, then takes it back. */
  private readonly overlap: Overlap = async (read) => {
    if (this.parked || !this.busy) return read();
    const parked: { resume?: () => void } = {};
    this.parked = parked;
    this.busy = false;
    if (this.requested && !this.stopped) this.plan();
    try {
      return await read();
    } finally {
      if (this.busy) await new Promise<void>((resolve) => (parked.resume = resolve));
      else this.setPlan(undefined); // a request still waiting is planned again when this sync ends
      this.parked = undefined;
      this.busy = true;
    }
  };

  /** When the last periodic or retried sync (or the first sync) ended: the periodic sync is due maxInterval after it. */
  private lastPeriodicEnd: number | undefined;

  private async sync(reason: SyncReason): Promise<void> {
    let result: SyncResult;
    let error: unknown;
    try {
      result = (await this.fn(reason, this.overlap)) === 'ok' ? 'ok' : 'failed';
    } catch (err) {
      result = 'failed';
      error = err;
    }
    this.lastEnd = this.clock.now();
    if (reason !== 'requested' || this.lastPeriodicEnd === undefined) this.lastPeriodicEnd = this.lastEnd;
    if (result === 'ok') {
      this.failures = 0;
      this.lastSuccess = this.lastEnd;
      this.lastError = undefined;
    } else {
      this.failures++;
      this.lastError = error;
    }
    this.busy = false;
    // A read that ended while this sync ran: its sync takes the runner back (and plans when it ends).
    const resume = this.parked?.resume;
    if (resume) {
      this.busy = true;
      resume();
    } else if (!this.stopped) this.plan();
  }
}

/**
 * A Clock for tests: time moves only through advance(), which fires due timers in order and lets
 * the promise jobs each one starts settle before moving on.
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers: { at: number; seq: number; fn: () => void }[] = [];

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  timer(ms: number, fn: () => void): () => void {
    const entry = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(entry);
    return () => {
      const i = this.timers.indexOf(entry);
      if (i >= 0) this.timers.splice(i, 1);
    };
  }

  /** Timers waiting to fire. */
  pending(): number {
    return this.timers.length;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way (advance(0): the due ones). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (;;) {
      const due = this.timers.filter((e) => e.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.timers.splice(this.timers.indexOf(due), 1);
      this.t = due.at;
      due.fn();
      await settle();
    }
    this.t = end;
  }
}

/** Resolves after every promise job already queued (and those they queue) has run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
