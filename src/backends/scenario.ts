/**
 * Scripted faults for the fake backend. A scenario file (YAML or JSON) names faults and when to
 * inject them, relative to the start of the run:
 *
 *   name: xid-79-then-recover
 *   events:
 *     - { at: 5s, gpu: 3, fault: xid, xid: 79 }
 *     - { at: 20000, gpu: 3, fault: recover }
 *
 * Validation is strict and every error names the file and the entry.
 */
import { FILE_LIMITS, readBoundedTextSync, type BoundedFileError } from '../util/bounded-file.js';
import { parseYamlStrict } from '../util/strict-yaml.js';
import { parseDuration } from '../config/duration.js';
import { checkField, checkFaultFields, FAULT_KINDS, FAULT_SPECS, FaultSpecError, GPU_FIELD, isFaultKind } from './fault-spec.js';
import type { FakeFault, InjectableBackend } from './types.js';

export const MAX_SCENARIO_BYTES = FILE_LIMITS.scenario;
export const MAX_SCENARIO_EVENTS = 10_000;
/** Latest allowed `at`: 30 days. */
export const MAX_SCENARIO_AT_MS = 30 * 24 * 3_600_000;

export interface ScenarioEvent {
  atMs: number;
  fault: FakeFault;
}

export interface Scenario {
  name: string;
  /** Sorted by atMs (stable for equal times, in file order). */
  events: ScenarioEvent[];
}

export { FAULT_KINDS };

/** What the target node has, so faults that cannot apply fail at load time. */
export interface ScenarioLimits {
  gpuCount?: number;
  /** NVLink links per GPU (0: none). */
  nvlinkCount?: number;
}

export class ScenarioError extends Error {
  override name = 'ScenarioError';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseAt(v: unknown, where: string): number {
  let ms: number | null = null;
  if (typeof v === 'number') ms = Number.isFinite(v) && v >= 0 ? Math.round(v) : null;
  else if (typeof v === 'string') ms = /^\d+$/.test(v.trim()) ? Number(v.trim()) : parseDuration(v);
  if (ms === null) throw new ScenarioError(`${where}.at: expected milliseconds or a duration like "5s", got ${JSON.stringify(v)}`);
  if (ms > MAX_SCENARIO_AT_MS) throw new ScenarioError(`${where}.at: ${JSON.stringify(v)} is later than 30 days`);
  return ms;
}

/** A field checked by the one fault schema (src/backends/fault-spec.ts), its problem prefixed with the entry. */
function field<T>(where: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof FaultSpecError) throw new ScenarioError(err.field === null ? `${where}: ${err.message}` : `${where}.${err.field}: ${err.message}`);
    throw err;
  }
}

/**
 * Validate parsed scenario content. `label` prefixes every error (the file name). When
 * `gpuCount` is given, gpu indexes are checked against it.
 */
export function validateScenario(doc: unknown, label: string, opts: ScenarioLimits = {}): Scenario {
  if (!isPlainObject(doc)) throw new ScenarioError(`${label}: expected a mapping with "name" and "events"`);
  for (const k of Object.keys(doc)) {
    if (k !== 'name' && k !== 'events' && k !== 'description') throw new ScenarioError(`${label}: unknown key "${k}" (expected name, description, events)`);
  }
  const name = doc.name ?? '';
  if (typeof name !== 'string') throw new ScenarioError(`${label}: name: expected a string`);
  if (!Array.isArray(doc.events)) throw new ScenarioError(`${label}: events: expected a list`);
  if (doc.events.length > MAX_SCENARIO_EVENTS) throw new ScenarioError(`${label}: events: more than ${MAX_SCENARIO_EVENTS} entries`);
  const events: ScenarioEvent[] = doc.events.map((entry: unknown, i: number) => {
    const where = `${label}: events[${i}]`;
    if (!isPlainObject(entry)) throw new ScenarioError(`${where}: expected a mapping like { at: "5s", gpu: 0, fault: "xid", xid: 79 }`);
    const kind = entry.fault;
    if (typeof kind !== 'string') throw new ScenarioError(`${where}.fault: missing (one of ${FAULT_KINDS.join(', ')})`);
    if (!isFaultKind(kind)) throw new ScenarioError(`${where}.fault: unknown fault "${kind}"`);
    const fields = FAULT_SPECS[kind].fields;
    if (!('at' in entry)) throw new ScenarioError(`${where}.at: missing`);
    const atMs = parseAt(entry.at, where);
    let gpu: number | undefined;
    if (entry.gpu === undefined || entry.gpu === null) {
      if (kind !== 'recover') throw new ScenarioError(`${where}.gpu: missing`);
    } else {
      gpu = field(where, () => checkField(kind, 'gpu', GPU_FIELD, entry.gpu, 'file') as number);
      if (opts.gpuCount !== undefined && gpu >= opts.gpuCount) {
        throw new ScenarioError(`${where}.gpu: ${gpu} out of range (the node has ${opts.gpuCount} GPU${opts.gpuCount === 1 ? '' : 's'})`);
      }
    }
    for (const k of Object.keys(entry)) {
      if (k === 'at' || k === 'gpu' || k === 'fault' || Object.hasOwn(fields, k)) continue;
      const allowed = Object.keys(fields);
      throw new ScenarioError(`${where}.${k}: not a field of fault "${kind}"${allowed.length ? ` (expected ${allowed.join(', ')})` : ''}`);
    }
    const fault = field(where, () => checkFaultFields(kind, gpu, entry, 'file')) as FakeFault & { link?: number };
    if (kind === 'nvlink_down' && opts.nvlinkCount !== undefined && (fault.link as number) >= opts.nvlinkCount) {
      throw new ScenarioError(
        opts.nvlinkCount === 0
          ? `${where}.link: the GPUs have no NVLink`
          : `${where}.link: ${String(fault.link)} out of range (the GPUs have ${opts.nvlinkCount} links)`,
      );
    }
    return { atMs, fault };
  });
  const order = events.map((e, i) => ({ e, i }));
  order.sort((a, b) => a.e.atMs - b.e.atMs || a.i - b.i);
  return { name, events: order.map((o) => o.e) };
}

