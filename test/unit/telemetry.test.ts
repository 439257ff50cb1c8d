/**
 * The telemetry judge: every condition raises and clears with hysteresis, nulls never fault,
 * GPU count vs instance type, lost/hung devices; and the sampler (interval, no overlap).
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeBackend } from '../../src/backends/fake.js';
import { selectBackend } from '../../src/backends/select.js';
import type { HealthEventInput } from '../../src/events/types.js';
import type { DeviceSnapshot, NvLinkStatus, Telemetry } from '../../src/nvml/types.js';
import { healthyLinks, healthyTelemetry } from '../helpers/telemetry.js';
import {
  DEFAULT_TELEMETRY_CONFIG,
  judgeSnapshot,
  telemetryConfig,
  TelemetrySampler,
  type JudgeState,
  type TelemetryConfig,
} from '../../src/sources/telemetry.js';

const T0 = 1_700_000_000_000;

const links = (n: number, over: Partial<NvLinkStatus> = {}): NvLinkStatus[] => healthyLinks(n, () => over);

/** A healthy, busy H100. */
/** A healthy, busy H100. */
const tel = healthyTelemetry;

const ALL_NULL: Telemetry = Object.fromEntries(Object.keys(tel()).map((k) => [k, null])) as unknown as Telemetry;

function ok(index: number, t: Telemetry, takenAtMs: number): DeviceSnapshot {
  return { index, uuid: `GPU-${index}`, ok: true, telemetry: t, takenAtMs };
}

/** Drive the judge through samples of GPU 0 (10 s apart); returns the events of each step. */
function run(samples: Array<Partial<Telemetry> | Telemetry>, config: TelemetryConfig = DEFAULT_TELEMETRY_CONFIG): HealthEventInput[][] {
  let state: JudgeState | null = null;
  return samples.map((over, i) => {
    const r = judgeSnapshot(state, [ok(0, { ...tel(), ...over }, T0 + i * 10_000)], config);
    state = r.state;
    return r.events;
  });
}

const brief = (evs: HealthEventInput[]): string[] => evs.map((e) => `${e.fault}:${e.key}:${e.severity}`);

