/**
 * Reboot-aware escalation, the logic only (no I/O; the clock and the boot id are arguments). The
 * file it is kept in, and when it is written, are src/agent/fault-history.ts.
 *
 * A reset or a reboot cures most XIDs that need one. One that comes back after the node rebooted
 * twice (gpud: DefaultRebootThreshold 2, components/accelerator/nvidia/xid/threshold.go) is not
 * cured by rebooting: the agent then says "replace" at critical, as gpud says HARDWARE_INSPECTION,
 * and NVIDIA's RESET_GPU resolution reads "reset, then reboot, then replace if it persists".
 *
 * Counting follows gpud's evolveHealthyState (xid/health_state.go): per XID, the reboots since its
 * first occurrence within the look-back window; gpud counts every reboot after that occurrence,
 * whether or not the XID was seen in between. Unlike gpud, the agent counts per GPU (UUID), so the
 * GPU that keeps failing is the one flagged.
 *
 * Only XIDs the agent raises as a fault that a reset or reboot cures (action reset_gpu or reboot)
 * are tracked. XID 94 never escalates (NEVER_ESCALATES).
 */
import type { HealthEventInput, RecommendedAction } from '../events/types.js';

/** Reboots after the first occurrence at which a recurrence escalates (gpud DefaultRebootThreshold). */
export const REBOOT_THRESHOLD = 2;

/**
 * XIDs that never escalate, with the reason. gpud sets 94's reboot threshold to 1000 (threshold.go).
 */
export const NEVER_ESCALATES: ReadonlyMap<number, string> = new Map([
  [
    94,
    'a contained ECC error: the driver confined it to the application that used the memory (NVIDIA: RESTART_APP); a workload that keeps touching the page makes it recur across reboots without the GPU getting worse, and the memory signals that do mean a failing GPU (XID 48, 95, 140, row remapping) are judged on their own (gpud: reboot threshold 1000 for 94)',
  ],
]);

/** Occurrences older than this no longer count (gpud's XID look-back, its event store's 3-day retention). */
export const LOOKBACK_MS = 3 * 24 * 3600_000;

/** Bounds: boots remembered, boots remembered per fault, faults remembered (a full history with real UUIDs: ~20 KB). */
export const MAX_BOOTS = 16;
export const MAX_SEEN = 4;
export const MAX_ENTRIES = 128;
const MAX_ID = 96;

/** Actions a reset or reboot is expected to cure. */
const CURED_BY_REBOOT: ReadonlySet<RecommendedAction> = new Set(['reset_gpu', 'reboot']);

export interface HistoryBoot {
  /** Boot number: 1 for the first boot the agent saw, +1 for each new boot. */
  n: number;
  id: string;
  /** When the agent first ran in this boot. */
  ms: number;
}

export interface HistorySeen {
  /** Boot number (HistoryBoot.n). */
  n: number;
  /** First and last occurrence in that boot. */
  first: number;
  last: number;
}

export interface HistoryEntry {
  /** The GPU and code: "GPU-<uuid>/xid/79", or the event key when the GPU has no UUID. */
  id: string;
  /** The event key ("gpu3/xid/79"), to forget the entry when the fault is cleared by hand. */
  key: string;
  xid: number;
  seen: HistorySeen[];
}

export interface FaultHistoryData {
  v: 1;
  boots: HistoryBoot[];
  entries: HistoryEntry[];
}

export class HistoryFormatError extends Error {
  override name = 'HistoryFormatError';
}

export function emptyHistory(): FaultHistoryData {
  return { v: 1, boots: [], entries: [] };
}

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
const isId = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= MAX_ID;

