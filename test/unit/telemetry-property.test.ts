/**
 * Property tests of the telemetry judge over random telemetry sequences (fast-check):
 * raise/clear bookkeeping is consistent per key, metric values follow Navarch's encoding,
 * and all-null telemetry never raises a device condition.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { HealthEventInput } from '../../src/events/types.js';
import type { DeviceSnapshot, Telemetry } from '../../src/nvml/types.js';
import { judgeSnapshot, telemetryConfig, type JudgeState } from '../../src/sources/telemetry.js';

const nullable = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | null> => fc.option(a, { nil: null, freq: 4 });

const telemetryArb: fc.Arbitrary<Telemetry> = fc.record({
  temperatureC: nullable(fc.integer({ min: 20, max: 110 })),
  powerUsageW: nullable(fc.double({ min: 0, max: 1200, noNaN: true })),
  powerLimitW: nullable(fc.constantFrom(300, 700)),
  gpuUtilPercent: nullable(fc.integer({ min: 0, max: 100 })),
  memUtilPercent: nullable(fc.integer({ min: 0, max: 100 })),
  memoryUsedBytes: nullable(fc.integer({ min: 0, max: 2 ** 40 })),
  memoryTotalBytes: nullable(fc.constant(85520809984)),
  smClockMhz: nullable(fc.integer({ min: 0, max: 2000 })),
  memClockMhz: nullable(fc.integer({ min: 0, max: 3000 })),
  clockEventReasons: nullable(fc.integer({ min: 0, max: 0x7ff })),
  performanceState: nullable(fc.integer({ min: 0, max: 15 })),
  fanSpeedPercent: nullable(fc.integer({ min: 0, max: 100 })),
  persistenceMode: nullable(fc.boolean()),
  eccModeCurrent: nullable(fc.boolean()),
  eccModePending: nullable(fc.boolean()),
  eccVolatileCorrected: nullable(fc.integer({ min: 0, max: 5000 })),
  eccVolatileUncorrected: nullable(fc.integer({ min: 0, max: 3 })),
  eccAggregateCorrected: nullable(fc.integer({ min: 0, max: 5000 })),
  eccAggregateUncorrected: nullable(fc.integer({ min: 0, max: 3 })),
  retiredPagesSbe: nullable(fc.integer({ min: 0, max: 10 })),
  retiredPagesDbe: nullable(fc.integer({ min: 0, max: 10 })),
  retiredPagesPending: nullable(fc.boolean()),
  remappedRowsCorrected: nullable(fc.integer({ min: 0, max: 10 })),
  remappedRowsUncorrected: nullable(fc.integer({ min: 0, max: 10 })),
  remappedRowsPending: nullable(fc.boolean()),
  remappedRowsFailure: nullable(fc.boolean()),
  pcieReplayCounter: nullable(fc.integer({ min: 0, max: 500 })),
  pcieLinkGenCurrent: nullable(fc.integer({ min: 1, max: 5 })),
  pcieLinkGenMax: nullable(fc.constant(5)),
  pcieLinkWidthCurrent: nullable(fc.constantFrom(4, 8, 16)),
  pcieLinkWidthMax: nullable(fc.constant(16)),
  nvlinks: nullable(
    fc
      .array(
        fc.record({
          link: fc.integer({ min: 0, max: 3 }),
          active: fc.boolean(),
          replayErrors: nullable(fc.integer({ min: 0, max: 100 })),
          recoveryErrors: nullable(fc.integer({ min: 0, max: 100 })),
          crcFlitErrors: nullable(fc.integer({ min: 0, max: 100 })),
          crcDataErrors: nullable(fc.integer({ min: 0, max: 100 })),
        }),
        { maxLength: 4 },
      )
      .map((ls) => ls.filter((l, i) => ls.findIndex((x) => x.link === l.link) === i)),
  ),
});

const deviceArb = (index: number): fc.Arbitrary<DeviceSnapshot | null> =>
  fc.oneof(
    { weight: 8, arbitrary: telemetryArb.map((telemetry): DeviceSnapshot => ({ index, uuid: `GPU-${index}`, ok: true, telemetry, takenAtMs: 0 })) },
    {
      weight: 1,
      arbitrary: fc.constantFrom('NVML_ERROR_GPU_IS_LOST', 'NVML_CALL_TIMEOUT', 'NVML_ERROR_UNKNOWN').map((code): DeviceSnapshot => ({
        index,
        uuid: `GPU-${index}`,
        ok: false,
        error: { code: code as 'NVML_CALL_TIMEOUT', status: -1, fn: 'nvmlDeviceGetTemperature', message: code },
        takenAtMs: 0,
      })),
    },
    { weight: 1, arbitrary: fc.constant(null) }, // not listed in this sample
  );

const sampleArb = fc.tuple(deviceArb(0), deviceArb(1)).map((ds) => ds.filter((d): d is DeviceSnapshot => d !== null));

const METRIC_VALUE = /^(-?\d+|-?\d+\.\d{6}|true|false|[A-Za-z][A-Za-z0-9_]*|)$/;

describe('judgeSnapshot properties', () => {
  it('raise/clear bookkeeping is consistent per key and metrics follow Navarch encoding', () => {
    fc.assert(
      fc.property(
        fc.array(sampleArb, { minLength: 1, maxLength: 25 }),
        fc.integer({ min: 1, max: 4 }),
        fc.option(fc.integer({ min: 0, max: 3 }), { nil: null }),
        (samples, n, expected) => {
          const cfg = telemetryConfig({ clearAfterGoodSamples: n, expectedGpuCount: expected });
          let state: JudgeState | null = null;
          const active = new Map<string, HealthEventInput['severity']>();
          samples.forEach((snap, i) => {
            const timed = snap.map((s) => ({ ...s, takenAtMs: 1e12 + i * 10_000 }));
            const r = judgeSnapshot(state, timed, cfg, 1e12 + i * 10_000);
            for (const e of r.events) {
              expect(e.fault).not.toBe('none');
              if (e.fault === 'raise') {
                // A raise only on entering or on a severity change.
                expect(active.get(e.key)).not.toBe(e.severity);
                expect(e.severity).not.toBe('info');
                active.set(e.key, e.severity);
              } else {
                expect(active.has(e.key)).toBe(true);
                expect(e.severity).toBe('info');
                active.delete(e.key);
              }
              expect(e.source).toBe('telemetry');
              expect(e.gpuIndex === -1 ? e.key.startsWith('node/') : e.key.startsWith(`gpu${e.gpuIndex}/`)).toBe(true);
              for (const v of Object.values(e.metrics)) expect(v).toMatch(METRIC_VALUE);
              if (e.type === 'thermal' && e.fault === 'raise' && e.metrics.temperature !== undefined) expect(e.metrics.temperature).toMatch(/^\d+$/);
            }
            state = r.state;
            expect(new Set(Object.keys(r.state.conditions))).toEqual(new Set(active.keys()));
          });
        },
      ),
      { numRuns: 150 },
    );
  });

  it('all-null telemetry never raises a device condition', () => {
    const nulls = Object.fromEntries(Object.keys(fc.sample(telemetryArb, 1)[0]!).map((k) => [k, null])) as unknown as Telemetry;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), (count) => {
        let state: JudgeState | null = null;
        for (let i = 0; i < count; i++) {
          const r = judgeSnapshot(state, [{ index: 0, uuid: 'GPU-0', ok: true, telemetry: nulls, takenAtMs: 1e12 + i * 1000 }]);
          expect(r.events).toEqual([]);
          state = r.state;
        }
      }),
      { numRuns: 20 },
    );
  });
});
