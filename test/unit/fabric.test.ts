/**
 * The fabric judge (src/sources/fabric.ts) through the telemetry judge: registration state after
 * the boot grace, a failed probe status, the health summary, every health-mask field, hysteresis on
 * the way back, NOT_SUPPORTED = no check; and the fake backend producing each of them.
 */
import { describe, expect, it } from 'vitest';
import { FakeBackend } from '../../src/backends/fake.js';
import { parseScenario } from '../../src/backends/scenario.js';
import { parseFakeFault } from '../../src/api/inject.js';
import type { HealthEventInput } from '../../src/events/types.js';
import type { DeviceSnapshot, GpuFabricInfo, Telemetry } from '../../src/nvml/types.js';
import { decodeHealthMask, judgeFabric, nvmlReturnName } from '../../src/sources/fabric.js';
import { judgeSnapshot, telemetryConfig, type JudgeState } from '../../src/sources/telemetry.js';

const BOOT = 1_700_000_000_000;
const MIN = 60_000;

const healthy: GpuFabricInfo = { version: 3, state: 3, status: 0, cliqueId: 4, clusterUuid: 'ab'.repeat(16), healthMask: 0, healthSummary: 1 };

/** Telemetry with nothing but fabric info: every other rule sees nulls and stays silent. */
function tel(fabric: GpuFabricInfo | null): Telemetry {
  const base = {
    temperatureC: null,
    powerUsageW: null,
    powerLimitW: null,
    gpuUtilPercent: null,
    memUtilPercent: null,
    memoryUsedBytes: null,
    memoryTotalBytes: null,
    smClockMhz: null,
    memClockMhz: null,
    clockEventReasons: null,
    performanceState: null,
    fanSpeedPercent: null,
    persistenceMode: null,
    eccModeCurrent: null,
    eccModePending: null,
    eccVolatileCorrected: null,
    eccVolatileUncorrected: null,
    eccAggregateCorrected: null,
    eccAggregateUncorrected: null,
    retiredPagesSbe: null,
    retiredPagesDbe: null,
    retiredPagesPending: null,
    remappedRowsCorrected: null,
    remappedRowsUncorrected: null,
    remappedRowsPending: null,
    remappedRowsFailure: null,
    pcieReplayCounter: null,
    pcieLinkGenCurrent: null,
    pcieLinkGenMax: null,
    pcieLinkWidthCurrent: null,
    pcieLinkWidthMax: null,
    nvlinks: null,
  };
  return { ...base, fabric } as Telemetry;
}

const cfg = telemetryConfig({ bootTimeMs: BOOT, fabricBootGraceMs: 5 * MIN });

/** Drive GPU 2 through fabric readings at the given minutes after boot. */
function run(steps: Array<[number, GpuFabricInfo | null]>): HealthEventInput[][] {
  let state: JudgeState | null = null;
  return steps.map(([min, fabric]) => {
    const snap: DeviceSnapshot = { index: 2, uuid: 'GPU-2', ok: true, telemetry: tel(fabric), takenAtMs: BOOT + min * MIN };
    const r = judgeSnapshot(state, [snap], cfg);
    state = r.state;
    return r.events;
  });
}
const brief = (evs: HealthEventInput[]): string[] => evs.map((e) => `${e.fault}:${e.key}:${e.severity}`);

