/**
 * deploy/navarch/health-policy.yaml, the Navarch policy shipped with the agent, evaluated with real
 * CEL (src/devcp/policy.ts) against the agent's events as wire.ts sends them: every XID in the
 * agent's catalog, every event type x system x severity, as pushed events and as re-asserted
 * active faults, and every clear. Verdict = the agent's: critical -> UNHEALTHY, warning ->
 * DEGRADED, info -> HEALTHY, clear -> HEALTHY.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { eventToProto, faultToProto } from '../../src/controlplane/wire.js';
import { evaluateEvent, loadPolicyFile } from '../../src/devcp/policy.js';
import type { ActiveFault, HealthEvent, HealthWatchSystem, NavarchEventType, Severity } from '../../src/events/types.js';
import { HealthStatus } from '../../src/gen/navarch/control_plane_pb.js';
import { XID_CATALOG } from '../../src/xid/catalog.js';

const policy = loadPolicyFile(fileURLToPath(new URL('../../deploy/navarch/health-policy.yaml', import.meta.url)));
const TYPES: NavarchEventType[] = ['unknown', 'xid', 'thermal', 'power', 'memory', 'nvlink', 'pcie', 'driver_error', 'ecc_sbe', 'ecc_dbe'];
const SYSTEMS: HealthWatchSystem[] = ['UNKNOWN', 'PCIE', 'NVLINK', 'PMU', 'MCU', 'MEM', 'SM', 'INFOROM', 'THERMAL', 'POWER', 'DRIVER', 'NVSWITCH'];
const SEVERITIES: Severity[] = ['critical', 'warning', 'info'];
const AGENT: Record<Severity, HealthStatus> = { critical: HealthStatus.UNHEALTHY, warning: HealthStatus.DEGRADED, info: HealthStatus.HEALTHY };

function event(
  type: NavarchEventType,
  system: HealthWatchSystem,
  severity: Severity,
  fault: HealthEvent['fault'],
  metrics: Record<string, string> = {},
): HealthEvent {
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
    severity,
    action: 'none',
    citation: '',
    source: 'fake',
    key: `gpu0/${type}`,
    fault,
    count: 1,
  } as HealthEvent;
}

describe('the shipped Navarch policy judges as the agent does (real CEL)', () => {
  it(`every XID in the agent's catalog (${XID_CATALOG.length} codes)`, () => {
    const counts: Record<string, number> = {};
    for (const x of XID_CATALOG) {
      const pb = eventToProto(event('xid', 'DRIVER', x.severity, 'raise', { xid_code: String(x.code) }));
      expect(evaluateEvent(pb, policy).status, `XID ${x.code} (${x.severity})`).toBe(AGENT[x.severity]);
      counts[x.severity] = (counts[x.severity] ?? 0) + 1;
      const dflt = HealthStatus[evaluateEvent(pb).status]!.toLowerCase();
      counts[`${x.severity}->default:${dflt}`] = (counts[`${x.severity}->default:${dflt}`] ?? 0) + 1;
    }
    console.log(`XID catalog by agent severity, and Navarch's default-policy verdict: ${JSON.stringify(counts)}`);
  });

  it(`every event type x system x severity (${TYPES.length * SYSTEMS.length * SEVERITIES.length}), pushed and re-asserted, and every clear`, () => {
    for (const type of TYPES) {
      for (const system of SYSTEMS) {
        for (const severity of SEVERITIES) {
          const metrics = { xid_code: '79', ecc_dbe_count: '1', temperature: '99', ecc_sbe_count: '500' };
          for (const fault of ['raise', 'none'] as const) {
            expect(evaluateEvent(eventToProto(event(type, system, severity, fault, metrics)), policy).status, `${type}/${system}/${severity}/${fault}`).toBe(
              AGENT[severity],
            );
          }
          const active = {
            key: `gpu0/${type}`,
            type,
            system,
            severity,
            action: 'none',
            gpuIndex: 0,
            gpuUuid: 'GPU-0',
            metrics,
            message: 'm',
            sinceMs: 1_700_000_000_000,
            lastSeenMs: 1_700_000_000_000,
            count: 1,
            lastEventId: 'e1',
          } as unknown as ActiveFault;
          expect(evaluateEvent(faultToProto(active), policy).status, `active ${type}/${system}/${severity}`).toBe(AGENT[severity]);
          expect(evaluateEvent(eventToProto(event(type, system, severity, 'clear', metrics)), policy), `clear ${type}/${system}`).toEqual({
            status: HealthStatus.HEALTHY,
            rule: 'agent-clear',
          });
        }
      }
    }
  });

  it("events without the agent's metrics fall through to Navarch's default rules", () => {
    const ev = eventToProto(event('xid', 'DRIVER', 'critical', 'raise', { xid_code: '79' }));
    delete ev.metrics.severity;
    expect(evaluateEvent(ev, policy)).toEqual({ status: HealthStatus.UNHEALTHY, rule: 'fatal-xid' });
  });
});
