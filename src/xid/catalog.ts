/**
 * The project's XID catalog: every code in NVIDIA's XID catalog (1-172), with NVIDIA's immediate and
 * investigatory resolution, what gpud, DCGM and the EKS node monitor do with it, and the agent's
 * own classification (severity, recommended action) with a citation, plus a note wherever the
 * project departs from NVIDIA, gpud, DCGM or EKS.
 *
 * The facts come from src/xid/nvidia-facts.ts (generated from the reference table by
 * scripts/gen-xid-facts.mjs). The classification is declared here, in two parts: a rule for each of
 * NVIDIA's resolution words (BY_RESOLUTION), and the codes where the project decides otherwise or
 * NVIDIA gives no plain resolution (DECISIONS). Departures are computed, never hand-listed, so a
 * note cannot go stale. The decisions are documented in docs/events-and-store.md.
 */
import type { EventSource, HealthEventInput, RecommendedAction, Severity } from '../events/types.js';
import { xidKey } from '../events/fault-key.js';
import { XID_FACTS, type XidFacts } from './nvidia-facts.js';
import { nvlink5Verdict } from './nvlink5.js';

export interface XidInfo {
  code: number;
  /** NVIDIA's mnemonic (the first one where the catalog gives two). */
  mnemonic: string;
  /** NVIDIA's description. */
  description: string;
  /** NVIDIA's immediate resolution, e.g. "RESTART_BM", "RESET_GPU", "IGNORE"; "-" when the catalog gives none. */
  nvidiaAction: string;
  severity: Severity;
  action: RecommendedAction;
  /** Where the classification comes from: NVIDIA's resolution, gpud, DCGM and EKS, and whether the agent departs. */
  citation: string;
  /** In the Navarch control plane's default-policy fatal list (node becomes UNHEALTHY). */
  navarchFatal: boolean;
  /** False for codes not in the catalog (and for 999, NVML's "unknown XID"). */
  known: boolean;
  /** NVIDIA's investigatory resolution, "" when none. */
  nvidiaInvestigation?: string;
  /** gpud's view: event type and repair actions, e.g. "Fatal REBOOT_SYSTEM+HARDWARE_INSPECTION"; "not in gpud's table". */
  gpud?: string;
  /** DCGM's health-watch mapping, e.g. "devastating FAIL"; "-" when DCGM does not map the code. */
  dcgm?: string;
  /** In the EKS node-monitoring agent's fatal list. */
  eksFatal?: boolean;
  /** Why the project classifies the code as it does, and whom it departs from, when it departs or decides on its own. */
  note?: string;
}

/** XIDs the Navarch control plane's default policy treats as fatal; every other XID is "degraded". */
export const NAVARCH_FATAL_XIDS: readonly number[] = Object.freeze([13, 31, 32, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 100, 119, 120]);
const FATAL_SET = new Set(NAVARCH_FATAL_XIDS);

/** NVML's event data for an XID the driver could not name. Kept as 999, never rewritten. */
export const UNKNOWN_XID_CODE = 999;

/** The agent's classification of a code, and the reason for it. */
export interface XidDecision {
  severity: Severity;
  action: RecommendedAction;
  why: string;
}

const d = (severity: Severity, action: RecommendedAction, why: string): XidDecision => Object.freeze({ severity, action, why });

/**
 * The project's rule for each of NVIDIA's immediate resolutions. Critical means the GPU cannot
 * serve work until the action is taken; a false critical can cost a replaced instance, so only
 * resolutions that take the GPU (or the host) out of service are critical.
 */
