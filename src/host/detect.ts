/**
 * Does this machine look like a GPU host? Backend selection asks before it falls back to fake
 * GPUs: on a host with NVIDIA hardware a failing NVML is a fault to report, never a reason to
 * pretend. Everything is read below a configurable root so tests build a fake sysfs/dev tree.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { instanceTypeGpus, type InstanceGpuSpec } from './instance-types.js';

export const NVIDIA_PCI_VENDOR = 0x10de;

export interface GpuHostEvidence {
  /** PCI addresses (e.g. "0000:41:00.0") of NVIDIA display/3D controllers (class 0x03xxxx). */
  nvidiaPciDevices: string[];
  /** GPU device nodes found under /dev: "nvidia0", "nvidia1", ... */
  gpuDeviceNodes: string[];
  /** True when /dev/nvidiactl exists (the driver's control node). */
  controlNode: boolean;
  /** The instance type's GPU spec, when the type is in the table. */
  instanceType: { name: string; spec: InstanceGpuSpec } | null;
  /** True when any of the above says this host has (or should have) NVIDIA GPUs. */
  isGpuHost: boolean;
  /** Human-readable summary, e.g. "8 NVIDIA PCI devices, /dev/nvidia0..7, p5.48xlarge (8 NVIDIA H100)". */
  summary: string;
}

async function readTrim(file: string): Promise<string | null> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    return null;
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** NVIDIA PCI functions whose class is a display controller (0x03xxxx: VGA 0x0300, 3D 0x0302). */
export async function findNvidiaPciDevices(sysRoot = '/'): Promise<string[]> {
  const base = path.join(sysRoot, 'sys/bus/pci/devices');
  const found: string[] = [];
  for (const addr of (await listDir(base)).sort()) {
    const vendor = await readTrim(path.join(base, addr, 'vendor'));
    if (vendor === null || Number.parseInt(vendor, 16) !== NVIDIA_PCI_VENDOR) continue;
    const cls = await readTrim(path.join(base, addr, 'class'));
    if (cls === null) continue;
    const value = Number.parseInt(cls, 16);
    if (Number.isFinite(value) && value >> 16 === 0x03) found.push(addr);
  }
  return found;
}

export async function detectGpuHost(opts: { sysRoot?: string; instanceType?: string | null } = {}): Promise<GpuHostEvidence> {
  const sysRoot = opts.sysRoot ?? '/';
  const nvidiaPciDevices = await findNvidiaPciDevices(sysRoot);
  const devEntries = await listDir(path.join(sysRoot, 'dev'));
  const gpuDeviceNodes = devEntries.filter((n) => /^nvidia\d+$/.test(n)).sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)));
  const controlNode = devEntries.includes('nvidiactl');
  const spec = instanceTypeGpus(opts.instanceType);
  const instanceType = spec && opts.instanceType ? { name: opts.instanceType.trim(), spec } : null;

  const parts: string[] = [];
  if (nvidiaPciDevices.length > 0) {
    parts.push(`${nvidiaPciDevices.length} NVIDIA PCI device${nvidiaPciDevices.length === 1 ? '' : 's'}`);
  }
  if (gpuDeviceNodes.length > 0) parts.push(`${gpuDeviceNodes.length} /dev/nvidiaN node${gpuDeviceNodes.length === 1 ? '' : 's'}`);
  else if (controlNode) parts.push('/dev/nvidiactl');
  if (instanceType) parts.push(`instance type ${instanceType.name} (${instanceType.spec.gpus} ${instanceType.spec.model})`);
  const isGpuHost = nvidiaPciDevices.length > 0 || gpuDeviceNodes.length > 0 || controlNode || (instanceType?.spec.gpus ?? 0) > 0;
  return {
    nvidiaPciDevices,
    gpuDeviceNodes,
    controlNode,
    instanceType,
    isGpuHost,
    summary: parts.length > 0 ? parts.join(', ') : 'no NVIDIA PCI devices, no /dev/nvidia* nodes, no GPU instance type',
  };
}
