/**
 * The kernel-log source: tails `/dev/kmsg` (or a regular file / FIFO of records) and turns the
 * NVIDIA driver's lines into classified health events, stored before the cursor moves past them.
 *
 * It composes four parts, each in its own file:
 * - the reader (`kmsg-reader.ts`): raw records; on /dev/kmsg a thread in the addon drains the ring
 *   buffer at kernel speed, so a burst is not lost while this thread commits;
 * - the classifier (`kmsg-classify.ts`): records -> events (XID catalog, NVLink5, SXid, XID-less faults);
 * - the batch (`kmsg-batch.ts`): the events of the records read in one go, coalesced per fault key
 *   with exact counts (one group commit, one ReportHealth per batch, not one per line);
 * - the cursor (`kmsg-cursor.ts`): `{bootId, lastSeq}` persisted per committed batch.
 *
 * - Each record carries its own timestamp (usec since boot); wall time = boot time + usec.
 * - Same boot as the cursor: records with seq <= lastSeq are skipped (no replay), later ones are
 *   read (no miss). No cursor or another boot: a first run; XIDs already in the ring buffer are
 *   emitted as historical (metrics.replayed = "true") with their own timestamps.
 * - A gap in the sequence numbers (an overrun, or records dropped while the agent was down) raises
 *   one warning event saying how many records were lost.
 * - An event the callback could not take (retries exhausted, or the source stopping) pins the
 *   persisted cursor just before its record for the rest of this run: the log keeps moving, and
 *   the next start reads that record again instead of losing it (records after it may then be
 *   delivered a second time: at least once, never lost).
 */
import type { Logger } from 'pino';
import type { HealthEventInput } from '../events/types.js';
import { readBootId } from '../host/boot-id.js';
import { bootTimeMs } from '../host/boot-time.js';
import { exponentialMs, jittered } from '../util/backoff.js';
import { Sleeper } from '../util/sleeper.js';
import { KmsgBatch } from './kmsg-batch.js';
import { KmsgClassifier, type GpuResolver } from './kmsg-classify.js';
import { KmsgCursor } from './kmsg-cursor.js';
import { parseKmsgRecord, type KmsgRecord } from './kmsg-parse.js';
import { openKmsgReader, type KmsgReaderKind, type KmsgRecordReader } from './kmsg-reader.js';

export { normalizePciBusId, parseKmsgRecord, parseNvrmLine, parseXidLine } from './kmsg-parse.js';
export type { GpuResolver } from './kmsg-classify.js';
export { bootTimeMs } from '../host/boot-time.js';

export const DEFAULT_KMSG_PATH = '/dev/kmsg';

/** Records handled before the source yields to the event loop (and the reader's chunk size). */
const CHUNK_RECORDS = 256;

export interface KmsgSourceOptions {
  /** Default /dev/kmsg. A regular file or FIFO of records also works (tests, replays). */
  path?: string;
  /** Where the cursor is kept (`kmsg-cursor.json`). Without it nothing is persisted. */
  stateDir?: string;
  /** Maps the kernel's PCI id ("0000:9b:00") to the device; null when unknown. */
  resolveGpu?: GpuResolver;
  /** Receives every event. A returned promise is awaited before the cursor moves past the record. */
  onEvent: (event: HealthEventInput) => void | Promise<unknown>;
  logger?: Logger;
  /** Boot id (default: /proc/sys/kernel/random/boot_id). */
  bootId?: string;
  /** Wall time of boot in ms (default: now - /proc/uptime, else /proc/stat btime). */
  bootTimeMs?: number;
  /** Emit the XIDs already in the buffer on a first run (marked replayed). Default true. */
  replayOnFirstRun?: boolean;
  /** Idle poll backoff bounds of the JavaScript readers (ms). Defaults 25 and 100. */
  pollMinMs?: number;
  pollMaxMs?: number;
  /** Least time between cursor writes when no event moved it (ms). Default 1000. */
  cursorWriteIntervalMs?: number;
  /** 'auto' (default): the addon's reader thread for a character device when it loads; 'js': never. */
  reader?: 'auto' | 'js';
  /** Test seam: replaces fs.read (to inject EPIPE and other errors a test cannot cause for real). */
  readImpl?: (fd: number, buf: Buffer) => Promise<number>;
}

