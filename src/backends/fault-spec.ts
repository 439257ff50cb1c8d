/**
 * An injected fault: its type, its fields and their bounds, in one place. Three readers use it:
 * `POST /inject` and `navarch-agent inject` (src/api/inject.ts, "request" wording), scenario files
 * (src/backends/scenario.ts, "file" wording) and the fake backend's inject() (src/backends/fake.ts,
 * which checks the bounds of a fault built in code). Every problem is one line.
 */

/** A fault the fake backend can inject (scenario files, /inject, `navarch-agent inject`). */
export type FakeFault =
  | { kind: 'xid'; gpu: number; xid: number; message?: string }
  | { kind: 'ecc'; gpu: number; sbe?: number; dbe?: number }
  | { kind: 'temperature'; gpu: number; celsius: number }
  | { kind: 'gpu_lost'; gpu: number }
  | { kind: 'nvlink_down'; gpu: number; link: number }
  | { kind: 'power'; gpu: number; watts: number }
  | { kind: 'pcie_replay'; gpu: number; count: number }
  | { kind: 'clock_reasons'; gpu: number; mask: number }
  | { kind: 'remapped_rows'; gpu: number; pending?: boolean; failure?: boolean; uncorrected?: number }
  /** NVML fabric info fields (src/sources/fabric.ts); unset ones keep their value (healthy at first). */
  | { kind: 'fabric'; gpu: number; state?: number; status?: number; healthMask?: number; healthSummary?: number }
  | { kind: 'recover'; gpu?: number };

export type FaultKind = FakeFault['kind'];

/** int: a whole number; mask: a whole number, in a file also "0x48"; number: any finite number. */
export type FieldType = 'int' | 'mask' | 'number' | 'bool' | 'string';

export interface FieldSpec {
  type: FieldType;
  required: boolean;
  /** Bounds of a number (inclusive); the longest string for 'string'. */
  min?: number;
  max?: number;
}

/** Highest GPU index a fault may name when the GPU count is not known. */
export const MAX_GPU_INDEX = 1023;

const U32 = 2 ** 32 - 1;
const req = (type: FieldType, min?: number, max?: number): FieldSpec => ({ type, required: true, min, max });
const opt = (type: FieldType, min?: number, max?: number): FieldSpec => ({ type, required: false, min, max });

/**
 * Per kind: its fields besides `gpu` (0..MAX_GPU_INDEX, required except for recover), and for
 * the kinds whose fields are all optional whether a request must set at least one (`needsOne`).
 */
export const FAULT_SPECS: Readonly<Record<FaultKind, { fields: Record<string, FieldSpec>; needsOne?: true }>> = {
  xid: { fields: { xid: req('int', 1, 9999), message: opt('string', 0, 1024) } },
  ecc: { fields: { sbe: opt('int', 0, 1e9), dbe: opt('int', 0, 1e9) }, needsOne: true },
  temperature: { fields: { celsius: req('number', -40, 200) } },
  gpu_lost: { fields: {} },
  nvlink_down: { fields: { link: req('int', 0, 17) } },
  power: { fields: { watts: req('number', 0, 5000) } },
  pcie_replay: { fields: { count: req('int', 0, 1e12) } },
  clock_reasons: { fields: { mask: req('mask', 0, Number.MAX_SAFE_INTEGER) } },
  remapped_rows: { fields: { pending: opt('bool'), failure: opt('bool'), uncorrected: opt('int', 0, 1e9) }, needsOne: true },
  fabric: {
    fields: { state: opt('int', 0, 255), status: opt('int', 0, U32), healthMask: opt('mask', 0, U32), healthSummary: opt('int', 0, 255) },
    needsOne: true,
  },
  recover: { fields: {} },
};

export const FAULT_KINDS = Object.keys(FAULT_SPECS) as FaultKind[];

export function isFaultKind(v: unknown): v is FaultKind {
  return typeof v === 'string' && Object.hasOwn(FAULT_SPECS, v);
}

export const GPU_FIELD: FieldSpec = req('int', 0, MAX_GPU_INDEX);

/** One field's problem; `field` null for a problem of the whole fault ("needs one of"). */
export class FaultSpecError extends Error {
  override name = 'FaultSpecError';
  constructor(
    readonly field: string | null,
    message: string,
  ) {
    super(message);
  }
}

/**
 * "request": an HTTP/CLI body, strings of digits accepted for numbers, unknown fields ignored,
 * messages like `"xid" must be <= 9999, got 10000`. "file": a scenario entry, typed values only
 * (masks also as "0x48"), unknown fields rejected, messages like `expected a whole number >= 0`.
 */
export type SpecStyle = 'request' | 'file';

const range = (s: FieldSpec): string => `${s.min}..${s.max}`;

