import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import { SXID_FACTS } from '../../src/xid/sxid-facts.js';
import { parseSxidLine, sxidEventInput, sxidVerdict } from '../../src/xid/sxid.js';

const TSV = '/work/shared/reference/sxid-codes.tsv';
// Real lines (gpud's sxid/README.md incident log and its tests)
const HEADLINE = '[6781753.400584] nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 20034, Fatal, Link 48 LTSSM Fault Up';
const SEVERITY = 'nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 20034, Severity 1 Engine instance 60 Sub-engine instance 00';
const DATA = 'nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Data {0x10000000, 0x10000000, 0x00000000, 0x10000000, 0x00000000}';
const NONFATAL = 'nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)';

describe('NVSwitch SXid', () => {
  it("the table holds every code of sxid-codes.tsv with the guide's flags", (ctx) => {
    if (!fs.existsSync(TSV)) {
      console.warn(`SKIP SXid TSV coverage: ${TSV} not found`);
      ctx.skip();
      return;
    }
    const [header, ...lines] = fs
      .readFileSync(TSV, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0);
    const cols = (header ?? '').split('\t');
    expect(lines).toHaveLength(93);
    const byCode = new Map(SXID_FACTS.map((f) => [f.code, f]));
    for (const l of lines) {
      const f = l.split('\t');
      const code = Number(f[cols.indexOf('sxid')]);
      expect(byCode.get(code), `SXid ${code}`).toMatchObject({
        name: f[cols.indexOf('name')],
        gpudEventType: f[cols.indexOf('gpud_event_type')],
        potentialFatal: f[cols.indexOf('potential_fatal')] === 'yes',
        alwaysFatal: f[cols.indexOf('always_fatal')] === 'yes',
      });
    }
  });

  it('parses the headline and the follow-up lines, attributed to the NVSwitch', () => {
    expect(parseSxidLine(HEADLINE)).toEqual({
      kind: 'headline',
      nvswitch: 1,
      pciShort: '0000:06:00',
      code: 20034,
      fatal: true,
      link: 48,
      detail: 'Link 48 LTSSM Fault Up',
    });
    expect(parseSxidLine(SEVERITY)).toMatchObject({ kind: 'followup', nvswitch: 2, pciShort: '0000:07:00', code: 20034 });
    expect(parseSxidLine(DATA)).toMatchObject({ kind: 'followup', nvswitch: 0, code: 20034 });
    expect(parseSxidLine(NONFATAL)).toMatchObject({ kind: 'headline', code: 12028, fatal: false, link: 32 });
    for (const bad of [
      '',
      'nvidia-nvswitch1: something else',
      'nvidia-nvswitch1: SXid (PCI:zz): 1, Fatal',
      'NVRM: Xid (PCI:0000:9b:00): 79, x',
      `${'x'.repeat(600)}nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 20034, Fatal, Link 1`,
    ])
      expect(parseSxidLine(bad), bad).toBeNull();
  });

  it("rates with the guide's flags and the driver's word", () => {
    // potentially fatal, line says Fatal: critical, reboot, fault raised on the switch
    const e = sxidEventInput(parseSxidLine(HEADLINE)!, 5);
    expect(e).toMatchObject({
      type: 'nvlink',
      system: 'NVSWITCH',
      gpuIndex: -1,
      severity: 'critical',
      action: 'reboot',
      fault: 'raise',
      key: 'nvswitch1/sxid/20034',
      timeMs: 5,
    });
    expect(e.metrics).toMatchObject({ sxid_code: '20034', nvswitch_index: '1', pci_bus_id: '0000:06:00', sxid_fatal: 'true', link: '48' });
    // potentially fatal, line says Non-fatal: warning
    expect(sxidVerdict(20034, false)).toMatchObject({ severity: 'warning', action: 'none' });
    // always fatal: critical whatever the word
    expect(sxidVerdict(22003, false)).toMatchObject({ severity: 'critical', action: 'reboot' });
    // non-fatal in the guide (gpud rates 12028 Fatal): warning, and the departure is cited
    const n = sxidEventInput(parseSxidLine(NONFATAL)!, 0);
    expect(n).toMatchObject({ severity: 'warning', action: 'none', fault: 'none' });
    expect(n.citation).toMatch(/departs from gpud/);
    // single-bit ECC: warning
    expect(sxidVerdict(11012, true).severity).toBe('warning');
    // a code not in the table: the word decides (gpud ignores these)
    expect(sxidVerdict(11111, true)).toMatchObject({ severity: 'critical', action: 'reboot' });
    expect(sxidVerdict(11111, false)).toMatchObject({ severity: 'warning', action: 'none' });
    for (const f of SXID_FACTS) if (f.alwaysFatal) expect(sxidVerdict(f.code, false).severity, `SXid ${f.code}`).toBe('critical');
  });
});
