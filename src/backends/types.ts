/**
 * The GPU backend interface. Two implementations: `nvml` (the native addon over
 * libnvidia-ml.so.1) and `fake` (pure TypeScript). A third, `none`, is what `auto` selects on a
 * GPU host whose driver is broken: no GPUs, plus a driver_error health event.
 *
 * Both real backends produce the facade's shapes (src/nvml/types.ts), so every consumer and the
 * shared test suite (test/backends/*.test.ts) treat them identically.
 */
import type { DeviceInfo, DeviceSnapshot, NvmlEvent, SystemInfo, WatchStats } from '../nvml/types.js';

export type BackendKind = 'nvml' | 'fake' | 'none';

export type { DeviceInfo, DeviceSnapshot, NvmlEvent as GpuEvent, SystemInfo };

export interface GpuBackend {
  readonly kind: BackendKind;
  /** Why this backend was chosen (e.g. "NVML opened", "NAVARCH_FAKE_GPU=true", "NVML failed: ..."). */
  readonly reason: string;
  /** Open the backend. Rejects with an NvmlError for the nvml backend when NVML cannot open. */
  open(): Promise<void>;
  system(): SystemInfo;
  /** Inventory as of open() (refreshed by refreshDevices()). */
  devices(): DeviceInfo[];
  /** Re-read the device list (a GPU that fell off the bus may vanish). */
  refreshDevices(): Promise<DeviceInfo[]>;
  /** One telemetry snapshot of every device; a lost or hung GPU is a per-device error. */
  snapshot(): Promise<DeviceSnapshot[]>;
  /** Start delivering GPU events (batches). Returns a stop function. One watch at a time. */
  watch(onEvents: (events: NvmlEvent[]) => void): { stop(): Promise<void>; stats(): WatchStats };
  close(): Promise<void>;
}

/** A fault the fake backend can inject: its type, fields and bounds are in src/backends/fault-spec.ts. */
export type { FakeFault } from './fault-spec.js';
import type { FakeFault } from './fault-spec.js';

export interface InjectableBackend extends GpuBackend {
  inject(fault: FakeFault): void;
}

export function isInjectable(b: GpuBackend): b is InjectableBackend {
  return typeof (b as Partial<InjectableBackend>).inject === 'function';
}