/** Check one value against its spec; returns it typed. */
export function checkField(kind: FaultKind, field: string, spec: FieldSpec, v: unknown, style: SpecStyle): number | boolean | string {
  const q = `"${field}"`;
  const bad = (request: string, file: string): never => {
    throw new FaultSpecError(field, style === 'request' ? `${q} ${request}` : file);
  };
  switch (spec.type) {
    case 'int':
    case 'mask': {
      let n: unknown = v;
      if (typeof v === 'string') {
        const t = v.trim();
        if (style === 'request' && /^-?\d+$/.test(t)) n = Number(t);
        else if (style === 'file' && spec.type === 'mask' && /^(0x[0-9a-f]+|\d+)$/i.test(t)) n = Number(t);
      }
      if (typeof n !== 'number' || !Number.isInteger(n) || (style === 'file' && (!Number.isSafeInteger(n) || n < 0))) {
        return bad(
          `must be an integer, got ${JSON.stringify(v)}`,
          spec.type === 'mask' ? `expected a bit mask (number or "0x48"), got ${JSON.stringify(v)}` : `expected a whole number >= 0, got ${JSON.stringify(v)}`,
        );
      }
      if (spec.min !== undefined && n < spec.min) return bad(`must be >= ${spec.min}, got ${n}`, `${n} out of range ${range(spec)}`);
      if (spec.max !== undefined && n > spec.max) return bad(`must be <= ${spec.max}, got ${n}`, `${n} out of range ${range(spec)}`);
      return n;
    }
    case 'number': {
      const n = style === 'request' && typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isFinite(n)) return bad(`must be a number, got ${JSON.stringify(v)}`, `expected a number, got ${JSON.stringify(v)}`);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max))
        return bad(`must be between ${spec.min} and ${spec.max}, got ${n}`, `${n} out of range ${range(spec)}`);
      return n;
    }
    case 'bool':
      if (v === true || (style === 'request' && v === 'true')) return true;
      if (v === false || (style === 'request' && v === 'false')) return false;
      return bad(`must be true or false, got ${JSON.stringify(v)}`, `expected true or false, got ${JSON.stringify(v)}`);
    case 'string':
      if (typeof v === 'string' && v.length <= (spec.max ?? 1024)) return v;
      return bad(`must be a string of at most ${spec.max ?? 1024} characters`, `expected a string (at most ${spec.max ?? 1024} characters)`);
  }
  void kind;
  throw new FaultSpecError(field, `unknown field type`);
}

function missing(kind: FaultKind, field: string, style: SpecStyle): FaultSpecError {
  return new FaultSpecError(field, style === 'request' ? `"${field}" is required for kind "${kind}"` : `missing (required by fault "${kind}")`);
}

function needsOneMessage(kind: FaultKind): string {
  const names = Object.keys(FAULT_SPECS[kind].fields).map((f) => `"${f}"`);
  const list = names.length > 1 ? `${names.slice(0, -1).join(', ')} and/or ${names[names.length - 1]}` : (names[0] ?? '');
  return `"${kind}" needs ${list}`;
}

/**
 * Validate a fault's fields (not `gpu`, the callers bound it against their node) into a FakeFault.
 * `values` holds the fields as given. A request must set one of the optional fields of a
 * `needsOne` kind; a scenario file may leave them all out (the fake backend's defaults: ecc adds
 * one uncorrected error, remapped_rows sets pending).
 */
export function checkFaultFields(kind: FaultKind, gpu: number | undefined, values: Readonly<Record<string, unknown>>, style: SpecStyle): FakeFault {
  const spec = FAULT_SPECS[kind];
  const fault: Record<string, unknown> = { kind };
  if (gpu !== undefined) fault.gpu = gpu;
  for (const [field, fs] of Object.entries(spec.fields)) {
    const v = values[field];
    if (v === undefined || (style === 'request' && v === null)) {
      if (fs.required) throw missing(kind, field, style);
      continue;
    }
    fault[field] = checkField(kind, field, fs, v, style);
  }
  if (spec.needsOne && style === 'request' && Object.keys(spec.fields).every((f) => fault[f] === undefined)) {
    throw new FaultSpecError(null, needsOneMessage(kind));
  }
  return fault as FakeFault;
}

/**
 * Bounds of a fault built in code (the fake backend's inject()): the first field out of its
 * bounds, as "bad <field> <value> (expected <min>..<max>)", or null when every field is in bounds.
 */
export function faultOutOfBounds(fault: FakeFault): string | null {
  const spec = FAULT_SPECS[fault.kind];
  if (!spec) return null;
  for (const [field, fs] of Object.entries(spec.fields)) {
    const v = (fault as Record<string, unknown>)[field];
    if (v === undefined) continue;
    try {
      checkField(fault.kind, field, fs, v, 'file');
      if (fs.type === 'string' || fs.type === 'bool') continue;
    } catch {
      return `bad ${field} ${String(v)}${fs.min !== undefined ? ` (expected ${range(fs)})` : ''}`;
    }
  }
  return null;
}