export const BY_RESOLUTION: Readonly<Record<string, XidDecision>> = Object.freeze({
  RESTART_APP: d(
    'warning',
    'restart_app',
    "NVIDIA's resolution is to restart the application: the fault belongs to one application and the GPU keeps serving the others",
  ),
  RESET_GPU: d('critical', 'reset_gpu', "NVIDIA's resolution is a GPU reset: the GPU cannot serve work until it is reset"),
  RESTART_BM: d('critical', 'reboot', "NVIDIA's resolution is a full power cycle: the GPU is unreachable over PCIe"),
  RESTART_VM: d('critical', 'reboot', "NVIDIA's resolution is a restart of the VM: the GPU cannot serve work until then"),
  IGNORE: d('info', 'none', 'NVIDIA says the event needs no action (IGNORE)'),
  CONTACT_SUPPORT: d(
    'warning',
    'none',
    'NVIDIA has no automated fix (CONTACT_SUPPORT), and current drivers do not emit most of these codes ("Unused"): the agent reports a warning and raises no fault, so an unexplained code does not take a node out of service',
  ),
  CHECK_MECHANICALS: d(
    'critical',
    'replace',
    "NVIDIA's resolution is a hands-on check of the hardware (auxiliary power not connected): the GPU runs at reduced clocks and no reset or reboot cures that; on a cloud host the remedy is another host",
  ),
  UPDATE_SWFW: d('warning', 'none', "NVIDIA's resolution is a software or firmware update, which no automated action performs"),
  CHECK_UVM: d('warning', 'none', "NVIDIA's resolution is to check the UVM (unified memory) driver; the GPU itself keeps serving work"),
});

const NVLINK5 = d(
  'warning',
  'reset_gpu',
  "NVIDIA's NVLink5 workflow is a decision made from the line's fields: a decoded kernel-log line is rated by nvlink5.ts (Fatal: critical, reset_gpu; Nonfatal: warning, no fault); an NVML event or a line that does not decode gets the workflow's first disruptive step, a GPU reset, at warning",
);

