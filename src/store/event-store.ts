/**
 * The durable event store (implements EventStore from ./types.ts): a thin facade over
 * - ./lock.ts: one process per store directory (flock(2) with the addon, a pid file without);
 * - ./ledger.ts: the state in memory (coalescing, shedding, active faults; no I/O);
 * - ./journal.ts: `events.log`, the CRC-framed append-only log, replayed at open.
 *
 * Group commit: every append/ack changes the ledger at once and marks what it touched dirty; one
 * writer loop writes every dirty event once per batch and fsyncs once, and all callers of that
 * batch resolve together. A storm of identical events therefore costs one small line per batch.
 * pending() shows a new event once the batch that first writes it is in the log file (written, its
 * fdatasync may still run; the ledger's isVisible), so the send overlaps the fsync; the sender
 * learns of it through onPending. An event in the file survives kill -9 (the page cache is the
 * kernel's); it leaves the store only through ack(), whose record is written in a later batch,
 * after this batch's fsync. What power loss can lose is in docs/store.md ("Durability").
 *
 * Bounds: `maxEvents` pending events and `maxBytes` of log. Over a bound, and on ENOSPC, the
 * store sheds the oldest 'info' events, then the oldest 'warning' ones; never 'critical' ones.
 * A reserve file (`reserve.bin`) is kept so a full disk still leaves room to compact.
 *
 * Hostile directories: a record the store never wrote (bad shape, or over MAX_RECORD_BYTES) is
 * dropped at open and counted; a directory or file of the wrong kind at a store path is moved
 * aside (./misplaced.ts). Either way the store opens.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { ActiveFault, HealthEvent, HealthEventInput, Severity } from '../events/types.js';
import type { AppendResult, EventStore } from './types.js';
import { EventStoreError, errCode } from './errors.js';
import { nodeStoreFs, type StoreFs } from './fs-adapter.js';
import { Journal, LOG_NAME, RESERVE_NAME, TMP_NAME, readLog } from './journal.js';
import { EventLedger } from './ledger.js';
import { LOCK_NAME, StoreLock, type LockKind, type TryFlock } from './lock.js';
import { moveAsideUnless } from './misplaced.js';
import { readBootId } from '../host/boot-id.js';
import { validateInput } from './records.js';

export { EventStoreError } from './errors.js';
export { validateInput } from './records.js';
export { DEFAULT_CROSS_SOURCE_WINDOW_MS, DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS } from './ledger.js';

export const DEFAULT_STATE_DIR = '/var/lib/navarch-agent';

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
  /** The lock's flock call: default the native addon's when it loads; null forces the pid-file lock. */
  tryFlock?: TryFlock | null;
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
  /** Records at open with a good CRC but a shape the store never writes: dropped, never sent. */
  badRecords: number;
  /** Records at open over the per-record size limit: skipped unread. */
  oversizeRecords: number;
  /** Store paths of the wrong kind moved aside at open. */
  misplaced: number;
  /** How the store directory is locked. */
  lock: LockKind | null;
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

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
  critical: boolean;
}

class FileEventStore implements DurableEventStore {
  readonly dir: string;
  private readonly maxBytes: number;
  private readonly log: Logger | undefined;
  private readonly now: () => number;
  private readonly tryFlock: TryFlock | null | undefined;
  private readonly ledger: EventLedger;
  private readonly journal: Journal;
  private lock: StoreLock | null = null;
  private needCompact = false;
  private closed = false;
  private waiters: Waiter[] = [];
  private writer: Promise<void> | null = null;
  private readonly listeners = new Set<(r: AppendResult) => void>();
  private readonly pendingListeners = new Set<() => void>();

  private readonly st = {
    diskFull: false,
    commits: 0,
    compactions: 0,
    corruptRecords: 0,
    tornTails: 0,
    badRecords: 0,
    oversizeRecords: 0,
    misplaced: 0,
    lastError: null as string | null,
  };

