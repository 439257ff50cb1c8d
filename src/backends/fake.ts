/**
 * The fake GPU backend: pure TypeScript, no addon, runs anywhere. N devices of one model with
 * plausible, slowly varying telemetry (a seeded random walk), and run-time fault injection that
 * changes telemetry and emits events exactly as the nvml backend would.
 */
import type {
  DeviceInfo,
  DeviceSnapshot,
  GpuFabricInfo,
  NvLinkStatus,
  NvmlErrorInfo,
  NvmlEvent,
  NvmlEventType,
  SystemInfo,
  Telemetry,
  WatchStats,
} from '../nvml/types.js';
import { prng } from '../util/prng.js';
import { faultOutOfBounds } from './fault-spec.js';
import type { FakeFault, InjectableBackend } from './types.js';

export const DEFAULT_FAKE_GPU_COUNT = 8;
export const DEFAULT_FAKE_GPU_TYPE = 'NVIDIA H100 80GB HBM3';
/** Bound on NAVARCH_GPU_COUNT: more GPUs than any real node, small enough to stay cheap. */
export const MAX_FAKE_GPU_COUNT = 64;

/** Distinct events queued between deliveries (the addon's default queue capacity). */
export const FAKE_QUEUE_CAPACITY = 4096;

/** NVML event type bits (nvmlEventType*), as the nvml backend reports them. */
export const EVENT_MASK: Record<NvmlEventType, number> = {
  ecc_sbe: 0x1,
  ecc_dbe: 0x2,
  pstate: 0x4,
  xid: 0x8,
  clock: 0x10,
  power_source: 0x80,
  mig_config: 0x100,
  ecc_storm: 0x200,
  dram_retirement_event: 0x400,
  dram_retirement_failure: 0x800,
  non_fatal_poison: 0x1000,
  fatal_poison: 0x2000,
  gpu_unavailable: 0x4000,
  gpu_recovery_action: 0x8000,
  gpu_lost: 0,
  unknown: 0,
};

interface ModelProfile {
  memoryTotalBytes: number;
  powerLimitW: number;
  idlePowerW: number;
  maxSmClockMhz: number;
  memClockMhz: number;
  pcieGen: number;
  nvlinks: number;
  hasFan: boolean;
  remappedRows: boolean;
}

const GIB = 1024 ** 3;

/** A few real model families; anything else gets a generic PCIe card. */
function profileFor(name: string): ModelProfile {
  const n = name.toUpperCase();
  if (/H100|H200|H800|GH200/.test(n)) {
    const mem = /H200/.test(n) ? 143771 : 81559; // MiB as NVML reports them
    return {
      memoryTotalBytes: mem * 1024 * 1024,
      powerLimitW: 700,
      idlePowerW: 70,
      maxSmClockMhz: 1980,
      memClockMhz: /H200/.test(n) ? 3201 : 2619,
      pcieGen: 5,
      nvlinks: 18,
      hasFan: false,
      remappedRows: true,
    };
  }
  if (/B200|B100|GB200/.test(n)) {
    return {
      memoryTotalBytes: 183359 * 1024 * 1024,
      powerLimitW: 1000,
      idlePowerW: 140,
      maxSmClockMhz: 1965,
      memClockMhz: 3996,
      pcieGen: 5,
      nvlinks: 18,
      hasFan: false,
      remappedRows: true,
    };
  }
  if (/A100/.test(n)) {
    const mem = /80GB/.test(n) ? 81920 : 40960;
    return {
      memoryTotalBytes: mem * 1024 * 1024,
      powerLimitW: 400,
      idlePowerW: 55,
      maxSmClockMhz: 1410,
      memClockMhz: 1593,
      pcieGen: 4,
      nvlinks: 12,
      hasFan: false,
      remappedRows: true,
    };
  }
  if (/V100/.test(n)) {
    return {
      memoryTotalBytes: 16 * GIB,
      powerLimitW: 300,
      idlePowerW: 40,
      maxSmClockMhz: 1530,
      memClockMhz: 877,
      pcieGen: 3,
      nvlinks: 6,
      hasFan: false,
      remappedRows: false,
    };
  }
  if (/A10G|L4|L40|T4/.test(n)) {
    const power = /L40/.test(n) ? 350 : /A10G/.test(n) ? 300 : /T4/.test(n) ? 70 : 72;
    return {
      memoryTotalBytes: (/L40/.test(n) ? 48 : /T4/.test(n) ? 15 : 23) * GIB,
      powerLimitW: power,
      idlePowerW: Math.round(power * 0.15),
      maxSmClockMhz: 1710,
      memClockMhz: 6251,
      pcieGen: /T4/.test(n) ? 3 : 4,
      nvlinks: 0,
      hasFan: false,
      remappedRows: !/T4/.test(n),
    };
  }
  return {
    memoryTotalBytes: 24 * GIB,
    powerLimitW: 300,
    idlePowerW: 30,
    maxSmClockMhz: 1800,
    memClockMhz: 5000,
    pcieGen: 4,
    nvlinks: 0,
    hasFan: true,
    remappedRows: true,
  };
}