/** Codes the project classifies other than by BY_RESOLUTION, or where NVIDIA gives a workflow or nothing. */
export const DECISIONS: Readonly<Record<number, XidDecision>> = Object.freeze({
  38: d(
    'critical',
    'reset_gpu',
    'NVIDIA says IGNORE, but a FECS firmware watchdog timeout leaves the graphics engine unusable; gpud, DCGM and the device plugin all flag it, so the agent recommends a GPU reset',
  ),
  43: d('warning', 'restart_app', 'NVIDIA says IGNORE; the channel of the faulting application was reset, so the agent recommends restarting that application'),
  44: d(
    'warning',
    'none',
    "NVIDIA says IGNORE for a graphics-engine fault during a context switch; gpud rates it fatal, so the agent reports a warning, but raises no fault against NVIDIA's word",
  ),
  45: d('info', 'none', 'a consequence of another XID ("caused by previous Xid N"); the agent acts on that one'),
  48: d('critical', 'reset_gpu', "NVIDIA's workflow for a double-bit error starts with a GPU reset (page retirement or row remapping takes effect on reset)"),
  63: d(
    'warning',
    'reset_gpu',
    'NVIDIA says IGNORE, but the retired page or remapped row only takes effect after a GPU reset ("reset gpu to activate"), so the agent raises a pending-reset fault at warning: the GPU still serves work; on a GPU whose counters report row remapping it raises nothing, and the remapped-rows check judges (as gpud; src/xid/row-remap.ts)',
  ),
  64: d(
    'critical',
    'replace',
    'a remapping failure means the GPU ran out of spare rows; a reset does not cure that, so the agent recommends replacement; on a GPU whose counters report row remapping it raises nothing, and the remapped-rows check judges (as gpud; src/xid/row-remap.ts)',
  ),
  74: d('critical', 'reset_gpu', "NVIDIA's NVLink workflow starts with a GPU reset; until then the link, and the jobs that span it, are down"),
  92: d('warning', 'none', 'NVIDIA says IGNORE; the agent still reports a warning because a high corrected-error rate often comes before uncorrectable errors'),
  94: d(
    'warning',
    'restart_app',
    "a contained error affects only the application that used the memory (NVIDIA: RESTART_APP); gpud's reboot for 94 never escalates (its reboot threshold for 94 is 1000)",
  ),
  121: d('warning', 'none', 'NVIDIA says IGNORE; the agent reports a warning (DCGM files it as an NVLINK warning) without an automated action'),
  142: d(
    'critical',
    'reset_gpu',
    "NVIDIA's catalog names it an NVENC3 error (CONTACT_SUPPORT), but gpud's table and the EKS node monitor treat it as an unrecovered ECC error, and EKS calls it fatal; memory with an unrecovered error cannot be trusted, so the agent follows EKS and recommends a GPU reset",
  ),
  144: NVLINK5,
  145: NVLINK5,
  146: NVLINK5,
  147: NVLINK5,
  148: NVLINK5,
  149: NVLINK5,
  150: NVLINK5,
  154: d('info', 'none', 'informational; when the kernel line names the new recovery action, xidEventInput uses it as the recommended action'),
  162: d('info', 'none', 'NVIDIA gives no resolution; power smoothing came back, which is informational'),
  163: d('warning', 'none', 'NVIDIA gives no resolution; with power smoothing off the GPU still serves work, with larger power swings'),
  164: d(
    'warning',
    'none',
    'NVIDIA gives no resolution; the power-smoothing circuitry is near the end of its life, which is worth planning for but breaks nothing yet',
  ),
  165: d('warning', 'none', 'NVIDIA gives no resolution; the power-smoothing circuitry is exhausted, and the GPU keeps serving work without it'),
  166: d(
    'warning',
    'none',
    'NVIDIA gives no resolution; confidential-computing traffic was seen before the link was configured for it, which the operator should look at',
  ),
  167: d(
    'warning',
    'reset_gpu',
    'NVIDIA gives no resolution; a fatal PCIe timeout usually needs a GPU reset, like XID 158 (RESET_GPU), so the agent raises a reset fault, at warning because neither NVIDIA, gpud nor EKS calls it fatal',
  ),
  168: d('warning', 'none', 'NVIDIA gives no resolution; errors in the write-protected region reduce the usable memory, but the GPU still serves work'),
  169: d(
    'warning',
    'reset_gpu',
    'NVIDIA gives no resolution; a halted SEC2 micro-controller needs a reset like a halted PMU (XID 62, RESET_GPU), so the agent raises a reset fault, at warning because neither NVIDIA, gpud nor EKS calls it fatal',
  ),
  170: d('warning', 'none', 'NVIDIA gives no resolution; an interrupt in confidential-computing mode points at the application or its setup'),
  171: d('warning', 'none', 'NVIDIA gives no resolution; it adds details to an XID 48, and the agent acts on the 48'),
  172: d('warning', 'none', 'NVIDIA gives no resolution; it adds details to an XID 48, and the agent acts on the 48'),
});

function gpudView(f: XidFacts): string {
  if (f.gpudEventType === 'absent') return "not in gpud's table";
  return f.gpudActions.length > 0 ? `${f.gpudEventType} ${f.gpudActions.join('+')}` : f.gpudEventType;
}

/**
 * Whom the agent's severity departs from: NVIDIA (when the agent's decision differs from its rule for
 * NVIDIA's resolution), gpud (Fatal is unhealthy), DCGM (FAIL is a failure, WARN a warning) and EKS
 * (its fatal list). Empty when the agent agrees with all of them.
 */
export function departures(f: XidFacts, decision: XidDecision): string[] {
  const out: string[] = [];
  const critical = decision.severity === 'critical';
  const rule = BY_RESOLUTION[f.immediate];
  if (rule && (rule.severity !== decision.severity || rule.action !== decision.action)) out.push(`NVIDIA (${f.immediate})`);
  if (f.gpudEventType !== 'absent' && (f.gpudEventType === 'Fatal') !== critical) out.push(`gpud (${gpudView(f)})`);
  if (f.dcgm.endsWith('FAIL') ? !critical : f.dcgm.endsWith('WARN') && decision.severity !== 'warning') out.push(`DCGM (${f.dcgm})`);
  if (f.eksFatal !== critical) out.push(f.eksFatal ? 'EKS (fatal)' : 'EKS (not fatal)');
  return out;
}