  constructor(opts: EventStoreOptions) {
    if (!opts || typeof opts.dir !== 'string' || opts.dir.length === 0) throw new EventStoreError('event store: dir is required', 'BAD_INPUT');
    this.dir = opts.dir;
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
    this.tryFlock = opts.tryFlock;
    this.ledger = new EventLedger({
      maxBytes: opts.maxBytes,
      maxEvents: opts.maxEvents,
      crossSourceWindowMs: opts.crossSourceWindowMs,
      bootId: opts.bootId ?? readBootId(),
      now: this.now,
      logger: opts.logger,
    });
    this.maxBytes = this.ledger.maxBytes;
    this.journal = new Journal({
      dir: opts.dir,
      fsync: opts.fsync,
      reserveBytes: opts.reserveBytes ?? Math.min(1024 * 1024, Math.floor(this.maxBytes / 16)),
      fs: opts.fs ?? nodeStoreFs,
      logger: opts.logger,
    });
  }

  // ---------------------------------------------------------------------------------- open

  async open(): Promise<void> {
    if (moveAsideUnless(this.dir, 'dir', this.log, this.now())) this.st.misplaced++;
    await this.journal.fsa.mkdirp(this.dir);
    if (moveAsideUnless(path.join(this.dir, LOCK_NAME), 'file', this.log, this.now())) this.st.misplaced++;
    this.lock = StoreLock.acquire(this.dir, { tryFlock: this.tryFlock, logger: this.log });
    for (const name of [LOG_NAME, TMP_NAME, RESERVE_NAME]) {
      if (moveAsideUnless(path.join(this.dir, name), 'file', this.log, this.now())) this.st.misplaced++;
    }
    const d = await this.journal.load();
    if (d) {
      this.st.corruptRecords = d.corrupt;
      this.st.tornTails = d.tornTail ? 1 : 0;
      this.st.badRecords = d.bad;
      this.st.oversizeRecords = d.oversize;
      if (d.corrupt > 0 || d.tornTail) {
        this.log?.warn(
          { dir: this.dir, corrupt: d.corrupt, tornTail: d.tornTail, droppedBytes: d.droppedBytes },
          'event store: log had a torn tail or corrupt records; they were skipped',
        );
      }
      if (d.bad > 0 || d.oversize > 0) {
        this.log?.warn(
          { dir: this.dir, badRecords: d.bad, firstReason: d.firstBadReason, oversizeRecords: d.oversize },
          'event store: log had records the store never writes (bad shape or oversize); dropped, they will not be sent',
        );
      }
      for (const r of d.records) this.ledger.replay(r);
    }
    this.ledger.finishReplay();
    // Always start from a clean, compacted file: it also drops a torn tail and dropped records.
    await this.compactNow();
    await this.journal.ensureReserve();
  }

  // -------------------------------------------------------------------------------- append

