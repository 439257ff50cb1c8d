/**
 * The durable event store (implements EventStore from ./types.ts).
 *
 * On disk: `<dir>/events.log`, an append-only log of CRC-framed JSON lines (./log-format.ts) of
 * put / ack / fault / unfault records, replayed at open. A put carries the event's whole state,
 * so the last put of an id wins; the torn tail left by a crash is detected and cut off.
 * When the log grows past a bound it is compacted: the live state is written to a new file,
 * fsync'd, renamed over the log, and the directory fsync'd.
 *
 * Group commit: every append/ack changes memory at once and marks the event dirty; one writer
 * loop writes every dirty event once per batch and fsyncs once, and all callers of that batch
 * resolve together. A storm of identical events therefore costs one small line per batch.
 * pending() shows a new event once the batch that first writes it is in the log file (written, its
 * fdatasync may still run), so the send overlaps the fsync; the sender learns of it through
 * onPending. An event in the file survives kill -9 (the page cache is the kernel's); it leaves the
 * store only through ack(), whose record is written in a later batch, after this batch's fsync.
 * What power loss can lose is in docs/store.md ("Durability").
 *
 * Bounds: `maxEvents` pending events and `maxBytes` of log. Over a bound, and on ENOSPC, the
 * store sheds the oldest 'info' events, then the oldest 'warning' ones; never 'critical' ones.
 * A reserve file (`reserve.bin`) is kept so a full disk still leaves room to compact.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { ActiveFault, EventSource, HealthEvent, HealthEventInput, RecommendedAction, Severity } from '../events/types.js';
import type { AppendResult, EventStore } from './types.js';
import { decodeLog, encodeLine } from './log-format.js';
import { nodeStoreFs, type StoreFile, type StoreFs } from './fs-adapter.js';

export const DEFAULT_STATE_DIR = '/var/lib/navarch-agent';
export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_EVENTS = 10_000;
export const DEFAULT_CROSS_SOURCE_WINDOW_MS = 10_000;

const LOG_NAME = 'events.log';
const TMP_NAME = 'events.log.tmp';
const RESERVE_NAME = 'reserve.bin';
const LOCK_NAME = 'events.lock';
const MAX_METRICS = 64;
const MAX_MESSAGE = 2048;
const MAX_KEY = 256;
/** Recently acknowledged keys remembered for cross-source merging. */
const MAX_RECENT = 4096;

export interface EventStoreOptions {
  dir: string;
  /** Bound of the log on disk (bytes). Default 64 MiB. */
  maxBytes?: number;
  /** Bound of pending (unacknowledged) events. Default 10000. */
  maxEvents?: number;
  /** fsync (fdatasync) before append/ack resolve. Default true. Turn off only in tests/benchmarks. */
  fsync?: boolean;
  /** The same key from another source within this window is the same occurrence. Default 10000 ms. */
  crossSourceWindowMs?: number;
  logger?: Logger;
  /** Current boot id (default: /proc/sys/kernel/random/boot_id). Faults of another boot are cleared at open. */
  bootId?: string;
  /** Size of the reserve file freed on ENOSPC. Default min(1 MiB, maxBytes / 16); 0 disables it. */
  reserveBytes?: number;
  /** File-system layer (tests inject failures through it). */
  fs?: StoreFs;
  /** Clock (ms). Default Date.now. */
  now?: () => number;
}

export interface EventStoreStats {
  pending: number;
  /** Size of the log file. */
  bytesOnDisk: number;
  /** Bytes the live state takes when compacted. */
  liveBytes: number;
  /** Events dropped to stay within bounds or to survive a full disk (never critical ones). */
  shed: number;
  shedBySeverity: Record<Severity, number>;
  /** Appends merged into a pending event (same key). */
  coalesced: number;
  /** Of those, occurrences seen by a second source (nvml + kmsg) that did not add to the count. */
  crossSourceMerged: number;
  /** The last write failed with ENOSPC (cleared by the next successful write). */
  diskFull: boolean;
  appends: number;
  acks: number;
  /** Batches written (each one write + one fsync). */
  commits: number;
  compactions: number;
  /** Records rejected at open (bad CRC mid-file) and torn tails cut off. */
  corruptRecords: number;
  tornTails: number;
  activeFaults: number;
  lastError: string | null;
}

