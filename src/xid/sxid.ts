/**
 * NVSwitch SXid kernel-log lines and the agent's classification of them.
 *
 *   nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 20034, Fatal, Link 48 LTSSM Fault Up
 *   nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 20034, Severity 1 Engine instance 60 Sub-engine instance 00
 *   nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Data {0x10000000, ...}
 *
 * One SXid prints a headline (with `Fatal`/`Non-fatal` and the link) and follow-up `Severity` and
 * `Data` lines with the same code. Only the headline becomes an event; the follow-ups are parsed
 * (kind 'followup') and not raised again.
 *
 * Classification (the project's; facts from src/xid/sxid-facts.ts):
 * - always fatal in the Fabric Manager guide: critical, reboot. The fabric is down for the GPUs
 *   behind the switch, and the guide's recovery is to reset the GPUs and switches (a reboot).
 * - potentially fatal: the driver's word decides: `Fatal` critical, reboot; `Non-fatal` warning.
 * - non-fatal in the guide (Single bit ECC, TX replay, ...): warning, no action, no fault.
 * - a code not in the table: the driver's word decides, as for a potentially fatal one.
 * Departures from gpud (which ignores the word and rates by its table) are noted in the citation.
 * Pure and bounded: at most 512 characters are scanned.
 */
import type { HealthEventInput, RecommendedAction, Severity } from '../events/types.js';
import { sxidKey } from '../events/fault-key.js';
import { normalizePciBusId } from '../sources/kmsg-parse.js';
import { SXID_FACTS, type SxidFacts } from './sxid-facts.js';

export interface SxidLine {
  kind: 'headline' | 'followup';
  /** N of `nvidia-nvswitchN`. */
  nvswitch: number;
  /** Kernel short form of the switch's PCI address ("0000:06:00"). */
  pciShort: string;
  code: number;
  /** Headline only: the driver's word. */
  fatal?: boolean;
  /** Headline only: the link number, when the line has one. */
  link?: number;
  /** The text after the code (headline: after "Fatal, "). */
  detail: string;
}

const MAX_SCAN = 512;
const BY_CODE = new Map<number, SxidFacts>(SXID_FACTS.map((f) => [f.code, f]));

/** Parse an SXid line anywhere in a kernel-log message; null when it is not one. */
export function parseSxidLine(message: string): SxidLine | null {
  if (typeof message !== 'string') return null;
  const s = message.slice(0, MAX_SCAN);
  const at = s.indexOf('nvidia-nvswitch');
  if (at < 0) return null;
  const m = /^nvidia-nvswitch(\d{1,3}): SXid \((?:PCI:)?([0-9a-fA-F:.]{4,20})\): (\d{1,6}), (.*)$/s.exec(s.slice(at));
  if (!m || m[1] === undefined || m[2] === undefined || m[3] === undefined || m[4] === undefined) return null;
  const pciShort = normalizePciBusId(m[2]);
  if (!pciShort) return null;
  const base = { nvswitch: Number(m[1]), pciShort, code: Number(m[3]) };
  const rest = m[4].trim();
  const word = /^(Fatal|Non-fatal), ?(.*)$/s.exec(rest);
  if (!word || word[1] === undefined) return { kind: 'followup', ...base, detail: rest.slice(0, 256) };
  const detail = (word[2] ?? '').trim().slice(0, 256);
  const out: SxidLine = { kind: 'headline', ...base, fatal: word[1] === 'Fatal', detail };
  const link = /^Link (\d{1,4})\b/.exec(detail);
  if (link?.[1] !== undefined) out.link = Number(link[1]);
  return out;
}

export interface SxidVerdict {
  severity: Severity;
  action: RecommendedAction;
  citation: string;
  name: string;
}

/** The agent's verdict for a headline: table first, then the driver's word. */
export function sxidVerdict(code: number, fatalWord: boolean): SxidVerdict {
  const f = BY_CODE.get(code);
  const word = fatalWord ? 'Fatal' : 'Non-fatal';
  const gpud = f ? `gpud: ${f.gpudEventType}${f.gpudActions.length ? ` ${f.gpudActions.join('+')}` : ''}` : 'gpud: not in its table (ignored)';
  const critical = !f || f.alwaysFatal || f.potentialFatal ? fatalWord || (f?.alwaysFatal ?? false) : false;
  const severity: Severity = critical ? 'critical' : 'warning';
  const action: RecommendedAction = critical ? 'reboot' : 'none';
  const gpudFatal = f?.gpudEventType === 'Fatal';
  const departs = f !== undefined && gpudFatal !== critical ? "; navarch-agent: departs from gpud (the agent follows the guide and the driver's word)" : '';
  const guide = f
    ? `Fabric Manager guide: ${f.alwaysFatal ? 'always fatal' : f.potentialFatal ? 'potentially fatal' : 'non-fatal'}`
    : 'not in the Fabric Manager table';
  return {
    severity,
    action,
    name: f?.name ?? `SXid ${code}`,
    citation: `NVSwitch SXid ${code}: ${guide}; line says ${word}; ${gpud}${departs}`,
  };
}

/** A Navarch event for an SXid headline: type nvlink, system NVSWITCH, key `nvswitch<N>/sxid/<code>`. */
export function sxidEventInput(line: SxidLine, timeMs: number): HealthEventInput {
  const v = sxidVerdict(line.code, line.fatal === true);
  const metrics: Record<string, string> = {
    sxid_code: String(line.code),
    nvswitch_index: String(line.nvswitch),
    pci_bus_id: line.pciShort,
    sxid_fatal: line.fatal ? 'true' : 'false',
  };
  if (line.link !== undefined) metrics.link = String(line.link);
  const msg = `NVSwitch ${line.nvswitch} (${line.pciShort}) SXid ${line.code} (${v.name}), ${line.fatal ? 'Fatal' : 'Non-fatal'}${line.detail ? `: ${line.detail}` : ''}`;
  return {
    type: 'nvlink',
    system: 'NVSWITCH',
    gpuIndex: -1,
    gpuUuid: '',
    metrics,
    message: msg.slice(0, 1024),
    timeMs,
    severity: v.severity,
    action: v.action,
    citation: v.citation,
    source: 'kmsg',
    key: sxidKey(line.nvswitch, line.code),
    fault: v.action === 'reboot' ? 'raise' : 'none',
  };
}