export interface KmsgStats {
  /** records: a character device (/dev/kmsg); stream: a file or FIFO. */
  mode: 'records' | 'stream' | 'closed';
  /** native: the addon's reader thread; js: reads on the JavaScript thread. */
  reader: 'native' | 'js' | null;
  records: number;
  nvrmLines: number;
  xids: number;
  events: number;
  /** EPIPE: the reader fell behind the ring buffer and records were lost. */
  overruns: number;
  /** Records that did not parse (and over-long lines dropped). */
  parseErrors: number;
  /** Records skipped because the cursor had already passed them (same boot). */
  skipped: number;
  /** Events emitted from the first-run backlog (historical). */
  replayed: number;
  /** Records the ring buffer dropped before they were read (sequence gaps, /dev/kmsg only). */
  missedRecords: number;
  /** Records the native reader dropped because its queue was full (this thread stalled for long). */
  queueDropped: number;
  /** onEvent threw or rejected. */
  emitErrors: number;
  readErrors: number;
  lastSeq: string | null;
  backlogDone: boolean;
  cursorWrites: number;
}

export class KmsgSource {
  private readonly path: string;
  private readonly opts: KmsgSourceOptions;
  private readonly log: Logger | undefined;
  private readonly bootId: string;
  private readonly cursor: KmsgCursor;
  private readonly classify: KmsgClassifier;
  private reader: KmsgRecordReader | null = null;
  private kind: KmsgReaderKind | null = null;
  private loopDone: Promise<void> | null = null;
  private stopping = false;
  /** Retry backoffs that stop() ends early. */
  private readonly sleeper = new Sleeper();
  /** Records with seq <= skipUpTo (same boot as the cursor) are skipped. */
  private skipUpTo: bigint | null = null;
  private firstRun = true;
  /** The last committed record (the cursor's position). */
  private lastSeq: bigint | null = null;
  /** The last record handled (read ahead of the commits): where a sequence gap is measured from. */
  private lastReadSeq: bigint | null = null;
  /**
   * The persisted cursor never passes this: the record after it has an event that was not stored.
   * -1 when that record is seq 0 (a cursor of -1 skips nothing).
   */
  private pinSeq: bigint | null = null;
  private cursorDirty = false;
  /** Records read but not yet handed to the callback: flushed when full and at idle. */
  private readonly batch = new KmsgBatch();
  /** Batch commits run one after another, behind the reader. */
  private flushChain: Promise<void> = Promise.resolve();
  private flushesQueued = 0;
  /** Set at the first idle read: records after it are live, not replayed history. */
  private backlogRead = false;
  private overrunsLogged = 0;
  private readonly st = {
    records: 0,
    events: 0,
    parseErrors: 0,
    skipped: 0,
    replayed: 0,
    missedRecords: 0,
    emitErrors: 0,
    backlogDone: false,
  };

  constructor(opts: KmsgSourceOptions) {
    if (!opts || typeof opts.onEvent !== 'function') throw new Error('kmsg source: onEvent callback is required');
    this.opts = opts;
    this.path = opts.path ?? DEFAULT_KMSG_PATH;
    this.log = opts.logger;
    this.bootId = opts.bootId ?? readBootId();
    this.cursor = new KmsgCursor(opts.stateDir, this.bootId, this.path, Math.max(0, opts.cursorWriteIntervalMs ?? 1000), this.log);
    this.classify = new KmsgClassifier(opts.bootTimeMs ?? bootTimeMs(), opts.resolveGpu, this.log);
  }

  /** Open the log and start tailing. Rejects with a one-line error when it cannot be opened. */
  async start(): Promise<void> {
    if (this.loopDone) throw new Error('kmsg source: already started');
    const c = this.cursor.load();
    this.skipUpTo = c.skipUpTo;
    this.firstRun = c.firstRun;
    if (c.skipUpTo !== null) this.lastSeq = this.lastReadSeq = c.skipUpTo;
    const pollMinMs = Math.max(1, this.opts.pollMinMs ?? 25);
    const reader = openKmsgReader(this.path, {
      logger: this.log,
      pollMinMs,
      pollMaxMs: Math.max(pollMinMs, this.opts.pollMaxMs ?? 100),
      prefer: this.opts.reader ?? 'auto',
      readImpl: this.opts.readImpl,
    });
    this.reader = reader;
    this.kind = reader.kind;
    this.stopping = false;
    this.log?.info(
      { path: this.path, mode: this.mode(), reader: this.readerName(), firstRun: this.firstRun, resumeAfterSeq: this.skipUpTo?.toString() ?? null },
      'kmsg source started',
    );
    this.loopDone = this.loop(reader);
  }

