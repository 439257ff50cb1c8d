/**
 * The RUN_DIAGNOSTIC sweep: a full NVML pass reported as check results.
 *
 *   1. re-enumerate the devices (backend.refreshDevices()), compared with the inventory the agent
 *      registered and with the instance type's expected GPU count;
 *   2. one fresh snapshot of every device, judged by the telemetry judge (judgeSnapshot) from a
 *      fresh state, plus the one-shot conditions the judge does not cover (ECC mode);
 *   3. one CheckResult per check: `nvml`, `inventory`, `gpu<N>` per GPU, `active_faults`.
 *
 * Every backend call runs under a deadline: a hung step yields UNKNOWN results with a message,
 * never a hung command. Unsupported (null) telemetry fields are reported as "unsupported" and
 * never fail a check. Rate conditions (corrected ECC, PCIe replays, NVLink errors per minute)
 * need two samples and are left to the periodic telemetry loop; their counters are in details.
 */
import type { GpuBackend } from '../backends/types.js';
import type { CheckResult, CheckStatus } from '../controlplane/model.js';
import { gpuKey } from '../events/fault-key.js';
import type { ActiveFault, HealthEventInput, Severity } from '../events/types.js';
import type { DeviceInfo, DeviceSnapshot, Telemetry } from '../nvml/types.js';
import { CLOCK_REASON, emptyJudgeState, judgeSnapshot, telemetryConfig, type TelemetryConfig } from '../sources/telemetry.js';

/** Checks selectable with the `test` parameter ("all" = every one). `gpu<N>` selects one GPU. */
export const DIAGNOSTIC_CHECKS = ['nvml', 'inventory', 'gpu', 'active_faults'] as const;
export type DiagnosticCheck = (typeof DIAGNOSTIC_CHECKS)[number];

/** Default deadline of each backend step (refresh, snapshot). */
export const DEFAULT_STEP_TIMEOUT_MS = 30_000;
/** Bounds of the `timeout` parameter (seconds) when it sets the per-step deadline. */
const MAX_STEP_TIMEOUT_MS = 300_000;
const MAX_MESSAGE = 1024;
const MAX_GPUS = 256;

export interface DiagnosticsOptions {
  backend: GpuBackend;
  /** The inventory the agent registered (what the sweep compares the re-enumeration with). */
  previousDevices?: () => readonly DeviceInfo[];
  /** GPUs the instance type provides (src/host/instance-types.ts); null = no expectation. */
  expectedGpuCount?: number | null;
  /** Active faults of the event store. */
  activeFaults?: () => readonly ActiveFault[];
  /** Why the backend is `none` (the driver error), for the nvml result. */
  driverError?: string | null;
  /** Deadline of each backend step (ms); default 30 s. The `timeout` parameter overrides it. */
  stepTimeoutMs?: number;
  /** Judge thresholds (default: the telemetry defaults). */
  thresholds?: Partial<TelemetryConfig>;
}

export class DiagnosticParameterError extends Error {
  override name = 'DiagnosticParameterError';
}

export interface DiagnosticSelection {
  checks: Set<DiagnosticCheck>;
  /** Only these GPUs (from `gpu<N>` entries); null = every GPU when `gpu` is selected. */
  gpus: Set<number> | null;
}

/**
 * Parse the `test` parameter: "all" (default, also when empty) or a comma list of nvml,
 * inventory, gpu, gpu<N>, active_faults. Throws a one-line DiagnosticParameterError otherwise.
 */
