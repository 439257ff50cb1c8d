// dcgm-exporter's default fields that NVML provides, through the snapshot lanes over the fake
// libnvidia-ml: memory temperature (field 82), total energy, encoder/decoder utilization, PCIe
// TX/RX throughput and NVLink data TX/RX over all links (fields 138/139). NOT_SUPPORTED or a
// missing entry point gives null (the metric is then absent), never 0 or an error.
import { describe, expect, it } from 'vitest';
import { defaultDevices } from '../helpers/fake-nvml.js';
import { openNvml, type DeviceSnapshot, type Telemetry } from '../../src/nvml/index.js';
import { skipReason, until, useFake, useSession } from './util.js';

const KEYS = [
  'memoryTemperatureC',
  'totalEnergyMj',
  'encoderUtilPercent',
  'decoderUtilPercent',
  'pcieTxKBps',
  'pcieRxKBps',
  'nvlinkDataTxKiB',
  'nvlinkDataRxKiB',
] as const;

function fields(s: DeviceSnapshot | undefined): Pick<Telemetry, (typeof KEYS)[number]> {
  if (!s?.ok) throw new Error(`snapshot failed: ${JSON.stringify(s)}`);
  return Object.fromEntries(KEYS.map((k) => [k, s.telemetry[k]])) as Pick<Telemetry, (typeof KEYS)[number]>;
}

describe.skipIf(skipReason !== null)('NVML addon: dcgm-exporter default fields', () => {
  const ctx = useSession();

  it('reads each field in its unit (energy beyond 32 bits); set changes it in the next snapshot', async () => {
    const devs = defaultDevices(2);
    Object.assign(devs[0]!.telemetry!, {
      memoryTempC: 57,
      totalEnergyMj: 123_456_789_012,
      encoderUtil: 12,
      decoderUtil: 34,
      pcieTxKBps: 250_000,
      pcieRxKBps: 1_250_000,
      nvlinkDataTxKiB: 9_876_543_210,
      nvlinkDataRxKiB: 8_765_432_109,
    });
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const snap = await ctx.nvml.snapshot();
    expect(fields(snap[0])).toEqual({
      memoryTemperatureC: 57,
      totalEnergyMj: 123_456_789_012,
      encoderUtilPercent: 12,
      decoderUtilPercent: 34,
      pcieTxKBps: 250_000,
      pcieRxKBps: 1_250_000,
      nvlinkDataTxKiB: 9_876_543_210,
      nvlinkDataRxKiB: 8_765_432_109,
    });
    // GPU 1 keeps the fake's defaults.
    expect(fields(snap[1])).toEqual({
      memoryTemperatureC: 40,
      totalEnergyMj: 0,
      encoderUtilPercent: 0,
      decoderUtilPercent: 0,
      pcieTxKBps: 0,
      pcieRxKBps: 0,
      nvlinkDataTxKiB: 0,
      nvlinkDataRxKiB: 0,
    });
    await ctx.fake.set(1, 'memoryTempC', 91);
    await ctx.fake.set(1, 'totalEnergyMj', 5_000_000);
    await ctx.fake.set(1, 'nvlinkDataRxKiB', 42);
    const again = fields((await ctx.nvml.snapshot())[1]);
    expect([again.memoryTemperatureC, again.totalEnergyMj, again.nvlinkDataRxKiB]).toEqual([91, 5_000_000, 42]);
  });

  it('NOT_SUPPORTED per field -> null, the others and the rest of the snapshot intact', async () => {
    const devs = defaultDevices(3);
    devs[0]!.telemetry = { ...devs[0]!.telemetry, memoryTempC: 50, encoderUtil: 7 };
    devs[0]!.unsupported = ['memoryTempC', 'totalEnergyMj', 'decoderUtil', 'pcieRxKBps', 'nvlinkDataTxKiB'];
    devs[1]!.telemetry = { ...devs[1]!.telemetry, nvlinkCount: 0 }; // a PCIe card without NVLink
    devs[2]!.unsupported = ['pcie']; // every PCIe getter, throughput included
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const snap = await ctx.nvml.snapshot();
    expect(fields(snap[0])).toEqual({
      memoryTemperatureC: null,
      totalEnergyMj: null,
      encoderUtilPercent: 7,
      decoderUtilPercent: null,
      pcieTxKBps: 0,
      pcieRxKBps: null,
      nvlinkDataTxKiB: null,
      nvlinkDataRxKiB: 0,
    });
    const s0 = snap[0]!;
    expect(s0.ok && s0.telemetry.temperatureC).toBe(33);
    const f1 = fields(snap[1]);
    expect([f1.nvlinkDataTxKiB, f1.nvlinkDataRxKiB, f1.memoryTemperatureC]).toEqual([null, null, 40]);
    const s1 = snap[1]!;
    expect(s1.ok && s1.telemetry.nvlinks).toBeNull();
    const f2 = fields(snap[2]);
    expect([f2.pcieTxKBps, f2.pcieRxKBps, f2.totalEnergyMj]).toEqual([null, null, 0]);
    // Toggled at run time.
    await ctx.fake.inject({ op: 'unsupported', device: 0, field: 'memoryTempC', value: false });
    expect(fields((await ctx.nvml.snapshot())[0]).memoryTemperatureC).toBe(50);
  });

  it('a driver without these entry points: all null, the rest of the snapshot intact', async () => {
    ctx.fake = useFake({
      devices: defaultDevices(1),
      missingSymbols: [
        'nvmlDeviceGetTotalEnergyConsumption',
        'nvmlDeviceGetEncoderUtilization',
        'nvmlDeviceGetDecoderUtilization',
        'nvmlDeviceGetPcieThroughput',
        'nvmlDeviceGetFieldValues',
      ],
    });
    ctx.nvml = await openNvml();
    const s = (await ctx.nvml.snapshot())[0]!;
    expect(Object.values(fields(s))).toEqual(KEYS.map(() => null));
    expect(s.ok && s.telemetry.temperatureC).toBe(33);
    expect(s.ok && s.telemetry.pcieReplayCounter).toBe(0);
  });

  it('runs on the device lane under the snapshot deadline: a hung GetFieldValues times out that GPU only', async () => {
    ctx.fake = useFake({ devices: defaultDevices(2) });
    ctx.nvml = await openNvml();
    await ctx.nvml.devices();
    await ctx.fake.inject({ op: 'hang', device: 1, function: 'nvmlDeviceGetFieldValues', ms: 8000 });
    const snap = await ctx.nvml.snapshot({ timeoutMs: 500 });
    expect(fields(snap[0]).memoryTemperatureC).toBe(40);
    const s1 = snap[1]!;
    expect(!s1.ok && s1.error).toMatchObject({ code: 'NVML_CALL_TIMEOUT', fn: 'nvmlDeviceGetFieldValues' });
    await ctx.fake.recover(1);
    await until(() => ctx.nvml!.suspectDevices().length === 0, 'device 1 no longer suspect');
    expect(fields((await ctx.nvml.snapshot())[1]).memoryTemperatureC).toBe(40);
  });
});