/** The agent's decision for a catalog code: DECISIONS, else the rule for NVIDIA's resolution, else a warning. */
export function decisionFor(f: XidFacts): XidDecision {
  return DECISIONS[f.code] ?? BY_RESOLUTION[f.immediate] ?? d('warning', 'none', 'NVIDIA gives no resolution the agent has a rule for');
}

function build(f: XidFacts): XidInfo {
  const decision = decisionFor(f);
  const away = departures(f, decision);
  const own = DECISIONS[f.code] !== undefined;
  const nvidiaAction = f.immediate || '-';
  const info: XidInfo = {
    code: f.code,
    mnemonic: f.mnemonic.split(' / ')[0] ?? f.mnemonic,
    description: f.description,
    nvidiaAction,
    severity: decision.severity,
    action: decision.action,
    citation:
      `NVIDIA XID catalog: ${f.code} ${nvidiaAction}; gpud: ${gpudView(f)}; DCGM: ${f.dcgm || '-'}; EKS: ${f.eksFatal ? 'fatal' : 'not fatal'}` +
      (away.length > 0 ? '; navarch-agent: departs (see note)' : ''),
    navarchFatal: FATAL_SET.has(f.code),
    known: true,
    nvidiaInvestigation: f.investigatory,
    gpud: gpudView(f),
    dcgm: f.dcgm || '-',
    eksFatal: f.eksFatal,
  };
  if (away.length > 0) info.note = `departs from ${away.join(', ')}: ${decision.why}`;
  else if (own) info.note = decision.why;
  return Object.freeze(info);
}

/** Every code in the catalog, ascending. */
export const XID_CATALOG: readonly XidInfo[] = Object.freeze(XID_FACTS.map(build));
const BY_CODE = new Map<number, XidInfo>(XID_CATALOG.map((x) => [x.code, x]));

/**
 * Catalog entry for `code`. Never throws: codes outside NVIDIA's catalog (and 999, NVML's
 * "unknown XID") get a default classification: severity 'warning', action 'none', known false.
 */
export function xidInfo(code: number): XidInfo {
  const hit = BY_CODE.get(code);
  if (hit) return hit;
  const valid = Number.isSafeInteger(code) && code >= 0;
  const c = valid ? code : -1;
  if (c === UNKNOWN_XID_CODE) {
    return {
      code: c,
      mnemonic: 'UNKNOWN_XID',
      description: 'Unknown XID (NVML reported 999: the driver could not name it)',
      nvidiaAction: 'UNKNOWN',
      severity: 'warning',
      action: 'none',
      citation: 'NVML: event data 999 = unknown XID; navarch-agent default: warning, no automated action',
      navarchFatal: false,
      known: false,
      nvidiaInvestigation: '',
      note: 'the real code is usually in the kernel log line of the same moment; the agent does not guess',
    };
  }
  return {
    code: c,
    mnemonic: valid ? `XID_${c}` : 'INVALID_XID',
    description: valid ? `XID ${c} (not in the catalog)` : `invalid XID code (${String(code)})`,
    nvidiaAction: 'UNKNOWN',
    severity: 'warning',
    action: 'none',
    citation: 'not in NVIDIA XID catalog; navarch-agent default: warning, no automated action',
    navarchFatal: FATAL_SET.has(c),
    known: false,
    nvidiaInvestigation: '',
  };
}

/**
 * NVML's GPU recovery actions (nvmlDeviceGpuRecoveryAction_t), named by XID 154 lines and carried
 * by nvmlEventTypeGpuRecoveryAction events. The one table both read. 5 (RECOVER_IMEX_DOMAIN) came with
 * NVML 13.3: the GPU itself serves work, its IMEX domain (multi-node NVLink) must be recovered, so a
 * warning whose remedy is restarting the IMEX services and the jobs that use them (restart_app).
 */
