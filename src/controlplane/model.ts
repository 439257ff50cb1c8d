/**
 * The agent-side shapes the control-plane link carries: inventory, metrics samples and check
 * results. Plain data; wire.ts converts them to Navarch's protobuf messages.
 */

/** One GPU as registered. */
export interface InventoryGpu {
  index: number;
  uuid: string;
  name: string;
  /** NVML busId "%08X:%02X:%02X.0". */
  pciBusId: string;
  memoryTotalBytes: number | null;
  driverVersion: string;
  cudaVersion: string;
}

/** What RegisterNode carries. */
export interface NodeInventory {
  nodeId: string;
  provider: string;
  region: string;
  zone: string;
  instanceType: string;
  /** Becomes labels.pool (overrides a "pool" key in labels) when non-empty. */
  pool?: string;
  labels?: Record<string, string>;
  hostname: string;
  internalIp: string;
  externalIp: string;
  kernelVersion: string;
  gpus: InventoryGpu[];
}

export interface GpuMetricsSample {
  index: number;
  temperatureC: number | null;
  powerW: number | null;
  utilizationPercent: number | null;
  memoryUsedBytes: number | null;
}

export interface NodeMetricsSample {
  cpuUsagePercent: number;
  memoryUsagePercent: number;
  gpus: GpuMetricsSample[];
}

export type CheckStatus = 'unknown' | 'healthy' | 'degraded' | 'unhealthy';

/** A node-side check result (boot, nvml, xid, diagnostic, ...), sent as HealthCheckResult. */
export interface CheckResult {
  name: string;
  status: CheckStatus;
  message: string;
  details?: Record<string, string>;
  /** When the check completed (ms since the epoch); default: now. */
  timeMs?: number;
}
