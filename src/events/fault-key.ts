/**
 * Fault keys: the one place that builds and splits them. A key is a location and a path:
 *
 *   gpu<i>/<path>           a GPU by NVML index          gpu3/xid/79, gpu0/thermal, gpu2/nvlink/5/errors
 *   nvswitch<n>/<path>      an NVSwitch (kernel log)     nvswitch0/sxid/12028
 *   pci/<bus id>/<path>     a GPU the agent cannot name  pci/0000:b3:00.0/xid/79
 *   node/<path>             the node                     node/gpu_count, node/driver_error
 *
 * The path's parts are joined with "/". The class of a key (src/events/fault-class.ts) is its path
 * without the numeric parts.
 */

export type FaultLocation = { kind: 'gpu'; index: number } | { kind: 'nvswitch'; index: number } | { kind: 'pci'; bus: string } | { kind: 'node' };

type Part = string | number;

function path(parts: readonly Part[]): string {
  return parts.join('/');
}

/** `gpu<i>/<parts>`. */
export function gpuKey(index: number, ...parts: Part[]): string {
  return `gpu${index}/${path(parts)}`;
}

/** `node/<parts>`. */
export function nodeKey(...parts: Part[]): string {
  return `node/${path(parts)}`;
}

/** `nvswitch<n>/<parts>`. */
export function nvswitchKey(index: number | string, ...parts: Part[]): string {
  return `nvswitch${index}/${path(parts)}`;
}

/** `pci/<bus id>/<parts>`. */
export function pciKey(bus: string, ...parts: Part[]): string {
  return `pci/${bus}/${path(parts)}`;
}

/** A GPU's key when its index is known (>= 0), else the node's. */
export function gpuOrNodeKey(gpuIndex: number, ...parts: Part[]): string {
  return gpuIndex >= 0 ? gpuKey(gpuIndex, ...parts) : nodeKey(...parts);
}

/** An XID's key: `gpu<i>/xid/<code>`, `node/xid/<code>` when the GPU is unknown. */
export function xidKey(gpuIndex: number, code: number): string {
  return gpuOrNodeKey(gpuIndex, 'xid', code);
}

/** An SXid's key: `nvswitch<n>/sxid/<code>`. */
export function sxidKey(nvswitch: number | string, code: number): string {
  return nvswitchKey(nvswitch, 'sxid', code);
}

/** A node key moved to the GPU at PCI bus `bus` (the kernel log names a GPU the agent cannot index); other keys unchanged. */
export function nodeKeyAtPci(key: string, bus: string): string {
  const p = parseFaultKey(key);
  return p.location?.kind === 'node' ? pciKey(bus, p.path) : key;
}

const LOCATION = /^(?:gpu(\d+)|nvswitch(\d+)|node|pci\/([^/]+))\//;

/** A key's location and path; location null (path the whole key) when it names none of the above. */
export function parseFaultKey(key: string): { location: FaultLocation | null; path: string } {
  const m = LOCATION.exec(key);
  if (!m) return { location: null, path: key };
  const rest = key.slice(m[0].length);
  if (m[1] !== undefined) return { location: { kind: 'gpu', index: Number(m[1]) }, path: rest };
  if (m[2] !== undefined) return { location: { kind: 'nvswitch', index: Number(m[2]) }, path: rest };
  if (m[3] !== undefined) return { location: { kind: 'pci', bus: m[3] }, path: rest };
  return { location: { kind: 'node' }, path: rest };
}
