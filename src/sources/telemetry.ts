/**
 * GPU telemetry judged against thresholds, with hysteresis, into raise/clear health events.
 *
 * `judgeSnapshot(prev, snapshot, config)` is pure: it returns the events and the next state.
 * Every judged condition has a stable key (gpu0/thermal, gpu0/clock/hw_slowdown, gpu2/nvlink/5,
 * node/gpu_count, ...). Entering a condition emits fault 'raise' (again when its severity
 * changes); leaving it emits fault 'clear' with severity 'info'. Thermal clears below the warning
 * threshold minus a margin; every other condition clears after N consecutive good samples.
 * Unsupported (null) fields are never faults. `TelemetrySampler` calls backend.snapshot() on an
 * interval, never overlapping samples.
 */
import { gpuKey, nodeKey, xidKey } from '../events/fault-key.js';
import type { HealthEventInput, HealthWatchSystem, NavarchEventType, RecommendedAction, Severity } from '../events/types.js';
import type { GpuBackend } from '../backends/types.js';
import type { DeviceSnapshot, NvmlErrorInfo, Telemetry } from '../nvml/types.js';
import { xidEventInput } from '../xid/catalog.js';
import { DEFAULT_FABRIC_BOOT_GRACE_MS, judgeFabric } from './fabric.js';

export interface TelemetryConfig {
  /** Sampling interval (ms). Default 10 000. */
  intervalMs: number;
  temperatureWarningC: number;
  temperatureCriticalC: number;
  /** Thermal faults clear (or drop from critical to warning) this many degrees below the threshold. */
  temperatureClearMarginC: number;
  /** Non-thermal faults clear after this many consecutive good samples. */
  clearAfterGoodSamples: number;
  /** Corrected ECC errors per minute that count as "rising fast". */
  eccSbeRatePerMinute: number;
  /** PCIe replays per minute. */
  pcieReplayRatePerMinute: number;
  /** NVLink replay+recovery+CRC errors per minute, per link. */
  nvlinkErrorRatePerMinute: number;
  /**
   * Clock-slowdown samples per minute, over `clockEventWindowMs`, at or above which a slowdown
   * reason is a fault (gpud's hw-slowdown component: 0.6 events/min over 10 min). One sample with
   * the reason bit set counts as one event.
   */
  clockEventRatePerMinute: number;
  /** The window the clock-slowdown rate is taken over (ms). Default 600 000 (10 min). */
  clockEventWindowMs: number;
  /** Power draw above the limit by more than this percentage. */
  powerOverLimitPercent: number;
  /** GPUs the node should have (from the instance type), null when unknown. */
  expectedGpuCount: number | null;
  /** Fabric registration not completed this long after boot is a fault (src/sources/fabric.ts). Default 5 min. */
  fabricBootGraceMs: number;
  /** When the host booted (ms since the epoch, src/host/boot-time.ts); null: counted from the first sample. */
  bootTimeMs: number | null;
}

export const DEFAULT_TELEMETRY_CONFIG: Readonly<TelemetryConfig> = Object.freeze({
  intervalMs: 10_000,
  temperatureWarningC: 85,
  temperatureCriticalC: 95,
  temperatureClearMarginC: 5,
  clearAfterGoodSamples: 3,
  eccSbeRatePerMinute: 100,
  pcieReplayRatePerMinute: 100,
  nvlinkErrorRatePerMinute: 60,
  clockEventRatePerMinute: 0.6,
  clockEventWindowMs: 600_000,
  powerOverLimitPercent: 10,
  expectedGpuCount: null,
  fabricBootGraceMs: DEFAULT_FABRIC_BOOT_GRACE_MS,
  bootTimeMs: null,
});

