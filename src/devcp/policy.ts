/**
 * Navarch health policies evaluated with real CEL (@bufbuild/cel), the way Navarch's Go control
 * plane does it (pkg/health/policy.go + evaluator.go at 119c5e13):
 *
 * - the policy file is YAML `{version, metadata, rules: [{name, description, condition, result}]}`;
 *   at least one rule, names non-empty and unique, conditions non-empty, result one of healthy /
 *   degraded / unhealthy; every condition must compile;
 * - one CEL variable, `event`, a map(string, dyn) with timestamp (RFC 3339 string), gpu_index (int),
 *   gpu_uuid, system ("DCGM_HEALTH_WATCH_*"), event_type ("xid", ...), message and metrics;
 * - metric strings are typed like Go's parseMetricValue: ParseInt -> int, ParseFloat -> double,
 *   ParseBool -> bool, otherwise string;
 * - per event, rules in file order, the first rule that evaluates to bool true wins; a rule whose
 *   evaluation errors is skipped; the report's result is the worst over its events.
 *
 * The development control plane's default is deploy/navarch/navarch-default-policy.yaml, the
 * rules of Navarch's embedded pkg/health/default_policy.yaml.
 */
import { readFileSync } from 'node:fs';
import { celEnv, CelScalar, isCelError, mapType, parse, plan } from '@bufbuild/cel';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { HealthStatus, type HealthEvent } from '../gen/navarch/control_plane_pb.js';
import { eventTypeCelName, systemCelName } from '../controlplane/wire.js';
import { parseYamlStrict } from '../util/strict-yaml.js';

/** Where the development control plane's default policy lives (the package ships deploy/). */
export const DEFAULT_POLICY_URL = new URL('../../deploy/navarch/navarch-default-policy.yaml', import.meta.url);

/** Bound on a policy file read from disk. */
const MAX_POLICY_BYTES = 1024 * 1024;

export type PolicyResult = 'healthy' | 'degraded' | 'unhealthy';

/** A CEL value a metric string becomes. */
export type MetricValue = bigint | number | boolean | string;

type Program = (ctx: { event: Map<string, unknown> }) => unknown;

export interface PolicyRule {
  name: string;
  condition: string;
  result: PolicyResult;
  program: Program;
}

export interface HealthPolicy {
  name: string;
  rules: readonly PolicyRule[];
}

export interface EventVerdict {
  status: HealthStatus;
  /** The matching rule's name; 'none' when no rule matched. */
  rule: string;
}

const ENV = celEnv({ variables: { event: mapType(CelScalar.STRING, CelScalar.DYN) } });

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const DEC_FLOAT = /^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)$/;
const HEX_FLOAT = /^([+-]?)0[xX]([0-9a-fA-F]*)\.?([0-9a-fA-F]*)[pP]([+-]?\d+)$/;
const SPECIAL_FLOAT = /^([+-]?)(inf|infinity|nan)$/i;
const BOOL_TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const BOOL_FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** Go strconv.ParseFloat(s, 64) without its error cases (out of range is an error, as in Go). */
function parseGoFloat(s: string): number | null {
  const special = SPECIAL_FLOAT.exec(s);
  if (special) return special[2]!.toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
  let v: number;
  if (DEC_FLOAT.test(s)) v = Number(s);
  else {
    const hex = HEX_FLOAT.exec(s);
    if (!hex || hex[2]! + hex[3]! === '') return null;
    const mant = parseInt(hex[2]! + hex[3]! || '0', 16) / 16 ** hex[3]!.length;
    v = (hex[1] === '-' ? -1 : 1) * mant * 2 ** Number(hex[4]);
  }
  return Number.isFinite(v) ? v : null;
}

/** Types a metric string like Navarch's parseMetricValue (pkg/gpu/proto.go). */
export function parseMetricValue(s: string): MetricValue {
  if (/^[+-]?\d+$/.test(s)) {
    const i = BigInt(s);
    if (i >= INT64_MIN && i <= INT64_MAX) return i;
  }
  const f = parseGoFloat(s);
  if (f !== null) return f;
  if (BOOL_TRUE.has(s)) return true;
  if (BOOL_FALSE.has(s)) return false;
  return s;
}

/** Go's time.Format(time.RFC3339) of a UTC time: second precision, "Z". */
function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** The `event` map Navarch's eventToMap builds. */
export function eventToCelMap(ev: HealthEvent): Map<string, unknown> {
  const metrics = new Map<string, MetricValue>();
  for (const [k, v] of Object.entries(ev.metrics)) metrics.set(k, parseMetricValue(v));
  return new Map<string, unknown>([
    ['timestamp', rfc3339(ev.timestamp ? timestampMs(ev.timestamp) : 0)],
    ['gpu_index', BigInt(ev.gpuIndex)],
    ['gpu_uuid', ev.gpuUuid],
    ['system', systemCelName(ev.system)],
    ['event_type', eventTypeCelName(ev.eventType)],
    ['message', ev.message],
    ['metrics', metrics],
  ]);
}

