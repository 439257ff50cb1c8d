/**
 * The telemetry rules as a table: one row per fault class judged from a GPU's sample. A row has
 * its class (the key's path, src/events/fault-key.ts), the event type and system, the severity,
 * action and citation it raises with, and `judge`: the condition over the sample, which returns
 * for each key it decides a finding (bad, with message and metrics; a row may override severity,
 * action or citation per finding) or a good outcome (the clear message; `immediate` clears at
 * once, otherwise after clearAfterGoodSamples good samples), or nothing (not judged this sample).
 * `judgeSnapshot` (src/sources/telemetry.ts) runs the rows in order for each GPU and keeps the
 * raise/clear bookkeeping (hysteresis) in one place.
 */
import type { HealthWatchSystem, NavarchEventType, RecommendedAction, Severity } from '../events/types.js';
import type { DeviceSnapshot, Telemetry } from '../nvml/types.js';
import { gpuKey } from '../events/fault-key.js';
import { judgeFabric } from './fabric.js';
import type { CondState, DevPrev, JudgeState, TelemetryConfig } from './telemetry.js';

/** Clock event reason bits judged here (nvmlClocksEventReason*). */
export const CLOCK_REASON = {
  GPU_IDLE: 0x1,
  HW_SLOWDOWN: 0x8,
  SW_THERMAL_SLOWDOWN: 0x20,
  HW_THERMAL_SLOWDOWN: 0x40,
  HW_POWER_BRAKE_SLOWDOWN: 0x80,
} as const;

/** Navarch float style (Go %f): six decimals. */
export function f6(n: number): string {
  return n.toFixed(6);
}

export function int(n: number): string {
  return String(Math.trunc(n));
}

export function perMinute(delta: number, elapsedMs: number): number {
  return (delta * 60_000) / Math.max(elapsedMs, 1000);
}

/** Positive increase of a counter since the previous sample; null when unknown or reset. */
export function increase(prev: number | null | undefined, cur: number | null): number | null {
  if (prev === null || prev === undefined || cur === null) return null;
  return cur >= prev ? cur - prev : null;
}

/** Samples needed in the window: ceil(rate x window minutes), at least 1. */
export function clockEventsNeeded(c: Pick<TelemetryConfig, 'clockEventRatePerMinute' | 'clockEventWindowMs'>): number {
  return Math.max(1, Math.ceil(c.clockEventRatePerMinute * (c.clockEventWindowMs / 60_000) - 1e-9));
}

/** Sum of a link's error counters; null when none is reported. */
export function nvlinkErrorSum(l: NonNullable<Telemetry['nvlinks']>[number]): number | null {
  const parts = [l.replayErrors, l.recoveryErrors, l.crcFlitErrors, l.crcDataErrors].filter((v): v is number => v !== null);
  return parts.length > 0 ? parts.reduce((a, b) => a + b, 0) : null;
}

/** What a rule sees: one GPU's sample, its previous sample, the config and the judge's state. */
export interface RuleContext {
  readonly c: TelemetryConfig;
  readonly s: Extract<DeviceSnapshot, { ok: true }>;
  readonly t: Telemetry;
  /** GPU index. */
  readonly i: number;
  readonly prev: DevPrev | undefined;
  /** Since the previous sample, for the counter-rate rules; undefined on the first sample. */
  readonly elapsedMs: number | undefined;
  /** The judge's state (a rule may keep its own bookkeeping there, e.g. clock-event times). */
  readonly state: JudgeState;
  /** The active condition under a key path of this GPU (e.g. "thermal"), for hysteresis. */
  active(path: string): CondState | undefined;
}

export type Finding = {
  bad: true;
  message: string;
  metrics: Record<string, string>;
  severity?: Severity;
  action?: RecommendedAction;
  citation?: string;
  type?: NavarchEventType;
  system?: HealthWatchSystem;
};
export type Good = { bad: false; message: string; metrics?: Record<string, string>; immediate?: boolean };
/** One decision: the key's path under the GPU (e.g. ["nvlink", 5, "errors"]) and its outcome. */
export type Outcome = { path: Array<string | number>; result: Finding | Good };