/** Parse the stored form; throws HistoryFormatError with a one-line reason on anything else. */
export function parseHistory(text: string): FaultHistoryData {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new HistoryFormatError('not JSON');
  }
  const o = raw as Partial<FaultHistoryData> | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new HistoryFormatError('not an object');
  if (o.v !== 1) throw new HistoryFormatError(`unknown version ${JSON.stringify(o.v)?.slice(0, 20)}`);
  if (!Array.isArray(o.boots) || o.boots.length > MAX_BOOTS) throw new HistoryFormatError('bad boots');
  if (!Array.isArray(o.entries) || o.entries.length > MAX_ENTRIES) throw new HistoryFormatError('bad entries');
  const boots: HistoryBoot[] = [];
  for (const b of o.boots as unknown[]) {
    const x = b as HistoryBoot;
    if (typeof x !== 'object' || x === null || !isInt(x.n) || !isId(x.id) || !isInt(x.ms)) throw new HistoryFormatError('bad boot');
    if (boots.length > 0 && x.n <= (boots[boots.length - 1] as HistoryBoot).n) throw new HistoryFormatError('boots out of order');
    boots.push({ n: x.n, id: x.id, ms: x.ms });
  }
  const entries: HistoryEntry[] = [];
  for (const e of o.entries as unknown[]) {
    const x = e as HistoryEntry;
    if (typeof x !== 'object' || x === null || !isId(x.id) || !isId(x.key) || !isInt(x.xid)) throw new HistoryFormatError('bad entry');
    if (!Array.isArray(x.seen) || x.seen.length === 0 || x.seen.length > MAX_SEEN) throw new HistoryFormatError('bad entry');
    const seen: HistorySeen[] = [];
    for (const s of x.seen as unknown[]) {
      const y = s as HistorySeen;
      if (typeof y !== 'object' || y === null || !isInt(y.n) || !isInt(y.first) || !isInt(y.last) || y.last < y.first)
        throw new HistoryFormatError('bad entry');
      seen.push({ n: y.n, first: y.first, last: y.last });
    }
    entries.push({ id: x.id, key: x.key, xid: x.xid, seen });
  }
  return { v: 1, boots, entries };
}

/** What an escalation adds to an event (all strings, as HealthEvent metrics). */
export interface EscalationFacts {
  rebootsSinceFirst: number;
  bootsSeen: number;
  firstSeenMs: number;
  from: RecommendedAction;
}

export interface ObserveResult {
  input: HealthEventInput;
  /** True when the history changed in a way worth writing (a new fault or a new boot for one). */
  changed: boolean;
  escalation: EscalationFacts | null;
}

/** The XID code of an event the history tracks, else null. */
export function trackedXid(input: HealthEventInput): number | null {
  if (input.type !== 'xid' || input.fault !== 'raise' || !CURED_BY_REBOOT.has(input.action)) return null;
  const code = Number(input.metrics.xid_code);
  if (!Number.isSafeInteger(code) || code < 0 || NEVER_ESCALATES.has(code)) return null;
  return code;
}

/**
 * The identity of a tracked fault: the GPU by UUID (indices can change across reboots) and the
 * code; without a UUID, the event key ("gpu3/xid/79", or "pci/0000:41:00/xid/79" for a kernel-log
 * line no GPU matched), so two unknown GPUs are not one.
 */
export function entryId(input: HealthEventInput, code: number): string {
  return (input.gpuUuid ? `${input.gpuUuid}/xid/${code}` : input.key).slice(0, MAX_ID);
}

/** The event as escalated: critical, replace, with the history in its metrics. */
export function escalatedInput(input: HealthEventInput, f: EscalationFacts): HealthEventInput {
  const code = input.metrics.xid_code ?? '?';
  return {
    ...input,
    severity: 'critical',
    action: 'replace',
    message: `XID ${code} came back after ${f.rebootsSinceFirst} reboots (${f.bootsSeen} boots with it): replace the GPU. ${input.message}`,
    citation: `${input.citation}; escalated to replace: recurred after ${f.rebootsSinceFirst} reboots (threshold ${REBOOT_THRESHOLD}, as gpud's DefaultRebootThreshold)`,
    // Object.assign, not a spread with new keys: the spread is ~40x slower in V8 (bench/reboot-escalation.mjs).
    metrics: Object.assign({}, input.metrics, {
      reboot_escalated: 'true',
      reboots_since_first: String(f.rebootsSinceFirst),
      boots_seen: String(f.bootsSeen),
      first_seen_ms: String(f.firstSeenMs),
      escalated_from: f.from,
      reboot_threshold: String(REBOOT_THRESHOLD),
    }),
  };
}

/**
 * The fault history of one agent in one boot. `bootId` UNKNOWN (the id could not be read) disables
 * escalation: a restart could not be told from a reboot.
 */
