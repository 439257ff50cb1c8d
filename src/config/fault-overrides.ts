/**
 * The config file's `faultOverrides`: an operator's severity and action overrides and
 * suppressions, per XID code and per fault class (src/events/fault-class.ts).
 *
 *   faultOverrides:
 *     xid:
 *       43: { severity: critical, action: reset_gpu }
 *       31: { suppress: true }
 *     classes:
 *       persistence_mode: { suppress: true }
 *       clock: { severity: info }
 *
 * Validated here, at start, into FaultOverrides; every problem is one line naming the key (exit 2).
 * Applied in one place, src/events/overrides.ts.
 */
import type { RecommendedAction, Severity } from '../events/types.js';
import { isKnownFaultClass } from '../events/fault-class.js';

export const SEVERITIES: readonly Severity[] = ['info', 'warning', 'critical'];
export const ACTIONS: readonly RecommendedAction[] = ['none', 'restart_app', 'reset_gpu', 'reboot', 'replace'];
/** At most this many rules in all: each is one label value of navarch_agent_suppressed_events_total. */
export const MAX_FAULT_RULES = 256;
export const MAX_XID_CODE = 65_535;

export interface FaultRule {
  /** Its name in /status and metrics: "xid:43", "class:persistence_mode". */
  rule: string;
  severity?: Severity;
  action?: RecommendedAction;
  suppress: boolean;
}

export interface FaultOverrides {
  xid: ReadonlyMap<number, FaultRule>;
  classes: ReadonlyMap<string, FaultRule>;
}

export const NO_FAULT_OVERRIDES: FaultOverrides = Object.freeze({ xid: new Map(), classes: new Map() });

/** A bad override: the message is one line naming the key. */
export class FaultOverrideError extends Error {
  override name = 'FaultOverrideError';
}

const RULE_FIELDS = new Set(['severity', 'action', 'suppress']);

function isMapping(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function parseRule(raw: unknown, key: string, rule: string): FaultRule {
  if (!isMapping(raw)) throw new FaultOverrideError(`key "${key}": expected a mapping with severity, action and/or suppress`);
  const out: FaultRule = { rule, suppress: false };
  for (const [field, v] of Object.entries(raw)) {
    if (!RULE_FIELDS.has(field)) throw new FaultOverrideError(`key "${key}.${field}": unknown field (expected severity, action or suppress)`);
    if (field === 'suppress') {
      if (typeof v !== 'boolean') throw new FaultOverrideError(`key "${key}.suppress": expected true or false`);
      out.suppress = v;
    } else if (field === 'severity') {
      if (typeof v !== 'string' || !(SEVERITIES as readonly string[]).includes(v)) {
        throw new FaultOverrideError(`key "${key}.severity": expected one of ${SEVERITIES.join(', ')}, got ${JSON.stringify(v)}`);
      }
      out.severity = v as Severity;
    } else {
      if (typeof v !== 'string' || !(ACTIONS as readonly string[]).includes(v)) {
        throw new FaultOverrideError(`key "${key}.action": expected one of ${ACTIONS.join(', ')}, got ${JSON.stringify(v)}`);
      }
      out.action = v as RecommendedAction;
    }
  }
  if (out.suppress && (out.severity !== undefined || out.action !== undefined)) {
    throw new FaultOverrideError(`key "${key}": suppress: true cannot be combined with severity or action`);
  }
  if (!out.suppress && out.severity === undefined && out.action === undefined) {
    throw new FaultOverrideError(`key "${key}": needs severity, action or suppress: true`);
  }
  return out;
}

/** Validate the `faultOverrides` value of a config file. Throws FaultOverrideError (one line, naming the key). */
export function parseFaultOverrides(raw: unknown): FaultOverrides {
  const base = 'faultOverrides';
  if (raw === null || raw === undefined) return NO_FAULT_OVERRIDES;
  if (!isMapping(raw)) throw new FaultOverrideError(`key "${base}": expected a mapping with xid and/or classes`);
  const xid = new Map<number, FaultRule>();
  const classes = new Map<string, FaultRule>();
  let rules = 0;
  const count = (key: string): void => {
    if (++rules > MAX_FAULT_RULES) throw new FaultOverrideError(`key "${key}": more than ${MAX_FAULT_RULES} override rules`);
  };
  for (const [section, body] of Object.entries(raw)) {
    const sk = `${base}.${section}`;
    if (section !== 'xid' && section !== 'classes') throw new FaultOverrideError(`key "${sk}": unknown key (expected xid or classes)`);
    if (body === null || body === undefined) continue;
    if (!isMapping(body)) throw new FaultOverrideError(`key "${sk}": expected a mapping`);
    for (const [name, rule] of Object.entries(body)) {
      const k = `${sk}.${name}`;
      if (section === 'xid') {
        if (!/^\d{1,5}$/.test(name) || Number(name) < 1 || Number(name) > MAX_XID_CODE) {
          throw new FaultOverrideError(`key "${k}": an XID code must be a whole number 1..${MAX_XID_CODE}`);
        }
        count(k);
        xid.set(Number(name), parseRule(rule, k, `xid:${Number(name)}`));
      } else {
        if (!isKnownFaultClass(name)) {
          throw new FaultOverrideError(`key "${k}": unknown fault class (see docs/backends-and-detection.md, "Overrides and suppressions")`);
        }
        count(k);
        classes.set(name, parseRule(rule, k, `class:${name}`));
      }
    }
  }
  return { xid, classes };
}

/** The rules as plain JSON (for /status and logs). */
export function faultOverridesJson(o: FaultOverrides): Array<Omit<FaultRule, 'suppress'> & { suppress?: true }> {
  return [...o.xid.values(), ...o.classes.values()].map((r) => ({
    rule: r.rule,
    ...(r.severity ? { severity: r.severity } : {}),
    ...(r.action ? { action: r.action } : {}),
    ...(r.suppress ? { suppress: true as const } : {}),
  }));
}