  append(input: HealthEventInput): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new EventStoreError('event store is closed', 'CLOSED'));
    const bad = validateInput(input);
    if (bad) return Promise.reject(new EventStoreError(`event store: ${bad}`, 'BAD_INPUT'));
    let result: AppendResult & { shed?: boolean };
    try {
      result = this.ledger.append(input);
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

  // ------------------------------------------------------------------------------- reading

  pending(limit?: number): HealthEvent[] {
    return this.ledger.pending(limit);
  }

  pendingCount(): number {
    return this.ledger.pendingCount();
  }

  activeFaults(): ActiveFault[] {
    return this.ledger.activeFaults();
  }

  onPending(listener: () => void): () => void {
    this.pendingListeners.add(listener);
    return () => this.pendingListeners.delete(listener);
  }

  /** Batch `no` is in the file (or settled): its events become visible to pending(). */
  private reveal(no: number): void {
    if (!this.ledger.reveal(no)) return;
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
    const c = this.ledger.counters;
    return {
      pending: this.ledger.pendingCount(),
      bytesOnDisk: this.journal.bytes,
      liveBytes: this.ledger.liveBytes(),
      shed: c.shed,
      shedBySeverity: { ...c.shedBySeverity },
      coalesced: c.coalesced,
      crossSourceMerged: c.crossSourceMerged,
      diskFull: this.st.diskFull,
      appends: c.appends,
      acks: c.acks,
      commits: this.st.commits,
      compactions: this.st.compactions,
      corruptRecords: this.st.corruptRecords,
      tornTails: this.st.tornTails,
      badRecords: this.st.badRecords,
      oversizeRecords: this.st.oversizeRecords,
      misplaced: this.st.misplaced,
      lock: this.lock?.kind ?? null,
      activeFaults: this.ledger.activeFaultCount(),
      lastError: this.st.lastError,
    };
  }

  // ----------------------------------------------------------------------------------- ack

  async ack(sent: Array<Pick<HealthEvent, 'id' | 'count'>>): Promise<void> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    if (!Array.isArray(sent)) throw new EventStoreError('event store: ack expects an array of {id, count}', 'BAD_INPUT');
    if (this.ledger.ack(sent)) await this.commit(true);
  }

  async clearFault(key: string): Promise<boolean> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    if (!this.ledger.clearFault(key)) return false;
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
        const no = this.ledger.startBatch();
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

  private async writeDirty(no: number): Promise<void> {
    if (!this.ledger.hasDirty() && !this.needCompact) return;
    if (this.needCompact || !this.journal.isOpen) {
      await this.compactOrRecover();
      return;
    }
    const dirty = this.ledger.takeDirty();
    const buf = this.ledger.encodeDirty(dirty);
    try {
      // In the page cache once written: kill -9 cannot lose it, so the send may start while fdatasync runs.
      await this.journal.append(buf, () => this.reveal(no));
      this.st.commits++;
      if (this.st.diskFull) {
        this.st.diskFull = false;
        this.log?.info({ dir: this.dir }, 'event store: writes succeed again');
      }
    } catch (e) {
      // Put the batch back: memory already holds its state; the next write (or compaction) carries it.
      this.ledger.restoreDirty(dirty);
      if (this.journal.tailSuspect) this.needCompact = true;
      if (errCode(e) === 'ENOSPC') {
        this.markDiskFull(e);
        await this.compactOrRecover();
        return;
      }
      this.noteError('write failed', e);
      this.needCompact = true;
      throw new EventStoreError(`event store: write to ${this.journal.logPath} failed: ${(e as Error).message}`, 'IO', { cause: e });
    }
  }

  private markDiskFull(e: unknown): void {
    if (!this.st.diskFull) this.log?.error({ dir: this.dir, err: (e as Error).message }, 'event store: disk full (ENOSPC); shedding informational events');
    this.st.diskFull = true;
    this.st.lastError = `ENOSPC: ${(e as Error).message}`;
  }

  private noteError(what: string, e: unknown): void {
    this.st.lastError = `${what}: ${(e as Error).message}`;
    this.log?.error({ dir: this.dir, err: (e as Error).message }, `event store: ${what}`);
  }

  /** Compact; on ENOSPC free the reserve, shed info then warning events, and retry. */
  private async compactOrRecover(): Promise<void> {
    const l = this.ledger;
    const steps: Array<() => Promise<boolean> | boolean> = [
      () => true,
      async () => {
        await this.journal.freeReserve();
        return l.shedFraction('info', 0.5) || true;
      },
      () => l.shedAll('info'),
      () => l.shedFraction('warning', 0.5),
      () => l.shedAll('warning'),
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
          throw new EventStoreError(`event store: compaction of ${this.journal.logPath} failed: ${(e as Error).message}`, 'IO', { cause: e });
        }
        this.markDiskFull(e);
      }
    }
    this.needCompact = true;
    throw new EventStoreError(
      `event store: disk full under ${this.dir}: cannot persist ${l.pendingCount()} critical event(s) even after shedding every informational and warning event`,
      'DISK_FULL',
      { cause: last },
    );
  }

  private async maybeCompact(): Promise<void> {
    const minCompact = Math.min(1024 * 1024, Math.floor(this.maxBytes / 4));
    const fileBytes = this.journal.bytes;
    if (fileBytes > Math.max(minCompact, this.ledger.liveBytes() * 2) || fileBytes > this.maxBytes * 0.9) {
      if (this.ledger.liveBytes() > this.maxBytes * 0.5) this.ledger.shedDownTo(this.maxBytes * 0.4);
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
    // The snapshot covers every change made so far; changes made while this compaction awaits
    // I/O mark events dirty again and go out with the next batch.
    const dirty = this.ledger.takeDirty();
    const buf = this.ledger.encodeSnapshot();
    try {
      await this.journal.rewrite(buf);
    } catch (e) {
      this.ledger.restoreDirty(dirty);
      throw e;
    }
    this.ledger.snapshotWritten();
    this.needCompact = false;
    this.st.compactions++;
    if (this.st.diskFull) {
      this.st.diskFull = false;
      this.log?.info({ dir: this.dir }, 'event store: compaction succeeded after a full disk');
    }
  }

  // --------------------------------------------------------------------------------- close

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.writer) await this.writer.catch(() => undefined);
    await this.journal.close();
    this.listeners.clear();
    this.lock?.release();
    this.lock = null;
  }
}

