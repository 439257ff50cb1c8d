/**
 * The event store's state in memory, with no I/O: pending events and how storms coalesce into
 * them (also across sources), acknowledgements, shedding within bounds, and active faults.
 *
 * Every change marks what it touched dirty; whoever persists the ledger (the journal, through
 * ./event-store.ts) takes the dirty set, writes it and reveals the batch once it is in the log
 * file (written; its fdatasync may still run). A new event is listed by pending() for the sender
 * only once the batch that first writes it has been revealed (isVisible: the one place of that
 * rule).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { ActiveFault, EventSource, HealthEvent, HealthEventInput, Severity } from '../events/types.js';
import type { AppendResult } from './types.js';
import { EventStoreError } from './errors.js';
import { encodeLine } from './log-format.js';
import { ACTION_RANK, MAX_MESSAGE, MAX_METRICS, SEVERITY_RANK, type LogRecord, type SourceMap, type SourceState } from './records.js';

export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_EVENTS = 10_000;
export const DEFAULT_CROSS_SOURCE_WINDOW_MS = 10_000;
/** Recently acknowledged keys remembered for cross-source merging. */
const MAX_RECENT = 4096;

export interface LedgerOptions {
  /** Bound of the persisted state (bytes): new events are admitted while the live state stays under half of it. */
  maxBytes?: number;
  /** Bound of pending (unacknowledged) events. */
  maxEvents?: number;
  /** The same key from another source within this window is the same occurrence. */
  crossSourceWindowMs?: number;
  /** This boot's id: faults raised now carry it; faults of another boot are cleared after replay. */
  bootId: string;
  now?: () => number;
  logger?: Logger;
}

export type LedgerAppendResult = AppendResult & { shed?: boolean };

interface Entry {
  ev: HealthEvent;
  src: SourceMap;
  /** Size of this entry's put line as last encoded (for liveBytes). */
  bytes: number;
  /** Count as of the last pending() snapshot, and the time of the first occurrence after it. */
  snapCount: number;
  firstAfterSnap: number | null;
  /** Number of the commit batch that first writes this event (0: on disk at open). */
  gen: number;
}

interface FaultEntry {
  f: ActiveFault;
  bootId: string;
  bytes: number;
}

interface RecentAck {
  src: SourceMap;
  count: number;
  lastTimeMs: number;
  event: HealthEvent;
}

/** What a commit batch carries: ids of touched events and keys of touched faults. */
export interface Dirty {
  events: Set<string>;
  faults: Set<string>;
}

/** The ledger's own counters (the facade adds the journal's). */
export interface LedgerCounters {
  shed: number;
  shedBySeverity: Record<Severity, number>;
  coalesced: number;
  crossSourceMerged: number;
  appends: number;
  acks: number;
}

/** Time-sortable unique ids: 9 base-36 chars of ms, 4 of a per-ms counter, 8 hex of randomness. */
export class IdGen {
  private lastMs = 0;
  private counter = 0;
  constructor(private readonly now: () => number) {}
  observe(id: string): void {
    const ms = Number.parseInt(id.slice(0, 9), 36);
    if (Number.isFinite(ms) && ms > this.lastMs) {
      this.lastMs = ms;
      this.counter = 0xffff; // next id moves to the next ms
    }
  }
  next(): string {
    let ms = Math.max(Math.floor(this.now()), this.lastMs);
    if (ms === this.lastMs) {
      this.counter++;
      if (this.counter > 36 ** 4 - 1) {
        ms++;
        this.counter = 0;
      }
    } else {
      this.counter = 0;
    }
    this.lastMs = ms;
    return `${ms.toString(36).padStart(9, '0')}-${this.counter.toString(36).padStart(4, '0')}-${randomBytes(4).toString('hex')}`;
  }
}

function copyEvent(e: HealthEvent): HealthEvent {
  return { ...e, metrics: { ...e.metrics } };
}

