/**
 * The kernel-log source: tails `/dev/kmsg` (or a regular file / FIFO of records) and turns the
 * NVIDIA driver's NVRM lines into classified health events.
 *
 * - `/dev/kmsg` is opened O_NONBLOCK; each read() returns one record. EAGAIN means "nothing
 *   new": the loop waits with a short backoff (25 ms doubling to 100 ms by default: this kernel's ring buffer of about 1,400 XID records fills in 140 ms at 10 records per ms) and reads
 *   again. (Node cannot poll a character device with libuv handles, so this is the approach
 *   that works on Node 20.) EPIPE means the reader was overrun: it is counted and reading goes
 *   on from the oldest record still in the ring buffer.
 * - A regular file or a FIFO is read as a stream of records separated by newlines
 *   (continuation lines start with a space). EOF counts as "nothing new".
 * - Each record carries its own timestamp (usec since boot); wall time = boot time + usec.
 * - A cursor {bootId, lastSeq} is persisted atomically in the state directory (throttled), and
 *   only advanced after the event callback resolved (i.e. after the store has the event on disk):
 *   same boot -> records with seq <= lastSeq are skipped (no replay), later ones are read (no
 *   miss); no cursor or another boot -> first run: XIDs already in the ring buffer are emitted
 *   as historical (metrics.replayed = "true") with their own timestamps.
 * - An event the callback could not take (retries exhausted, or the source stopping) pins the
 *   persisted cursor just before its record for the rest of this run: the log keeps moving, and
 *   the next start reads that record again instead of losing it (records after it may then be
 *   delivered a second time: at least once, never lost).
 * - Holds no lock besides its own file descriptor.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { HealthEventInput } from '../events/types.js';
import { xidEventInput } from '../xid/catalog.js';
import { parseSxidLine, sxidEventInput } from '../xid/sxid.js';
import { KmsgBatch } from './kmsg-batch.js';
import { MAX_RECORD_CHARS, parseKmsgRecord, parseNvrmLine, type KmsgRecord } from './kmsg-parse.js';
import { exponentialMs, jittered } from '../util/backoff.js';

export { normalizePciBusId, parseKmsgRecord, parseNvrmLine, parseXidLine } from './kmsg-parse.js';

export const DEFAULT_KMSG_PATH = '/dev/kmsg';
const CURSOR_FILE = 'kmsg-cursor.json';
const READ_BUFFER_BYTES = 16 * 1024;
const MAX_UUID_MAP = 512;

export type GpuResolver = (pciShort: string) => { index: number; uuid: string } | null;

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
  /** Idle poll backoff bounds (ms). Defaults 25 and 100. */
  pollMinMs?: number;
  pollMaxMs?: number;
  /** Least time between cursor writes (ms). Default 1000. */
  cursorWriteIntervalMs?: number;
  /** Test seam: replaces fs.read (to inject EPIPE and other errors a test cannot cause for real). */
  readImpl?: (fd: number, buf: Buffer) => Promise<number>;
}

export interface KmsgStats {
  mode: 'records' | 'stream' | 'closed';
  records: number;
  nvrmLines: number;
  xids: number;
  events: number;
  /** EPIPE: the reader fell behind the ring buffer and records were lost. */
  overruns: number;
  /** Records that did not parse. */
  parseErrors: number;
  /** Records skipped because the cursor had already passed them (same boot). */
  skipped: number;
  /** Events emitted from the first-run backlog (historical). */
  replayed: number;
  /** Records the ring buffer dropped before they were read (sequence gaps, /dev/kmsg only). */
  missedRecords: number;
  /** onEvent threw or rejected. */
  emitErrors: number;
  readErrors: number;
  lastSeq: string | null;
  backlogDone: boolean;
  cursorWrites: number;
}

interface Cursor {
  bootId: string;
  lastSeq: string;
  path: string;
}

