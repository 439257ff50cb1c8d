/**
 * End to end over real paths: the native addon over the project's fake libnvidia-ml (XIDs
 * injected through the fake's control socket), a real NVRM line written into /dev/kmsg, and auto
 * mode on a (fake-sysfs) GPU host whose NVML fails -> no GPUs plus a critical driver_error.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { ensureFakeNvmlBuilt, FAKE_NVML_LIB, FakeNvml } from '../helpers/fake-nvml.js';
import { DIST_BUILT, MAIN_JS, REPO_ROOT, metricValue, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

const ADDON = join(REPO_ROOT, 'build', 'Release', 'navarch_nvml.node');
const FACADE = join(REPO_ROOT, 'dist', 'nvml', 'index.js');

function fakeLibAvailable(): boolean {
  try {
    ensureFakeNvmlBuilt();
  } catch (err) {
    console.warn(`fake libnvidia-ml could not be built: ${(err as Error).message}`);
  }
  return existsSync(FAKE_NVML_LIB);
}

const addonReady = DIST_BUILT && existsSync(ADDON) && existsSync(FACADE) && fakeLibAvailable();
if (!DIST_BUILT) console.warn(`skipping agent NVML e2e tests: ${MAIN_JS} is not built (npm run build)`);
else if (!addonReady) {
  console.warn(`skipping addon-over-fake-libnvidia-ml e2e tests: needs ${ADDON} (npm run build:addon), ${FACADE} and ${FAKE_NVML_LIB} (npm run build:fake)`);
}

describe('addon required', () => {
  it('is built when NAVARCH_REQUIRE_ADDON=1 (turns the addon skip below into a failure)', () => {
    if (process.env.NAVARCH_REQUIRE_ADDON !== '1' || !DIST_BUILT) return;
    expect(addonReady, `NAVARCH_REQUIRE_ADDON=1 but ${ADDON}, ${FACADE} or ${FAKE_NVML_LIB} is missing`).toBe(true);
  });
});

function kmsgWritable(): boolean {
  try {
    closeSync(openSync('/dev/kmsg', 'w'));
    return true;
  } catch {
    return false;
  }
}
const canWriteKmsg = DIST_BUILT && kmsgWritable();
if (DIST_BUILT && !canWriteKmsg) console.warn('skipping the /dev/kmsg e2e test: /dev/kmsg is not writable here (needs root)');

describe.skipIf(!addonReady)('agent on the NVML addon over the fake libnvidia-ml', () => {
  let fake: FakeNvml;
  let cp: DevControlPlane;
  let agent: AgentProcess;

  beforeAll(async () => {
    fake = FakeNvml.create({ driverVersion: '570.86.15', cudaDriverVersion: 12080 });
    cp = await startDevControlPlane();
    agent = await startAgent({
      args: ['--gpu-backend', 'nvml', '--server', cp.url, '--node-id', 'e2e-nvml', '--kmsg-path', 'none', '--telemetry-interval', '1s'],
      env: fake.env(),
    });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await cp?.close();
    fake?.cleanup();
  });

  it('opens NVML and lists the fake devices', async () => {
    const s = await agent.status();
    expect(s.backend.kind).toBe('nvml');
    expect(s.devices).toHaveLength(8);
    expect(s.devices[0]?.pciBusId).toMatch(/^00000000:18:00\.0$/);
    expect(s.system?.driverVersion).toBeTruthy();
    // /inject only exists with the fake backend.
    expect((await agent.inject({ kind: 'xid', gpu: 0, xid: 79 })).status).toBe(404);
  });

  it('an XID injected into the library reaches /status, /metrics and the control plane', async () => {
    await fake.xid(5, 79);
    const f = await waitFor('XID 79 fault on GPU 5', async () => (await agent.status()).activeFaults.find((x) => x.key === 'gpu5/xid/79'));
    expect(f).toMatchObject({ severity: 'critical', type: 'xid' });
    const m = await waitFor('xid counter', async () => {
      const t = await agent.metrics();
      return metricValue(t, 'navarch_agent_xid_total', 'gpu="5"', 'code="79"') !== null ? t : null;
    });
    expect(metricValue(m, 'navarch_agent_xid_total', 'gpu="5"', 'code="79"')).toBe(1);
    expect(metricValue(m, 'DCGM_FI_DEV_XID_ERRORS', 'gpu="5"')).toBe(79);
    await waitFor('event at the control plane', () => cp.events('e2e-nvml').some((e) => e.gpuIndex === 5 && e.metrics.xid_code === '79'));
  });

  it('telemetry changes in the library show up in /metrics', async () => {
    await fake.set(2, 'temperatureC', 91);
    await waitFor('temperature 91 on GPU 2', async () => metricValue(await agent.metrics(), 'DCGM_FI_DEV_GPU_TEMP', 'gpu="2"') === 91);
    await waitFor('thermal warning', async () => (await agent.status()).activeFaults.some((x) => x.gpuIndex === 2 && x.type === 'thermal'));
  });

  it("dcgm-exporter's default fields and the driver info come from the library; NOT_SUPPORTED drops the series", async () => {
    await fake.set(3, 'memoryTempC', 77);
    await fake.set(3, 'totalEnergyMj', 98_765_432_101);
    await fake.set(3, 'encoderUtil', 21);
    await fake.set(3, 'pcieRxKBps', 654_321);
    await fake.set(3, 'nvlinkDataTxKiB', 1000);
    await fake.set(3, 'nvlinkDataRxKiB', 234);
    await fake.inject({ op: 'unsupported', device: 4, field: 'memoryTempC', value: true });
    const m = await waitFor('new fields on GPU 3', async () => {
      const t = await agent.metrics();
      return metricValue(t, 'DCGM_FI_DEV_MEMORY_TEMP', 'gpu="3"') === 77 && metricValue(t, 'DCGM_FI_DEV_MEMORY_TEMP', 'gpu="4"') === null ? t : null;
    });
    expect(metricValue(m, 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION', 'gpu="3"')).toBe(98_765_432_101);
    expect(metricValue(m, 'DCGM_FI_DEV_ENC_UTIL', 'gpu="3"')).toBe(21);
    expect(metricValue(m, 'DCGM_FI_DEV_PCIE_RX_THROUGHPUT', 'gpu="3"')).toBe(654_321);
    expect(metricValue(m, 'DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL', 'gpu="3"')).toBe(1234);
    expect(metricValue(m, 'DCGM_FI_DEV_MEMORY_TEMP', 'gpu="5"')).toBe(40);
    expect(m).toContain('navarch_agent_driver_info{driver_version="570.86.15",cuda_version="12.8",nvml_version="12.550.163.01"} 1');
  });

  it('an XID storm is counted exactly and the API stays responsive', async () => {
    const before = (await fake.stats()).recorded;
    await fake.inject({ op: 'storm', device: 6, xid: 13, count: 100_000, distinct: 1 });
    // Everything the library recorded (it drops beyond its own queue bound, as a driver would)
    // is delivered, merged, and counted once per occurrence.
    const recorded = await waitFor(
      'storm drained',
      async () => {
        const st = await fake.stats();
        const w = (await agent.status()).watch;
        return st.queued === 0 && w && w.delivered >= st.recorded ? st.recorded - before : null;
      },
      60_000,
      250,
    );
    expect(recorded).toBeGreaterThan(1000);
    await waitFor('storm counted', async () => metricValue(await agent.metrics(), 'navarch_agent_xid_total', 'gpu="6"', 'code="13"') === recorded);
    expect((await agent.status()).watch?.dropped).toBe(0);
    expect((await fetch(`${agent.url}/healthz`)).status).toBe(200);
  });

  it('driver and CUDA versions reach RegisterNode GPUInfo and `devices` (table and --json)', async () => {
    const node = await waitFor('registered', () => cp.node('e2e-nvml'));
    expect(node.gpus).toHaveLength(8);
    for (const g of node.gpus) expect([g.driverVersion, g.cudaVersion]).toEqual(['570.86.15', '12.8']);
    const j = spawnSync(process.execPath, [MAIN_JS, 'devices', '--json', '--api', agent.url], { encoding: 'utf8', timeout: 30_000 });
    // The XID 13 storm above left a fault: exit 1 unless healthy (src/cli/status-view.ts).
    const doc = JSON.parse(j.stdout) as { system: unknown; health: string; devices: Array<{ driverVersion: string; cudaVersion: string }> };
    expect(j.status).toBe(doc.health === 'healthy' ? 0 : 1);
    for (const d of doc.devices) expect([d.driverVersion, d.cudaVersion]).toEqual(['570.86.15', '12.8']);
    expect(doc.system).toEqual({
      driverVersion: '570.86.15',
      nvmlVersion: '12.550.163.01',
      cudaDriverVersion: '12.8',
    });
    const t = spawnSync(process.execPath, [MAIN_JS, 'devices', '--api', agent.url], { encoding: 'utf8', timeout: 30_000 });
    expect(t.status).toBe(j.status);
    expect(t.stdout).toContain('driver: 570.86.15  CUDA: 12.8  NVML: 12.550.163.01\n');
  });

  it('a lost GPU shows no telemetry (status and the devices table), the others keep theirs', async () => {
    await fake.set(3, 'temperatureC', 55);
    await waitFor('GPU 3 at 55 C', async () => (await agent.status()).devices[3]?.telemetry?.temperatureC === 55);
    await fake.lose(3);
    const s = await waitFor('GPU 3 sample error', async () => {
      const st = await agent.status();
      return st.devices[3]?.sampleError?.code === 'NVML_ERROR_GPU_IS_LOST' ? st : null;
    });
    expect(s.devices[3]?.telemetry).toBeNull();
    expect(s.devices[2]?.telemetry).not.toBeNull();
    const t = spawnSync(process.execPath, [MAIN_JS, 'devices', '--api', agent.url], { encoding: 'utf8', timeout: 30_000 });
    expect(t.status).toBe(1); // a lost GPU: unhealthy (src/cli/status-view.ts judgeHealth)
    // Columns: GPU NAME UUID PCI MEMORY TEMP POWER UTIL HEALTH, two spaces apart.
    const cells = (gpu: number) =>
      t.stdout
        .split('\n')
        .find((l) => l.startsWith(`${gpu} `))!
        .split(/\s{2,}/);
    expect(cells(3).slice(5)).toEqual(['-', '-', '-', 'error: NVML_ERROR_GPU_IS_LOST']);
    expect(cells(2)[5]).toMatch(/^\d+C$/);
    await fake.recover(3);
    await waitFor('GPU 3 back', async () => (await agent.status()).devices[3]?.telemetry?.temperatureC === 55);
  });

  it('SIGTERM exits 0', async () => {
    expect(await agent.stop('SIGTERM')).toBe(0);
  });
});

describe.skipIf(!canWriteKmsg)('agent reading a real NVRM line from /dev/kmsg', () => {
  it('resolves the PCI id through the inventory and reports the XID', async () => {
    const useNvml = addonReady;
    const fake = useNvml ? FakeNvml.create() : null;
    const agent = await startAgent({
      args: ['--gpu-backend', useNvml ? 'nvml' : 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-kmsg', '--kmsg-path', '/dev/kmsg'],
      env: fake ? fake.env() : { NAVARCH_GPU_COUNT: '4' },
    });
    try {
      const s0 = await agent.status();
      await waitFor('kmsg running', async () => (await agent.status()).kmsg.state === 'running');
      const dev = s0.devices[1]!;
      const pid = 40_000 + Math.floor(Math.random() * 20_000);
      const line = `<3>NVRM: Xid (PCI:${dev.pciBusIdShort}): 79, pid=${pid}, name=e2e-test, GPU has fallen off the bus.\n`;
      const writtenAt = Date.now();
      const fd = openSync('/dev/kmsg', 'w');
      try {
        writeSync(fd, line);
      } finally {
        closeSync(fd);
      }
      const f = await waitFor(
        'XID 79 from the kernel log on GPU 1',
        // Our line, identified by its pid (or, if an older NVRM line for the same bus id was
        // replayed from the ring buffer and coalesced with it, by its time).
        async () =>
          (await agent.status()).activeFaults.find((x) => x.key === 'gpu1/xid/79' && (x.metrics.pid === String(pid) || x.lastSeenMs >= writtenAt - 2000)),
        30_000,
      );
      expect(f.gpuUuid).toBe(dev.uuid);
      await waitFor('last XID metric', async () => metricValue(await agent.metrics(), 'DCGM_FI_DEV_XID_ERRORS', 'gpu="1"') === 79);
      expect((await agent.status()).kmsg.xidsMatched).toBeGreaterThanOrEqual(1);
      expect(await agent.stop('SIGTERM')).toBe(0);
    } finally {
      await agent.stop('SIGKILL');
      fake?.cleanup();
    }
  });
});

describe.skipIf(!DIST_BUILT)('auto mode on a GPU host whose NVML fails', () => {
  it('reports no GPUs and a critical driver_error instead of fake GPUs', async () => {
    const root = tempDir('sysfs');
    const dev = join(root, 'sys/bus/pci/devices/0000:41:00.0');
    mkdirSync(dev, { recursive: true });
    writeFileSync(join(dev, 'vendor'), '0x10de\n');
    writeFileSync(join(dev, 'class'), '0x030200\n');
    // NVML fails for real: the fake library refuses nvmlInit (DRIVER_NOT_LOADED) when it is
    // available, else the library path does not exist.
    let env: Record<string, string> = { NAVARCH_SYSFS_ROOT: root, NAVARCH_NVML_LIBRARY: join(root, 'no-such-libnvidia-ml.so.1') };
    let fake: FakeNvml | null = null;
    if (addonReady) {
      fake = FakeNvml.create({ initError: 9 });
      env = { ...fake.env(), NAVARCH_SYSFS_ROOT: root };
    }
    const cp = await startDevControlPlane();
    const agent = await startAgent({ args: ['--gpu-backend', 'auto', '--server', cp.url, '--node-id', 'e2e-broken', '--kmsg-path', 'none'], env });
    try {
      const s = await agent.status();
      expect(s.backend.kind).toBe('none');
      expect(s.devices).toEqual([]);
      expect(s.backend.driverError).toMatch(/NVML failed/);
      const f = await waitFor('driver_error fault', async () => (await agent.status()).activeFaults.find((x) => x.key === 'node/driver_error'));
      expect(f).toMatchObject({ severity: 'critical', type: 'driver_error', gpuIndex: -1 });
      const m = await agent.metrics();
      expect(metricValue(m, 'navarch_agent_gpus')).toBe(0);
      expect(metricValue(m, 'navarch_agent_active_faults', 'gpu="-1"', 'type="driver_error"')).toBe(1);
      expect(agent.logs.some((l) => l.level >= 40 && /NOT falling back to fake GPUs/.test(l.msg))).toBe(true);
      // In Navarch's vocabulary a driver error without an XID goes out as an xid event (src/controlplane/vocabulary.ts).
      await waitFor('driver_error at the control plane', () =>
        cp
          .events('e2e-broken')
          .some((e) => e.eventType === 'xid' && e.metrics.agent_event_type === 'driver_error' && e.metrics.fault_key === 'node/driver_error'),
      );
      // The node-side boot check is UNHEALTHY, so the control plane marks the node unhealthy.
      await waitFor('node unhealthy', () => cp.node('e2e-broken')?.status === 'unhealthy');
      expect(await agent.stop('SIGTERM')).toBe(0);
    } finally {
      await agent.stop('SIGKILL');
      await cp.close();
      fake?.cleanup();
    }
  });
});
