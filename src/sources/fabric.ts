/**
 * GPU fabric health from NVML's fabric info (`telemetry.fabric`, nvmlDeviceGetGpuFabricInfoV v3/v2;
 * nvml-abi.md §3.7, §4.8). Pure: `judgeFabric` turns one GPU's fabric info into findings, one per
 * condition, and the telemetry judge (telemetry.ts) raises and clears them with its hysteresis
 * under `gpuN/fabric/<name>`.
 *
 * Conditions (severity reasons in docs/backends-and-detection.md, "Fabric health"):
 *   state                  not COMPLETED `bootGraceMs` after boot           critical / reboot
 *   status                 COMPLETED with a failed nvmlReturn                critical / reboot
 *   health                 summary UNHEALTHY                                 critical / reboot
 *                          summary LIMITED_CAPACITY                          warning  / none
 *   degraded_bandwidth     mask field = 1 (degraded)                         warning  / none
 *   route_recovery         mask field = 1 (recovery in progress)             warning  / none
 *   route_unhealthy        mask field = 1 (unhealthy)                        critical / reboot
 *   access_timeout_recovery mask field = 1 (recovery in progress)            warning  / none
 *   incorrect_configuration mask field 2..8 (a named configuration error)    critical / replace
 * Partition assignment is reported in the metrics only (a GPU outside a partition can be intended).
 * NOT_SUPPORTED (fabric null, state 0, summary 0, a mask field 0) means no check for that part.
 */
import type { RecommendedAction, Severity } from '../events/types.js';
import type { GpuFabricInfo } from '../nvml/types.js';

/** nvmlGpuFabricState_t. */
export const FABRIC_STATE = { NOT_SUPPORTED: 0, NOT_STARTED: 1, IN_PROGRESS: 2, COMPLETED: 3 } as const;
const STATE_NAMES = ['not_supported', 'not_started', 'in_progress', 'completed'];

/** NVML_GPU_FABRIC_HEALTH_SUMMARY_* (v3 only). */
export const HEALTH_SUMMARY = { NOT_SUPPORTED: 0, HEALTHY: 1, UNHEALTHY: 2, LIMITED_CAPACITY: 3 } as const;
const SUMMARY_NAMES = ['not_supported', 'healthy', 'unhealthy', 'limited_capacity'];

/** Default: fabric registration still not completed 5 minutes after boot is a fault. */
export const DEFAULT_FABRIC_BOOT_GRACE_MS = 300_000;

interface MaskField {
  name: string;
  label: string;
  shift: number;
  width: number;
  /** Meaning of each value; 0 is always not_supported. */
  values: Record<number, string>;
  /** The values that are a fault, with their verdict; absent = never a fault. */
  fault?: { values: readonly number[]; severity: Severity; action: RecommendedAction };
}

/** The health-mask fields, read as `(mask >> shift) & width` (H13.3). */
export const HEALTH_MASK_FIELDS: readonly MaskField[] = [
  {
    name: 'degraded_bandwidth',
    label: 'NVLink bandwidth degraded',
    shift: 0,
    width: 0x3,
    values: { 1: 'degraded', 2: 'not_degraded' },
    fault: { values: [1], severity: 'warning', action: 'none' },
  },
  {
    name: 'route_recovery',
    label: 'fabric route recovery in progress',
    shift: 2,
    width: 0x3,
    values: { 1: 'in_progress', 2: 'not_in_progress' },
    fault: { values: [1], severity: 'warning', action: 'none' },
  },
  {
    name: 'route_unhealthy',
    label: 'fabric route unhealthy',
    shift: 4,
    width: 0x3,
    values: { 1: 'unhealthy', 2: 'healthy' },
    fault: { values: [1], severity: 'critical', action: 'reboot' },
  },
  {
    name: 'access_timeout_recovery',
    label: 'fabric access-timeout recovery in progress',
    shift: 6,
    width: 0x3,
    values: { 1: 'in_progress', 2: 'not_in_progress' },
    fault: { values: [1], severity: 'warning', action: 'none' },
  },
  {
    name: 'incorrect_configuration',
    label: 'fabric configuration incorrect',
    shift: 8,
    width: 0xf,
    values: {
      1: 'none',
      2: 'incorrect_sysguid',
      3: 'incorrect_chassis_serial',
      4: 'no_partition',
      5: 'insufficient_nvlinks',
      6: 'incompatible_gpu_firmware',
      7: 'invalid_location',
      8: 'gpu_state_invalid',
    },
    fault: { values: [2, 3, 4, 5, 6, 7, 8], severity: 'critical', action: 'replace' },
  },
  { name: 'partition_assigned', label: 'fabric partition assigned', shift: 12, width: 0x3, values: { 1: 'assigned', 2: 'not_assigned' } },
];