function hex(n: number, width: number): string {
  return (n >>> 0).toString(16).padStart(width, '0').slice(-width);
}

/** Parse NAVARCH_GPU_COUNT / NAVARCH_GPU_TYPE. Throws a one-line error on bad input. */
export function fakeOptionsFromEnv(env: Record<string, string | undefined>): { count: number; model: string } {
  let count = DEFAULT_FAKE_GPU_COUNT;
  const raw = env.NAVARCH_GPU_COUNT;
  if (raw !== undefined && raw.trim() !== '') {
    const t = raw.trim();
    if (!/^\d+$/.test(t)) throw new Error(`NAVARCH_GPU_COUNT: expected a whole number 0..${MAX_FAKE_GPU_COUNT}, got "${raw}"`);
    count = Number(t);
    if (count > MAX_FAKE_GPU_COUNT) throw new Error(`NAVARCH_GPU_COUNT: ${count} is more than ${MAX_FAKE_GPU_COUNT}`);
  }
  const model = env.NAVARCH_GPU_TYPE?.trim() || DEFAULT_FAKE_GPU_TYPE;
  if (model.length > 96) throw new Error('NAVARCH_GPU_TYPE: longer than 96 characters');
  return { count, model };
}

export interface FakeBackendOptions {
  count?: number;
  model?: string;
  /** Seed of the telemetry random walk and UUIDs (default 1). */
  seed?: number;
  /** Wall clock (ms); injectable for scenario tests. */
  now?: () => number;
  reason?: string;
  driverVersion?: string;
}

interface DeviceState {
  info: DeviceInfo;
  profile: ModelProfile;
  rnd: () => number;
  // random-walk state
  temp: number;
  util: number;
  // injected overrides / counters
  tempOverride: number | null;
  powerOverride: number | null;
  clockReasons: number;
  lost: boolean;
  linksDown: Set<number>;
  eccVolCorr: number;
  eccVolUnc: number;
  eccAggCorr: number;
  eccAggUnc: number;
  pcieReplay: number;
  remapCorr: number;
  remapUnc: number;
  remapPending: boolean;
  remapFailure: boolean;
  // cumulative counters advanced by each sample (energy from the power drawn since the last one)
  energyMj: number;
  nvlinkTxKiB: number;
  nvlinkRxKiB: number;
  lastSampleMs: number | null;
  /** null: fabric info unsupported (the default); set by a fabric fault. */
  fabric: GpuFabricInfo | null;
}

/** A GPU whose fabric registration completed healthy (what a fabric fault starts from and recover returns to). */
function healthyFabric(): GpuFabricInfo {
  return { version: 3, state: 3, status: 0, cliqueId: 1, clusterUuid: '00000000000000000000000000000001', healthMask: 0, healthSummary: 1 };
}

const LOST: (fn: string) => NvmlErrorInfo = (fn) => ({
  code: 'NVML_ERROR_GPU_IS_LOST',
  status: 15,
  fn,
  message: `${fn}: GPU is lost (NVML_ERROR_GPU_IS_LOST)`,
});

