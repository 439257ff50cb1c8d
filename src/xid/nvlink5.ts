/**
 * Decoder for the NVLink5 XID lines (144-150), e.g.
 *   `NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000 0x00000000 ...)`
 * the text after `NVRM: Xid (PCI:...): 149, [pid=..., name=...,]`. Pure and bounded: a hand
 * scanner over at most 512 characters, no regular expression that can backtrack.
 *
 * Fields (format from NVIDIA's XID catalog, "XID 144-150 Decode"): the unit (`[A-Z0-9_]+`, optionally
 * `/UNIT2`), the driver's word `Fatal` or `Nonfatal`, the cross-containment domain `XC0`/`XC1`, the
 * injection status `i<n>`, the link number (`-1` for a general error), then in parentheses the
 * 32-bit intrinfo word, the 32-bit error status and up to four more words. The sub-code is bits
 * 20-25 of intrinfo.
 *
 * Classification (the project's, see docs/events-and-store.md): the driver's word decides. In
 * NVIDIA's decode sheet every row whose resolution is RESET_GPU is Fatal or Link Fatal, so:
 * - `Fatal`: critical, reset_gpu (a fault is raised). Never rated lower than the line says.
 * - `Nonfatal`: warning, no action, no fault: the link keeps working, and NVIDIA's sheet says IGNORE
 *   or "evaluate the XID 154 that follows" for these rows. When a row needs a reset, the driver
 *   says so in the XID 154 line, which the agent acts on.
 */
import type { RecommendedAction, Severity } from '../events/types.js';

export interface Nvlink5Fields {
  unit: string;
  fatal: boolean;
  /** Cross-containment domain, 0 or 1. */
  xc: number;
  /** Injection status (`i<n>`). */
  injected: number;
  /** NVLink number; -1 for a general error. */
  link: number;
  intrinfo: number;
  errorStatus: number;
  /** Bits 20-25 of intrinfo. */
  subCode: number;
  /** The words after the error status (at most 4). */
  extra: number[];
}

export interface Nvlink5Verdict {
  fields: Nvlink5Fields;
  severity: Severity;
  action: RecommendedAction;
  citation: string;
  /** Decoded fields, as event metrics (plain strings; hex words as 0x%08x). */
  metrics: Record<string, string>;
}

export const NVLINK5_XIDS: readonly number[] = Object.freeze([144, 145, 146, 147, 148, 149, 150]);
const MAX_SCAN = 512;

const hex32 = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

function parseHexWord(tok: string): number | null {
  if (!/^0x[0-9a-fA-F]{1,8}$/.test(tok)) return null;
  return Number.parseInt(tok.slice(2), 16);
}

/** Decode the fields of an NVLink5 line's detail text; null when it is not in that format. */
export function parseNvlink5(detail: string): Nvlink5Fields | null {
  if (typeof detail !== 'string') return null;
  const s = detail.slice(0, MAX_SCAN);
  const open = s.indexOf('(');
  const close = s.indexOf(')', open + 1);
  if (open < 0 || close < 0) return null;
  const head = s.slice(0, open).trim().split(/ +/);
  const words = s
    .slice(open + 1, close)
    .trim()
    .split(/ +/);
  // head: UNIT WORD XCn in LINK-keyword n
  if (head.length !== 6 || head[4] !== 'Link') return null;
  const [unit, word, xcTok, injTok, , linkTok] = head as [string, string, string, string, string, string];
  if (!/^[A-Z][A-Z0-9_]{0,47}(?:\/[A-Z][A-Z0-9_]{0,47})?$/.test(unit)) return null;
  if (word !== 'Fatal' && word !== 'Nonfatal') return null;
  if (!/^XC[01]$/.test(xcTok) || !/^i\d{1,3}$/.test(injTok) || !/^-?\d{1,3}$/.test(linkTok)) return null;
  if (words.length < 2 || words.length > 6) return null;
  const nums = words.map(parseHexWord);
  if (nums.some((n) => n === null)) return null;
  const [intrinfo, errorStatus, ...extra] = nums as number[];
  return {
    unit,
    fatal: word === 'Fatal',
    xc: Number(xcTok.slice(2)),
    injected: Number(injTok.slice(1)),
    link: Number(linkTok),
    intrinfo: intrinfo as number,
    errorStatus: errorStatus as number,
    subCode: ((intrinfo as number) >>> 20) & 0x3f,
    extra,
  };
}

/** The agent's verdict for an NVLink5 XID line; null when the code is not 144-150 or the text does not decode. */
export function nvlink5Verdict(code: number, detail: string): Nvlink5Verdict | null {
  if (!NVLINK5_XIDS.includes(code)) return null;
  const f = parseNvlink5(detail);
  if (!f) return null;
  const metrics: Record<string, string> = {
    nvlink_unit: f.unit,
    nvlink_fatal: f.fatal ? 'true' : 'false',
    nvlink_xc: String(f.xc),
    nvlink_injected: String(f.injected),
    nvlink_link: String(f.link),
    nvlink_intrinfo: hex32(f.intrinfo),
    nvlink_error_status: hex32(f.errorStatus),
    nvlink_sub_code: String(f.subCode),
  };
  f.extra.forEach((w, i) => (metrics[`nvlink_word${i + 2}`] = hex32(w)));
  const where = `${f.unit} link ${f.link} XC${f.xc} sub-code ${f.subCode} status ${hex32(f.errorStatus)}`;
  return f.fatal
    ? {
        fields: f,
        metrics,
        severity: 'critical',
        action: 'reset_gpu',
        citation: `NVIDIA XID catalog, XID 144-150 decode: ${code} ${where}, driver says Fatal (Fatal rows: RESET_GPU)`,
      }
    : {
        fields: f,
        metrics,
        severity: 'warning',
        action: 'none',
        citation: `NVIDIA XID catalog, XID 144-150 decode: ${code} ${where}, driver says Nonfatal (IGNORE or evaluate the XID 154 that follows)`,
      };
}
