/**
 * Fault classes: what a fault is, whatever GPU, NVSwitch, link or code it is on. The class of a
 * fault key is the key without its location (`gpu3/`, `node/`, `nvswitch1/`, `pci/0000:b3:00.0/`)
 * and without its numeric parts (a link, an XID or SXid code):
 *
 *   gpu0/thermal -> thermal         gpu2/nvlink/5/errors -> nvlink/errors
 *   gpu3/xid/79  -> xid             nvswitch0/sxid/12028 -> sxid
 *
 * Operators name classes in the config file (`faultOverrides.classes`, src/config/fault-overrides.ts);
 * a class there is one of FAULT_CLASSES or the group before its `/` (`clock` stands for every
 * `clock/...` class).
 */
import { parseFaultKey } from './fault-key.js';

/** Every class the agent's sources raise, with what it is (docs/backends-and-detection.md, "Overrides and suppressions"). */
export const FAULT_CLASSES: Readonly<Record<string, string>> = Object.freeze({
  xid: 'an XID (NVML event or kernel log); per-code rules go under faultOverrides.xid',
  sxid: 'an NVSwitch SXid from the kernel log',
  thermal: 'GPU temperature over the warning or critical threshold',
  'clock/hw_slowdown': 'HW slowdown clock event reason, rate over the window',
  'clock/hw_thermal_slowdown': 'HW thermal slowdown clock event reason, rate over the window',
  'clock/hw_power_brake': 'HW power brake clock event reason, rate over the window',
  'clock/sw_thermal_slowdown': 'SW thermal slowdown clock event reason, rate over the window',
  power: 'power draw over the limit',
  ecc_dbe: 'uncorrectable (double-bit) ECC errors',
  ecc_sbe: 'a corrected (single-bit) ECC error event',
  ecc_sbe_rate: 'corrected ECC errors at a high rate',
  ecc_sbe_storm: 'a storm of corrected ECC errors (NVML event)',
  'retired_pages/pending': 'page retirement pending',
  'remapped_rows/pending': 'row remapping pending',
  'remapped_rows/failure': 'row remapping failed',
  dram_retirement: 'DRAM retirement event (NVML)',
  dram_retirement_failure: 'DRAM retirement failure (NVML)',
  poison: 'contained (non-fatal) poison error (NVML)',
  fatal_poison: 'uncontained (fatal) poison error (NVML)',
  'pcie/replay': 'PCIe replays at a high rate',
  'pcie/link_width': 'PCIe link narrower than its maximum',
  'pcie/link_gen': 'PCIe link generation below its maximum while busy',
  nvlink: 'an NVLink link down',
  'nvlink/errors': 'NVLink errors at a high rate',
  persistence_mode: 'persistence mode off',
  driver_error: 'a driver or NVML error (no driver, a hung or failing NVML call)',
  gpu_unavailable: 'GPU unavailable (NVML event)',
  recovery_action: 'the driver asks for a GPU recovery action (NVML event)',
  gpu_count: 'fewer GPUs than the instance type has',
  gpu_lost: 'GPU fallen off the bus (kernel log)',
  gsp: 'GSP error or RPC timeout (kernel log)',
  init_failed: 'RmInitAdapter failed: the driver could not bring a GPU up (kernel log)',
  kmsg_records_lost: 'the kernel log ring buffer dropped records before the agent read them',
  'fabric/state': 'fabric registration not completed after the boot grace (NVML fabric info)',
  'fabric/status': 'fabric registration completed with a failed status (NVML fabric info)',
  'fabric/health': 'fabric health summary unhealthy or limited capacity (NVML fabric info)',
  'fabric/degraded_bandwidth': 'fabric health mask: NVLink bandwidth degraded',
  'fabric/route_recovery': 'fabric health mask: route recovery in progress',
  'fabric/route_unhealthy': 'fabric health mask: route unhealthy',
  'fabric/access_timeout_recovery': 'fabric health mask: access-timeout recovery in progress',
  'fabric/incorrect_configuration': 'fabric health mask: incorrect fabric configuration',
  fabric_manager: 'nvidia-fabricmanager not active on a host with NVSwitches',
  'fabric_manager/log': 'an ERROR/FATAL line in the nvidia-fabricmanager log',
});

/** The class of a fault key ("gpu2/nvlink/5/errors" -> "nvlink/errors"); the location split by src/events/fault-key.ts. */
export function faultClassOf(key: string): string {
  return parseFaultKey(key)
    .path.split('/')
    .filter((part) => part !== '' && !/^\d+$/.test(part))
    .join('/');
}

/** Groups: the part of each class before its first "/" ("clock", "pcie", ...). */
const GROUPS = new Set(Object.keys(FAULT_CLASSES).map((c) => c.split('/')[0] as string));

/** True for a class an operator may name: one of FAULT_CLASSES, or a group of them. */
export function isKnownFaultClass(name: string): boolean {
  return Object.prototype.hasOwnProperty.call(FAULT_CLASSES, name) || GROUPS.has(name);
}

/** True when the configured class `rule` covers the fault class `cls` (itself, or its group). */
export function classCovers(rule: string, cls: string): boolean {
  return cls === rule || cls.startsWith(`${rule}/`);
}