/** Merge and validate a partial config; throws a one-line error on nonsense. */
export function telemetryConfig(partial: Partial<TelemetryConfig> = {}): TelemetryConfig {
  const c: TelemetryConfig = { ...DEFAULT_TELEMETRY_CONFIG, ...partial };
  const pos = (k: keyof TelemetryConfig, min: number): void => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new Error(`telemetry config: ${k} must be a number >= ${min}, got ${String(v)}`);
  };
  pos('intervalMs', 100);
  pos('temperatureWarningC', 0);
  pos('temperatureCriticalC', 0);
  pos('temperatureClearMarginC', 0);
  pos('clearAfterGoodSamples', 1);
  pos('eccSbeRatePerMinute', 0);
  pos('pcieReplayRatePerMinute', 0);
  pos('nvlinkErrorRatePerMinute', 0);
  pos('powerOverLimitPercent', 0);
  pos('clockEventWindowMs', 1000);
  pos('fabricBootGraceMs', 0);
  if (c.bootTimeMs !== null && (typeof c.bootTimeMs !== 'number' || !Number.isFinite(c.bootTimeMs))) throw new Error(`telemetry config: bootTimeMs must be a number or null, got ${String(c.bootTimeMs)}`);
  if (!Number.isFinite(c.clockEventRatePerMinute) || c.clockEventRatePerMinute <= 0) {
    throw new Error(`telemetry config: clockEventRatePerMinute must be a number > 0, got ${String(c.clockEventRatePerMinute)}`);
  }
  if (c.temperatureCriticalC < c.temperatureWarningC) throw new Error('telemetry config: temperatureCriticalC is below temperatureWarningC');
  if (c.expectedGpuCount !== null && (!Number.isSafeInteger(c.expectedGpuCount) || c.expectedGpuCount < 0)) {
    throw new Error(`telemetry config: expectedGpuCount must be a whole number >= 0 or null, got ${String(c.expectedGpuCount)}`);
  }
  return c;
}

/** Clock event reason bits judged here (nvmlClocksEventReason*). */
export const CLOCK_REASON = {
  GPU_IDLE: 0x1,
  HW_SLOWDOWN: 0x8,
  SW_THERMAL_SLOWDOWN: 0x20,
  HW_THERMAL_SLOWDOWN: 0x40,
  HW_POWER_BRAKE_SLOWDOWN: 0x80,
} as const;

/**
 * Clock slowdowns are rate-based: a warning while the reason was set in at least
 * clockEventRatePerMinute x window samples of the last clockEventWindowMs. A slowed GPU still
 * serves work (gpud: unhealthy at 0.6 events/min over 10 min; DCGM: WARN), so never critical.
 */
const CLOCK_CONDITIONS: Array<{ bit: number; name: string; label: string; type: NavarchEventType; system: HealthWatchSystem }> = [
  { bit: CLOCK_REASON.HW_SLOWDOWN, name: 'hw_slowdown', label: 'hardware slowdown', type: 'thermal', system: 'THERMAL' },
  { bit: CLOCK_REASON.HW_THERMAL_SLOWDOWN, name: 'hw_thermal_slowdown', label: 'hardware thermal slowdown', type: 'thermal', system: 'THERMAL' },
  { bit: CLOCK_REASON.HW_POWER_BRAKE_SLOWDOWN, name: 'hw_power_brake', label: 'hardware power-brake slowdown', type: 'power', system: 'POWER' },
  { bit: CLOCK_REASON.SW_THERMAL_SLOWDOWN, name: 'sw_thermal_slowdown', label: 'software thermal slowdown', type: 'thermal', system: 'THERMAL' },
];

/** Samples needed in the window: ceil(rate x window minutes), at least 1. */
export function clockEventsNeeded(c: Pick<TelemetryConfig, 'clockEventRatePerMinute' | 'clockEventWindowMs'>): number {
  return Math.max(1, Math.ceil(c.clockEventRatePerMinute * (c.clockEventWindowMs / 60_000) - 1e-9));
}

interface CondState {
  severity: Severity;
  good: number;
  /** Raise template, reused for the clear (type/system/gpu/uuid). */
  type: NavarchEventType;
  system: HealthWatchSystem;
  gpuIndex: number;
  gpuUuid: string;
}

interface DevPrev {
  uuid: string;
  takenAtMs: number;
  eccVolCorr: number | null;
  eccAggCorr: number | null;
  eccVolUnc: number | null;
  eccAggUnc: number | null;
  pcieReplay: number | null;
  /** link -> sum of error counters */
  nvlinkErrors: Record<string, number>;
}

export interface JudgeState {
  /** Active conditions by key. */
  conditions: Record<string, CondState>;
  /** Last good sample per device index (counter baselines). */
  devices: Record<string, DevPrev>;
  /** Every device seen so far (index -> uuid), to notice one that disappears. */
  known: Record<string, string>;
  /**
   * Clock-slowdown sample times by key, newest last, inside the window; at most
   * clockEventsNeeded() entries kept (enough to decide), so bounded whatever the interval.
   */
  clockEvents: Record<string, number[]>;
  /** Time of the first sample judged: the boot reference when bootTimeMs is unknown. */
  firstSampleMs?: number;
}

export function emptyJudgeState(): JudgeState {
  return { conditions: {}, devices: {}, known: {}, clockEvents: {} };
}

/** Navarch float style (Go %f): six decimals. */
export function f6(n: number): string {
  return n.toFixed(6);
}

