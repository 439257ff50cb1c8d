import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import {
  BY_RESOLUTION,
  DECISIONS,
  NAVARCH_FATAL_XIDS,
  XID_CATALOG,
  departures,
  decisionFor,
  xidEventInput,
  xidInfo,
  recoveryActionFrom154,
} from '../../src/xid/catalog.js';
import { XID_FACTS } from '../../src/xid/nvidia-facts.js';

const REFERENCE = '/work/shared/reference/xid-catalog.md';
const TSV = '/work/shared/reference/xid-codes.tsv';

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
    // 100 (NVJPG2) is in NVIDIA's catalog (RESTART_APP); Navarch's policy still calls it fatal.
    expect(xidInfo(100)).toMatchObject({ known: true, nvidiaAction: 'RESTART_APP', severity: 'warning', navarchFatal: true });
    expect(xidInfo(173)).toMatchObject({ code: 173, known: false, severity: 'warning', action: 'none' });
    for (const bad of [-1, Number.NaN, 1.5, Number.POSITIVE_INFINITY]) expect(xidInfo(bad).known).toBe(false);
    const e = xidEventInput({ code: 999, gpuIndex: 0, gpuUuid: 'GPU-0', timeMs: 1, source: 'nvml' });
    expect(e.metrics.xid_code).toBe('999');
    expect(e.key).toBe('gpu0/xid/999');
  });
});