export interface TelemetryRule {
  /** The fault class (FAULT_CLASSES in src/events/fault-class.ts). */
  class: string;
  type: NavarchEventType;
  system: HealthWatchSystem;
  severity: Severity;
  action: RecommendedAction;
  citation: (c: TelemetryConfig) => string;
  /** The condition over the sample: an outcome per key decided (none: not judged this sample). */
  judge(x: RuleContext): Outcome[];
}

const bad = (message: string, metrics: Record<string, string>, over: Omit<Finding, 'bad' | 'message' | 'metrics'> = {}): Finding => ({
  bad: true,
  message,
  metrics,
  ...over,
});
const good = (message: string, metrics?: Record<string, string>, immediate = false): Good => ({
  bad: false,
  message,
  ...(metrics ? { metrics } : {}),
  ...(immediate ? { immediate } : {}),
});
const at = (cls: string, result: Finding | Good): Outcome[] => [{ path: cls.split('/'), result }];

/**
 * A counter-rate condition: bad while the counter grew by `inc` at `threshold` per minute or
 * faster over the elapsed time; null (not judged) without a previous sample or a counter.
 */
function rate(x: RuleContext, inc: number | null, threshold: number, raise: (perMin: number) => Finding, cleared: Good): Finding | Good | null {
  if (inc === null || x.elapsedMs === undefined) return null;
  const perMin = perMinute(inc, x.elapsedMs);
  return inc > 0 && perMin >= threshold ? raise(perMin) : cleared;
}

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

function clockRule(cc: (typeof CLOCK_CONDITIONS)[number]): TelemetryRule {
  const cls = `clock/${cc.name}`;
  return {
    class: cls,
    type: cc.type,
    system: cc.system,
    severity: 'warning',
    action: 'none',
    citation: (c) =>
      `NVML clock event reason 0x${cc.bit.toString(16)}; at >= ${c.clockEventRatePerMinute} events/min over ${c.clockEventWindowMs / 60_000} min (gpud hw-slowdown: unhealthy at 0.6/min over 10 min; DCGM: WARN); a slowed GPU still serves work`,
    judge: ({ c, s, t, i, state }) => {
      const stateKey = gpuKey(i, 'clock', cc.name);
      const reasons = t.clockEventReasons;
      const needed = clockEventsNeeded(c);
      const windowMin = c.clockEventWindowMs / 60_000;
      const set = reasons !== null && (reasons & cc.bit) !== 0;
      const times = (state.clockEvents[stateKey] ?? []).filter((ms) => ms > s.takenAtMs - c.clockEventWindowMs && ms <= s.takenAtMs);
      if (set) times.push(s.takenAtMs);
      while (times.length > needed) times.shift();
      if (times.length > 0) state.clockEvents[stateKey] = times;
      else delete state.clockEvents[stateKey];
      if (!(set && times.length >= needed)) return at(cls, good(`GPU ${i} ${cc.label} below ${c.clockEventRatePerMinute} events/min`));
      const perMin = times.length / windowMin;
      const metrics: Record<string, string> = {
        clock_event_reasons: int(reasons),
        clock_events_in_window: int(times.length),
        clock_events_per_minute: f6(perMin),
        window_seconds: int(c.clockEventWindowMs / 1000),
      };
      if (t.temperatureC !== null) metrics.temperature = int(t.temperatureC);
      if (t.powerUsageW !== null) metrics.power_watts = f6(t.powerUsageW);
      return at(
        cls,
        bad(
          `GPU ${i} clocks reduced: ${cc.label} in ${times.length} samples of the last ${windowMin} min (reasons 0x${(reasons as number).toString(16)})`,
          metrics,
        ),
      );
    },
  };
}

function remapRule(k: 'pending' | 'failure', severity: Severity, action: RecommendedAction, text: string): TelemetryRule {
  const cls = `remapped_rows/${k}`;
  return {
    class: cls,
    type: 'memory',
    system: 'MEM',
    severity,
    action,
    citation: () => 'NVML nvmlDeviceGetRemappedRows',
    judge: ({ t, i }) => {
      if ((k === 'pending' ? t.remappedRowsPending : t.remappedRowsFailure) !== true) return at(cls, good(`GPU ${i}: row remapping ${k} cleared`));
      const metrics: Record<string, string> = {};
      if (t.remappedRowsCorrected !== null) metrics.remapped_rows_corrected = int(t.remappedRowsCorrected);
      if (t.remappedRowsUncorrected !== null) metrics.remapped_rows_uncorrected = int(t.remappedRowsUncorrected);
      return at(cls, bad(`GPU ${i}: ${text}`, metrics));
    },
  };
}