/** Every finding name judgeFabric can return (for clearing when fabric info disappears). */
export const FABRIC_FINDINGS: readonly string[] = ['state', 'status', 'health', ...HEALTH_MASK_FIELDS.filter((f) => f.fault).map((f) => f.name)];

/** nvmlReturn_t names (nvml-abi.md §2) for the probe status; other values read "unknown code N". */
const NVML_RETURN: Record<number, string> = {
  0: 'SUCCESS',
  1: 'UNINITIALIZED',
  2: 'INVALID_ARGUMENT',
  3: 'NOT_SUPPORTED',
  4: 'NO_PERMISSION',
  6: 'NOT_FOUND',
  9: 'DRIVER_NOT_LOADED',
  10: 'TIMEOUT',
  11: 'IRQ_ISSUE',
  14: 'CORRUPTED_INFOROM',
  15: 'GPU_IS_LOST',
  16: 'RESET_REQUIRED',
  17: 'OPERATING_SYSTEM',
  18: 'LIB_RM_VERSION_MISMATCH',
  19: 'IN_USE',
  20: 'MEMORY',
  21: 'NO_DATA',
  23: 'INSUFFICIENT_RESOURCES',
  27: 'NOT_READY',
  29: 'INVALID_STATE',
  999: 'UNKNOWN',
};

export function nvmlReturnName(code: number): string {
  const n = NVML_RETURN[code];
  return n === undefined ? `unknown code ${code}` : code === 0 ? 'NVML_SUCCESS' : `NVML_ERROR_${n}`;
}

/** Each mask field's raw value and meaning ("not_supported" for 0, "unknown_N" outside the table). */
export function decodeHealthMask(mask: number): Record<string, { value: number; meaning: string }> {
  const out: Record<string, { value: number; meaning: string }> = {};
  for (const f of HEALTH_MASK_FIELDS) {
    const value = Math.floor(mask / 2 ** f.shift) & f.width;
    out[f.name] = { value, meaning: value === 0 ? 'not_supported' : (f.values[value] ?? `unknown_${value}`) };
  }
  return out;
}

/** What every fabric event carries: the raw info and each decoded mask field. */
export function fabricMetrics(fi: GpuFabricInfo): Record<string, string> {
  const m: Record<string, string> = {
    fabric_info_version: String(fi.version),
    fabric_state: String(fi.state),
    fabric_state_name: STATE_NAMES[fi.state] ?? `unknown_${fi.state}`,
    fabric_status: String(fi.status),
    fabric_health_mask: String(fi.healthMask),
    fabric_clique_id: String(fi.cliqueId),
    fabric_cluster_uuid: fi.clusterUuid,
  };
  if (fi.healthSummary !== null) {
    m.fabric_health_summary = String(fi.healthSummary);
    m.fabric_health_summary_name = SUMMARY_NAMES[fi.healthSummary] ?? `unknown_${fi.healthSummary}`;
  }
  for (const [name, d] of Object.entries(decodeHealthMask(fi.healthMask))) m[`fabric_${name}`] = d.meaning;
  return m;
}

export type FabricFinding =
  | { name: string; bad: true; severity: Severity; action: RecommendedAction; message: string; metrics: Record<string, string>; citation: string }
  | { name: string; bad: false; message: string; metrics: Record<string, string> };

const CITE = 'NVML nvmlDeviceGetGpuFabricInfoV';

/**
 * One GPU's fabric findings. `sinceBootMs`: how long the host has been up at this sample.
 * Returns [] while fabric registration is still allowed to be in progress (not completed, within
 * the grace): nothing is judged then, so neither a raise nor a clear.
 */