export interface DurableEventStore extends EventStore {
  /** Remove an active fault (e.g. after the GPU was reset). Resolves true when there was one. */
  clearFault(key: string): Promise<boolean>;
  stats(): EventStoreStats;
  /** Force a compaction now. */
  compact(): Promise<void>;
  readonly dir: string;
}

export class EventStoreError extends Error {
  constructor(
    message: string,
    readonly code: 'DISK_FULL' | 'STORE_FULL' | 'CLOSED' | 'BAD_INPUT' | 'LOCKED' | 'IO',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'EventStoreError';
  }
}

interface SourceState {
  n: number;
  t: number;
}

interface Entry {
  ev: HealthEvent;
  src: Partial<Record<EventSource, SourceState>>;
  /** Size of this entry's put line as last encoded (for liveBytes). */
  bytes: number;
  /** Count as of the last pending() snapshot, and the time of the first occurrence after it. */
  snapCount: number;
  firstAfterSnap: number | null;
  /**
   * Number of the commit batch that first writes this event (0: on disk at open). pending()
   * leaves the event out until that batch has settled, so nothing is sent before it is durable.
   */
  gen: number;
}

interface FaultEntry {
  f: ActiveFault;
  bootId: string;
  bytes: number;
}

interface RecentAck {
  src: Partial<Record<EventSource, SourceState>>;
  count: number;
  lastTimeMs: number;
  event: HealthEvent;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
  critical: boolean;
}

type LogRecord =
  | { t: 'h'; v: 1; bootId: string; ms: number }
  | { t: 'p'; e: HealthEvent; s: Partial<Record<EventSource, SourceState>> }
  | { t: 'a'; id: string }
  | { t: 'f'; f: ActiveFault; b: string }
  | { t: 'u'; k: string };

/** Directories (real paths) with a store open in this process. */
const OPEN_DIRS = new Set<string>();

const SEVERITY_RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };
const ACTION_RANK: Record<RecommendedAction, number> = { none: 0, restart_app: 1, reset_gpu: 2, reboot: 3, replace: 4 };
const SEVERITIES = new Set<string>(['info', 'warning', 'critical']);
const ACTIONS = new Set<string>(Object.keys(ACTION_RANK));
const FAULTS = new Set<string>(['raise', 'clear', 'none']);