/** Longest delay one Node timer takes; a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2_147_483_647;
interface TimerHandle {
  t?: NodeJS.Timeout;
}

export class FakeBackend implements InjectableBackend {
  readonly kind = 'fake' as const;
  readonly reason: string;
  readonly count: number;
  readonly model: string;
  private readonly now: () => number;
  private readonly driverVersion: string;
  private readonly devs: DeviceState[] = [];
  private opened = false;
  private closed = false;
  private watcher: {
    cb: (events: NvmlEvent[]) => void;
    pending: NvmlEvent[];
    scheduled: boolean;
    index: Map<string, NvmlEvent>;
    delivered: number;
    merged: number;
    dropped: number;
  } | null = null;
  private readonly timers = new Set<TimerHandle>();

  constructor(opts: FakeBackendOptions = {}) {
    const count = opts.count ?? DEFAULT_FAKE_GPU_COUNT;
    if (!Number.isSafeInteger(count) || count < 0 || count > MAX_FAKE_GPU_COUNT) {
      throw new Error(`fake backend: GPU count must be a whole number 0..${MAX_FAKE_GPU_COUNT}, got ${String(count)}`);
    }
    this.count = count;
    this.model = opts.model ?? DEFAULT_FAKE_GPU_TYPE;
    this.now = opts.now ?? Date.now;
    this.reason = opts.reason ?? 'fake backend requested';
    this.driverVersion = opts.driverVersion ?? '550.163.01';
    const seed = opts.seed ?? 1;
    const profile = profileFor(this.model);
    for (let i = 0; i < count; i++) {
      const rnd = prng(seed * 7919 + i * 104729 + 1);
      const idRnd = prng(seed * 31 + i + 17);
      const u = (w: number): string => hex(Math.floor(idRnd() * 0xffffffff), w);
      const uuid = `GPU-${u(8)}-${u(4)}-${u(4)}-${u(4)}-${u(8)}${u(4)}`;
      const bus = (0x18 + i * 0x11) & 0xff;
      const busHex = hex(bus, 2);
      this.devs.push({
        info: {
          index: i,
          uuid,
          name: this.model,
          serial: String(1650924060000 + seed * 100 + i),
          pciBusId: `00000000:${busHex.toUpperCase()}:00.0`,
          pciBusIdShort: `0000:${busHex}:00`,
          minorNumber: i,
          memoryTotalBytes: profile.memoryTotalBytes,
          error: null,
        },
        profile,
        rnd,
        temp: 38 + rnd() * 8,
        util: rnd() * 30,
        tempOverride: null,
        powerOverride: null,
        clockReasons: 0,
        lost: false,
        linksDown: new Set(),
        eccVolCorr: 0,
        eccVolUnc: 0,
        eccAggCorr: 0,
        eccAggUnc: 0,
        pcieReplay: 0,
        remapCorr: 0,
        remapUnc: 0,
        remapPending: false,
        remapFailure: false,
        energyMj: 0,
        nvlinkTxKiB: 0,
        nvlinkRxKiB: 0,
        lastSampleMs: null,
        fabric: null,
      });
    }
  }

  /** NVLink links per GPU of this model (0 without NVLink). */
  get nvlinkCount(): number {
    return this.devs[0]?.profile.nvlinks ?? profileFor(this.model).nvlinks;
  }

  async open(): Promise<void> {
    if (this.closed) throw new Error('fake backend: closed');
    this.opened = true;
  }

  system(): SystemInfo {
    return { driverVersion: this.driverVersion, nvmlVersion: `12.${this.driverVersion}`, cudaDriverVersion: '12.4' };
  }

  devices(): DeviceInfo[] {
    return this.devs.map((d) => ({ ...d.info, error: d.lost ? LOST('nvmlDeviceGetHandleByIndex_v2') : null }));
  }

  async refreshDevices(): Promise<DeviceInfo[]> {
    return this.devices();
  }

  async snapshot(): Promise<DeviceSnapshot[]> {
    if (!this.opened || this.closed) throw new Error('fake backend: not open');
    const takenAtMs = this.now();
    return this.devs.map((d): DeviceSnapshot => {
      if (d.lost) return { index: d.info.index, uuid: d.info.uuid, ok: false, error: LOST('nvmlDeviceGetTemperature'), takenAtMs };
      this.step(d);
      return { index: d.info.index, uuid: d.info.uuid, ok: true, telemetry: this.telemetry(d, takenAtMs), takenAtMs };
    });
  }

  /** Advance one device's random walk: temperature ~35-60 C, utilisation 0-100 %. */
  private step(d: DeviceState): void {
    d.util = Math.min(100, Math.max(0, d.util + (d.rnd() - 0.5) * 20));
    const target = 35 + d.util * 0.25;
    d.temp = Math.min(60, Math.max(35, d.temp + (target - d.temp) * 0.2 + (d.rnd() - 0.5) * 2));
  }

  private telemetry(d: DeviceState, takenAtMs: number): Telemetry {
    const p = d.profile;
    const util = Math.round(d.util);
    const busy = util > 0;
    const power = d.powerOverride ?? p.idlePowerW + (p.powerLimitW * 0.85 - p.idlePowerW) * (util / 100) + d.rnd() * 5;
    const memUsed = Math.round(p.memoryTotalBytes * (0.01 + 0.8 * (util / 100)));
    const dtS = d.lastSampleMs === null ? 0 : Math.max(0, takenAtMs - d.lastSampleMs) / 1000;
    d.lastSampleMs = takenAtMs;
    d.energyMj += Math.round(power * dtS * 1000);
    // NVLink traffic in proportion to utilisation: up to 1 GiB/s each way per GPU.
    if (p.nvlinks > 0) {
      d.nvlinkTxKiB += Math.round(dtS * 1024 * 1024 * (util / 100));
      d.nvlinkRxKiB += Math.round(dtS * 1024 * 1024 * (util / 100) * 0.9);
    }
    const nvlinks: NvLinkStatus[] | null =
      p.nvlinks > 0
        ? Array.from({ length: p.nvlinks }, (_, link) => ({
            link,
            active: !d.linksDown.has(link),
            replayErrors: 0,
            recoveryErrors: 0,
            crcFlitErrors: 0,
            crcDataErrors: 0,
          }))
        : null;
    return {
      temperatureC: Math.round(d.tempOverride ?? d.temp),
      powerUsageW: Math.round(power * 1000) / 1000,
      powerLimitW: p.powerLimitW,
      gpuUtilPercent: util,
      memUtilPercent: Math.round(util * 0.6),
      memoryUsedBytes: memUsed,
      memoryTotalBytes: p.memoryTotalBytes,
      smClockMhz: busy ? p.maxSmClockMhz - Math.round(d.rnd() * 30) : 345,
      memClockMhz: p.memClockMhz,
      clockEventReasons: d.clockReasons | (busy ? 0 : 0x1),
      performanceState: busy ? 0 : 8,
      fanSpeedPercent: p.hasFan ? 30 + Math.round(util * 0.5) : null,
      persistenceMode: true,
      eccModeCurrent: true,
      eccModePending: true,
      eccVolatileCorrected: d.eccVolCorr,
      eccVolatileUncorrected: d.eccVolUnc,
      eccAggregateCorrected: d.eccAggCorr,
      eccAggregateUncorrected: d.eccAggUnc,
      // Ampere and later retire rows (remapping), not pages: page retirement is unsupported there.
      retiredPagesSbe: p.remappedRows ? null : 0,
      retiredPagesDbe: p.remappedRows ? null : 0,
      retiredPagesPending: p.remappedRows ? null : false,
      remappedRowsCorrected: p.remappedRows ? d.remapCorr : null,
      remappedRowsUncorrected: p.remappedRows ? d.remapUnc : null,
      remappedRowsPending: p.remappedRows ? d.remapPending : null,
      remappedRowsFailure: p.remappedRows ? d.remapFailure : null,
      pcieReplayCounter: d.pcieReplay,
      pcieLinkGenCurrent: busy ? p.pcieGen : 1,
      pcieLinkGenMax: p.pcieGen,
      pcieLinkWidthCurrent: 16,
      pcieLinkWidthMax: 16,
      nvlinks,
      fabric: d.fabric ? { ...d.fabric } : null,
      // HBM boards (the NVLink models here) report a memory temperature; the GDDR cards do not.
      memoryTemperatureC: p.nvlinks > 0 ? Math.round(d.tempOverride ?? d.temp) + 4 : null,
      totalEnergyMj: d.energyMj,
      encoderUtilPercent: 0,
      decoderUtilPercent: 0,
      pcieTxKBps: Math.round(util * 40),
      pcieRxKBps: Math.round(util * 120),
      nvlinkDataTxKiB: p.nvlinks > 0 ? d.nvlinkTxKiB : null,
      nvlinkDataRxKiB: p.nvlinks > 0 ? d.nvlinkRxKiB : null,
    };
  }

  watch(onEvents: (events: NvmlEvent[]) => void): { stop(): Promise<void>; stats(): WatchStats } {
    if (this.closed) throw new Error('fake backend: closed');
    if (this.watcher) throw new Error('fake backend: already watching (one watch at a time)');
    const w = { cb: onEvents, pending: [] as NvmlEvent[], scheduled: false, index: new Map<string, NvmlEvent>(), delivered: 0, merged: 0, dropped: 0 };
    this.watcher = w;
    const registered = this.devs.map((d) => ({
      deviceIndex: d.info.index,
      types: ['xid', 'ecc_sbe', 'ecc_dbe', 'pstate', 'clock'] as NvmlEventType[],
      error: null,
    }));
    return {
      stop: async () => {
        if (this.watcher === w) this.watcher = null;
      },
      stats: () => ({ delivered: w.delivered, merged: w.merged, dropped: w.dropped, registered }),
    };
  }

  /** Queue an event for the watcher (delivered asynchronously in a batch, as the addon does). */
  private emit(d: DeviceState, type: NvmlEventType, data: number): void {
    const w = this.watcher;
    if (!w) return; // as with NVML: events while nobody is registered are not delivered
    const ev: NvmlEvent = {
      type,
      eventTypeMask: EVENT_MASK[type],
      data,
      deviceIndex: d.info.index,
      uuid: d.info.uuid,
      pciBusId: d.info.pciBusId,
      gpuInstanceId: null,
      computeInstanceId: null,
      monotonicNs: process.hrtime.bigint(),
      wallTimeMs: this.now(),
      count: 1,
    };
    // Like the native queue: identical events (device, type, data) merge into one with a count,
    // and the number of distinct queued events is bounded (drops are counted, never silent).
    const id = `${ev.deviceIndex}/${ev.type}/${ev.data}`;
    const same = w.index.get(id);
    if (same) {
      same.count++;
      w.merged++;
    } else if (w.pending.length >= FAKE_QUEUE_CAPACITY) {
      w.dropped++;
    } else {
      w.pending.push(ev);
      w.index.set(id, ev);
    }
    if (!w.scheduled) {
      w.scheduled = true;
      setImmediate(() => {
        w.scheduled = false;
        const batch = w.pending.splice(0);
        w.index.clear();
        if (batch.length === 0 || this.watcher !== w) return;
        for (const e of batch) w.delivered += e.count;
        w.cb(batch);
      });
    }
  }

  private dev(gpu: number | undefined, what: string): DeviceState {
    if (gpu === undefined || !Number.isSafeInteger(gpu) || gpu < 0 || gpu >= this.devs.length) {
      throw new Error(`inject ${what}: gpu ${String(gpu)} out of range 0..${this.devs.length - 1}`);
    }
    return this.devs[gpu] as DeviceState;
  }

  inject(fault: FakeFault): void {
    if (this.closed) throw new Error('fake backend: closed');
    // Field bounds from the one fault schema (src/backends/fault-spec.ts); NVLink links are bounded by the model's profile below.
    const outOfBounds = fault.kind === 'nvlink_down' ? null : faultOutOfBounds(fault);
    if (outOfBounds) throw new Error(`inject ${fault.kind}: ${outOfBounds}`);
    switch (fault.kind) {
      case 'xid': {
        const d = this.dev(fault.gpu, 'xid');
        if (!d.lost) this.emit(d, 'xid', fault.xid);
        return;
      }
      case 'ecc': {
        const d = this.dev(fault.gpu, 'ecc');
        const sbe = fault.sbe ?? 0;
        const dbe = fault.dbe ?? (fault.sbe === undefined ? 1 : 0);
        d.eccVolCorr += sbe;
        d.eccAggCorr += sbe;
        d.eccVolUnc += dbe;
        d.eccAggUnc += dbe;
        if (sbe > 0) this.emit(d, 'ecc_sbe', 0);
        if (dbe > 0) this.emit(d, 'ecc_dbe', 0);
        return;
      }
      case 'temperature': {
        const d = this.dev(fault.gpu, 'temperature');
        d.tempOverride = fault.celsius;
        return;
      }
      case 'gpu_lost': {
        const d = this.dev(fault.gpu, 'gpu_lost');
        if (d.lost) return;
        this.emit(d, 'gpu_lost', 0);
        d.lost = true;
        return;
      }
      case 'nvlink_down': {
        const d = this.dev(fault.gpu, 'nvlink_down');
        if (!Number.isSafeInteger(fault.link) || fault.link < 0 || fault.link >= d.profile.nvlinks) {
          throw new Error(`inject nvlink_down: link ${String(fault.link)} out of range (${this.model} has ${d.profile.nvlinks} links)`);
        }
        d.linksDown.add(fault.link);
        return;
      }
      case 'power': {
        const d = this.dev(fault.gpu, 'power');
        d.powerOverride = fault.watts;
        return;
      }
      case 'pcie_replay': {
        const d = this.dev(fault.gpu, 'pcie_replay');
        d.pcieReplay += fault.count;
        return;
      }
      case 'clock_reasons': {
        const d = this.dev(fault.gpu, 'clock_reasons');
        d.clockReasons = fault.mask;
        return;
      }
      case 'remapped_rows': {
        const d = this.dev(fault.gpu, 'remapped_rows');
        if (fault.pending !== undefined) d.remapPending = fault.pending;
        if (fault.failure !== undefined) d.remapFailure = fault.failure;
        if (fault.uncorrected !== undefined) d.remapUnc = fault.uncorrected;
        if (fault.pending === undefined && fault.failure === undefined && fault.uncorrected === undefined) d.remapPending = true;
        return;
      }
      case 'fabric': {
        const d = this.dev(fault.gpu, 'fabric');
        const next = { ...(d.fabric ?? healthyFabric()) };
        for (const k of ['state', 'status', 'healthMask', 'healthSummary'] as const) {
          const v = fault[k];
          if (v !== undefined) next[k] = v;
        }
        d.fabric = next;
        return;
      }
      case 'recover': {
        const targets = fault.gpu === undefined ? this.devs : [this.dev(fault.gpu, 'recover')];
        for (const d of targets) {
          d.lost = false;
          d.tempOverride = null;
          d.powerOverride = null;
          d.clockReasons = 0;
          d.linksDown.clear();
          // A GPU reset clears the volatile ECC counters; aggregate ones survive (as on hardware).
          d.eccVolCorr = 0;
          d.eccVolUnc = 0;
          d.remapPending = false;
          d.remapFailure = false;
          if (d.fabric) d.fabric = healthyFabric();
        }
        return;
      }
      default: {
        const k = (fault as { kind?: unknown }).kind;
        throw new Error(`inject: unknown fault kind "${String(k)}"`);
      }
    }
  }

  /**
   * Run `fn` after `ms` on an unref'd timer that close() cancels (used by scenarios). A delay past
   * one Node timer's limit (~24.8 days; scenarios allow 30) is armed in steps.
   */
  schedule(ms: number, fn: () => void): unknown {
    const h: TimerHandle = {};
    const arm = (left: number): void => {
      const step = Math.min(left, MAX_TIMER_MS);
      h.t = setTimeout(() => {
        if (left > step) return arm(left - step);
        this.timers.delete(h);
        if (!this.closed) fn();
      }, step);
      h.t.unref();
    };
    arm(ms);
    this.timers.add(h);
    return h;
  }

  cancel(handle: unknown): void {
    const h = handle as TimerHandle;
    clearTimeout(h.t);
    this.timers.delete(h);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher = null;
    for (const h of this.timers) clearTimeout(h.t);
    this.timers.clear();
  }
}
