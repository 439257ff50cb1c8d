/**
 * NVML event batches (from either backend's watch()) -> classified HealthEventInputs.
 *
 * - xid: the project XID catalog (xidEventInput), time = the event's wall time.
 * - gpu_lost (the wait returned NVML_ERROR_GPU_IS_LOST): reported as XID 79 ("fallen off the
 *   bus"), key gpu<i>/xid/79, so Navarch's default policy marks the node UNHEALTHY and it merges
 *   with the kernel log's own XID 79 line for the same GPU.
 * - ecc_sbe / ecc_dbe: Navarch's memory events (system MEM, ecc_sbe_count / ecc_dbe_count).
 * - newer event types (driver >= 560/565): SBE storm, DRAM retirement event/failure, poison,
 *   GPU unavailable, recovery action: see CLASSIFICATION in docs/backends-and-detection.md.
 * - pstate, clock, power_source, mig_config, unknown: informational, not health events (null).
 *
 * A merged NVML event (count > 1) becomes one input with `count` set, so store counts stay exact.
 */
import type { EventSource, HealthEventInput, RecommendedAction, Severity } from '../events/types.js';
import { gpuOrNodeKey } from '../events/fault-key.js';
import type { NvmlEvent } from '../nvml/types.js';
import { RECOVERY_ACTIONS, xidEventInput } from '../xid/catalog.js';

export interface NvmlEventOptions {
  /** 'nvml' for the nvml backend (default), 'fake' for the fake backend. */
  source?: EventSource;
}

const CITE_EVENT = 'NVML event';

function base(ev: NvmlEvent, source: EventSource): Pick<HealthEventInput, 'gpuIndex' | 'gpuUuid' | 'timeMs' | 'source'> {
  return {
    gpuIndex: Number.isSafeInteger(ev.deviceIndex) && ev.deviceIndex >= 0 ? ev.deviceIndex : -1,
    gpuUuid: ev.uuid ?? '',
    timeMs: Number.isFinite(ev.wallTimeMs) ? ev.wallTimeMs : Date.now(),
    source,
  };
}

function eventKey(ev: NvmlEvent, rest: string): string {
  return gpuOrNodeKey(ev.deviceIndex, rest);
}

function withCount(input: HealthEventInput, ev: NvmlEvent): HealthEventInput {
  const n = Number.isSafeInteger(ev.count) && ev.count > 1 ? ev.count : 1;
  if (n > 1) input.count = n;
  return input;
}

