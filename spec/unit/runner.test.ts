// SyncRunner on a FakeClock: coalescing, min interval, queueing behind a running sync, periodic
// syncs, retry backoff, stop(). Each sync is recorded as [clock time, reason].
import fc from 'fast-check';
import { FakeClock, SyncRunner, type RunnerOptions, type SyncReason, type SyncResult } from '../../lib/proxy/runner.js';

interface Deferred {
  resolve(r: SyncResult): void;
  reject(e: unknown): void;
}

/** A runner whose fn records each call; `results` scripts what the syncs resolve (default 'ok'). */
function setup(opts: RunnerOptions = {}, results: (SyncResult | Error | 'hold')[] = []) {
  const clock = new FakeClock(1000);
  const calls: [number, SyncReason][] = [];
  const held: Deferred[] = [];
  const runner = new SyncRunner(
    (reason) => {
      calls.push([clock.now(), reason]);
      const r = results.shift() ?? 'ok';
      if (r === 'hold') return new Promise<SyncResult>((resolve, reject) => held.push({ resolve, reject }));
      if (r instanceof Error) throw r;
      return Promise.resolve(r);
    },
    { minInterval: 100, maxInterval: 10_000, retryInterval: 200, maxRetryInterval: 1000, clock, ...opts },
  );
  return { clock, calls, held, runner };
}

/**
 * The property tests' driver: each step's run() calls (numbered by `nextSeq`, as the syncs are) then its
 * wait, 5 × maxInterval more, then stop(), with `tailMs` for the syncs still in flight. The requests' numbers.
 */
async function drive(runner: SyncRunner, clock: FakeClock, steps: readonly { wait: number; runs: number }[], nextSeq: () => number, maxInterval: number, tailMs: number): Promise<number[]> {
  const requests: number[] = [];
  for (const s of steps) {
    for (let i = 0; i < s.runs; i++) {
      requests.push(nextSeq());
      runner.run();
    }
    await clock.advance(s.wait);
  }
  await clock.advance(5 * maxInterval);
  const stopping = runner.stop();
  await clock.advance(tailMs);
  await stopping;
  return requests;
}

