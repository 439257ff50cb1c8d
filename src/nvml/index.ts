/**
 * The NVML facade: the only code that touches the native addon. Everything is asynchronous and
 * runs on the addon's own native threads; a wedged NVML call settles with NVML_CALL_TIMEOUT for its
 * device (which becomes "suspect") instead of blocking the event loop or the libuv pool.
 *
 *   const nvml = await openNvml();            // rejects NvmlError (typed init failures)
 *   const snap = await nvml.snapshot();       // one entry per GPU, a lost GPU is {ok:false}
 *   const w = nvml.watch((events) => ...);    // batched NVML events (XIDs, ECC, gpu_lost...)
 *   await w.stop(); await nvml.close();
 */
import { loadAddon, type NativeSession, type NativeWatch } from './binding.js';
import { NvmlError } from './errors.js';
import type { DeviceInfo, DeviceSnapshot, NvmlEvent, NvmlEventType, OpenOptions, SystemInfo, WatchOptions, WatchStats } from './types.js';

export * from './types.js';
export { NvmlError, isNvmlError } from './errors.js';

export interface NvmlWatch {
  stop(): Promise<void>;
  stats(): WatchStats;
  ref(): void;
  unref(): void;
}

export interface Nvml {
  /** The file actually loaded (resolved by the dynamic linker). */
  readonly libraryPath: string;
  system(): Promise<SystemInfo>;
  /** Re-reads the device count (a GPU can vanish or appear), then the inventory of each GPU. */
  devices(): Promise<DeviceInfo[]>;
  snapshot(opts?: { timeoutMs?: number }): Promise<DeviceSnapshot[]>;
  /** Indices of GPUs with an NVML call still running past its deadline. */
  suspectDevices(): number[];
  watch(onEvents: (events: NvmlEvent[]) => void, opts?: WatchOptions): NvmlWatch;
  /** Stops every watch, then releases NVML (nvmlShutdown runs once no call is stuck). */
  close(): Promise<void>;
}

const MAX_TIMEOUT_MS = 600_000;

/** Whether the native addon loaded; when not, why (openNvml then rejects NVML_ADDON_UNAVAILABLE). */
export function addonStatus(): { ok: true } | { ok: false; reason: string } {
  const r = loadAddon();
  return r.ok ? { ok: true } : { ok: false, reason: r.reason };
}

function checkTimeout(name: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_TIMEOUT_MS) {
    throw new NvmlError('NVML_ERROR_INVALID_ARGUMENT', `${name} must be an integer between 1 and ${MAX_TIMEOUT_MS} ms, got ${String(v)}`, 2);
  }
  return v;
}

async function wrap<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw NvmlError.from(e);
  }
}

/** Opens NVML (dlopen + nvmlInit_v2 + device count) on a native thread. */
export async function openNvml(opts: OpenOptions = {}): Promise<Nvml> {
  const load = loadAddon();
  if (!load.ok) throw new NvmlError('NVML_ADDON_UNAVAILABLE', load.reason);
  if (opts === null || typeof opts !== 'object') throw new NvmlError('NVML_ERROR_INVALID_ARGUMENT', 'openNvml: options must be an object', 2);
  const callTimeoutMs = checkTimeout('callTimeoutMs', opts.callTimeoutMs) ?? 5000;
  if (opts.libraryPath !== undefined && (typeof opts.libraryPath !== 'string' || opts.libraryPath === '')) {
    throw new NvmlError('NVML_ERROR_INVALID_ARGUMENT', 'libraryPath must be a non-empty string', 2);
  }
  const libraryPath = opts.libraryPath ?? process.env.NAVARCH_NVML_LIBRARY ?? '';
  const session = new load.addon.Session();
  try {
    await session.open(libraryPath, callTimeoutMs);
  } catch (e) {
    await session.close().catch(() => undefined);
    throw NvmlError.from(e);
  }
  return new NvmlSession(session, load.addon.eventMask.bind(load.addon));
}

