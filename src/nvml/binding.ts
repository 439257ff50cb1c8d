/**
 * Loads the native addon (build/Release/navarch_nvml.node or a prebuild, via node-gyp-build from
 * the package root) and types its raw surface. src/nvml/index.ts uses it for NVML; the store lock
 * (flock), sd_notify and the kernel-log reader thread (src/sources/kmsg-reader.ts) for theirs.
 *
 * NAVARCH_NVML_ADDON overrides the location: an absolute path of a `.node` file, or a directory
 * handed to node-gyp-build (scripts/sanitize.sh points it at the ASan build).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DeviceInfo, DeviceSnapshot, NvmlEvent, NvmlErrorInfo, SystemInfo } from './types.js';

export interface NativeWatchStats {
  delivered: number;
  merged: number;
  dropped: number;
  registered: Array<{ deviceIndex: number; types: string[]; error: NvmlErrorInfo | null }>;
  running: boolean;
}

export interface NativeWatch {
  stop(): Promise<void>;
  stats(): NativeWatchStats;
  ref(): void;
  unref(): void;
}

export interface NativeSession {
  readonly libraryPath: string;
  /** Resolves with the device count. Rejects with {code,status,fn,message}. */
  open(libraryPath: string, callTimeoutMs: number): Promise<number>;
  deviceCount(timeoutMs?: number): Promise<number>;
  system(timeoutMs?: number): Promise<SystemInfo>;
  devices(timeoutMs?: number): Promise<DeviceInfo[]>;
  snapshot(timeoutMs?: number): Promise<DeviceSnapshot[]>;
  suspectDevices(): number[];
  watch(
    onEvents: (events: NvmlEvent[]) => void,
    onDropped: ((droppedSinceLast: number, droppedTotal: number) => void) | null,
    waitTimeoutMs: number,
    queueCapacity: number,
    ref: boolean,
    eventMask: number | null,
  ): NativeWatch;
  /** true when nvmlShutdown ran; false when a stuck call defers it. */
  close(): Promise<boolean>;
}

/** The kernel-log reader thread (native/kmsg_reader.cc). */
export interface NativeKmsgReader {
  /** Up to `max` records; idle: the queue is empty and the thread has read everything there was. */
  take(max: number): { records: string[]; idle: boolean };
  stats(): { records: number; bytes: number; overruns: number; dropped: number; readErrors: number; lastErrno: number; queued: number; maxQueued: number };
  /** Stops and joins the thread; idempotent. */
  stop(): void;
}

export type NativeKmsgReaderCtor = new (fd: number, onReadable: () => void, limits?: { maxRecords?: number; maxBytes?: number }) => NativeKmsgReader;

export interface NativeAddon {
  Session: new () => NativeSession;
  /** Absent in addons built before the reader existed. */
  KmsgReader?: NativeKmsgReaderCtor;
  statusName(status: number): string;
  eventMask(types: string[]): number;
  defaultEventMask: number;
  napiVersion: number;
}

export type AddonLoad = { ok: true; addon: NativeAddon; path: string } | { ok: false; reason: string };

/** The package root: the nearest directory above this file holding binding.gyp. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

let cached: AddonLoad | undefined;

export function loadAddon(): AddonLoad {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const override = process.env.NAVARCH_NVML_ADDON;
  try {
    if (override !== undefined && override !== '') {
      if (!isAbsolute(override)) {
        cached = { ok: false, reason: `NAVARCH_NVML_ADDON must be an absolute path, got '${override}'` };
        return cached;
      }
      if (override.endsWith('.node')) {
        cached = { ok: true, addon: require(override) as NativeAddon, path: override };
      } else {
        const gypBuild = require('node-gyp-build') as { (dir: string): unknown; resolve(dir: string): string };
        cached = { ok: true, addon: gypBuild(override) as NativeAddon, path: gypBuild.resolve(override) };
      }
      return cached;
    }
    const root = packageRoot();
    const gypBuild = require('node-gyp-build') as { (dir: string): unknown; resolve(dir: string): string };
    const path = gypBuild.resolve(root);
    cached = { ok: true, addon: require(path) as NativeAddon, path };
  } catch (e) {
    const msg = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    cached = {
      ok: false,
      reason: `the NVML addon could not be loaded (${msg}); build it with "npx node-gyp rebuild" or install a prebuild`,
    };
  }
  return cached;
}