function sanitizeMetrics(m: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  let n = 0;
  for (const [k, v] of Object.entries(m)) {
    if (n >= MAX_METRICS) break;
    out[String(k).slice(0, 128)] = String(v).slice(0, 1024);
    n++;
  }
  return out;
}

const putLine = (e: Entry): Buffer => encodeLine({ t: 'p', e: e.ev, s: e.src } satisfies LogRecord);
const faultLine = (fe: FaultEntry): Buffer => encodeLine({ t: 'f', f: fe.f, b: fe.bootId } satisfies LogRecord);

export class EventLedger {
  readonly maxBytes: number;
  readonly maxEvents: number;
  private readonly hardMaxEvents: number;
  private readonly maxFaults: number;
  private readonly windowMs: number;
  private readonly bootId: string;
  private readonly now: () => number;
  private readonly log: Logger | undefined;
  private readonly ids: IdGen;

  private readonly pendingMap = new Map<string, Entry>();
  private readonly byKey = new Map<string, string>();
  /** Pending events per key (more than one only for remainders and fault-kind changes). */
  private readonly keyRefs = new Map<string, number>();
  private readonly faults = new Map<string, FaultEntry>();
  private readonly recent = new Map<string, RecentAck>();
  private liveEventBytes = 0;
  private liveFaultBytes = 0;
  private dirty: Dirty = { events: new Set(), faults: new Set() };
  /** Commit batches started, and the last one whose events pending() may list (in the log file, or settled). */
  private batchesStarted = 0;
  private batchesVisible = 0;

  readonly counters: LedgerCounters = {
    shed: 0,
    shedBySeverity: { info: 0, warning: 0, critical: 0 },
    coalesced: 0,
    crossSourceMerged: 0,
    appends: 0,
    acks: 0,
  };

  constructor(opts: LedgerOptions) {
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.maxEvents = opts.maxEvents ?? DEFAULT_MAX_EVENTS;
    if (!(Number.isInteger(this.maxBytes) && this.maxBytes >= 64 * 1024))
      throw new EventStoreError(`event store: maxBytes must be an integer >= 65536 (got ${String(opts.maxBytes)})`, 'BAD_INPUT');
    if (!(Number.isInteger(this.maxEvents) && this.maxEvents >= 1))
      throw new EventStoreError(`event store: maxEvents must be a positive integer (got ${String(opts.maxEvents)})`, 'BAD_INPUT');
    this.hardMaxEvents = this.maxEvents * 2 + 64;
    this.maxFaults = Math.max(1024, this.maxEvents);
    this.windowMs = opts.crossSourceWindowMs ?? DEFAULT_CROSS_SOURCE_WINDOW_MS;
    if (!(this.windowMs >= 0)) throw new EventStoreError('event store: crossSourceWindowMs must be >= 0', 'BAD_INPUT');
    this.bootId = opts.bootId;
    this.now = opts.now ?? Date.now;
    this.log = opts.logger;
    this.ids = new IdGen(this.now);
  }

  // ---------------------------------------------------------------------------- durability

  /**
   * THE rule of what may be sent: an event may be handed to the sender once the commit batch that
   * first writes it has been revealed (it is in the log file, so a kill -9 cannot lose it; its
   * fdatasync may still be running). Events replayed from the log (gen 0) always may.
   */
  private isVisible(e: Entry): boolean {
    return e.gen <= this.batchesVisible;
  }

  /** The number the next commit batch will have: a change made now is first written by it. */
  private nextBatch(): number {
    return this.batchesStarted + 1;
  }

  /** A commit batch starts: it carries every change made so far. Returns its number. */
  startBatch(): number {
    return ++this.batchesStarted;
  }

  /**
   * Batch `no` is in the log file (or has settled; a failed batch's events are sent from memory):
   * its events become visible to pending(). True when this made more visible.
   */
  reveal(no: number): boolean {
    if (no <= this.batchesVisible) return false;
    this.batchesVisible = no;
    return true;
  }

