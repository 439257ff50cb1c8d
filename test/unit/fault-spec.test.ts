import { describe, expect, it } from 'vitest';
import { parseFakeFault } from '../../src/api/inject.js';
import { FakeBackend } from '../../src/backends/fake.js';
import { FAULT_KINDS, FAULT_SPECS, faultOutOfBounds } from '../../src/backends/fault-spec.js';
import { validateScenario } from '../../src/backends/scenario.js';
import type { FakeFault } from '../../src/backends/types.js';

const scenarioError = (entry: Record<string, unknown>): string => {
  try {
    validateScenario({ events: [{ at: 0, ...entry }] }, 's.yaml');
  } catch (e) {
    return (e as Error).message;
  }
  return 'accepted';
};
const requestError = (body: Record<string, unknown>): string => {
  try {
    parseFakeFault(body);
  } catch (e) {
    return (e as Error).message;
  }
  return 'accepted';
};

describe('one fault schema (src/backends/fault-spec.ts)', () => {
  it('lists the same kinds for the API and scenarios', async () => {
    const api = await import('../../src/api/inject.js');
    const scen = await import('../../src/backends/scenario.js');
    expect(api.FAULT_KINDS).toEqual(FAULT_KINDS);
    expect(scen.FAULT_KINDS).toEqual(FAULT_KINDS);
  });

  it('every numeric bound holds at the edge and fails one past it, in requests, scenario files and inject()', () => {
    for (const kind of FAULT_KINDS) {
      for (const [field, spec] of Object.entries(FAULT_SPECS[kind].fields)) {
        if (spec.type !== 'int' && spec.type !== 'mask' && spec.type !== 'number') continue;
        const min = spec.min as number;
        const max = spec.max as number;
        const over = spec.type === 'number' ? max + 0.5 : max + 1;
        for (const [v, ok] of [
          [min, true],
          [max, true],
          [over, Number.isSafeInteger(over) ? false : null],
        ] as Array<[number, boolean | null]>) {
          if (ok === null) continue;
          const f = { kind, gpu: 0, [field]: v };
          if (ok) expect(requestError(f), `${kind}.${field}=${v} request`).toBe('accepted');
          else expect(requestError(f), `${kind}.${field}=${v}`).toMatch(new RegExp(`^"${field}" must be`));
          const s = scenarioError({ gpu: 0, fault: kind, [field]: v });
          if (ok) expect(s, `${kind}.${field}=${v} file`).toBe('accepted');
          else expect(s, `${kind}.${field}=${v} file`).toMatch(new RegExp(`^s\\.yaml: events\\[0\\]\\.${field}: `));
          const b = faultOutOfBounds(f as FakeFault);
          if (ok) expect(b).toBeNull();
          else expect(b).toMatch(new RegExp(`^bad ${field} `));
        }
        if (min > 0) {
          expect(requestError({ kind, gpu: 0, [field]: min - 1 })).toMatch(/must be/);
          expect(scenarioError({ gpu: 0, fault: kind, [field]: min - 1 })).not.toBe('accepted');
        }
      }
    }
  });

  it('the bounds where the three used to differ are the strictest (temperature -40, xid 1..9999, fabric summary <= 255)', async () => {
    expect(requestError({ kind: 'temperature', gpu: 0, celsius: -45 })).toBe('"celsius" must be between -40 and 200, got -45');
    expect(scenarioError({ gpu: 0, fault: 'temperature', celsius: 500 })).toBe('s.yaml: events[0].celsius: 500 out of range -40..200');
    expect(scenarioError({ gpu: 0, fault: 'xid', xid: 0 })).toBe('s.yaml: events[0].xid: 0 out of range 1..9999');
    const b = new FakeBackend({ count: 1 });
    await b.open();
    expect(() => b.inject({ kind: 'fabric', gpu: 0, healthSummary: 256 })).toThrow('inject fabric: bad healthSummary 256 (expected 0..255)');
    expect(() => b.inject({ kind: 'xid', gpu: 0, xid: 10_000 })).toThrow('inject xid: bad xid 10000 (expected 1..9999)');
    await b.close();
  });

  it('keeps the one-line wording of each reader', () => {
    expect(requestError({ kind: 'ecc', gpu: 0 })).toBe('"ecc" needs "sbe" and/or "dbe"');
    expect(scenarioError({ gpu: 0, fault: 'ecc' })).toBe('accepted');
    expect(scenarioError({ gpu: 0, fault: 'clock_reasons', mask: '0x48' })).toBe('accepted');
    expect(requestError({ kind: 'xid', gpu: 0, xid: 79, message: 'x'.repeat(1025) })).toBe('"message" must be a string of at most 1024 characters');
    for (const m of [requestError({ kind: 'power', gpu: 0, watts: 'lots' }), scenarioError({ gpu: 0, fault: 'power', watts: 'lots' })])
      expect(m).not.toContain('\n');
  });
});