function int(n: number): string {
  return String(Math.trunc(n));
}

type RaisedEvent = Omit<HealthEventInput, 'fault' | 'severity' | 'timeMs' | 'source' | 'key'> & { timeMs?: number };

type Verdict =
  | { bad: true; severity: Severity; raise: () => RaisedEvent }
  | { bad: false; immediate?: boolean; clearMessage: () => string; metrics?: () => Record<string, string> }
  | null;

/** Raise/clear bookkeeping shared by every condition. */
class Judge {
  readonly events: HealthEventInput[] = [];
  constructor(
    readonly state: JudgeState,
    readonly config: TelemetryConfig,
    readonly nowMs: number,
  ) {}

  apply(key: string, verdict: Verdict): void {
    if (verdict === null) return;
    const cur = this.state.conditions[key];
    if (verdict.bad) {
      if (!cur || cur.severity !== verdict.severity) {
        const r = verdict.raise();
        this.events.push({
          ...r,
          timeMs: r.timeMs ?? this.nowMs,
          severity: verdict.severity,
          source: 'telemetry',
          key,
          fault: 'raise',
        });
        this.state.conditions[key] = { severity: verdict.severity, good: 0, type: r.type, system: r.system, gpuIndex: r.gpuIndex, gpuUuid: r.gpuUuid };
      } else {
        cur.good = 0;
      }
      return;
    }
    if (!cur) return;
    cur.good += 1;
    if (verdict.immediate || cur.good >= this.config.clearAfterGoodSamples) {
      this.events.push({
        type: cur.type,
        system: cur.system,
        gpuIndex: cur.gpuIndex,
        gpuUuid: cur.gpuUuid,
        metrics: verdict.metrics?.() ?? {},
        message: verdict.clearMessage(),
        timeMs: this.nowMs,
        severity: 'info',
        action: 'none',
        citation: 'navarch-agent telemetry: condition cleared',
        source: 'telemetry',
        key,
        fault: 'clear',
      });
      delete this.state.conditions[key];
    }
  }

  /**
   * A counter-rate rule: a warning while the counter grew by `inc` at `threshold` per minute or
   * faster over `elapsedMs`, `cleared()` otherwise. False (nothing judged) without a previous sample.
   */
  rate(key: string, inc: number | null, elapsedMs: number | undefined, threshold: number, raise: (perMin: number) => RaisedEvent, cleared: () => Verdict): boolean {
    if (inc === null || elapsedMs === undefined) return false;
    const perMin = perMinute(inc, elapsedMs);
    this.apply(key, inc > 0 && perMin >= threshold ? { bad: true, severity: 'warning', raise: () => raise(perMin) } : cleared());
    return true;
  }

  active(key: string): CondState | undefined {
    return this.state.conditions[key];
  }
}

const good = (clearMessage: string, metrics?: Record<string, string>, immediate = false): Verdict => ({
  bad: false,
  immediate,
  clearMessage: () => clearMessage,
  ...(metrics ? { metrics: () => metrics } : {}),
});

function rawEvent(
  gpuIndex: number,
  gpuUuid: string,
  type: NavarchEventType,
  system: HealthWatchSystem,
  action: RecommendedAction,
  message: string,
  metrics: Record<string, string>,
  citation: string,
) {
  return { type, system, gpuIndex, gpuUuid, action, message, metrics, citation };
}

function perMinute(delta: number, elapsedMs: number): number {
  return (delta * 60_000) / Math.max(elapsedMs, 1000);
}

/** Positive increase of a counter since the previous sample; null when unknown or reset. */
function increase(prev: number | null | undefined, cur: number | null): number | null {
  if (prev === null || prev === undefined || cur === null) return null;
  return cur >= prev ? cur - prev : null;
}

function lostVerdict(i: number, uuid: string, message: string, nvmlError: string): Verdict {
  return {
    bad: true,
    severity: 'critical',
    raise: () => {
      const x = xidEventInput({ code: 79, gpuIndex: i, gpuUuid: uuid, timeMs: Date.now(), source: 'telemetry', message });
      if (nvmlError) x.metrics.nvml_error = nvmlError;
      return { type: x.type, system: x.system, gpuIndex: x.gpuIndex, gpuUuid: x.gpuUuid, action: x.action, message: x.message, metrics: x.metrics, citation: x.citation };
    },
  };
}