describe('SyncRunner', () => {
  test('nothing runs before the first run(), not even a periodic sync', async () => {
    const { clock, calls } = setup();
    await clock.advance(60_000);
    expect(calls).toEqual([]);
    expect(clock.pending()).toBe(0);
  });

  test('many run() calls in one tick make one sync, started by a timer and not inside run()', async () => {
    const { clock, calls, runner } = setup();
    for (let i = 0; i < 50; i++) runner.run();
    expect(calls).toEqual([]);
    await clock.advance(0);
    expect(calls).toEqual([[1000, 'requested']]);
    await clock.advance(5000);
    expect(calls).toHaveLength(1);
  });

  test('a sync starts no sooner than minInterval after the previous one ended', async () => {
    const { clock, calls, runner } = setup();
    runner.run();
    await clock.advance(0);
    await clock.advance(30);
    runner.run();
    runner.run();
    await clock.advance(69);
    expect(calls).toHaveLength(1);
    await clock.advance(1);
    expect(calls).toEqual([[1000, 'requested'], [1100, 'requested']]);
  });

  test('minInterval is measured from the end of a slow sync', async () => {
    const { clock, calls, held, runner } = setup({}, ['hold']);
    runner.run();
    await clock.advance(0);
    await clock.advance(500); // the sync takes 500ms
    held[0]!.resolve('ok');
    await clock.advance(0);
    runner.run();
    await clock.advance(99);
    expect(calls).toHaveLength(1);
    await clock.advance(1);
    expect(calls[1]).toEqual([1600, 'requested']);
  });

  test('run() during a sync queues exactly one more, never two at once', async () => {
    const { clock, calls, held, runner } = setup({}, ['hold', 'hold']);
    runner.run();
    await clock.advance(0);
    for (let i = 0; i < 10; i++) runner.run();
    await clock.advance(1000);
    expect(calls).toHaveLength(1); // still running: nothing overlaps
    expect(runner.status().running).toBe(true);
    held[0]!.resolve('ok');
    await clock.advance(0);
    await clock.advance(100);
    expect(calls).toEqual([[1000, 'requested'], [2100, 'requested']]);
    held[1]!.resolve('ok');
    await clock.advance(5000);
    expect(calls).toHaveLength(2);
  });

  test('a periodic sync runs maxInterval after the last periodic one: requested (partial) syncs in between never push it back', async () => {
    const { clock, calls, runner } = setup();
    runner.run();
    await clock.advance(0);
    await clock.advance(10_000);
    expect(calls).toEqual([[1000, 'requested'], [11_000, 'periodic']]);
    await clock.advance(4000);
    runner.run();
    await clock.advance(0);
    await clock.advance(5999);
    expect(calls.map(([t, r]) => `${t} ${r}`)).toEqual(['1000 requested', '11000 periodic', '15000 requested']);
    await clock.advance(1);
    expect(calls.at(-1)).toEqual([21_000, 'periodic']);
    expect(runner.status().next).toEqual({ at: 31_000, reason: 'periodic' });
    // Requested syncs every second (a drain's checks) still leave the periodic one on time.
    for (let t = 0; t < 9; t++) {
      runner.run();
      await clock.advance(1000);
    }
    await clock.advance(1000);
    expect(calls.filter(([, r]) => r === 'periodic').map(([t]) => t)).toEqual([11_000, 21_000, 31_000]);
  });

  test('failures back off from retryInterval, doubling up to maxRetryInterval; success resets', async () => {
    const { clock, calls, runner } = setup({}, ['failed', 'failed', 'failed', 'failed', 'failed', 'ok', 'failed']);
    runner.run();
    await clock.advance(20_000);
    const gaps = calls.slice(1).map(([t], i) => t - calls[i]![0]);
    expect(gaps.slice(0, 5)).toEqual([200, 400, 800, 1000, 1000]);
    expect(calls.slice(1, 6).every(([, r]) => r === 'retry')).toBe(true);
    // the 6th sync succeeded: the next is periodic, and the next failure starts again at 200ms
    expect(calls[6]).toEqual([calls[5]![0] + 10_000, 'periodic']);
    expect(calls[7]).toEqual([calls[6]![0] + 200, 'retry']);
  });

  test('status reports consecutive failures, the thrown error and the last success', async () => {
    const boom = new Error('netlink: EPERM');
    const { clock, runner } = setup({}, ['ok', boom, 'failed']);
    runner.run();
    await clock.advance(0);
    expect(runner.status()).toMatchObject({ consecutiveFailures: 0, lastSuccess: 1000, running: false });
    runner.run();
    await clock.advance(100);
    expect(runner.status()).toMatchObject({ consecutiveFailures: 1, lastSuccess: 1000, lastError: boom, next: { at: 1300, reason: 'retry' } });
    await clock.advance(200);
    expect(runner.status()).toMatchObject({ consecutiveFailures: 2, lastError: undefined, next: { at: 1700, reason: 'retry' } });
    await clock.advance(400);
    expect(runner.status()).toMatchObject({ consecutiveFailures: 0, lastSuccess: 1700, lastError: undefined });
  });

  test('a thrown error or a rejection counts as a failure and is retried', async () => {
    const { clock, calls, held, runner } = setup({}, [new Error('boom'), 'hold', 'ok']);
    runner.run();
    await clock.advance(0);
    expect(runner.status().consecutiveFailures).toBe(1);
    await clock.advance(200);
    held[0]!.reject(new Error('later'));
    await clock.advance(0);
    expect(runner.status()).toMatchObject({ consecutiveFailures: 2, lastError: new Error('later') });
    await clock.advance(400);
    expect(calls).toEqual([[1000, 'requested'], [1200, 'retry'], [1600, 'retry']]);
    expect(runner.status().consecutiveFailures).toBe(0);
  });

  test('a run() during backoff waits only for minInterval', async () => {
    const { clock, calls, runner } = setup({}, ['failed', 'failed', 'failed']);
    runner.run();
    await clock.advance(0);
    await clock.advance(200);
    await clock.advance(50); // backoff is now 400ms
    runner.run();
    await clock.advance(50);
    expect(calls.map(([t, r]) => `${t} ${r}`)).toEqual(['1000 requested', '1200 retry', '1300 requested']);
    expect(runner.status().next).toEqual({ at: 2100, reason: 'retry' }); // third failure: 800ms
  });

  test('with maxRetryInterval above maxInterval the periodic sync comes first', async () => {
    const { clock, calls, runner } = setup({ maxInterval: 1000, retryInterval: 800, maxRetryInterval: 5000 }, ['failed', 'failed', 'failed']);
    runner.run();
    await clock.advance(3000);
    expect(calls.map(([t, r]) => `${t} ${r}`)).toEqual(['1000 requested', '1800 retry', '2800 periodic', '3800 periodic']);
  });

  test('stop() waits for the in-flight sync, and nothing runs afterwards', async () => {
    const { clock, calls, held, runner } = setup({}, ['hold']);
    runner.run();
    await clock.advance(0);
    runner.run();
    let stopped = false;
    const stopping = runner.stop().then(() => (stopped = true));
    await clock.advance(0);
    expect(stopped).toBe(false);
    held[0]!.resolve('failed');
    await stopping;
    runner.run();
    await clock.advance(60_000);
    expect(calls).toHaveLength(1);
    expect(clock.pending()).toBe(0);
  });

  test('stop() with a sync planned cancels it and resolves at once', async () => {
    const { clock, calls, runner } = setup();
    runner.run();
    await clock.advance(0);
    runner.run();
    await runner.stop();
    await clock.advance(60_000);
    expect(calls).toHaveLength(1);
    expect(runner.status().next).toBeUndefined();
  });

  describe('overlap: requested syncs run beside a sync\'s read', () => {
    /**
     * Sync 0 reads through overlap() (held until released), then writes; later syncs are plain.
     * `log` records what happens in order: starts, the read's end, the reading sync's resumption, ends.
     */
    function overlapping(opts: RunnerOptions = {}) {
      const clock = new FakeClock(1000);
      const log: string[] = [];
      let n = 0;
      let releaseRead: () => void = () => {};
      const ends: (() => void)[] = [];
      const runner = new SyncRunner(async (reason, overlap) => {
        const i = n++;
        log.push(`${clock.now()} start ${i} ${reason}`);
        if (i === 1) {
          await overlap(() => new Promise<void>((resolve) => (releaseRead = () => { log.push(`${clock.now()} read done`); resolve(); })));
          log.push(`${clock.now()} resume ${i}`);
        } else if (i >= 2) {
          await new Promise<void>((resolve) => ends.push(resolve));
        }
        log.push(`${clock.now()} end ${i}`);
        return 'ok';
      }, { minInterval: 100, maxInterval: 10_000, retryInterval: 200, maxRetryInterval: 1000, clock, ...opts });
      return { clock, log, runner, release: () => releaseRead(), endNext: () => ends.shift()!() };
    }

    test('a request during the read starts after minInterval, without waiting for the read; requests coalesce', async () => {
      const { clock, log, runner, release, endNext } = overlapping();
      runner.run();
      await clock.advance(0); // sync 0 (requested, plain) at 1000
      await clock.advance(10_000); // sync 1 (periodic) at 11000 parks in its read
      expect(log.slice(-1)).toEqual(['11000 start 1 periodic']);
      runner.run();
      runner.run();
      await clock.advance(0);
      expect(log.at(-1)).toBe('11000 start 2 requested'); // sync 0 ended at 1000: minInterval long past
      endNext();
      await clock.advance(0);
      runner.run();
      await clock.advance(99);
      expect(log.at(-1)).toBe('11000 end 2');
      await clock.advance(1);
      expect(log.at(-1)).toBe('11100 start 3 requested'); // minInterval after sync 2 ended
      endNext();
      await clock.advance(500);
      release();
      await clock.advance(0);
      expect(log.slice(-4)).toEqual(['11100 end 3', '11600 read done', '11600 resume 1', '11600 end 1']);
      expect(runner.status()).toMatchObject({ running: false, next: { at: 21_600, reason: 'periodic' } });
    });

    test('a read that ends while a requested sync runs waits for it: never two syncs past their reads at once', async () => {
      const { clock, log, runner, release, endNext } = overlapping();
      runner.run();
      await clock.advance(0);
      await clock.advance(10_000);
      runner.run();
      await clock.advance(0);
      expect(log.at(-1)).toBe('11000 start 2 requested');
      await clock.advance(50);
      release();
      await clock.advance(0);
      expect(log.at(-1)).toBe('11050 read done'); // not resumed: sync 2 holds the runner
      runner.run(); // waits for both
      await clock.advance(50);
      endNext();
      await clock.advance(0);
      expect(log.slice(-3)).toEqual(['11100 end 2', '11100 resume 1', '11100 end 1']);
      await clock.advance(99);
      expect(log.at(-1)).toBe('11100 end 1');
      await clock.advance(1);
      expect(log.at(-1)).toBe('11200 start 3 requested');
    });

    test('during a long read only requested syncs start: no periodic or retried one', async () => {
      const { clock, log, runner, release } = overlapping({ maxInterval: 1000 });
      runner.run();
      await clock.advance(0);
      await clock.advance(1000); // sync 1, periodic, parks
      await clock.advance(5000);
      expect(log.at(-1)).toBe('2000 start 1 periodic');
      expect(runner.status()).toMatchObject({ running: true, next: undefined });
      release();
      await clock.advance(0);
      expect(log.at(-1)).toBe('7000 end 1');
      await clock.advance(1000);
      expect(log.at(-1)).toBe('8000 start 2 periodic');
    });

    test('a request planned when the read ends is served after the reading sync, minInterval later', async () => {
      const { clock, log, runner, release, endNext } = overlapping();
      runner.run();
      await clock.advance(0);
      await clock.advance(10_000);
      runner.run();
      await clock.advance(0);
      endNext(); // sync 2 ends at 11000
      await clock.advance(0);
      runner.run(); // due at 11100
      await clock.advance(50);
      release(); // the read ends first: the reading sync takes the runner, the request waits for its end
      await clock.advance(0);
      expect(log.slice(-3)).toEqual(['11050 read done', '11050 resume 1', '11050 end 1']);
      await clock.advance(99);
      expect(log.at(-1)).toBe('11050 end 1');
      await clock.advance(1);
      expect(log.at(-1)).toBe('11150 start 3 requested');
    });

    test('property: with reads that overlap, never two syncs past their reads at once, only requested ones beside a read, no request lost', async () => {
      const step = fc.record({
        wait: fc.integer({ min: 0, max: 400 }),
        runs: fc.integer({ min: 0, max: 3 }),
        read: fc.option(fc.integer({ min: 0, max: 600 })),
        duration: fc.integer({ min: 0, max: 300 }),
        fail: fc.boolean(),
      });
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), async (steps) => {
          const opts = { minInterval: 50, maxInterval: 1000, retryInterval: 60, maxRetryInterval: 500 };
          const clock = new FakeClock();
          let seq = 0;
          let writing = 0;
          let reading = 0;
          const syncs: { seq: number; end: number }[] = [];
          // Recorded, not thrown: the runner would count a throw from the sync as its failure.
          const violations: string[] = [];
          const script = [...steps];
          const sleep = (ms: number) => new Promise<void>((resolve) => clock.timer(ms, resolve));
          const runner = new SyncRunner(async (reason, overlap) => {
            if (reading && reason !== 'requested') violations.push(`${reason} sync beside a read`);
            if (writing) violations.push('two syncs past their reads');
            writing++;
            const { read, duration, fail } = script.shift() ?? { read: null, duration: 0, fail: false };
            const sync = { seq: seq++, end: NaN };
            syncs.push(sync);
            if (read !== null) {
              writing--;
              reading++;
              await overlap(() => sleep(read));
              reading--;
              if (writing) violations.push('a read resumed beside another sync');
              writing++;
            }
            await sleep(duration);
            writing--;
            sync.end = clock.now();
            return fail ? 'failed' : 'ok';
          }, { ...opts, clock });
          const requests = await drive(runner, clock, steps, () => seq++, opts.maxInterval, 1000);
          expect(violations).toEqual([]);
          expect(writing + reading).toBe(0);
          // Every request is served by a sync that started after it (and has ended).
          for (const r of requests) expect(syncs.some((s) => s.seq > r && s.end >= 0)).toBe(true);
        }),
        { numRuns: 200 },
      );
    });

    test('stop() during a read waits for the reading sync and the one beside it', async () => {
      const { clock, log, runner, release, endNext } = overlapping();
      runner.run();
      await clock.advance(0);
      await clock.advance(10_000);
      runner.run();
      await clock.advance(0);
      let stopped = false;
      const stopping = runner.stop().then(() => (stopped = true));
      release();
      await clock.advance(0);
      expect(stopped).toBe(false);
      endNext();
      await stopping;
      expect(log.slice(-3)).toEqual(['11000 end 2', '11000 resume 1', '11000 end 1']);
      runner.run();
      await clock.advance(60_000);
      expect(log.at(-1)).toBe('11000 end 1');
    });
  });

  test('rejects nonsense intervals', () => {
    expect(() => new SyncRunner(async () => 'ok', { minInterval: -1 })).toThrow(/minInterval=-1/);
    expect(() => new SyncRunner(async () => 'ok', { minInterval: 5000, maxInterval: 1000 })).toThrow(/maxInterval/);
  });

  test('property: no overlap, minInterval and maxInterval between syncs, no request lost', async () => {
    const step = fc.record({
      wait: fc.integer({ min: 0, max: 400 }),
      runs: fc.integer({ min: 0, max: 3 }),
      duration: fc.integer({ min: 0, max: 300 }),
      fail: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), async (steps) => {
        const opts = { minInterval: 50, maxInterval: 1000, retryInterval: 60, maxRetryInterval: 500 };
        const clock = new FakeClock();
        let seq = 0;
        let running = false;
        let overlapped = 0; // counted, not thrown: the runner would count a throw from the sync as its failure
        const syncs: { seq: number; start: number; end: number }[] = [];
        const script = steps.map((s) => s);
        const runner = new SyncRunner(async () => {
          if (running) overlapped++;
          running = true;
          const { duration, fail } = script.shift() ?? { duration: 0, fail: false };
          const sync = { seq: seq++, start: clock.now(), end: NaN };
          syncs.push(sync);
          await new Promise<void>((resolve) => clock.timer(duration, resolve));
          sync.end = clock.now();
          running = false;
          return fail ? 'failed' : 'ok';
        }, { ...opts, clock });
        const requests = await drive(runner, clock, steps, () => seq++, opts.maxInterval, 300);
        expect(overlapped).toBe(0);
        for (let i = 1; i < syncs.length; i++) {
          const gap = syncs[i]!.start - syncs[i - 1]!.end;
          expect(gap).toBeGreaterThanOrEqual(opts.minInterval);
          expect(gap).toBeLessThanOrEqual(opts.maxInterval);
        }
        for (const r of requests) expect(syncs.some((s) => s.seq > r)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
