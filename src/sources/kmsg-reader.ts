/**
 * Raw records out of the kernel log, and nothing else: no parsing, no cursor, no events.
 *
 * Three readers, chosen by `openKmsgReader()`:
 * - `native` (a character device such as /dev/kmsg, whenever the addon loads): a thread in the
 *   addon (native/kmsg_reader.cc) drains the descriptor as fast as the kernel fills it, into a
 *   bounded queue, and wakes this side when the queue turns non-empty. The ring buffer is emptied
 *   however long the JavaScript thread is busy (GC, fsyncs, RPCs): a 5,000-record burst in 0.5 s
 *   overruns a reader that shares the event loop with the store and the sender.
 * - `records` (a character device without the addon, or with a read seam for tests): non-blocking
 *   read() on the JavaScript thread, one record per read; EAGAIN is "nothing new", then a short
 *   poll backoff. (libuv cannot poll a character device.)
 * - `stream` (a regular file or a FIFO: tests, replays): newline-separated records, continuation
 *   lines start with a space; the last, possibly unfinished record is only taken at idle.
 *
 * EPIPE (the kernel overwrote records before they were read) is counted in `overruns` and reading
 * goes on from the oldest record still there.
 */
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { loadAddon, type NativeKmsgReader, type NativeKmsgReaderCtor } from '../nvml/binding.js';
import { exponentialMs } from '../util/backoff.js';
import { Sleeper } from '../util/sleeper.js';
import { MAX_RECORD_CHARS } from './kmsg-parse.js';

export type KmsgReaderKind = 'native' | 'records' | 'stream';

export interface KmsgReaderCounters {
  /** EPIPE: the reader fell behind the ring buffer and records were lost. */
  overruns: number;
  readErrors: number;
  /** Over-long lines dropped (stream mode). */
  oversized: number;
  /** Records read but dropped because the native queue was full (the JS side stalled for long). */
  queueDropped: number;
}

export interface KmsgChunk {
  records: Array<string | Uint8Array>;
  /** Nothing more to read now; everything present at open has been handed over. */
  idle: boolean;
}

export interface KmsgRecordReader {
  readonly kind: KmsgReaderKind;
  /** Up to `max` records; resolves at once (never waits for new records). */
  read(max: number): Promise<KmsgChunk>;
  /** Waits for new records (or a poll interval); `wake()` ends the wait early. */
  wait(): Promise<void>;
  wake(): void;
  counters(): KmsgReaderCounters;
  close(): void;
}

export interface KmsgReaderOptions {
  logger?: Logger | undefined;
  /** Idle poll backoff bounds of the JavaScript readers (ms). */
  pollMinMs: number;
  pollMaxMs: number;
  /** 'auto' (default): native for a character device when the addon loads; 'js' never native. */
  prefer?: 'auto' | 'js';
  /** Test seam: replaces fs.read (EPIPE and other errors a test cannot cause for real). */
  readImpl?: ((fd: number, buf: Buffer) => Promise<number>) | undefined;
}

/** Records the native thread holds for this side at most (about 45 ring buffers of XID lines). */
const NATIVE_MAX_RECORDS = 65_536;
const NATIVE_MAX_BYTES = 32 * 1024 * 1024;
/** The native reader's wake-up comes through the addon; this only bounds a missed one. */
const NATIVE_SAFETY_WAIT_MS = 1000;
const READ_BUFFER_BYTES = 16 * 1024;