function judgeDeviceError(j: Judge, s: Extract<DeviceSnapshot, { ok: false }>): void {
  const e: NvmlErrorInfo = s.error;
  const lostKey = xidKey(s.index, 79);
  const errKey = gpuKey(s.index, 'driver_error');
  if (e.code === 'NVML_ERROR_GPU_IS_LOST') {
    j.apply(lostKey, lostVerdict(s.index, s.uuid, `telemetry: ${e.fn || 'NVML'} returned NVML_ERROR_GPU_IS_LOST`, e.code));
    return;
  }
  j.apply(errKey, {
    bad: true,
    severity: 'critical',
    raise: () =>
      rawEvent(
        s.index,
        s.uuid,
        'driver_error',
        'DRIVER',
        'reset_gpu',
        e.code === 'NVML_CALL_TIMEOUT'
          ? `GPU ${s.index}: NVML call ${e.fn || '(unknown)'} did not return in time; the device is suspect`
          : `GPU ${s.index}: telemetry failed: ${e.code}${e.fn ? ` (${e.fn})` : ''}`,
        { nvml_error: e.code, nvml_function: e.fn, nvml_status: String(e.status) },
        'navarch-agent telemetry: NVML call failed or hung on this GPU',
      ),
  });
}

function judgeTelemetry(j: Judge, s: Extract<DeviceSnapshot, { ok: true }>, prev: DevPrev | undefined): void {
  const c = j.config;
  const t: Telemetry = s.telemetry;
  const i = s.index;
  const u = s.uuid;
  const temp = t.temperatureC;
  /** Since the previous sample, for the counter-rate rules; undefined on the first sample. */
  const elapsedMs = prev ? s.takenAtMs - prev.takenAtMs : undefined;

  // Thermal, with hysteresis on both thresholds.
  {
    const key = gpuKey(i, 'thermal');
    const act = j.active(key);
    let level: Severity | null = null;
    if (temp !== null) {
      if (temp >= c.temperatureCriticalC || (act?.severity === 'critical' && temp >= c.temperatureCriticalC - c.temperatureClearMarginC)) level = 'critical';
      else if (temp >= c.temperatureWarningC || (act && temp >= c.temperatureWarningC - c.temperatureClearMarginC)) level = 'warning';
    }
    if (level) {
      const sev = level;
      const threshold = sev === 'critical' ? c.temperatureCriticalC : c.temperatureWarningC;
      j.apply(key, {
        bad: true,
        severity: sev,
        raise: () =>
          rawEvent(i, u, 'thermal', 'THERMAL', 'none', `GPU ${i} temperature ${int(temp as number)} C (${sev} threshold ${threshold} C)`, { temperature: int(temp as number), threshold_c: int(threshold) }, `navarch-agent thresholds: warning ${c.temperatureWarningC} C, critical ${c.temperatureCriticalC} C (Navarch policy: degraded >= 85, unhealthy >= 95)`),
      });
    } else {
      j.apply(
        key,
        temp === null
          ? good(`GPU ${i} temperature no longer reported`)
          : good(`GPU ${i} temperature back to ${int(temp)} C`, { temperature: int(temp) }, true),
      );
    }
  }

  // Clock event reasons, rate-based over a window.
  const reasons = t.clockEventReasons;
  const needed = clockEventsNeeded(c);
  const windowMin = c.clockEventWindowMs / 60_000;
  for (const cc of CLOCK_CONDITIONS) {
    const key = gpuKey(i, 'clock', cc.name);
    const set = reasons !== null && (reasons & cc.bit) !== 0;
    const times = (j.state.clockEvents[key] ?? []).filter((at) => at > s.takenAtMs - c.clockEventWindowMs && at <= s.takenAtMs);
    if (set) times.push(s.takenAtMs);
    while (times.length > needed) times.shift();
    if (times.length > 0) j.state.clockEvents[key] = times;
    else delete j.state.clockEvents[key];
    if (set && times.length >= needed) {
      const perMin = times.length / windowMin;
      const metrics: Record<string, string> = { clock_event_reasons: int(reasons), clock_events_in_window: int(times.length), clock_events_per_minute: f6(perMin), window_seconds: int(c.clockEventWindowMs / 1000) };
      if (temp !== null) metrics.temperature = int(temp);
      if (t.powerUsageW !== null) metrics.power_watts = f6(t.powerUsageW);
      j.apply(key, {
        bad: true,
        severity: 'warning',
        raise: () =>
          rawEvent(i, u, cc.type, cc.system, 'none', `GPU ${i} clocks reduced: ${cc.label} in ${times.length} samples of the last ${windowMin} min (reasons 0x${(reasons as number).toString(16)})`, metrics, `NVML clock event reason 0x${cc.bit.toString(16)}; at >= ${c.clockEventRatePerMinute} events/min over ${windowMin} min (gpud hw-slowdown: unhealthy at 0.6/min over 10 min; DCGM: WARN); a slowed GPU still serves work`),
      });
    } else {
      j.apply(key, good(`GPU ${i} ${cc.label} below ${c.clockEventRatePerMinute} events/min`));
    }
  }

  // Power above the limit.
  {
    const key = gpuKey(i, 'power');
    const p = t.powerUsageW;
    const lim = t.powerLimitW;
    if (p !== null && lim !== null && lim > 0 && p > lim * (1 + c.powerOverLimitPercent / 100)) {
      j.apply(key, {
        bad: true,
        severity: 'warning',
        raise: () => rawEvent(i, u, 'power', 'POWER', 'none', `GPU ${i} draws ${p.toFixed(1)} W, above its ${lim.toFixed(0)} W limit`, { power_watts: f6(p), power_limit_watts: f6(lim) }, `navarch-agent threshold: power above limit + ${c.powerOverLimitPercent}%`),
      });
    } else {
      j.apply(key, good(`GPU ${i} power back within its limit`, p !== null ? { power_watts: f6(p) } : undefined));
    }
  }

  // ECC: uncorrected errors since the last reset, or a rising aggregate count.
  {
    const key = gpuKey(i, 'ecc_dbe');
    const volInc = increase(prev?.eccVolUnc, t.eccVolatileUncorrected);
    const aggInc = increase(prev?.eccAggUnc, t.eccAggregateUncorrected);
    const newDbe = Math.max(volInc ?? 0, aggInc ?? 0);
    const pendingVol = (t.eccVolatileUncorrected ?? 0) > 0;
    if (newDbe > 0 || pendingVol) {
      const count = t.eccVolatileUncorrected !== null && t.eccVolatileUncorrected > 0 ? t.eccVolatileUncorrected : newDbe;
      const metrics: Record<string, string> = { ecc_dbe_count: int(count) };
      if (t.eccAggregateUncorrected !== null) metrics.ecc_dbe_aggregate = int(t.eccAggregateUncorrected);
      j.apply(key, {
        bad: true,
        severity: 'critical',
        raise: () => rawEvent(i, u, 'ecc_dbe', 'MEM', 'reset_gpu', `GPU ${i}: ${int(count)} uncorrectable ECC error${count === 1 ? '' : 's'}`, metrics, 'NVML ECC counters (uncorrected); NVIDIA XID 48 workflow: reset the GPU'),
      });
    } else {
      j.apply(key, good(`GPU ${i}: no uncorrectable ECC errors since the last GPU reset`, { ecc_dbe_count: '0' }));
    }
  }
  {
    const key = gpuKey(i, 'ecc_sbe_rate');
    const inc = increase(prev?.eccVolCorr, t.eccVolatileCorrected) ?? increase(prev?.eccAggCorr, t.eccAggregateCorrected);
    const judged = j.rate(
      key,
      inc,
      elapsedMs,
      c.eccSbeRatePerMinute,
      (rate) => rawEvent(i, u, 'ecc_sbe', 'MEM', 'none', `GPU ${i}: corrected ECC errors rising fast (${rate.toFixed(0)}/min)`, { ecc_sbe_count: int(inc as number), ecc_sbe_per_minute: f6(rate) }, `navarch-agent threshold: ${c.eccSbeRatePerMinute} corrected ECC errors per minute`),
      () => good(`GPU ${i}: corrected ECC error rate back to normal`),
    );
    if (!judged && t.eccVolatileCorrected === null && t.eccAggregateCorrected === null) {
      j.apply(key, good(`GPU ${i}: ECC counters no longer reported`));
    }
  }

  // Page retirement (pre-Ampere) and row remapping (Ampere+).
  {
    const key = gpuKey(i, 'retired_pages', 'pending');
    if (t.retiredPagesPending === true) {
      const metrics: Record<string, string> = {};
      if (t.retiredPagesSbe !== null) metrics.retired_pages_sbe = int(t.retiredPagesSbe);
      if (t.retiredPagesDbe !== null) metrics.retired_pages_dbe = int(t.retiredPagesDbe);
      j.apply(key, { bad: true, severity: 'warning', raise: () => rawEvent(i, u, 'memory', 'MEM', 'reboot', `GPU ${i}: retired pages pending (a reboot activates the retirement)`, metrics, 'NVML nvmlDeviceGetRetiredPagesPendingStatus') });
    } else {
      j.apply(key, good(`GPU ${i}: no retired pages pending`));
    }
  }
  {
    const rm = (k: 'pending' | 'failure', on: boolean | null, severity: Severity, action: RecommendedAction, text: string): void => {
      const key = gpuKey(i, 'remapped_rows', k);
      if (on === true) {
        const metrics: Record<string, string> = {};
        if (t.remappedRowsCorrected !== null) metrics.remapped_rows_corrected = int(t.remappedRowsCorrected);
        if (t.remappedRowsUncorrected !== null) metrics.remapped_rows_uncorrected = int(t.remappedRowsUncorrected);
        j.apply(key, { bad: true, severity, raise: () => rawEvent(i, u, 'memory', 'MEM', action, `GPU ${i}: ${text}`, metrics, 'NVML nvmlDeviceGetRemappedRows') });
      } else {
        j.apply(key, good(`GPU ${i}: row remapping ${k} cleared`));
      }
    };
    rm('pending', t.remappedRowsPending, 'warning', 'reset_gpu', 'row remapping pending (a GPU reset activates it)');
    rm('failure', t.remappedRowsFailure, 'critical', 'replace', 'row remapping failed (no spare rows left)');
  }

  // PCIe replays (rate) and link degradation.
  {
    const key = gpuKey(i, 'pcie', 'replay');
    const judged = j.rate(
      key,
      increase(prev?.pcieReplay, t.pcieReplayCounter),
      elapsedMs,
      c.pcieReplayRatePerMinute,
      (rate) => rawEvent(i, u, 'pcie', 'PCIE', 'none', `GPU ${i}: PCIe replays at ${rate.toFixed(0)}/min`, { pcie_replay_count: int(t.pcieReplayCounter as number), pcie_replays_per_minute: f6(rate) }, `navarch-agent threshold: ${c.pcieReplayRatePerMinute} PCIe replays per minute`),
      () => good(`GPU ${i}: PCIe replay rate back to normal`),
    );
    if (!judged && t.pcieReplayCounter === null) {
      j.apply(key, good(`GPU ${i}: PCIe replay counter no longer reported`));
    }
  }
  {
    const key = gpuKey(i, 'pcie', 'link_width');
    const cur = t.pcieLinkWidthCurrent;
    const max = t.pcieLinkWidthMax;
    if (cur !== null && max !== null && cur > 0 && cur < max) {
      j.apply(key, { bad: true, severity: 'warning', raise: () => rawEvent(i, u, 'pcie', 'PCIE', 'reboot', `GPU ${i}: PCIe link x${cur}, below its x${max} maximum`, { pcie_link_width: int(cur), pcie_link_width_max: int(max) }, 'NVML PCIe link width (current below max)') });
    } else {
      j.apply(key, good(`GPU ${i}: PCIe link width back to its maximum`));
    }
  }
  {
    // Generation drops at idle for power saving; only a busy GPU below its max generation is a fault.
    const key = gpuKey(i, 'pcie', 'link_gen');
    const cur = t.pcieLinkGenCurrent;
    const max = t.pcieLinkGenMax;
    const idleBit = reasons !== null && (reasons & CLOCK_REASON.GPU_IDLE) !== 0;
    const busy = !idleBit && ((t.gpuUtilPercent !== null && t.gpuUtilPercent > 0) || (t.performanceState !== null && t.performanceState <= 2));
    if (cur !== null && max !== null && cur > 0 && cur < max && busy) {
      j.apply(key, { bad: true, severity: 'warning', raise: () => rawEvent(i, u, 'pcie', 'PCIE', 'reboot', `GPU ${i}: PCIe gen${cur} while busy, below its gen${max} maximum`, { pcie_link_gen: int(cur), pcie_link_gen_max: int(max) }, 'NVML PCIe link generation (current below max while not idle)') });
    } else {
      j.apply(key, good(`GPU ${i}: PCIe link generation back to its maximum (or GPU idle)`));
    }
  }

  // NVLink: links down, error counters rising.
  if (t.nvlinks !== null) {
    for (const l of t.nvlinks) {
      const key = gpuKey(i, 'nvlink', l.link);
      if (!l.active) {
        j.apply(key, { bad: true, severity: 'critical', raise: () => rawEvent(i, u, 'nvlink', 'NVLINK', 'reset_gpu', `GPU ${i}: NVLink ${l.link} is down`, { link_id: int(l.link) }, 'NVML nvmlDeviceGetNvLinkState') });
      } else {
        j.apply(key, good(`GPU ${i}: NVLink ${l.link} is up`, { link_id: int(l.link) }));
      }
      const ekey = gpuKey(i, 'nvlink', l.link, 'errors');
      const parts = [l.replayErrors, l.recoveryErrors, l.crcFlitErrors, l.crcDataErrors].filter((v): v is number => v !== null);
      const sum = parts.length > 0 ? parts.reduce((a, b) => a + b, 0) : null;
      j.rate(
        ekey,
        increase(prev?.nvlinkErrors[String(l.link)], sum),
        elapsedMs,
        c.nvlinkErrorRatePerMinute,
        (rate) => rawEvent(i, u, 'nvlink', 'NVLINK', 'none', `GPU ${i}: NVLink ${l.link} errors rising (${rate.toFixed(0)}/min)`, { link_id: int(l.link), nvlink_errors: int(sum as number), nvlink_errors_per_minute: f6(rate) }, `navarch-agent threshold: ${c.nvlinkErrorRatePerMinute} NVLink errors per minute per link`),
        () => good(`GPU ${i}: NVLink ${l.link} error rate back to normal`, { link_id: int(l.link) }),
      );
    }
  }

  // Fabric health (NVSwitch systems): fabric.ts decides, the judge keeps the hysteresis.
  {
    const sinceBootMs = s.takenAtMs - (c.bootTimeMs ?? j.state.firstSampleMs ?? s.takenAtMs);
    for (const f of judgeFabric(i, t.fabric, sinceBootMs, c.fabricBootGraceMs)) {
      j.apply(
        gpuKey(i, 'fabric', f.name),
        f.bad ? { bad: true, severity: f.severity, raise: () => rawEvent(i, u, 'nvlink', 'NVSWITCH', f.action, f.message, f.metrics, f.citation) } : good(f.message, f.metrics),
      );
    }
  }

  // Persistence mode.
  {
    const key = gpuKey(i, 'persistence_mode');
    if (t.persistenceMode === false) {
      j.apply(key, { bad: true, severity: 'warning', raise: () => rawEvent(i, u, 'driver_error', 'DRIVER', 'none', `GPU ${i}: persistence mode is off (driver state is torn down between clients)`, { persistence_mode: 'false' }, 'NVIDIA recommends persistence mode (nvidia-persistenced) on compute nodes') });
    } else {
      j.apply(key, good(`GPU ${i}: persistence mode on`));
    }
  }
}