export class RebootHistory {
  private readonly boots: HistoryBoot[];
  private readonly entries = new Map<string, HistoryEntry>();
  /** The most recently observed entry (a storm of one fault skips the reordering). */
  private lastId: string | null = null;
  /** This boot's number; null when the boot id is unknown. */
  readonly bootN: number | null;
  /** True when construction added this boot (the history should be written). */
  readonly newBoot: boolean;

  constructor(
    data: FaultHistoryData,
    readonly bootId: string | null,
    nowMs: number,
  ) {
    this.boots = data.boots.map((b) => ({ ...b }));
    for (const e of data.entries) this.entries.set(e.id, { ...e, seen: e.seen.map((s) => ({ ...s })) });
    if (bootId === null) {
      this.bootN = null;
      this.newBoot = false;
    } else {
      const known = this.boots.find((b) => b.id === bootId);
      if (known) {
        this.bootN = known.n;
        this.newBoot = false;
      } else {
        const n = (this.boots[this.boots.length - 1]?.n ?? 0) + 1;
        this.boots.push({ n, id: bootId.slice(0, MAX_ID), ms: nowMs });
        if (this.boots.length > MAX_BOOTS) this.boots.splice(0, this.boots.length - MAX_BOOTS);
        this.bootN = n;
        this.newBoot = true;
      }
    }
    this.prune(nowMs);
  }

  /** Boots the history remembers, oldest first. */
  bootsSeen(): number {
    return this.boots.length;
  }

  /** Faults the history remembers. */
  size(): number {
    return this.entries.size;
  }

  /**
   * Record an event and return it, escalated when it is a tracked XID that came back after
   * REBOOT_THRESHOLD reboots within the look-back window.
   */
  observe(input: HealthEventInput, nowMs: number): ObserveResult {
    const code = trackedXid(input);
    if (code === null || this.bootN === null) return { input, changed: false, escalation: null };
    const id = entryId(input, code);
    let changed = false;
    let e = this.entries.get(id);
    if (!e) {
      e = { id, key: input.key.slice(0, MAX_ID), xid: code, seen: [] };
      this.entries.set(id, e);
      changed = true;
    } else if (id !== this.lastId) {
      // Most recently used last: the oldest is the first evicted.
      this.entries.delete(id);
      this.entries.set(id, e);
      e.key = input.key.slice(0, MAX_ID);
    }
    this.lastId = id;
    if (e.seen.some((s) => nowMs - s.last > LOOKBACK_MS)) e.seen = e.seen.filter((s) => nowMs - s.last <= LOOKBACK_MS);
    const here = e.seen.find((s) => s.n === this.bootN);
    if (here) {
      here.last = Math.max(here.last, nowMs);
    } else {
      e.seen.push({ n: this.bootN, first: nowMs, last: nowMs });
      e.seen.sort((a, b) => a.n - b.n);
      if (e.seen.length > MAX_SEEN) e.seen.splice(0, e.seen.length - MAX_SEEN);
      changed = true;
    }
    while (this.entries.size > MAX_ENTRIES) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    const first = e.seen[0] as HistorySeen;
    const reboots = this.bootN - first.n;
    if (reboots < REBOOT_THRESHOLD) return { input, changed, escalation: null };
    const facts: EscalationFacts = { rebootsSinceFirst: reboots, bootsSeen: e.seen.length, firstSeenMs: first.first, from: input.action };
    return { input: escalatedInput(input, facts), changed, escalation: facts };
  }

  /** Forget the faults under an event key (an operator cleared the fault: start counting again, as gpud's SetHealthy). */
  forgetKey(key: string): boolean {
    let any = false;
    this.lastId = null;
    for (const [id, e] of this.entries) {
      if (e.key === key) {
        this.entries.delete(id);
        any = true;
      }
    }
    return any;
  }

  /** Drop occurrences out of the window and entries left with none. */
  private prune(nowMs: number): void {
    for (const [id, e] of this.entries) {
      e.seen = e.seen.filter((s) => nowMs - s.last <= LOOKBACK_MS);
      if (e.seen.length === 0) this.entries.delete(id);
    }
  }

  toJSON(): FaultHistoryData {
    return {
      v: 1,
      boots: this.boots.map((b) => ({ ...b })),
      entries: [...this.entries.values()].map((e) => ({ ...e, seen: e.seen.map((s) => ({ ...s })) })),
    };
  }
}
