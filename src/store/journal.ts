/**
 * The store's journal: `events.log`, an append-only file of CRC-framed records
 * (./log-format.ts, shapes in ./records.ts), plus the disk reserve `reserve.bin`.
 *
 * - load() streams the log in chunks and returns the records that pass validateRecord; a record
 *   with a bad frame, a bad shape or over MAX_RECORD_BYTES is dropped and counted (an oversize
 *   one without being held in memory).
 * - append() writes one commit batch at the end and fdatasyncs it; a failed batch is cut off
 *   again so the file never keeps half of it.
 * - rewrite() replaces the log with a snapshot: written to `events.log.tmp`, fdatasync'd,
 *   renamed over the log, the directory fsync'd.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { errCode } from './errors.js';
import { nodeStoreFs, type StoreFile, type StoreFs } from './fs-adapter.js';
import { LogDecoder } from './log-format.js';
import { MAX_RECORD_BYTES, validateRecord, type LogRecord } from './records.js';

export const LOG_NAME = 'events.log';
export const TMP_NAME = 'events.log.tmp';
export const RESERVE_NAME = 'reserve.bin';
const READ_CHUNK = 64 * 1024;

export interface LoadedLog {
  records: LogRecord[];
  /** Bytes of the file as read. */
  bytes: number;
  /** Lines with a bad frame (CRC, JSON) in the middle of the file. */
  corrupt: number;
  tornTail: boolean;
  /** Bytes after the last good line (torn or corrupt). */
  droppedBytes: number;
  /** Records with a good frame but a shape the store never writes. */
  bad: number;
  /** The first bad record's reason (for the one log line). */
  firstBadReason: string | null;
  /** Records over MAX_RECORD_BYTES, skipped unread. */
  oversize: number;
}

/** Read and validate a log (null when there is none). Reads through fsa.openRead when it has one. */
export async function readLog(fsa: StoreFs, logPath: string, maxRecordBytes = MAX_RECORD_BYTES): Promise<LoadedLog | null> {
  const dec = new LogDecoder(maxRecordBytes);
  let bytes = 0;
  if (fsa.openRead) {
    const r = await fsa.openRead(logPath);
    if (!r) return null;
    try {
      for (;;) {
        const buf = Buffer.allocUnsafe(READ_CHUNK);
        const n = await r.read(buf);
        if (n <= 0) break;
        bytes += n;
        dec.push(buf.subarray(0, n));
      }
    } finally {
      await r.close();
    }
  } else {
    const buf = await fsa.readFile(logPath);
    if (!buf) return null;
    bytes = buf.length;
    dec.push(buf);
  }
  const d = dec.end();
  const records: LogRecord[] = [];
  let bad = 0;
  let firstBadReason: string | null = null;
  for (const r of d.records) {
    const why = validateRecord(r);
    if (why === null) records.push(r as LogRecord);
    else {
      bad++;
      firstBadReason ??= why;
    }
  }
  return { records, bytes, corrupt: d.corrupt, tornTail: d.tornTail, droppedBytes: bytes - d.goodBytes, bad, firstBadReason, oversize: d.oversize };
}

export interface JournalOptions {
  dir: string;
  /** fdatasync every batch (default true). */
  fsync?: boolean;
  reserveBytes: number;
  fs?: StoreFs;
  logger?: Logger;
}

export class Journal {
  readonly logPath: string;
  private readonly dir: string;
  private readonly doFsync: boolean;
  private readonly reserveBytes: number;
  readonly fsa: StoreFs;
  private readonly log: Logger | undefined;
  private file: StoreFile | null = null;
  private fileBytes = 0;
  /** A failed batch could not be cut off again: the tail may hold part of it until the next rewrite. */
  tailSuspect = false;

  constructor(opts: JournalOptions) {
    this.dir = opts.dir;
    this.logPath = path.join(opts.dir, LOG_NAME);
    this.doFsync = opts.fsync ?? true;
    this.reserveBytes = opts.reserveBytes;
    this.fsa = opts.fs ?? nodeStoreFs;
    this.log = opts.logger;
  }

  /** Size of the log file. */
  get bytes(): number {
    return this.fileBytes;
  }

  /** Whether the log is open for appending (false before the first rewrite, or after a failed one). */
  get isOpen(): boolean {
    return this.file !== null;
  }

  /** Remove a temp file left by a crash mid-rewrite, then read the log. */
  async load(): Promise<LoadedLog | null> {
    await this.fsa.unlink(path.join(this.dir, TMP_NAME));
    return readLog(this.fsa, this.logPath);
  }

  /**
   * Append one batch and (with fsync on) fdatasync it; `written` runs between the write and the
   * fdatasync (the batch is in the page cache then). On failure the batch is cut off again and the
   * error rethrown.
   */
  async append(buf: Buffer, written?: () => void): Promise<void> {
    if (!this.file) throw Object.assign(new Error('the log is not open'), { code: 'EBADF' });
    try {
      await this.file.append(buf);
      written?.();
      if (this.doFsync) await this.file.datasync();
      this.fileBytes += buf.length;
    } catch (e) {
      try {
        await this.file.truncate(this.fileBytes);
      } catch {
        this.tailSuspect = true;
      }
      throw e;
    }
  }

  /** Replace the log with `buf` (always fdatasync'd, whatever the fsync option). */
  async rewrite(buf: Buffer): Promise<void> {
    const tmp = path.join(this.dir, TMP_NAME);
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
      if (out) await out.close().catch(() => undefined);
      await this.fsa.unlink(tmp).catch(() => undefined);
      throw e;
    }
    const old = this.file;
    this.file = null;
    if (old) await old.close().catch(() => undefined);
    this.file = await this.fsa.openAppend(this.logPath);
    this.fileBytes = buf.length;
    this.tailSuspect = false;
  }

  /** Free the disk reserve (on ENOSPC, so a rewrite has room). */
  async freeReserve(): Promise<void> {
    await this.fsa.unlink(path.join(this.dir, RESERVE_NAME));
  }

  /** Create the reserve file if it is missing or short. Failure is logged, not thrown. */
  async ensureReserve(): Promise<void> {
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
      this.log?.warn({ err: (e as Error).message, code: errCode(e) }, 'event store: could not create the disk reserve file');
    } finally {
      if (f) await f.close().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    const f = this.file;
    this.file = null;
    if (f) await f.close().catch(() => undefined);
  }
}
