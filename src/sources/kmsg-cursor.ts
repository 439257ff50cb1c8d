/**
 * Where the kernel-log source has read to: `{bootId, lastSeq, path}` in `kmsg-cursor.json` in the
 * state directory, written atomically (tmp + fsync + rename + fsync of the directory) with async
 * fsyncs, off the JavaScript thread.
 *
 * Same boot and path: records with seq <= lastSeq were handled (skip them, no replay); later ones
 * were not (read them, no miss). No cursor, an unreadable one or another boot: a first run.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../util/atomic-file.js';

export const CURSOR_FILE = 'kmsg-cursor.json';

export interface CursorStart {
  /** Records with seq <= this are skipped (null: a first run, nothing skipped). */
  skipUpTo: bigint | null;
  firstRun: boolean;
}

interface CursorJson {
  bootId: string;
  lastSeq: string;
  path: string;
}

export class KmsgCursor {
  private readonly file: string | null;
  private lastWrite = 0;
  writes = 0;

  constructor(
    stateDir: string | undefined,
    private readonly bootId: string,
    private readonly logPath: string,
    private readonly minIntervalMs: number,
    private readonly log: Logger | undefined,
  ) {
    this.file = stateDir ? path.join(stateDir, CURSOR_FILE) : null;
  }

  load(): CursorStart {
    if (!this.file) return { skipUpTo: null, firstRun: true };
    let c: Partial<CursorJson> | null;
    try {
      c = JSON.parse(fs.readFileSync(this.file, 'utf8')) as Partial<CursorJson>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log?.warn({ err: (e as Error).message, path: this.file }, 'kmsg source: unreadable cursor ignored');
      return { skipUpTo: null, firstRun: true };
    }
    if (c && c.bootId === this.bootId && c.path === this.logPath && typeof c.lastSeq === 'string' && /^(-1|\d{1,20})$/.test(c.lastSeq)) {
      return { skipUpTo: BigInt(c.lastSeq), firstRun: false };
    }
    if (c?.bootId && c.bootId !== this.bootId) {
      this.log?.info({ previousBoot: c.bootId }, "kmsg source: new boot since the last run; the previous boot's records are gone");
    }
    return { skipUpTo: null, firstRun: true };
  }

  /**
   * Writes `seq` unless the last write was less than the minimum interval ago (`force` writes
   * anyway). True when written; a failed write is logged and leaves the cursor dirty.
   */
  async save(seq: bigint, force: boolean): Promise<boolean> {
    if (!this.file) return false;
    const now = Date.now();
    if (!force && now - this.lastWrite < this.minIntervalMs) return false;
    try {
      await fs.promises.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
      const c: CursorJson = { bootId: this.bootId, lastSeq: seq.toString(), path: this.logPath };
      await writeFileAtomic(this.file, `${JSON.stringify({ ...c, updatedMs: now })}\n`);
      this.lastWrite = now;
      this.writes++;
      return true;
    } catch (e) {
      this.log?.warn({ err: (e as Error).message, path: this.file }, 'kmsg source: cursor write failed');
      return false;
    }
  }
}