/** One NVML event -> one health event input, or null when the event is not a health matter. */
export function classifyNvmlEvent(ev: NvmlEvent, opts: NvmlEventOptions = {}): HealthEventInput | null {
  const source = opts.source ?? 'nvml';
  const b = base(ev, source);
  const gpu = b.gpuIndex >= 0 ? `GPU ${b.gpuIndex}` : 'a GPU';
  const n = Number.isSafeInteger(ev.count) && ev.count > 1 ? ev.count : 1;
  const mem = (
    type: HealthEventInput['type'],
    severity: Severity,
    action: RecommendedAction,
    key: string,
    fault: HealthEventInput['fault'],
    message: string,
    metrics: Record<string, string>,
    citation: string,
  ): HealthEventInput => withCount({ ...b, type, system: 'MEM', severity, action, key: eventKey(ev, key), fault, message, metrics, citation }, ev);

  switch (ev.type) {
    case 'xid': {
      const input = xidEventInput({ code: ev.data, gpuIndex: b.gpuIndex, gpuUuid: b.gpuUuid, timeMs: b.timeMs, source });
      return withCount(input, ev);
    }
    case 'gpu_lost': {
      const input = xidEventInput({
        code: 79,
        gpuIndex: b.gpuIndex,
        gpuUuid: b.gpuUuid,
        timeMs: b.timeMs,
        source,
        message: 'NVML event wait returned NVML_ERROR_GPU_IS_LOST',
      });
      input.key = eventKey(ev, 'xid/79');
      input.fault = 'raise';
      input.severity = 'critical';
      input.metrics.nvml_error = 'NVML_ERROR_GPU_IS_LOST';
      return withCount(input, ev);
    }
    case 'ecc_sbe':
      return mem(
        'ecc_sbe',
        'info',
        'none',
        'ecc_sbe',
        'none',
        `${gpu}: corrected (single-bit) ECC error`,
        { ecc_sbe_count: String(n) },
        `${CITE_EVENT} SingleBitEccError (0x1)`,
      );
    case 'ecc_dbe':
      return mem(
        'ecc_dbe',
        'critical',
        'reset_gpu',
        'ecc_dbe',
        'raise',
        `${gpu}: uncorrectable (double-bit) ECC error`,
        { ecc_dbe_count: String(n) },
        `${CITE_EVENT} DoubleBitEccError (0x2); NVIDIA XID 48 workflow: reset the GPU`,
      );
    case 'ecc_storm':
      return mem(
        'ecc_sbe',
        'warning',
        'none',
        'ecc_sbe_storm',
        'none',
        `${gpu}: storm of corrected (single-bit) ECC errors`,
        { ecc_sbe_storm: String(n) },
        `${CITE_EVENT} SingleBitEccErrorStorm (0x200); like XID 92 (IGNORE / CONTACT_SUPPORT)`,
      );
    case 'dram_retirement_event':
      return mem(
        'memory',
        'warning',
        'reset_gpu',
        'dram_retirement',
        'none',
        `${gpu}: DRAM row/page marked for retirement (takes effect after a GPU reset)`,
        { dram_retirement_events: String(n) },
        `${CITE_EVENT} DramRetirementEvent (0x400); like XID 63`,
      );
    case 'dram_retirement_failure':
      return mem(
        'memory',
        'critical',
        'reset_gpu',
        'dram_retirement_failure',
        'raise',
        `${gpu}: DRAM retirement (row remapping) failed`,
        { dram_retirement_failures: String(n) },
        `${CITE_EVENT} DramRetirementFailure (0x800); like XID 64 (RESET_GPU / CONTACT_SUPPORT)`,
      );
    case 'non_fatal_poison':
      return mem(
        'memory',
        'warning',
        'restart_app',
        'poison',
        'none',
        `${gpu}: contained (non-fatal) poison error`,
        { poison_errors: String(n) },
        `${CITE_EVENT} NonFatalPoisonError (0x1000); like XID 94 (RESTART_APP)`,
      );
    case 'fatal_poison':
      return mem(
        'memory',
        'critical',
        'reset_gpu',
        'fatal_poison',
        'raise',
        `${gpu}: uncontained (fatal) poison error`,
        { poison_errors: String(n) },
        `${CITE_EVENT} FatalPoisonError (0x2000); like XID 95 (RESET_GPU)`,
      );
    case 'gpu_unavailable':
      return withCount(
        {
          ...b,
          type: 'driver_error',
          system: 'DRIVER',
          severity: 'critical',
          action: 'reset_gpu',
          key: eventKey(ev, 'gpu_unavailable'),
          fault: 'raise',
          message: `${gpu} became unavailable (NVML GpuUnavailableError)`,
          metrics: { nvml_event: 'gpu_unavailable' },
          citation: `${CITE_EVENT} GpuUnavailableError (0x4000)`,
        },
        ev,
      );
    case 'gpu_recovery_action': {
      // NVML documents eventData only for XIDs; when a driver passes the action (1..5) we use it,
      // otherwise the change is reported without guessing (the kernel log's XID 154 names it).
      const r = ev.data > 0 ? RECOVERY_ACTIONS[ev.data] : undefined;
      return withCount(
        {
          ...b,
          type: 'driver_error',
          system: 'DRIVER',
          severity: r?.severity ?? 'warning',
          action: r?.action ?? 'none',
          key: eventKey(ev, 'recovery_action'),
          fault: r ? 'raise' : 'none',
          message: r ? `${gpu}: driver recovery action is now ${r.name}` : `${gpu}: driver recovery action changed`,
          metrics: { recovery_action: String(ev.data) },
          citation: `${CITE_EVENT} GpuRecoveryAction (0x8000); like XID 154`,
        },
        ev,
      );
    }
    case 'pstate':
    case 'clock':
    case 'power_source':
    case 'mig_config':
    case 'unknown':
    default:
      return null;
  }
}

/** A batch from watch() -> health event inputs, in order; non-health events are skipped. */
export function nvmlEventsToInputs(events: readonly NvmlEvent[], opts: NvmlEventOptions = {}): HealthEventInput[] {
  const out: HealthEventInput[] = [];
  for (const ev of events) {
    const input = classifyNvmlEvent(ev, opts);
    if (input) out.push(input);
  }
  return out;
}