export const RECOVERY_ACTIONS: Readonly<Record<number, { name: string; action: RecommendedAction; severity: Severity }>> = {
  0: { name: 'none', action: 'none', severity: 'info' },
  1: { name: 'GPU reset', action: 'reset_gpu', severity: 'critical' },
  2: { name: 'node reboot', action: 'reboot', severity: 'critical' },
  3: { name: 'drain P2P', action: 'restart_app', severity: 'warning' },
  4: { name: 'drain and reset', action: 'reset_gpu', severity: 'critical' },
  5: { name: 'recover IMEX domain', action: 'restart_app', severity: 'warning' },
};

/** Recommended action named by an XID 154 line ("... changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)"). */
export function recoveryActionFrom154(message: string): RecommendedAction | null {
  const m = /\bto (0x[0-9a-fA-F]{1,8})\b/.exec(message.slice(0, 4096));
  if (!m || m[1] === undefined) return null;
  const code = Number.parseInt(m[1], 16);
  // Drain P2P (3) keeps this parser's earlier verdict, reset_gpu (the NVML event path rates it
  // restart_app); every other code maps as the table says.
  if (code === 3) return 'reset_gpu';
  return RECOVERY_ACTIONS[code]?.action ?? null;
}

const ACTION_RANK: Record<RecommendedAction, number> = { none: 0, restart_app: 1, reset_gpu: 2, reboot: 3, replace: 4 };

/** True for actions that leave the GPU broken until it is reset, the host rebooted, or the GPU replaced. */
export function isPersistentAction(a: RecommendedAction): boolean {
  return ACTION_RANK[a] >= ACTION_RANK.reset_gpu;
}

/** The more disruptive of two actions. */
export function worstAction(a: RecommendedAction, b: RecommendedAction): RecommendedAction {
  return ACTION_RANK[a] >= ACTION_RANK[b] ? a : b;
}

/**
 * A classified Navarch XID event: type 'xid', system 'DRIVER', metrics.xid_code in base 10,
 * key `gpu${i}/xid/${code}` (`node/xid/${code}` when the GPU is unknown, i.e. gpuIndex < 0),
 * fault 'raise' for XIDs whose recommended action is reset_gpu/reboot/replace, 'none' otherwise.
 */
export function xidEventInput(args: {
  code: number;
  gpuIndex: number;
  gpuUuid: string;
  timeMs: number;
  source: EventSource;
  message?: string;
  pid?: number;
  processName?: string;
}): HealthEventInput {
  const info = xidInfo(args.code);
  const gpuIndex = Number.isSafeInteger(args.gpuIndex) && args.gpuIndex >= 0 ? args.gpuIndex : -1;
  let action = info.action;
  let severity = info.severity;
  let citation = info.citation;
  if (info.code === 154 && args.message) {
    const a = recoveryActionFrom154(args.message);
    if (a) {
      action = a;
      if (isPersistentAction(a)) severity = 'warning';
      citation = `${citation}; recovery action from the XID 154 line`;
    }
  }
  const metrics: Record<string, string> = { xid_code: String(info.code) };
  const nvlink = args.message ? nvlink5Verdict(info.code, args.message) : null;
  if (nvlink) {
    severity = nvlink.severity;
    action = nvlink.action;
    citation = nvlink.citation;
    Object.assign(metrics, nvlink.metrics);
  }
  if (args.pid !== undefined && Number.isSafeInteger(args.pid) && args.pid >= 0) metrics.pid = String(args.pid);
  if (args.processName) metrics.process_name = args.processName;
  const detail = args.message?.trim();
  const message = detail ? `XID ${info.code} (${info.description}): ${detail}` : `XID ${info.code}: ${info.description}`;
  const timeMs = Number.isFinite(args.timeMs) ? args.timeMs : Date.now();
  return {
    type: 'xid',
    system: 'DRIVER',
    gpuIndex,
    gpuUuid: args.gpuUuid ?? '',
    metrics,
    message: message.length > 1024 ? `${message.slice(0, 1021)}...` : message,
    timeMs,
    severity,
    action,
    citation,
    source: args.source,
    key: xidKey(gpuIndex, info.code),
    fault: isPersistentAction(action) ? 'raise' : 'none',
  };
}
