/**
 * An operator's clear (`navarch-agent faults clear`, `POST /faults/clear`): which active faults a
 * request names, and the clear event each becomes. The event goes into the store like any other
 * clear (fault 'clear' ends the active fault in the ledger, and the event is sent to the control
 * plane in Navarch's clear vocabulary, src/controlplane/vocabulary.ts), so the clear is durable and
 * the control plane learns of it. Pure: no I/O, the time is given.
 */
import type { ActiveFault, HealthEventInput } from './types.js';

export type ClearSelector = { key: string } | { gpu: number } | { all: true };

export const DEFAULT_CLEAR_REASON = 'operator';
export const MAX_CLEAR_REASON = 200;
export const MAX_FAULT_KEY = 256;
export const MAX_GPU_INDEX = 1023;
// C0 control characters and DEL: a reason is one line of text, a key has none.
// eslint-disable-next-line no-control-regex -- these characters are what it rejects
const CONTROL_CHAR = /[\u0000-\u001f\u007f]/;

export class ClearRequestError extends Error {
  override name = 'ClearRequestError';
}

/** The faults a selector names, in the store's order. A key names at most one. */
export function selectFaults(faults: readonly ActiveFault[], sel: ClearSelector): ActiveFault[] {
  if ('key' in sel) return faults.filter((f) => f.key === sel.key);
  if ('gpu' in sel) return faults.filter((f) => f.gpuIndex === sel.gpu);
  return [...faults];
}

/** The clear event that ends `fault`, recorded as the operator's. */
export function operatorClearInput(fault: ActiveFault, reason: string, timeMs: number): HealthEventInput {
  return {
    type: fault.type,
    system: fault.system,
    gpuIndex: fault.gpuIndex,
    gpuUuid: fault.gpuUuid,
    metrics: { reason, cleared_by: 'operator' },
    message: `${fault.key} cleared by the operator (${reason})`,
    timeMs,
    severity: 'info',
    action: 'none',
    citation: 'navarch-agent faults clear: an operator ended the fault; a detection that still sees it raises it again',
    source: 'agent',
    key: fault.key,
    fault: 'clear',
  };
}

type Obj = Record<string, unknown>;

/**
 * Validate a clear request (`POST /faults/clear` body, built by the CLI from its arguments): exactly
 * one of `key`, `gpu` or `all: true`, and an optional `reason`. Throws ClearRequestError (one sentence).
 */
export function parseClearRequest(body: unknown): { selector: ClearSelector; reason: string } {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ClearRequestError('body must be a JSON object like {"key":"gpu3/xid/79"}, {"gpu":3} or {"all":true}');
  }
  const o = body as Obj;
  for (const k of Object.keys(o)) {
    if (!['key', 'gpu', 'all', 'reason'].includes(k)) throw new ClearRequestError(`unknown field "${k.slice(0, 64)}" (expected key, gpu, all, reason)`);
  }
  const given = ['key', 'gpu', 'all'].filter((k) => o[k] !== undefined && o[k] !== null && o[k] !== false);
  if (given.length !== 1) throw new ClearRequestError('give exactly one of "key", "gpu" or "all": true');
  let reason = DEFAULT_CLEAR_REASON;
  if (o.reason !== undefined && o.reason !== null) {
    if (typeof o.reason !== 'string' || o.reason.trim() === '' || o.reason.length > MAX_CLEAR_REASON || CONTROL_CHAR.test(o.reason)) {
      throw new ClearRequestError(`"reason" must be a non-empty string of at most ${MAX_CLEAR_REASON} characters, one line`);
    }
    reason = o.reason.trim();
  }
  if (given[0] === 'key') {
    const k = o.key;
    if (typeof k !== 'string' || k === '' || k.length > MAX_FAULT_KEY || /\s/.test(k) || CONTROL_CHAR.test(k)) {
      throw new ClearRequestError(`"key" must be a fault key like "gpu3/xid/79" (at most ${MAX_FAULT_KEY} characters, no spaces)`);
    }
    return { selector: { key: k }, reason };
  }
  if (given[0] === 'gpu') {
    const g = o.gpu;
    if (typeof g !== 'number' || !Number.isInteger(g) || g < -1 || g > MAX_GPU_INDEX) {
      throw new ClearRequestError(`"gpu" must be a GPU index 0..${MAX_GPU_INDEX} (-1 = node-level faults), got ${JSON.stringify(g)}`);
    }
    return { selector: { gpu: g }, reason };
  }
  if (o.all !== true) throw new ClearRequestError('"all" must be true');
  return { selector: { all: true }, reason };
}