function fail(msg: string): never {
  throw new Error(msg);
}

/** Parses and compiles a policy file's text like Navarch's ParsePolicy + NewEvaluator. Throws one line. */
export function parsePolicy(text: string): HealthPolicy {
  let doc: unknown;
  try {
    doc = parseYamlStrict(text);
  } catch (err) {
    fail(`parse policy YAML: ${(err as Error).message.split('\n')[0]!.replace(/:\s*$/, '')}`);
  }
  const root = (doc ?? {}) as Record<string, unknown>;
  if (typeof root !== 'object' || Array.isArray(root)) fail('parse policy YAML: not a mapping');
  const raw = root.rules ?? [];
  if (!Array.isArray(raw)) fail('parse policy YAML: rules is not a list');
  if (raw.length === 0) fail('validate policy: policy must have at least one rule');
  const seen = new Set<string>();
  const rules: PolicyRule[] = raw.map((r: unknown, i: number) => {
    const o = (r ?? {}) as Record<string, unknown>;
    const name = typeof o.name === 'string' ? o.name : '';
    const condition = typeof o.condition === 'string' ? o.condition : '';
    const result = o.result;
    if (!name) fail(`validate policy: rule ${i}: name is required`);
    if (seen.has(name)) fail(`validate policy: rule "${name}": duplicate rule name`);
    seen.add(name);
    if (!condition) fail(`validate policy: rule "${name}": condition is required`);
    if (result !== 'healthy' && result !== 'degraded' && result !== 'unhealthy') {
      fail(`validate policy: rule "${name}": invalid result "${String(result)}" (must be healthy, degraded, or unhealthy)`);
    }
    let program: Program;
    try {
      program = plan(ENV, parse(condition)) as unknown as Program;
    } catch (err) {
      fail(`compile rule "${name}": ${String((err as Error).message).split('\n')[0]}`);
    }
    return { name, condition, result, program };
  });
  const meta = (root.metadata ?? {}) as Record<string, unknown>;
  return { name: typeof meta.name === 'string' ? meta.name : '', rules };
}

/** Reads and compiles a policy file (bounded read). Throws one line naming the file. */
export function loadPolicyFile(path: string | URL): HealthPolicy {
  let text: string;
  try {
    const buf = readFileSync(path);
    if (buf.length > MAX_POLICY_BYTES) fail(`larger than ${MAX_POLICY_BYTES} bytes`);
    text = buf.toString('utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`health policy ${String(path)}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
  try {
    return parsePolicy(text);
  } catch (err) {
    throw new Error(`health policy ${String(path)}: ${(err as Error).message}`);
  }
}

let defaultPolicy: HealthPolicy | null = null;

/** Navarch's default policy (deploy/navarch/navarch-default-policy.yaml), compiled once. */
export function navarchDefaultPolicy(): HealthPolicy {
  return (defaultPolicy ??= loadPolicyFile(DEFAULT_POLICY_URL));
}

const STATUS: Record<PolicyResult, HealthStatus> = {
  healthy: HealthStatus.HEALTHY,
  degraded: HealthStatus.DEGRADED,
  unhealthy: HealthStatus.UNHEALTHY,
};

/** One event: the first rule that evaluates to true; erroring rules are skipped. */
export function evaluateEvent(ev: HealthEvent, policy: HealthPolicy = navarchDefaultPolicy()): EventVerdict {
  const event = eventToCelMap(ev);
  for (const r of policy.rules) {
    const out = r.program({ event });
    if (isCelError(out)) continue;
    if (out === true) return { status: STATUS[r.result], rule: r.name };
  }
  return { status: HealthStatus.HEALTHY, rule: 'none' };
}

/**
 * Worst verdict across events, as Navarch's Evaluate: it starts at healthy with no rule and only a
 * strictly worse event replaces it (so an all-healthy report names rule ''). Null for no events.
 */
export function evaluateEvents(events: HealthEvent[], policy: HealthPolicy = navarchDefaultPolicy()): EventVerdict | null {
  if (events.length === 0) return null;
  let worst: EventVerdict = { status: HealthStatus.HEALTHY, rule: '' };
  for (const ev of events) {
    const v = evaluateEvent(ev, policy);
    if (v.status > worst.status) worst = v;
  }
  return worst;
}
