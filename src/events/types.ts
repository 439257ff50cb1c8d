/**
 * The agent's health event: Navarch's HealthEvent (proto) plus the agent's own classification.
 * Producers: src/sources/* (NVML events, kernel log, telemetry thresholds), the backends (driver
 * errors), the agent (lost GPUs, GPU count). Consumers: src/store (durable store, coalescing,
 * active faults), src/controlplane (wire conversion), src/api (status, metrics).
 */

/** Navarch HealthEventType, by its CEL string (proto enum value in the comment). */
export type NavarchEventType =
  | 'unknown' // 0
  | 'xid' // 1
  | 'thermal' // 2
  | 'power' // 3
  | 'memory' // 4
  | 'nvlink' // 5
  | 'pcie' // 6
  | 'driver_error' // 7
  | 'ecc_sbe' // 8
  | 'ecc_dbe'; // 9

/** Navarch HealthWatchSystem without the DCGM_HEALTH_WATCH_ prefix (proto enum value in the comment). */
export type HealthWatchSystem =
  | 'UNKNOWN' // 0
  | 'PCIE' // 1
  | 'NVLINK' // 2
  | 'PMU' // 3
  | 'MCU' // 4
  | 'MEM' // 5
  | 'SM' // 6
  | 'INFOROM' // 7
  | 'THERMAL' // 8
  | 'POWER' // 9
  | 'DRIVER' // 10
  | 'NVSWITCH'; // 11

export type Severity = 'info' | 'warning' | 'critical';

/** Recommended action, ordered from least to most disruptive. */
export type RecommendedAction = 'none' | 'restart_app' | 'reset_gpu' | 'reboot' | 'replace';

export type EventSource = 'nvml' | 'kmsg' | 'telemetry' | 'agent' | 'fake';

/** A health event as produced by a source, before the store assigns an id. */
export interface HealthEventInput {
  type: NavarchEventType;
  system: HealthWatchSystem;
  /** -1 for node-level events. */
  gpuIndex: number;
  /** "" when unknown or node-level. */
  gpuUuid: string;
  /** Plain base-10 strings for integers ("79"), `%f`-style for floats, "true"/"false" for bools. */
  metrics: Record<string, string>;
  message: string;
  /** When the fault happened (ms since the epoch), from the source's own timestamp when it has one. */
  timeMs: number;
  severity: Severity;
  action: RecommendedAction;
  /** Where the classification comes from, e.g. "NVIDIA XID catalog: 79 RESTART_BM". */
  citation: string;
  source: EventSource;
  /**
   * Coalescing / fault identity: events with the same key are the same fault
   * (e.g. "gpu3/xid/79", "gpu0/thermal", "node/driver_error").
   */
  key: string;
  /**
   * Active-fault semantics: 'raise' makes or refreshes an active fault under `key`; 'clear' ends
   * it (a recovery, e.g. temperature back under the threshold); 'none' is a one-off event.
   */
  fault: 'raise' | 'clear' | 'none';
  /**
   * How many identical occurrences this input stands for (default 1). Set by sources whose
   * producer already merged duplicates (e.g. an NVML event with count 1000 after a storm), so the
   * store can add it to HealthEvent.count and keep counts exact without 1000 appends.
   */
  count?: number;
}

/** A stored event: what the store keeps on disk until the control plane acknowledged it. */
export interface HealthEvent extends HealthEventInput {
  /** Stable, unique id (used for de-duplication across retries). */
  id: string;
  /** Number of identical occurrences coalesced into this event (>= 1), exact. */
  count: number;
  firstTimeMs: number;
  lastTimeMs: number;
}

/** What is wrong right now with one GPU (or the node, gpuIndex -1). */
export interface ActiveFault {
  key: string;
  gpuIndex: number;
  gpuUuid: string;
  type: NavarchEventType;
  system: HealthWatchSystem;
  severity: Severity;
  action: RecommendedAction;
  message: string;
  metrics: Record<string, string>;
  sinceMs: number;
  lastSeenMs: number;
  count: number;
  /** Id of the most recent event that raised or refreshed this fault. */
  lastEventId: string;
}
