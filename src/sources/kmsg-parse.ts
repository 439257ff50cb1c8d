/**
 * Pure parsers for the kernel log: `/dev/kmsg` records and the NVIDIA driver's NVRM lines
 * (XIDs with or without MIG attribution, bus-id -> UUID map lines, both "fallen off the bus"
 * forms, "RmInitAdapter failed"). No I/O here.
 *
 * Every parser is total: bad input returns null, never throws. All work is bounded: inputs are
 * truncated before any scanning, and nothing uses a regular expression that can backtrack over
 * a long input (the header and the NVRM prefix are scanned by hand).
 */

/** Longest record the parser looks at; the rest is dropped (the kernel's own limit is 8 KiB). */
export const MAX_RECORD_CHARS = 64 * 1024;
/** Longest message kept after parsing (longer ones end with "..."). */
export const MAX_MESSAGE_CHARS = 16 * 1024;
/** Continuation (dictionary) lines kept per record. */
export const MAX_DICT_ENTRIES = 32;
/** Characters scanned for the `prio,seq,usec,flags;` header. */
const MAX_HEADER_CHARS = 128;

export interface KmsgRecord {
  /** Syslog facility (prio >> 3); 0 = kernel. */
  facility: number;
  /** Syslog level (prio & 7); 0 = emerg .. 7 = debug. */
  level: number;
  /** Sequence number (64-bit, increases per record, restarts at boot). */
  seq: bigint;
  /** Microseconds since boot (CLOCK_MONOTONIC at log time). */
  usecSinceBoot: number;
  /** '-' for a complete record, 'c' for a continuation of a previous fragment. */
  flags: string;
  /** The message, with the kernel's `\xNN` escapes decoded. */
  message: string;
  /** Continuation lines ` KEY=value` (e.g. SUBSYSTEM, DEVICE). */
  dict: Record<string, string>;
  /** True when the message (or the record) was cut to the parser's bounds. */
  truncated: boolean;
}

function parseUint(s: string): bigint | null {
  if (s.length === 0 || s.length > 20) return null;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return null;
  }
  const v = BigInt(s);
  return v <= 0xffffffffffffffffn ? v : null;
}

function decodeEscapes(s: string): string {
  if (s.indexOf('\\x') < 0) return s;
  // The kernel escapes bytes (control bytes, bytes >= 0x7f and the backslash) as \xNN, so a
  // UTF-8 character may arrive as several escapes: rebuild the bytes, then decode once.
  const parts: Buffer[] = [];
  let i = 0;
  for (;;) {
    const j = s.indexOf('\\x', i);
    if (j < 0) {
      parts.push(Buffer.from(s.slice(i), 'utf8'));
      break;
    }
    const hex = s.slice(j + 2, j + 4);
    if (hex.length === 2 && isHex(hex)) {
      parts.push(Buffer.from(s.slice(i, j), 'utf8'), Buffer.from([Number.parseInt(hex, 16)]));
      i = j + 4;
    } else {
      parts.push(Buffer.from(s.slice(i, j + 2), 'utf8'));
      i = j + 2;
    }
  }
  return Buffer.concat(parts).toString('utf8');
}

/**
 * Parse one `/dev/kmsg` record: `prio,seq,usec,flags[,more];message\n[ KEY=value\n]...`.
 * Accepts a string or bytes (UTF-8). Returns null for anything that is not a record.
 */
