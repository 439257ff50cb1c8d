// Inventory, system info and telemetry snapshot values against the fake libnvidia-ml.
import { describe, expect, it } from 'vitest';
import { defaultDevices, FAKE_NVML_LIB } from '../helpers/fake-nvml.js';
import { openNvml } from '../../src/nvml/index.js';
import { skipReason, useFake, useSession } from './util.js';

describe.skipIf(skipReason !== null)('NVML addon: inventory and snapshot', () => {
  const ctx = useSession();

  it('reports system versions and decodes the CUDA driver version', async () => {
    ctx.fake = useFake({ driverVersion: '550.163.01', nvmlVersion: '12.550.163.01', cudaDriverVersion: 12040, devices: defaultDevices(2) });
    ctx.nvml = await openNvml();
    expect(ctx.nvml.libraryPath).toBe(FAKE_NVML_LIB);
    expect(await ctx.nvml.system()).toEqual({ driverVersion: '550.163.01', nvmlVersion: '12.550.163.01', cudaDriverVersion: '12.4' });
  });

  it('lists every device with identity, PCI ids in both forms, minor number and memory', async () => {
    const devs = defaultDevices(3);
    devs[2]!.pci = { domain: 0x1, bus: 0xab, device: 0x1f, pciDeviceId: 0x233010de, pciSubSystemId: 0x16c110de };
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const inv = await ctx.nvml.devices();
    expect(inv).toHaveLength(3);
    for (const [i, d] of inv.entries()) {
      expect(d.index).toBe(i);
      expect(d.uuid).toBe(devs[i]!.uuid);
      expect(d.name).toBe('NVIDIA H100 80GB HBM3');
      expect(d.serial).toBe(devs[i]!.serial);
      expect(d.minorNumber).toBe(i);
      expect(d.memoryTotalBytes).toBe(85520809984);
      expect(d.error).toBeNull();
    }
    expect(inv[0]!.pciBusId).toBe('00000000:18:00.0');
    expect(inv[0]!.pciBusIdShort).toBe('0000:18:00');
    expect(inv[2]!.pciBusId).toBe('00000001:AB:1F.0');
    expect(inv[2]!.pciBusIdShort).toBe('0001:ab:1f');
  });

  it('snapshot converts units and matches the configured telemetry', async () => {
    const devs = defaultDevices(2);
    Object.assign(devs[1]!.telemetry!, {
      temperatureC: 71,
      powerUsageMw: 412345,
      powerLimitMw: 700000,
      gpuUtil: 93,
      memUtil: 41,
      memoryUsed: 1234567890,
      smClockMhz: 1980,
      memClockMhz: 2619,
      clockEventReasons: 0x44,
      pstate: 2,
      fanSpeed: 55,
      persistenceMode: 0,
      eccCurrent: 1,
      eccPending: 0,
      eccVolatileCorrected: 3,
      eccVolatileUncorrected: 1,
      eccAggregateCorrected: 30,
      eccAggregateUncorrected: 2,
      retiredPagesSbe: 4,
      retiredPagesDbe: 1,
      retiredPagesPending: 1,
      remappedCorrected: 5,
      remappedUncorrected: 2,
      remappedPending: 1,
      remappedFailure: 0,
      pcieReplay: 17,
      pcieGenCurrent: 4,
      pcieGenMax: 5,
      pcieWidthCurrent: 8,
      pcieWidthMax: 16,
      nvlinkCount: 4,
      nvlinkDown: [2],
      nvlinkReplay: 6,
      nvlinkRecovery: 7,
      nvlinkCrcFlit: 8,
      nvlinkCrcData: 9,
    });
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const snap = await ctx.nvml.snapshot();
    expect(snap).toHaveLength(2);
    const s = snap[1]!;
    expect(s.ok).toBe(true);
    if (!s.ok) return;
    expect(s.index).toBe(1);
    expect(s.uuid).toBe(devs[1]!.uuid);
    expect(Math.abs(s.takenAtMs - Date.now())).toBeLessThan(60_000);
    expect(s.telemetry).toEqual({
      temperatureC: 71,
      powerUsageW: 412.345,
      powerLimitW: 700,
      gpuUtilPercent: 93,
      memUtilPercent: 41,
      memoryUsedBytes: 1234567890,
      memoryTotalBytes: 85520809984,
      smClockMhz: 1980,
      memClockMhz: 2619,
      clockEventReasons: 0x44,
      performanceState: 2,
      fanSpeedPercent: 55,
      persistenceMode: false,
      eccModeCurrent: true,
      eccModePending: false,
      eccVolatileCorrected: 3,
      eccVolatileUncorrected: 1,
      eccAggregateCorrected: 30,
      eccAggregateUncorrected: 2,
      retiredPagesSbe: 4,
      retiredPagesDbe: 1,
      retiredPagesPending: true,
      remappedRowsCorrected: 5,
      remappedRowsUncorrected: 2,
      remappedRowsPending: true,
      remappedRowsFailure: false,
      pcieReplayCounter: 17,
      pcieLinkGenCurrent: 4,
      pcieLinkGenMax: 5,
      pcieLinkWidthCurrent: 8,
      pcieLinkWidthMax: 16,
      nvlinks: [0, 1, 2, 3].map((link) => ({
        link,
        active: link !== 2,
        replayErrors: 6,
        recoveryErrors: 7,
        crcFlitErrors: 8,
        crcDataErrors: 9,
      })),
      fabric: null, // fabricInfoVersion 0: NOT_SUPPORTED (test/native/fabric.test.ts covers the rest)
      // the fake's defaults (test/native/dcgm-fields.test.ts covers these fields)
      memoryTemperatureC: 40,
      totalEnergyMj: 0,
      encoderUtilPercent: 0,
      decoderUtilPercent: 0,
      pcieTxKBps: 0,
      pcieRxKBps: 0,
      nvlinkDataTxKiB: 0,
      nvlinkDataRxKiB: 0,
    });
    const s0 = snap[0]!;
    expect(s0.ok && s0.telemetry.temperatureC).toBe(33);
    expect(s0.ok && s0.telemetry.nvlinks?.length).toBe(18);
  });

  it('unsupported getters are null, never an error', async () => {
    const devs = defaultDevices(1);
    devs[0]!.unsupported = ['fanSpeed', 'serial', 'minorNumber', 'nvlink', 'ecc', 'retiredPages', 'remappedRows', 'pcie', 'clockEventReasons', 'pstate'];
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const [d] = await ctx.nvml.devices();
    expect(d!.serial).toBeNull();
    expect(d!.minorNumber).toBeNull();
    expect(d!.error).toBeNull();
    const [s] = await ctx.nvml.snapshot();
    expect(s!.ok).toBe(true);
    if (!s!.ok) return;
    const t = s!.telemetry;
    for (const k of [
      'fanSpeedPercent',
      'eccModeCurrent',
      'eccModePending',
      'eccVolatileCorrected',
      'eccAggregateUncorrected',
      'retiredPagesSbe',
      'retiredPagesDbe',
      'retiredPagesPending',
      'remappedRowsCorrected',
      'remappedRowsFailure',
      'pcieReplayCounter',
      'pcieLinkGenCurrent',
      'pcieLinkWidthMax',
      'clockEventReasons',
      'performanceState',
      'nvlinks',
    ] as const) {
      expect(t[k], k).toBeNull();
    }
    expect(t.temperatureC).toBe(33);
  });

  it('an absent optional entry point gives null or the throttle-reasons fallback', async () => {
    const devs = defaultDevices(1);
    devs[0]!.telemetry!.clockEventReasons = 0x24;
    ctx.fake = useFake({
      devices: devs,
      missingSymbols: [
        'nvmlDeviceGetCurrentClocksEventReasons',
        'nvmlDeviceGetFanSpeed',
        'nvmlSystemGetCudaDriverVersion_v2',
        'nvmlSystemGetCudaDriverVersion',
      ],
    });
    ctx.nvml = await openNvml();
    const [s] = await ctx.nvml.snapshot();
    expect(s!.ok).toBe(true);
    if (!s!.ok) return;
    expect(s!.telemetry.clockEventReasons).toBe(0x24); // via nvmlDeviceGetCurrentClocksThrottleReasons
    expect(s!.telemetry.fanSpeedPercent).toBeNull();
    expect((await ctx.nvml.system()).cudaDriverVersion).toBeNull();
    await ctx.nvml.close();
    ctx.fake.update({ devices: devs, missingSymbols: ['nvmlDeviceGetCurrentClocksEventReasons', 'nvmlDeviceGetCurrentClocksThrottleReasons'] });
    ctx.nvml = await openNvml();
    const [s2] = await ctx.nvml.snapshot();
    expect(s2!.ok && s2!.telemetry.clockEventReasons).toBeNull();
  });

  it('the device count is re-read by devices()', async () => {
    ctx.fake = useFake({ devices: defaultDevices(2) });
    ctx.nvml = await openNvml();
    expect(await ctx.nvml.devices()).toHaveLength(2);
    expect(await ctx.nvml.snapshot()).toHaveLength(2);
  });
});
