/**
 * How the agent's events read in Navarch's vocabulary (event_type, system, metrics), so that the
 * control plane's CEL policy judges them as the agent does. One place for that rule; wire.ts
 * applies it to every event it converts.
 *
 * Clears: Navarch keeps no fault state, it judges each report's events on their own, and its
 * default policy judges an `ecc_dbe` event UNHEALTHY and any nvlink / pcie / power event DEGRADED
 * whatever its metrics. A clear sent with the fault's own event_type would therefore read as the
 * fault again. A clear goes out as event_type `unknown`, system `DCGM_HEALTH_WATCH_UNKNOWN`, which
 * only the default policy's catch-all `default` rule matches (HEALTHY), with the fault's own type
 * and system kept in metrics (`cleared_event_type`, `cleared_system`) and `fault=clear`.
 */
import type { HealthWatchSystem, NavarchEventType } from '../events/types.js';

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
  return { type: ev.type, system: ev.system, metrics: {} };
}