  /** Stop tailing and persist the cursor. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.reader?.wake();
    this.sleeper.wakeAll();
    if (this.loopDone) await this.loopDone;
    this.loopDone = null;
    this.reader?.close();
    await this.flushChain;
    await this.persistCursor(true);
    this.kind = null;
  }

  stats(): KmsgStats {
    const rc = this.reader?.counters() ?? { overruns: 0, readErrors: 0, oversized: 0, queueDropped: 0 };
    return {
      mode: this.mode(),
      reader: this.readerName(),
      records: this.st.records,
      nvrmLines: this.classify.nvrmLines,
      xids: this.classify.xids,
      events: this.st.events,
      overruns: rc.overruns,
      parseErrors: this.st.parseErrors + rc.oversized,
      skipped: this.st.skipped,
      replayed: this.st.replayed,
      missedRecords: this.st.missedRecords,
      queueDropped: rc.queueDropped,
      emitErrors: this.st.emitErrors,
      readErrors: rc.readErrors,
      lastSeq: this.lastSeq?.toString() ?? null,
      backlogDone: this.st.backlogDone,
      cursorWrites: this.cursor.writes,
    };
  }

  /** UUID learnt from `NVRM: GPU at PCI:...: GPU-...` lines. */
  uuidForPci(pciShort: string): string | undefined {
    return this.classify.uuidForPci(pciShort);
  }

