/**
 * The nvidia-fabricmanager log (default /var/log/fabricmanager.log): a pure line classifier and a
 * bounded, rotation-safe tail.
 *
 * Lines look like `[Feb 27 2025 15:10:02] [ERROR] [tid 12727] detected NVSwitch non-fatal error
 * 12028 on fid 0 on NVSwitch pci bus id 00000000:86:00.0 physical id 3 port 61`. Lines at level
 * ERROR or FATAL are errors; the NVSwitch SXid and PCI id are picked out when the text names them.
 *
 * The tail keeps the file open between polls: after a rename rotation it drains the old file, then
 * opens the new one from its start; a truncation (copytruncate) restarts at 0 (noticed, as by
 * `tail -F`, when the file is shorter than what was read: a truncated file that regrew past that
 * before the next poll is read from the old offset). It starts at the
 * end of the file (older errors predate the agent), reads at most `maxBytesPerPoll` per poll and
 * cuts lines at `maxLineBytes`.
 */
import { constants } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';

export interface FabricManagerLogError {
  level: 'ERROR' | 'FATAL';
  /** The line, without its trailing newline, cut at 512 characters. */
  text: string;
  /** NVSwitch SXid from "detected NVSwitch (non-)fatal error N", else null. */
  sxid: number | null;
  /** true for "fatal error", false for "non-fatal error", null when no SXid is named. */
  sxidFatal: boolean | null;
  /** "00000000:86:00.0" when the line names an NVSwitch PCI bus id, else null. */
  nvswitchPci: string | null;
}

const LEVEL_RE = /^\s*\[[^\]]{1,64}\]\s*\[(ERROR|FATAL)\]/;
const SXID_RE = /detected NVSwitch (non-fatal|fatal) error (\d{1,6})/i;
const PCI_RE = /pci bus id ([0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])/i;

/** An error line of the fabric manager log, or null for any other line. */
export function parseFabricManagerLine(line: string): FabricManagerLogError | null {
  const m = LEVEL_RE.exec(line);
  if (!m) return null;
  const sx = SXID_RE.exec(line);
  const pci = PCI_RE.exec(line);
  return {
    level: m[1] as 'ERROR' | 'FATAL',
    text: line.replace(/\r?\n$/, '').slice(0, 512),
    sxid: sx ? Number(sx[2]) : null,
    sxidFatal: sx ? (sx[1] as string).toLowerCase() === 'fatal' : null,
    nvswitchPci: pci ? (pci[1] as string).toLowerCase() : null,
  };
}

export interface LogTailOptions {
  path: string;
  maxBytesPerPoll?: number;
  maxLineBytes?: number;
}

export interface LogTailStats {
  /** Whether the file is open now. */
  open: boolean;
  bytesRead: number;
  lines: number;
  rotations: number;
  truncations: number;
  /** Lines longer than maxLineBytes (cut). */
  longLines: number;
  lastError: string | null;
}

/** Reads the lines appended to a file since the last poll. */
export class LogTail {
  private fh: FileHandle | null = null;
  private ino = -1;
  private offset = 0;
  private partial = '';
  private started = false;
  private readonly maxBytes: number;
  private readonly maxLine: number;
  private readonly s: LogTailStats = { open: false, bytesRead: 0, lines: 0, rotations: 0, truncations: 0, longLines: 0, lastError: null };

  constructor(private readonly o: LogTailOptions) {
    this.maxBytes = o.maxBytesPerPoll ?? 1024 * 1024;
    this.maxLine = o.maxLineBytes ?? 4096;
  }

  stats(): LogTailStats {
    return { ...this.s, open: this.fh !== null };
  }

  /** New complete lines since the last poll (the first poll only positions at the end). */
  async poll(): Promise<string[]> {
    const lines: string[] = [];
    let budget = this.maxBytes;
    if (this.fh === null) {
      // Only the very first open starts at the end: a file created later is read from its start.
      const opened = await this.reopen(!this.started);
      this.started = true;
      if (!opened) return lines;
    }
    // Drain the open file, then see whether the path now names another file (rotation).
    budget -= await this.readInto(lines, budget);
    let st;
    try {
      st = await stat(this.o.path);
    } catch (err) {
      // Rotated away and not yet recreated: keep the old file open, read it again next time.
      this.s.lastError = (err as NodeJS.ErrnoException).code ?? String(err);
      return lines;
    }
    if (st.ino !== this.ino) {
      if (budget <= 0) return lines; // the rest of the old file first, next poll
      this.flushPartial(lines);
      await this.close();
      this.s.rotations++;
      if (await this.reopen(false)) await this.readInto(lines, budget);
    } else if (st.size < this.offset) {
      this.s.truncations++;
      this.offset = 0;
      this.partial = '';
      await this.readInto(lines, budget);
    }
    return lines;
  }

  private async reopen(atEnd: boolean): Promise<boolean> {
    try {
      // O_NONBLOCK: a FIFO at the path must not hold a thread-pool thread until a writer appears.
      const fh = await open(this.o.path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
      const st = await fh.stat();
      if (!st.isFile()) {
        await fh.close();
        this.s.lastError = 'not a regular file';
        return false;
      }
      this.fh = fh;
      this.ino = st.ino;
      this.offset = atEnd ? st.size : 0;
      this.partial = '';
      this.s.lastError = null;
      return true;
    } catch (err) {
      this.s.lastError = (err as NodeJS.ErrnoException).code ?? String(err);
      return false;
    }
  }

  /** Read from offset up to `budget` bytes; complete lines go to `lines`. Returns bytes read. */
  private async readInto(lines: string[], budget: number): Promise<number> {
    const fh = this.fh;
    if (fh === null || budget <= 0) return 0;
    const buf = Buffer.allocUnsafe(Math.min(budget, 64 * 1024));
    let total = 0;
    while (total < budget) {
      let n: number;
      try {
        ({ bytesRead: n } = await fh.read(buf, 0, Math.min(buf.length, budget - total), this.offset));
      } catch (err) {
        this.s.lastError = (err as NodeJS.ErrnoException).code ?? String(err);
        break;
      }
      if (n === 0) break;
      this.offset += n;
      total += n;
      this.split(buf.toString('utf8', 0, n), lines);
    }
    this.s.bytesRead += total;
    return total;
  }

  private split(chunk: string, lines: string[]): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    if (this.partial.length > this.maxLine) {
      // A line without an end this long: keep its start only.
      this.partial = this.partial.slice(0, this.maxLine);
    }
    for (const p of parts) this.push(p, lines);
  }

  private push(line: string, lines: string[]): void {
    if (line.length > this.maxLine) {
      this.s.longLines++;
      line = line.slice(0, this.maxLine);
    }
    this.s.lines++;
    lines.push(line);
  }

  private flushPartial(lines: string[]): void {
    if (this.partial !== '') this.push(this.partial, lines);
    this.partial = '';
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close().catch(() => undefined);
  }
}
