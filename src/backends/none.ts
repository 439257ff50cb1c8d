/**
 * The `none` backend: no GPUs, empty snapshots, no events. What `auto` selects on a GPU host
 * whose NVML does not open, next to a driver_error health event (never fake GPUs there).
 */
import type { DeviceInfo, DeviceSnapshot, NvmlEvent, SystemInfo, WatchStats } from '../nvml/types.js';
import type { GpuBackend } from './types.js';

export class NoneBackend implements GpuBackend {
  readonly kind = 'none' as const;
  constructor(readonly reason: string) {}
  async open(): Promise<void> {}
  system(): SystemInfo {
    return { driverVersion: null, nvmlVersion: null, cudaDriverVersion: null };
  }
  devices(): DeviceInfo[] {
    return [];
  }
  async refreshDevices(): Promise<DeviceInfo[]> {
    return [];
  }
  async snapshot(): Promise<DeviceSnapshot[]> {
    return [];
  }
  watch(_onEvents: (events: NvmlEvent[]) => void): { stop(): Promise<void>; stats(): WatchStats } {
    return { stop: async () => {}, stats: () => ({ delivered: 0, merged: 0, dropped: 0, registered: [] }) };
  }
  async close(): Promise<void> {}
}
