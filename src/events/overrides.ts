/**
 * The one place where an operator's `faultOverrides` (src/config/fault-overrides.ts) meet a
 * detection: every classified event passes here on its way into the store (Agent.ingest), from
 * every source (NVML events, kernel log, telemetry, backend selection).
 *
 * Which rule: an XID event (type xid) takes the rule for its code; any event (an XID without one
 * too) takes the rule of its fault class, the most specific first ("clock/hw_slowdown" before
 * "clock"). What it does:
 * - suppress: the event is not stored, sent or raised; it is counted (SuppressionCounts). A clear
 *   still passes while a fault under its key is active (one raised before the rule existed), so it
 *   can end; with none, the clear is dropped as well (nothing to clear).
 * - severity / action: replace the source's; for an XID, the action also decides whether it raises
 *   a fault (reset_gpu, reboot, replace do, as in xidEventInput). Clears are never changed. The
 *   event says so: `override` in its metrics and in its citation.
 */
import type { FaultOverrides, FaultRule } from '../config/fault-overrides.js';
import { isPersistentAction } from '../xid/catalog.js';
import { classCovers, faultClassOf } from './fault-class.js';
import type { HealthEventInput } from './types.js';

export type OverrideOutcome =
  { suppressed: false; input: HealthEventInput; rule: FaultRule | null } | { suppressed: true; input: HealthEventInput; rule: FaultRule };

/** The rule for an event, or null: the XID code's, else the most specific class rule. */
export function ruleFor(input: Pick<HealthEventInput, 'type' | 'key' | 'metrics'>, o: FaultOverrides): FaultRule | null {
  if (input.type === 'xid' && o.xid.size > 0) {
    const code = Number(input.metrics.xid_code);
    const hit = Number.isSafeInteger(code) ? o.xid.get(code) : undefined;
    if (hit) return hit;
  }
  if (o.classes.size === 0) return null;
  const cls = faultClassOf(input.key);
  let best: { name: string; rule: FaultRule } | null = null;
  for (const [name, rule] of o.classes) {
    if (classCovers(name, cls) && (best === null || name.length > best.name.length)) best = { name, rule };
  }
  return best?.rule ?? null;
}

/**
 * Apply the overrides to one event. `hasActiveFault(key)` tells whether a fault is active under a
 * key (a clear of a suppressed class passes only then). Never mutates `input`.
 */
export function applyFaultOverrides(input: HealthEventInput, o: FaultOverrides, hasActiveFault: (key: string) => boolean): OverrideOutcome {
  const rule = ruleFor(input, o);
  if (rule === null) return { suppressed: false, input, rule: null };
  if (input.fault === 'clear') {
    if (rule.suppress && !hasActiveFault(input.key)) return { suppressed: true, input, rule };
    return { suppressed: false, input, rule: null };
  }
  if (rule.suppress) return { suppressed: true, input, rule };
  const out: HealthEventInput = { ...input, metrics: { ...input.metrics, override: rule.rule } };
  if (rule.severity) out.severity = rule.severity;
  if (rule.action) {
    out.action = rule.action;
    if (input.type === 'xid') out.fault = isPersistentAction(rule.action) ? 'raise' : 'none';
  }
  out.citation = `${input.citation}; operator override ${rule.rule} (config faultOverrides)`;
  return { suppressed: false, input: out, rule };
}

export interface SuppressedRule {
  rule: string;
  count: number;
  lastKey: string;
  lastMs: number;
}

/** What the suppressions held back, per rule: bounded by the number of rules (MAX_FAULT_RULES). */
export class SuppressionCounts {
  private readonly byRule = new Map<string, SuppressedRule>();
  private totalCount = 0;

  record(rule: FaultRule, input: HealthEventInput): void {
    const n = input.count ?? 1;
    this.totalCount += n;
    const cur = this.byRule.get(rule.rule) ?? { rule: rule.rule, count: 0, lastKey: '', lastMs: 0 };
    cur.count += n;
    cur.lastKey = input.key;
    cur.lastMs = input.timeMs;
    this.byRule.set(rule.rule, cur);
  }

  get total(): number {
    return this.totalCount;
  }

  rules(): SuppressedRule[] {
    return [...this.byRule.values()].map((r) => ({ ...r }));
  }
}