function prevOf(s: Extract<DeviceSnapshot, { ok: true }>): DevPrev {
  const t = s.telemetry;
  const nvlinkErrors: Record<string, number> = {};
  for (const l of t.nvlinks ?? []) {
    const parts = [l.replayErrors, l.recoveryErrors, l.crcFlitErrors, l.crcDataErrors].filter((v): v is number => v !== null);
    if (parts.length > 0) nvlinkErrors[String(l.link)] = parts.reduce((a, b) => a + b, 0);
  }
  return {
    uuid: s.uuid,
    takenAtMs: s.takenAtMs,
    eccVolCorr: t.eccVolatileCorrected,
    eccAggCorr: t.eccAggregateCorrected,
    eccVolUnc: t.eccVolatileUncorrected,
    eccAggUnc: t.eccAggregateUncorrected,
    pcieReplay: t.pcieReplayCounter,
    nvlinkErrors,
  };
}

/**
 * Judge one snapshot of every device. Pure: `prev` is not modified. `nowMs` stamps node-level
 * events (default: the newest takenAtMs in the snapshot, else Date.now()).
 */
export function judgeSnapshot(
  prev: JudgeState | null | undefined,
  snapshot: readonly DeviceSnapshot[],
  config: TelemetryConfig = DEFAULT_TELEMETRY_CONFIG,
  nowMs?: number,
): { events: HealthEventInput[]; state: JudgeState } {
  const state: JudgeState = prev ? structuredClone(prev) : emptyJudgeState();
  state.clockEvents ??= {};
  const now = nowMs ?? (snapshot.length > 0 ? Math.max(...snapshot.map((s) => s.takenAtMs)) : Date.now());
  state.firstSampleMs ??= now;
  const j = new Judge(state, config, now);
  const present = new Set<number>();

  for (const s of snapshot) {
    present.add(s.index);
    const idx = String(s.index);
    const known = state.known[idx];
    if (known !== undefined && known !== s.uuid) {
      // A different GPU at this index (re-enumeration): counter baselines do not carry over.
      delete state.devices[idx];
    }
    state.known[idx] = s.uuid;
    if (!s.ok) {
      judgeDeviceError(j, s);
      continue;
    }
    j.apply(xidKey(s.index, 79), good(`GPU ${s.index} answers again`));
    j.apply(gpuKey(s.index, 'driver_error'), good(`GPU ${s.index} NVML calls succeed again`));
    const devPrev = state.devices[idx];
    judgeTelemetry(j, s, devPrev);
    state.devices[idx] = prevOf(s);
  }

  // A GPU seen before that is no longer listed at all: fallen off the bus.
  for (const [idx, uuid] of Object.entries(state.known)) {
    const i = Number(idx);
    if (present.has(i)) continue;
    j.apply(xidKey(i, 79), lostVerdict(i, uuid, `GPU ${i} (${uuid}) disappeared from the device list`, ''));
  }

  // GPU count against the instance type.
  if (config.expectedGpuCount !== null) {
    const key = nodeKey('gpu_count');
    const n = snapshot.length;
    const exp = config.expectedGpuCount;
    if (n < exp) {
      j.apply(key, {
        bad: true,
        severity: 'critical',
        raise: () => rawEvent(-1, '', 'driver_error', 'DRIVER', 'reboot', `${n} of ${exp} GPUs visible`, { gpu_count: int(n), expected_gpu_count: int(exp) }, 'navarch-agent: GPU count below what the instance type provides'),
      });
    } else {
      j.apply(key, good(`all ${exp} GPUs visible`, { gpu_count: int(n), expected_gpu_count: int(exp) }, true));
    }
  }

  // Stamp node-level events with `now` (device events take the snapshot time).
  const byIndex = new Map(snapshot.map((s) => [s.index, s.takenAtMs]));
  for (const e of j.events) {
    const t = byIndex.get(e.gpuIndex);
    e.timeMs = t ?? now;
  }
  return { events: j.events, state };
}

