/**
 * One conformance suite, run against every GPU backend (fake.test.ts, nvml.test.ts), so the fake
 * backend and the nvml backend over the fake libnvidia-ml cannot drift apart.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { GpuBackend } from '../../src/backends/types.js';
import type { DeviceSnapshot, NvmlEvent, Telemetry } from '../../src/nvml/types.js';
import { nvmlEventsToInputs } from '../../src/sources/nvml-events.js';
import type { HealthEventInput } from '../../src/events/types.js';
import { judgeSnapshot, type JudgeState } from '../../src/sources/telemetry.js';
import { poll } from '../helpers/wait.js';

export type HarnessFault =
  | { kind: 'xid'; gpu: number; xid: number }
  | { kind: 'gpu_lost'; gpu: number }
  | { kind: 'recover'; gpu: number }
  | { kind: 'temperature'; gpu: number; celsius: number }
  | { kind: 'ecc'; gpu: number; dbe: number }
  | { kind: 'clock_reasons'; gpu: number; mask: number }
  | { kind: 'power'; gpu: number; watts: number };

export interface BackendHarness {
  backend: GpuBackend;
  inject(fault: HarnessFault): Promise<void>;
  cleanup(): Promise<void>;
}

/** Every Telemetry key and the JS type of its non-null value. */
export const TELEMETRY_KEYS: Record<keyof Telemetry, 'number' | 'boolean' | 'array' | 'object'> = {
  temperatureC: 'number',
  powerUsageW: 'number',
  powerLimitW: 'number',
  gpuUtilPercent: 'number',
  memUtilPercent: 'number',
  memoryUsedBytes: 'number',
  memoryTotalBytes: 'number',
  smClockMhz: 'number',
  memClockMhz: 'number',
  clockEventReasons: 'number',
  performanceState: 'number',
  fanSpeedPercent: 'number',
  persistenceMode: 'boolean',
  eccModeCurrent: 'boolean',
  eccModePending: 'boolean',
  eccVolatileCorrected: 'number',
  eccVolatileUncorrected: 'number',
  eccAggregateCorrected: 'number',
  eccAggregateUncorrected: 'number',
  retiredPagesSbe: 'number',
  retiredPagesDbe: 'number',
  retiredPagesPending: 'boolean',
  remappedRowsCorrected: 'number',
  remappedRowsUncorrected: 'number',
  remappedRowsPending: 'boolean',
  remappedRowsFailure: 'boolean',
  pcieReplayCounter: 'number',
  pcieLinkGenCurrent: 'number',
  pcieLinkGenMax: 'number',
  pcieLinkWidthCurrent: 'number',
  pcieLinkWidthMax: 'number',
  nvlinks: 'array',
  fabric: 'object',
  memoryTemperatureC: 'number',
  totalEnergyMj: 'number',
  encoderUtilPercent: 'number',
  decoderUtilPercent: 'number',
  pcieTxKBps: 'number',
  pcieRxKBps: 'number',
  nvlinkDataTxKiB: 'number',
  nvlinkDataRxKiB: 'number',
};

export function waitFor<T>(what: string, get: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  return poll(what, get, { timeoutMs }) as Promise<T>;
}

