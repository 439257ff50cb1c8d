/**
 * GPU telemetry judged against thresholds, with hysteresis, into raise/clear health events.
 *
 * `judgeSnapshot(prev, snapshot, config)` is pure: it returns the events and the next state.
 * Every judged condition has a stable key (gpu0/thermal, gpu0/clock/hw_slowdown, gpu2/nvlink/5,
 * node/gpu_count, ...). Entering a condition emits fault 'raise' (again when its severity
 * changes); leaving it emits fault 'clear' with severity 'info'. Thermal clears below the warning
 * threshold minus a margin; every other condition clears after N consecutive good samples.
 * The per-GPU rules are a table (src/sources/telemetry-rules.ts), run in order by one loop
 * (judgeTelemetry); device errors, vanished GPUs and the node's GPU count are judged here.
 * Unsupported (null) fields are never faults. `TelemetrySampler` calls backend.snapshot() on an
 * interval, never overlapping samples.
 */
import { gpuKey, nodeKey, xidKey } from '../events/fault-key.js';
import type { HealthEventInput, HealthWatchSystem, NavarchEventType, RecommendedAction, Severity } from '../events/types.js';
import type { GpuBackend } from '../backends/types.js';
import type { DeviceSnapshot, NvmlErrorInfo } from '../nvml/types.js';
import { xidEventInput } from '../xid/catalog.js';
import { DEFAULT_FABRIC_BOOT_GRACE_MS } from './fabric.js';
import { int, nvlinkErrorSum, TELEMETRY_RULES, type RuleContext } from './telemetry-rules.js';

export { CLOCK_REASON, clockEventsNeeded, f6 } from './telemetry-rules.js';

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
  if (c.bootTimeMs !== null && (typeof c.bootTimeMs !== 'number' || !Number.isFinite(c.bootTimeMs)))
    throw new Error(`telemetry config: bootTimeMs must be a number or null, got ${String(c.bootTimeMs)}`);
  if (!Number.isFinite(c.clockEventRatePerMinute) || c.clockEventRatePerMinute <= 0) {
    throw new Error(`telemetry config: clockEventRatePerMinute must be a number > 0, got ${String(c.clockEventRatePerMinute)}`);
  }
  if (c.temperatureCriticalC < c.temperatureWarningC) throw new Error('telemetry config: temperatureCriticalC is below temperatureWarningC');
  if (c.expectedGpuCount !== null && (!Number.isSafeInteger(c.expectedGpuCount) || c.expectedGpuCount < 0)) {
    throw new Error(`telemetry config: expectedGpuCount must be a whole number >= 0 or null, got ${String(c.expectedGpuCount)}`);
  }
  return c;
}

export interface CondState {
  severity: Severity;
  good: number;
  /** Raise template, reused for the clear (type/system/gpu/uuid). */
  type: NavarchEventType;
  system: HealthWatchSystem;
  gpuIndex: number;
  gpuUuid: string;
}

export interface DevPrev {
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

function lostVerdict(i: number, uuid: string, message: string, nvmlError: string): Verdict {
  return {
    bad: true,
    severity: 'critical',
    raise: () => {
      const x = xidEventInput({ code: 79, gpuIndex: i, gpuUuid: uuid, timeMs: Date.now(), source: 'telemetry', message });
      if (nvmlError) x.metrics.nvml_error = nvmlError;
      return {
        type: x.type,
        system: x.system,
        gpuIndex: x.gpuIndex,
        gpuUuid: x.gpuUuid,
        action: x.action,
        message: x.message,
        metrics: x.metrics,
        citation: x.citation,
      };
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

/** One GPU's sample through the rule table (src/sources/telemetry-rules.ts); the Judge keeps the hysteresis. */
function judgeTelemetry(j: Judge, s: Extract<DeviceSnapshot, { ok: true }>, prev: DevPrev | undefined): void {
  const i = s.index;
  const x: RuleContext = {
    c: j.config,
    s,
    t: s.telemetry,
    i,
    prev,
    elapsedMs: prev ? s.takenAtMs - prev.takenAtMs : undefined,
    state: j.state,
    active: (path) => j.active(gpuKey(i, path)),
  };
  for (const rule of TELEMETRY_RULES) {
    for (const { path, result: r } of rule.judge(x)) {
      j.apply(
        gpuKey(i, ...path),
        r.bad
          ? {
              bad: true,
              severity: r.severity ?? rule.severity,
              raise: () =>
                rawEvent(
                  i,
                  s.uuid,
                  r.type ?? rule.type,
                  r.system ?? rule.system,
                  r.action ?? rule.action,
                  r.message,
                  r.metrics,
                  r.citation ?? rule.citation(j.config),
                ),
            }
          : good(r.message, r.metrics, r.immediate),
      );
    }
  }
}

function prevOf(s: Extract<DeviceSnapshot, { ok: true }>): DevPrev {
  const t = s.telemetry;
  const nvlinkErrors: Record<string, number> = {};
  for (const l of t.nvlinks ?? []) {
    const sum = nvlinkErrorSum(l);
    if (sum !== null) nvlinkErrors[String(l.link)] = sum;
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
        raise: () =>
          rawEvent(
            -1,
            '',
            'driver_error',
            'DRIVER',
            'reboot',
            `${n} of ${exp} GPUs visible`,
            { gpu_count: int(n), expected_gpu_count: int(exp) },
            'navarch-agent: GPU count below what the instance type provides',
          ),
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
