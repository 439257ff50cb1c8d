/**
 * A clock the test moves (src/util/clock.ts): time stands still until advance(), until() or
 * drive() moves it; timers fire in time order as it passes, and real I/O callbacks (sockets,
 * child processes) get turns of the event loop between them. A timer due now (0 ms) fires on the
 * next turn without time passing.
 */
import { sleepOn, type CancelTimer, type Clock } from '../../src/util/clock.js';

interface Timer {
  atMs: number;
  seq: number;
  fn: () => void;
}

/** A few real turns of the event loop: promise chains and ready I/O callbacks run. */
async function turns(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

const realPause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Set<Timer>();
  private dueSoon = false;
  /** advance() calls run one after another. */
  private chain: Promise<void> = Promise.resolve();

  constructor(startMs = Date.now()) {
    this.t = startMs;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): CancelTimer {
    const timer: Timer = { atMs: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.add(timer);
    if (timer.atMs <= this.t) this.fireDueSoon();
    return () => {
      this.timers.delete(timer);
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepOn((fn, d) => this.setTimer(fn, d), ms, signal);
  }

  /** Timers not yet fired. */
  pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by ms, firing every timer that falls due on the way, in order. */
  advance(ms: number): Promise<void> {
    const run = this.chain.then(async () => {
      const end = this.t + Math.max(0, ms);
      for (;;) {
        const next = this.earliest();
        if (!next || next.atMs > end) break;
        this.t = Math.max(this.t, next.atMs);
        this.timers.delete(next);
        next.fn();
        await turns();
      }
      this.t = end;
      await turns();
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Moves time on in steps of stepMs (a real pause of pauseMs between steps, for real I/O) until
   * cond() holds; fails naming `what` after maxMs of clock time or realTimeoutMs of real time.
   */
  async until(
    what: string,
    cond: () => boolean | Promise<boolean>,
    o: { stepMs?: number; pauseMs?: number; maxMs?: number; realTimeoutMs?: number } = {},
  ): Promise<void> {
    const stepMs = o.stepMs ?? 50;
    const startAt = this.t;
    const endAt = startAt + (o.maxMs ?? 600_000);
    const realEnd = Date.now() + (o.realTimeoutMs ?? 20_000);
    for (;;) {
      if (await cond()) return;
      if (this.t >= endAt || Date.now() > realEnd) {
        throw new Error(`timed out waiting for ${what} (the clock moved ${this.t - startAt} ms)`);
      }
      await this.advance(stepMs);
      await realPause(o.pauseMs ?? 5);
    }
  }

  /** Awaits p while moving time on in steps of stepMs (for waits that end on the clock, e.g. a shutdown deadline). */
  async drive<T>(p: Promise<T>, stepMs = 20): Promise<T> {
    let settled = false;
    const watched = p.finally(() => {
      settled = true;
    });
    while (!settled) {
      await Promise.race([
        watched.then(
          () => undefined,
          () => undefined,
        ),
        realPause(2),
      ]);
      if (!settled) await this.advance(stepMs);
    }
    return watched;
  }

  private earliest(): Timer | undefined {
    let best: Timer | undefined;
    for (const x of this.timers) if (!best || x.atMs < best.atMs || (x.atMs === best.atMs && x.seq < best.seq)) best = x;
    return best;
  }

  /** Fires the timers already due (0 ms) on the next turn, without moving time. */
  private fireDueSoon(): void {
    if (this.dueSoon) return;
    this.dueSoon = true;
    setImmediate(() => {
      this.dueSoon = false;
      void this.advance(0);
    });
  }
}