  // -------------------------------------------------------------------------------- replay

  /** Replay one (validated) log record. */
  replay(r: LogRecord): void {
    switch (r.t) {
      case 'p': {
        const old = this.pendingMap.get(r.e.id);
        if (old) {
          old.ev = r.e;
          old.src = r.s ?? {};
          old.snapCount = r.e.count;
        } else {
          this.pendingMap.set(r.e.id, { ev: r.e, src: r.s ?? {}, bytes: 0, snapCount: r.e.count, firstAfterSnap: null, gen: 0 });
        }
        return;
      }
      case 'a':
        this.pendingMap.delete(r.id);
        return;
      case 'f':
        this.faults.set(r.f.key, { f: r.f, bootId: r.b, bytes: 0 });
        return;
      case 'u':
        this.faults.delete(r.k);
        return;
      default:
        return;
    }
  }

  /** After the last replayed record: index keys, continue ids, and clear faults a reboot ended. */
  finishReplay(): void {
    for (const [id, e] of this.pendingMap) {
      this.byKey.set(e.ev.key, id);
      this.keyRefs.set(e.ev.key, (this.keyRefs.get(e.ev.key) ?? 0) + 1);
      this.ids.observe(id);
    }
    // Faults of a previous boot: a reset or reboot has happened, so the XID faults that needed one are gone.
    for (const [key, fe] of [...this.faults]) {
      if (fe.bootId !== this.bootId && fe.f.action !== 'replace') {
        this.faults.delete(key);
        this.log?.info({ key, bootId: fe.bootId }, 'event store: active fault of a previous boot cleared');
      }
    }
    this.recomputeLive();
  }

  private recomputeLive(): void {
    this.liveEventBytes = 0;
    for (const e of this.pendingMap.values()) {
      e.bytes = putLine(e).length;
      this.liveEventBytes += e.bytes;
    }
    this.liveFaultBytes = 0;
    for (const f of this.faults.values()) {
      f.bytes = faultLine(f).length;
      this.liveFaultBytes += f.bytes;
    }
  }

  // -------------------------------------------------------------------------------- append