export interface SamplerOptions {
  backend: Pick<GpuBackend, 'snapshot'>;
  config?: Partial<TelemetryConfig>;
  onEvents: (events: HealthEventInput[]) => void | Promise<void>;
  /** Called with each snapshot (for heartbeat metrics / the local API). */
  onSnapshot?: (snapshot: DeviceSnapshot[]) => void;
  /** A failed sample (the backend threw). Sampling continues. */
  onError?: (err: Error) => void;
  /** Keep the event loop alive (default false). */
  ref?: boolean;
}

/** Samples on an interval (the daemon's telemetry loop); the next sample is scheduled only after the previous one finished. */
export class TelemetrySampler {
  readonly config: TelemetryConfig;
  private state: JudgeState = emptyJudgeState();
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private inFlight: Promise<void> | null = null;
  private samples = 0;
  private last: DeviceSnapshot[] | null = null;
  /** Keys to forget before the next judgement (forget()). */
  private readonly forgotten = new Set<string>();

  constructor(private readonly opts: SamplerOptions) {
    this.config = telemetryConfig(opts.config);
  }

  /** Samples taken so far. */
  get sampleCount(): number {
    return this.samples;
  }

  get lastSnapshot(): DeviceSnapshot[] | null {
    return this.last;
  }

  /** Current judge state (a copy), e.g. for the local status API. */
  judgeState(): JudgeState {
    return structuredClone(this.state);
  }