/** Parse scenario text; JSON when the file name ends in .json, YAML otherwise (YAML also reads JSON). */
export function parseScenario(text: string, label: string, opts: ScenarioLimits = {}): Scenario {
  let doc: unknown;
  try {
    doc = label.toLowerCase().endsWith('.json') ? JSON.parse(text) : parseYamlStrict(text, { maxAliasCount: 100 });
  } catch (err) {
    const msg = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    throw new ScenarioError(`${label}: not valid ${label.toLowerCase().endsWith('.json') ? 'JSON' : 'YAML'}: ${msg}`);
  }
  return validateScenario(doc, label, opts);
}

/** Reads a scenario file (bounded: a regular file of at most MAX_SCENARIO_BYTES, never blocks on a FIFO). */
export function readScenarioText(file: string): string {
  try {
    return readBoundedTextSync(file, MAX_SCENARIO_BYTES);
  } catch (err) {
    throw new ScenarioError(`${file}: cannot read scenario: ${(err as BoundedFileError).code ?? (err as Error).message}`);
  }
}

export async function loadScenario(file: string, opts: ScenarioLimits = {}): Promise<Scenario> {
  return parseScenario(readScenarioText(file), file, opts);
}

/** The timers a scenario runs on; tests pass a fake clock. Real timers are unref'd. */
export interface ScenarioClock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Longest delay one Node timer takes; a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2_147_483_647;

export const realClock: ScenarioClock = {
  setTimeout(fn, ms) {
    // `at` may be up to 30 days, past one timer's ~24.8 days: arm in steps.
    const h: { t?: NodeJS.Timeout } = {};
    const arm = (left: number): void => {
      const step = Math.min(left, MAX_TIMER_MS);
      h.t = setTimeout(() => (left > step ? arm(left - step) : fn()), step);
      h.t.unref();
    };
    arm(ms);
    return h;
  },
  clearTimeout(handle) {
    clearTimeout((handle as { t?: NodeJS.Timeout }).t);
  },
};

export interface ScenarioRun {
  /** Faults injected so far. */
  injected(): number;
  /** Resolves when every event was injected (or the run was stopped). */
  done: Promise<void>;
  stop(): void;
}

/**
 * Inject the scenario's faults at their times. A fault that fails at run time (e.g. a GPU out of
 * range on a smaller node) goes to `onError` and the run continues.
 */
export function runScenario(
  backend: InjectableBackend,
  scenario: Scenario,
  opts: { clock?: ScenarioClock; onError?: (err: Error, ev: ScenarioEvent) => void; onInject?: (ev: ScenarioEvent) => void } = {},
): ScenarioRun {
  const clock = opts.clock ?? realClock;
  const handles = new Set<unknown>();
  let count = 0;
  let remaining = scenario.events.length;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  if (remaining === 0) resolveDone();
  for (const ev of scenario.events) {
    const h = clock.setTimeout(() => {
      handles.delete(h);
      try {
        backend.inject(ev.fault);
        count++;
        opts.onInject?.(ev);
      } catch (err) {
        opts.onError?.(err instanceof Error ? err : new Error(String(err)), ev);
      }
      if (--remaining === 0) resolveDone();
    }, ev.atMs);
    handles.add(h);
  }
  return {
    injected: () => count,
    done,
    stop: () => {
      for (const h of handles) clock.clearTimeout(h);
      handles.clear();
      resolveDone();
    },
  };
}