  /** Resolves once the records present at start have been read and committed (the backlog). */
  async waitBacklog(timeoutMs = 30_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!this.st.backlogDone) {
      if (Date.now() > end) throw new Error('kmsg source: backlog not read in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  private mode(): KmsgStats['mode'] {
    return this.kind === null ? 'closed' : this.kind === 'stream' ? 'stream' : 'records';
  }

  private readerName(): KmsgStats['reader'] {
    return this.kind === null ? null : this.kind === 'native' ? 'native' : 'js';
  }

  // -------------------------------------------------------------------------------- loop

  private async loop(reader: KmsgRecordReader): Promise<void> {
    while (!this.stopping) {
      const { records, idle } = await reader.read(CHUNK_RECORDS);
      this.noteOverruns(reader);
      for (const raw of records) {
        this.handleRecord(parseKmsgRecord(raw));
        // Read ahead: everything available goes into one batch (one group commit, one cursor
        // write), and reading goes on while it commits; at most two batches wait in memory.
        if (this.batch.full) await this.queueFlush(false);
      }
      if (this.stopping) break;
      if (idle) {
        this.onIdle();
        await reader.wait();
      } else {
        // Let the store and the sender run between chunks.
        await new Promise((r) => setImmediate(r));
      }
    }
    await this.queueFlush(true);
  }

  private noteOverruns(reader: KmsgRecordReader): void {
    const { overruns } = reader.counters();
    if (overruns > this.overrunsLogged && this.kind === 'native') {
      this.log?.warn({ overruns }, 'kmsg source: overrun (EPIPE): records were lost; continuing from the oldest one');
    }
    this.overrunsLogged = overruns;
  }

  /**
   * Nothing to read now: commit the batch behind the reader without waiting for it (a commit's
   * fsyncs can take longer than the ring buffer lasts in a burst). The backlog counts as done
   * once its last batch is committed.
   */
  private onIdle(): void {
    if (this.batch.size === 0 && this.flushesQueued > 0 && this.backlogRead) return;
    const committed = this.queueFlush(true);
    if (!this.backlogRead) {
      this.backlogRead = true;
      void committed.then(() => {
        this.st.backlogDone = true;
        this.log?.debug({ records: this.st.records, replayed: this.st.replayed }, 'kmsg source: backlog read');
      });
    }
  }

  /** Parse-level bookkeeping for one record; its events join the current batch. */
  private handleRecord(rec: KmsgRecord | null): void {
    if (!rec) {
      this.st.parseErrors++;
      return;
    }
    this.st.records++;
    if (this.skipUpTo !== null && rec.seq <= this.skipUpTo) {
      this.st.skipped++;
      return;
    }
    // Measured from the last record read, not the last committed one: a batch still committing
    // is no gap.
    const prev = this.lastReadSeq;
    this.lastReadSeq = rec.seq;
    const events: HealthEventInput[] = [];
    if (this.kind !== 'stream' && prev !== null && rec.seq > prev + 1n) {
      // The ring buffer dropped records we never read (while the agent was down, or an overrun).
      const gap = rec.seq - prev - 1n;
      const lost = Number(gap > BigInt(Number.MAX_SAFE_INTEGER) ? BigInt(Number.MAX_SAFE_INTEGER) : gap);
      this.st.missedRecords += lost;
      this.log?.warn(
        { from: (prev + 1n).toString(), to: (rec.seq - 1n).toString(), lost },
        'kmsg source: records lost from the ring buffer before they were read',
      );
      events.push(this.classify.lostRecordsEvent(prev + 1n, rec.seq - 1n, lost, rec));
    }
    const historical = this.firstRun && !this.backlogRead;
    if (!(historical && this.opts.replayOnFirstRun === false)) events.push(...this.classify.eventsFor(rec, historical));
    for (const _ of events) {
      this.st.events++;
      if (historical) this.st.replayed++;
    }
    this.batch.add(rec.seq, events);
  }

  /**
   * Takes the batch now and commits it after the batches before it (in order, one at a time).
   * Resolves at once while at most one earlier batch is still committing (reading goes on), else
   * when the earlier ones are done (backpressure: at most two batches in memory). With `wait`,
   * resolves when this batch is committed and the cursor written.
   */
  private queueFlush(wait: boolean): Promise<void> {
    const taken = this.batch.size > 0 ? this.batch.take() : null;
    const before = this.flushChain;
    const backlog = this.flushesQueued;
    this.flushesQueued++;
    this.flushChain = before
      .then(() => (taken ? this.commit(taken) : this.persistCursor(false)))
      .catch((e: unknown) => this.log?.error({ err: (e as Error).message }, 'kmsg source: batch commit failed'))
      .finally(() => {
        this.flushesQueued--;
      });
    if (wait) return this.flushChain;
    return backlog > 0 ? before : Promise.resolve();
  }

  /**
   * Hands a batch to the callback: its events, coalesced per fault key with exact counts, are all
   * issued at once (the store group-commits concurrent appends), then the cursor moves to the
   * batch's last record and is written once. An event that was not taken pins the cursor just
   * before its first record.
   */
  private async commit({ events, lastSeq }: ReturnType<KmsgBatch['take']>): Promise<void> {
    const results = await Promise.all(events.map((g) => this.emit(g.event)));
    results.forEach((ok, i) => {
      const g = events[i];
      if (ok || !g) return;
      const pin = g.firstSeq - 1n;
      if (this.pinSeq === null || pin < this.pinSeq) {
        this.pinSeq = pin;
        this.log?.warn({ seq: g.firstSeq.toString() }, 'kmsg source: cursor held before this record; the next start reads it again');
      }
    });
    if (lastSeq !== null) this.lastSeq = lastSeq;
    this.cursorDirty = true;
    // After emitted events the cursor is written at once (one write per batch), so a crash replays
    // at most one batch; batches without events move it at most once per cursorWriteIntervalMs.
    await this.persistCursor(events.length > 0);
  }

  private async persistCursor(force: boolean): Promise<void> {
    if (!this.cursorDirty || this.lastSeq === null) return;
    const seq = this.pinSeq !== null && this.pinSeq < this.lastSeq ? this.pinSeq : this.lastSeq;
    if (await this.cursor.save(seq, force)) this.cursorDirty = false;
  }

  /**
   * Hand one event to the callback. A rejection (e.g. the store cannot write) is retried a few
   * times with backoff and jitter (about 200 ms, 400 ms, 800 ms), then logged and dropped so the
   * log keeps moving; the cursor only moves on afterwards. False when the event was not taken.
   */
  private async emit(ev: HealthEventInput): Promise<boolean> {
    const attempts = 4;
    for (let i = 1; ; i++) {
      try {
        await this.opts.onEvent(ev);
        return true;
      } catch (e) {
        if (i === attempts || this.stopping) {
          this.st.emitErrors++;
          this.log?.error({ err: (e as Error).message, key: ev.key, attempts: i }, 'kmsg source: event callback failed; the event is not stored in this run');
          return false;
        }
        await this.sleeper.sleep(jittered(exponentialMs(i, 100, 30_000), Math.random, 0.5));
      }
    }
  }
}