export function parseDiagnosticTests(test: string | undefined): DiagnosticSelection {
  const raw = (test ?? '').trim().toLowerCase();
  if (raw === '' || raw === 'all') return { checks: new Set(DIAGNOSTIC_CHECKS), gpus: null };
  const checks = new Set<DiagnosticCheck>();
  let gpus: Set<number> | null = null;
  let allGpus = false;
  for (const part of raw.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    if (p === 'all') {
      for (const c of DIAGNOSTIC_CHECKS) checks.add(c);
      allGpus = true;
      continue;
    }
    const m = /^gpu(\d{1,3})$/.exec(p);
    if (m) {
      checks.add('gpu');
      (gpus ??= new Set()).add(Number(m[1]));
      continue;
    }
    if (!(DIAGNOSTIC_CHECKS as readonly string[]).includes(p)) {
      throw new DiagnosticParameterError(
        `unknown diagnostic test "${p.slice(0, 64)}": expected "all" or a comma list of ${DIAGNOSTIC_CHECKS.join(', ')}, gpu<N>`,
      );
    }
    checks.add(p as DiagnosticCheck);
    if (p === 'gpu') allGpus = true;
  }
  if (checks.size === 0) throw new DiagnosticParameterError('diagnostic test list is empty: expected "all" or a comma list');
  return { checks, gpus: allGpus ? null : gpus };
}

/** The per-step deadline: the `timeout` parameter (seconds) when given, else the option. */
function stepTimeout(params: Record<string, string>, fallback: number): number {
  const raw = params.timeout;
  if (raw === undefined || raw.trim() === '') return fallback;
  const s = Number(raw);
  if (!Number.isFinite(s) || s <= 0) throw new DiagnosticParameterError(`diagnostic timeout "${raw.slice(0, 32)}": expected seconds > 0`);
  return Math.min(MAX_STEP_TIMEOUT_MS, Math.max(100, Math.round(s * 1000)));
}

type Step<T> = { ok: true; value: T; ms: number } | { ok: false; timedOut: boolean; error: string; ms: number };

/** Run one backend step under a deadline. A hung call is abandoned (it cannot be cancelled). */
async function step<T>(what: string, fn: () => Promise<T>, ms: number): Promise<Step<T>> {
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
    timer.unref();
  });
  try {
    const work = Promise.resolve().then(fn);
    work.catch(() => undefined); // a late rejection after the deadline is not unhandled
    const r = await Promise.race([work.then((value) => ({ value })), deadline]);
    if (r === 'timeout') return { ok: false, timedOut: true, error: `${what} did not return within ${ms} ms`, ms: Date.now() - t0 };
    return { ok: true, value: r.value, ms: Date.now() - t0 };
  } catch (e) {
    return { ok: false, timedOut: false, error: `${what} failed: ${oneLine(e)}`, ms: Date.now() - t0 };
  } finally {
    clearTimeout(timer);
  }
}

function oneLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return (m.split('\n')[0] ?? m).slice(0, 300);
}

function clip(s: string): string {
  return s.length > MAX_MESSAGE ? `${s.slice(0, MAX_MESSAGE - 3)}...` : s;
}

const RANK: Record<CheckStatus, number> = { healthy: 0, unknown: 1, degraded: 2, unhealthy: 3 };
function worse(a: CheckStatus, b: CheckStatus): CheckStatus {
  return RANK[b] > RANK[a] ? b : a;
}
function sevStatus(s: Severity): CheckStatus {
  return s === 'critical' ? 'unhealthy' : s === 'warning' ? 'degraded' : 'healthy';
}

/** A plain string for a details map; null (unsupported) reads "unsupported". */
function str(v: number | boolean | string | null | undefined): string {
  if (v === null || v === undefined) return 'unsupported';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(1);
  return String(v);
}

const CLOCK_NAMES: Array<[number, string]> = [
  [CLOCK_REASON.GPU_IDLE, 'gpu_idle'],
  [0x2, 'applications_clocks_setting'],
  [0x4, 'sw_power_cap'],
  [CLOCK_REASON.HW_SLOWDOWN, 'hw_slowdown'],
  [0x10, 'sync_boost'],
  [CLOCK_REASON.SW_THERMAL_SLOWDOWN, 'sw_thermal_slowdown'],
  [CLOCK_REASON.HW_THERMAL_SLOWDOWN, 'hw_thermal_slowdown'],
  [CLOCK_REASON.HW_POWER_BRAKE_SLOWDOWN, 'hw_power_brake_slowdown'],
  [0x100, 'display_clock_setting'],
];