  /** Coalesce or create; returns a snapshot. Input must have passed validateInput. Throws STORE_FULL. */
  append(input: HealthEventInput): LedgerAppendResult {
    this.counters.appends++;
    const t = input.timeMs;
    const n = input.count ?? 1;
    this.pruneRecent(t);
    const existingId = this.byKey.get(input.key);
    const existing = existingId ? this.pendingMap.get(existingId) : undefined;
    if (existing && existing.ev.fault === input.fault && existing.ev.type === input.type) {
      const e = existing.ev;
      const s = existing.src[input.source] ?? { n: 0, t: 0 };
      // Occurrences another source already counted (within the window) are not counted again.
      const matched = this.seenByOtherSourceNear(existing.src, input.source, t) ? Math.min(n, Math.max(0, e.count - s.n)) : 0;
      s.n += n;
      s.t = Math.max(s.t, t);
      existing.src[input.source] = s;
      this.counters.crossSourceMerged += matched;
      if (n > matched) {
        e.count += n - matched;
        if (e.count > existing.snapCount && existing.firstAfterSnap === null) existing.firstAfterSnap = t;
      }
      e.firstTimeMs = Math.min(e.firstTimeMs, t);
      e.lastTimeMs = Math.max(e.lastTimeMs, t);
      if (SEVERITY_RANK[input.severity] > SEVERITY_RANK[e.severity]) e.severity = input.severity;
      if (ACTION_RANK[input.action] > ACTION_RANK[e.action]) {
        e.action = input.action;
        e.citation = input.citation;
      }
      for (const [k, v] of Object.entries(input.metrics)) {
        if (!(k in e.metrics) && Object.keys(e.metrics).length < MAX_METRICS) e.metrics[k] = String(v).slice(0, 1024);
      }
      if (!e.gpuUuid && input.gpuUuid) e.gpuUuid = input.gpuUuid;
      this.dirty.events.add(e.id);
      this.counters.coalesced++;
      this.applyFault(input, e, n - matched);
      return { event: copyEvent(e), coalesced: true };
    }

    // The same occurrence from a second source, arriving after the first was already acknowledged.
    let count = n;
    const rec = this.recent.get(input.key);
    if (rec && rec.event.fault === input.fault) {
      const s = rec.src[input.source] ?? { n: 0, t: 0 };
      const matched = this.seenByOtherSourceNear(rec.src, input.source, t) ? Math.min(n, Math.max(0, rec.count - s.n)) : 0;
      if (matched > 0) {
        s.n += matched;
        s.t = Math.max(s.t, t);
        rec.src[input.source] = s;
        this.counters.crossSourceMerged += matched;
        count = n - matched;
        if (count === 0) {
          this.counters.coalesced++;
          this.applyFault(input, rec.event, 0);
          return { event: copyEvent(rec.event), coalesced: true };
        }
      }
    }

    const ev: HealthEvent = {
      type: input.type,
      system: input.system,
      gpuIndex: input.gpuIndex,
      gpuUuid: String(input.gpuUuid ?? ''),
      metrics: sanitizeMetrics(input.metrics),
      message: String(input.message ?? '').slice(0, MAX_MESSAGE),
      timeMs: t,
      severity: input.severity,
      action: input.action,
      citation: String(input.citation ?? ''),
      source: input.source,
      key: input.key,
      fault: input.fault,
      id: this.ids.next(),
      count,
      firstTimeMs: t,
      lastTimeMs: t,
    };
    const src: SourceMap = { [input.source]: { n: count, t } };
    const entry: Entry = { ev, src, bytes: 0, snapCount: 0, firstAfterSnap: t, gen: this.nextBatch() };
    entry.bytes = putLine(entry).length;
    if (!this.admit(ev, entry.bytes)) {
      this.counters.shed++;
      this.counters.shedBySeverity[ev.severity]++;
      this.log?.warn({ key: ev.key, severity: ev.severity }, 'event store: full; new non-critical event shed');
      return { event: ev, coalesced: false, shed: true };
    }
    this.addEntry(entry);
    this.applyFault(input, ev, count);
    return { event: copyEvent(ev), coalesced: false };
  }

  private addEntry(entry: Entry): void {
    const ev = entry.ev;
    this.pendingMap.set(ev.id, entry);
    this.byKey.set(ev.key, ev.id);
    this.keyRefs.set(ev.key, (this.keyRefs.get(ev.key) ?? 0) + 1);
    this.liveEventBytes += entry.bytes;
    this.dirty.events.add(ev.id);
  }

  private seenByOtherSourceNear(src: SourceMap, self: EventSource, t: number): boolean {
    for (const [name, s] of Object.entries(src) as Array<[EventSource, SourceState]>) {
      if (name !== self && s.n > 0 && Math.abs(t - s.t) <= this.windowMs) return true;
    }
    return false;
  }

  private pruneRecent(t: number): void {
    if (this.recent.size === 0) return;
    // Event times (not the wall clock): sources stamp events with their own timestamps.
    // The map is in acknowledgement order, which is about event-time order: prune from the front.
    const horizon = t - this.windowMs * 2;
    for (const [k, r] of this.recent) {
      if (r.lastTimeMs >= horizon && this.recent.size <= MAX_RECENT) break;
      this.recent.delete(k);
    }
  }

