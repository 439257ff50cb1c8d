/**
 * The node's whole current state, as it rides on every ReportHealth (pushes, periodic reports,
 * re-registration, shutdown). Navarch's server recomputes HealthStatus from each report alone
 * (its `results` plus one `cel_policy` result over its `events`), so a report that carried only
 * the new events would read HEALTHY while an older critical fault is still active.
 *
 * Two verdict modes (config `verdict`, flag `--verdict`):
 * - `agent` (default): one check result `navarch_agent` judged from the store's active faults:
 *   UNHEALTHY while any is critical, DEGRADED while any is a warning, HEALTHY otherwise.
 * - `policy`: no `navarch_agent` result; the active faults are re-sent as events on every report
 *   (at most `cap`, critical first, then warning, newest first) so that the control plane's CEL
 *   policy judges the whole state.
 * Pure: no I/O, no clock of its own.
 */
import type { ActiveFault } from '../events/types.js';
import type { CheckResult } from './model.js';

export type VerdictMode = 'agent' | 'policy';
export const VERDICT_MODES: readonly VerdictMode[] = ['agent', 'policy'];

/** The agent's own check result's name. */
export const AGENT_VERDICT_CHECK = 'navarch_agent';
/** Active faults re-sent as events per report in `policy` mode. */
export const DEFAULT_STATE_CAP = 64;
/** Fault keys listed in the `navarch_agent` result's details (the status counts every fault). */
export const VERDICT_DETAIL_CAP = 16;

const RANK: Record<string, number> = { critical: 0, warning: 1 };

/** Critical first, then warning (info faults never judge the node), newest first within each. */
export function judgedFaults(faults: readonly ActiveFault[]): ActiveFault[] {
  return faults
    .filter((f) => f.severity in RANK)
    .sort((a, b) => RANK[a.severity]! - RANK[b.severity]! || b.lastSeenMs - a.lastSeenMs || (a.key < b.key ? -1 : 1));
}

/** The `navarch_agent` result for this set of active faults (HEALTHY when none judges the node). */
export function agentVerdict(faults: readonly ActiveFault[], nowMs: number, cap = VERDICT_DETAIL_CAP): CheckResult {
  const judged = judgedFaults(faults);
  const critical = judged.filter((f) => f.severity === 'critical').length;
  const warning = judged.length - critical;
  const details: Record<string, string> = { critical: String(critical), warning: String(warning) };
  for (const f of judged.slice(0, cap)) details[`fault.${f.key}`] = `${f.severity}: ${f.message}`.slice(0, 256);
  if (judged.length > cap) details.omitted = String(judged.length - cap);
  if (judged.length === 0) return { name: AGENT_VERDICT_CHECK, status: 'healthy', message: 'no active critical or warning faults', details, timeMs: nowMs };
  const worst = critical > 0 ? judged.slice(0, critical) : judged;
  const keys = worst
    .slice(0, 8)
    .map((f) => f.key)
    .join(', ');
  return {
    name: AGENT_VERDICT_CHECK,
    status: critical > 0 ? 'unhealthy' : 'degraded',
    message: `${worst.length} active ${critical > 0 ? 'critical' : 'warning'} fault(s): ${keys}${worst.length > 8 ? ', ...' : ''}`,
    details,
    timeMs: nowMs,
  };
}

export interface StatePart {
  /** Check results every report carries (the agent's verdict in `agent` mode). */
  results: CheckResult[];
  /** Active faults to re-send as events (`policy` mode), capped, worst first. */
  faults: ActiveFault[];
  /** Judged faults left out over the cap (policy mode). */
  omitted: number;
}

/**
 * What every report adds to its new events so that it states the whole state. `skipKeys`: fault
 * keys whose events are already in this report (not re-sent twice).
 */
export function wholeState(
  mode: VerdictMode,
  faults: readonly ActiveFault[],
  nowMs: number,
  opts: { cap?: number; skipKeys?: ReadonlySet<string> } = {},
): StatePart {
  const cap = Math.max(1, opts.cap ?? DEFAULT_STATE_CAP);
  if (mode === 'agent') return { results: [agentVerdict(faults, nowMs)], faults: [], omitted: 0 };
  const judged = judgedFaults(faults).filter((f) => !opts.skipKeys?.has(f.key));
  return { results: [], faults: judged.slice(0, cap), omitted: Math.max(0, judged.length - cap) };
}