class NvmlSession implements Nvml {
  private readonly watches = new Set<WatchHandle>();
  private closed = false;

  constructor(
    private readonly native: NativeSession,
    private readonly eventMask: (types: string[]) => number,
  ) {}

  get libraryPath(): string {
    return this.native.libraryPath;
  }

  private ensureOpen(fn: string): void {
    if (this.closed) throw new NvmlError('NVML_CLOSED', `${fn}: the NVML session is closed`, -1, '');
  }

  async system(): Promise<SystemInfo> {
    this.ensureOpen('system');
    return wrap(this.native.system());
  }

  async devices(): Promise<DeviceInfo[]> {
    this.ensureOpen('devices');
    await wrap(this.native.deviceCount());
    return wrap(this.native.devices());
  }

  async snapshot(opts: { timeoutMs?: number } = {}): Promise<DeviceSnapshot[]> {
    this.ensureOpen('snapshot');
    const t = checkTimeout('timeoutMs', opts.timeoutMs);
    return wrap(this.native.snapshot(t));
  }

  suspectDevices(): number[] {
    return this.closed ? [] : this.native.suspectDevices();
  }

  watch(onEvents: (events: NvmlEvent[]) => void, opts: WatchOptions = {}): NvmlWatch {
    this.ensureOpen('watch');
    if (typeof onEvents !== 'function') throw new TypeError('watch: onEvents must be a function');
    const waitTimeoutMs = checkTimeout('waitTimeoutMs', opts.waitTimeoutMs) ?? 500;
    const cap = opts.queueCapacity ?? 4096;
    if (!Number.isInteger(cap) || cap < 1 || cap > 1_048_576) {
      throw new NvmlError('NVML_ERROR_INVALID_ARGUMENT', `queueCapacity must be an integer between 1 and 1048576, got ${String(cap)}`, 2);
    }
    if (opts.onDropped !== undefined && typeof opts.onDropped !== 'function') throw new TypeError('watch: onDropped must be a function');
    let mask: number | null = null;
    if (opts.types !== undefined) {
      try {
        mask = this.eventMask(opts.types.filter((t) => t !== 'gpu_lost'));
      } catch (e) {
        throw new NvmlError('NVML_ERROR_INVALID_ARGUMENT', (e as Error).message, 2);
      }
    }
    let native: NativeWatch;
    try {
      native = this.native.watch(guard(onEvents), opts.onDropped ? guard(opts.onDropped) : null, waitTimeoutMs, cap, opts.ref === true, mask);
    } catch (e) {
      throw NvmlError.from(e);
    }
    const handle = new WatchHandle(native, this.watches);
    this.watches.add(handle);
    return handle;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watches].map((w) => w.stop()));
    await wrap(this.native.close());
  }
}

/**
 * Wraps a user callback so that a throw surfaces as an ordinary uncaught exception, not inside the
 * native threadsafe-function dispatch (where Node may only print it). A top-level function on
 * purpose: the closure must not share a context with anything that references the watch.
 */
function guard<A extends unknown[]>(fn: (...a: A) => void): (...a: A) => void {
  return (...a: A): void => {
    try {
      fn(...a);
    } catch (e) {
      process.nextTick(() => {
        throw e;
      });
    }
  };
}

class WatchHandle implements NvmlWatch {
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly native: NativeWatch,
    private readonly registry: Set<WatchHandle>,
  ) {}

  stop(): Promise<void> {
    this.stopping ??= wrap(this.native.stop()).finally(() => this.registry.delete(this));
    return this.stopping;
  }

  stats(): WatchStats {
    const s = this.native.stats();
    return {
      delivered: s.delivered,
      merged: s.merged,
      dropped: s.dropped,
      registered: s.registered.map((r) => ({ deviceIndex: r.deviceIndex, types: r.types as NvmlEventType[], error: r.error })),
    };
  }

  ref(): void {
    this.native.ref();
  }

  unref(): void {
    this.native.unref();
  }
}
