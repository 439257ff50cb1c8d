/**
 * The shared backend suite against the fake backend, plus what only the fake has (env parsing,
 * seeded telemetry, every injectable fault).
 */
import { describe, expect, it } from 'vitest';
import { FakeBackend, fakeOptionsFromEnv } from '../../src/backends/fake.js';
import type { NvmlEvent } from '../../src/nvml/types.js';
import { judgeSnapshot, type JudgeState } from '../../src/sources/telemetry.js';
import { sharedBackendSuite, waitFor } from './shared-suite.js';

sharedBackendSuite('fake', async () => {
  const backend = new FakeBackend({ seed: 42 });
  await backend.open();
  return {
    backend,
    async inject(f) {
      backend.inject(f);
    },
    async cleanup() {
      await backend.close();
    },
  };
});

describe('fake backend specifics', () => {
  it('reads NAVARCH_GPU_COUNT / NAVARCH_GPU_TYPE with clear errors', () => {
    expect(fakeOptionsFromEnv({})).toEqual({ count: 8, model: 'NVIDIA H100 80GB HBM3' });
    expect(fakeOptionsFromEnv({ NAVARCH_GPU_COUNT: ' 2 ', NAVARCH_GPU_TYPE: 'NVIDIA A100-SXM4-80GB' })).toEqual({ count: 2, model: 'NVIDIA A100-SXM4-80GB' });
    expect(fakeOptionsFromEnv({ NAVARCH_GPU_COUNT: '0' }).count).toBe(0);
    expect(() => fakeOptionsFromEnv({ NAVARCH_GPU_COUNT: '-1' })).toThrow('NAVARCH_GPU_COUNT: expected a whole number 0..64, got "-1"');
    expect(() => fakeOptionsFromEnv({ NAVARCH_GPU_COUNT: '2.5' })).toThrow(/NAVARCH_GPU_COUNT/);
    expect(() => new FakeBackend({ count: -2 })).toThrow('fake backend: GPU count must be a whole number 0..64, got -2');
  });

  it('is deterministic per seed and telemetry varies slowly within 35-60 C', async () => {
    const a = new FakeBackend({ seed: 5 });
    const b = new FakeBackend({ seed: 5 });
    const c = new FakeBackend({ seed: 6 });
    await Promise.all([a.open(), b.open(), c.open()]);
    expect(a.devices()).toEqual(b.devices());
    expect(a.devices()[0]!.uuid).not.toBe(c.devices()[0]!.uuid);
    let state: JudgeState | null = null;
    let prevTemp: number | null = null;
    for (let i = 0; i < 300; i++) {
      const s = await a.snapshot();
      const t = s[0]!.ok ? s[0]!.telemetry : null;
      expect(t).not.toBeNull();
      expect(t!.temperatureC).toBeGreaterThanOrEqual(35);
      expect(t!.temperatureC).toBeLessThanOrEqual(60);
      expect(t!.gpuUtilPercent).toBeGreaterThanOrEqual(0);
      expect(t!.gpuUtilPercent).toBeLessThanOrEqual(100);
      expect(t!.powerUsageW).toBeLessThanOrEqual(700);
      if (prevTemp !== null) expect(Math.abs(t!.temperatureC! - prevTemp)).toBeLessThanOrEqual(6);
      prevTemp = t!.temperatureC;
      // A long healthy run never raises anything.
      const r = judgeSnapshot(
        state,
        s.map((x) => ({ ...x, takenAtMs: 1e12 + i * 10_000 })),
      );
      expect(r.events).toEqual([]);
      state = r.state;
    }
  });

  it('models other GPUs: A100 (12 links, gen4), L4 (no NVLink), H100 (no fan)', async () => {
    const a100 = new FakeBackend({ count: 1, model: 'NVIDIA A100-SXM4-80GB' });
    const l4 = new FakeBackend({ count: 1, model: 'NVIDIA L4' });
    await a100.open();
    await l4.open();
    const ta = (await a100.snapshot())[0]!;
    const tl = (await l4.snapshot())[0]!;
    expect(ta.ok && ta.telemetry.nvlinks?.length).toBe(12);
    expect(ta.ok && ta.telemetry.pcieLinkGenMax).toBe(4);
    expect(tl.ok && tl.telemetry.nvlinks).toBeNull();
    const h = new FakeBackend({ count: 1 });
    await h.open();
    const th = (await h.snapshot())[0]!;
    expect(th.ok && th.telemetry.fanSpeedPercent).toBeNull();
  });

  it('every fault kind changes telemetry; recover undoes it', async () => {
    const b = new FakeBackend({ count: 2 });
    await b.open();
    const events: NvmlEvent[] = [];
    const w = b.watch((batch) => events.push(...batch));
    b.inject({ kind: 'ecc', gpu: 0, sbe: 3, dbe: 1 });
    b.inject({ kind: 'temperature', gpu: 0, celsius: 91 });
    b.inject({ kind: 'nvlink_down', gpu: 0, link: 17 });
    b.inject({ kind: 'power', gpu: 0, watts: 812.5 });
    b.inject({ kind: 'pcie_replay', gpu: 0, count: 40 });
    b.inject({ kind: 'clock_reasons', gpu: 0, mask: 0x48 });
    b.inject({ kind: 'remapped_rows', gpu: 0, pending: true, failure: true, uncorrected: 2 });
    let t = (await b.snapshot())[0]!;
    if (!t.ok) throw new Error('gpu 0 not ok');
    expect(t.telemetry).toMatchObject({
      temperatureC: 91,
      powerUsageW: 812.5,
      eccVolatileCorrected: 3,
      eccVolatileUncorrected: 1,
      eccAggregateUncorrected: 1,
      pcieReplayCounter: 40,
      remappedRowsPending: true,
      remappedRowsFailure: true,
      remappedRowsUncorrected: 2,
    });
    expect((t.telemetry.clockEventReasons ?? 0) & 0x48).toBe(0x48);
    expect(t.telemetry.nvlinks?.find((l) => l.link === 17)?.active).toBe(false);
    await waitFor('ecc events', () => events.length >= 2 && events);
    expect(events.map((e) => [e.type, e.eventTypeMask])).toEqual([
      ['ecc_sbe', 0x1],
      ['ecc_dbe', 0x2],
    ]);
    b.inject({ kind: 'recover', gpu: 0 });
    t = (await b.snapshot())[0]!;
    if (!t.ok) throw new Error('gpu 0 not ok');
    expect(t.telemetry.temperatureC).toBeLessThanOrEqual(60);
    expect(t.telemetry.eccVolatileUncorrected).toBe(0);
    expect(t.telemetry.eccAggregateUncorrected).toBe(1); // survives a reset, as on hardware
    expect(t.telemetry.remappedRowsPending).toBe(false);
    expect(t.telemetry.nvlinks?.every((l) => l.active)).toBe(true);
    expect((t.telemetry.clockEventReasons ?? 0) & 0x48).toBe(0);
    await w.stop();
    await b.close();
  });

  it('rejects bad injections with one-line errors', () => {
    const b = new FakeBackend({ count: 2 });
    expect(() => b.inject({ kind: 'xid', gpu: 2, xid: 79 })).toThrow('inject xid: gpu 2 out of range 0..1');
    expect(() => b.inject({ kind: 'nvlink_down', gpu: 0, link: 18 })).toThrow('inject nvlink_down: link 18 out of range (NVIDIA H100 80GB HBM3 has 18 links)');
    expect(() => b.inject({ kind: 'temperature', gpu: 0, celsius: Number.NaN })).toThrow(/inject temperature/);
    expect(() => b.inject({ kind: 'bogus' } as never)).toThrow('inject: unknown fault kind "bogus"');
  });

  it('merges identical events and bounds the queue, counting drops', async () => {
    const b = new FakeBackend({ count: 1 });
    await b.open();
    const got: NvmlEvent[] = [];
    const w = b.watch((batch) => got.push(...batch));
    for (let i = 0; i < 1000; i++) b.inject({ kind: 'xid', gpu: 0, xid: 13 });
    for (let i = 0; i < 5000; i++) b.inject({ kind: 'xid', gpu: 0, xid: 100 + i }); // distinct
    await waitFor('the batch', () => got.length > 0);
    expect(got[0]).toMatchObject({ data: 13, count: 1000 });
    expect(got).toHaveLength(4096);
    expect(w.stats()).toMatchObject({ merged: 999, dropped: 5000 - 4095, delivered: 1000 + 4095 });
    await w.stop();
    await b.close();
  });

  it('one watch at a time; no delivery without a watch; stats count deliveries', async () => {
    const b = new FakeBackend({ count: 1 });
    await b.open();
    b.inject({ kind: 'xid', gpu: 0, xid: 13 }); // nobody watching: not delivered later
    const got: NvmlEvent[] = [];
    const w = b.watch((batch) => got.push(...batch));
    expect(() => b.watch(() => {})).toThrow(/one watch at a time/);
    b.inject({ kind: 'xid', gpu: 0, xid: 31 });
    await waitFor('xid 31', () => got.length === 1);
    expect(got[0]!.data).toBe(31);
    expect(w.stats().delivered).toBe(1);
    await w.stop();
    const w2 = b.watch(() => {});
    await w2.stop();
    await b.close();
    await expect(b.snapshot()).rejects.toThrow('fake backend: not open');
  });
});