/** Opens `file` non-blocking and picks the reader. Throws a one-line error when it cannot be opened. */
export function openKmsgReader(file: string, o: KmsgReaderOptions): KmsgRecordReader {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const hint = code === 'EACCES' || code === 'EPERM' ? ' (needs root or CAP_SYSLOG when kernel.dmesg_restrict=1)' : '';
    throw new Error(`kmsg source: cannot open ${file}: ${code ?? (e as Error).message}${hint}`);
  }
  try {
    const device = fs.fstatSync(fd).isCharacterDevice();
    if (!device) return new StreamReader(fd, o);
    if (o.prefer !== 'js' && !o.readImpl) {
      const native = NativeReader.tryOpen(fd, o.logger);
      if (native) {
        fs.closeSync(fd); // the thread reads its own duplicate of the descriptor
        return native;
      }
    }
    return new DeviceReader(fd, o);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function zeroCounters(): KmsgReaderCounters {
  return { overruns: 0, readErrors: 0, oversized: 0, queueDropped: 0 };
}

class NativeReader implements KmsgRecordReader {
  readonly kind = 'native';
  private readonly sleeper = new Sleeper();
  private readable = false;
  private closed = false;
  private last = zeroCounters();

  static tryOpen(fd: number, log: Logger | undefined): NativeReader | null {
    const load = loadAddon();
    if (!load.ok || typeof load.addon.KmsgReader !== 'function') return null;
    try {
      return new NativeReader(load.addon.KmsgReader, fd);
    } catch (e) {
      log?.warn({ err: (e as Error).message }, 'kmsg source: native reader thread unavailable; reading on the JavaScript thread');
      return null;
    }
  }

  private readonly native: NativeKmsgReader;

  private constructor(Ctor: NativeKmsgReaderCtor, fd: number) {
    this.native = new Ctor(fd, () => this.onReadable(), { maxRecords: NATIVE_MAX_RECORDS, maxBytes: NATIVE_MAX_BYTES });
  }

  private onReadable(): void {
    this.readable = true;
    this.sleeper.wakeAll();
  }

  read(max: number): Promise<KmsgChunk> {
    if (this.closed) return Promise.resolve({ records: [], idle: true });
    this.readable = false;
    const { records, idle } = this.native.take(max);
    return Promise.resolve({ records, idle });
  }

  async wait(): Promise<void> {
    if (this.readable || this.closed) return;
    await this.sleeper.sleep(NATIVE_SAFETY_WAIT_MS);
  }

  wake(): void {
    this.sleeper.wakeAll();
  }

  counters(): KmsgReaderCounters {
    if (!this.closed) {
      const s = this.native.stats();
      this.last = { overruns: s.overruns, readErrors: s.readErrors, oversized: 0, queueDropped: s.dropped };
    }
    return { ...this.last };
  }

  close(): void {
    if (this.closed) return;
    this.counters();
    this.closed = true;
    this.native.stop();
    this.sleeper.wakeAll();
  }
}

/** Shared by the two JavaScript readers: the descriptor, the read seam, the idle backoff. */
abstract class JsReader implements KmsgRecordReader {
  abstract readonly kind: KmsgReaderKind;
  protected buf = Buffer.alloc(READ_BUFFER_BYTES);
  protected readonly c = zeroCounters();
  protected readonly sleeper = new Sleeper();
  private delay: number;
  private errors = 0;
  protected closed = false;

  constructor(
    protected fd: number,
    protected readonly o: KmsgReaderOptions,
  ) {
    this.delay = o.pollMinMs;
  }

  abstract read(max: number): Promise<KmsgChunk>;

  /**
   * One read(): bytes read; 0 for EAGAIN or EOF; -1 for EPIPE (counted, logged). Null after any
   * other error (counted, logged, and a backoff slept) or once closed: the chunk ends there.
   */
  protected async next(impl: (fd: number, buf: Buffer) => Promise<number>): Promise<number | null> {
    try {
      return await this.readOnce(impl);
    } catch (e) {
      if (!this.closed) await this.failed(e);
      return null;
    }
  }

  private async readOnce(impl: (fd: number, buf: Buffer) => Promise<number>): Promise<number> {
    for (;;) {
      try {
        const n = await impl(this.fd, this.buf);
        this.errors = 0;
        if (n > 0) this.delay = this.o.pollMinMs;
        return n;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return 0;
        if (code === 'EPIPE') {
          this.c.overruns++;
          this.o.logger?.warn({ overruns: this.c.overruns }, 'kmsg source: overrun (EPIPE): records were lost; continuing from the oldest one');
          return -1;
        }
        if (code === 'EINVAL' && this.buf.length < 1024 * 1024) {
          this.buf = Buffer.alloc(this.buf.length * 4); // a record bigger than the buffer
          continue;
        }
        throw e;
      }
    }
  }

  /** A read error: counted, logged, then a backoff before the next try. */
  protected async failed(e: unknown): Promise<void> {
    this.c.readErrors++;
    this.errors++;
    this.o.logger?.error({ err: (e as Error).message, code: (e as NodeJS.ErrnoException).code }, 'kmsg source: read failed');
    await this.sleeper.sleep(exponentialMs(Math.min(this.errors, 6), this.o.pollMaxMs, 30_000));
  }

  async wait(): Promise<void> {
    if (this.closed) return;
    await this.sleeper.sleep(this.delay);
    this.delay = Math.min(this.delay * 2, this.o.pollMaxMs);
  }

  wake(): void {
    this.sleeper.wakeAll();
  }

  counters(): KmsgReaderCounters {
    return { ...this.c };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sleeper.wakeAll();
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

function readSyncNonBlocking(fd: number, buf: Buffer): Promise<number> {
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

/** A character device read on this thread: one record per read(). */
class DeviceReader extends JsReader {
  readonly kind = 'records';

  async read(max: number): Promise<KmsgChunk> {
    const records: Uint8Array[] = [];
    const impl = this.o.readImpl ?? readSyncNonBlocking;
    while (records.length < max && !this.closed) {
      const n = await this.next(impl);
      if (n === null) return { records, idle: false };
      if (n < 0) continue;
      if (n === 0) return { records, idle: true };
      records.push(Buffer.from(this.buf.subarray(0, n)));
    }
    return { records, idle: false };
  }
}

/** A regular file or FIFO of newline-separated records. */
class StreamReader extends JsReader {
  readonly kind = 'stream';
  private text = '';
  /** Dropping the rest of an over-long line. */
  private discarding = false;

  async read(max: number): Promise<KmsgChunk> {
    const records: string[] = [];
    const impl = this.o.readImpl ?? readAsync;
    while (records.length < max && !this.closed) {
      this.split(records, max, false);
      if (records.length >= max) return { records, idle: false };
      const n = await this.next(impl);
      if (n === null) return { records, idle: false };
      if (n < 0) continue;
      if (n === 0) {
        this.split(records, Infinity, true); // at idle the last record is complete
        return { records, idle: true };
      }
      this.text += this.buf.toString('utf8', 0, n);
    }
    return { records, idle: false };
  }

  /** Moves complete records from the text buffer into `out` (the last one only when `final`). */
  private split(out: string[], max: number, final: boolean): void {
    if (this.discarding) {
      const nl = this.text.indexOf('\n');
      if (nl < 0) {
        this.text = '';
        return;
      }
      this.text = this.text.slice(nl + 1);
      this.discarding = false;
    }
    while (out.length < max) {
      const s = this.text;
      // the end of the first record: a newline followed by a line that is not a continuation
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
          // an endless line: dropped up to its newline, bounded memory
          this.c.oversized++;
          this.text = '';
          this.discarding = s.indexOf('\n', MAX_RECORD_CHARS) < 0;
        }
        return;
      }
      const rec = s.slice(0, end);
      this.text = s.slice(end);
      if (rec.trim().length > 0) out.push(rec);
    }
  }
}
