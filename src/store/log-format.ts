/**
 * Framing of the store's append-only log: one record per line,
 * `<crc32 as 8 lower-case hex digits> <JSON>\n`, the CRC taken over the JSON's UTF-8 bytes.
 * A line whose CRC does not match, that does not parse, or that has no newline (the torn tail
 * after a crash) is rejected as a whole.
 */
import * as zlib from 'node:zlib';

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32Js(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = (TABLE[(c ^ (buf[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const nativeCrc = (zlib as unknown as { crc32?: (d: Uint8Array | string) => number }).crc32;

/** CRC-32 (IEEE, as zlib) of bytes. Uses zlib.crc32 where Node has it. */
export function crc32(buf: Uint8Array): number {
  return typeof nativeCrc === 'function' ? nativeCrc(buf) >>> 0 : crc32Js(buf);
}

/** Encode one record as a framed line (with the trailing newline). */
export function encodeLine(record: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(record), 'utf8');
  const head = Buffer.from(`${crc32(json).toString(16).padStart(8, '0')} `, 'latin1');
  return Buffer.concat([head, json, Buffer.from('\n')]);
}

export interface DecodedLog {
  records: unknown[];
  /** Offset just past the last good line: everything after it is torn or corrupt. */
  goodBytes: number;
  /** Lines rejected in the middle of the file (CRC or JSON errors). */
  corrupt: number;
  /** True when the file ends with an incomplete or bad line (torn write). */
  tornTail: boolean;
  /** Complete lines longer than the decoder's limit, skipped without being held in memory. */
  oversize: number;
}

/**
 * Incremental decoder: feed the log in chunks of any size. A line longer than `maxLine` bytes is
 * skipped as it streams past (at most `maxLine` bytes of it are ever held), so a foreign huge
 * record costs neither memory nor a place in the store.
 */
export class LogDecoder {
  private readonly records: unknown[] = [];
  private offset = 0;
  private goodBytes = 0;
  private corrupt = 0;
  private pendingBad = 0;
  private oversize = 0;
  private carry: Buffer[] = [];
  private carryLen = 0;
  private skipping = false;

  constructor(private readonly maxLine: number = Number.POSITIVE_INFINITY) {}

  push(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) {
        const rest = chunk.subarray(start);
        this.offset += rest.length;
        if (!this.skipping) {
          if (this.carryLen + rest.length > this.maxLine) this.startSkipping();
          else {
            this.carry.push(Buffer.from(rest));
            this.carryLen += rest.length;
          }
        }
        return;
      }
      const piece = chunk.subarray(start, nl);
      start = nl + 1;
      this.offset += piece.length + 1;
      if (this.skipping || this.carryLen + piece.length > this.maxLine) {
        this.skipping = false;
        this.carry = [];
        this.carryLen = 0;
        this.oversize++;
        this.boundary();
        continue;
      }
      const line = this.carryLen > 0 ? Buffer.concat([...this.carry, piece]) : piece;
      this.carry = [];
      this.carryLen = 0;
      const record = parseLine(line);
      if (record === undefined) this.pendingBad++;
      else {
        this.records.push(record);
        this.boundary();
      }
    }
  }

  end(): DecodedLog {
    // Bad lines after the last good one are the torn tail of the last write, not mid-file corruption.
    const tornTail = this.carryLen > 0 || this.skipping || this.pendingBad > 0;
    return { records: this.records, goodBytes: this.goodBytes, corrupt: this.corrupt, tornTail, oversize: this.oversize };
  }

  private startSkipping(): void {
    this.skipping = true;
    this.carry = [];
    this.carryLen = 0;
  }

  /** A complete line was accepted (or skipped whole): bad lines before it were mid-file. */
  private boundary(): void {
    this.corrupt += this.pendingBad;
    this.pendingBad = 0;
    this.goodBytes = this.offset;
  }
}

/** The record of one framed line (without its newline), or undefined when the frame is bad. */
function parseLine(line: Buffer): unknown {
  if (line.length <= 9 || line[8] !== 0x20) return undefined;
  const want = Number.parseInt(line.subarray(0, 8).toString('latin1'), 16);
  const json = line.subarray(9);
  if (!Number.isFinite(want) || crc32(json) !== want) return undefined;
  try {
    return JSON.parse(json.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** Decode a whole log buffer. Never throws. */
export function decodeLog(buf: Buffer, maxLine?: number): DecodedLog {
  const d = new LogDecoder(maxLine);
  d.push(buf);
  return d.end();
}
