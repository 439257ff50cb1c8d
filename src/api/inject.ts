/**
 * Validation of fault-injection requests (`POST /inject`, `navarch-agent inject`) into the
 * backends' FakeFault union. Every problem is one clear sentence.
 */
import type { FakeFault } from '../backends/types.js';

export class InjectValidationError extends Error {
  override name = 'InjectValidationError';
}

export const FAULT_KINDS = [
  'xid',
  'ecc',
  'temperature',
  'gpu_lost',
  'nvlink_down',
  'power',
  'pcie_replay',
  'clock_reasons',
  'remapped_rows',
  'fabric',
  'recover',
] as const;

type Obj = Record<string, unknown>;

function int(o: Obj, key: string, opts: { required: boolean; min?: number; max?: number }): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (opts.required) throw new InjectValidationError(`"${key}" is required for kind "${String(o.kind)}"`);
    return undefined;
  }
  const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw new InjectValidationError(`"${key}" must be an integer, got ${JSON.stringify(v)}`);
  if (opts.min !== undefined && n < opts.min) throw new InjectValidationError(`"${key}" must be >= ${opts.min}, got ${n}`);
  if (opts.max !== undefined && n > opts.max) throw new InjectValidationError(`"${key}" must be <= ${opts.max}, got ${n}`);
  return n;
}

function num(o: Obj, key: string, min: number, max: number): number {
  const v = o[key];
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (v === undefined || v === null) throw new InjectValidationError(`"${key}" is required for kind "${String(o.kind)}"`);
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new InjectValidationError(`"${key}" must be a number, got ${JSON.stringify(v)}`);
  if (n < min || n > max) throw new InjectValidationError(`"${key}" must be between ${min} and ${max}, got ${n}`);
  return n;
}

function bool(o: Obj, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw new InjectValidationError(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
}

/**
 * Parse and validate one fault. `gpuCount` bounds the gpu index when known.
 */
export function parseFakeFault(body: unknown, gpuCount?: number): FakeFault {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new InjectValidationError('body must be a JSON object like {"kind":"xid","gpu":3,"xid":79}');
  }
  const o = body as Obj;
  const kind = o.kind;
  if (typeof kind !== 'string' || !(FAULT_KINDS as readonly string[]).includes(kind)) {
    throw new InjectValidationError(`"kind" must be one of ${FAULT_KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  }
  const maxGpu = gpuCount !== undefined ? Math.max(0, gpuCount - 1) : 1023;
  const gpuReq = kind !== 'recover';
  const gpu = int(o, 'gpu', { required: gpuReq, min: 0, max: maxGpu });
  if (gpu !== undefined && gpuCount !== undefined && gpuCount === 0) {
    throw new InjectValidationError('this agent has no GPUs to inject into');
  }
  const g = gpu as number;
  switch (kind) {
    case 'xid': {
      const xid = int(o, 'xid', { required: true, min: 1, max: 9999 }) as number;
      const message = o.message;
      if (message !== undefined && (typeof message !== 'string' || message.length > 1024)) {
        throw new InjectValidationError('"message" must be a string of at most 1024 characters');
      }
      return message === undefined ? { kind, gpu: g, xid } : { kind, gpu: g, xid, message };
    }
    case 'ecc': {
      const sbe = int(o, 'sbe', { required: false, min: 0, max: 1e9 });
      const dbe = int(o, 'dbe', { required: false, min: 0, max: 1e9 });
      if (sbe === undefined && dbe === undefined) throw new InjectValidationError('"ecc" needs "sbe" and/or "dbe"');
      return { kind, gpu: g, ...(sbe !== undefined ? { sbe } : {}), ...(dbe !== undefined ? { dbe } : {}) };
    }
    case 'temperature':
      return { kind, gpu: g, celsius: num(o, 'celsius', -50, 200) };
    case 'gpu_lost':
      return { kind, gpu: g };
    case 'nvlink_down':
      return { kind, gpu: g, link: int(o, 'link', { required: true, min: 0, max: 17 }) as number };
    case 'power':
      return { kind, gpu: g, watts: num(o, 'watts', 0, 5000) };
    case 'pcie_replay':
      return { kind, gpu: g, count: int(o, 'count', { required: true, min: 0, max: 1e12 }) as number };
    case 'clock_reasons':
      return { kind, gpu: g, mask: int(o, 'mask', { required: true, min: 0, max: 2 ** 53 - 1 }) as number };
    case 'remapped_rows': {
      const pending = bool(o, 'pending');
      const failure = bool(o, 'failure');
      const uncorrected = int(o, 'uncorrected', { required: false, min: 0, max: 1e9 });
      if (pending === undefined && failure === undefined && uncorrected === undefined) {
        throw new InjectValidationError('"remapped_rows" needs "pending", "failure" and/or "uncorrected"');
      }
      return {
        kind,
        gpu: g,
        ...(pending !== undefined ? { pending } : {}),
        ...(failure !== undefined ? { failure } : {}),
        ...(uncorrected !== undefined ? { uncorrected } : {}),
      };
    }
    case 'fabric': {
      const f = {
        state: int(o, 'state', { required: false, min: 0, max: 255 }),
        status: int(o, 'status', { required: false, min: 0, max: 2 ** 32 - 1 }),
        healthMask: int(o, 'healthMask', { required: false, min: 0, max: 2 ** 32 - 1 }),
        healthSummary: int(o, 'healthSummary', { required: false, min: 0, max: 255 }),
      };
      const set = Object.fromEntries(Object.entries(f).filter(([, v]) => v !== undefined)) as Omit<Extract<FakeFault, { kind: 'fabric' }>, 'kind' | 'gpu'>;
      if (Object.keys(set).length === 0) throw new InjectValidationError('"fabric" needs "state", "status", "healthMask" and/or "healthSummary"');
      return { kind, gpu: g, ...set };
    }
    case 'recover':
      return gpu === undefined ? { kind } : { kind, gpu };
    default:
      throw new InjectValidationError(`unsupported kind ${kind}`);
  }
}
