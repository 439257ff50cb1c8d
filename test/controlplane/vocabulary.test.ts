/**
 * Clears in Navarch's vocabulary (src/controlplane/vocabulary.ts via wire.ts eventToProto), judged
 * with real CEL over Navarch's default policy (src/devcp/policy.ts).
 */
import { describe, expect, it } from 'vitest';
import { eventToProto } from '../../src/controlplane/wire.js';
import { evaluateEvent } from '../../src/devcp/policy.js';
import type { HealthEvent, HealthWatchSystem, NavarchEventType } from '../../src/events/types.js';
import { HealthEventType, HealthStatus, HealthWatchSystem as PbSystem } from '../../src/gen/navarch/control_plane_pb.js';

const TYPES: NavarchEventType[] = ['unknown', 'xid', 'thermal', 'power', 'memory', 'nvlink', 'pcie', 'driver_error', 'ecc_sbe', 'ecc_dbe'];
const SYSTEMS: HealthWatchSystem[] = ['UNKNOWN', 'PCIE', 'NVLINK', 'PMU', 'MCU', 'MEM', 'SM', 'INFOROM', 'THERMAL', 'POWER', 'DRIVER', 'NVSWITCH'];
// Metrics a fault's own clear could carry that the default policy reads.
const METRICS: Array<Record<string, string>> = [
  {},
  { xid_code: '79' },
  { ecc_dbe_count: '3' },
  { ecc_dbe_count: '0' },
  { temperature: '96' },
  { ecc_sbe_count: '500' },
];

function agentEvent(type: NavarchEventType, system: HealthWatchSystem, fault: HealthEvent['fault'], metrics: Record<string, string>): HealthEvent {
  return {
    id: 'e1',
    type,
    system,
    gpuIndex: 0,
    gpuUuid: 'GPU-0',
    metrics,
    message: 'm',
    timeMs: 1_700_000_000_000,
    firstTimeMs: 1_700_000_000_000,
    lastTimeMs: 1_700_000_000_000,
    severity: fault === 'clear' ? 'info' : 'critical',
    action: 'none',
    citation: '',
    source: 'fake',
    key: `gpu0/${type}`,
    fault,
    count: 1,
  } as HealthEvent;
}

describe('clears under Navarch default policy (real CEL)', () => {
  it(`every clear (${TYPES.length} types x ${SYSTEMS.length} systems x ${METRICS.length} metric sets) is judged HEALTHY and names what it cleared`, () => {
    let n = 0;
    for (const type of TYPES) {
      for (const system of SYSTEMS) {
        for (const metrics of METRICS) {
          const pb = eventToProto(agentEvent(type, system, 'clear', metrics));
          expect(evaluateEvent(pb), `${type}/${system} ${JSON.stringify(metrics)}`).toEqual({ status: HealthStatus.HEALTHY, rule: 'default' });
          expect(pb.eventType).toBe(HealthEventType.UNKNOWN);
          expect(pb.system).toBe(PbSystem.UNKNOWN);
          expect(pb.metrics).toMatchObject({ fault: 'clear', cleared_event_type: type, cleared_system: `DCGM_HEALTH_WATCH_${system}`, ...metrics });
          n++;
        }
      }
    }
    expect(n).toBe(720);
  });

  it('raises keep their own event_type (an ECC DBE raise stays UNHEALTHY, an NVLink one DEGRADED)', () => {
    expect(evaluateEvent(eventToProto(agentEvent('ecc_dbe', 'MEM', 'raise', { ecc_dbe_count: '1' }))).status).toBe(HealthStatus.UNHEALTHY);
    expect(evaluateEvent(eventToProto(agentEvent('nvlink', 'NVLINK', 'raise', { link_id: '3' }))).status).toBe(HealthStatus.DEGRADED);
    expect(eventToProto(agentEvent('thermal', 'THERMAL', 'none', { temperature: '96' })).eventType).toBe(HealthEventType.THERMAL);
  });
});