describe('xidEventInput', () => {
  it('builds the Navarch form', () => {
    const e = xidEventInput({
      code: 79,
      gpuIndex: 3,
      gpuUuid: 'GPU-3',
      timeMs: 1234,
      source: 'kmsg',
      message: 'GPU has fallen off the bus.',
      pid: 7,
      processName: 'python3',
    });
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

  it('raises faults only for reset/reboot/replace XIDs; app-level ones are one-off', () => {
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
    expect(recoveryActionFrom154('changed from 0x0 to 0x5 (Recover IMEX Domain)')).toBe('restart_app');
    expect(recoveryActionFrom154('changed from 0x0 to 0x3 (Drain P2P)')).toBe('reset_gpu');
    expect(recoveryActionFrom154('changed from 0x0 to 0x6')).toBeNull();
    const e = xidEventInput({
      code: 154,
      gpuIndex: 1,
      gpuUuid: '',
      timeMs: 0,
      source: 'kmsg',
      message: 'GPU recovery action changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)',
    });
    expect(e.action).toBe('reset_gpu');
    expect(e.fault).toBe('raise');
    expect(xidEventInput({ code: 154, gpuIndex: 1, gpuUuid: '', timeMs: 0, source: 'nvml' }).fault).toBe('none');
  });
});

describe('full XID catalog (NVIDIA codes 1-172)', () => {
  it("every code of xid-codes.tsv is in the catalog with NVIDIA's resolutions and the other tools' views", (ctx) => {
    if (!fs.existsSync(TSV)) {
      console.warn(`SKIP TSV coverage: ${TSV} not found`);
      ctx.skip();
      return;
    }
    const [header, ...lines] = fs
      .readFileSync(TSV, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0);
    const cols = (header ?? '').split('\t');
    const at = (f: string[], name: string) => f[cols.indexOf(name)] ?? '';
    const dash = (s: string) => (s === '-' ? '' : s);
    expect(lines).toHaveLength(172);
    for (const line of lines) {
      const f = line.split('\t');
      const code = Number(at(f, 'xid'));
      const x = xidInfo(code);
      expect(x.known, `XID ${code}`).toBe(true);
      expect(x.nvidiaAction, `XID ${code} immediate`).toBe(at(f, 'nvidia_immediate_resolution'));
      expect(x.nvidiaInvestigation, `XID ${code} investigatory`).toBe(dash(at(f, 'nvidia_investigatory_resolution')));
      expect(x.description, `XID ${code}`).toBe(at(f, 'nvidia_description'));
      expect(at(f, 'nvidia_mnemonic').split(' / ')).toContain(x.mnemonic);
      expect(x.eksFatal, `XID ${code} EKS`).toBe(at(f, 'eks_fatal_condition') === 'yes');
      expect(x.dcgm, `XID ${code} DCGM`).toBe(at(f, 'dcgm_health'));
      const gpudType = at(f, 'gpud_event_type');
      if (gpudType === '(not in gpud)') expect(x.gpud).toMatch(/not in gpud/);
      else expect(x.gpud?.startsWith(gpudType), `XID ${code} gpud`).toBe(true);
    }
  });

  it('holds exactly the codes 1-172, and nothing else is known', () => {
    expect(XID_CATALOG.map((x) => x.code)).toEqual(Array.from({ length: 172 }, (_, i) => i + 1));
    expect(xidInfo(0).known).toBe(false);
    expect(xidInfo(173).known).toBe(false);
    for (const c of NAVARCH_FATAL_XIDS) expect(xidInfo(c).known, `XID ${c}`).toBe(true);
  });

  it('the codes EKS or gpud call fatal that the old catalog left at "warning, no fault" are critical and raise a fault', () => {
    for (const c of [46, 54, 110, 136, 142, 151, 155, 156, 158]) {
      const x = xidInfo(c);
      expect(x.severity, `XID ${c}`).toBe('critical');
      expect(['reset_gpu', 'reboot', 'replace'], `XID ${c}`).toContain(x.action);
      expect(xidEventInput({ code: c, gpuIndex: 0, gpuUuid: '', timeMs: 0, source: 'kmsg' }).fault, `XID ${c}`).toBe('raise');
    }
  });

  it("severity follows NVIDIA's resolution unless the code has its own decision", () => {
    for (const f of XID_FACTS) {
      const x = xidInfo(f.code);
      const own = DECISIONS[f.code];
      const rule = BY_RESOLUTION[f.immediate];
      if (own) expect({ s: x.severity, a: x.action }).toEqual({ s: own.severity, a: own.action });
      else {
        expect(rule, `XID ${f.code}: resolution ${f.immediate} has no rule and no decision`).toBeDefined();
        expect({ s: x.severity, a: x.action }).toEqual({ s: rule!.severity, a: rule!.action });
      }
      // a critical verdict only where NVIDIA's resolution takes the GPU out of service, or a decision says why
      if (x.severity === 'critical' && !own) expect(['RESET_GPU', 'RESTART_BM', 'RESTART_VM', 'CHECK_MECHANICALS']).toContain(f.immediate);
    }
    expect(xidInfo(79)).toMatchObject({ severity: 'critical', action: 'reboot' });
    expect(xidInfo(151)).toMatchObject({ severity: 'critical', action: 'reboot' });
    expect(xidInfo(8)).toMatchObject({ severity: 'warning', action: 'restart_app' });
    expect(xidInfo(107)).toMatchObject({ severity: 'info', action: 'none' });
    expect(xidInfo(1)).toMatchObject({ severity: 'warning', action: 'none' });
  });

  it('every departure from NVIDIA, gpud, DCGM or EKS has a note naming whom it departs from, and why', () => {
    let departing = 0;
    for (const f of XID_FACTS) {
      const x = xidInfo(f.code);
      const away = departures(f, decisionFor(f));
      if (away.length === 0) {
        expect(x.citation).not.toMatch(/departs/);
        continue;
      }
      departing++;
      expect(x.note, `XID ${f.code}`).toBeDefined();
      for (const who of away) expect(x.note).toContain(who);
      expect(x.note).toContain(decisionFor(f).why);
      expect(x.citation).toMatch(/navarch-agent: departs \(see note\)$/);
    }
    expect(departing).toBeGreaterThan(20);
    // concrete ones: gpud calls 32 fatal, NVIDIA says restart the app; EKS calls 63 fatal
    expect(xidInfo(32).note).toMatch(/^departs from gpud \(Fatal/);
    expect(xidInfo(63).note).toMatch(/EKS \(fatal\)/);
    expect(xidInfo(133).gpud).toMatch(/not in gpud/);
  });
});