function clockNames(mask: number): string {
  const names = CLOCK_NAMES.filter(([bit]) => (mask & bit) !== 0).map(([, n]) => n);
  return names.length > 0 ? names.join(',') : 'none';
}

interface Finding {
  key: string;
  status: CheckStatus;
  message: string;
}

/** The details of one GPU's snapshot (plain strings; unsupported fields say so). */
function telemetryDetails(t: Telemetry): Record<string, string> {
  const nv = t.nvlinks;
  const down = nv?.filter((l) => !l.active).map((l) => l.link) ?? [];
  const nvErr = (nv ?? []).reduce((sum, l) => sum + (l.replayErrors ?? 0) + (l.recoveryErrors ?? 0) + (l.crcFlitErrors ?? 0) + (l.crcDataErrors ?? 0), 0);
  return {
    temperature_c: str(t.temperatureC),
    power_w: str(t.powerUsageW),
    power_limit_w: str(t.powerLimitW),
    gpu_util_percent: str(t.gpuUtilPercent),
    performance_state: t.performanceState === null ? 'unsupported' : `P${t.performanceState}`,
    clock_event_reasons: t.clockEventReasons === null ? 'unsupported' : `0x${t.clockEventReasons.toString(16)}`,
    clock_events: t.clockEventReasons === null ? 'unsupported' : clockNames(t.clockEventReasons),
    persistence_mode: str(t.persistenceMode),
    ecc_mode: t.eccModeCurrent === null ? 'unsupported' : t.eccModeCurrent ? 'enabled' : 'disabled',
    ecc_mode_pending: t.eccModePending === null ? 'unsupported' : t.eccModePending ? 'enabled' : 'disabled',
    ecc_corrected_volatile: str(t.eccVolatileCorrected),
    ecc_uncorrected_volatile: str(t.eccVolatileUncorrected),
    ecc_corrected_aggregate: str(t.eccAggregateCorrected),
    ecc_uncorrected_aggregate: str(t.eccAggregateUncorrected),
    retired_pages_sbe: str(t.retiredPagesSbe),
    retired_pages_dbe: str(t.retiredPagesDbe),
    retired_pages_pending: str(t.retiredPagesPending),
    remapped_rows_corrected: str(t.remappedRowsCorrected),
    remapped_rows_uncorrected: str(t.remappedRowsUncorrected),
    remapped_rows_pending: str(t.remappedRowsPending),
    remapped_rows_failure: str(t.remappedRowsFailure),
    pcie_link_gen: str(t.pcieLinkGenCurrent),
    pcie_link_gen_max: str(t.pcieLinkGenMax),
    pcie_link_width: str(t.pcieLinkWidthCurrent),
    pcie_link_width_max: str(t.pcieLinkWidthMax),
    pcie_replay_count: str(t.pcieReplayCounter),
    nvlink_links: nv === null ? 'unsupported' : String(nv.length),
    nvlink_down: nv === null ? 'unsupported' : down.length > 0 ? down.join(',') : 'none',
    nvlink_errors: nv === null ? 'unsupported' : String(nvErr),
  };
}

/** One-shot conditions the telemetry judge does not cover. */
function extraFindings(i: number, t: Telemetry): Finding[] {
  const out: Finding[] = [];
  if (t.eccModeCurrent === false) {
    out.push({ key: gpuKey(i, 'ecc_mode'), status: 'degraded', message: `GPU ${i}: ECC is disabled` });
  }
  if (t.eccModeCurrent !== null && t.eccModePending !== null && t.eccModeCurrent !== t.eccModePending) {
    out.push({
      key: gpuKey(i, 'ecc_mode_pending'),
      status: 'degraded',
      message: `GPU ${i}: ECC mode change pending (${t.eccModePending ? 'enable' : 'disable'}) until the next reset`,
    });
  }
  return out;
}