describe('fabric judge', () => {
  it('a healthy completed fabric raises nothing; unsupported (null, state 0) is no check', () => {
    expect(
      run([
        [1, healthy],
        [2, healthy],
        [10, null],
        [11, { ...healthy, state: 0, healthSummary: 2 }],
      ]).flat(),
    ).toEqual([]);
  });

  it('registration not completed: nothing inside the boot grace, critical after it, clears after 3 good samples', () => {
    const inProgress = { ...healthy, state: 2, healthSummary: 2 };
    const ev = run([
      [1, inProgress],
      [4.9, inProgress],
      [5, inProgress],
      [6, inProgress],
      [7, healthy],
      [8, healthy],
      [9, healthy],
    ]);
    expect(ev[0]).toEqual([]);
    expect(ev[1]).toEqual([]); // the unhealthy summary of an unfinished registration is not judged either
    expect(brief(ev[2]!)).toEqual(['raise:gpu2/fabric/state:critical', 'raise:gpu2/fabric/health:critical']);
    expect(ev[2]![0]).toMatchObject({
      gpuIndex: 2,
      gpuUuid: 'GPU-2',
      type: 'nvlink',
      system: 'NVSWITCH',
      action: 'reboot',
      source: 'telemetry',
      metrics: { fabric_state: '2', fabric_state_name: 'in_progress', uptime_seconds: '300', boot_grace_seconds: '300' },
    });
    expect(ev[3]).toEqual([]);
    expect(ev[4]).toEqual([]);
    expect(ev[5]).toEqual([]);
    expect(brief(ev[6]!)).toEqual(['clear:gpu2/fabric/state:info', 'clear:gpu2/fabric/health:info']);
  });

  it('without a known boot time the grace counts from the first sample', () => {
    let state: JudgeState | null = null;
    const c = telemetryConfig({ fabricBootGraceMs: 5 * MIN });
    const at = (min: number) => {
      const r = judgeSnapshot(state, [{ index: 0, uuid: 'GPU-0', ok: true, telemetry: tel({ ...healthy, state: 1 }), takenAtMs: BOOT + min * MIN }], c);
      state = r.state;
      return brief(r.events);
    };
    expect(at(100)).toEqual([]);
    expect(at(104)).toEqual([]);
    expect(at(105)).toEqual(['raise:gpu0/fabric/state:critical']);
  });

  it('a failed probe status of a completed registration is critical with the nvmlReturn name', () => {
    const ev = run([
      [10, { ...healthy, status: 27 }],
      [11, { ...healthy, status: 27 }],
    ]);
    expect(brief(ev[0]!)).toEqual(['raise:gpu2/fabric/status:critical']);
    expect(ev[0]![0]).toMatchObject({ action: 'reboot', metrics: { fabric_status: '27', fabric_status_name: 'NVML_ERROR_NOT_READY' } });
    expect(ev[0]![0]!.message).toContain('NVML_ERROR_NOT_READY');
    expect(ev[1]).toEqual([]);
    expect(nvmlReturnName(12345)).toBe('unknown code 12345');
  });

  it('health summary: UNHEALTHY critical, LIMITED_CAPACITY warning, severity change re-raises', () => {
    const ev = run([
      [10, { ...healthy, healthSummary: 3 }],
      [11, { ...healthy, healthSummary: 2 }],
      [12, { ...healthy, healthSummary: 2 }],
    ]);
    expect(brief(ev[0]!)).toEqual(['raise:gpu2/fabric/health:warning']);
    expect(ev[0]![0]).toMatchObject({ action: 'none', metrics: { fabric_health_summary: '3', fabric_health_summary_name: 'limited_capacity' } });
    expect(brief(ev[1]!)).toEqual(['raise:gpu2/fabric/health:critical']);
    expect(ev[1]![0]!.action).toBe('reboot');
    expect(ev[2]).toEqual([]);
  });

  it('a v2 answer (no summary) is judged by its mask alone', () => {
    const ev = run([[10, { ...healthy, version: 2, healthSummary: null, healthMask: 1 << 4 }]]);
    expect(brief(ev[0]!)).toEqual(['raise:gpu2/fabric/route_unhealthy:critical']);
    expect(ev[0]![0]!.metrics).not.toHaveProperty('fabric_health_summary');
  });

  it.each([
    ['degraded_bandwidth', 1, 'warning', 'none'],
    ['route_recovery', 1 << 2, 'warning', 'none'],
    ['route_unhealthy', 1 << 4, 'critical', 'reboot'],
    ['access_timeout_recovery', 1 << 6, 'warning', 'none'],
    ['incorrect_configuration', 5 << 8, 'critical', 'replace'],
  ] as const)('health mask %s raises %s and clears', (name, mask, severity, action) => {
    const ev = run([
      [10, { ...healthy, healthMask: mask }],
      [11, healthy],
      [12, healthy],
      [13, healthy],
    ]);
    expect(brief(ev[0]!)).toEqual([`raise:gpu2/fabric/${name}:${severity}`]);
    expect(ev[0]![0]!.action).toBe(action);
    expect(ev[0]![0]!.metrics[`fabric_${name}`]).not.toBe('not_supported');
    expect(ev[1]).toEqual([]);
    expect(brief(ev[3]!)).toEqual([`clear:gpu2/fabric/${name}:info`]);
  });

  it('the "healthy" values of each field and a partition not assigned raise nothing', () => {
    // 2 = not degraded / not in progress / healthy, 1 = configuration correct, 2 = partition not assigned.
    const mask = 2 | (2 << 2) | (2 << 4) | (2 << 6) | (1 << 8) | (2 << 12);
    expect(run([[10, { ...healthy, healthMask: mask }]]).flat()).toEqual([]);
    expect(decodeHealthMask(mask)).toEqual({
      degraded_bandwidth: { value: 2, meaning: 'not_degraded' },
      route_recovery: { value: 2, meaning: 'not_in_progress' },
      route_unhealthy: { value: 2, meaning: 'healthy' },
      access_timeout_recovery: { value: 2, meaning: 'not_in_progress' },
      incorrect_configuration: { value: 1, meaning: 'none' },
      partition_assigned: { value: 2, meaning: 'not_assigned' },
    });
    expect(decodeHealthMask(0xf << 8).incorrect_configuration).toEqual({ value: 15, meaning: 'unknown_15' });
  });

  it('an active fault clears when the GPU stops reporting fabric info', () => {
    const bad = { ...healthy, healthSummary: 2 };
    const ev = run([
      [10, bad],
      [11, null],
      [12, null],
      [13, null],
    ]);
    expect(brief(ev[0]!)).toEqual(['raise:gpu2/fabric/health:critical']);
    expect(brief(ev[3]!)).toEqual(['clear:gpu2/fabric/health:info']);
    expect(ev[3]![0]!.message).toContain('no longer reported');
  });

  it('judgeFabric returns nothing to judge inside the grace', () => {
    expect(judgeFabric(0, { ...healthy, state: 1 }, 60_000, 300_000)).toEqual([]);
  });
});

