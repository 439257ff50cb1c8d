/**
 * The nvml backend: the GpuBackend interface over the addon facade (src/nvml/index.ts), which
 * dlopens libnvidia-ml.so.1 (or NAVARCH_NVML_LIBRARY). The facade is imported lazily so that
 * importing the backends never loads the native addon (the fake backend must work without it).
 */
import type { DeviceInfo, DeviceSnapshot, NvmlErrorInfo, NvmlEvent, SystemInfo, WatchOptions, WatchStats } from '../nvml/types.js';
import type { GpuBackend } from './types.js';

/** The subset of the facade's session the backend uses (src/nvml/index.ts `Nvml`). */
interface NvmlSession {
  libraryPath: string;
  system(): Promise<SystemInfo>;
  devices(): Promise<DeviceInfo[]>;
  snapshot(opts?: { timeoutMs?: number }): Promise<DeviceSnapshot[]>;
  suspectDevices(): number[];
  watch(cb: (events: NvmlEvent[]) => void, opts?: WatchOptions): { stop(): Promise<void>; stats(): WatchStats; ref(): void; unref(): void };
  close(): Promise<void>;
}

interface NvmlFacade {
  openNvml(opts?: { libraryPath?: string; callTimeoutMs?: number }): Promise<NvmlSession>;
}

export interface NvmlBackendOptions {
  /** Library to dlopen; default NAVARCH_NVML_LIBRARY or "libnvidia-ml.so.1" (decided by the facade). */
  libraryPath?: string;
  /** Deadline for each snapshot/inventory call (ms); a GPU that misses it is marked suspect. */
  callTimeoutMs?: number;
  watch?: WatchOptions;
  /** For tests: the facade to use instead of importing src/nvml/index.js. */
  facade?: NvmlFacade;
}

/** Normalise anything thrown by the facade into NvmlErrorInfo (code, status, fn, message). */
export function nvmlErrorInfo(err: unknown): NvmlErrorInfo {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; status?: unknown; fn?: unknown; message?: unknown };
    if (typeof e.code === 'string' && (e.code.startsWith('NVML_') || e.code === 'NVML_SUCCESS')) {
      return {
        code: e.code as NvmlErrorInfo['code'],
        status: typeof e.status === 'number' ? e.status : -1,
        fn: typeof e.fn === 'string' ? e.fn : '',
        message: typeof e.message === 'string' ? e.message : String(err),
      };
    }
    const msg = typeof e.message === 'string' ? e.message : String(err);
    return { code: 'NVML_ADDON_UNAVAILABLE', status: -1, fn: '', message: msg.split('\n')[0] ?? msg };
  }
  return { code: 'NVML_ADDON_UNAVAILABLE', status: -1, fn: '', message: String(err) };
}

/** "NVML_ERROR_DRIVER_NOT_LOADED (nvmlInit_v2)" */
export function describeNvmlError(info: NvmlErrorInfo): string {
  return info.fn ? `${info.code} (${info.fn})` : info.code;
}

export class NvmlBackend implements GpuBackend {
  readonly kind = 'nvml' as const;
  reason = 'NVML opened';
  private session: NvmlSession | null = null;
  private sys: SystemInfo = { driverVersion: null, nvmlVersion: null, cudaDriverVersion: null };
  private devs: DeviceInfo[] = [];
  private activeWatch: { stop(): Promise<void> } | null = null;

  constructor(private readonly opts: NvmlBackendOptions = {}) {}

  /** Library the session opened ("" before open). */
  get libraryPath(): string {
    return this.session?.libraryPath ?? '';
  }

  async open(): Promise<void> {
    if (this.session) return;
    const facade = this.opts.facade ?? ((await import('../nvml/index.js')) as unknown as NvmlFacade);
    const openOpts: { libraryPath?: string; callTimeoutMs?: number } = {};
    if (this.opts.libraryPath !== undefined) openOpts.libraryPath = this.opts.libraryPath;
    if (this.opts.callTimeoutMs !== undefined) openOpts.callTimeoutMs = this.opts.callTimeoutMs;
    const session = await facade.openNvml(openOpts);
    try {
      this.sys = await session.system();
      this.devs = await session.devices();
    } catch (err) {
      await session.close().catch(() => {});
      throw err;
    }
    this.session = session;
    this.reason = `NVML opened (${session.libraryPath}, driver ${this.sys.driverVersion ?? 'unknown'}, ${this.devs.length} GPU${this.devs.length === 1 ? '' : 's'})`;
  }

  private need(): NvmlSession {
    if (!this.session) throw new Error('nvml backend: not open');
    return this.session;
  }

  system(): SystemInfo {
    return this.sys;
  }

  devices(): DeviceInfo[] {
    return this.devs.slice();
  }

  async refreshDevices(): Promise<DeviceInfo[]> {
    this.devs = await this.need().devices();
    return this.devices();
  }

  async snapshot(): Promise<DeviceSnapshot[]> {
    const o = this.opts.callTimeoutMs !== undefined ? { timeoutMs: this.opts.callTimeoutMs } : undefined;
    return this.need().snapshot(o);
  }

  /** Indexes of devices whose last call timed out (their calls are skipped until they answer). */
  suspectDevices(): number[] {
    return this.session?.suspectDevices() ?? [];
  }

  watch(onEvents: (events: NvmlEvent[]) => void): { stop(): Promise<void>; stats(): WatchStats } {
    const session = this.need();
    if (this.activeWatch) throw new Error('nvml backend: already watching (one watch at a time)');
    // A lost GPU cannot be asked for its identity at event time (the watcher may report an empty
    // uuid / bus id): fill them from the inventory so consumers can always key by GPU.
    const h = session.watch((events) => onEvents(events.map((e) => this.withIdentity(e))), this.opts.watch);
    const handle = {
      stop: async () => {
        if (this.activeWatch === handle) this.activeWatch = null;
        await h.stop();
      },
      stats: () => h.stats(),
    };
    this.activeWatch = handle;
    return handle;
  }

  private withIdentity(e: NvmlEvent): NvmlEvent {
    if (e.uuid && e.pciBusId) return e;
    const d = this.devs.find((x) => x.index === e.deviceIndex);
    if (!d) return e;
    return { ...e, uuid: e.uuid || d.uuid, pciBusId: e.pciBusId || d.pciBusId };
  }

  async close(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (this.activeWatch) {
      const w = this.activeWatch;
      this.activeWatch = null;
      await w.stop().catch(() => {});
    }
    if (s) await s.close();
  }
}
