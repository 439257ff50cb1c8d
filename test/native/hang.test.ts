// A wedged NVML call: the call settles with NVML_CALL_TIMEOUT for that device only, the device is
// suspect (later calls fail fast, no pile-up of stuck threads) until the call returns, and the event
// loop and the libuv threadpool stay responsive throughout.
import { pbkdf2 } from 'node:crypto';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { defaultDevices } from '../helpers/fake-nvml.js';
import { openNvml } from '../../src/nvml/index.js';
import { skipReason, until, useFake, useSession } from './util.js';

/** Measures event-loop responsiveness with a ticking interval. */
function loopProbe(): { stop(): { ticks: number; maxGapMs: number } } {
  let ticks = 0;
  let last = performance.now();
  let maxGapMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    ticks++;
  }, 10);
  return {
    stop() {
      clearInterval(timer);
      return { ticks, maxGapMs: Math.max(maxGapMs, performance.now() - last) };
    },
  };
}

describe.skipIf(skipReason !== null)('NVML addon: hung calls', () => {
  const ctx = useSession();

  it('times out the hung device only, marks it suspect, fails fast, recovers when the call returns', async () => {
    ctx.fake = useFake({ devices: defaultDevices(2) });
    ctx.nvml = await openNvml();
    await ctx.nvml.devices();
    await ctx.fake.inject({ op: 'hang', device: 1, function: 'nvmlDeviceGetTemperature', ms: 8000 });

    const probe = loopProbe();
    const t0 = performance.now();
    const snap = await ctx.nvml.snapshot({ timeoutMs: 500 });
    const elapsed = performance.now() - t0;
    const loop = probe.stop();

    expect(snap[0]!.ok).toBe(true);
    const s1 = snap[1]!;
    expect(s1.ok).toBe(false);
    expect(!s1.ok && s1.error).toMatchObject({ code: 'NVML_CALL_TIMEOUT', status: -1, fn: 'nvmlDeviceGetTemperature' });
    expect(s1.uuid).toBe(defaultDevices(2)[1]!.uuid);
    expect(elapsed).toBeLessThan(7000); // settled at the deadline, not when the 8 s call returned
    // The event loop kept ticking while the call hung (a blocked loop shows one 8 s gap).
    expect(loop.ticks).toBeGreaterThan(5);
    expect(loop.maxGapMs).toBeLessThan(elapsed);

    expect(ctx.nvml.suspectDevices()).toEqual([1]);
    // A suspect device fails fast instead of queueing another call behind the stuck one.
    const again = await ctx.nvml.snapshot({ timeoutMs: 500 });
    expect(again[0]!.ok).toBe(true);
    const a1 = again[1]!;
    expect(!a1.ok && a1.error.code).toBe('NVML_CALL_TIMEOUT');
    expect(!a1.ok && a1.error.message).toMatch(/suspect/);

    // Releasing the wedged call clears the suspicion.
    await ctx.fake.recover(1);
    await until(() => ctx.nvml!.suspectDevices().length === 0, 'device 1 no longer suspect');
    const healed = await ctx.nvml.snapshot();
    expect(healed.map((s) => s.ok)).toEqual([true, true]);
  });

  it('a per-call timeoutMs overrides callTimeoutMs', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    ctx.nvml = await openNvml({ callTimeoutMs: 60_000 });
    await ctx.fake.inject({ op: 'hang', device: 0, function: 'nvmlDeviceGetPowerUsage', ms: 5000 });
    const snap = await ctx.nvml.snapshot({ timeoutMs: 200 });
    expect(!snap[0]!.ok && snap[0]!.error).toMatchObject({ code: 'NVML_CALL_TIMEOUT', fn: 'nvmlDeviceGetPowerUsage' });
    await ctx.fake.recover(0);
  });

  it('eight wedged GPUs do not starve the libuv threadpool', async () => {
    ctx.fake = useFake({ devices: defaultDevices(8) });
    ctx.nvml = await openNvml();
    await ctx.nvml.devices();
    for (let i = 0; i < 8; i++) await ctx.fake.inject({ op: 'hang', device: i, function: '*', ms: 10_000 });
    const snapP = ctx.nvml.snapshot({ timeoutMs: 300 });
    // While 8 NVML calls are stuck, threadpool work (pbkdf2 x 4 = the whole default pool) completes.
    const t0 = performance.now();
    await Promise.all([1, 2, 3, 4].map(() => promisify(pbkdf2)('pw', 'salt', 1, 32, 'sha256')));
    const poolMs = performance.now() - t0;
    const snap = await snapP;
    expect(snap.every((s) => !s.ok && s.error.code === 'NVML_CALL_TIMEOUT')).toBe(true);
    expect(poolMs).toBeLessThan(5000); // a starved pool would wait for the 10 s hang
    expect(ctx.nvml.suspectDevices()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (let i = 0; i < 8; i++) await ctx.fake.recover(i);
  });

  it('close() settles a snapshot still queued behind a slow call', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    ctx.nvml = await openNvml({ callTimeoutMs: 1000 });
    await ctx.nvml.devices();
    // Released by recover() below. The call must still be stuck then: a lane that let go of the
    // library would run nvmlShutdown, which removes the fake's control socket.
    await ctx.fake.inject({ op: 'hang', device: 0, function: 'nvmlDeviceGetTemperature', ms: 120_000 });
    const settled: string[] = [];
    const track = (name: string, p: Promise<unknown>): void => {
      p.then(
        () => settled.push(name),
        () => settled.push(name),
      );
    };
    track('running', ctx.nvml.snapshot({ timeoutMs: 60_000 })); // wedged in nvmlDeviceGetTemperature
    // close() must find the call wedged, not still queued (CI once closed first: nothing was stuck).
    await until(async () => (await ctx.fake!.stats()).hung === 1, 'the snapshot to block in nvmlDeviceGetTemperature');
    track('queued', ctx.nvml.snapshot({ timeoutMs: 60_000 })); // waits in the lane queue
    await ctx.nvml.close();
    ctx.nvml = undefined;
    // Both promises settle with close(), not at their 60 s deadline (and not never).
    await until(() => settled.length === 2, 'both snapshots to settle', 10_000);
    await ctx.fake.recover(0);
  });

  it('close() with a call stuck forever resolves without waiting for it', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    ctx.nvml = await openNvml({ callTimeoutMs: 1000 });
    await ctx.nvml.devices();
    await ctx.fake.inject({ op: 'hang', device: 0, function: 'nvmlDeviceGetTemperature', ms: 3_600_000 });
    const snap = await ctx.nvml.snapshot({ timeoutMs: 300 });
    expect(snap[0]!.ok).toBe(false);
    await until(async () => (await ctx.fake!.stats()).hung === 1, 'the call to be blocked in the fake');
    const t0 = performance.now();
    await ctx.nvml.close(); // waits at most callTimeoutMs for the stuck lane, not for the 1 h call
    expect(performance.now() - t0).toBeLessThan(30_000);
    ctx.nvml = undefined;
    // The fake releases the blocked call at the last nvmlShutdown; recover it so the process can
    // reuse the library (the stuck lane then lets go and nvmlShutdown runs on that thread).
    await ctx.fake.recover(0);
  });
});