  /** Start sampling: the first sample is taken at once (the promise settles after it), then one per interval. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.sampleNow();
    this.schedule(this.config.intervalMs);
  }

  private schedule(ms: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.sampleNow().finally(() => this.schedule(this.config.intervalMs));
    }, ms);
    if (!this.opts.ref) this.timer.unref();
  }

  /** Take a sample now, e.g. right after a fault injection; joins the sample in flight if there is one. Never rejects. */
  sampleNow(): Promise<void> {
    if (!this.inFlight) {
      this.inFlight = this.tick().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  private async tick(): Promise<void> {
    try {
      await this.sampleOnce();
    } catch (err) {
      this.opts.onError?.(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * Forget the condition under `key` (an operator cleared its fault): the next sample judges it
   * afresh, so a condition that is still there is raised again.
   */
  forget(key: string): void {
    this.forgotten.add(key);
  }

  /** Take and judge one sample now (callers must not overlap it with a running sampler). */
  async sampleOnce(): Promise<HealthEventInput[]> {
    const snap = await this.opts.backend.snapshot();
    for (const key of this.forgotten) delete this.state.conditions[key];
    this.forgotten.clear();
    this.samples++;
    this.last = snap;
    this.opts.onSnapshot?.(snap);
    const { events, state } = judgeSnapshot(this.state, snap, this.config);
    this.state = state;
    if (events.length > 0) await this.opts.onEvents(events);
    return events;
  }

  /** Stop; waits for a sample in flight. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.inFlight) await this.inFlight.catch(() => {});
  }
}
