/**
 * Prometheus metrics of the agent on a registry of its own (never prom-client's global one).
 * Per-GPU telemetry uses dcgm-exporter's metric names, units and labels (gpu, UUID, pci_bus_id,
 * device, modelName, Hostname) so existing dashboards work; values are read from the agent's
 * latest snapshot at scrape time. Agent metrics are prefixed navarch_agent_.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ActiveFault } from '../events/types.js';
import type { Telemetry } from '../nvml/types.js';
import type { AgentStatus, AgentView, DeviceStatus } from './types.js';
import { xidInfo } from '../xid/catalog.js';

/** The `code` label of navarch_agent_xid_total for codes outside the XID catalog (one series). */
export const OTHER_XID_LABEL = 'other';
/** GPU indexes above this (or not integers) share the gpu="other" series. */
export const MAX_GPU_LABEL_INDEX = 1023;

/**
 * Bounded labels of navarch_agent_xid_total: a code in the catalog (or in Navarch's fatal list)
 * keeps its number, any other code is "other"; the gpu label is the index (-1 = node) up to MAX_GPU_LABEL_INDEX, else "other".
 * So the series are at most (catalog size + 1) x (GPUs + 1), whatever the kernel log holds.
 */
export function xidMetricLabels(gpuIndex: number, code: number): { gpu: string; code: string } {
  const gpu = Number.isSafeInteger(gpuIndex) && gpuIndex >= -1 && gpuIndex <= MAX_GPU_LABEL_INDEX ? String(gpuIndex) : OTHER_XID_LABEL;
  const info = xidInfo(code);
  return { gpu, code: info.known || info.navarchFatal ? String(code) : OTHER_XID_LABEL };
}

const GPU_LABELS = ['gpu', 'UUID', 'pci_bus_id', 'device', 'modelName', 'Hostname'] as const;
type GpuLabel = (typeof GPU_LABELS)[number];

const MIB = 1024 * 1024;

interface DcgmDef {
  name: string;
  help: string;
  value: (t: Telemetry, d: DeviceStatus) => number | null;
  /** A cumulative NVML count: exported as a counter (dcgm-exporter's default-counters.csv types). */
  counter?: true;
}

const b = (v: boolean | null): number | null => (v === null ? null : v ? 1 : 0);