function shortSummary(i: number, t: Telemetry): string {
  const parts: string[] = [];
  if (t.temperatureC !== null) parts.push(`${Math.round(t.temperatureC)} C`);
  if (t.eccModeCurrent !== null) parts.push(`ECC ${t.eccModeCurrent ? 'on' : 'off'}`);
  if (t.pcieLinkGenCurrent !== null && t.pcieLinkWidthCurrent !== null) parts.push(`PCIe gen${t.pcieLinkGenCurrent} x${t.pcieLinkWidthCurrent}`);
  if (t.nvlinks !== null) parts.push(`${t.nvlinks.filter((l) => l.active).length}/${t.nvlinks.length} NVLinks up`);
  if (t.persistenceMode !== null) parts.push(`persistence ${t.persistenceMode ? 'on' : 'off'}`);
  return `GPU ${i} healthy${parts.length > 0 ? `: ${parts.join(', ')}` : ''}`;
}

function summarise(status: CheckStatus, findings: Finding[], okMessage: string): string {
  if (findings.length === 0) return okMessage;
  const worst = findings.filter((f) => f.status === status);
  const rest = findings.length - worst.length;
  return clip(`${worst.map((f) => f.message).join('; ')}${rest > 0 ? ` (+${rest} lesser finding${rest === 1 ? '' : 's'})` : ''}`);
}

/**
 * Run the sweep with the command's parameters. Never rejects: a bad parameter gives one
 * `diagnostic` result UNKNOWN with the reason; a hung or failing step gives UNKNOWN results.
 */
