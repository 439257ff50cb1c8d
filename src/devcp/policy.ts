/**
 * The outcome rules of Navarch's default health policy, for the development control plane.
 * Semantics follow Navarch's CEL evaluation: per event, rules in order, the first rule that
 * evaluates to true wins; a rule whose evaluation errors (missing metric, string compared with a
 * number) is skipped; the report's result is the worst across events.
 *
 * Metric values are typed like Navarch's parseMetricValue: base-10 int, then float, then bool,
 * otherwise string.
 */
import { HealthStatus, type HealthEvent } from '../gen/navarch/control_plane_pb.js';
import { eventTypeCelName, systemCelName } from '../controlplane/wire.js';

export const FATAL_XIDS: readonly number[] = [13, 31, 32, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 100, 119, 120];

type CelValue = number | boolean | string;

/** Go strconv-like typing of a metric value. */
export function parseMetricValue(s: string): CelValue {
  if (/^[+-]?\d+$/.test(s)) return Number(s);
  if (/^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)$/.test(s)) return Number(s);
  if (/^[+-]?(nan|inf|infinity)$/i.test(s)) return s.toLowerCase().includes('nan') ? NaN : s.startsWith('-') ? -Infinity : Infinity;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return s;
}

class EvalError extends Error {}

interface CelEvent {
  eventType: string;
  system: string;
  metrics: Map<string, CelValue>;
}

function num(ev: CelEvent, key: string): number {
  if (!ev.metrics.has(key)) throw new EvalError(`no such key: ${key}`);
  const v = ev.metrics.get(key);
  if (typeof v !== 'number') throw new EvalError(`no such overload for ${key}`);
  return v;
}

interface Rule {
  name: string;
  result: 'healthy' | 'degraded' | 'unhealthy';
  cond: (ev: CelEvent) => boolean;
}

export const DEFAULT_RULES: readonly Rule[] = [
  {
    name: 'fatal-xid',
    result: 'unhealthy',
    cond: (ev) => {
      if (ev.eventType !== 'xid') return false;
      if (!ev.metrics.has('xid_code')) throw new EvalError('no such key: xid_code');
      const v = ev.metrics.get('xid_code');
      return typeof v === 'number' && FATAL_XIDS.includes(v);
    },
  },
  { name: 'recoverable-xid', result: 'degraded', cond: (ev) => ev.eventType === 'xid' },
  {
    name: 'ecc-dbe',
    result: 'unhealthy',
    cond: (ev) =>
      ev.eventType === 'ecc_dbe' ||
      (ev.system === 'DCGM_HEALTH_WATCH_MEM' && ev.metrics.has('ecc_dbe_count') && num(ev, 'ecc_dbe_count') > 0),
  },
  { name: 'ecc-sbe-high', result: 'degraded', cond: (ev) => ev.eventType === 'ecc_sbe' && num(ev, 'ecc_sbe_count') > 100 },
  { name: 'thermal-critical', result: 'unhealthy', cond: (ev) => ev.eventType === 'thermal' && num(ev, 'temperature') >= 95 },
  { name: 'thermal-warning', result: 'degraded', cond: (ev) => ev.eventType === 'thermal' && num(ev, 'temperature') >= 85 },
  { name: 'nvlink-error', result: 'degraded', cond: (ev) => ev.eventType === 'nvlink' || ev.system === 'DCGM_HEALTH_WATCH_NVLINK' },
  { name: 'pcie-error', result: 'degraded', cond: (ev) => ev.eventType === 'pcie' || ev.system === 'DCGM_HEALTH_WATCH_PCIE' },
  { name: 'power-warning', result: 'degraded', cond: (ev) => ev.eventType === 'power' || ev.system === 'DCGM_HEALTH_WATCH_POWER' },
  { name: 'default', result: 'healthy', cond: () => true },
];

export interface EventVerdict {
  status: HealthStatus;
  rule: string;
}

export function evaluateEvent(ev: HealthEvent): EventVerdict {
  const cel: CelEvent = {
    eventType: eventTypeCelName(ev.eventType),
    system: systemCelName(ev.system),
    metrics: new Map(Object.entries(ev.metrics).map(([k, v]) => [k, parseMetricValue(v)])),
  };
  for (const r of DEFAULT_RULES) {
    let hit = false;
    try {
      hit = r.cond(cel);
    } catch (e) {
      if (e instanceof EvalError) continue;
      throw e;
    }
    if (hit) {
      const status =
        r.result === 'unhealthy' ? HealthStatus.UNHEALTHY : r.result === 'degraded' ? HealthStatus.DEGRADED : HealthStatus.HEALTHY;
      return { status, rule: r.name };
    }
  }
  return { status: HealthStatus.HEALTHY, rule: 'none' };
}

/** Worst verdict across events (unhealthy > degraded > healthy); null for no events. */
export function evaluateEvents(events: HealthEvent[]): EventVerdict | null {
  let worst: EventVerdict | null = null;
  for (const ev of events) {
    const v = evaluateEvent(ev);
    if (worst === null || v.status > worst.status) worst = v;
  }
  return worst;
}
