// GPU fabric info (nvmlDeviceGetGpuFabricInfoV) through the snapshot lanes over the fake
// libnvidia-ml: v3 where the driver has it, v2 on drivers before 580, null where unsupported or
// the symbol is missing; run-time changes show up in the next snapshot.
import { describe, expect, it } from 'vitest';
import { defaultDevices } from '../helpers/fake-nvml.js';
import { openNvml, type DeviceSnapshot } from '../../src/nvml/index.js';
import { judgeSnapshot, telemetryConfig } from '../../src/sources/telemetry.js';
import { skipReason, useFake, useSession } from './util.js';

function fabricOf(s: DeviceSnapshot | undefined) {
  if (!s?.ok) throw new Error(`snapshot failed: ${JSON.stringify(s)}`);
  return s.telemetry.fabric;
}

describe.skipIf(skipReason !== null)('NVML addon: GPU fabric info', () => {
  const ctx = useSession();

  it('v3 with health summary; v2 (driver < 580) without; unsupported -> null; set changes it live', async () => {
    const devs = defaultDevices(3);
    devs[0]!.telemetry = {
      ...devs[0]!.telemetry,
      fabricInfoVersion: 3,
      fabricState: 3,
      fabricCliqueId: 7,
      fabricHealthMask: 0x1 | (0x2 << 4),
      fabricHealthSummary: 3,
    };
    devs[1]!.telemetry = { ...devs[1]!.telemetry, fabricInfoVersion: 2, fabricState: 2, fabricStatus: 0, fabricHealthMask: 0x2 };
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const snap = await ctx.nvml.snapshot();
    expect(fabricOf(snap[0])).toEqual({
      version: 3,
      state: 3,
      status: 0,
      cliqueId: 7,
      clusterUuid: 'c0c1c2c3c4c5c6c7c8c9cacbcccdcecf',
      healthMask: 0x21,
      healthSummary: 3,
    });
    expect(fabricOf(snap[1])).toEqual({
      version: 2,
      state: 2,
      status: 0,
      cliqueId: 0,
      clusterUuid: 'c0c1c2c3c4c5c6c7c8c9cacbcccdcecf',
      healthMask: 2,
      healthSummary: null,
    });
    expect(fabricOf(snap[2])).toBeNull();
    await ctx.fake.set(0, 'fabricStatus', 999);
    await ctx.fake.set(0, 'fabricHealthSummary', 2);
    const again = fabricOf((await ctx.nvml.snapshot())[0])!;
    expect([again.status, again.healthSummary]).toEqual([999, 2]);
  });

  it('a driver without nvmlDeviceGetGpuFabricInfoV: fabric null, the rest of the snapshot intact', async () => {
    const devs = defaultDevices(1);
    devs[0]!.telemetry = { ...devs[0]!.telemetry, fabricInfoVersion: 3 };
    ctx.fake = useFake({ devices: devs, missingSymbols: ['nvmlDeviceGetGpuFabricInfoV'] });
    ctx.nvml = await openNvml();
    const s = (await ctx.nvml.snapshot())[0]!;
    expect(fabricOf(s)).toBeNull();
    expect(s.ok && s.telemetry.temperatureC).toBe(33);
  });

  it('scripted fabric fields become fabric events on the right GPU through the telemetry judge', async () => {
    const devs = defaultDevices(4);
    devs[1]!.telemetry = { ...devs[1]!.telemetry, fabricInfoVersion: 3, fabricHealthSummary: 2 };
    devs[2]!.telemetry = { ...devs[2]!.telemetry, fabricInfoVersion: 2, fabricState: 1 };
    devs[3]!.telemetry = { ...devs[3]!.telemetry, fabricInfoVersion: 3 };
    ctx.fake = useFake({ devices: devs });
    ctx.nvml = await openNvml();
    const cfg = telemetryConfig({ bootTimeMs: Date.now() - 3_600_000 }); // up an hour: past the 5 min grace
    const first = judgeSnapshot(null, await ctx.nvml.snapshot(), cfg);
    const raised = (evs: typeof first.events) => evs.filter((e) => e.key.includes('/fabric/')).map((e) => `${e.fault}:${e.key}:${e.gpuIndex}:${e.severity}`);
    expect(raised(first.events)).toEqual(['raise:gpu1/fabric/health:1:critical', 'raise:gpu2/fabric/state:2:critical']);
    const uuids = (await ctx.nvml.devices()).map((d) => d.uuid);
    for (const e of first.events.filter((x) => x.key.includes('/fabric/'))) expect(e.gpuUuid).toBe(uuids[e.gpuIndex]);
    await ctx.fake.set(3, 'fabricHealthMask', 1 << 2); // route recovery in progress
    const second = judgeSnapshot(first.state, await ctx.nvml.snapshot(), cfg);
    expect(raised(second.events)).toEqual(['raise:gpu3/fabric/route_recovery:3:warning']);
    expect(second.events.find((e) => e.gpuIndex === 3)?.metrics).toMatchObject({ fabric_route_recovery: 'in_progress', fabric_health_mask: '4' });
  });
});