/** dcgm-exporter fields the agent can fill from NVML. */
const DCGM: DcgmDef[] = [
  { name: 'DCGM_FI_DEV_GPU_TEMP', help: 'GPU temperature (in C).', value: (t) => t.temperatureC },
  { name: 'DCGM_FI_DEV_MEMORY_TEMP', help: 'Memory temperature (in C).', value: (t) => t.memoryTemperatureC ?? null },
  { name: 'DCGM_FI_DEV_POWER_USAGE', help: 'Power draw (in W).', value: (t) => t.powerUsageW },
  {
    name: 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION',
    help: 'Total energy consumption since the driver was loaded (in mJ).',
    value: (t) => t.totalEnergyMj ?? null,
    counter: true,
  },
  { name: 'DCGM_FI_DEV_POWER_MGMT_LIMIT', help: 'Power management limit (in W).', value: (t) => t.powerLimitW },
  { name: 'DCGM_FI_DEV_GPU_UTIL', help: 'GPU utilization (in %).', value: (t) => t.gpuUtilPercent },
  { name: 'DCGM_FI_DEV_MEM_COPY_UTIL', help: 'Memory utilization (in %).', value: (t) => t.memUtilPercent },
  { name: 'DCGM_FI_DEV_ENC_UTIL', help: 'Encoder utilization (in %).', value: (t) => t.encoderUtilPercent ?? null },
  { name: 'DCGM_FI_DEV_DEC_UTIL', help: 'Decoder utilization (in %).', value: (t) => t.decoderUtilPercent ?? null },
  {
    name: 'DCGM_FI_DEV_FB_USED',
    help: 'Framebuffer memory used (in MiB).',
    value: (t) => (t.memoryUsedBytes === null ? null : Math.round(t.memoryUsedBytes / MIB)),
  },
  {
    name: 'DCGM_FI_DEV_FB_FREE',
    help: 'Framebuffer memory free (in MiB).',
    value: (t) => (t.memoryUsedBytes === null || t.memoryTotalBytes === null ? null : Math.round((t.memoryTotalBytes - t.memoryUsedBytes) / MIB)),
  },
  { name: 'DCGM_FI_DEV_SM_CLOCK', help: 'SM clock frequency (in MHz).', value: (t) => t.smClockMhz },
  { name: 'DCGM_FI_DEV_MEM_CLOCK', help: 'Memory clock frequency (in MHz).', value: (t) => t.memClockMhz },
  { name: 'DCGM_FI_DEV_FAN_SPEED', help: 'Fan speed (in %).', value: (t) => t.fanSpeedPercent },
  { name: 'DCGM_FI_DEV_PSTATE', help: 'Performance state (0 = P0).', value: (t) => t.performanceState },
  { name: 'DCGM_FI_DEV_CLOCK_THROTTLE_REASONS', help: 'Current clock throttle reasons (bit mask).', value: (t) => t.clockEventReasons },
  { name: 'DCGM_FI_DEV_XID_ERRORS', help: 'Value of the last XID error encountered.', value: (_t, d) => d.lastXid },
  { name: 'DCGM_FI_DEV_PCIE_REPLAY_COUNTER', help: 'Total number of PCIe retries.', value: (t) => t.pcieReplayCounter, counter: true },
  // Typed counter as in dcgm-exporter's default-counters.csv, but the value is what DCGM reads from
  // nvmlDeviceGetPcieThroughput: KB/s over NVML's 20 ms sample (graph it as is, not with rate()).
  {
    name: 'DCGM_FI_DEV_PCIE_TX_THROUGHPUT',
    help: 'PCIe TX throughput (in KB/s, NVML 20 ms sample).',
    value: (t) => t.pcieTxKBps ?? null,
    counter: true,
  },
  {
    name: 'DCGM_FI_DEV_PCIE_RX_THROUGHPUT',
    help: 'PCIe RX throughput (in KB/s, NVML 20 ms sample).',
    value: (t) => t.pcieRxKBps ?? null,
    counter: true,
  },
  { name: 'DCGM_FI_DEV_PCIE_LINK_GEN', help: 'Current PCIe link generation.', value: (t) => t.pcieLinkGenCurrent },
  { name: 'DCGM_FI_DEV_PCIE_LINK_WIDTH', help: 'Current PCIe link width.', value: (t) => t.pcieLinkWidthCurrent },
  { name: 'DCGM_FI_DEV_ECC_SBE_VOL_TOTAL', help: 'Total number of single-bit volatile ECC errors.', value: (t) => t.eccVolatileCorrected, counter: true },
  { name: 'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL', help: 'Total number of double-bit volatile ECC errors.', value: (t) => t.eccVolatileUncorrected, counter: true },
  { name: 'DCGM_FI_DEV_ECC_SBE_AGG_TOTAL', help: 'Total number of single-bit persistent ECC errors.', value: (t) => t.eccAggregateCorrected, counter: true },
  { name: 'DCGM_FI_DEV_ECC_DBE_AGG_TOTAL', help: 'Total number of double-bit persistent ECC errors.', value: (t) => t.eccAggregateUncorrected, counter: true },
  { name: 'DCGM_FI_DEV_RETIRED_SBE', help: 'Total number of retired pages due to single-bit errors.', value: (t) => t.retiredPagesSbe, counter: true },
  { name: 'DCGM_FI_DEV_RETIRED_DBE', help: 'Total number of retired pages due to double-bit errors.', value: (t) => t.retiredPagesDbe, counter: true },
  { name: 'DCGM_FI_DEV_RETIRED_PENDING', help: 'Page retirement pending (1 = yes).', value: (t) => b(t.retiredPagesPending) },
  {
    name: 'DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS',
    help: 'Number of remapped rows for correctable errors.',
    value: (t) => t.remappedRowsCorrected,
    counter: true,
  },
  {
    name: 'DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS',
    help: 'Number of remapped rows for uncorrectable errors.',
    value: (t) => t.remappedRowsUncorrected,
    counter: true,
  },
  { name: 'DCGM_FI_DEV_ROW_REMAP_PENDING', help: 'Row remapping pending (1 = yes).', value: (t) => b(t.remappedRowsPending) },
  { name: 'DCGM_FI_DEV_ROW_REMAP_FAILURE', help: 'Row remapping failed (1 = yes).', value: (t) => b(t.remappedRowsFailure) },
  {
    name: 'DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL',
    help: 'Total number of NVLink flow-control CRC errors.',
    value: (t) => sumLinks(t, 'crcFlitErrors'),
    counter: true,
  },
  {
    name: 'DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL',
    help: 'Total number of NVLink data CRC errors.',
    value: (t) => sumLinks(t, 'crcDataErrors'),
    counter: true,
  },
  {
    name: 'DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL',
    help: 'Total number of NVLink retries.',
    value: (t) => sumLinks(t, 'replayErrors'),
    counter: true,
  },
  {
    name: 'DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL',
    help: 'Total number of NVLink recovery errors.',
    value: (t) => sumLinks(t, 'recoveryErrors'),
    counter: true,
  },
  {
    name: 'DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL',
    help: 'Total NVLink data transferred over all links, TX + RX (in KiB).',
    value: (t) => sumKnown(t.nvlinkDataTxKiB, t.nvlinkDataRxKiB),
    counter: true,
  },
];

