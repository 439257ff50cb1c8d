// Event storms: the bounded native queue merges identical events with exact counts while JS is
// behind, and counts (never silently loses) the distinct events it has to drop.
import { describe, expect, it } from 'vitest';
import { defaultDevices } from '../helpers/fake-nvml.js';
import { openNvml, type NvmlEvent } from '../../src/nvml/index.js';
import { skipReason, until, useFake, useSession } from './util.js';

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    /* a slow consumer */
  }
}

describe.skipIf(skipReason !== null)('NVML addon: event storms', () => {
  const ctx = useSession();

  it('identical events merge into exact counts; one callback per batch', async () => {
    ctx.fake = useFake({ devices: defaultDevices(2) });
    ctx.nvml = await openNvml();
    let total = 0;
    let batches = 0;
    let objects = 0;
    const w = ctx.nvml.watch(
      (evs) => {
        batches++;
        objects += evs.length;
        for (const e of evs) {
          expect(e).toMatchObject({ type: 'xid', data: 13, deviceIndex: 1 });
          total += e.count;
        }
        busy(20);
      },
      { waitTimeoutMs: 100, queueCapacity: 4096 },
    );
    await until(() => w.stats().registered.length === 2, 'registration');
    const reply = (await ctx.fake.inject({ op: 'storm', device: 1, xid: 13, count: 300_000, distinct: 1 })) as { recorded: number; dropped: number };
    expect(reply.recorded).toBeGreaterThan(0);
    await until(() => total === reply.recorded, `all ${reply.recorded} recorded events delivered (got ${total})`, 60_000);
    const st = w.stats();
    expect(st.delivered).toBe(reply.recorded);
    expect(st.dropped).toBe(0);
    expect(st.merged).toBe(reply.recorded - objects);
    expect(st.merged).toBeGreaterThan(0);
    expect(batches).toBeLessThan(reply.recorded);
    await w.stop();
  });

  it('distinct events beyond the bound are dropped, counted and notified', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    ctx.nvml = await openNvml();
    const delivered: NvmlEvent[] = [];
    let maxBatch = 0;
    let notifiedTotal = 0;
    let notifiedSum = 0;
    const w = ctx.nvml.watch(
      (evs) => {
        delivered.push(...evs);
        maxBatch = Math.max(maxBatch, evs.length);
        busy(30);
      },
      {
        waitTimeoutMs: 100,
        queueCapacity: 64,
        onDropped: (since, totalDropped) => {
          notifiedSum += since;
          notifiedTotal = totalDropped;
        },
      },
    );
    await until(() => w.stats().registered.length === 1, 'registration');
    const reply = (await ctx.fake.inject({ op: 'storm', device: 0, xid: 1000, count: 50_000, distinct: 5000 })) as { recorded: number };
    const sum = (): number => delivered.reduce((a, e) => a + e.count, 0);
    await until(() => sum() + w.stats().dropped === reply.recorded, 'every recorded event delivered or counted as dropped', 60_000);
    const st = w.stats();
    expect(st.dropped).toBeGreaterThan(0);
    expect(st.delivered).toBe(sum());
    await until(() => notifiedSum === w.stats().dropped, 'dropped notification');
    expect(notifiedTotal).toBe(st.dropped);
    // No batch ever exceeded the bound (memory stays flat whatever the storm).
    expect(maxBatch).toBeLessThanOrEqual(64);
    await w.stop();
  });
});
