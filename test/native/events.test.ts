// NVML events through the watcher thread: XIDs and other types, resolution to index/UUID/PCI id,
// timestamps, lost GPUs (event + per-device snapshot error), stop/ref lifecycle.
import { describe, expect, it } from 'vitest';
import { defaultDevices } from '../helpers/fake-nvml.js';
import { openNvml, type NvmlEvent } from '../../src/nvml/index.js';
import { skipReason, until, useFake, useSession } from './util.js';

describe.skipIf(skipReason !== null)('NVML addon: events', () => {
  const ctx = useSession();

  async function setup(n = 2, extra: Partial<Parameters<typeof useFake>[0]> = {}): Promise<{ events: NvmlEvent[]; batches: number[] }> {
    const devs = defaultDevices(n);
    for (const d of devs) d.supportedEvents = ['xid', 'ecc_sbe', 'ecc_dbe', 'pstate', 'clock', 'fatal_poison', 'gpu_recovery_action'];
    ctx.fake = useFake({ devices: devs, ...extra });
    ctx.nvml = await openNvml();
    return { events: [], batches: [] };
  }

  it('registers wanted & supported types and delivers XIDs (999 stays 999) resolved to the device', async () => {
    const { events } = await setup(2);
    const before = process.hrtime.bigint();
    const w = ctx.nvml!.watch((evs) => events.push(...evs), { waitTimeoutMs: 100 });
    const st = w.stats();
    await until(() => w.stats().registered.length === 2, 'registration');
    expect(w.stats().registered[1]).toEqual({
      deviceIndex: 1,
      types: ['ecc_sbe', 'ecc_dbe', 'xid', 'fatal_poison', 'gpu_recovery_action'],
      error: null,
    });
    expect(st.dropped).toBe(0);
    await ctx.fake!.xid(1, 999);
    await ctx.fake!.xid(0, 79);
    await ctx.fake!.inject({ op: 'event', device: 1, type: 'ecc_dbe' });
    await until(() => events.length >= 3, '3 events');
    const xid999 = events.find((e) => e.type === 'xid' && e.data === 999)!;
    expect(xid999).toMatchObject({
      type: 'xid',
      eventTypeMask: 8,
      data: 999,
      deviceIndex: 1,
      uuid: defaultDevices(2)[1]!.uuid,
      pciBusId: '00000000:2A:00.0',
      gpuInstanceId: null,
      computeInstanceId: null,
      count: 1,
    });
    expect(typeof xid999.monotonicNs).toBe('bigint');
    expect(xid999.monotonicNs).toBeGreaterThan(before);
    expect(xid999.monotonicNs).toBeLessThanOrEqual(process.hrtime.bigint());
    expect(Math.abs(xid999.wallTimeMs - Date.now())).toBeLessThan(60_000);
    expect(events.find((e) => e.data === 79)).toMatchObject({ deviceIndex: 0, type: 'xid' });
    expect(events.find((e) => e.type === 'ecc_dbe')).toMatchObject({ deviceIndex: 1, eventTypeMask: 2, data: 0 });
    await w.stop();
    expect(w.stats().delivered).toBe(3);
  });

  it('types option restricts what is registered; pstate is not registered by default', async () => {
    const { events } = await setup(1);
    const w = ctx.nvml!.watch((evs) => events.push(...evs), { waitTimeoutMs: 100, types: ['pstate', 'xid'] });
    await until(() => w.stats().registered.length === 1, 'registration');
    expect(w.stats().registered[0]!.types).toEqual(['pstate', 'xid']);
    await ctx.fake!.inject({ op: 'event', device: 0, type: 'pstate' });
    await until(() => events.length === 1, 'pstate event');
    expect(events[0]!.type).toBe('pstate');
    await w.stop();
    expect(() => ctx.nvml!.watch(() => undefined, { types: ['bogus' as never] })).toThrow(/unknown NVML event type 'bogus'/);
  });

  it('a lost GPU: one gpu_lost event, a per-device snapshot error, the others keep reporting', async () => {
    const { events } = await setup(3);
    expect((await ctx.nvml!.devices()).map((d) => d.error)).toEqual([null, null, null]);
    const w = ctx.nvml!.watch((evs) => events.push(...evs), { waitTimeoutMs: 100 });
    await until(() => w.stats().registered.length === 3, 'registration');
    await ctx.fake!.lose(2);
    await until(() => events.some((e) => e.type === 'gpu_lost'), 'gpu_lost');
    const lost = events.filter((e) => e.type === 'gpu_lost');
    expect(lost).toHaveLength(1);
    expect(lost[0]).toMatchObject({ deviceIndex: 2, uuid: defaultDevices(3)[2]!.uuid, eventTypeMask: 0, data: 0, count: 1 });
    // The healthy GPUs still deliver events.
    await ctx.fake!.xid(0, 48);
    await until(() => events.some((e) => e.data === 48), 'xid after loss');
    // Still exactly one gpu_lost after more waits.
    await new Promise((r) => setTimeout(r, 400));
    expect(events.filter((e) => e.type === 'gpu_lost')).toHaveLength(1);

    const snap = await ctx.nvml!.snapshot();
    expect(snap.map((s) => s.ok)).toEqual([true, true, false]);
    const s2 = snap[2]!;
    expect(!s2.ok && s2.error).toMatchObject({ code: 'NVML_ERROR_GPU_IS_LOST', status: 15 });
    expect(s2.uuid).toBe(defaultDevices(3)[2]!.uuid);
    await w.stop();
  });

  it('a lost GPU does not make the watcher spin; after recovery it reports again', async () => {
    const { events } = await setup(2);
    const w = ctx.nvml!.watch((evs) => events.push(...evs), { waitTimeoutMs: 100 });
    await until(() => w.stats().registered.length === 2, 'registration');
    await ctx.fake!.lose(1);
    await until(() => events.some((e) => e.type === 'gpu_lost'), 'gpu_lost');
    // Waits per second stay bounded by the wait timeout (a spinning loop would do thousands).
    const w0 = (await ctx.fake!.stats()).waits;
    await new Promise((r) => setTimeout(r, 1000));
    const perSecond = (await ctx.fake!.stats()).waits - w0;
    expect(perSecond).toBeLessThan(100);
    expect(w.stats().registered[1]!.error).toMatchObject({ code: 'NVML_ERROR_GPU_IS_LOST' });
    // Recovery is noticed (probe every 2 s), the GPU is registered again and reports events.
    await ctx.fake!.recover(1);
    await until(() => w.stats().registered[1]!.error === null, 're-registration after recovery');
    await ctx.fake!.xid(1, 74);
    await until(() => events.some((e) => e.data === 74 && e.deviceIndex === 1), 'event from the recovered GPU');
    // A second loss is reported again.
    await ctx.fake!.lose(1);
    await until(() => events.filter((e) => e.type === 'gpu_lost').length === 2, 'second gpu_lost');
    await w.stop();
  });

  it('a loss NVML cannot attribute is pinned on its GPU alone in a set; the others keep reporting; no flapping', async () => {
    const { events } = await setup(3);
    const w = ctx.nvml!.watch((evs) => events.push(...evs), { waitTimeoutMs: 100 });
    await until(() => w.stats().registered.length === 3, 'registration');
    // GPU 1's own calls still answer; only a wait on a set holding it says GPU_IS_LOST.
    await ctx.fake!.inject({ op: 'lost', device: 1, attributable: false });
    await until(() => events.some((e) => e.type === 'gpu_lost'), 'gpu_lost');
    expect(events.filter((e) => e.type === 'gpu_lost').map((e) => [e.deviceIndex, e.uuid])).toEqual([[1, defaultDevices(3)[1]!.uuid]]);
    await until(() => w.stats().registered[1]!.error?.code === 'NVML_ERROR_GPU_IS_LOST', 'GPU 1 left out of the set');
    // The healthy GPUs' events arrive (under the old 30 s back-off the shared set kept failing).
    await ctx.fake!.xid(0, 48);
    await ctx.fake!.xid(2, 94);
    await until(
      () => events.some((e) => e.data === 48 && e.deviceIndex === 0) && events.some((e) => e.data === 94 && e.deviceIndex === 2),
      'xids from GPUs 0 and 2',
    );
    // Past a recovery probe (every 2 s): its answering calls do not make it look recovered.
    await new Promise((r) => setTimeout(r, 2500));
    expect(events.filter((e) => e.type === 'gpu_lost')).toHaveLength(1);
    expect(w.stats().registered[1]!.error).toMatchObject({ code: 'NVML_ERROR_GPU_IS_LOST' });
    await ctx.fake!.recover(1);
    await until(() => w.stats().registered[1]!.error === null, 're-registration after recovery');
    await ctx.fake!.xid(1, 74);
    await until(() => events.some((e) => e.data === 74 && e.deviceIndex === 1), 'event from the recovered GPU');
    expect(events.filter((e) => e.type === 'gpu_lost')).toHaveLength(1);
    await w.stop();
  });

  it('the fake refuses a non-boolean attributable', async () => {
    await setup(1);
    await expect(ctx.fake!.inject({ op: 'lost', device: 0, attributable: 'no' })).rejects.toThrow(/"attributable" must be a boolean/);
  });

  it('a GPU lost before open is still listed, with its error', async () => {
    const devs = defaultDevices(2);
    devs[1]!.lost = true;
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const inv = await ctx.nvml.devices();
    expect(inv).toHaveLength(2);
    expect(inv[0]!.error).toBeNull();
    expect(inv[1]!.index).toBe(1);
    expect(inv[1]!.error).toMatchObject({ code: 'NVML_ERROR_GPU_IS_LOST', fn: 'nvmlDeviceGetHandleByIndex_v2' });
    const events: NvmlEvent[] = [];
    const w = ctx.nvml.watch((evs) => events.push(...evs), { waitTimeoutMs: 100 });
    await until(() => events.some((e) => e.type === 'gpu_lost'), 'gpu_lost at registration');
    expect(events.filter((e) => e.type === 'gpu_lost').map((e) => e.deviceIndex)).toEqual([1]);
    expect(w.stats().registered[1]!.error).toMatchObject({ code: 'NVML_ERROR_GPU_IS_LOST' });
    await w.stop();
  });

  it('stop() is prompt (bounded by the wait timeout) and idempotent; no events after stop', async () => {
    const { events } = await setup(1);
    const w = ctx.nvml!.watch((evs) => events.push(...evs), { waitTimeoutMs: 200 });
    await until(() => w.stats().registered.length === 1, 'registration');
    const t0 = Date.now();
    await Promise.all([w.stop(), w.stop()]);
    expect(Date.now() - t0).toBeLessThan(5000);
    await w.stop();
    await ctx.fake!.xid(0, 13);
    await new Promise((r) => setTimeout(r, 300));
    expect(events).toHaveLength(0);
  });

  it('an exception thrown by the callback does not break the watcher', async () => {
    const { events } = await setup(1);
    let thrown = 0;
    const onUncaught = (): void => {
      thrown++;
    };
    process.prependListener('uncaughtException', onUncaught);
    try {
      let first = true;
      const w = ctx.nvml!.watch(
        (evs) => {
          if (first) {
            first = false;
            throw new Error('callback bug');
          }
          events.push(...evs);
        },
        { waitTimeoutMs: 100 },
      );
      await until(() => w.stats().registered.length === 1, 'registration');
      await ctx.fake!.xid(0, 31);
      await until(() => thrown === 1, 'uncaught exception');
      await ctx.fake!.xid(0, 43);
      await until(() => events.some((e) => e.data === 43), 'second event');
      await w.stop();
    } finally {
      process.removeListener('uncaughtException', onUncaught);
    }
  });
});