/** The rows, in the order they are judged (and their events emitted) for each GPU. */
export const TELEMETRY_RULES: readonly TelemetryRule[] = [
  {
    // Hysteresis on both thresholds: an active fault holds until margin degrees below its threshold.
    class: 'thermal',
    type: 'thermal',
    system: 'THERMAL',
    severity: 'warning',
    action: 'none',
    citation: (c) =>
      `navarch-agent thresholds: warning ${c.temperatureWarningC} C, critical ${c.temperatureCriticalC} C (Navarch policy: degraded >= 85, unhealthy >= 95)`,
    judge: ({ c, t, i, active }) => {
      const temp = t.temperatureC;
      if (temp === null) return at('thermal', good(`GPU ${i} temperature no longer reported`));
      const act = active('thermal');
      let level: Severity | null = null;
      if (temp >= c.temperatureCriticalC || (act?.severity === 'critical' && temp >= c.temperatureCriticalC - c.temperatureClearMarginC)) level = 'critical';
      else if (temp >= c.temperatureWarningC || (act && temp >= c.temperatureWarningC - c.temperatureClearMarginC)) level = 'warning';
      if (!level) return at('thermal', good(`GPU ${i} temperature back to ${int(temp)} C`, { temperature: int(temp) }, true));
      const threshold = level === 'critical' ? c.temperatureCriticalC : c.temperatureWarningC;
      return at(
        'thermal',
        bad(
          `GPU ${i} temperature ${int(temp)} C (${level} threshold ${threshold} C)`,
          { temperature: int(temp), threshold_c: int(threshold) },
          { severity: level },
        ),
      );
    },
  },
  ...CLOCK_CONDITIONS.map(clockRule),
  {
    class: 'power',
    type: 'power',
    system: 'POWER',
    severity: 'warning',
    action: 'none',
    citation: (c) => `navarch-agent threshold: power above limit + ${c.powerOverLimitPercent}%`,
    judge: ({ c, t, i }) => {
      const p = t.powerUsageW;
      const lim = t.powerLimitW;
      if (p !== null && lim !== null && lim > 0 && p > lim * (1 + c.powerOverLimitPercent / 100)) {
        return at('power', bad(`GPU ${i} draws ${p.toFixed(1)} W, above its ${lim.toFixed(0)} W limit`, { power_watts: f6(p), power_limit_watts: f6(lim) }));
      }
      return at('power', good(`GPU ${i} power back within its limit`, p !== null ? { power_watts: f6(p) } : undefined));
    },
  },
  {
    // Uncorrected errors since the last reset, or a rising aggregate count.
    class: 'ecc_dbe',
    type: 'ecc_dbe',
    system: 'MEM',
    severity: 'critical',
    action: 'reset_gpu',
    citation: () => 'NVML ECC counters (uncorrected); NVIDIA XID 48 workflow: reset the GPU',
    judge: ({ t, i, prev }) => {
      const volInc = increase(prev?.eccVolUnc, t.eccVolatileUncorrected);
      const aggInc = increase(prev?.eccAggUnc, t.eccAggregateUncorrected);
      const newDbe = Math.max(volInc ?? 0, aggInc ?? 0);
      if (!(newDbe > 0 || (t.eccVolatileUncorrected ?? 0) > 0))
        return at('ecc_dbe', good(`GPU ${i}: no uncorrectable ECC errors since the last GPU reset`, { ecc_dbe_count: '0' }));
      const count = t.eccVolatileUncorrected !== null && t.eccVolatileUncorrected > 0 ? t.eccVolatileUncorrected : newDbe;
      const metrics: Record<string, string> = { ecc_dbe_count: int(count) };
      if (t.eccAggregateUncorrected !== null) metrics.ecc_dbe_aggregate = int(t.eccAggregateUncorrected);
      return at('ecc_dbe', bad(`GPU ${i}: ${int(count)} uncorrectable ECC error${count === 1 ? '' : 's'}`, metrics));
    },
  },
  {
    class: 'ecc_sbe_rate',
    type: 'ecc_sbe',
    system: 'MEM',
    severity: 'warning',
    action: 'none',
    citation: (c) => `navarch-agent threshold: ${c.eccSbeRatePerMinute} corrected ECC errors per minute`,
    judge: (x) => {
      const { c, t, i, prev } = x;
      const inc = increase(prev?.eccVolCorr, t.eccVolatileCorrected) ?? increase(prev?.eccAggCorr, t.eccAggregateCorrected);
      const r = rate(
        x,
        inc,
        c.eccSbeRatePerMinute,
        (perMin) =>
          bad(`GPU ${i}: corrected ECC errors rising fast (${perMin.toFixed(0)}/min)`, { ecc_sbe_count: int(inc as number), ecc_sbe_per_minute: f6(perMin) }),
        good(`GPU ${i}: corrected ECC error rate back to normal`),
      );
      if (r) return at('ecc_sbe_rate', r);
      return t.eccVolatileCorrected === null && t.eccAggregateCorrected === null ? at('ecc_sbe_rate', good(`GPU ${i}: ECC counters no longer reported`)) : [];
    },
  },
  {
    // Page retirement (pre-Ampere); row remapping (Ampere+) below.
    class: 'retired_pages/pending',
    type: 'memory',
    system: 'MEM',
    severity: 'warning',
    action: 'reboot',
    citation: () => 'NVML nvmlDeviceGetRetiredPagesPendingStatus',
    judge: ({ t, i }) => {
      if (t.retiredPagesPending !== true) return at('retired_pages/pending', good(`GPU ${i}: no retired pages pending`));
      const metrics: Record<string, string> = {};
      if (t.retiredPagesSbe !== null) metrics.retired_pages_sbe = int(t.retiredPagesSbe);
      if (t.retiredPagesDbe !== null) metrics.retired_pages_dbe = int(t.retiredPagesDbe);
      return at('retired_pages/pending', bad(`GPU ${i}: retired pages pending (a reboot activates the retirement)`, metrics));
    },
  },
  remapRule('pending', 'warning', 'reset_gpu', 'row remapping pending (a GPU reset activates it)'),
  remapRule('failure', 'critical', 'replace', 'row remapping failed (no spare rows left)'),
  {
    class: 'pcie/replay',
    type: 'pcie',
    system: 'PCIE',
    severity: 'warning',
    action: 'none',
    citation: (c) => `navarch-agent threshold: ${c.pcieReplayRatePerMinute} PCIe replays per minute`,
    judge: (x) => {
      const { c, t, i, prev } = x;
      const r = rate(
        x,
        increase(prev?.pcieReplay, t.pcieReplayCounter),
        c.pcieReplayRatePerMinute,
        (perMin) =>
          bad(`GPU ${i}: PCIe replays at ${perMin.toFixed(0)}/min`, {
            pcie_replay_count: int(t.pcieReplayCounter as number),
            pcie_replays_per_minute: f6(perMin),
          }),
        good(`GPU ${i}: PCIe replay rate back to normal`),
      );
      if (r) return at('pcie/replay', r);
      return t.pcieReplayCounter === null ? at('pcie/replay', good(`GPU ${i}: PCIe replay counter no longer reported`)) : [];
    },
  },
  {
    class: 'pcie/link_width',
    type: 'pcie',
    system: 'PCIE',
    severity: 'warning',
    action: 'reboot',
    citation: () => 'NVML PCIe link width (current below max)',
    judge: ({ t, i }) => {
      const cur = t.pcieLinkWidthCurrent;
      const max = t.pcieLinkWidthMax;
      if (cur !== null && max !== null && cur > 0 && cur < max)
        return at(
          'pcie/link_width',
          bad(`GPU ${i}: PCIe link x${cur}, below its x${max} maximum`, { pcie_link_width: int(cur), pcie_link_width_max: int(max) }),
        );
      return at('pcie/link_width', good(`GPU ${i}: PCIe link width back to its maximum`));
    },
  },
  {
    // Generation drops at idle for power saving; only a busy GPU below its max generation is a fault.
    class: 'pcie/link_gen',
    type: 'pcie',
    system: 'PCIE',
    severity: 'warning',
    action: 'reboot',
    citation: () => 'NVML PCIe link generation (current below max while not idle)',
    judge: ({ t, i }) => {
      const cur = t.pcieLinkGenCurrent;
      const max = t.pcieLinkGenMax;
      const reasons = t.clockEventReasons;
      const idleBit = reasons !== null && (reasons & CLOCK_REASON.GPU_IDLE) !== 0;
      const busy = !idleBit && ((t.gpuUtilPercent !== null && t.gpuUtilPercent > 0) || (t.performanceState !== null && t.performanceState <= 2));
      if (cur !== null && max !== null && cur > 0 && cur < max && busy)
        return at(
          'pcie/link_gen',
          bad(`GPU ${i}: PCIe gen${cur} while busy, below its gen${max} maximum`, { pcie_link_gen: int(cur), pcie_link_gen_max: int(max) }),
        );
      return at('pcie/link_gen', good(`GPU ${i}: PCIe link generation back to its maximum (or GPU idle)`));
    },
  },
  {
    // Per link: down (class nvlink), then its error counters rising (class nvlink/errors, a warning).
    class: 'nvlink',
    type: 'nvlink',
    system: 'NVLINK',
    severity: 'critical',
    action: 'reset_gpu',
    citation: () => 'NVML nvmlDeviceGetNvLinkState',
    judge: (x) => {
      const { c, t, i, prev } = x;
      const out: Outcome[] = [];
      for (const l of t.nvlinks ?? []) {
        const link = { link_id: int(l.link) };
        out.push({
          path: ['nvlink', l.link],
          result: l.active ? good(`GPU ${i}: NVLink ${l.link} is up`, link) : bad(`GPU ${i}: NVLink ${l.link} is down`, link),
        });
        const sum = nvlinkErrorSum(l);
        const r = rate(
          x,
          increase(prev?.nvlinkErrors[String(l.link)], sum),
          c.nvlinkErrorRatePerMinute,
          (perMin) =>
            bad(
              `GPU ${i}: NVLink ${l.link} errors rising (${perMin.toFixed(0)}/min)`,
              { ...link, nvlink_errors: int(sum as number), nvlink_errors_per_minute: f6(perMin) },
              { severity: 'warning', action: 'none', citation: `navarch-agent threshold: ${c.nvlinkErrorRatePerMinute} NVLink errors per minute per link` },
            ),
          good(`GPU ${i}: NVLink ${l.link} error rate back to normal`, link),
        );
        if (r) out.push({ path: ['nvlink', l.link, 'errors'], result: r });
      }
      return out;
    },
  },
  {
    // NVSwitch systems: src/sources/fabric.ts decides each fabric/<name> class, severity, action and citation.
    class: 'fabric',
    type: 'nvlink',
    system: 'NVSWITCH',
    severity: 'warning',
    action: 'none',
    citation: () => 'NVML fabric info',
    judge: ({ c, s, t, i, state }) => {
      const sinceBootMs = s.takenAtMs - (c.bootTimeMs ?? state.firstSampleMs ?? s.takenAtMs);
      return judgeFabric(i, t.fabric, sinceBootMs, c.fabricBootGraceMs).map((f) => ({
        path: ['fabric', f.name],
        result: f.bad ? bad(f.message, f.metrics, { severity: f.severity, action: f.action, citation: f.citation }) : good(f.message, f.metrics),
      }));
    },
  },
  {
    class: 'persistence_mode',
    type: 'driver_error',
    system: 'DRIVER',
    severity: 'warning',
    action: 'none',
    citation: () => 'NVIDIA recommends persistence mode (nvidia-persistenced) on compute nodes',
    judge: ({ t, i }) =>
      t.persistenceMode === false
        ? at('persistence_mode', bad(`GPU ${i}: persistence mode is off (driver state is torn down between clients)`, { persistence_mode: 'false' }))
        : at('persistence_mode', good(`GPU ${i}: persistence mode on`)),
  },
];
