/**
 * Types of the NVML facade (`src/nvml/`). This file is the contract between the native addon's
 * facade and everything above it (backends, sources, CLI). The fake backend produces the same
 * shapes so both backends are interchangeable.
 *
 * Units are in the field names. A field the device does not support is `null`, never an error.
 */

/** Symbolic NVML status names (NVML_SUCCESS, NVML_ERROR_*), plus the addon's own codes. */
export type NvmlErrorCode =
  | `NVML_ERROR_${string}`
  | 'NVML_SUCCESS'
  /** dlopen of libnvidia-ml.so.1 (or NAVARCH_NVML_LIBRARY) failed. */
  | 'NVML_LIBRARY_NOT_FOUND'
  /** A required (non-optional) symbol is missing from the library. */
  | 'NVML_SYMBOL_NOT_FOUND'
  /** The native addon itself could not be loaded (not built, wrong platform). */
  | 'NVML_ADDON_UNAVAILABLE'
  /** A call did not return within the deadline (the device is marked suspect). */
  | 'NVML_CALL_TIMEOUT'
  /** The session was closed. */
  | 'NVML_CLOSED';

export interface NvmlErrorInfo {
  code: NvmlErrorCode;
  /** Numeric nvmlReturn_t, or -1 for the addon's own codes. */
  status: number;
  /** NVML function that failed, e.g. "nvmlDeviceGetTemperature" ("" when not applicable). */
  fn: string;
  message: string;
}

export interface SystemInfo {
  driverVersion: string | null;
  nvmlVersion: string | null;
  /** "12.4" (decoded from 12040), or null when unavailable. */
  cudaDriverVersion: string | null;
}

export interface DeviceInfo {
  index: number;
  uuid: string;
  name: string;
  serial: string | null;
  /** NVML's busId: `%08X:%02X:%02X.0`, e.g. "00000000:41:00.0". */
  pciBusId: string;
  /** The kernel's short form as printed in NVRM lines: "0000:41:00" (lower case, no function). */
  pciBusIdShort: string;
  minorNumber: number | null;
  memoryTotalBytes: number | null;
  /**
   * Set when the device could not be opened or identified (e.g. GPU_IS_LOST at enumeration):
   * the device is still listed, so a broken GPU is reported instead of silently missing.
   */
  error: NvmlErrorInfo | null;
}

export interface NvLinkStatus {
  link: number;
  active: boolean;
  replayErrors: number | null;
  recoveryErrors: number | null;
  crcFlitErrors: number | null;
  crcDataErrors: number | null;
}

export interface Telemetry {
  temperatureC: number | null;
  powerUsageW: number | null;
  powerLimitW: number | null;
  gpuUtilPercent: number | null;
  memUtilPercent: number | null;
  memoryUsedBytes: number | null;
  memoryTotalBytes: number | null;
  smClockMhz: number | null;
  memClockMhz: number | null;
  /** Bit mask of clock event (throttle) reasons; see CLOCK_EVENT_REASONS. */
  clockEventReasons: number | null;
  /** 0 (P0, max) .. 15; null for unknown (32) or unsupported. */
  performanceState: number | null;
  fanSpeedPercent: number | null;
  persistenceMode: boolean | null;
  eccModeCurrent: boolean | null;
  eccModePending: boolean | null;
  eccVolatileCorrected: number | null;
  eccVolatileUncorrected: number | null;
  eccAggregateCorrected: number | null;
  eccAggregateUncorrected: number | null;
  retiredPagesSbe: number | null;
  retiredPagesDbe: number | null;
  retiredPagesPending: boolean | null;
  remappedRowsCorrected: number | null;
  remappedRowsUncorrected: number | null;
  remappedRowsPending: boolean | null;
  remappedRowsFailure: boolean | null;
  pcieReplayCounter: number | null;
  pcieLinkGenCurrent: number | null;
  pcieLinkGenMax: number | null;
  pcieLinkWidthCurrent: number | null;
  pcieLinkWidthMax: number | null;
  /** Links that exist on the device (NOT_SUPPORTED / INVALID_ARGUMENT links are omitted); null without NVLink. */
  nvlinks: NvLinkStatus[] | null;
  /** nvmlDeviceGetGpuFabricInfoV (v3, else v2); null where unsupported (pre-Hopper GPUs, drivers before 550, the TypeScript fake backend); optional for hand-built telemetry. */
  fabric?: GpuFabricInfo | null;
  // dcgm-exporter's default fields that NVML provides (optional for hand-built telemetry; null =
  // NOT_SUPPORTED or an entry point the driver lacks, and the series is then absent).
  /** NVML_FI_DEV_MEMORY_TEMP (field 82), C. */
  memoryTemperatureC?: number | null;
  /** nvmlDeviceGetTotalEnergyConsumption: mJ since the driver was loaded (Volta+). */
  totalEnergyMj?: number | null;
  /** nvmlDeviceGetEncoderUtilization / DecoderUtilization, %. */
  encoderUtilPercent?: number | null;
  decoderUtilPercent?: number | null;
  /** nvmlDeviceGetPcieThroughput TX / RX bytes: KB/s over NVML's 20 ms sample. */
  pcieTxKBps?: number | null;
  pcieRxKBps?: number | null;
  /** NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX / _RX (fields 138/139, scope all links): KiB since the driver was loaded. */
  nvlinkDataTxKiB?: number | null;
  nvlinkDataRxKiB?: number | null;
}