function readBootId(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

let kernelBoot: string | undefined;
/** This boot's id (the real one, for the lock file: options.bootId may be overridden in tests). */
function kernelBootId(): string {
  kernelBoot ??= readBootId();
  return kernelBoot;
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

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

/** Time-sortable unique ids: 9 base-36 chars of ms, 4 of a per-ms counter, 8 hex of randomness. */
class IdGen {
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

class FileEventStore implements DurableEventStore {
  readonly dir: string;
  private readonly logPath: string;
  private readonly maxBytes: number;
  private readonly maxEvents: number;
  private readonly hardMaxEvents: number;
  private readonly maxFaults: number;
  private readonly doFsync: boolean;
  private readonly windowMs: number;
  private readonly log: Logger | undefined;
  private readonly bootId: string;
  private readonly reserveBytes: number;
  private readonly fsa: StoreFs;
  private readonly now: () => number;
  private readonly ids: IdGen;

  private file: StoreFile | null = null;
  private lockedDir: string | null = null;
  private fileBytes = 0;
  private needCompact = false;
  private closed = false;

  private readonly pendingMap = new Map<string, Entry>();
  private readonly byKey = new Map<string, string>();
  /** Pending events per key (more than one only for remainders and fault-kind changes). */
  private readonly keyRefs = new Map<string, number>();
  private readonly faults = new Map<string, FaultEntry>();
  private readonly recent = new Map<string, RecentAck>();
  private liveEventBytes = 0;
  private liveFaultBytes = 0;

  private dirtyEvents = new Set<string>();
  private dirtyFaults = new Set<string>();
  /** Commit batches started, and the last one whose events pending() may list (written to the file, or settled). */
  private batchesStarted = 0;
  private batchesVisible = 0;
  private waiters: Waiter[] = [];
  private writer: Promise<void> | null = null;
  private readonly listeners = new Set<(r: AppendResult) => void>();
  private readonly pendingListeners = new Set<() => void>();

  private readonly st = {
    shed: 0,
    shedBySeverity: { info: 0, warning: 0, critical: 0 } as Record<Severity, number>,
    coalesced: 0,
    crossSourceMerged: 0,
    diskFull: false,
    appends: 0,
    acks: 0,
    commits: 0,
    compactions: 0,
    corruptRecords: 0,
    tornTails: 0,
    lastError: null as string | null,
  };

  constructor(opts: EventStoreOptions) {
    if (!opts || typeof opts.dir !== 'string' || opts.dir.length === 0) throw new EventStoreError('event store: dir is required', 'BAD_INPUT');
    this.dir = opts.dir;
    this.logPath = path.join(opts.dir, LOG_NAME);
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.maxEvents = opts.maxEvents ?? DEFAULT_MAX_EVENTS;
    if (!(Number.isInteger(this.maxBytes) && this.maxBytes >= 64 * 1024))
      throw new EventStoreError(`event store: maxBytes must be an integer >= 65536 (got ${String(opts.maxBytes)})`, 'BAD_INPUT');
    if (!(Number.isInteger(this.maxEvents) && this.maxEvents >= 1))
      throw new EventStoreError(`event store: maxEvents must be a positive integer (got ${String(opts.maxEvents)})`, 'BAD_INPUT');
    this.hardMaxEvents = this.maxEvents * 2 + 64;
    this.maxFaults = Math.max(1024, this.maxEvents);
    this.doFsync = opts.fsync ?? true;
    this.windowMs = opts.crossSourceWindowMs ?? DEFAULT_CROSS_SOURCE_WINDOW_MS;
    if (!(this.windowMs >= 0)) throw new EventStoreError('event store: crossSourceWindowMs must be >= 0', 'BAD_INPUT');
    this.log = opts.logger;
    this.bootId = opts.bootId ?? readBootId();
    this.reserveBytes = opts.reserveBytes ?? Math.min(1024 * 1024, Math.floor(this.maxBytes / 16));
    this.fsa = opts.fs ?? nodeStoreFs;
    this.now = opts.now ?? Date.now;
    this.ids = new IdGen(this.now);
  }

  // ---------------------------------------------------------------------------------- open

  async open(): Promise<void> {
    await this.fsa.mkdirp(this.dir);
    this.takeLock();
    await this.fsa.unlink(path.join(this.dir, TMP_NAME));
    const buf = await this.fsa.readFile(this.logPath);
    if (buf) {
      const d = decodeLog(buf);
      this.st.corruptRecords = d.corrupt;
      this.st.tornTails = d.tornTail ? 1 : 0;
      if (d.corrupt > 0 || d.tornTail) {
        this.log?.warn(
          { dir: this.dir, corrupt: d.corrupt, tornTail: d.tornTail, droppedBytes: buf.length - d.goodBytes },
          'event store: log had a torn tail or corrupt records; they were skipped',
        );
      }
      for (const r of d.records) this.apply(r as LogRecord);
    }
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
    // Always start from a clean, compacted file: it also drops a torn tail.
    this.recomputeLive();
    await this.compactNow();
    await this.ensureReserve();
  }

  private takeLock(): void {
    const lockPath = path.join(this.dir, LOCK_NAME);
    const real = fs.realpathSync(this.dir);
    if (OPEN_DIRS.has(real)) throw new EventStoreError(`event store: ${this.dir} is in use by process ${process.pid} (this process)`, 'LOCKED');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(lockPath, `${process.pid} ${kernelBootId()}\n`, { flag: 'wx', mode: 0o600 });
        OPEN_DIRS.add(real);
        this.lockedDir = real;
        return;
      } catch (e) {
        if (errCode(e) !== 'EEXIST') throw new EventStoreError(`event store: cannot create lock ${lockPath}: ${(e as Error).message}`, 'IO');
        const [pidText, lockBoot] = fs.readFileSync(lockPath, 'utf8').trim().split(/\s+/);
        const pid = Number.parseInt(pidText ?? '', 10);
        // A lock of another boot is stale whatever its pid: after a reboot that pid may well belong
        // to an unrelated process, which would keep the agent from ever opening its store.
        const otherBoot = lockBoot !== undefined && lockBoot !== kernelBootId() && kernelBootId() !== 'unknown';
        let alive = false;
        if (!otherBoot && Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
          try {
            process.kill(pid, 0);
            alive = true;
          } catch (ke) {
            alive = errCode(ke) === 'EPERM';
          }
        }
        if (alive) throw new EventStoreError(`event store: ${this.dir} is in use by process ${pid}`, 'LOCKED');
        fs.rmSync(lockPath, { force: true });
      }
    }
    throw new EventStoreError(`event store: cannot take lock ${lockPath}`, 'LOCKED');
  }

  private releaseLock(): void {
    if (!this.lockedDir) return;
    OPEN_DIRS.delete(this.lockedDir);
    this.lockedDir = null;
    const lockPath = path.join(this.dir, LOCK_NAME);
    try {
      if (Number.parseInt(fs.readFileSync(lockPath, 'utf8'), 10) === process.pid) fs.rmSync(lockPath, { force: true });
    } catch {
      /* already gone */
    }
  }

  private apply(r: LogRecord): void {
    if (!r || typeof r !== 'object') return;
    switch (r.t) {
      case 'p': {
        if (!r.e || typeof r.e.id !== 'string') return;
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
        if (r.f && typeof r.f.key === 'string') this.faults.set(r.f.key, { f: r.f, bootId: r.b, bytes: 0 });
        return;
      case 'u':
        this.faults.delete(r.k);
        return;
      default:
        return;
    }
  }

  private recomputeLive(): void {
    this.liveEventBytes = 0;
    for (const e of this.pendingMap.values()) {
      e.bytes = encodeLine({ t: 'p', e: e.ev, s: e.src }).length;
      this.liveEventBytes += e.bytes;
    }
    this.liveFaultBytes = 0;
    for (const f of this.faults.values()) {
      f.bytes = encodeLine({ t: 'f', f: f.f, b: f.bootId }).length;
      this.liveFaultBytes += f.bytes;
    }
  }

  // -------------------------------------------------------------------------------- append

  append(input: HealthEventInput): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new EventStoreError('event store is closed', 'CLOSED'));
    const bad = validateInput(input);
    if (bad) return Promise.reject(new EventStoreError(`event store: ${bad}`, 'BAD_INPUT'));
    this.st.appends++;
    let result: AppendResult & { shed?: boolean };
    try {
      result = this.applyInput(input);
    } catch (e) {
      return Promise.reject(e);
    }
    if (result.shed) {
      this.notify(result);
      return Promise.resolve(result);
    }
    return this.commit(input.severity === 'critical').then(() => {
      this.notify(result);
      return result;
    });
  }

  private notify(r: AppendResult): void {
    for (const l of this.listeners) {
      try {
        l(r);
      } catch (e) {
        this.log?.error({ err: e }, 'event store: onAppend listener threw');
      }
    }
  }

  /** Memory side of append: coalesce or create; returns a snapshot. */
  private applyInput(input: HealthEventInput): AppendResult & { shed?: boolean } {
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
      this.st.crossSourceMerged += matched;
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
      this.dirtyEvents.add(e.id);
      this.st.coalesced++;
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
        this.st.crossSourceMerged += matched;
        count = n - matched;
        if (count === 0) {
          this.st.coalesced++;
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
    const src: Partial<Record<EventSource, SourceState>> = { [input.source]: { n: count, t } };
    const bytes = encodeLine({ t: 'p', e: ev, s: src }).length;
    if (!this.admit(ev, bytes)) {
      this.st.shed++;
      this.st.shedBySeverity[ev.severity]++;
      this.log?.warn({ key: ev.key, severity: ev.severity }, 'event store: full; new non-critical event shed');
      return { event: ev, coalesced: false, shed: true };
    }
    const entry: Entry = { ev, src, bytes, snapCount: 0, firstAfterSnap: t, gen: this.batchesStarted + 1 };
    this.pendingMap.set(ev.id, entry);
    this.byKey.set(ev.key, ev.id);
    this.keyRefs.set(ev.key, (this.keyRefs.get(ev.key) ?? 0) + 1);
    this.liveEventBytes += bytes;
    this.dirtyEvents.add(ev.id);
    this.applyFault(input, ev, count);
    return { event: copyEvent(ev), coalesced: false };
  }

  private seenByOtherSourceNear(src: Partial<Record<EventSource, SourceState>>, self: EventSource, t: number): boolean {
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

  private shedOldest(sev: Severity): boolean {
    for (const [id, e] of this.pendingMap) {
      if (e.ev.severity === sev) {
        this.removeEntry(id, e);
        this.st.shed++;
        this.st.shedBySeverity[sev]++;
        this.log?.warn({ key: e.ev.key, id, severity: sev }, 'event store: shed oldest event to stay within bounds');
        return true;
      }
    }
    return false;
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
    this.dirtyEvents.add(id);
  }

  private liveBytes(): number {
    return this.liveEventBytes + this.liveFaultBytes;
  }

  private applyFault(input: HealthEventInput, ev: HealthEvent, newOccurrences: number): void {
    if (input.fault === 'clear') {
      if (this.faults.has(input.key)) {
        const fe = this.faults.get(input.key) as FaultEntry;
        this.liveFaultBytes -= fe.bytes;
        this.faults.delete(input.key);
        this.dirtyFaults.add(input.key);
      }
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
      const entry: FaultEntry = { f, bootId: this.bootId, bytes: encodeLine({ t: 'f', f, b: this.bootId }).length };
      this.faults.set(input.key, entry);
      this.liveFaultBytes += entry.bytes;
    }
    this.dirtyFaults.add(input.key);
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
    this.dirtyFaults.add(victim.f.key);
    this.log?.warn({ key: victim.f.key, max: this.maxFaults }, 'event store: too many active faults; dropped the stalest');
  }

  // ------------------------------------------------------------------------------- reading

  pending(limit?: number): HealthEvent[] {
    const max = limit === undefined ? Number.POSITIVE_INFINITY : Math.max(0, Math.floor(limit));
    const out: HealthEvent[] = [];
    for (const e of this.pendingMap.values()) {
      if (out.length >= max) break;
      // Not yet in the log file: a kill -9 would lose it, so not to be sent (it comes with onPending).
      if (e.gen > this.batchesVisible) continue;
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

  onPending(listener: () => void): () => void {
    this.pendingListeners.add(listener);
    return () => this.pendingListeners.delete(listener);
  }

  /** Batch `no` is in the file (or settled): its events become visible to pending(). */
  private reveal(no: number): void {
    if (no <= this.batchesVisible) return;
    this.batchesVisible = no;
    for (const l of this.pendingListeners) {
      try {
        l();
      } catch (e) {
        this.log?.error({ err: e }, 'event store: onPending listener threw');
      }
    }
  }

  onAppend(listener: (result: AppendResult) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stats(): EventStoreStats {
    return {
      pending: this.pendingMap.size,
      bytesOnDisk: this.fileBytes,
      liveBytes: this.liveBytes(),
      shed: this.st.shed,
      shedBySeverity: { ...this.st.shedBySeverity },
      coalesced: this.st.coalesced,
      crossSourceMerged: this.st.crossSourceMerged,
      diskFull: this.st.diskFull,
      appends: this.st.appends,
      acks: this.st.acks,
      commits: this.st.commits,
      compactions: this.st.compactions,
      corruptRecords: this.st.corruptRecords,
      tornTails: this.st.tornTails,
      activeFaults: this.faults.size,
      lastError: this.st.lastError,
    };
  }

  // ----------------------------------------------------------------------------------- ack

  async ack(sent: Array<Pick<HealthEvent, 'id' | 'count'>>): Promise<void> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    if (!Array.isArray(sent)) throw new EventStoreError('event store: ack expects an array of {id, count}', 'BAD_INPUT');
    let changed = false;
    for (const s of sent) {
      if (!s || typeof s.id !== 'string') continue;
      const e = this.pendingMap.get(s.id);
      if (!e) continue;
      const sentCount = Number.isFinite(s.count) ? Math.max(0, Math.floor(s.count)) : e.ev.count;
      changed = true;
      this.st.acks++;
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
      const src: Partial<Record<EventSource, SourceState>> = {};
      for (const [name, st] of Object.entries(e.src) as Array<[EventSource, SourceState]>) {
        src[name] = { n: Math.max(0, st.n - sentCount), t: st.t };
      }
      const entry: Entry = { ev, src, bytes: encodeLine({ t: 'p', e: ev, s: src }).length, snapCount: 0, firstAfterSnap: null, gen: this.batchesStarted + 1 };
      this.pendingMap.set(ev.id, entry);
      this.byKey.set(ev.key, ev.id);
      this.keyRefs.set(ev.key, (this.keyRefs.get(ev.key) ?? 0) + 1);
      this.liveEventBytes += entry.bytes;
      this.dirtyEvents.add(ev.id);
      const fe = this.faults.get(ev.key);
      if (fe && fe.f.lastEventId === s.id) {
        fe.f.lastEventId = ev.id;
        this.dirtyFaults.add(ev.key);
      }
    }
    if (changed) await this.commit(true);
  }

  async clearFault(key: string): Promise<boolean> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    const fe = this.faults.get(key);
    if (!fe) return false;
    this.faults.delete(key);
    this.liveFaultBytes -= fe.bytes;
    this.dirtyFaults.add(key);
    await this.commit(true);
    return true;
  }

  // ------------------------------------------------------------------------- group commit

  private commit(critical: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject, critical });
      if (!this.writer) this.writer = this.writeLoop();
    });
  }

  private async writeLoop(): Promise<void> {
    try {
      while (this.waiters.length > 0) {
        const batch = this.waiters;
        this.waiters = [];
        const no = ++this.batchesStarted;
        try {
          await this.writeDirty(no);
          this.reveal(no);
          for (const w of batch) w.resolve();
        } catch (e) {
          // Failed: the events stay in memory and are sent from there (as before the disk failed).
          this.reveal(no);
          const full = e instanceof EventStoreError && e.code === 'DISK_FULL';
          for (const w of batch) {
            if (full && !w.critical) w.resolve();
            else w.reject(e);
          }
        }
        try {
          await this.maybeCompact();
        } catch (e) {
          this.noteError('compaction failed', e);
        }
      }
    } finally {
      this.writer = null;
      if (this.waiters.length > 0) this.writer = this.writeLoop();
    }
  }

  private encodeDirty(events: Set<string>, faults: Set<string>): Buffer {
    const parts: Buffer[] = [];
    for (const id of events) {
      const e = this.pendingMap.get(id);
      if (e) {
        const line = encodeLine({ t: 'p', e: e.ev, s: e.src });
        this.liveEventBytes += line.length - e.bytes;
        e.bytes = line.length;
        parts.push(line);
      } else {
        parts.push(encodeLine({ t: 'a', id }));
      }
    }
    for (const key of faults) {
      const fe = this.faults.get(key);
      if (fe) {
        const line = encodeLine({ t: 'f', f: fe.f, b: fe.bootId });
        this.liveFaultBytes += line.length - fe.bytes;
        fe.bytes = line.length;
        parts.push(line);
      } else {
        parts.push(encodeLine({ t: 'u', k: key }));
      }
    }
    return Buffer.concat(parts);
  }

  private async writeDirty(no: number): Promise<void> {
    if (this.dirtyEvents.size === 0 && this.dirtyFaults.size === 0 && !this.needCompact) return;
    if (this.needCompact || !this.file) {
      await this.compactOrRecover();
      return;
    }
    const events = this.dirtyEvents;
    const faults = this.dirtyFaults;
    this.dirtyEvents = new Set();
    this.dirtyFaults = new Set();
    const buf = this.encodeDirty(events, faults);
    try {
      await this.file.append(buf);
      // In the page cache now: kill -9 cannot lose it, so the send may start while fdatasync runs.
      this.reveal(no);
      if (this.doFsync) await this.file.datasync();
      this.fileBytes += buf.length;
      this.st.commits++;
      if (this.st.diskFull) {
        this.st.diskFull = false;
        this.log?.info({ dir: this.dir }, 'event store: writes succeed again');
      }
    } catch (e) {
      // Put the batch back: memory already holds its state; the next write (or compaction) carries it.
      for (const id of events) this.dirtyEvents.add(id);
      for (const k of faults) this.dirtyFaults.add(k);
      try {
        await this.file.truncate(this.fileBytes);
      } catch {
        this.needCompact = true;
      }
      if (errCode(e) === 'ENOSPC') {
        this.markDiskFull(e);
        await this.compactOrRecover();
        return;
      }
      this.noteError('write failed', e);
      this.needCompact = true;
      throw new EventStoreError(`event store: write to ${this.logPath} failed: ${(e as Error).message}`, 'IO', { cause: e });
    }
  }

  private markDiskFull(e: unknown): void {
    if (!this.st.diskFull)
      this.log?.error({ dir: this.dir, err: (e as Error).message }, 'event store: disk full (ENOSPC); shedding informational events');
    this.st.diskFull = true;
    this.st.lastError = `ENOSPC: ${(e as Error).message}`;
  }

  private noteError(what: string, e: unknown): void {
    this.st.lastError = `${what}: ${(e as Error).message}`;
    this.log?.error({ dir: this.dir, err: (e as Error).message }, `event store: ${what}`);
  }

  /** Compact; on ENOSPC free the reserve, shed info then warning events, and retry. */
  private async compactOrRecover(): Promise<void> {
    const steps: Array<() => Promise<boolean> | boolean> = [
      () => true,
      async () => {
        await this.fsa.unlink(path.join(this.dir, RESERVE_NAME));
        return this.shedFraction('info', 0.5) || true;
      },
      () => this.shedAll('info'),
      () => this.shedFraction('warning', 0.5),
      () => this.shedAll('warning'),
    ];
    let last: unknown = null;
    for (const step of steps) {
      const progressed = await step();
      if (!progressed && last !== null) continue;
      try {
        await this.compactNow();
        return;
      } catch (e) {
        last = e;
        if (errCode(e) !== 'ENOSPC') {
          this.noteError('compaction failed', e);
          this.needCompact = true;
          throw new EventStoreError(`event store: compaction of ${this.logPath} failed: ${(e as Error).message}`, 'IO', { cause: e });
        }
        this.markDiskFull(e);
      }
    }
    this.needCompact = true;
    throw new EventStoreError(
      `event store: disk full under ${this.dir}: cannot persist ${this.pendingMap.size} critical event(s) even after shedding every informational and warning event`,
      'DISK_FULL',
      { cause: last },
    );
  }

  private shedFraction(sev: Severity, fraction: number): boolean {
    let total = 0;
    for (const e of this.pendingMap.values()) if (e.ev.severity === sev) total++;
    return this.shedOldestN(sev, Math.ceil(total * fraction)) > 0;
  }

  private shedAll(sev: Severity): boolean {
    return this.shedOldestN(sev, Number.POSITIVE_INFINITY) > 0;
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
      this.st.shed += victims.length;
      this.st.shedBySeverity[sev] += victims.length;
      this.log?.warn({ count: victims.length, severity: sev, oldest: victims[0]?.[1].ev.key }, 'event store: shed oldest events');
    }
    return victims.length;
  }

  private async maybeCompact(): Promise<void> {
    const minCompact = Math.min(1024 * 1024, Math.floor(this.maxBytes / 4));
    if (this.fileBytes > Math.max(minCompact, this.liveBytes() * 2) || this.fileBytes > this.maxBytes * 0.9) {
      if (this.liveBytes() > this.maxBytes * 0.5) {
        while (this.liveBytes() > this.maxBytes * 0.4 && (this.shedOldest('info') || this.shedOldest('warning'))) {
          /* shed until under */
        }
      }
      await this.compactOrRecover();
    }
  }

  async compact(): Promise<void> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    await new Promise<void>((resolve, reject) => {
      this.needCompact = true;
      this.waiters.push({ resolve, reject, critical: true });
      if (!this.writer) this.writer = this.writeLoop();
    });
  }

  /** Rewrite the live state into a new file and rename it over the log. */
  private async compactNow(): Promise<void> {
    const tmp = path.join(this.dir, TMP_NAME);
    // The snapshot below covers every change made so far; changes made while this compaction
    // awaits I/O mark events dirty again and go out with the next batch.
    const events = this.dirtyEvents;
    const faults = this.dirtyFaults;
    this.dirtyEvents = new Set();
    this.dirtyFaults = new Set();
    const parts: Buffer[] = [encodeLine({ t: 'h', v: 1, bootId: this.bootId, ms: this.now() })];
    for (const e of this.pendingMap.values()) {
      const line = encodeLine({ t: 'p', e: e.ev, s: e.src });
      e.bytes = line.length;
      parts.push(line);
    }
    for (const fe of this.faults.values()) {
      const line = encodeLine({ t: 'f', f: fe.f, b: fe.bootId });
      fe.bytes = line.length;
      parts.push(line);
    }
    const buf = Buffer.concat(parts);
    let out: StoreFile | null = null;
    try {
      out = await this.fsa.createTruncate(tmp);
      await out.append(buf);
      await out.datasync();
      await out.close();
      out = null;
      await this.fsa.rename(tmp, this.logPath);
      await this.fsa.fsyncDir(this.dir);
    } catch (e) {
      for (const id of events) this.dirtyEvents.add(id);
      for (const k of faults) this.dirtyFaults.add(k);
      if (out) await out.close().catch(() => undefined);
      await this.fsa.unlink(tmp).catch(() => undefined);
      throw e;
    }
    const old = this.file;
    this.file = null;
    if (old) await old.close().catch(() => undefined);
    this.file = await this.fsa.openAppend(this.logPath);
    this.fileBytes = buf.length;
    this.recomputeLive();
    this.needCompact = false;
    this.st.compactions++;
    if (this.st.diskFull) {
      this.st.diskFull = false;
      this.log?.info({ dir: this.dir }, 'event store: compaction succeeded after a full disk');
    }
  }

  private async ensureReserve(): Promise<void> {
    if (this.reserveBytes <= 0) return;
    const p = path.join(this.dir, RESERVE_NAME);
    try {
      const st = fs.statSync(p);
      if (st.size >= this.reserveBytes) return;
    } catch {
      /* missing */
    }
    let f: StoreFile | null = null;
    try {
      f = await this.fsa.createTruncate(p);
      await f.append(Buffer.alloc(this.reserveBytes));
      await f.datasync();
    } catch (e) {
      await this.fsa.unlink(p).catch(() => undefined);
      this.log?.warn({ err: (e as Error).message }, 'event store: could not create the disk reserve file');
    } finally {
      if (f) await f.close().catch(() => undefined);
    }
  }

  // --------------------------------------------------------------------------------- close

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.writer) await this.writer.catch(() => undefined);
    if (this.file) await this.file.close().catch(() => undefined);
    this.file = null;
    this.listeners.clear();
    this.releaseLock();
  }
}