describe('judgeSnapshot', () => {
  it('a healthy GPU produces nothing', () => {
    expect(run([{}, {}, {}]).flat()).toEqual([]);
  });

  it('thermal: warning at 85, critical at 95, clears below threshold - margin', () => {
    const steps = run([
      { temperatureC: 84 },
      { temperatureC: 85 },
      { temperatureC: 81 },
      { temperatureC: 95 },
      { temperatureC: 91 },
      { temperatureC: 89 },
      { temperatureC: 80 },
      { temperatureC: 79 },
    ]);
    expect(steps.map(brief)).toEqual([
      [],
      ['raise:gpu0/thermal:warning'],
      [], // 81 >= 85 - 5: still warm
      ['raise:gpu0/thermal:critical'],
      [], // 91 >= 95 - 5: stays critical
      ['raise:gpu0/thermal:warning'], // dropped below 90
      [], // 80 = 85 - 5: still active
      ['clear:gpu0/thermal:info'],
    ]);
    const raise = steps[1]![0]!;
    expect(raise).toMatchObject({
      type: 'thermal',
      system: 'THERMAL',
      gpuIndex: 0,
      gpuUuid: 'GPU-0',
      metrics: { temperature: '85' },
      source: 'telemetry',
      timeMs: T0 + 10_000,
    });
    expect(steps[3]![0]!.metrics.temperature).toBe('95');
    expect(steps[7]![0]).toMatchObject({
      fault: 'clear',
      severity: 'info',
      action: 'none',
      type: 'thermal',
      system: 'THERMAL',
      metrics: { temperature: '79' },
    });
  });

  it('thermal thresholds are configurable', () => {
    const cfg = telemetryConfig({ temperatureWarningC: 70, temperatureCriticalC: 80, temperatureClearMarginC: 2 });
    expect(run([{ temperatureC: 70 }, { temperatureC: 68 }, { temperatureC: 67 }], cfg).map(brief)).toEqual([
      ['raise:gpu0/thermal:warning'],
      [],
      ['clear:gpu0/thermal:info'],
    ]);
  });

  it('clock reasons: a warning at >= 0.6 events/min over 10 min (6 samples), never critical; clear after 3 samples below the rate', () => {
    const slow = { clockEventReasons: 0x8 | 0x40 };
    // 5 slowed samples in 10 min is 0.5/min: below the rate, nothing raised.
    expect(run([slow, slow, slow, slow, slow]).flat()).toEqual([]);
    const steps = run([
      slow,
      slow,
      slow,
      slow,
      slow,
      slow,
      { clockEventReasons: 0x40 },
      { clockEventReasons: 0 },
      { clockEventReasons: 0 },
      { clockEventReasons: 0 },
    ]);
    expect(steps.map(brief)).toEqual([
      [],
      [],
      [],
      [],
      [],
      ['raise:gpu0/clock/hw_slowdown:warning', 'raise:gpu0/clock/hw_thermal_slowdown:warning'],
      [], // 0x40 only: thermal slowdown still at the rate
      [],
      ['clear:gpu0/clock/hw_slowdown:info'],
      ['clear:gpu0/clock/hw_thermal_slowdown:info'],
    ]);
    expect(steps[5]![0]!.metrics).toMatchObject({
      clock_event_reasons: '72',
      clock_events_in_window: '6',
      clock_events_per_minute: '0.600000',
      window_seconds: '600',
      temperature: '50',
      power_watts: '450.500000',
    });
    const six = <T>(x: T): T[] => Array.from({ length: 6 }, () => x);
    const brake = run(six({ clockEventReasons: 0x80 }))[5]!;
    expect(brake).toHaveLength(1);
    expect(brake[0]).toMatchObject({ key: 'gpu0/clock/hw_power_brake', type: 'power', system: 'POWER', severity: 'warning' });
    expect(brief(run(six({ clockEventReasons: 0x20 }))[5]!)).toEqual(['raise:gpu0/clock/sw_thermal_slowdown:warning']);
    // Idle, SW power cap, sync boost are not faults.
    expect(run(six({ clockEventReasons: 0x1 | 0x4 | 0x10 })).flat()).toEqual([]);
  });

  it('clock reasons: slowed samples spread wider than the window never reach the rate (injected clock)', () => {
    // One slowed sample every 2 min: at most 5 in any 10-min window (0.5/min).
    let state: JudgeState | null = null;
    const out: HealthEventInput[] = [];
    for (let k = 0; k < 60; k++) {
      const r = judgeSnapshot(state, [ok(0, tel({ clockEventReasons: 0x8 }), T0 + k * 120_000)]);
      state = r.state;
      out.push(...r.events);
    }
    expect(out).toEqual([]);
    expect(state!.clockEvents['gpu0/clock/hw_slowdown']!.length).toBeLessThanOrEqual(6);
    // Configurable: 0.3/min over 10 min needs 3 samples.
    const cfg = telemetryConfig({ clockEventRatePerMinute: 0.3 });
    expect(run([{ clockEventReasons: 0x8 }, { clockEventReasons: 0x8 }, { clockEventReasons: 0x8 }], cfg).map(brief)).toEqual([
      [],
      [],
      ['raise:gpu0/clock/hw_slowdown:warning'],
    ]);
    expect(() => telemetryConfig({ clockEventRatePerMinute: 0 })).toThrow(/clockEventRatePerMinute must be a number > 0/);
  });

  it('ECC uncorrected: raises on increase, stays while the volatile count is non-zero, clears after reset', () => {
    const steps = run([
      {},
      { eccVolatileUncorrected: 1, eccAggregateUncorrected: 1 },
      { eccVolatileUncorrected: 1, eccAggregateUncorrected: 1 },
      { eccVolatileUncorrected: 1, eccAggregateUncorrected: 1 },
      { eccVolatileUncorrected: 1, eccAggregateUncorrected: 1 },
      { eccVolatileUncorrected: 0, eccAggregateUncorrected: 1 },
      { eccVolatileUncorrected: 0, eccAggregateUncorrected: 1 },
      { eccVolatileUncorrected: 0, eccAggregateUncorrected: 1 },
    ]);
    expect(steps.map(brief)).toEqual([[], ['raise:gpu0/ecc_dbe:critical'], [], [], [], [], [], ['clear:gpu0/ecc_dbe:info']]);
    expect(steps[1]![0]).toMatchObject({ type: 'ecc_dbe', system: 'MEM', action: 'reset_gpu', metrics: { ecc_dbe_count: '1', ecc_dbe_aggregate: '1' } });
  });

  it('ECC uncorrected with only aggregate counters: raise on increase, clear after 3 samples without', () => {
    const a = (n: number): Partial<Telemetry> => ({ eccVolatileUncorrected: null, eccAggregateUncorrected: n });
    expect(run([a(3), a(5), a(5), a(5), a(5)]).map(brief)).toEqual([[], ['raise:gpu0/ecc_dbe:critical'], [], [], ['clear:gpu0/ecc_dbe:info']]);
  });

  it('ECC corrected rising fast: rate per minute over the threshold', () => {
    const c = (n: number): Partial<Telemetry> => ({ eccVolatileCorrected: n, eccAggregateCorrected: n });
    // +50 in 10 s = 300/min >= 100/min; +5 in 10 s = 30/min is fine.
    const steps = run([c(0), c(50), c(55), c(60), c(65)]);
    expect(steps.map(brief)).toEqual([[], ['raise:gpu0/ecc_sbe_rate:warning'], [], [], ['clear:gpu0/ecc_sbe_rate:info']]);
    expect(steps[1]![0]).toMatchObject({ type: 'ecc_sbe', system: 'MEM', metrics: { ecc_sbe_count: '50', ecc_sbe_per_minute: '300.000000' } });
  });

  it('retired pages pending, remapped rows pending and failure', () => {
    expect(run([{ retiredPagesPending: true, retiredPagesSbe: 2, retiredPagesDbe: 1 }])[0]).toMatchObject([
      {
        key: 'gpu0/retired_pages/pending',
        type: 'memory',
        system: 'MEM',
        severity: 'warning',
        action: 'reboot',
        metrics: { retired_pages_sbe: '2', retired_pages_dbe: '1' },
      },
    ]);
    const steps = run([
      { remappedRowsPending: true, remappedRowsUncorrected: 1 },
      { remappedRowsPending: false, remappedRowsFailure: true },
      { remappedRowsFailure: false },
      {},
      {},
      {},
    ]);
    expect(steps.map(brief)).toEqual([
      ['raise:gpu0/remapped_rows/pending:warning'],
      ['raise:gpu0/remapped_rows/failure:critical'],
      [],
      ['clear:gpu0/remapped_rows/pending:info'],
      ['clear:gpu0/remapped_rows/failure:info'],
      [],
    ]);
    expect(steps[1]![0]).toMatchObject({ action: 'replace', metrics: { remapped_rows_uncorrected: '0' } });
  });

  it('PCIe replay rate per minute', () => {
    const r = (n: number): Partial<Telemetry> => ({ pcieReplayCounter: n });
    const steps = run([r(1000), r(1020), r(1030), r(1040), r(1050)]);
    expect(steps.map(brief)).toEqual([[], ['raise:gpu0/pcie/replay:warning'], [], [], ['clear:gpu0/pcie/replay:info']]);
    expect(steps[1]![0]).toMatchObject({ type: 'pcie', system: 'PCIE', metrics: { pcie_replay_count: '1020', pcie_replays_per_minute: '120.000000' } });
    // A counter reset (driver reload) is not a burst.
    expect(run([r(5000), r(3)]).flat()).toEqual([]);
  });

  it('PCIe width below max at any time; generation below max only while busy', () => {
    expect(brief(run([{ pcieLinkWidthCurrent: 8, gpuUtilPercent: 0, clockEventReasons: 1, performanceState: 8 }])[0]!)).toEqual([
      'raise:gpu0/pcie/link_width:warning',
    ]);
    expect(brief(run([{ pcieLinkGenCurrent: 4 }])[0]!)).toEqual(['raise:gpu0/pcie/link_gen:warning']);
    // Idle GPU at gen1: power saving, not a fault.
    expect(run([{ pcieLinkGenCurrent: 1, gpuUtilPercent: 0, clockEventReasons: 0x1, performanceState: 8 }])[0]).toEqual([]);
    // Raised while busy, the GPU goes idle: clears after 3 samples.
    const idle = { pcieLinkGenCurrent: 1, gpuUtilPercent: 0, clockEventReasons: 0x1, performanceState: 8 };
    expect(run([{ pcieLinkGenCurrent: 3 }, idle, idle, idle]).map(brief)).toEqual([
      ['raise:gpu0/pcie/link_gen:warning'],
      [],
      [],
      ['clear:gpu0/pcie/link_gen:info'],
    ]);
  });

  it('NVLink: a link down, error counters rising', () => {
    const down = links(18).map((l) => (l.link === 5 ? { ...l, active: false } : l));
    const steps = run([{ nvlinks: down }, { nvlinks: down }, {}, {}, {}]);
    expect(steps.map(brief)).toEqual([['raise:gpu0/nvlink/5:critical'], [], [], [], ['clear:gpu0/nvlink/5:info']]);
    expect(steps[0]![0]).toMatchObject({ type: 'nvlink', system: 'NVLINK', metrics: { link_id: '5' } });
    const errs = (n: number): Partial<Telemetry> => ({ nvlinks: links(18).map((l) => (l.link === 2 ? { ...l, crcFlitErrors: n, replayErrors: n } : l)) });
    const e = run([errs(0), errs(10), errs(10), errs(10), errs(10)]);
    expect(e.map(brief)).toEqual([[], ['raise:gpu0/nvlink/2/errors:warning'], [], [], ['clear:gpu0/nvlink/2/errors:info']]);
    expect(e[1]![0]!.metrics).toMatchObject({ link_id: '2', nvlink_errors: '20', nvlink_errors_per_minute: '120.000000' });
  });

  it('persistence mode off is a warning; power above the limit is a power event', () => {
    expect(run([{ persistenceMode: false }])[0]).toMatchObject([{ key: 'gpu0/persistence_mode', severity: 'warning', metrics: { persistence_mode: 'false' } }]);
    expect(run([{ powerUsageW: 800 }])[0]).toMatchObject([
      { key: 'gpu0/power', type: 'power', system: 'POWER', metrics: { power_watts: '800.000000', power_limit_watts: '700.000000' } },
    ]);
    expect(run([{ powerUsageW: 760 }])[0]).toEqual([]); // within limit + 10%
  });

  it('null (unsupported) fields never fault, even after counters were seen', () => {
    expect(run([ALL_NULL, ALL_NULL, ALL_NULL]).flat()).toEqual([]);
    expect(run([{}, ALL_NULL, {}, ALL_NULL]).flat()).toEqual([]);
  });

  it('an active fault whose field becomes unsupported clears after N samples', () => {
    const slow = { clockEventReasons: 0x8 };
    expect(run([slow, slow, slow, slow, slow, slow, ALL_NULL, ALL_NULL, ALL_NULL]).map(brief)).toEqual([
      [],
      [],
      [],
      [],
      [],
      ['raise:gpu0/clock/hw_slowdown:warning'],
      [],
      [],
      ['clear:gpu0/clock/hw_slowdown:info'],
    ]);
  });

  it('GPU count below the instance type', () => {
    const cfg = telemetryConfig({ expectedGpuCount: 8 });
    const snap = (n: number, t: number): DeviceSnapshot[] => Array.from({ length: n }, (_, i) => ok(i, tel(), t));
    const a = judgeSnapshot(null, snap(7, T0), cfg);
    expect(a.events).toMatchObject([
      {
        key: 'node/gpu_count',
        gpuIndex: -1,
        gpuUuid: '',
        severity: 'critical',
        type: 'driver_error',
        system: 'DRIVER',
        fault: 'raise',
        metrics: { gpu_count: '7', expected_gpu_count: '8' },
      },
    ]);
    const b = judgeSnapshot(a.state, snap(8, T0 + 1), cfg);
    expect(brief(b.events)).toEqual(['clear:node/gpu_count:info']);
    // No GPUs at all (the none backend on a p5.48xlarge).
    expect(brief(judgeSnapshot(null, [], cfg, T0).events)).toEqual(['raise:node/gpu_count:critical']);
  });

  it('a GPU that disappears between samples is an XID-79-style critical; it clears when back', () => {
    const two = (t: number): DeviceSnapshot[] => [ok(0, tel(), t), ok(1, tel(), t)];
    const a = judgeSnapshot(null, two(T0), DEFAULT_TELEMETRY_CONFIG);
    const b = judgeSnapshot(a.state, [ok(0, tel(), T0 + 10_000)], DEFAULT_TELEMETRY_CONFIG, T0 + 10_000);
    expect(b.events).toMatchObject([
      {
        key: 'gpu1/xid/79',
        type: 'xid',
        system: 'DRIVER',
        gpuIndex: 1,
        gpuUuid: 'GPU-1',
        severity: 'critical',
        fault: 'raise',
        metrics: { xid_code: '79' },
        timeMs: T0 + 10_000,
      },
    ]);
    let s = judgeSnapshot(b.state, [ok(0, tel(), T0 + 20_000)], DEFAULT_TELEMETRY_CONFIG).state;
    const back: string[] = [];
    for (let k = 3; k < 6; k++) {
      const r = judgeSnapshot(s, two(T0 + k * 10_000), DEFAULT_TELEMETRY_CONFIG);
      s = r.state;
      back.push(...brief(r.events));
    }
    expect(back).toEqual(['clear:gpu1/xid/79:info']);
  });

  it('a snapshot error: lost -> XID 79; timeout -> driver_error with the NVML function', () => {
    const lost: DeviceSnapshot = {
      index: 1,
      uuid: 'GPU-1',
      ok: false,
      takenAtMs: T0,
      error: { code: 'NVML_ERROR_GPU_IS_LOST', status: 15, fn: 'nvmlDeviceGetTemperature', message: 'lost' },
    };
    expect(judgeSnapshot(null, [lost]).events).toMatchObject([
      { key: 'gpu1/xid/79', severity: 'critical', metrics: { xid_code: '79', nvml_error: 'NVML_ERROR_GPU_IS_LOST' } },
    ]);
    const hung: DeviceSnapshot = {
      index: 1,
      uuid: 'GPU-1',
      ok: false,
      takenAtMs: T0,
      error: { code: 'NVML_CALL_TIMEOUT', status: -1, fn: 'nvmlDeviceGetPowerUsage', message: 'timeout' },
    };
    const h = judgeSnapshot(null, [hung]);
    expect(h.events).toMatchObject([
      {
        key: 'gpu1/driver_error',
        type: 'driver_error',
        system: 'DRIVER',
        severity: 'critical',
        metrics: { nvml_error: 'NVML_CALL_TIMEOUT', nvml_function: 'nvmlDeviceGetPowerUsage' },
      },
    ]);
    // The same error again: no repeat.
    expect(judgeSnapshot(h.state, [hung]).events).toEqual([]);
  });

  it('is pure: the previous state is not modified', () => {
    const a = judgeSnapshot(null, [ok(0, tel({ temperatureC: 90 }), T0)]);
    const copy = structuredClone(a.state);
    judgeSnapshot(a.state, [ok(0, tel({ temperatureC: 20 }), T0 + 1)]);
    expect(a.state).toEqual(copy);
  });

  it('rejects nonsense configuration with one-line errors', () => {
    expect(() => telemetryConfig({ clearAfterGoodSamples: 0 })).toThrow('telemetry config: clearAfterGoodSamples must be a number >= 1, got 0');
    expect(() => telemetryConfig({ temperatureWarningC: 90, temperatureCriticalC: 80 })).toThrow(
      'telemetry config: temperatureCriticalC is below temperatureWarningC',
    );
    expect(() => telemetryConfig({ expectedGpuCount: -1 })).toThrow(/expectedGpuCount/);
  });
});