  /** Make room for a new event within maxEvents / maxBytes. False: the new event itself is shed. */
  private admit(ev: HealthEvent, bytes: number): boolean {
    const byteBudget = Math.floor(this.maxBytes * 0.5);
    const over = () => this.pendingMap.size + 1 > this.maxEvents || this.liveBytes() + bytes > byteBudget;
    if (!over()) return true;
    // Shed older events of the new one's severity or lower, info first; never critical ones.
    const sheddable: Severity[] = ev.severity === 'info' ? ['info'] : ['info', 'warning'];
    for (const sev of sheddable) {
      while (over() && this.shedOldest(sev)) {
        /* keep shedding */
      }
    }
    if (!over()) return true;
    if (ev.severity !== 'critical') return false;
    if (this.pendingMap.size + 1 > this.hardMaxEvents || this.liveBytes() + bytes > this.maxBytes * 0.75) {
      throw new EventStoreError(
        `event store full: ${this.pendingMap.size} critical events pending (${this.liveBytes()} bytes); cannot store ${ev.key}`,
        'STORE_FULL',
      );
    }
    return true;
  }

  // ------------------------------------------------------------------------------ shedding

  /** Shed the oldest event of one severity. False: there was none. */
  shedOldest(sev: Severity): boolean {
    for (const [id, e] of this.pendingMap) {
      if (e.ev.severity === sev) {
        this.removeEntry(id, e);
        this.counters.shed++;
        this.counters.shedBySeverity[sev]++;
        this.log?.warn({ key: e.ev.key, id, severity: sev }, 'event store: shed oldest event to stay within bounds');
        return true;
      }
    }
    return false;
  }

  /** Shed the oldest `fraction` of the events of one severity in one pass. */
  shedFraction(sev: Severity, fraction: number): boolean {
    let total = 0;
    for (const e of this.pendingMap.values()) if (e.ev.severity === sev) total++;
    return this.shedOldestN(sev, Math.ceil(total * fraction)) > 0;
  }

  shedAll(sev: Severity): boolean {
    return this.shedOldestN(sev, Number.POSITIVE_INFINITY) > 0;
  }

  /** Shed info, then warning events until the live state is at most `bytes`. */
  shedDownTo(bytes: number): void {
    while (this.liveBytes() > bytes && (this.shedOldest('info') || this.shedOldest('warning'))) {
      /* shed until under */
    }
  }

  /** Shed up to n of the oldest events of one severity in one pass. */
  private shedOldestN(sev: Severity, n: number): number {
    const victims: Array<[string, Entry]> = [];
    for (const [id, e] of this.pendingMap) {
      if (victims.length >= n) break;
      if (e.ev.severity === sev) victims.push([id, e]);
    }
    for (const [id, e] of victims) this.removeEntry(id, e);
    if (victims.length > 0) {
      this.counters.shed += victims.length;
      this.counters.shedBySeverity[sev] += victims.length;
      this.log?.warn({ count: victims.length, severity: sev, oldest: victims[0]?.[1].ev.key }, 'event store: shed oldest events');
    }
    return victims.length;
  }

  private removeEntry(id: string, e: Entry): void {
    this.pendingMap.delete(id);
    const refs = (this.keyRefs.get(e.ev.key) ?? 1) - 1;
    if (refs > 0) this.keyRefs.set(e.ev.key, refs);
    else this.keyRefs.delete(e.ev.key);
    if (this.byKey.get(e.ev.key) === id) {
      this.byKey.delete(e.ev.key);
      // Another pending event under the same key takes over coalescing (rare: scan only then).
      if (refs > 0) for (const [oid, o] of this.pendingMap) if (o.ev.key === e.ev.key) this.byKey.set(e.ev.key, oid);
    }
    this.liveEventBytes -= e.bytes;
    this.dirty.events.add(id);
  }

  liveBytes(): number {
    return this.liveEventBytes + this.liveFaultBytes;
  }

  // -------------------------------------------------------------------------------- faults

