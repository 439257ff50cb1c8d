/**
 * What the store's log holds, and the rules a value must meet to get in (from a producer) or
 * back in (from the log at open). A record is framed by ./log-format.ts; its shape is checked
 * here, so a record with a valid CRC but a foreign shape never reaches the ledger (and so is
 * never handed to the sender).
 */
import type { ActiveFault, EventSource, HealthEvent, HealthEventInput, RecommendedAction } from '../events/types.js';

export const MAX_METRICS = 64;
export const MAX_MESSAGE = 2048;
export const MAX_KEY = 256;
/**
 * Largest record accepted from the log at open (framing included). The largest record the store
 * itself writes is a put with MAX_METRICS metrics of the longest key and value, a message and a
 * citation: under 100 KiB even with JSON escaping of every character.
 */
export const MAX_RECORD_BYTES = 256 * 1024;

/** Per-source occurrence count and latest time, kept for cross-source merging. */
export interface SourceState {
  n: number;
  t: number;
}
export type SourceMap = Partial<Record<EventSource, SourceState>>;

export type LogRecord =
  | { t: 'h'; v: 1; bootId: string; ms: number }
  | { t: 'p'; e: HealthEvent; s: SourceMap }
  | { t: 'a'; id: string }
  | { t: 'f'; f: ActiveFault; b: string }
  | { t: 'u'; k: string };

export const SEVERITY_RANK = { info: 0, warning: 1, critical: 2 } as const;
export const ACTION_RANK: Record<RecommendedAction, number> = { none: 0, restart_app: 1, reset_gpu: 2, reboot: 3, replace: 4 };
const SEVERITIES = new Set<string>(Object.keys(SEVERITY_RANK));
const ACTIONS = new Set<string>(Object.keys(ACTION_RANK));
const FAULTS = new Set<string>(['raise', 'clear', 'none']);

/** Validate an input; returns a one-line reason or null. */
export function validateInput(input: HealthEventInput): string | null {
  if (!input || typeof input !== 'object') return 'event input must be an object';
  if (typeof input.key !== 'string' || input.key.length === 0 || input.key.length > MAX_KEY)
    return `event key must be a non-empty string of at most ${MAX_KEY} chars`;
  if (!SEVERITIES.has(input.severity)) return `bad severity "${String(input.severity)}" for ${input.key}`;
  if (!ACTIONS.has(input.action)) return `bad action "${String(input.action)}" for ${input.key}`;
  if (!FAULTS.has(input.fault)) return `bad fault "${String(input.fault)}" for ${input.key}`;
  if (!Number.isFinite(input.timeMs)) return `timeMs must be a finite number for ${input.key}`;
  if (!Number.isInteger(input.gpuIndex)) return `gpuIndex must be an integer for ${input.key}`;
  if (typeof input.source !== 'string') return `source must be a string for ${input.key}`;
  if (!input.metrics || typeof input.metrics !== 'object') return `metrics must be an object for ${input.key}`;
  if (input.count !== undefined && !(Number.isSafeInteger(input.count) && input.count >= 1 && input.count <= 1e12))
    return `count must be a positive integer for ${input.key} (got ${String(input.count)})`;
  return null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function badMetrics(m: unknown): string | null {
  if (!isObject(m)) return 'metrics is not an object';
  const entries = Object.entries(m);
  if (entries.length > MAX_METRICS) return `more than ${MAX_METRICS} metrics`;
  for (const [k, v] of entries) if (typeof v !== 'string') return `metric "${k.slice(0, 40)}" is not a string`;
  return null;
}

const str = (v: unknown, max: number): boolean => typeof v === 'string' && v.length <= max;
const time = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
const posCount = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 1;

/** The fields an event and a fault share, as the store itself writes them. */
function badCommon(o: Record<string, unknown>): string | null {
  if (!str(o.key, MAX_KEY) || (o.key as string).length === 0) return 'bad key';
  if (!SEVERITIES.has(o.severity as string)) return 'bad severity';
  if (!ACTIONS.has(o.action as string)) return 'bad action';
  if (!Number.isInteger(o.gpuIndex)) return 'bad gpuIndex';
  if (typeof o.gpuUuid !== 'string') return 'bad gpuUuid';
  if (typeof o.type !== 'string' || typeof o.system !== 'string') return 'bad type or system';
  if (typeof o.message !== 'string') return 'bad message';
  return badMetrics(o.metrics);
}

function badEvent(e: unknown): string | null {
  if (!isObject(e)) return 'event is not an object';
  if (!str(e.id, 64) || (e.id as string).length === 0) return 'bad id';
  const common = badCommon(e);
  if (common) return common;
  if (!FAULTS.has(e.fault as string)) return 'bad fault';
  if (typeof e.source !== 'string') return 'bad source';
  if (typeof e.citation !== 'string') return 'bad citation';
  if (!posCount(e.count)) return 'bad count';
  if (!time(e.timeMs) || !time(e.firstTimeMs) || !time(e.lastTimeMs)) return 'bad time';
  return null;
}

function badSources(s: unknown): string | null {
  if (s === undefined) return null;
  if (!isObject(s)) return 'sources is not an object';
  for (const [name, v] of Object.entries(s)) {
    if (!isObject(v) || !Number.isSafeInteger(v.n) || (v.n as number) < 0 || !time(v.t)) return `bad source state "${name.slice(0, 40)}"`;
  }
  return null;
}

function badFault(f: unknown): string | null {
  if (!isObject(f)) return 'fault is not an object';
  const common = badCommon(f);
  if (common) return common;
  if (!posCount(f.count)) return 'bad count';
  if (!time(f.sinceMs) || !time(f.lastSeenMs)) return 'bad time';
  if (typeof f.lastEventId !== 'string') return 'bad lastEventId';
  return null;
}

/** Why a decoded log record is not one the store wrote (null: it is). */
export function validateRecord(r: unknown): string | null {
  if (!isObject(r)) return 'record is not an object';
  switch (r.t) {
    case 'h':
      return typeof r.bootId === 'string' ? null : 'bad header';
    case 'p':
      return badEvent(r.e) ?? badSources(r.s);
    case 'a':
      return typeof r.id === 'string' ? null : 'bad ack';
    case 'f':
      return badFault(r.f) ?? (typeof r.b === 'string' ? null : 'bad boot id');
    case 'u':
      return typeof r.k === 'string' ? null : 'bad unfault';
    default:
      return `unknown record type ${JSON.stringify(r.t)?.slice(0, 20) ?? 'undefined'}`;
  }
}