describe('TelemetrySampler', () => {
  it('samples on its interval, never overlapping, and reports raised faults', async () => {
    const fake = new FakeBackend({ count: 2 });
    await fake.open();
    let inFlight = 0;
    let maxInFlight = 0;
    const slow = {
      async snapshot() {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 150)); // slower than the interval
        try {
          return await fake.snapshot();
        } finally {
          inFlight--;
        }
      },
    };
    const events: HealthEventInput[] = [];
    const sampler = new TelemetrySampler({ backend: slow, config: { intervalMs: 100 }, onEvents: (e) => void events.push(...e) });
    sampler.start();
    const deadline = Date.now() + 30_000;
    while (sampler.sampleCount < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    fake.inject({ kind: 'temperature', gpu: 1, celsius: 99 });
    while (!events.some((e) => e.key === 'gpu1/thermal') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await sampler.stop();
    const n = sampler.sampleCount;
    await new Promise((r) => setTimeout(r, 300));
    expect(sampler.sampleCount).toBe(n); // stopped means stopped
    expect(maxInFlight).toBe(1);
    expect(events.find((e) => e.key === 'gpu1/thermal')).toMatchObject({ severity: 'critical', metrics: { temperature: '99' } });
    await fake.close();
  });

  it('a failing snapshot goes to onError and sampling continues', async () => {
    let calls = 0;
    const errors: string[] = [];
    const sampler = new TelemetrySampler({
      backend: {
        async snapshot() {
          calls++;
          if (calls === 1) throw new Error('boom');
          return [];
        },
      },
      config: { intervalMs: 100 },
      onEvents: () => {},
      onError: (e) => errors.push(e.message),
    });
    sampler.start();
    const deadline = Date.now() + 30_000;
    while (calls < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await sampler.stop();
    expect(errors).toEqual(['boom']);
    expect(calls).toBeGreaterThanOrEqual(3);
  });
});

describe('fake backend + scenario + sampler', () => {
  it('a scripted overheat raises and then clears gpu0/thermal through the sampler', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'navarch-telemetry-'));
    try {
      const file = join(dir, 'overheat.yaml');
      writeFileSync(file, 'name: overheat\nevents:\n  - { at: 50ms, gpu: 0, fault: temperature, celsius: 97 }\n  - { at: 1s, gpu: 0, fault: recover }\n');
      const sel = await selectBackend({ mode: 'fake', env: { NAVARCH_GPU_COUNT: '2' }, scenarioFile: file });
      const events: HealthEventInput[] = [];
      const sampler = new TelemetrySampler({ backend: sel.backend, config: { intervalMs: 100 }, onEvents: (e) => void events.push(...e) });
      sampler.start();
      const deadline = Date.now() + 30_000;
      while (!events.some((e) => e.fault === 'clear') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await sampler.stop();
      await sel.backend.close();
      expect(brief(events)).toEqual(['raise:gpu0/thermal:critical', 'clear:gpu0/thermal:info']);
      expect(events[0]!.metrics.temperature).toBe('97');
      expect(events[0]!.gpuUuid).toBe(sel.backend.devices()[0]!.uuid);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