function readBootId(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/** Wall-clock ms of boot: now - uptime (10 ms resolution), else btime from /proc/stat. */
export function bootTimeMs(): number {
  try {
    const up = Number.parseFloat(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0] ?? '');
    if (Number.isFinite(up)) return Date.now() - Math.round(up * 1000);
  } catch {
    /* fall through */
  }
  try {
    const m = /^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'));
    if (m?.[1]) return Number(m[1]) * 1000;
  } catch {
    /* fall through */
  }
  return Date.now();
}

/** Records read on the JavaScript thread before it yields to the event loop. */
const YIELD_EVERY_RECORDS = 256;

function readNonBlocking(fd: number, buf: Buffer): Promise<number> {
  try {
    return Promise.resolve(fs.readSync(fd, buf, 0, buf.length, null));
  } catch (e) {
    return Promise.reject(e);
  }
}

function readAsync(fd: number, buf: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Atomic small-file write, off the JavaScript thread: tmp + fsync + rename + fsync(dir). */
async function writeFileAtomicAsync(file: string, data: string): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fs.promises.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(tmp, file);
  const dh = await fs.promises.open(path.dirname(file), 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

export class KmsgSource {
  private readonly path: string;
  private readonly opts: KmsgSourceOptions;
  private readonly log: Logger | undefined;
  private readonly bootId: string;
  private readonly bootMs: number;
  private readonly pollMin: number;
  private readonly pollMax: number;
  private readonly cursorInterval: number;
  private fd: number | null = null;
  private mode: 'records' | 'stream' | 'closed' = 'closed';
  private loopDone: Promise<void> | null = null;
  private stopping = false;
  private readonly sleepers = new Set<() => void>();
  private readonly uuidByPci = new Map<string, string>();
  /** Records with seq <= skipUpTo (same boot as the cursor) are skipped. */
  private skipUpTo: bigint | null = null;
  private firstRun = true;
  private lastSeq: bigint | null = null;
  /**
   * The persisted cursor never passes this: the record after it has an event that was not stored.
   * -1 when that record is seq 0 (a cursor of -1 skips nothing).
   */
  private pinSeq: bigint | null = null;
  private cursorDirty = false;
  private lastCursorWrite = 0;
  private streamBuf = '';
  /** Records read but not yet handed to the callback: flushed when full, at idle and at stop. */
  private readonly batch = new KmsgBatch();
  /** Batch commits run one after another, behind the reader. */
  private flushChain: Promise<void> = Promise.resolve();
  private flushesQueued = 0;
  /** Set at the first idle read: records after it are live, not replayed history. */
  private backlogRead = false;
  /** Dropping the rest of an over-long line (stream mode). */
  private discarding = false;
  private readonly st: KmsgStats = {
    mode: 'closed',
    records: 0,
    nvrmLines: 0,
    xids: 0,
    events: 0,
    overruns: 0,
    parseErrors: 0,
    skipped: 0,
    replayed: 0,
    missedRecords: 0,
    emitErrors: 0,
    readErrors: 0,
    lastSeq: null,
    backlogDone: false,
    cursorWrites: 0,
  };

  constructor(opts: KmsgSourceOptions) {
    if (!opts || typeof opts.onEvent !== 'function') throw new Error('kmsg source: onEvent callback is required');
    this.opts = opts;
    this.path = opts.path ?? DEFAULT_KMSG_PATH;
    this.log = opts.logger;
    this.bootId = opts.bootId ?? readBootId();
    this.bootMs = opts.bootTimeMs ?? bootTimeMs();
    this.pollMin = Math.max(1, opts.pollMinMs ?? 25);
    this.pollMax = Math.max(this.pollMin, opts.pollMaxMs ?? 100);
    this.cursorInterval = Math.max(0, opts.cursorWriteIntervalMs ?? 1000);
  }

  /** Open the log and start tailing. Rejects with a one-line error when it cannot be opened. */
  async start(): Promise<void> {
    if (this.loopDone) throw new Error('kmsg source: already started');
    this.loadCursor();
    let fd: number;
    try {
      fd = fs.openSync(this.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const hint = code === 'EACCES' || code === 'EPERM' ? ' (needs root or CAP_SYSLOG when kernel.dmesg_restrict=1)' : '';
      throw new Error(`kmsg source: cannot open ${this.path}: ${code ?? (e as Error).message}${hint}`);
    }
    this.fd = fd;
    this.mode = fs.fstatSync(fd).isCharacterDevice() ? 'records' : 'stream';
    this.st.mode = this.mode;
    this.stopping = false;
    this.log?.info(
      { path: this.path, mode: this.mode, firstRun: this.firstRun, resumeAfterSeq: this.skipUpTo?.toString() ?? null },
      'kmsg source started',
    );
    this.loopDone = this.loop();
  }

  /** Stop tailing and persist the cursor. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const wake of [...this.sleepers]) wake();
    if (this.loopDone) await this.loopDone;
    this.loopDone = null;
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* already closed */
      }
      this.fd = null;
    }
    this.mode = 'closed';
    this.st.mode = 'closed';
    await this.flushChain;
    await this.persistCursor(true);
  }

  stats(): KmsgStats {
    return { ...this.st, lastSeq: this.lastSeq?.toString() ?? null };
  }

  /** UUID learnt from `NVRM: GPU at PCI:...: GPU-...` lines. */
  uuidForPci(pciShort: string): string | undefined {
    return this.uuidByPci.get(pciShort);
  }

  /** Resolves once the records present at start have been read (the backlog). */
  async waitBacklog(timeoutMs = 30_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!this.st.backlogDone) {
      if (Date.now() > end) throw new Error('kmsg source: backlog not read in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  // ------------------------------------------------------------------------------ cursor

  private cursorPath(): string | null {
    return this.opts.stateDir ? path.join(this.opts.stateDir, CURSOR_FILE) : null;
  }

  private loadCursor(): void {
    const p = this.cursorPath();
    this.firstRun = true;
    this.skipUpTo = null;
    if (!p) return;
    let c: Partial<Cursor> | null = null;
    try {
      c = JSON.parse(fs.readFileSync(p, 'utf8')) as Partial<Cursor>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log?.warn({ err: (e as Error).message, path: p }, 'kmsg source: unreadable cursor ignored');
      return;
    }
    if (c && c.bootId === this.bootId && c.path === this.path && typeof c.lastSeq === 'string' && /^(-1|\d{1,20})$/.test(c.lastSeq)) {
      this.skipUpTo = BigInt(c.lastSeq);
      this.lastSeq = this.skipUpTo;
      this.firstRun = false;
    } else if (c?.bootId && c.bootId !== this.bootId) {
      this.log?.info({ previousBoot: c.bootId }, 'kmsg source: new boot since the last run; the previous boot\'s records are gone');
    }
  }

  private async persistCursor(force: boolean): Promise<void> {
    const p = this.cursorPath();
    if (!p || !this.cursorDirty || this.lastSeq === null) return;
    const now = Date.now();
    if (!force && now - this.lastCursorWrite < this.cursorInterval) return;
    try {
      await fs.promises.mkdir(path.dirname(p), { recursive: true, mode: 0o700 });
      const seq = this.pinSeq !== null && this.pinSeq < this.lastSeq ? this.pinSeq : this.lastSeq;
      const c: Cursor = { bootId: this.bootId, lastSeq: seq.toString(), path: this.path };
      await writeFileAtomicAsync(p, `${JSON.stringify({ ...c, updatedMs: now })}\n`);
      this.cursorDirty = false;
      this.lastCursorWrite = now;
      this.st.cursorWrites++;
    } catch (e) {
      this.log?.warn({ err: (e as Error).message, path: p }, 'kmsg source: cursor write failed');
    }
  }

  // -------------------------------------------------------------------------------- loop

  /** A sleep that stop() ends early; the reader and a committing batch may sleep at once. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref?.();
      this.sleepers.add(wake);
    });
  }


  /**
   * Nothing to read now: commit the batch behind the reader without waiting for it (a commit's
   * fsyncs can take longer than the ring buffer lasts in a burst). The backlog counts as done
   * once its last batch is committed.
   */
  private onIdle(): void {
    if (this.mode === 'stream' && this.streamBuf.length > 0) this.drainStream(true);
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

  private async loop(): Promise<void> {
    let buf = Buffer.alloc(READ_BUFFER_BYTES);
    // /dev/kmsg is non-blocking: a read returns a record or EAGAIN at once, so it is read on this
    // thread (no thread-pool round trip per record, which let a burst overrun the ring buffer).
    const read = this.opts.readImpl ?? (this.mode === 'records' ? readNonBlocking : readAsync);
    let sinceYield = 0;
    let delay = this.pollMin;
    let errors = 0;
    while (!this.stopping && this.fd !== null) {
      let n: number;
      try {
        n = await read(this.fd, buf);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
          this.onIdle();
          await this.sleep(delay);
          delay = Math.min(delay * 2, this.pollMax);
          continue;
        }
        if (code === 'EPIPE') {
          this.st.overruns++;
          this.log?.warn({ overruns: this.st.overruns }, 'kmsg source: overrun (EPIPE): records were lost; continuing from the oldest one');
          continue;
        }
        if (code === 'EINVAL' && buf.length < 1024 * 1024) {
          buf = Buffer.alloc(buf.length * 4); // a record bigger than the buffer
          continue;
        }
        if (this.stopping) break;
        this.st.readErrors++;
        errors++;
        this.log?.error({ err: (e as Error).message, code }, 'kmsg source: read failed');
        await this.sleep(exponentialMs(Math.min(errors, 6), this.pollMax, 30_000));
        continue;
      }
      errors = 0;
      if (n === 0) {
        this.onIdle();
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.pollMax);
        continue;
      }
      delay = this.pollMin;
      // Let the store and the sender run between stretches of synchronous reads.
      if (++sinceYield >= YIELD_EVERY_RECORDS) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
      if (this.mode === 'records') {
        this.handleRecord(parseKmsgRecord(buf.subarray(0, n)));
      } else {
        this.streamBuf += buf.toString('utf8', 0, n);
        this.drainStream(false);
      }
      // Read ahead: everything available goes into one batch (one group commit, one cursor write),
      // and reading goes on while it commits.
      if (this.batch.full) await this.queueFlush(false);
    }
    if (this.mode === 'stream' && this.streamBuf.length > 0) this.drainStream(true);
    await this.queueFlush(true);
  }

  /** Split the stream buffer into records; the last one is only taken at idle (it may continue). */
  private drainStream(final: boolean): void {
    if (this.discarding) {
      const nl = this.streamBuf.indexOf('\n');
      if (nl < 0) {
        this.streamBuf = '';
        return;
      }
      this.streamBuf = this.streamBuf.slice(nl + 1);
      this.discarding = false;
    }
    for (;;) {
      const s = this.streamBuf;
      // find the end of the first record: a newline followed by a line that is not a continuation
      let end = -1;
      let pos = 0;
      for (;;) {
        const nl = s.indexOf('\n', pos);
        if (nl < 0) break;
        if (nl + 1 < s.length) {
          if (s.charCodeAt(nl + 1) !== 32) {
            end = nl + 1;
            break;
          }
          pos = nl + 1;
          continue;
        }
        if (final) end = nl + 1;
        break;
      }
      if (end < 0) {
        if (s.length > MAX_RECORD_CHARS * 2) {
          // an endless line: drop it up to its newline, bounded memory
          this.st.parseErrors++;
          this.streamBuf = '';
          this.discarding = s.indexOf('\n', MAX_RECORD_CHARS) < 0;
        }
        return;
      }
      const rec = s.slice(0, end);
      this.streamBuf = s.slice(end);
      if (rec.trim().length === 0) continue;
      this.handleRecord(parseKmsgRecord(rec));
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
    const prev = this.batch.lastSeq ?? this.lastSeq;
    const events: HealthEventInput[] = [];
    if (this.mode === 'records' && prev !== null && rec.seq > prev + 1n) {
      // The ring buffer dropped records we never read (while the agent was down, or an overrun).
      const gap = rec.seq - prev - 1n;
      const lost = Number(gap > BigInt(Number.MAX_SAFE_INTEGER) ? BigInt(Number.MAX_SAFE_INTEGER) : gap);
      this.st.missedRecords += lost;
      this.log?.warn({ from: (prev + 1n).toString(), to: (rec.seq - 1n).toString(), lost }, 'kmsg source: records lost from the ring buffer before they were read');
      events.push(this.lostRecordsEvent(prev + 1n, rec.seq - 1n, lost, rec));
    }
    const historical = this.firstRun && !this.backlogRead;
    if (!(historical && this.opts.replayOnFirstRun === false)) events.push(...this.eventsFor(rec, historical));
    for (const _ of events) {
      this.st.events++;
      if (historical) this.st.replayed++;
    }
    this.batch.add(rec.seq, events);
  }

  /**
   * Hand the batch to the callback: its events, coalesced per fault key with exact counts, are
   * all issued at once (the store group-commits concurrent appends), then the cursor moves to the
   * batch's last record and is written once. An event that was not taken pins the cursor just
   * before its first record.
   */
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

  /** A warning that the ring buffer overwrote records before they were read (an overrun or downtime). */
  private lostRecordsEvent(from: bigint, to: bigint, lost: number, rec: KmsgRecord): HealthEventInput {
    return {
      type: 'driver_error',
      system: 'DRIVER',
      gpuIndex: -1,
      gpuUuid: '',
      metrics: { reason: 'kmsg_records_lost', lost_records: String(lost), first_seq: from.toString(), last_seq: to.toString() },
      message: `kernel log: ${lost} record(s) (seq ${from}..${to}) were overwritten before they were read; XIDs among them are lost`,
      timeMs: Math.round(this.bootMs + rec.usecSinceBoot / 1000),
      severity: 'warning',
      action: 'none',
      citation: '/dev/kmsg sequence numbers: a gap means the ring buffer dropped records (read returns EPIPE)',
      source: 'kmsg',
      key: 'node/kmsg_records_lost',
      fault: 'none',
    };
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
        await this.sleep(jittered(exponentialMs(i, 100, 30_000), Math.random, 0.5));
      }
    }
  }

  private eventsFor(rec: KmsgRecord, historical: boolean): HealthEventInput[] {
    const line = parseNvrmLine(rec.message);
    if (!line) return this.sxidEventsFor(rec, historical);
    this.st.nvrmLines++;
    const timeMs = Math.round(this.bootMs + rec.usecSinceBoot / 1000);
    if (line.kind === 'gpu_uuid') {
      if (this.uuidByPci.size >= MAX_UUID_MAP && !this.uuidByPci.has(line.pciShort)) {
        const first = this.uuidByPci.keys().next().value;
        if (first !== undefined) this.uuidByPci.delete(first);
      }
      this.uuidByPci.set(line.pciShort, line.uuid);
      return [];
    }
    const gpu = this.resolve(line.pciShort);
    const common = (ev: HealthEventInput): HealthEventInput => {
      ev.metrics.pci_bus_id = line.pciShort;
      ev.metrics.kmsg_seq = rec.seq.toString();
      if (historical) ev.metrics.replayed = 'true';
      if (line.kind === 'xid' && line.gpuInstance !== undefined) ev.metrics.gpu_instance_id = String(line.gpuInstance);
      if (line.kind === 'xid' && line.computeInstance !== undefined) ev.metrics.compute_instance_id = String(line.computeInstance);
      if (gpu.index < 0) ev.key = ev.key.replace(/^node\//, `pci/${line.pciShort}/`);
      return ev;
    };
    if (line.kind === 'fallen_off_bus') {
      // No XID number on the line: reported as the XID 79 it is, plus the GPU-lost fault.
      const x79 = xidEventInput({ code: 79, gpuIndex: gpu.index, gpuUuid: gpu.uuid, timeMs, source: 'kmsg', message: `GPU has fallen off the bus (kernel log, no XID number: ${line.form}-line form)` });
      x79.metrics.xid_derived = 'fallen_off_bus';
      return [common(x79), common(this.driverEvent('gpu_lost', gpu, timeMs, line.pciShort, 'GPU has fallen off the bus', 'reboot'))];
    }
    if (line.kind === 'init_failed') {
      const detail = line.detail ? ` ${line.detail}` : '';
      return [common(this.driverEvent('init_failed', gpu, timeMs, line.pciShort, `RmInitAdapter failed${detail}: the driver could not bring the GPU up`, 'reboot'))];
    }
    this.st.xids++;
    const out = [
      common(
        xidEventInput({
          code: line.code,
          gpuIndex: gpu.index,
          gpuUuid: gpu.uuid,
          timeMs,
          source: 'kmsg',
          message: line.detail,
          ...(line.pid !== undefined ? { pid: line.pid } : {}),
          ...(line.processName !== undefined ? { processName: line.processName } : {}),
        }),
      ),
    ];
    if (line.code === 119 || line.code === 120) {
      const what = line.code === 119 ? 'GSP RPC timeout' : 'GSP error';
      const ev = this.driverEvent('gsp', gpu, timeMs, line.pciShort, `${what} (XID ${line.code}): NVML calls to this GPU may block`, 'reset_gpu');
      ev.metrics.xid_code = String(line.code);
      out.push(common(ev));
    }
    return out;
  }

  /** NVSwitch SXid lines: the headline becomes an event; the Severity/Data follow-ups do not. */
  private sxidEventsFor(rec: KmsgRecord, historical: boolean): HealthEventInput[] {
    const sx = parseSxidLine(rec.message);
    if (!sx || sx.kind !== 'headline') return [];
    const ev = sxidEventInput(sx, Math.round(this.bootMs + rec.usecSinceBoot / 1000));
    ev.metrics.kmsg_seq = rec.seq.toString();
    if (historical) ev.metrics.replayed = 'true';
    return [ev];
  }

  private resolve(pciShort: string): { index: number; uuid: string } {
    let r: { index: number; uuid: string } | null = null;
    try {
      r = this.opts.resolveGpu?.(pciShort) ?? null;
    } catch (e) {
      this.log?.warn({ err: (e as Error).message, pciShort }, 'kmsg source: GPU resolver threw');
    }
    if (r && Number.isInteger(r.index) && r.index >= 0) return { index: r.index, uuid: r.uuid || this.uuidByPci.get(pciShort) || '' };
    return { index: -1, uuid: this.uuidByPci.get(pciShort) ?? '' };
  }

  private driverEvent(
    kind: 'gpu_lost' | 'gsp' | 'init_failed',
    gpu: { index: number; uuid: string },
    timeMs: number,
    pciShort: string,
    message: string,
    action: 'reboot' | 'reset_gpu',
  ): HealthEventInput {
    return {
      type: 'driver_error',
      system: 'DRIVER',
      gpuIndex: gpu.index,
      gpuUuid: gpu.uuid,
      metrics: { reason: kind === 'gpu_lost' ? 'fallen_off_bus' : kind === 'gsp' ? 'gsp' : 'rm_init_adapter' },
      message: `GPU ${pciShort}: ${message}`,
      timeMs,
      severity: 'critical',
      action,
      citation:
        kind === 'gpu_lost'
          ? 'kernel log "GPU has fallen off the bus" (XID 79, NVIDIA: RESTART_BM)'
          : kind === 'gsp'
            ? 'NVIDIA XID catalog: 119/120 RESET_GPU; DCGM stops calling the driver after a kernel-log XID 119'
            : 'kernel log "RmInitAdapter failed": the GPU is unusable (like XID 143 GPU_INIT_ERROR; gpud: NVML init error Unhealthy, REBOOT_SYSTEM); a driver without a handle cannot reset it, so reboot',
      source: 'kmsg',
      key: gpu.index >= 0 ? `gpu${gpu.index}/${kind}` : `node/${kind}`,
      fault: 'raise',
    };
  }
}