/** NVML GPU fabric info (nvml-abi.md §3.7 / §4.8). `status` counts only once `state` is 3 (completed). */
export interface GpuFabricInfo {
  /** Struct version the driver answered: 3, or 2 on drivers before 580. */
  version: 2 | 3;
  /** 0 not supported, 1 not started, 2 in progress, 3 completed. */
  state: number;
  /** An nvmlReturn_t: 0 success. */
  status: number;
  cliqueId: number;
  /** 32 hex digits. */
  clusterUuid: string;
  /** Packed fields, `(mask >> shift) & width`; 0 in a field = not supported. */
  healthMask: number;
  /** v3 only (else null): 0 not supported, 1 healthy, 2 unhealthy, 3 limited capacity. */
  healthSummary: number | null;
}

export type DeviceSnapshot =
  | { index: number; uuid: string; ok: true; telemetry: Telemetry; takenAtMs: number }
  | { index: number; uuid: string; ok: false; error: NvmlErrorInfo; takenAtMs: number };

/** Names of NVML event types the watcher reports. */
export type NvmlEventType =
  | 'xid'
  | 'ecc_sbe'
  | 'ecc_dbe'
  | 'pstate'
  | 'clock'
  | 'power_source'
  | 'mig_config'
  | 'ecc_storm'
  | 'dram_retirement_event'
  | 'dram_retirement_failure'
  | 'non_fatal_poison'
  | 'fatal_poison'
  | 'gpu_unavailable'
  | 'gpu_recovery_action'
  /** Synthesised by the watcher when the wait returns NVML_ERROR_GPU_IS_LOST. */
  | 'gpu_lost'
  | 'unknown';

export interface NvmlEvent {
  type: NvmlEventType;
  /** Raw NVML event type bit (0 for synthesised events). */
  eventTypeMask: number;
  /** XID code for xid events (999 = unknown XID, kept as 999); otherwise NVML's eventData. */
  data: number;
  deviceIndex: number;
  uuid: string;
  pciBusId: string;
  gpuInstanceId: number | null;
  computeInstanceId: number | null;
  /** CLOCK_MONOTONIC nanoseconds when the wait returned (comparable with process.hrtime.bigint()). */
  monotonicNs: bigint;
  /** Wall clock (ms since the epoch) when the wait returned. */
  wallTimeMs: number;
  /** How many identical events (same device, type and data) were merged into this one (>= 1). */
  count: number;
}

export interface WatchStats {
  /** Events delivered to JS (counting merged ones by their count). */
  delivered: number;
  /** Events merged into an identical queued event. */
  merged: number;
  /** Distinct events dropped because the queue was full. Never silent. */
  dropped: number;
  /** Per device: event types registered (names). */
  registered: Array<{ deviceIndex: number; types: NvmlEventType[]; error: NvmlErrorInfo | null }>;
}

export interface WatchOptions {
  /** Per-wait timeout handed to nvmlEventSetWait_v2 (ms). Bounds how long stop() takes. Default 500. */
  waitTimeoutMs?: number;
  /** Bound of the native queue (distinct events). Default 4096. */
  queueCapacity?: number;
  /** Keep the event loop alive while watching. Default false. */
  ref?: boolean;
  /**
   * Event types to register (each still masked by what the GPU supports). Default: xid, ecc_sbe,
   * ecc_dbe, ecc_storm, dram_retirement_event, dram_retirement_failure, non_fatal_poison,
   * fatal_poison, gpu_unavailable, gpu_recovery_action. `gpu_lost` is always reported.
   */
  types?: NvmlEventType[];
  /**
   * The `dropped` notification: called (after the batch it belongs to) when distinct events had to
   * be dropped because the queue was full; also counted in WatchStats.dropped.
   */
  onDropped?: (droppedSinceLast: number, droppedTotal: number) => void;
}

export interface OpenOptions {
  /** Absolute path of the library; defaults to NAVARCH_NVML_LIBRARY or "libnvidia-ml.so.1". */
  libraryPath?: string;
  /** Deadline for each snapshot / inventory call (ms). Default 5000. */
  callTimeoutMs?: number;
}
