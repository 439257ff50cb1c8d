/**
 * The project's XID catalog: for every XID code the agent knows, NVIDIA's mnemonic, meaning and
 * immediate action, plus the agent's own classification (severity, recommended action) with a
 * citation naming where it comes from, and a note wherever the project departs from NVIDIA.
 *
 * Sources of the facts: NVIDIA's XID catalog (docs.nvidia.com/deploy/xid-errors) and how gpud,
 * DCGM, the k8s device plugin and the EKS node-monitoring agent treat each code, as summarised in
 * the project's reference notes. The decisions are documented in docs/events-and-store.md.
 */
import type { EventSource, HealthEventInput, RecommendedAction, Severity } from '../events/types.js';

export interface XidInfo {
  code: number;
  mnemonic: string;
  description: string;
  /** NVIDIA's immediate action word(s), e.g. "RESTART_BM", "RESET_GPU", "IGNORE". */
  nvidiaAction: string;
  severity: Severity;
  action: RecommendedAction;
  /** Where the classification comes from, e.g. "NVIDIA XID catalog: 79 RESTART_BM; gpud: RebootSystem+HardwareInspection". */
  citation: string;
  /** In the Navarch control plane's default-policy fatal list (node becomes UNHEALTHY). */
  navarchFatal: boolean;
  /** False for codes not in the catalog (and for 999, NVML's "unknown XID"). */
  known: boolean;
  /** NVIDIA's investigatory action (second column of NVIDIA's action), "" when none. */
  nvidiaInvestigation?: string;
  /** Why the project's classification departs from NVIDIA's action, when it does. */
  note?: string;
}

/** XIDs the Navarch control plane's default policy treats as fatal; every other XID is "degraded". */
export const NAVARCH_FATAL_XIDS: readonly number[] = Object.freeze([
  13, 31, 32, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 100, 119, 120,
]);
const FATAL_SET = new Set(NAVARCH_FATAL_XIDS);

/** NVML's event data for an XID the driver could not name. Kept as 999, never rewritten. */
export const UNKNOWN_XID_CODE = 999;

type Row = [
  code: number,
  mnemonic: string,
  description: string,
  nvidiaAction: string,
  nvidiaInvestigation: string,
  gpud: string,
  severity: Severity,
  action: RecommendedAction,
  note?: string,
];

const NVLINK5_NOTE = 'NVIDIA\'s NVLink5 workflow is a multi-step decision; the agent recommends its first disruptive step, a GPU reset';