/**
 * Active faults recorded under `dir`, read without opening the store: no lock, no compaction, no
 * write. A read-only command (`navarch-agent faults`, often run as root) must not rewrite the
 * agent's files: a log re-created as root:0600 would keep the agent's own user from opening it.
 * Faults of another boot are left out, as open() clears them. Empty when there is no log yet.
 */
export async function readStoredFaults(dir: string, opts: { bootId?: string } = {}): Promise<ActiveFault[]> {
  const logPath = path.join(dir, LOG_NAME);
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(logPath);
  } catch (e) {
    if (errCode(e) === 'ENOENT') return [];
    throw new EventStoreError(`event store: cannot read ${logPath}: ${errCode(e) ?? (e as Error).message}`, 'IO', { cause: e });
  }
  const bootId = opts.bootId ?? readBootId();
  const faults = new Map<string, { f: ActiveFault; b: string }>();
  for (const r of decodeLog(buf).records as LogRecord[]) {
    if (!r || typeof r !== 'object') continue;
    if (r.t === 'f' && r.f && typeof r.f.key === 'string') faults.set(r.f.key, { f: r.f, b: r.b });
    else if (r.t === 'u') faults.delete(r.k);
  }
  return [...faults.values()].filter((x) => x.b === bootId || x.f.action === 'replace').map((x) => x.f);
}

/** Open (or create) the durable event store under `opts.dir`. */
export async function openEventStore(opts: EventStoreOptions): Promise<DurableEventStore> {
  const store = new FileEventStore(opts);
  try {
    await store.open();
  } catch (e) {
    await store.close().catch(() => undefined);
    throw e;
  }
  return store;
}