export function judgeFabric(gpuIndex: number, fi: GpuFabricInfo | null | undefined, sinceBootMs: number, bootGraceMs: number): FabricFinding[] {
  const g = `GPU ${gpuIndex}`;
  if (fi === null || fi === undefined || fi.state === FABRIC_STATE.NOT_SUPPORTED) {
    return FABRIC_FINDINGS.map((name) => ({ name, bad: false, message: `${g}: fabric info no longer reported`, metrics: {} }));
  }
  const completed = fi.state === FABRIC_STATE.COMPLETED;
  if (!completed && sinceBootMs < bootGraceMs) return [];
  const metrics = fabricMetrics(fi);
  const out: FabricFinding[] = [];
  const stateName = metrics.fabric_state_name as string;

  if (completed) out.push({ name: 'state', bad: false, message: `${g}: fabric registration completed`, metrics });
  else {
    out.push({
      name: 'state',
      bad: true,
      severity: 'critical',
      action: 'reboot',
      message: `${g}: fabric registration ${stateName.replace('_', ' ')} ${Math.round(sinceBootMs / 60_000)} min after boot (CUDA cannot use the GPU until it completes)`,
      metrics: { ...metrics, uptime_seconds: String(Math.floor(sinceBootMs / 1000)), boot_grace_seconds: String(Math.floor(bootGraceMs / 1000)) },
      citation: `${CITE}: state not COMPLETED after the ${Math.round(bootGraceMs / 1000)} s boot grace`,
    });
  }

  // status counts only once state is COMPLETED (nvml-abi.md §3.7).
  if (completed && fi.status !== 0) {
    out.push({
      name: 'status',
      bad: true,
      severity: 'critical',
      action: 'reboot',
      message: `${g}: fabric registration failed: ${nvmlReturnName(fi.status)}`,
      metrics: { ...metrics, fabric_status_name: nvmlReturnName(fi.status) },
      citation: `${CITE}: status of a completed registration is not NVML_SUCCESS`,
    });
  } else if (completed) {
    out.push({ name: 'status', bad: false, message: `${g}: fabric registration succeeded`, metrics });
  }

  const sum = fi.healthSummary;
  if (sum === HEALTH_SUMMARY.UNHEALTHY) {
    out.push({
      name: 'health',
      bad: true,
      severity: 'critical',
      action: 'reboot',
      message: `${g}: fabric health unhealthy`,
      metrics,
      citation: `${CITE}: healthSummary UNHEALTHY`,
    });
  } else if (sum === HEALTH_SUMMARY.LIMITED_CAPACITY) {
    out.push({
      name: 'health',
      bad: true,
      severity: 'warning',
      action: 'none',
      message: `${g}: fabric health limited capacity`,
      metrics,
      citation: `${CITE}: healthSummary LIMITED_CAPACITY`,
    });
  } else if (sum === HEALTH_SUMMARY.HEALTHY) {
    out.push({ name: 'health', bad: false, message: `${g}: fabric health back to healthy`, metrics });
  } else {
    out.push({ name: 'health', bad: false, message: `${g}: fabric health summary not reported`, metrics });
  }

  const decoded = decodeHealthMask(fi.healthMask);
  for (const f of HEALTH_MASK_FIELDS) {
    if (!f.fault) continue;
    const d = decoded[f.name] as { value: number; meaning: string };
    if (f.fault.values.includes(d.value)) {
      out.push({
        name: f.name,
        bad: true,
        severity: f.fault.severity,
        action: f.fault.action,
        message: `${g}: ${f.label} (${d.meaning})`,
        metrics,
        citation: `${CITE}: healthMask ${f.name} (shift ${f.shift}, width 0x${f.width.toString(16)}) = ${d.value}`,
      });
    } else {
      out.push({
        name: f.name,
        bad: false,
        message: `${g}: ${f.label.replace(/ (degraded|in progress|unhealthy|incorrect)$/, '')} ${d.value === 0 ? 'not reported' : 'back to normal'}`,
        metrics,
      });
    }
  }
  return out;
}