/** What the log under a store directory holds, read without opening the store (readStoredState). */
export interface StoredState {
  /** False when there is no log yet (no agent has stored anything there). */
  exists: boolean;
  activeFaults: ActiveFault[];
  /** Events stored but not yet acknowledged by the control plane (the backlog). */
  pending: number;
  /** Time of the oldest pending event (ms since the epoch), null when none is pending. */
  oldestPendingMs: number | null;
}

/**
 * The active faults and the backlog recorded under `dir`, read without opening the store: no
 * lock, no compaction, no write. A read-only command (`navarch-agent faults`, `status`, often run
 * as root) must not rewrite the agent's files: a log re-created as root:0600 would keep the
 * agent's own user from opening it. Faults of another boot are left out, as open() clears them.
 */
export async function readStoredState(dir: string, opts: { bootId?: string } = {}): Promise<StoredState> {
  const logPath = path.join(dir, LOG_NAME);
  const empty: StoredState = { exists: false, activeFaults: [], pending: 0, oldestPendingMs: null };
  let d;
  try {
    const st = await fs.promises.stat(logPath).catch((e: unknown) => (errCode(e) === 'ENOENT' ? null : Promise.reject(e)));
    if (!st) return empty;
    if (!st.isFile()) throw Object.assign(new Error(`not a regular file`), { code: 'EISDIR' });
    d = await readLog(nodeStoreFs, logPath);
  } catch (e) {
    throw new EventStoreError(`event store: cannot read ${logPath}: ${errCode(e) ?? (e as Error).message}`, 'IO', { cause: e });
  }
  if (!d) return { ...empty, exists: true };
  const bootId = opts.bootId ?? readBootId();
  const faults = new Map<string, { f: ActiveFault; b: string }>();
  const pending = new Map<string, number>();
  for (const r of d.records) {
    if (r.t === 'f') faults.set(r.f.key, { f: r.f, b: r.b });
    else if (r.t === 'u') faults.delete(r.k);
    else if (r.t === 'p') pending.set(r.e.id, r.e.timeMs);
    else if (r.t === 'a') pending.delete(r.id);
  }
  let oldest: number | null = null;
  for (const t of pending.values()) if (oldest === null || t < oldest) oldest = t;
  return {
    exists: true,
    activeFaults: [...faults.values()].filter((x) => x.b === bootId || x.f.action === 'replace').map((x) => x.f),
    pending: pending.size,
    oldestPendingMs: oldest,
  };
}

/** The active faults of readStoredState (empty when there is no log yet). */
export async function readStoredFaults(dir: string, opts: { bootId?: string } = {}): Promise<ActiveFault[]> {
  return (await readStoredState(dir, opts)).activeFaults;
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