  private applyFault(input: HealthEventInput, ev: HealthEvent, newOccurrences: number): void {
    if (input.fault === 'clear') {
      this.clearFault(input.key);
      return;
    }
    if (input.fault !== 'raise') return;
    const fe = this.faults.get(input.key);
    if (fe) {
      const f = fe.f;
      f.lastSeenMs = Math.max(f.lastSeenMs, input.timeMs);
      f.count += newOccurrences;
      if (SEVERITY_RANK[input.severity] > SEVERITY_RANK[f.severity]) f.severity = input.severity;
      if (ACTION_RANK[input.action] > ACTION_RANK[f.action]) f.action = input.action;
      f.lastEventId = ev.id;
      fe.bootId = this.bootId;
    } else {
      const f: ActiveFault = {
        key: input.key,
        gpuIndex: input.gpuIndex,
        gpuUuid: String(input.gpuUuid ?? ''),
        type: input.type,
        system: input.system,
        severity: input.severity,
        action: input.action,
        message: String(input.message ?? '').slice(0, MAX_MESSAGE),
        metrics: sanitizeMetrics(input.metrics),
        sinceMs: input.timeMs,
        lastSeenMs: input.timeMs,
        count: Math.max(1, newOccurrences),
        lastEventId: ev.id,
      };
      if (this.faults.size >= this.maxFaults) this.evictStalestFault();
      const entry: FaultEntry = { f, bootId: this.bootId, bytes: 0 };
      entry.bytes = faultLine(entry).length;
      this.faults.set(input.key, entry);
      this.liveFaultBytes += entry.bytes;
    }
    this.dirty.faults.add(input.key);
  }

  /** Remove an active fault. True when there was one. */
  clearFault(key: string): boolean {
    const fe = this.faults.get(key);
    if (!fe) return false;
    this.faults.delete(key);
    this.liveFaultBytes -= fe.bytes;
    this.dirty.faults.add(key);
    return true;
  }

  /** Bound the active-fault map: drop the least recently seen fault (least severe first). */
  private evictStalestFault(): void {
    let victim: FaultEntry | null = null;
    for (const fe of this.faults.values()) {
      if (
        !victim ||
        SEVERITY_RANK[fe.f.severity] < SEVERITY_RANK[victim.f.severity] ||
        (fe.f.severity === victim.f.severity && fe.f.lastSeenMs < victim.f.lastSeenMs)
      )
        victim = fe;
    }
    if (!victim) return;
    this.faults.delete(victim.f.key);
    this.liveFaultBytes -= victim.bytes;
    this.dirty.faults.add(victim.f.key);
    this.log?.warn({ key: victim.f.key, max: this.maxFaults }, 'event store: too many active faults; dropped the stalest');
  }

  // ----------------------------------------------------------------------------------- ack

  /** The control plane acknowledged these (id, count sent). True when anything changed. */
  ack(sent: Array<Pick<HealthEvent, 'id' | 'count'>>): boolean {
    let changed = false;
    for (const s of sent) {
      if (!s || typeof s.id !== 'string') continue;
      const e = this.pendingMap.get(s.id);
      if (!e) continue;
      const sentCount = Number.isFinite(s.count) ? Math.max(0, Math.floor(s.count)) : e.ev.count;
      changed = true;
      this.counters.acks++;
      if (sentCount >= e.ev.count) {
        this.removeEntry(s.id, e);
        this.recent.delete(e.ev.key);
        this.recent.set(e.ev.key, { src: e.src, count: e.ev.count, lastTimeMs: e.ev.lastTimeMs, event: e.ev });
        continue;
      }
      if (sentCount === 0) continue;
      // Grew after it was sent: the remainder stays pending, under a new id (the old one was delivered).
      this.removeEntry(s.id, e);
      const remainder = e.ev.count - sentCount;
      const ev: HealthEvent = {
        ...e.ev,
        metrics: { ...e.ev.metrics },
        id: this.ids.next(),
        count: remainder,
        firstTimeMs: e.firstAfterSnap ?? e.ev.lastTimeMs,
      };
      const src: SourceMap = {};
      for (const [name, st] of Object.entries(e.src) as Array<[EventSource, SourceState]>) {
        src[name] = { n: Math.max(0, st.n - sentCount), t: st.t };
      }
      const entry: Entry = { ev, src, bytes: 0, snapCount: 0, firstAfterSnap: null, gen: this.nextBatch() };
      entry.bytes = putLine(entry).length;
      this.addEntry(entry);
      const fe = this.faults.get(ev.key);
      if (fe && fe.f.lastEventId === s.id) {
        fe.f.lastEventId = ev.id;
        this.dirty.faults.add(ev.key);
      }
    }
    return changed;
  }

