/**
 * NVSwitch detection: NVIDIA PCI functions of class 0x0680 ("other bridge", how NVSwitches enumerate)
 * under sys/bus/pci/devices, and /dev/nvidia-nvswitch* nodes. Everything is read below `sysRoot`
 * so tests build a scratch tree. A host with NVSwitches (HGX/DGX A100, H100, H200) needs
 * nvidia-fabricmanager running before CUDA can use its GPUs.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { NVIDIA_PCI_VENDOR } from './detect.js';

/** PCI class code (upper 16 bits of the class file) of an NVSwitch. */
export const NVSWITCH_PCI_CLASS = 0x0680;
/** Bound on the entries looked at per directory (a host has a few hundred PCI functions). */
const MAX_ENTRIES = 4096;

export interface NvSwitchEvidence {
  /** PCI addresses of NVIDIA class-0x0680 functions, sorted. */
  pciDevices: string[];
  /** "nvidia-nvswitch0", ... (not the control node nvidia-nvswitchctl), sorted by number. */
  deviceNodes: string[];
  present: boolean;
  summary: string;
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).slice(0, MAX_ENTRIES);
  } catch {
    return [];
  }
}

async function readHex(file: string): Promise<number | null> {
  try {
    const t = (await readFile(file, 'utf8')).slice(0, 64).trim();
    const n = Number.parseInt(t, 16);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

export async function detectNvSwitches(sysRoot = '/'): Promise<NvSwitchEvidence> {
  const base = path.join(sysRoot, 'sys/bus/pci/devices');
  const pciDevices: string[] = [];
  for (const addr of (await listDir(base)).sort()) {
    if ((await readHex(path.join(base, addr, 'vendor'))) !== NVIDIA_PCI_VENDOR) continue;
    const cls = await readHex(path.join(base, addr, 'class'));
    if (cls !== null && cls >> 8 === NVSWITCH_PCI_CLASS) pciDevices.push(addr);
  }
  const deviceNodes = (await listDir(path.join(sysRoot, 'dev')))
    .filter((n) => /^nvidia-nvswitch\d+$/.test(n))
    .sort((a, b) => Number(a.slice(15)) - Number(b.slice(15)));
  const parts: string[] = [];
  if (pciDevices.length > 0) parts.push(`${pciDevices.length} NVSwitch PCI device${pciDevices.length === 1 ? '' : 's'}`);
  if (deviceNodes.length > 0) parts.push(`${deviceNodes.length} /dev/nvidia-nvswitchN node${deviceNodes.length === 1 ? '' : 's'}`);
  const present = pciDevices.length > 0 || deviceNodes.length > 0;
  return { pciDevices, deviceNodes, present, summary: present ? parts.join(', ') : 'no NVSwitch' };
}
