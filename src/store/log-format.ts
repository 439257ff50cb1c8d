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
}

/** Decode a whole log buffer. Never throws. */
export function decodeLog(buf: Buffer): DecodedLog {
  const records: unknown[] = [];
  let pos = 0;
  let goodBytes = 0;
  let corrupt = 0;
  let tornTail = false;
  let pendingBad = 0;
  while (pos < buf.length) {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0) {
      tornTail = true;
      break;
    }
    const line = buf.subarray(pos, nl);
    pos = nl + 1;
    let ok = false;
    if (line.length > 9 && line[8] === 0x20) {
      const want = Number.parseInt(line.subarray(0, 8).toString('latin1'), 16);
      const json = line.subarray(9);
      if (Number.isFinite(want) && crc32(json) === want) {
        try {
          records.push(JSON.parse(json.toString('utf8')));
          ok = true;
        } catch {
          ok = false;
        }
      }
    }
    if (ok) {
      corrupt += pendingBad;
      pendingBad = 0;
      goodBytes = pos;
    } else {
      pendingBad++;
    }
  }
  // Bad lines after the last good one are the torn tail of the last write, not mid-file corruption.
  if (pendingBad > 0) tornTail = true;
  return { records, goodBytes, corrupt, tornTail };
}
