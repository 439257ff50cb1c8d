// dcgm-exporter's default fields (etc/default-counters.csv) under its names and types, and the
// driver/CUDA version info metric, rendered by AgentMetrics from a status document.
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../src/api/metrics.js';
import type { AgentStatus, AgentView, DeviceStatus } from '../../src/api/types.js';
import type { Telemetry } from '../../src/nvml/types.js';

/**
 * The 21 fields dcgm-exporter enables by default and the Prometheus type it gives each
 * (NVIDIA/dcgm-exporter etc/default-counters.csv). VGPU_LICENSE_STATUS is a vGPU guest field
 * NVML has no bare-metal answer for; every other one the agent exports.
 */
const DCGM_DEFAULTS: Record<string, 'gauge' | 'counter'> = {
  DCGM_FI_DEV_SM_CLOCK: 'gauge',
  DCGM_FI_DEV_MEM_CLOCK: 'gauge',
  DCGM_FI_DEV_MEMORY_TEMP: 'gauge',
  DCGM_FI_DEV_GPU_TEMP: 'gauge',
  DCGM_FI_DEV_POWER_USAGE: 'gauge',
  DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION: 'counter',
  DCGM_FI_DEV_PCIE_TX_THROUGHPUT: 'counter',
  DCGM_FI_DEV_PCIE_RX_THROUGHPUT: 'counter',
  DCGM_FI_DEV_PCIE_REPLAY_COUNTER: 'counter',
  DCGM_FI_DEV_GPU_UTIL: 'gauge',
  DCGM_FI_DEV_MEM_COPY_UTIL: 'gauge',
  DCGM_FI_DEV_ENC_UTIL: 'gauge',
  DCGM_FI_DEV_DEC_UTIL: 'gauge',
  DCGM_FI_DEV_XID_ERRORS: 'gauge',
  DCGM_FI_DEV_FB_FREE: 'gauge',
  DCGM_FI_DEV_FB_USED: 'gauge',
  DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL: 'counter',
  DCGM_FI_DEV_VGPU_LICENSE_STATUS: 'gauge',
  DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS: 'counter',
  DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS: 'counter',
  DCGM_FI_DEV_ROW_REMAP_FAILURE: 'gauge',
};
const NOT_FROM_NVML = new Set(['DCGM_FI_DEV_VGPU_LICENSE_STATUS']);

const base: Telemetry = {
  temperatureC: 61,
  powerUsageW: 300,
  powerLimitW: 700,
  gpuUtilPercent: 50,
  memUtilPercent: 20,
  memoryUsedBytes: 1024 ** 3,
  memoryTotalBytes: 80 * 1024 ** 3,
  smClockMhz: 1980,
  memClockMhz: 2619,
  clockEventReasons: 0,
  performanceState: 0,
  fanSpeedPercent: null,
  persistenceMode: true,
  eccModeCurrent: true,
  eccModePending: true,
  eccVolatileCorrected: 0,
  eccVolatileUncorrected: 0,
  eccAggregateCorrected: 0,
  eccAggregateUncorrected: 0,
  retiredPagesSbe: null,
  retiredPagesDbe: null,
  retiredPagesPending: null,
  remappedRowsCorrected: 0,
  remappedRowsUncorrected: 0,
  remappedRowsPending: false,
  remappedRowsFailure: false,
  pcieReplayCounter: 0,
  pcieLinkGenCurrent: 5,
  pcieLinkGenMax: 5,
  pcieLinkWidthCurrent: 16,
  pcieLinkWidthMax: 16,
  nvlinks: [{ link: 0, active: true, replayErrors: 0, recoveryErrors: 0, crcFlitErrors: 0, crcDataErrors: 0 }],
  memoryTemperatureC: 66,
  totalEnergyMj: 123_456_789_012,
  encoderUtilPercent: 12,
  decoderUtilPercent: 34,
  pcieTxKBps: 250_000,
  pcieRxKBps: 1_250_000,
  nvlinkDataTxKiB: 9_000_000_000,
  nvlinkDataRxKiB: 1_000_000_000,
};

function device(i: number, t: Telemetry | null): DeviceStatus {
  return {
    index: i,
    uuid: `GPU-${i}`,
    name: 'NVIDIA H100 80GB HBM3',
    serial: null,
    pciBusId: `00000000:1${i}:00.0`,
    pciBusIdShort: `0000:1${i}:00`,
    minorNumber: i,
    memoryTotalBytes: 80 * 1024 ** 3,
    error: null,
    telemetry: t,
    sampleError: null,
    sampledAtMs: t ? 1 : null,
    lastXid: 0,
  };
}

