import { describe, expect, it } from 'vitest';
import { parseXidLine } from '../../src/sources/kmsg-parse.js';
import { xidEventInput, xidInfo } from '../../src/xid/catalog.js';
import { nvlink5Verdict, parseNvlink5 } from '../../src/xid/nvlink5.js';

// Real lines (gpud's test data, from NVIDIA's catalog and production logs), and one constructed
// with pid='<unknown>' (a form gpud's decoder misses).
const LINES = {
  netirLinkFatal: 'NVRM: Xid (PCI:0009:01:00): 149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)',
  netirGeneral: 'NVRM: Xid (PCI:0019:01:00): 149, NETIR Fatal XC0 i0 Link -1 (0x000fe406 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)',
  berNonfatal: 'NVRM: Xid (PCI:0018:01:00): 149, NETIR_BER_EVENT Nonfatal XC0 i0 Link 03 (0x00086226 0x00000001 0x00000000 0x00000000 0x00000000 0x00000000)',
  rlwPid:
    'NVRM: Xid (PCI:0018:01:00): 145, pid=876767, name=ray::WorkerDict, RLW_RXPIPE Nonfatal XC0 i0 Link 13 (0x0409a0c2 0x00000008 0x00000001 0x00000000 0x00100000 0x00000004)',
  srcTrackXc1: 'NVRM: Xid (PCI:0019:01:00): 145, RLW_SRC_TRACK Nonfatal XC1 i0 Link 12 (0x040988e2 0x00000008 0x00000000 0x00000000 0x00000000 0x00000000)',
  unknownPidFatal:
    "NVRM: Xid (PCI:0008:01:00): 149, pid='<unknown>', name=<unknown>, NETIR_LINK_EVT  Fatal   XC0 i0 Link 08 (0x004505c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)",
  tlwPipe: 'NVRM: Xid (PCI:0008:01:00): 146, TLW_RX/TLW_RX_PIPE0 Fatal XC0 i0 Link 02 (0x0000000a 0x00000004 0x00000000 0x00000000 0x00000000 0x00000000)',
};

function event(line: string) {
  const x = parseXidLine(line);
  expect(x, line).not.toBeNull();
  return xidEventInput({
    code: x!.code,
    gpuIndex: 2,
    gpuUuid: 'GPU-2',
    timeMs: 1,
    source: 'kmsg',
    message: x!.detail,
    ...(x!.pid !== undefined ? { pid: x!.pid } : {}),
  });
}

describe('NVLink5 XID decoding (144-150)', () => {
  it('decodes every field of a real line into the event metrics', () => {
    const e = event(LINES.netirLinkFatal);
    expect(e.metrics).toMatchObject({
      xid_code: '149',
      nvlink_unit: 'NETIR_LINK_EVT',
      nvlink_fatal: 'true',
      nvlink_xc: '0',
      nvlink_injected: '0',
      nvlink_link: '1',
      nvlink_intrinfo: '0x021425c6',
      nvlink_error_status: '0x00000000',
      nvlink_sub_code: '33', // (0x021425c6 >> 20) & 0x3f
      nvlink_word2: '0x00000000',
    });
    const r = event(LINES.rlwPid);
    expect(r.metrics).toMatchObject({
      xid_code: '145',
      pid: '876767',
      nvlink_unit: 'RLW_RXPIPE',
      nvlink_link: '13',
      nvlink_error_status: '0x00000008',
      nvlink_word2: '0x00000001',
      nvlink_word4: '0x00100000',
      nvlink_word5: '0x00000004',
      nvlink_sub_code: '0',
    });
    expect(event(LINES.srcTrackXc1).metrics.nvlink_xc).toBe('1');
    expect(event(LINES.netirGeneral).metrics.nvlink_link).toBe('-1');
    expect(event(LINES.tlwPipe).metrics.nvlink_unit).toBe('TLW_RX/TLW_RX_PIPE0');
  });

  it('a line that says Fatal is critical and raises a GPU-reset fault, never less', () => {
    for (const l of [LINES.netirLinkFatal, LINES.netirGeneral, LINES.unknownPidFatal, LINES.tlwPipe]) {
      const e = event(l);
      expect(e, l).toMatchObject({ severity: 'critical', action: 'reset_gpu', fault: 'raise' });
      expect(e.citation).toMatch(/driver says Fatal/);
    }
    // without decoding, the catalog's base entry would have said warning
    expect(xidInfo(149).severity).toBe('warning');
  });

  it('a line that says Nonfatal is a warning and raises no GPU-reset fault', () => {
    for (const l of [LINES.berNonfatal, LINES.rlwPid, LINES.srcTrackXc1]) {
      const e = event(l);
      expect(e, l).toMatchObject({ severity: 'warning', action: 'none', fault: 'none' });
      expect(e.metrics.nvlink_fatal).toBe('false');
    }
  });

  it('leaves other codes and undecodable text to the catalog', () => {
    expect(nvlink5Verdict(48, 'NETIR Fatal XC0 i0 Link -1 (0x0 0x0)')).toBeNull();
    for (const bad of [
      '',
      'NETIR Fatal XC0 i0 Link -1',
      'NETIR Maybe XC0 i0 Link 1 (0x0 0x0)',
      'NETIR Fatal XC2 i0 Link 1 (0x0 0x0)',
      'NETIR Fatal XC0 i0 Link 1 (0x0)',
      'netir Fatal XC0 i0 Link 1 (0x0 0x0)',
      'NETIR Fatal XC0 i0 Link 1 (0x0 zz)',
      `${'A'.repeat(600)} Fatal XC0 i0 Link 1 (0x0 0x0)`,
    ])
      expect(parseNvlink5(bad), bad).toBeNull();
    const e = xidEventInput({ code: 149, gpuIndex: 0, gpuUuid: '', timeMs: 0, source: 'nvml' });
    expect(e).toMatchObject({ severity: 'warning', action: 'reset_gpu' });
    expect(e.metrics.nvlink_unit).toBeUndefined();
  });
});