export async function runDiagnostics(opts: DiagnosticsOptions, params: Record<string, string> = {}): Promise<CheckResult[]> {
  let sel: DiagnosticSelection;
  let stepMs: number;
  try {
    sel = parseDiagnosticTests(params.test);
    stepMs = stepTimeout(params, opts.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS);
  } catch (e) {
    return [{ name: 'diagnostic', status: 'unknown', message: oneLine(e), details: { test: String(params.test ?? '').slice(0, 128) } }];
  }
  const config = telemetryConfig({ ...(opts.thresholds ?? {}), expectedGpuCount: null });
  const b = opts.backend;
  const results: CheckResult[] = [];
  const want = (c: DiagnosticCheck): boolean => sel.checks.has(c);
  const previous = (opts.previousDevices?.() ?? []).slice(0, MAX_GPUS);
  const expected = opts.expectedGpuCount ?? null;
  const sys = b.system();
  const sysDetails: Record<string, string> = {
    backend: b.kind,
    backend_reason: b.reason.slice(0, 256),
    driver_version: sys.driverVersion ?? 'unknown',
    nvml_version: sys.nvmlVersion ?? 'unknown',
    cuda_driver_version: sys.cudaDriverVersion ?? 'unknown',
  };

  const needDevices = want('nvml') || want('inventory') || want('gpu');
  const refresh = needDevices && b.kind !== 'none' ? await step('device enumeration (refreshDevices)', () => b.refreshDevices(), stepMs) : null;
  const needSnapshot = (want('nvml') || want('gpu')) && b.kind !== 'none';
  const snap = needSnapshot ? await step('telemetry snapshot', () => b.snapshot(), stepMs) : null;

  // nvml: the backend answers at all, and which driver it talks to.
  if (want('nvml')) {
    const details = { ...sysDetails };
    if (refresh) details.enumerate_ms = String(refresh.ms);
    if (snap) details.snapshot_ms = String(snap.ms);
    if (b.kind === 'none') {
      const why = opts.driverError ?? b.reason;
      results.push({ name: 'nvml', status: 'unhealthy', message: clip(`no usable NVML on this GPU host: ${why}`), details });
    } else {
      const failed = [refresh, snap].filter((s): s is Extract<Step<unknown>, { ok: false }> => s !== null && !s.ok);
      const hung = failed.filter((s) => s.timedOut);
      const hard = failed.filter((s) => !s.timedOut);
      const status: CheckStatus = hard.length > 0 ? 'unhealthy' : hung.length > 0 ? 'unknown' : 'healthy';
      const message =
        failed.length > 0
          ? clip(failed.map((s) => s.error).join('; '))
          : `${b.kind === 'fake' ? 'fake GPU backend' : 'NVML'} answers: driver ${sysDetails.driver_version}, NVML ${sysDetails.nvml_version}, CUDA ${sysDetails.cuda_driver_version}`;
      results.push({ name: 'nvml', status, message, details });
    }
  }

  const current: DeviceInfo[] | null = b.kind === 'none' ? [] : refresh?.ok ? refresh.value.slice(0, MAX_GPUS) : null;

  // inventory: count against the registered inventory and the instance type.
  if (want('inventory')) {
    const details: Record<string, string> = {
      previous_count: String(previous.length),
      expected_count: expected === null ? 'unknown' : String(expected),
    };
    if (current === null) {
      const err = refresh && !refresh.ok ? refresh.error : 'device enumeration did not run';
      results.push({ name: 'inventory', status: 'unknown', message: clip(`cannot re-enumerate GPUs: ${err}`), details });
    } else {
      const findings: Finding[] = [];
      const uuids = new Set(current.map((d) => d.uuid));
      const vanished = previous.filter((d) => d.uuid !== '' && !uuids.has(d.uuid));
      const lost = current.filter((d) => d.error?.code === 'NVML_ERROR_GPU_IS_LOST');
      const errored = current.filter((d) => d.error !== null && d.error.code !== 'NVML_ERROR_GPU_IS_LOST');
      details.count = String(current.length);
      details.lost =
        lost.length + vanished.length > 0
          ? [...vanished.map((d) => `gpu${d.index} (${d.uuid}) missing`), ...lost.map((d) => `gpu${d.index}`)].join(', ')
          : 'none';
      details.errored = errored.length > 0 ? errored.map((d) => `gpu${d.index}: ${d.error?.code}`).join(', ') : 'none';
      if (b.kind === 'none') {
        findings.push({ key: 'none', status: 'unhealthy', message: `no GPUs usable: ${opts.driverError ?? b.reason}` });
      }
      if (expected !== null && current.length < expected) {
        findings.push({ key: 'count', status: 'unhealthy', message: `${current.length} of ${expected} GPUs visible (instance type)` });
      } else if (current.length === 0 && b.kind !== 'none') {
        findings.push({ key: 'count', status: 'unhealthy', message: 'no GPUs visible' });
      }
      if (current.length < previous.length) {
        findings.push({ key: 'shrunk', status: 'unhealthy', message: `${current.length} GPUs now, ${previous.length} at registration` });
      }
      for (const d of vanished) findings.push({ key: `gone${d.index}`, status: 'unhealthy', message: `GPU ${d.index} (${d.uuid}) is no longer listed` });
      for (const d of lost) findings.push({ key: `lost${d.index}`, status: 'unhealthy', message: `GPU ${d.index} is lost (NVML_ERROR_GPU_IS_LOST)` });
      for (const d of errored) findings.push({ key: `err${d.index}`, status: 'degraded', message: `GPU ${d.index} cannot be identified: ${d.error?.code}` });
      const status = findings.reduce<CheckStatus>((s, f) => worse(s, f.status), 'healthy');
      const ok = `${current.length} GPU(s) visible${expected !== null ? `, ${expected} expected` : ''}${previous.length > 0 ? `, ${previous.length} at registration` : ''}`;
      results.push({ name: 'inventory', status, message: summarise(status, findings, ok), details });
    }
  }

  // gpu<N>: one fresh snapshot judged from a fresh state.
  if (want('gpu') && b.kind !== 'none') {
    const indexes = new Set<number>();
    for (const d of previous) indexes.add(d.index);
    for (const d of current ?? []) indexes.add(d.index);
    if (snap?.ok) for (const s of snap.value.slice(0, MAX_GPUS)) indexes.add(s.index);
    const selected = [...indexes].filter((i) => sel.gpus === null || sel.gpus.has(i)).sort((x, y) => x - y);
    if (sel.gpus !== null) for (const i of sel.gpus) if (!indexes.has(i)) selected.push(i);

    const info = new Map<number, DeviceInfo>();
    for (const d of previous) info.set(d.index, d);
    for (const d of current ?? []) info.set(d.index, d);

    let events: HealthEventInput[] = [];
    const byIndex = new Map<number, DeviceSnapshot>();
    if (snap?.ok) {
      const snaps = snap.value.slice(0, MAX_GPUS);
      for (const s of snaps) byIndex.set(s.index, s);
      // Fresh conditions; `known` seeded with the registered GPUs so one that vanished is judged lost.
      const state = emptyJudgeState();
      for (const d of previous) if (d.uuid) state.known[String(d.index)] = d.uuid;
      try {
        events = judgeSnapshot(state, snaps, config).events.filter((e) => e.fault === 'raise');
      } catch (e) {
        events = [];
        for (const i of selected) {
          results.push({ name: `gpu${i}`, status: 'unknown', message: clip(`telemetry judge failed: ${oneLine(e)}`) });
        }
        selected.length = 0;
      }
    }

    for (const i of selected) {
      const d = info.get(i);
      const s = byIndex.get(i);
      const details: Record<string, string> = { uuid: s?.uuid ?? d?.uuid ?? 'unknown' };
      if (d) {
        details.name = d.name;
        details.pci_bus_id = d.pciBusId;
      }
      if (snap === null || !snap.ok) {
        const why = snap && !snap.ok ? snap.error : 'snapshot did not run';
        results.push({ name: `gpu${i}`, status: 'unknown', message: clip(`GPU ${i}: no snapshot: ${why}`), details });
        continue;
      }
      const findings: Finding[] = events.filter((e) => e.gpuIndex === i).map((e) => ({ key: e.key ?? '', status: sevStatus(e.severity), message: e.message }));
      if (!s) {
        if (findings.length === 0) {
          findings.push({
            key: gpuKey(i, 'missing'),
            status: sel.gpus !== null && !info.has(i) ? 'unknown' : 'unhealthy',
            message: `GPU ${i} is not in the snapshot`,
          });
        }
      } else if (!s.ok) {
        details.nvml_error = s.error.code;
        details.nvml_function = s.error.fn || 'unknown';
      } else {
        Object.assign(details, telemetryDetails(s.telemetry));
        findings.push(...extraFindings(i, s.telemetry));
      }
      const status = findings.reduce<CheckStatus>((st, f) => worse(st, f.status), 'healthy');
      details.findings = findings.length > 0 ? findings.map((f) => f.key).join(',') : 'none';
      const faults = (opts.activeFaults?.() ?? []).filter((f) => f.gpuIndex === i);
      details.active_faults = String(faults.length);
      const ok = s?.ok ? shortSummary(i, s.telemetry) : `GPU ${i} healthy`;
      results.push({ name: `gpu${i}`, status, message: summarise(status, findings, ok), details });
    }
  }

  // active_faults: what the store holds as active (the periodic report's rule, plus "none").
  if (want('active_faults')) {
    const faults = [...(opts.activeFaults?.() ?? [])];
    const critical = faults.filter((f) => f.severity === 'critical');
    const warning = faults.filter((f) => f.severity === 'warning');
    const details: Record<string, string> = { count: String(faults.length), critical: String(critical.length), warning: String(warning.length) };
    for (const f of [...critical, ...warning].slice(0, 64)) details[`fault.${f.key}`] = `${f.severity}: ${f.message}`.slice(0, 512);
    if (critical.length + warning.length === 0) {
      results.push({ name: 'active_faults', status: 'healthy', message: 'no active faults', details });
    } else {
      const worst = critical.length > 0 ? critical : warning;
      results.push({
        name: 'active_faults',
        status: critical.length > 0 ? 'unhealthy' : 'degraded',
        message: clip(
          `${worst.length} active ${critical.length > 0 ? 'critical' : 'warning'} fault(s): ${worst
            .slice(0, 8)
            .map((f) => f.key)
            .join(', ')}${worst.length > 8 ? ', ...' : ''}`,
        ),
        details,
      });
    }
  }
  const at = Date.now();
  return results.map((r) => ({ ...r, timeMs: at }));
}

/** The provider AgentLink's `diagnostics` option takes. */
export function createDiagnostics(opts: DiagnosticsOptions): (params: Record<string, string>) => Promise<CheckResult[]> {
  return (params) => runDiagnostics(opts, params);
}
