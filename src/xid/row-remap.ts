/**
 * XID 63/64 where the GPU reports row remapping through its counters: not a fault, as gpud
 * (components/accelerator/nvidia/xid/component.go discards 63/64 when NVML reports the row-remapping
 * capability). The remapped-rows telemetry check (src/sources/telemetry.ts: row remapping pending
 * -> warning/reset_gpu, failed -> critical/replace) judges the same condition from the counters,
 * which say whether the remapping is pending, done or failed; the XID line only says a remap
 * happened. A pending remap can be activated by a reset and recur several times before the spare
 * rows run out, so XID 63/64 alone must not take the GPU out of service where the counters can
 * tell. GPUs without row remapping (pre-Ampere: page retirement, counters NOT_SUPPORTED) and GPUs
 * whose counters are not known yet (no sample, a failed sample) keep XID 63/64 as the catalog
 * rates them.
 */
import type { HealthEventInput } from '../events/types.js';
import type { Telemetry } from '../nvml/types.js';

/** The XIDs the remapped-rows counters judge instead, where the GPU reports them. */
export const ROW_REMAP_XIDS: ReadonlySet<number> = new Set([63, 64]);

/** True when the GPU's latest sample reports row remapping through its counters. */
export function reportsRowRemapping(t: Telemetry | null | undefined): boolean {
  if (!t) return false;
  return t.remappedRowsCorrected !== null || t.remappedRowsUncorrected !== null || t.remappedRowsPending !== null || t.remappedRowsFailure !== null;
}

/** True for an XID 63/64 event on a GPU whose counters report row remapping: it raises nothing. */
export function judgedByRowRemapCounters(input: HealthEventInput, t: Telemetry | null | undefined): boolean {
  if (input.type !== 'xid') return false;
  const code = Number(input.metrics.xid_code);
  return ROW_REMAP_XIDS.has(code) && reportsRowRemapping(t);
}