/** Sum of the values that are known; null when none is. */
function sumKnown(...vs: (number | null | undefined)[]): number | null {
  let sum: number | null = null;
  for (const v of vs) if (v !== null && v !== undefined) sum = (sum ?? 0) + v;
  return sum;
}

function sumLinks(t: Telemetry, k: 'crcFlitErrors' | 'crcDataErrors' | 'replayErrors' | 'recoveryErrors'): number | null {
  if (!t.nvlinks || t.nvlinks.length === 0) return null;
  let sum = 0;
  let any = false;
  for (const l of t.nvlinks) {
    const v = l[k];
    if (v !== null) {
      sum += v;
      any = true;
    }
  }
  return any ? sum : null;
}

export interface MetricsOptions {
  view: AgentView;
  hostname: string;
  version: string;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly xidTotal: Counter<'gpu' | 'code'>;
  private readonly delivery: Histogram<string>;
  private cached: AgentStatus | null = null;
  private cachedAt = 0;

  constructor(private readonly opts: MetricsOptions) {
    const reg = this.registry;
    // One status document per scrape (every collect() below reads it).
    const cur = (): AgentStatus => {
      const now = Date.now();
      if (!this.cached || now - this.cachedAt > 250) {
        this.cached = opts.view.status();
        this.cachedAt = now;
      }
      return this.cached;
    };
    const gpuLabels = (d: DeviceStatus): Record<GpuLabel, string> => ({
      gpu: String(d.index),
      UUID: d.uuid,
      pci_bus_id: d.pciBusId,
      device: d.minorNumber === null ? `nvidia${d.index}` : `nvidia${d.minorNumber}`,
      modelName: d.name,
      Hostname: opts.hostname,
    });

    // prom-client's process_* and nodejs_* metrics, on this registry (never the global one).
    collectDefaultMetrics({ register: reg });

    for (const def of DCGM) {
      // Each scrape rebuilds the values from the last sample; a counter's NVML count is set by
      // reset() + inc(count), which types it `counter` as dcgm-exporter does.
      const fill = (put: (labels: Record<GpuLabel, string>, v: number) => void): void => {
        for (const d of cur().devices) {
          if (!d.telemetry) {
            // Only the XID field makes sense without a sample.
            if (def.name === 'DCGM_FI_DEV_XID_ERRORS') put(gpuLabels(d), d.lastXid);
            continue;
          }
          const v = def.value(d.telemetry, d);
          if (v !== null && Number.isFinite(v)) put(gpuLabels(d), v);
        }
      };
      if (def.counter) {
        new Counter<GpuLabel>({
          name: def.name,
          help: def.help,
          labelNames: GPU_LABELS,
          registers: [reg],
          collect() {
            this.reset();
            fill((l, v) => this.inc(l, Math.max(0, v)));
          },
        });
      } else {
        new Gauge<GpuLabel>({
          name: def.name,
          help: def.help,
          labelNames: GPU_LABELS,
          registers: [reg],
          collect() {
            this.reset();
            fill((l, v) => this.set(l, v));
          },
        });
      }
    }

    new Gauge<'kind'>({
      name: 'navarch_agent_kmsg_lost',
      help: 'Kernel-log reader losses since start: kind="overruns" (EPIPE reads), kind="records" (records dropped before they were read), kind="queue_dropped" (read by the native reader thread but dropped because its queue was full).',
      labelNames: ['kind'],
      registers: [reg],
      collect() {
        this.reset();
        const k = cur().kmsg;
        if (k.overruns === undefined) return;
        this.set({ kind: 'overruns' }, k.overruns);
        this.set({ kind: 'records' }, k.lostRecords ?? 0);
        this.set({ kind: 'queue_dropped' }, k.queueDropped ?? 0);
      },
    });

    new Gauge<'gpu' | 'UUID' | 'link'>({
      name: 'navarch_agent_nvlink_up',
      help: 'NVLink link state per GPU and link (1 = active).',
      labelNames: ['gpu', 'UUID', 'link'],
      registers: [reg],
      collect() {
        this.reset();
        for (const d of cur().devices) {
          for (const l of d.telemetry?.nvlinks ?? []) {
            this.set({ gpu: String(d.index), UUID: d.uuid, link: String(l.link) }, l.active ? 1 : 0);
          }
        }
      },
    });

    new Gauge<'gpu' | 'UUID' | 'pci_bus_id'>({
      name: 'navarch_agent_gpu_sample_ok',
      help: 'Whether the latest telemetry sample of the GPU succeeded (0 = lost, hung or failing).',
      labelNames: ['gpu', 'UUID', 'pci_bus_id'],
      registers: [reg],
      collect() {
        this.reset();
        for (const d of cur().devices) {
          if (d.sampledAtMs === null && d.error === null) continue;
          this.set({ gpu: String(d.index), UUID: d.uuid, pci_bus_id: d.pciBusId }, d.telemetry && !d.sampleError && !d.error ? 1 : 0);
        }
      },
    });

    this.xidTotal = new Counter({
      name: 'navarch_agent_xid_total',
      help: 'XID errors seen by the agent, per GPU and code (NVML events and kernel log, de-duplicated); codes outside the XID catalog are code="other".',
      labelNames: ['gpu', 'code'],
      registers: [reg],
    });

    new Gauge<'gpu' | 'type' | 'severity'>({
      name: 'navarch_agent_active_faults',
      help: 'Active faults per GPU (-1 = node), event type and severity.',
      labelNames: ['gpu', 'type', 'severity'],
      registers: [reg],
      collect() {
        this.reset();
        const counts = new Map<string, { gpu: string; type: string; severity: string; n: number }>();
        for (const f of cur().activeFaults as ActiveFault[]) {
          const k = `${f.gpuIndex}|${f.type}|${f.severity}`;
          const e = counts.get(k) ?? { gpu: String(f.gpuIndex), type: f.type, severity: f.severity, n: 0 };
          e.n++;
          counts.set(k, e);
        }
        for (const e of counts.values()) this.set({ gpu: e.gpu, type: e.type, severity: e.severity }, e.n);
      },
    });

    new Counter<'rule'>({
      name: 'navarch_agent_suppressed_events_total',
      help: 'Health events held back by a suppression of the config (faultOverrides), per rule ("xid:31", "class:persistence_mode"); at most one series per rule.',
      labelNames: ['rule'],
      registers: [reg],
      collect() {
        this.reset();
        for (const r of cur().overrides?.suppressed ?? []) this.inc({ rule: r.rule }, r.count);
      },
    });

    new Gauge({
      name: 'navarch_agent_events_pending',
      help: 'Health events stored and not yet acknowledged by the control plane.',
      registers: [reg],
      collect() {
        this.set(cur().events.pending);
      },
    });

    this.delivery = new Histogram({
      name: 'navarch_agent_event_delivery_seconds',
      help: 'Time from a health event being stored to its acknowledgement by the control plane.',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [reg],
    });

    new Gauge({
      name: 'navarch_agent_controlplane_connected',
      help: 'Whether the last control-plane call succeeded (1) or not (0).',
      registers: [reg],
      collect() {
        this.set(cur().controlPlane.state === 'connected' ? 1 : 0);
      },
    });

    new Gauge<'version' | 'node_version' | 'backend' | 'driver_version'>({
      name: 'navarch_agent_build_info',
      help: 'Build and runtime information of the agent (always 1).',
      labelNames: ['version', 'node_version', 'backend', 'driver_version'],
      registers: [reg],
      collect() {
        this.reset();
        const s = cur();
        this.set({ version: opts.version, node_version: process.version, backend: s.backend.kind, driver_version: s.system?.driverVersion ?? '' }, 1);
      },
    });

    new Gauge<'driver_version' | 'cuda_version' | 'nvml_version'>({
      name: 'navarch_agent_driver_info',
      help: 'NVIDIA driver, CUDA driver API and NVML versions reported by NVML (always 1; absent without a driver).',
      labelNames: ['driver_version', 'cuda_version', 'nvml_version'],
      registers: [reg],
      collect() {
        this.reset();
        const sys = cur().system;
        if (!sys || (!sys.driverVersion && !sys.cudaDriverVersion && !sys.nvmlVersion)) return;
        this.set({ driver_version: sys.driverVersion ?? '', cuda_version: sys.cudaDriverVersion ?? '', nvml_version: sys.nvmlVersion ?? '' }, 1);
      },
    });

    new Gauge({
      name: 'navarch_agent_gpus',
      help: 'GPUs in the inventory.',
      registers: [reg],
      collect() {
        this.set(cur().devices.length);
      },
    });
  }

  recordXid(gpuIndex: number, code: number, count = 1): void {
    this.xidTotal.inc(xidMetricLabels(gpuIndex, code), count);
  }

  observeDelivery(seconds: number): void {
    this.delivery.observe(seconds);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    this.cached = null;
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