export function parseKmsgRecord(input: string | Uint8Array): KmsgRecord | null {
  try {
    let text: string;
    let truncated = false;
    if (typeof input === 'string') {
      text = input;
    } else {
      const bytes = input.length > MAX_RECORD_CHARS ? input.subarray(0, MAX_RECORD_CHARS) : input;
      if (bytes !== input) truncated = true;
      text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8');
    }
    if (text.length > MAX_RECORD_CHARS) {
      text = text.slice(0, MAX_RECORD_CHARS);
      truncated = true;
    }
    const semi = text.indexOf(';');
    if (semi < 0 || semi > MAX_HEADER_CHARS) return null;
    const fields = text.slice(0, semi).split(',');
    if (fields.length < 4) return null;
    const prio = parseUint(fields[0] ?? '');
    const seq = parseUint(fields[1] ?? '');
    const usec = parseUint(fields[2] ?? '');
    const flags = fields[3] ?? '';
    if (prio === null || seq === null || usec === null) return null;
    if (prio > 0xffffffn || usec > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    if (flags.length > 8 || /[^A-Za-z+-]/.test(flags)) return null;

    const body = text.slice(semi + 1);
    const nl = body.indexOf('\n');
    let message = nl < 0 ? body : body.slice(0, nl);
    const dict: Record<string, string> = Object.create(null) as Record<string, string>;
    if (nl >= 0) {
      let pos = nl + 1;
      let entries = 0;
      while (pos < body.length && entries < MAX_DICT_ENTRIES) {
        let end = body.indexOf('\n', pos);
        if (end < 0) end = body.length;
        const line = body.slice(pos, end);
        pos = end + 1;
        if (line.length === 0) continue;
        if (line.charCodeAt(0) !== 32) break; // not a continuation line: the record ends here
        const eq = line.indexOf('=');
        if (eq > 1) {
          dict[line.slice(1, eq)] = decodeEscapes(line.slice(eq + 1));
          entries++;
        }
      }
    }
    message = decodeEscapes(message);
    if (message.length > MAX_MESSAGE_CHARS) {
      message = `${message.slice(0, MAX_MESSAGE_CHARS - 3)}...`;
      truncated = true;
    }
    const p = Number(prio);
    return {
      facility: p >> 3,
      level: p & 7,
      seq,
      usecSinceBoot: Number(usec),
      flags,
      message,
      dict: { ...dict },
      truncated,
    };
  } catch {
    return null;
  }
}

function escapeForKmsg(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (c < 32 || c === 127 || ch === '\\') out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out;
}

/** Format a record the way the kernel does (used by tests and fakes). Inverse of parseKmsgRecord. */
export function formatKmsgRecord(r: {
  facility?: number;
  level: number;
  seq: bigint | number;
  usecSinceBoot: number;
  flags?: string;
  message: string;
  dict?: Record<string, string>;
}): string {
  const prio = ((r.facility ?? 0) << 3) | (r.level & 7);
  let s = `${prio},${r.seq},${Math.trunc(r.usecSinceBoot)},${r.flags ?? '-'};${escapeForKmsg(r.message)}\n`;
  for (const [k, v] of Object.entries(r.dict ?? {})) s += ` ${k}=${escapeForKmsg(v)}\n`;
  return s;
}

// ---------------------------------------------------------------------------------------------
// PCI bus ids

function isHex(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) | 0x20;
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/**
 * Map any form of a GPU's PCI address to the kernel's short form "dddd:bb:dd" (lower case,
 * at least 4 domain digits, no function): NVML's `00000000:9B:00.0`, the legacy `0000:9B:00.0`,
 * the kernel's `0000:9b:00`, `PCI:0000:9b:00`, and a domain-less `9b:00.0` (domain 0).
 * Returns null when the input is not a PCI address.
 */
export function normalizePciBusId(id: string): string | null {
  if (typeof id !== 'string' || id.length > 64) return null;
  let s = id.trim();
  if (s.slice(0, 4).toUpperCase() === 'PCI:') s = s.slice(4);
  const dot = s.lastIndexOf('.');
  if (dot >= 0) {
    const fn = s.slice(dot + 1);
    if (!isHex(fn) || fn.length > 1 || Number.parseInt(fn, 16) > 7) return null;
    s = s.slice(0, dot);
  }
  const parts = s.split(':');
  let domain: string;
  let bus: string;
  let dev: string;
  if (parts.length === 3) [domain, bus, dev] = parts as [string, string, string];
  else if (parts.length === 2) [domain, bus, dev] = ['0', parts[0] as string, parts[1] as string];
  else return null;
  if (!isHex(domain) || domain.length > 8 || !isHex(bus) || bus.length > 2 || !isHex(dev) || dev.length > 2) return null;
  const d = Number.parseInt(domain, 16);
  const b = Number.parseInt(bus, 16);
  const v = Number.parseInt(dev, 16);
  if (v > 0x1f) return null;
  return `${d.toString(16).padStart(4, '0')}:${b.toString(16).padStart(2, '0')}:${v.toString(16).padStart(2, '0')}`;
}

// ---------------------------------------------------------------------------------------------
// NVRM lines

export interface XidLine {
  kind: 'xid';
  /** Kernel short form, normalised ("0000:9b:00"). */
  pciShort: string;
  code: number;
  /** Absent when the line has no pid or pid='<unknown>'. */
  pid?: number;
  /** Absent when the line has no name or name=<unknown>. */
  processName?: string;
  /** The rest of the line after the code, pid and name ("" when none). */
  detail: string;
  /** MIG attribution (`(PCI:0000:3b:00 GPU-I:01 GPU-CI:00)`), when the line has it. */
  gpuInstance?: number;
  computeInstance?: number;
}

export interface GpuUuidLine {
  kind: 'gpu_uuid';
  pciShort: string;
  uuid: string;
}

/** "GPU has fallen off the bus" without an XID number (the agent reports it as XID 79). */
export interface FallenOffBusLine {
  kind: 'fallen_off_bus';
  pciShort: string;
  /** 'single': `NVRM: GPU 0000:91:00.0: GPU has fallen off the bus.`; 'multi': the three-line `NVRM: The NVIDIA GPU ... fallen off the bus and is not responding to commands.` record. */
  form: 'single' | 'multi';
}

/** `NVRM: GPU 0000:98:00.0: RmInitAdapter failed! (0x62:0x65:1792)`: the driver could not bring the GPU up. */
export interface InitFailedLine {
  kind: 'init_failed';
  pciShort: string;
  /** The text after "failed!", e.g. "(0x62:0x65:1792)" ("" when none). */
  detail: string;
}

export type NvrmLine = XidLine | GpuUuidLine | FallenOffBusLine | InitFailedLine;

const MAX_NVRM_SCAN = 512;
const MAX_DETAIL_CHARS = 2048;

/** Parse an XID line (`NVRM: Xid (PCI:0000:9b:00): 119, pid=..., name=..., detail`), anywhere in the message. */
export function parseXidLine(message: string): XidLine | null {
  if (typeof message !== 'string') return null;
  const at = message.slice(0, MAX_NVRM_SCAN + 16).indexOf('NVRM: Xid (');
  if (at < 0) return null;
  let s = message.slice(at + 11, at + 11 + MAX_DETAIL_CHARS + 128);
  const close = s.indexOf(')');
  if (close < 0 || close > 40) return null;
  // "PCI:0000:3b:00", or with MIG attribution "PCI:0000:3b:00 GPU-I:01[ GPU-CI:00]"
  const [addr, ...mig] = s.slice(0, close).split(' ');
  const pciShort = normalizePciBusId(addr ?? '');
  if (!pciShort) return null;
  let gpuInstance: number | undefined;
  let computeInstance: number | undefined;
  for (const tok of mig) {
    const m = /^GPU-(I|CI):(\d{1,3})$/.exec(tok);
    if (!m) return null;
    if (m[1] === 'I') gpuInstance = Number(m[2]);
    else computeInstance = Number(m[2]);
  }
  s = s.slice(close + 1);
  if (!s.startsWith(':')) return null;
  s = s.replace(/^: */, '');
  let n = 0;
  while (n < s.length && n < 10 && s.charCodeAt(n) >= 48 && s.charCodeAt(n) <= 57) n++;
  if (n === 0 || n > 9) return null;
  const code = Number.parseInt(s.slice(0, n), 10);
  s = s.slice(n);
  if (s.length > 0 && !s.startsWith(',')) return null;
  s = s.replace(/^, */, '');
  const out: XidLine = { kind: 'xid', pciShort, code, detail: '' };
  if (gpuInstance !== undefined) out.gpuInstance = gpuInstance;
  if (computeInstance !== undefined) out.computeInstance = computeInstance;
  if (s.startsWith('pid=')) {
    let end = s.indexOf(',');
    if (end < 0) end = s.length;
    const pidTok = s.slice(4, end).trim();
    if (/^\d{1,10}$/.test(pidTok)) out.pid = Number.parseInt(pidTok, 10);
    s = s.slice(end).replace(/^, */, '');
    if (s.startsWith('name=')) {
      // A process name is short (the kernel's comm is 15 chars) but may contain spaces.
      let nend = s.indexOf(', ');
      if (nend < 0 || nend > 64) nend = s.indexOf(',');
      if (nend < 0 || nend > 64) nend = Math.min(s.length, 64);
      const name = s.slice(5, nend).trim();
      if (name && name !== '<unknown>') out.processName = name;
      s = s.slice(nend).replace(/^, */, '');
    }
  }
  let detail = s.trim();
  if (detail.length > MAX_DETAIL_CHARS) detail = `${detail.slice(0, MAX_DETAIL_CHARS - 3)}...`;
  out.detail = detail;
  return out;
}

/** Parse any NVRM line the agent cares about (XID, bus-id -> UUID map, fallen off the bus). */
export function parseNvrmLine(message: string): NvrmLine | null {
  if (typeof message !== 'string') return null;
  const head = message.slice(0, MAX_NVRM_SCAN + 64);
  const at = head.indexOf('NVRM: ');
  if (at < 0) return null;
  if (head.startsWith('NVRM: Xid (', at)) return parseXidLine(message);
  if (head.startsWith('NVRM: GPU at ', at)) {
    // NVRM: GPU at PCI:0000:9b:00: GPU-509665ad-...
    const rest = head.slice(at + 13);
    const m = /^(?:PCI:)?([0-9a-fA-F]{1,8}:[0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}(?:\.[0-7])?): (GPU-[0-9a-fA-F-]{8,64})/.exec(rest);
    if (!m || !m[1] || !m[2]) return null;
    const pciShort = normalizePciBusId(m[1]);
    return pciShort ? { kind: 'gpu_uuid', pciShort, uuid: m[2] } : null;
  }
  if (head.startsWith('NVRM: The NVIDIA GPU ', at)) {
    // One record of three lines, matched whole (the kernel escapes the newlines as \x0a, which
    // parseKmsgRecord decodes): "NVRM: The NVIDIA GPU 0000:b3:00.0\nNVRM: (PCI ID: 10de:26b5)
    // installed in this system has\nNVRM: fallen off the bus and is not responding to commands."
    const rest = head.slice(at + 21);
    let end = 0;
    while (end < rest.length && end < 40 && !/\s/.test(rest.charAt(end))) end++;
    const pciShort = normalizePciBusId(rest.slice(0, end));
    if (!pciShort || !rest.includes('fallen off the bus and is not responding to commands')) return null;
    return { kind: 'fallen_off_bus', pciShort, form: 'multi' };
  }
  if (head.startsWith('NVRM: GPU ', at)) {
    // NVRM: GPU 0000:2b:00.0: GPU has fallen off the bus.
    // NVRM: GPU 0000:98:00.0: RmInitAdapter failed! (0x62:0x65:1792)
    const rest = head.slice(at + 10);
    const colonSpace = rest.indexOf(': ');
    if (colonSpace < 0 || colonSpace > 40) return null;
    const pciShort = normalizePciBusId(rest.slice(0, colonSpace));
    if (!pciShort) return null;
    const text = rest.slice(colonSpace + 2);
    if (text.startsWith('GPU has fallen off the bus')) return { kind: 'fallen_off_bus', pciShort, form: 'single' };
    if (text.startsWith('RmInitAdapter failed!')) return { kind: 'init_failed', pciShort, detail: text.slice(21, 21 + 128).trim() };
    return null;
  }
  return null;
}
