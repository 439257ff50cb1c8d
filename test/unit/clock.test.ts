/**
 * The injected clock (src/util/clock.ts) and the tests' manual clock (test/helpers/manual-clock.ts):
 * timers fire in time order and only as time passes, cancelled timers never fire, sleeps end early
 * on abort, and the deadline helpers settle on the clock's time.
 */
import { describe, expect, it } from 'vitest';
import { bounded, systemClock, within } from '../../src/util/clock.js';
import { ManualClock } from '../helpers/manual-clock.js';

describe('ManualClock', () => {
  it('fires timers in time order (ties in the order set) only as advance() passes them', async () => {
    const clock = new ManualClock(1_000);
    const fired: string[] = [];
    clock.setTimer(() => fired.push('b@300'), 300);
    clock.setTimer(() => fired.push('a@100'), 100);
    clock.setTimer(() => fired.push('c@300'), 300);
    const cancel = clock.setTimer(() => fired.push('cancelled@200'), 200);
    cancel();
    await clock.advance(99);
    expect(fired).toEqual([]);
    expect(clock.now()).toBe(1_099);
    await clock.advance(250);
    expect(fired).toEqual(['a@100', 'b@300', 'c@300']);
    expect(clock.now()).toBe(1_349);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('a timer set by a firing timer fires in the same advance when it falls due within it', async () => {
    const clock = new ManualClock(0);
    const at: number[] = [];
    clock.setTimer(() => {
      at.push(clock.now());
      clock.setTimer(() => at.push(clock.now()), 50);
    }, 100);
    await clock.advance(200);
    expect(at).toEqual([100, 150]);
  });

  it('a 0 ms timer fires without time passing', async () => {
    const clock = new ManualClock(5);
    let fired = false;
    clock.setTimer(() => (fired = true), 0);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(fired).toBe(true);
    expect(clock.now()).toBe(5);
  });

  it('sleep ends at its time, or at once on abort', async () => {
    const clock = new ManualClock(0);
    let woke = false;
    const s = clock.sleep(1_000).then(() => (woke = true));
    await clock.advance(999);
    expect(woke).toBe(false);
    await clock.advance(1);
    await s;
    expect(woke).toBe(true);
    const ac = new AbortController();
    const aborted = clock.sleep(60_000, ac.signal);
    ac.abort();
    await aborted;
    expect(clock.now()).toBe(1_000);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('until() moves time until the condition holds; drive() until the promise settles', async () => {
    const clock = new ManualClock(0);
    let done = false;
    clock.setTimer(() => (done = true), 2_000);
    await clock.until('the 2 s timer', () => done);
    expect(clock.now()).toBeGreaterThanOrEqual(2_000);
    const t0 = clock.now();
    await clock.drive(clock.sleep(500), 100);
    expect(clock.now() - t0).toBeGreaterThanOrEqual(500);
    await expect(clock.until('never', () => false, { maxMs: 300 })).rejects.toThrow(/timed out waiting for never/);
  });
});

describe('deadline helpers', () => {
  it('within(): the value when it comes first, undefined at the deadline; the timer is cancelled', async () => {
    const clock = new ManualClock(0);
    expect(await within(clock, Promise.resolve(7), 1_000)).toBe(7);
    expect(clock.pendingTimers()).toBe(0);
    const never = new Promise<number>(() => {});
    const w = within(clock, never, 1_000);
    await clock.advance(1_000);
    expect(await w).toBeUndefined();
  });

  it('bounded(): rejects naming what did not answer, on the clock', async () => {
    const clock = new ManualClock(0);
    expect(await bounded(clock, 3, 10, 'x')).toBe(3);
    const b = bounded(clock, new Promise<number>(() => {}), 5_000, 'inventory provider');
    const seen = b.catch((e: Error) => e.message);
    await clock.advance(5_000);
    expect(await seen).toBe('inventory provider did not answer within 5000 ms');
  });

  it('systemClock: real timers, cancellable, sleep ends on abort', async () => {
    let fired = false;
    const cancel = systemClock.setTimer(() => (fired = true), 5);
    cancel();
    await systemClock.sleep(20);
    expect(fired).toBe(false);
    const ac = new AbortController();
    const s = systemClock.sleep(60_000, ac.signal);
    ac.abort();
    await s;
    expect(Math.abs(systemClock.now() - Date.now())).toBeLessThan(1_000);
  });
});
