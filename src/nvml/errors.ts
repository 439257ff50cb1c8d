/**
 * NvmlError: every failure of the NVML facade. `code` is symbolic (NVML_ERROR_GPU_IS_LOST, or one
 * of the addon's own codes such as NVML_CALL_TIMEOUT), `status` the numeric nvmlReturn_t (-1 for the
 * addon's own codes), `fn` the NVML function that failed ("" when not applicable).
 */
import type { NvmlErrorCode, NvmlErrorInfo } from './types.js';

export class NvmlError extends Error {
  readonly code: NvmlErrorCode;
  readonly status: number;
  readonly fn: string;

  constructor(code: NvmlErrorCode, message: string, status = -1, fn = '') {
    super(message);
    this.code = code;
    this.status = status;
    this.fn = fn;
    Object.defineProperty(this, 'name', { value: 'NvmlError', enumerable: false, configurable: true, writable: true });
  }

  /** The plain NvmlErrorInfo shape (for snapshots, events, JSON). */
  toInfo(): NvmlErrorInfo {
    return { code: this.code, status: this.status, fn: this.fn, message: this.message };
  }

  static fromInfo(info: NvmlErrorInfo): NvmlError {
    return new NvmlError(info.code, info.message, info.status, info.fn);
  }

  /** Converts whatever the native addon threw or rejected with into an NvmlError. */
  static from(e: unknown): NvmlError {
    if (e instanceof NvmlError) return e;
    if (e !== null && typeof e === 'object') {
      const o = e as { code?: unknown; status?: unknown; fn?: unknown; message?: unknown };
      if (typeof o.code === 'string' && o.code.startsWith('NVML_')) {
        return new NvmlError(
          o.code as NvmlErrorCode,
          typeof o.message === 'string' ? o.message : o.code,
          typeof o.status === 'number' ? o.status : -1,
          typeof o.fn === 'string' ? o.fn : '',
        );
      }
    }
    const msg = e instanceof Error ? e.message : String(e);
    return new NvmlError('NVML_ERROR_UNKNOWN', msg, 999, '');
  }
}

export function isNvmlError(e: unknown): e is NvmlError {
  return e instanceof NvmlError;
}