export function sharedBackendSuite(label: string, make: () => Promise<BackendHarness>, skipReason: string | null = null): void {
  if (skipReason) console.warn(`[skip] ${label} backend suite: ${skipReason}`);
  describe.skipIf(skipReason !== null)(`GpuBackend conformance: ${label}`, () => {
    let h: BackendHarness;
    let stops: Array<() => Promise<void>> = [];

    beforeEach(async () => {
      h = await make();
      stops = [];
    });
    afterEach(async () => {
      for (const s of stops) await s();
      await h.cleanup();
    });

    /** Start watching and wait until every device is registered (NVML drops earlier events). */
    async function collect(): Promise<{ events: NvmlEvent[] }> {
      const box = { events: [] as NvmlEvent[] };
      const w = h.backend.watch((batch) => box.events.push(...batch));
      stops.push(() => w.stop());
      const n = h.backend.devices().length;
      const reg = await waitFor('event registration on every device', () => w.stats().registered.length === n && w.stats().registered);
      for (const r of reg) {
        expect(r.error).toBeNull();
        expect(r.types).toEqual(expect.arrayContaining(['xid', 'ecc_sbe', 'ecc_dbe']));
      }
      return box;
    }

    it('reports an inventory of 8 H100s with distinct identities', async () => {
      const sys = h.backend.system();
      expect(typeof sys.driverVersion).toBe('string');
      const devs = h.backend.devices();
      expect(devs).toHaveLength(8);
      expect(devs.map((d) => d.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      expect(new Set(devs.map((d) => d.uuid)).size).toBe(8);
      expect(new Set(devs.map((d) => d.pciBusId)).size).toBe(8);
      for (const d of devs) {
        expect(d.name).toBe('NVIDIA H100 80GB HBM3');
        expect(d.uuid).toMatch(/^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        expect(d.pciBusId).toMatch(/^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.0$/);
        expect(d.pciBusIdShort).toMatch(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}$/);
        // The short form is the long one without the upper domain digits and the function.
        expect(d.pciBusId.toLowerCase().slice(4, 14)).toBe(d.pciBusIdShort);
        expect(d.memoryTotalBytes).toBeGreaterThan(80 * 1e9);
        expect(d.error).toBeNull();
      }
      expect(await h.backend.refreshDevices()).toEqual(devs);
    });

    it('takes snapshots with every Telemetry key, typed, nulls only for unsupported', async () => {
      const snap = await h.backend.snapshot();
      expect(snap).toHaveLength(8);
      for (const s of snap) {
        expect(s.ok).toBe(true);
        if (!s.ok) continue;
        expect(s.uuid).toBe(h.backend.devices()[s.index]?.uuid);
        expect(typeof s.takenAtMs).toBe('number');
        expect(Object.keys(s.telemetry).sort()).toEqual(Object.keys(TELEMETRY_KEYS).sort());
        for (const [k, kind] of Object.entries(TELEMETRY_KEYS)) {
          const v = (s.telemetry as unknown as Record<string, unknown>)[k];
          if (v === null) continue;
          if (kind === 'array') expect(Array.isArray(v), k).toBe(true);
          else expect(typeof v, k).toBe(kind);
        }
        const t = s.telemetry;
        // What an H100 SXM reports.
        expect(t.temperatureC).toBeGreaterThanOrEqual(20);
        expect(t.temperatureC).toBeLessThan(85);
        expect(t.powerLimitW).toBe(700);
        expect(t.pcieLinkGenMax).toBe(5);
        expect(t.pcieLinkWidthMax).toBe(16);
        expect(t.pcieLinkWidthCurrent).toBe(16);
        expect(t.eccModeCurrent).toBe(true);
        expect(t.eccVolatileUncorrected).toBe(0);
        expect(t.remappedRowsFailure).toBe(false);
        expect(t.persistenceMode).toBe(true);
        expect(t.nvlinks).toHaveLength(18);
        // dcgm-exporter's default fields an H100 answers.
        expect(t.memoryTemperatureC).toBeGreaterThanOrEqual(20);
        expect(t.totalEnergyMj).toBeGreaterThanOrEqual(0);
        expect(t.encoderUtilPercent).toBe(0);
        expect(t.nvlinkDataTxKiB).toBeGreaterThanOrEqual(0);
        for (const l of t.nvlinks ?? []) {
          expect(l.active).toBe(true);
          expect(Object.keys(l).sort()).toEqual(['active', 'crcDataErrors', 'crcFlitErrors', 'link', 'recoveryErrors', 'replayErrors']);
        }
      }
      // A healthy node judges clean.
      expect(judgeSnapshot(null, snap).events).toEqual([]);
    });

    it('delivers an injected XID as an event on the right device', async () => {
      const box = await collect();
      const dev = h.backend.devices()[3]!;
      await h.inject({ kind: 'xid', gpu: 3, xid: 79 });
      const ev = await waitFor('xid event', () => box.events.find((e) => e.type === 'xid'));
      expect(ev.data).toBe(79);
      expect(ev.deviceIndex).toBe(3);
      expect(ev.uuid).toBe(dev.uuid);
      expect(ev.pciBusId).toBe(dev.pciBusId);
      expect(ev.eventTypeMask).toBe(0x8);
      expect(ev.count).toBeGreaterThanOrEqual(1);
      expect(typeof ev.monotonicNs).toBe('bigint');
      expect(Math.abs(ev.wallTimeMs - Date.now())).toBeLessThan(120_000);
      const [input] = nvmlEventsToInputs([ev]);
      expect(input).toMatchObject({
        type: 'xid',
        system: 'DRIVER',
        gpuIndex: 3,
        gpuUuid: dev.uuid,
        key: 'gpu3/xid/79',
        metrics: { xid_code: '79' },
        severity: 'critical',
      });
    });

    it('reports a lost GPU as a per-device snapshot error and a gpu_lost event, then recovers', async () => {
      const box = await collect();
      const dev = h.backend.devices()[2]!;
      await h.inject({ kind: 'gpu_lost', gpu: 2 });
      const ev = await waitFor('gpu_lost event', () => box.events.find((e) => e.type === 'gpu_lost'));
      expect(ev.deviceIndex).toBe(2);
      expect(ev.uuid).toBe(dev.uuid);
      const snap = await h.backend.snapshot();
      expect(snap).toHaveLength(8);
      const lost = snap[2] as DeviceSnapshot;
      expect(lost.ok).toBe(false);
      if (!lost.ok) {
        expect(lost.error.code).toBe('NVML_ERROR_GPU_IS_LOST');
        expect(lost.uuid).toBe(dev.uuid);
      }
      expect(snap.filter((s) => s.ok)).toHaveLength(7);
      const [input] = nvmlEventsToInputs([ev]);
      expect(input).toMatchObject({ type: 'xid', key: 'gpu2/xid/79', metrics: { xid_code: '79' }, severity: 'critical', fault: 'raise' });
      const judged = judgeSnapshot(null, snap);
      expect(judged.events.map((e) => e.key)).toEqual(['gpu2/xid/79']);

      await h.inject({ kind: 'recover', gpu: 2 });
      const after = await waitFor('GPU 2 to answer again', async () => {
        const s = await h.backend.snapshot();
        return s[2]?.ok ? s : undefined;
      });
      expect(after.every((s) => s.ok)).toBe(true);
    });

    it('telemetry faults and an ECC DBE go through events and the judge the same way', async () => {
      const box = await collect();
      await h.inject({ kind: 'clock_reasons', gpu: 1, mask: 0x48 });
      await h.inject({ kind: 'power', gpu: 2, watts: 900 });
      await h.inject({ kind: 'ecc', gpu: 4, dbe: 1 });
      const ev = await waitFor('ecc_dbe event', () => box.events.find((e) => e.type === 'ecc_dbe'));
      expect(ev).toMatchObject({ deviceIndex: 4, uuid: h.backend.devices()[4]!.uuid, eventTypeMask: 0x2 });
      expect(nvmlEventsToInputs([ev])).toMatchObject([{ type: 'ecc_dbe', system: 'MEM', key: 'gpu4/ecc_dbe', severity: 'critical' }]);
      const snap = await h.backend.snapshot();
      const s4 = snap[4]!;
      expect(s4.ok && s4.telemetry.eccVolatileUncorrected).toBe(1);
      // Clock slowdowns are rate-based (6 slowed samples in 10 min): judge the snapshot 6 times, 10 s apart.
      let state: JudgeState | null = null;
      const events: HealthEventInput[] = [];
      for (let k = 0; k < 6; k++) {
        const r = judgeSnapshot(
          state,
          snap.map((d) => ({ ...d, takenAtMs: d.takenAtMs + k * 10_000 })),
        );
        state = r.state;
        events.push(...r.events);
      }
      expect(events.map((e) => e.key).sort()).toEqual(['gpu1/clock/hw_slowdown', 'gpu1/clock/hw_thermal_slowdown', 'gpu2/power', 'gpu4/ecc_dbe']);
      expect(events.find((e) => e.key === 'gpu1/clock/hw_slowdown')?.severity).toBe('warning');
      expect(events.find((e) => e.key === 'gpu2/power')?.metrics.power_watts).toBe('900.000000');
    });

    it('shows an injected temperature in snapshots and the judge raises gpu0/thermal', async () => {
      await h.inject({ kind: 'temperature', gpu: 0, celsius: 96 });
      const snap = await h.backend.snapshot();
      const s0 = snap[0]!;
      expect(s0.ok && s0.telemetry.temperatureC).toBe(96);
      const { events } = judgeSnapshot(null, snap);
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ key: 'gpu0/thermal', type: 'thermal', system: 'THERMAL', severity: 'critical', metrics: { temperature: '96' } });
    });
  });
}