describe('fabric faults in the fake backend', () => {
  it('inject sets fabric fields on one GPU; recover returns it to healthy', async () => {
    const b = new FakeBackend({ count: 2 });
    await b.open();
    expect((await b.snapshot()).map((s) => s.ok && s.telemetry.fabric)).toEqual([null, null]);
    b.inject({ kind: 'fabric', gpu: 1, healthSummary: 2, healthMask: 1 });
    const [s0, s1] = await b.snapshot();
    expect(s0!.ok && s0!.telemetry.fabric).toBeNull();
    expect(s1!.ok && s1!.telemetry.fabric).toMatchObject({ version: 3, state: 3, status: 0, healthSummary: 2, healthMask: 1 });
    b.inject({ kind: 'fabric', gpu: 1, state: 2 });
    const again = (await b.snapshot())[1]!;
    expect(again.ok && again.telemetry.fabric).toMatchObject({ state: 2, healthSummary: 2 });
    b.inject({ kind: 'recover', gpu: 1 });
    const rec = (await b.snapshot())[1]!;
    expect(rec.ok && rec.telemetry.fabric).toMatchObject({ state: 3, status: 0, healthMask: 0, healthSummary: 1 });
    expect(() => b.inject({ kind: 'fabric', gpu: 0, status: -1 })).toThrow(/bad status/);
    await b.close();
  });

  it('scenario files and /inject bodies accept the fabric fault', () => {
    const sc = parseScenario('events:\n  - { at: 1s, gpu: 0, fault: fabric, healthMask: "0x10", healthSummary: 2 }\n', 's.yaml');
    expect(sc.events[0]!.fault).toEqual({ kind: 'fabric', gpu: 0, healthMask: 0x10, healthSummary: 2 });
    expect(() => parseScenario('events:\n  - { at: 1s, gpu: 0, fault: fabric, colour: 2 }\n', 's.yaml')).toThrow(/colour: not a field of fault "fabric"/);
    expect(parseFakeFault({ kind: 'fabric', gpu: 3, status: 27 })).toEqual({ kind: 'fabric', gpu: 3, status: 27 });
    expect(() => parseFakeFault({ kind: 'fabric', gpu: 3 })).toThrow(/needs "state", "status", "healthMask" and\/or "healthSummary"/);
  });
});
