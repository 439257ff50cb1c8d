/**
 * Time for code that waits: what time it is, and timers that can be cancelled. Injected so that
 * tests move time themselves (test/helpers/manual-clock.ts) instead of sleeping for real.
 * Durations of real work (an RPC's latency) are measured with performance.now(), not with this.
 */

/** Cancels a timer; calling it after the timer fired does nothing. */
export type CancelTimer = () => void;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls fn once, ms from now (0 or less: as soon as possible). */
  setTimer(fn: () => void, ms: number): CancelTimer;
  /** Resolves ms from now, or at once when signal is (or becomes) aborted. Never rejects. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** sleep() built on a clock's setTimer (shared by the real clock and the test clock). */
export function sleepOn(setTimer: Clock['setTimer'], ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      cancel();
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const cancel = setTimer(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** The process's clock: Date.now() and setTimeout. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    return () => clearTimeout(t);
  },
  sleep: (ms, signal) => sleepOn(systemClock.setTimer, ms, signal),
};

/** p, or `undefined` once ms have passed on the clock (the timer is cancelled when p settles first). */
export async function within<T>(clock: Clock, p: Promise<T>, ms: number): Promise<T | undefined> {
  let cancel: CancelTimer = () => {};
  try {
    return await Promise.race([p, new Promise<undefined>((resolve) => (cancel = clock.setTimer(() => resolve(undefined), ms)))]);
  } finally {
    cancel();
  }
}

/** p, or a rejection "<what> did not answer within <ms> ms" once ms have passed on the clock. */
export async function bounded<T>(clock: Clock, p: T | Promise<T>, ms: number, what: string): Promise<T> {
  let cancel: CancelTimer = () => {};
  try {
    return await Promise.race([
      Promise.resolve(p),
      new Promise<T>((_, reject) => (cancel = clock.setTimer(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms))),
    ]);
  } finally {
    cancel();
  }
}
