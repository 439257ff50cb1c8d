/**
 * Validation of fault-injection requests (`POST /inject`, `navarch-agent inject`) into the
 * backends' FakeFault union, by the one fault schema (src/backends/fault-spec.ts). Every problem
 * is one clear sentence.
 */
import { checkField, checkFaultFields, FAULT_KINDS, FaultSpecError, GPU_FIELD, isFaultKind, MAX_GPU_INDEX } from '../backends/fault-spec.js';
import type { FakeFault } from '../backends/types.js';

export { FAULT_KINDS };

export class InjectValidationError extends Error {
  override name = 'InjectValidationError';
}

/**
 * Parse and validate one fault. `gpuCount` bounds the gpu index when known.
 */
export function parseFakeFault(body: unknown, gpuCount?: number): FakeFault {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new InjectValidationError('body must be a JSON object like {"kind":"xid","gpu":3,"xid":79}');
  }
  const o = body as Record<string, unknown>;
  const kind = o.kind;
  if (!isFaultKind(kind)) {
    throw new InjectValidationError(`"kind" must be one of ${FAULT_KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  }
  try {
    let gpu: number | undefined;
    if (o.gpu === undefined || o.gpu === null) {
      if (kind !== 'recover') throw new FaultSpecError('gpu', `"gpu" is required for kind "${kind}"`);
    } else {
      const max = gpuCount !== undefined ? Math.max(0, gpuCount - 1) : MAX_GPU_INDEX;
      gpu = checkField(kind, 'gpu', { ...GPU_FIELD, max }, o.gpu, 'request') as number;
      if (gpuCount === 0) throw new FaultSpecError('gpu', 'this agent has no GPUs to inject into');
    }
    return checkFaultFields(kind, gpu, o, 'request');
  } catch (err) {
    if (err instanceof FaultSpecError) throw new InjectValidationError(err.message);
    throw err;
  }
}