function statusWith(devices: DeviceStatus[], system: AgentStatus['system']): AgentStatus {
  return {
    agent: { version: '0.1.0', nodeId: 'n1', pid: 1, startedAtMs: 0, uptimeS: 1, stateDir: '/tmp' },
    backend: { kind: 'nvml', reason: 'test', driverError: null, warnings: [] },
    system,
    devices,
    activeFaults: [],
    controlPlane: { server: 'http://127.0.0.1:1', state: 'disconnected', registered: false, nodeStatus: null, lastError: null, lastContactMs: null },
    events: { pending: 0, store: null },
    kmsg: { enabled: false, path: null, state: 'disabled' },
    watch: null,
  };
}

async function render(st: AgentStatus): Promise<string> {
  const view: AgentView = { alive: () => true, status: () => st };
  return (await new AgentMetrics({ view, hostname: 'node-a', version: '0.1.0' }).render()).body;
}

const SYS = { driverVersion: '550.163.01', nvmlVersion: '12.550.163.01', cudaDriverVersion: '12.4' };
const L0 = 'gpu="0",UUID="GPU-0",pci_bus_id="00000000:10:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-a"';

describe('metrics: dcgm-exporter default fields', () => {
  it('exports every default field NVML provides, under its dcgm-exporter name and type', async () => {
    const text = await render(statusWith([device(0, base)], SYS));
    for (const [name, type] of Object.entries(DCGM_DEFAULTS)) {
      if (NOT_FROM_NVML.has(name)) {
        expect(text, name).not.toContain(name);
        continue;
      }
      expect(text, name).toContain(`# TYPE ${name} ${type}`);
      expect(text, name).toMatch(new RegExp(`^${name}\\{${L0.replace(/[.()]/g, '\\$&')}\\} [0-9.e+]+$`, 'm'));
    }
  });

  it('the new fields carry the sample in dcgm-exporter units', async () => {
    const text = await render(statusWith([device(0, base)], SYS));
    expect(text).toContain(`DCGM_FI_DEV_MEMORY_TEMP{${L0}} 66`);
    expect(text).toContain(`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{${L0}} 123456789012`);
    expect(text).toContain(`DCGM_FI_DEV_ENC_UTIL{${L0}} 12`);
    expect(text).toContain(`DCGM_FI_DEV_DEC_UTIL{${L0}} 34`);
    expect(text).toContain(`DCGM_FI_DEV_PCIE_TX_THROUGHPUT{${L0}} 250000`);
    expect(text).toContain(`DCGM_FI_DEV_PCIE_RX_THROUGHPUT{${L0}} 1250000`);
    // TX + RX over all links
    expect(text).toContain(`DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{${L0}} 10000000000`);
  });

  it('an unsupported field (null) or one a hand-built sample lacks is absent, never 0', async () => {
    const partial: Telemetry = { ...base, memoryTemperatureC: null, totalEnergyMj: null, pcieRxKBps: null, nvlinkDataTxKiB: null, nvlinkDataRxKiB: null };
    const { encoderUtilPercent: _e, ...noEnc } = base; // field missing from the object altogether
    const text = await render(statusWith([device(0, partial), device(1, noEnc)], SYS));
    for (const name of [
      'DCGM_FI_DEV_MEMORY_TEMP',
      'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION',
      'DCGM_FI_DEV_PCIE_RX_THROUGHPUT',
      'DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL',
    ]) {
      expect(text, name).not.toMatch(new RegExp(`^${name}\\{gpu="0"`, 'm'));
      expect(text, name).toMatch(new RegExp(`^${name}\\{gpu="1"`, 'm'));
    }
    expect(text).toMatch(/^DCGM_FI_DEV_ENC_UTIL\{gpu="0"/m);
    expect(text).not.toMatch(/^DCGM_FI_DEV_ENC_UTIL\{gpu="1"/m);
    // one direction known: the total is that direction
    const oneWay = await render(statusWith([device(0, { ...base, nvlinkDataTxKiB: null })], SYS));
    expect(oneWay).toContain(`DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{${L0}} 1000000000`);
  });
});

describe('metrics: navarch_agent_driver_info', () => {
  it('states the driver, CUDA and NVML versions as labels of a constant 1', async () => {
    const text = await render(statusWith([device(0, base)], SYS));
    expect(text).toContain('# TYPE navarch_agent_driver_info gauge');
    expect(text).toContain('navarch_agent_driver_info{driver_version="550.163.01",cuda_version="12.4",nvml_version="12.550.163.01"} 1');
    expect(text.match(/^navarch_agent_driver_info\{/gm)).toHaveLength(1);
  });

  it('an unknown version is an empty label; no driver at all -> no series', async () => {
    const part = await render(statusWith([], { driverVersion: '570.86.15', nvmlVersion: null, cudaDriverVersion: null }));
    expect(part).toContain('navarch_agent_driver_info{driver_version="570.86.15",cuda_version="",nvml_version=""} 1');
    for (const system of [null, { driverVersion: null, nvmlVersion: null, cudaDriverVersion: null }]) {
      const none = await render(statusWith([], system));
      expect(none).toContain('# TYPE navarch_agent_driver_info gauge');
      expect(none).not.toMatch(/^navarch_agent_driver_info\{/m);
    }
  });
});