// prettier-ignore
const ROWS: Row[] = [
  [13, 'ROBUST_CHANNEL_GR_EXCEPTION', 'Graphics Engine Exception', 'RESTART_APP', 'WORKFLOW_XID_13', 'CheckUserAppAndGPU', 'warning', 'restart_app'],
  [31, 'ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT', 'GPU memory page fault', 'RESTART_APP', 'WORKFLOW_XID_31', 'CheckUserAppAndGPU+HardwareInspection', 'warning', 'restart_app'],
  [32, 'ROBUST_CHANNEL_PBDMA_ERROR', 'Invalid or corrupted push buffer stream', 'RESTART_APP', 'CHECK_APP/CUDA', 'RebootSystem+HardwareInspection', 'warning', 'restart_app'],
  [38, 'ROBUST_CHANNEL_FECS_ERR_WATCHDOG_TIMEOUT', 'Driver firmware error', 'IGNORE', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu',
    'NVIDIA says IGNORE, but a FECS firmware watchdog timeout leaves the graphics engine unusable; gpud, DCGM and the device plugin all flag it, so the agent recommends a GPU reset'],
  [43, 'ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR', 'GPU stopped processing', 'IGNORE', 'CONTACT_SUPPORT', 'CheckUserAppAndGPU', 'warning', 'restart_app',
    'NVIDIA says IGNORE; the channel of the faulting application was reset, so the agent recommends restarting that application'],
  [45, 'ROBUST_CHANNEL_PREEMPTIVE_REMOVAL', 'Preemptive cleanup, due to previous errors', 'WORKFLOW_XID_45', 'Solo: RESTART_FM; not solo: IGNORE (follow the other XID)', 'IgnoreNoActionRequired', 'info', 'none',
    'a consequence of another XID; the agent acts on that one'],
  [48, 'ROBUST_CHANNEL_GPU_ECC_DBE', 'Double Bit ECC Error', 'WORKFLOW_XID_48', 'WORKFLOW_XID_48', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu',
    'NVIDIA\'s workflow starts with a GPU reset (page retirement / row remapping takes effect on reset)'],
  [61, 'PMU_BREAKPOINT', 'Internal micro-controller breakpoint (unused on current drivers)', 'CONTACT_SUPPORT', '', 'RebootSystem', 'critical', 'reset_gpu',
    'NVIDIA has no automated fix (CONTACT_SUPPORT); the agent recommends the least disruptive step that recovers a halted micro-controller'],
  [62, 'PMU_HALT_ERROR', 'Internal micro-controller halt', 'RESET_GPU', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu'],
  [63, 'INFOROM_DRAM_RETIREMENT_EVENT', 'GPU memory remapping event', 'IGNORE', 'IGNORE', 'RebootSystem+HardwareInspection', 'warning', 'reset_gpu',
    'NVIDIA says IGNORE, but the retired page / remapped row only takes effect after a GPU reset ("reset gpu to activate"), so the agent raises a pending-reset fault'],
  [64, 'INFOROM_DRAM_RETIREMENT_FAILURE', 'GPU memory remapping failure', 'RESET_GPU', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'critical', 'replace',
    'a remapping failure means the GPU ran out of spare rows; a reset does not cure that, so the agent recommends replacement'],
  [68, 'ROBUST_CHANNEL_NVDEC0_ERROR', 'NVDEC0 Exception', 'RESTART_APP', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'warning', 'restart_app'],
  [69, 'ROBUST_CHANNEL_GR_CLASS_ERROR', 'Graphics Engine class error', 'RESTART_APP', 'CHECK_APP/CUDA', 'RebootSystem+HardwareInspection', 'warning', 'restart_app'],
  [74, 'NVLINK_ERROR', 'NVLINK Error', 'WORKFLOW_NVLINK_ERR', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu'],
  [79, 'ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS', 'GPU has fallen off the bus', 'RESTART_BM', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'critical', 'reboot'],
  [92, 'EXCESSIVE_SBE_INTERRUPTS', 'High single-bit ECC error rate', 'IGNORE', 'CONTACT_SUPPORT', 'IgnoreNoActionRequired', 'warning', 'none',
    'NVIDIA says IGNORE; the agent still reports it as a warning because a high corrected-error rate often precedes uncorrectable errors'],
  [94, 'ROBUST_CHANNEL_CONTAINED_ERROR', 'Contained memory error', 'RESTART_APP', 'IGNORE (sympathetic)', 'RebootSystem+IgnoreNoActionRequired', 'warning', 'restart_app'],
  [95, 'ROBUST_CHANNEL_UNCONTAINED_ERROR', 'Uncontained memory error', 'RESET_GPU', 'IGNORE (sympathetic)', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu'],
  [109, 'ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR', 'Context Switch Timeout Error', 'RESET_GPU', 'CONTACT_SUPPORT', '-', 'critical', 'reset_gpu'],
  [119, 'GSP_RPC_TIMEOUT', 'GSP RPC Timeout', 'RESET_GPU', 'INVESTIGATE_SW', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu'],
  [120, 'GSP_ERROR', 'GSP Error', 'RESET_GPU', 'INVESTIGATE_SW', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu'],
  [121, 'C2C_ERROR', 'C2C Error', 'IGNORE', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'warning', 'none',
    'NVIDIA says IGNORE; the agent reports a warning (DCGM files it as an NVLINK warning) without an automated action'],
  [140, 'UNRECOVERABLE_ECC_ERROR_ESCAPE', 'ECC Unrecovered Error', 'RESET_GPU', 'CONTACT_SUPPORT', 'RebootSystem+HardwareInspection', 'critical', 'reset_gpu'],
  [143, 'GPU_INIT_ERROR', 'GPU Initialization Error', 'RESET_GPU', 'CONTACT_SUPPORT', 'HardwareInspection', 'critical', 'reset_gpu'],
  [144, 'NVLINK_SAW_ERROR', 'NVLINK: SAW Error', 'WORKFLOW_NVLINK5_ERR', 'WORKFLOW_NVLINK5_ERR', 'RebootSystem', 'warning', 'reset_gpu',
    NVLINK5_NOTE],
  [145, 'NVLINK_RLW_ERROR', 'NVLINK: RLW Error', 'WORKFLOW_NVLINK5_ERR', 'WORKFLOW_NVLINK5_ERR', 'RebootSystem', 'warning', 'reset_gpu',
    NVLINK5_NOTE],
  [146, 'NVLINK_TLW_ERROR', 'NVLINK: TLW Error', 'WORKFLOW_NVLINK5_ERR', 'WORKFLOW_NVLINK5_ERR', 'RebootSystem', 'warning', 'reset_gpu',
    NVLINK5_NOTE],
  [147, 'NVLINK_TREX_ERROR', 'NVLINK: TREX Error', 'WORKFLOW_NVLINK5_ERR', 'WORKFLOW_NVLINK5_ERR', 'RebootSystem', 'warning', 'reset_gpu',
    NVLINK5_NOTE],
  [148, 'NVLINK_NVLPW_CTRL_ERROR', 'NVLINK: NVLPW_CTRL Error', 'WORKFLOW_NVLINK5_ERR', 'WORKFLOW_NVLINK5_ERR', 'RebootSystem', 'warning', 'reset_gpu',
    NVLINK5_NOTE],
  [149, 'NVLINK_NETIR_ERROR', 'NVLINK: NETIR Error', 'WORKFLOW_NVLINK5_ERR', 'WORKFLOW_NVLINK5_ERR', 'RebootSystem', 'warning', 'reset_gpu',
    NVLINK5_NOTE],
  [150, 'NVLINK_MSE_ERROR', 'NVLINK: MSE Error', 'WORKFLOW_NVLINK5_ERR', 'WORKFLOW_NVLINK5_ERR', 'RebootSystem', 'warning', 'reset_gpu',
    NVLINK5_NOTE],
  [154, 'GPU_RECOVERY_ACTION_CHANGED', 'GPU Recovery Action Changed', 'XID_154', 'N/A (informational, about another XID)', '-', 'info', 'none',
    'informational; when the kernel line names the new recovery action, xidEventInput uses it as the recommended action'],
];

function build(r: Row): XidInfo {
  const [code, mnemonic, description, nvidiaAction, nvidiaInvestigation, gpud, severity, action, note] = r;
  const info: XidInfo = {
    code,
    mnemonic,
    description,
    nvidiaAction,
    severity,
    action,
    citation: `NVIDIA XID catalog: ${code} ${nvidiaAction}; gpud: ${gpud}${note ? '; navarch-agent: departs (see note)' : ''}`,
    navarchFatal: FATAL_SET.has(code),
    known: true,
    nvidiaInvestigation,
  };
  if (note) info.note = note;
  return Object.freeze(info);
}

/** Every code in the catalog, ascending. */
export const XID_CATALOG: readonly XidInfo[] = Object.freeze(ROWS.map(build));
const BY_CODE = new Map<number, XidInfo>(XID_CATALOG.map((x) => [x.code, x]));

/**
 * Catalog entry for `code`. Never throws: unknown codes (and 999, NVML's "unknown XID") get a
 * default classification: severity 'warning', action 'none', known false. A code in Navarch's
 * fatal list that is not in NVIDIA's catalog (100) is 'critical' so the agent's local view agrees
 * with the control plane's.
 */
export function xidInfo(code: number): XidInfo {
  const hit = BY_CODE.get(code);
  if (hit) return hit;
  const valid = Number.isSafeInteger(code) && code >= 0;
  const c = valid ? code : -1;
  const fatal = FATAL_SET.has(c);
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
    severity: fatal ? 'critical' : 'warning',
    action: 'none',
    citation: fatal
      ? `Navarch default policy: XID ${c} fatal; not in NVIDIA XID catalog`
      : 'not in NVIDIA XID catalog; navarch-agent default: warning, no automated action',
    navarchFatal: fatal,
    known: false,
    nvidiaInvestigation: '',
  };
}

/** Recommended action named by an XID 154 line ("... changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)"). */
export function recoveryActionFrom154(message: string): RecommendedAction | null {
  const m = /\bto (0x[0-9a-fA-F]{1,8})\b/.exec(message.slice(0, 4096));
  if (!m || m[1] === undefined) return null;
  switch (Number.parseInt(m[1], 16)) {
    case 0:
      return 'none';
    case 1: // GPU reset required
    case 3: // drain P2P
    case 4: // drain and reset
      return 'reset_gpu';
    case 2: // node reboot required
      return 'reboot';
    default:
      return null;
  }
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
    key: gpuIndex >= 0 ? `gpu${gpuIndex}/xid/${info.code}` : `node/xid/${info.code}`,
    fault: isPersistentAction(action) ? 'raise' : 'none',
  };
}
