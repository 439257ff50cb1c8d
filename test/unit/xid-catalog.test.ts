import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import { NAVARCH_FATAL_XIDS, XID_CATALOG, xidEventInput, xidInfo, recoveryActionFrom154 } from '../../src/xid/catalog.js';

const REFERENCE = '/work/shared/reference/xid-catalog.md';

describe('XID catalog', () => {
  it('covers every code of the reference table (when the reference is present)', (ctx) => {
    if (!fs.existsSync(REFERENCE)) {
      console.warn(`SKIP reference coverage: ${REFERENCE} not found`);
      ctx.skip();
      return;
    }
    const codes = [...fs.readFileSync(REFERENCE, 'utf8').matchAll(/^\| (\d+) \| ([A-Z0-9_ /]+) \|/gm)].map((m) => Number(m[1]));
    expect(codes.length).toBeGreaterThan(25);
    const ours = new Set(XID_CATALOG.map((x) => x.code));
    for (const c of codes) expect(ours.has(c), `XID ${c}`).toBe(true);
  });

  it('every entry has severity, action, citation, mnemonic, NVIDIA action', () => {
    for (const x of XID_CATALOG) {
      expect(['info', 'warning', 'critical']).toContain(x.severity);
      expect(['none', 'restart_app', 'reset_gpu', 'reboot', 'replace']).toContain(x.action);
      expect(x.citation).toMatch(new RegExp(`^NVIDIA XID catalog: ${x.code} `));
      expect(x.mnemonic).toMatch(/^[A-Z0-9_]+$/);
      expect(x.nvidiaAction.length).toBeGreaterThan(0);
      expect(x.known).toBe(true);
      expect(xidInfo(x.code)).toBe(x);
    }
    const codes = XID_CATALOG.map((x) => x.code);
    expect([...codes].sort((a, b) => a - b)).toEqual(codes);
    expect(new Set(codes).size).toBe(codes.length);
  });

  it('navarchFatal is exactly the control plane default-policy list', () => {
    expect([...NAVARCH_FATAL_XIDS]).toEqual([13, 31, 32, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 100, 119, 120]);
    for (let c = 0; c < 1100; c++) expect(xidInfo(c).navarchFatal, `XID ${c}`).toBe(NAVARCH_FATAL_XIDS.includes(c));
  });

  it('key classifications', () => {
    expect(xidInfo(79)).toMatchObject({ severity: 'critical', action: 'reboot', nvidiaAction: 'RESTART_BM' });
    expect(xidInfo(48)).toMatchObject({ severity: 'critical', action: 'reset_gpu' });
    expect(xidInfo(13)).toMatchObject({ severity: 'warning', action: 'restart_app' });
    expect(xidInfo(64).action).toBe('replace');
    expect(xidInfo(63).note).toMatch(/reset/);
    expect(xidInfo(45)).toMatchObject({ severity: 'info', action: 'none' });
  });

  it('999 stays 999; unknown and invalid codes never throw', () => {
    expect(xidInfo(999)).toMatchObject({ code: 999, known: false, severity: 'warning', action: 'none', mnemonic: 'UNKNOWN_XID' });
    expect(xidInfo(12345)).toMatchObject({ code: 12345, known: false, severity: 'warning' });
    expect(xidInfo(100)).toMatchObject({ known: false, severity: 'critical', navarchFatal: true });
    for (const bad of [-1, Number.NaN, 1.5, Number.POSITIVE_INFINITY]) expect(xidInfo(bad).known).toBe(false);
    const e = xidEventInput({ code: 999, gpuIndex: 0, gpuUuid: 'GPU-0', timeMs: 1, source: 'nvml' });
    expect(e.metrics.xid_code).toBe('999');
    expect(e.key).toBe('gpu0/xid/999');
  });
});

describe('xidEventInput', () => {
  it('builds the Navarch form', () => {
    const e = xidEventInput({ code: 79, gpuIndex: 3, gpuUuid: 'GPU-3', timeMs: 1234, source: 'kmsg', message: 'GPU has fallen off the bus.', pid: 7, processName: 'python3' });
    expect(e).toMatchObject({
      type: 'xid',
      system: 'DRIVER',
      gpuIndex: 3,
      gpuUuid: 'GPU-3',
      metrics: { xid_code: '79', pid: '7', process_name: 'python3' },
      timeMs: 1234,
      severity: 'critical',
      action: 'reboot',
      source: 'kmsg',
      key: 'gpu3/xid/79',
      fault: 'raise',
    });
    expect(e.message).toContain('GPU has fallen off the bus.');
    expect(e.citation).toContain('RESTART_BM');
  });

  it("raises faults only for reset/reboot/replace XIDs; app-level ones are one-off", () => {
    for (const x of XID_CATALOG) {
      const e = xidEventInput({ code: x.code, gpuIndex: 0, gpuUuid: '', timeMs: 0, source: 'nvml' });
      expect(e.fault).toBe(['reset_gpu', 'reboot', 'replace'].includes(x.action) ? 'raise' : 'none');
    }
  });

  it('unknown GPU is node-level (-1)', () => {
    const e = xidEventInput({ code: 48, gpuIndex: -1, gpuUuid: '', timeMs: 0, source: 'kmsg' });
    expect(e.gpuIndex).toBe(-1);
    expect(e.key).toBe('node/xid/48');
  });

  it('XID 154 takes the recommended action from the line', () => {
    expect(recoveryActionFrom154('GPU recovery action changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)')).toBe('reset_gpu');
    expect(recoveryActionFrom154('changed from 0x1 to 0x2 (Node Reboot Required)')).toBe('reboot');
    expect(recoveryActionFrom154('changed from 0x1 to 0x0 (None)')).toBe('none');
    expect(recoveryActionFrom154('nothing')).toBeNull();
    const e = xidEventInput({ code: 154, gpuIndex: 1, gpuUuid: '', timeMs: 0, source: 'kmsg', message: 'GPU recovery action changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)' });
    expect(e.action).toBe('reset_gpu');
    expect(e.fault).toBe('raise');
    expect(xidEventInput({ code: 154, gpuIndex: 1, gpuUuid: '', timeMs: 0, source: 'nvml' }).fault).toBe('none');
  });
});