  // ------------------------------------------------------------------------------- reading

  /** Visible pending events, oldest first, at most `limit`; counts as of now (a snapshot for ack). */
  pending(limit?: number): HealthEvent[] {
    const max = limit === undefined ? Number.POSITIVE_INFINITY : Math.max(0, Math.floor(limit));
    const out: HealthEvent[] = [];
    for (const e of this.pendingMap.values()) {
      if (out.length >= max) break;
      // Not in the log file yet: a kill -9 would lose it, so not to be sent (it comes with onPending).
      if (!this.isVisible(e)) continue;
      e.snapCount = e.ev.count;
      e.firstAfterSnap = null;
      out.push(copyEvent(e.ev));
    }
    return out;
  }

  pendingCount(): number {
    return this.pendingMap.size;
  }

  activeFaults(): ActiveFault[] {
    return [...this.faults.values()].map((fe) => ({ ...fe.f, metrics: { ...fe.f.metrics } }));
  }

  activeFaultCount(): number {
    return this.faults.size;
  }

  // ------------------------------------------------------------------------ serialisation

  hasDirty(): boolean {
    return this.dirty.events.size > 0 || this.dirty.faults.size > 0;
  }

  /** Take what changed since the last take (a failed write gives it back with restoreDirty). */
  takeDirty(): Dirty {
    const d = this.dirty;
    this.dirty = { events: new Set(), faults: new Set() };
    return d;
  }

  restoreDirty(d: Dirty): void {
    for (const id of d.events) this.dirty.events.add(id);
    for (const k of d.faults) this.dirty.faults.add(k);
  }

  /** The log lines of a taken dirty set: a put per live event, an ack per gone one; same for faults. */
  encodeDirty(d: Dirty): Buffer {
    const parts: Buffer[] = [];
    for (const id of d.events) {
      const e = this.pendingMap.get(id);
      if (e) {
        const line = putLine(e);
        this.liveEventBytes += line.length - e.bytes;
        e.bytes = line.length;
        parts.push(line);
      } else {
        parts.push(encodeLine({ t: 'a', id } satisfies LogRecord));
      }
    }
    for (const key of d.faults) {
      const fe = this.faults.get(key);
      if (fe) {
        const line = faultLine(fe);
        this.liveFaultBytes += line.length - fe.bytes;
        fe.bytes = line.length;
        parts.push(line);
      } else {
        parts.push(encodeLine({ t: 'u', k: key } satisfies LogRecord));
      }
    }
    return Buffer.concat(parts);
  }

  /** The whole live state as a fresh log: a header, a put per pending event, a fault line per fault. */
  encodeSnapshot(): Buffer {
    const parts: Buffer[] = [encodeLine({ t: 'h', v: 1, bootId: this.bootId, ms: this.now() } satisfies LogRecord)];
    for (const e of this.pendingMap.values()) {
      const line = putLine(e);
      e.bytes = line.length;
      parts.push(line);
    }
    for (const fe of this.faults.values()) {
      const line = faultLine(fe);
      fe.bytes = line.length;
      parts.push(line);
    }
    return Buffer.concat(parts);
  }

  /** After a snapshot was written: the live byte counts are exact again. */
  snapshotWritten(): void {
    this.recomputeLive();
  }
}
