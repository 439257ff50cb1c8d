#!/usr/bin/env node
// Compares two normalised GPU inventory dumps (pynvml_dump.py vs addon_dump.mjs) field by field.
//   node scripts/gpu-check/compare.mjs pynvml.json addon.json
// Prints every difference on its own line and exits 1 if there is any (2 on bad input).
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export const SYSTEM_FIELDS = ['driverVersion', 'nvmlVersion', 'cudaDriverVersion'];
export const DEVICE_FIELDS = [
  'uuid',
  'name',
  'serial',
  'pciBusId',
  'minorNumber',
  'memoryTotalBytes',
  'powerLimitW',
  'pcieLinkGenMax',
  'pcieLinkWidthMax',
  'eccModeCurrent',
  'eccModePending',
  'persistenceMode',
];

function show(v) {
  return v === undefined ? 'missing' : JSON.stringify(v);
}

function same(a, b) {
  // integers (bytes, counts) must match exactly; watts derived from milliwatts may differ in the last float bit
  if (typeof a === 'number' && typeof b === 'number') return a === b || (!(Number.isInteger(a) && Number.isInteger(b)) && Math.abs(a - b) < 1e-6);
  return a === b;
}

/** Returns the list of differences (strings); empty when the dumps agree on every field. */
export function compareDumps(left, right) {
  const diffs = [];
  const ln = left.source ?? 'left',
    rn = right.source ?? 'right';
  for (const f of SYSTEM_FIELDS) {
    const a = left.system?.[f],
      b = right.system?.[f];
    if (a === undefined || b === undefined || !same(a, b)) diffs.push(`system.${f}: ${ln}=${show(a)} ${rn}=${show(b)}`);
  }
  const ld = left.devices ?? [],
    rd = right.devices ?? [];
  if (ld.length !== rd.length) diffs.push(`device count: ${ln}=${ld.length} ${rn}=${rd.length}`);
  for (let i = 0; i < Math.min(ld.length, rd.length); i++) {
    for (const f of DEVICE_FIELDS) {
      const a = ld[i][f],
        b = rd[i][f];
      if (a === undefined || b === undefined || !same(a, b)) diffs.push(`device ${i} ${f}: ${ln}=${show(a)} ${rn}=${show(b)}`);
    }
  }
  return diffs;
}

function load(path) {
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${path}: ${e.message}`);
  }
  try {
    const v = JSON.parse(text);
    if (!v || typeof v !== 'object' || !Array.isArray(v.devices) || typeof v.system !== 'object') throw new Error('not a dump (needs "system" and "devices")');
    return v;
  } catch (e) {
    throw new Error(`${path}: ${e.message}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [a, b] = process.argv.slice(2);
  if (!a || !b) {
    console.error('usage: node scripts/gpu-check/compare.mjs LEFT.json RIGHT.json');
    process.exit(2);
  }
  let left, right;
  try {
    left = load(a);
    right = load(b);
  } catch (e) {
    console.error(`compare: ${e.message}`);
    process.exit(2);
  }
  const diffs = compareDumps(left, right);
  const n = Math.min(left.devices.length, right.devices.length);
  if (diffs.length === 0) {
    console.log(
      `compare: ${left.source} and ${right.source} agree on ${SYSTEM_FIELDS.length} system fields and ${DEVICE_FIELDS.length} fields of ${n} device(s)`,
    );
    process.exit(0);
  }
  for (const d of diffs) console.log(`DIFF ${d}`);
  console.log(`compare: ${diffs.length} difference(s) between ${left.source} and ${right.source}`);
  process.exit(1);
}
