/**
 * How the agent's events read in Navarch's vocabulary (event_type, system, metrics), so that the
 * control plane's CEL policy, Navarch's default policy included, judges them as close to the
 * agent's own severity as it can. One place for that rule; wire.ts applies it to every event it
 * converts (pushed events and, in --verdict policy, re-sent active faults).
 *
 * Navarch's default policy (deploy/navarch/navarch-default-policy.yaml) has three UNHEALTHY rules
 * (an `xid` event with a fatal xid_code, an `ecc_dbe` event or a MEM event with ecc_dbe_count > 0,
 * a `thermal` event at >= 95 C), DEGRADED for any other `xid` event and for nvlink / pcie / power,
 * and HEALTHY for everything else: a `memory` or `driver_error` event is HEALTHY whatever it says.
 * The rules below move an event to the Navarch category that names the same fault. They never
 * invent a reading the policy compares (an xid_code only where an XID is the evidence, never a
 * temperature or ECC count), never make an event read worse than the agent's severity, keep the
 * source's metrics, and name the agent's own type and system in metrics when they differ:
 *
 * - clear (fault `clear`): event_type `unknown`, system UNKNOWN, `fault=clear`,
 *   `cleared_event_type`, `cleared_system`. A clear with the fault's own type would read as the
 *   fault again (an ecc_dbe clear UNHEALTHY, an nvlink one DEGRADED); only `default` matches it.
 * - any other info event that is not an XID: `unknown` / UNKNOWN (HEALTHY, as the agent says; an
 *   NVML SBE event merged over 100 times would otherwise read DEGRADED).
 * - critical `memory` (row-remapping failure, DRAM-retirement failure, fatal poison): `ecc_dbe`,
 *   the uncorrectable memory error these are (rule ecc-dbe: UNHEALTHY). No ecc_dbe_count is made up.
 * - warning or critical `driver_error` (an NVML failure or timeout, NVML missing on a GPU host,
 *   GPUs missing, kernel-log fallen-off-bus / GSP / RmInitAdapter, NVML GPU unavailable, a driver
 *   recovery action, persistence mode off, kernel-log records lost): `xid`, system DRIVER, the
 *   driver's error report, which is what an XID is. With an XID as evidence it carries it:
 *   fallen off the bus and a GPU the instance type has but NVML does not list are XID 79 (as the
 *   agent already reports a GPU that left the list), a GSP error its XID 119/120 (rule fatal-xid:
 *   UNHEALTHY). Without one no xid_code is sent and rule recoverable-xid reads DEGRADED: the
 *   default policy has no UNHEALTHY rule such a fault could truthfully match.
 * - everything else keeps its own type and system (XIDs, thermal, ECC, power, PCIe, NVLink, SXid,
 *   memory warnings). Where that reads short of the agent's severity (NVLink down or a fatal SXid
 *   only DEGRADED, memory warnings and thermal clock slowdowns under 85 C HEALTHY) the default
 *   policy cannot express the verdict; the agent's own `navarch_agent` result (--verdict agent)
 *   or the shipped deploy/navarch/health-policy.yaml covers it. docs/controlplane.md has the table.
 */
import { faultClassOf } from '../events/fault-class.js';
import type { HealthWatchSystem, NavarchEventType, Severity } from '../events/types.js';

export interface NavarchForm {
  type: NavarchEventType;
  system: HealthWatchSystem;
  /** Metrics added to the source's (never overriding a key the source set). */
  metrics: Record<string, string>;
}

export interface VocabularyInput {
  type: NavarchEventType;
  system: HealthWatchSystem;
  fault?: 'raise' | 'clear' | 'none';
  severity?: Severity;
  /** The fault key (gpu0/xid/79, node/gpu_count, ...); its class (src/events/fault-class.ts) picks the XID a driver error carries. */
  key?: string;
  /** The source's metrics (read, never changed). */
  metrics?: Record<string, string>;
}

/** The XID a driver_error event has as its evidence, or null. */
function driverErrorXid(ev: VocabularyInput): { code: string; derived?: string } | null {
  const cls = faultClassOf(ev.key ?? '');
  const xid = ev.metrics?.xid_code;
  if (cls === 'gpu_lost') return { code: '79', derived: 'fallen_off_bus' };
  if (cls === 'gpu_count') return { code: '79', derived: 'gpu_count' };
  if (cls === 'gsp' && (xid === '119' || xid === '120')) return { code: xid };
  return null;
}

/** Relabelled: the agent's own type and system in metrics. */
function moved(ev: VocabularyInput, type: NavarchEventType, system: HealthWatchSystem, extra: Record<string, string> = {}): NavarchForm {
  return { type, system, metrics: { ...extra, agent_event_type: ev.type, agent_system: `DCGM_HEALTH_WATCH_${ev.system}` } };
}

/** The event_type, system and extra metrics an agent event is sent with. */
export function navarchForm(ev: VocabularyInput): NavarchForm {
  if (ev.fault === 'clear') {
    return {
      type: 'unknown',
      system: 'UNKNOWN',
      metrics: { fault: 'clear', cleared_event_type: ev.type, cleared_system: `DCGM_HEALTH_WATCH_${ev.system}` },
    };
  }
  if (ev.type === 'xid') return { type: ev.type, system: ev.system, metrics: {} };
  if (ev.severity === 'info')
    return ev.type === 'unknown' && ev.system === 'UNKNOWN' ? { type: 'unknown', system: 'UNKNOWN', metrics: {} } : moved(ev, 'unknown', 'UNKNOWN');
  if (ev.type === 'memory' && ev.severity === 'critical') return moved(ev, 'ecc_dbe', 'MEM');
  if (ev.type === 'driver_error' && (ev.severity === 'critical' || ev.severity === 'warning')) {
    const x = driverErrorXid(ev);
    const extra: Record<string, string> = {};
    if (x) {
      extra.xid_code = x.code;
      if (x.derived) extra.xid_derived = x.derived;
    }
    return moved(ev, 'xid', 'DRIVER', extra);
  }
  return { type: ev.type, system: ev.system, metrics: {} };
}
