import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatKmsgRecord, normalizePciBusId, parseKmsgRecord, parseNvrmLine, parseXidLine, MAX_MESSAGE_CHARS } from '../../src/sources/kmsg-parse.js';

describe('parseKmsgRecord', () => {
  it('parses the raw record from the catalog', () => {
    const r = parseKmsgRecord(
      '4,1227,437812449932,c;NVRM: Xid (PCI:0000:00:16): 119, pid=36055, name=dcgm-exporter, Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 10 (FREE) (0x5c000001 0x0).',
    );
    expect(r).not.toBeNull();
    expect(r?.facility).toBe(0);
    expect(r?.level).toBe(4);
    expect(r?.seq).toBe(1227n);
    expect(r?.usecSinceBoot).toBe(437812449932);
    expect(r?.flags).toBe('c');
    expect(r?.message.startsWith('NVRM: Xid (PCI:0000:00:16): 119')).toBe(true);
    expect(r?.dict).toEqual({});
  });

  it('parses continuation lines, extra header fields, facility, escapes and 64-bit seqs', () => {
    const r = parseKmsgRecord('30,18446744073709551615,5,-,caller=T1;tab\\x09here \\xc3\\xa9\n SUBSYSTEM=pci\n DEVICE=+pci:0000:41:00.0\n');
    expect(r?.facility).toBe(3);
    expect(r?.level).toBe(6);
    expect(r?.seq).toBe(18446744073709551615n);
    expect(r?.message).toBe('tab\there é');
    expect(r?.dict).toEqual({ SUBSYSTEM: 'pci', DEVICE: '+pci:0000:41:00.0' });
  });

  it('accepts bytes', () => {
    const r = parseKmsgRecord(Buffer.from('6,2,3,-;hello\n'));
    expect(r?.message).toBe('hello');
  });

  it('returns null for garbage', () => {
    for (const g of [
      '',
      ';',
      'hello',
      '1,2,3;x',
      'a,b,c,d;x',
      '1,2,3,-',
      '-1,2,3,-;x',
      '1,2,99999999999999999999999,-;x',
      `${'1'.repeat(200)},2,3,-;x`,
      '1,2,3,??;x',
    ]) {
      expect(parseKmsgRecord(g), JSON.stringify(g)).toBeNull();
    }
  });

  it('handles a 1 MB line quickly and truncates it', () => {
    const big = `6,7,8,-;${'A'.repeat(1024 * 1024)}`;
    const t0 = performance.now();
    const r = parseKmsgRecord(big);
    const noHeader = parseKmsgRecord('x'.repeat(1024 * 1024));
    const manyCommas = parseKmsgRecord(','.repeat(1024 * 1024));
    const nvrm = parseNvrmLine(`NVRM: Xid (PCI:0000:01:00): 13, ${'pid='.repeat(250_000)}`);
    const elapsed = performance.now() - t0;
    expect(r?.truncated).toBe(true);
    expect(r?.message.length).toBeLessThanOrEqual(MAX_MESSAGE_CHARS);
    expect(noHeader).toBeNull();
    expect(manyCommas).toBeNull();
    expect(nvrm?.kind).toBe('xid');
    // generous bound for a loaded machine; the real number is a few ms (bench/ has the speed goal)
    expect(elapsed).toBeLessThan(5000);
  });

  it('fuzz: arbitrary strings and bytes never throw', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        parseKmsgRecord(s);
        parseNvrmLine(s);
        parseXidLine(s);
        normalizePciBusId(s);
      }),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        parseKmsgRecord(b);
      }),
      { numRuns: 2000 },
    );
    // prefix-shaped garbage reaches deeper paths
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }), (a, b) => {
        parseKmsgRecord(`6,1,2,-;${a}\n ${b}`);
        parseNvrmLine(`NVRM: Xid (${a}): ${b}`);
        parseNvrmLine(`NVRM: GPU at PCI:${a}: ${b}`);
        parseNvrmLine(`NVRM: GPU ${a}: GPU has fallen off the bus.${b}`);
      }),
      { numRuns: 3000 },
    );
  });

  it('fuzz: generated records round-trip', () => {
    const key = fc.stringMatching(/^[A-Z][A-Z_]{0,10}$/);
    fc.assert(
      fc.property(
        fc.record({
          facility: fc.integer({ min: 0, max: 23 }),
          level: fc.integer({ min: 0, max: 7 }),
          seq: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
          usecSinceBoot: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
          flags: fc.constantFrom('-', 'c', '+'),
          message: fc.string({ maxLength: 200, unit: 'grapheme' }),
          dict: fc.dictionary(key, fc.string({ maxLength: 40 }), { maxKeys: 4 }),
        }),
        (r) => {
          const p = parseKmsgRecord(formatKmsgRecord(r));
          expect(p).not.toBeNull();
          expect(p?.facility).toBe(r.facility);
          expect(p?.level).toBe(r.level);
          expect(p?.seq).toBe(r.seq);
          expect(p?.usecSinceBoot).toBe(r.usecSinceBoot);
          expect(p?.flags).toBe(r.flags);
          expect(p?.message).toBe(r.message);
          expect(p?.dict).toEqual(r.dict);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('normalizePciBusId', () => {
  it('maps NVML, legacy and kernel forms to one', () => {
    expect(normalizePciBusId('00000000:9B:00.0')).toBe('0000:9b:00');
    expect(normalizePciBusId('0000:9B:00.0')).toBe('0000:9b:00');
    expect(normalizePciBusId('0000:9b:00')).toBe('0000:9b:00');
    expect(normalizePciBusId('PCI:0000:9b:00')).toBe('0000:9b:00');
    expect(normalizePciBusId('00000008:01:00.0')).toBe('0008:01:00');
    expect(normalizePciBusId('0008:01:00')).toBe('0008:01:00');
    expect(normalizePciBusId('9b:00.0')).toBe('0000:9b:00');
    expect(normalizePciBusId('0:3:0')).toBe('0000:03:00');
    expect(normalizePciBusId('00010000:01:00.0')).toBe('10000:01:00');
  });
  it('rejects non-addresses', () => {
    for (const s of ['', 'GPU-1', '0000:9g:00', '0000:9b:00.9', '1:2:3:4', '0000:100:00', '0000:9b:20', 'x'.repeat(100)]) {
      expect(normalizePciBusId(s), s).toBeNull();
    }
  });
});

describe('NVRM line parser: every example of the catalog', () => {
  const cases: Array<[string, Partial<ReturnType<typeof parseXidLine> & object>]> = [
    [
      'NVRM: Xid (PCI:0000:9b:00): 119, pid=2024380, name=nvidia-smi, Timeout after 6s of waiting for RPC response from GPU4 GSP! Expected function 103 (GSP_RM_ALLOC) (0x2081 0x4).',
      {
        pciShort: '0000:9b:00',
        code: 119,
        pid: 2024380,
        processName: 'nvidia-smi',
        detail: 'Timeout after 6s of waiting for RPC response from GPU4 GSP! Expected function 103 (GSP_RM_ALLOC) (0x2081 0x4).',
      },
    ],
    ['NVRM: Xid (PCI:0000:2b:00): 79, GPU has fallen off the bus.', { pciShort: '0000:2b:00', code: 79, detail: 'GPU has fallen off the bus.' }],
    [
      'NVRM: Xid (PCI:0000:01:00): 31, pid=13705, name=UnrealEditor, channel 0x0000000c, intr 00000000. MMU Fault: ENGINE GRAPHICS GPC2 GPCCLIENT_PROP_0 faulted @ 0x0_00000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ',
      {
        pciShort: '0000:01:00',
        code: 31,
        pid: 13705,
        processName: 'UnrealEditor',
        detail:
          'channel 0x0000000c, intr 00000000. MMU Fault: ENGINE GRAPHICS GPC2 GPCCLIENT_PROP_0 faulted @ 0x0_00000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ',
      },
    ],
    [
      "NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
      { pciShort: '0000:cb:00', code: 13, detail: 'Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter' },
    ],
    [
      'NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread, Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005',
      { pciShort: '0000:cb:00', code: 109, pid: 1797828, processName: 'pt_main_thread', detail: 'Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005' },
    ],
    [
      "NVRM: Xid (PCI:0000:00:08): 94, pid='<unknown>', name=<unknown>, Contained: SM (0x1). RST: No, D-RST: No",
      { pciShort: '0000:00:08', code: 94, detail: 'Contained: SM (0x1). RST: No, D-RST: No' },
    ],
    [
      'NVRM: Xid (PCI:0000:8a:00): 48, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 4, subpartition 1.',
      {
        pciShort: '0000:8a:00',
        code: 48,
        detail: 'An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 4, subpartition 1.',
      },
    ],
    [
      'NVRM: Xid (PCI:0000:8a:00): 63, Dynamic Page Retirement: New page retired, reboot to activate (0x00000000002ce8ac).',
      { pciShort: '0000:8a:00', code: 63, detail: 'Dynamic Page Retirement: New page retired, reboot to activate (0x00000000002ce8ac).' },
    ],
    [
      'NVRM: Xid (PCI:0000:10:1c): 63, pid=1896, Row Remapper: New row marked for remapping, reset gpu to activate.',
      { pciShort: '0000:10:1c', code: 63, pid: 1896, detail: 'Row Remapper: New row marked for remapping, reset gpu to activate.' },
    ],
    [
      'NVRM: Xid (PCI:0000:dc:00): 45, pid=1818990, name=python3, Ch 00000001 caused by previous Xid 149',
      { pciShort: '0000:dc:00', code: 45, pid: 1818990, processName: 'python3', detail: 'Ch 00000001 caused by previous Xid 149' },
    ],
    [
      'NVRM: Xid (PCI:0008:01:00): 149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)',
      {
        pciShort: '0008:01:00',
        code: 149,
        detail: 'NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)',
      },
    ],
    [
      'NVRM: Xid (PCI:0008:01:00): 154, GPU recovery action changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)',
      { pciShort: '0008:01:00', code: 154, detail: 'GPU recovery action changed from 0x4 (Drain and Reset) to 0x1 (GPU Reset Required)' },
    ],
    ['NVRM: Xid (0000:03:00): 14, Channel 00000001', { pciShort: '0000:03:00', code: 14, detail: 'Channel 00000001' }],
    ['NVRM: Xid (PCI:0000:01:00): 32, Channel ID 00000052 intr 02000000', { pciShort: '0000:01:00', code: 32, detail: 'Channel ID 00000052 intr 02000000' }],
    ['[  437.812449] NVRM: Xid (PCI:0000:9B:00.0): 79, GPU has fallen off the bus.', { pciShort: '0000:9b:00', code: 79 }],
    ['NVRM: Xid (PCI:0000:41:00): 999', { pciShort: '0000:41:00', code: 999, detail: '' }],
  ];
  for (const [line, want] of cases) {
    it(line.slice(0, 60), () => {
      const x = parseXidLine(line);
      expect(x).not.toBeNull();
      expect(x).toMatchObject({ kind: 'xid', ...want });
      if (want.pid === undefined) expect(x?.pid).toBeUndefined();
      if (want.processName === undefined) expect(x?.processName).toBeUndefined();
      expect(parseNvrmLine(line)).toEqual(x);
    });
  }

  it('bus-id to UUID map lines and fallen-off-the-bus lines', () => {
    expect(parseNvrmLine('NVRM: GPU at PCI:0000:9b:00: GPU-509665ad-2ba3-5b1b-a4d1-2c1ab2bb0c5c')).toEqual({
      kind: 'gpu_uuid',
      pciShort: '0000:9b:00',
      uuid: 'GPU-509665ad-2ba3-5b1b-a4d1-2c1ab2bb0c5c',
    });
    expect(parseNvrmLine('NVRM: GPU 0000:2b:00.0: GPU has fallen off the bus.')).toEqual({ kind: 'fallen_off_bus', pciShort: '0000:2b:00', form: 'single' });
    expect(parseNvrmLine('NVRM: GPU 91:00.0: GPU has fallen off the bus.')).toEqual({ kind: 'fallen_off_bus', pciShort: '0000:91:00', form: 'single' });
  });

  it('the three-line fallen-off-bus record, matched whole', () => {
    const msg =
      'NVRM: The NVIDIA GPU 0000:b3:00.0\nNVRM: (PCI ID: 10de:26b5) installed in this system has\nNVRM: fallen off the bus and is not responding to commands.';
    expect(parseNvrmLine(msg)).toEqual({ kind: 'fallen_off_bus', pciShort: '0000:b3:00', form: 'multi' });
    // as /dev/kmsg delivers it: one record, newlines escaped
    const rec = parseKmsgRecord(`3,1227,1843308145,-;${msg.replaceAll('\n', '\\x0a')}\n`);
    expect(rec && parseNvrmLine(rec.message)).toEqual({ kind: 'fallen_off_bus', pciShort: '0000:b3:00', form: 'multi' });
    // only the first line (records split apart) is not a fault
    expect(parseNvrmLine('NVRM: The NVIDIA GPU 0000:b3:00.0')).toBeNull();
    expect(parseNvrmLine('NVRM: The NVIDIA probe routine failed for 1 device(s).')).toBeNull();
  });

  it('RmInitAdapter failed, and MIG-attributed XID lines', () => {
    expect(parseNvrmLine('NVRM: GPU 0000:98:00.0: RmInitAdapter failed! (0x62:0x65:1792)')).toEqual({
      kind: 'init_failed',
      pciShort: '0000:98:00',
      detail: '(0x62:0x65:1792)',
    });
    expect(parseNvrmLine('NVRM: GPU 0000:98:00.0: rm_init_adapter failed, device minor number 0')).toBeNull();
    expect(parseNvrmLine('NVRM: Xid (PCI:0000:3b:00 GPU-I:01 GPU-CI:00): 31, pid=1234, name=python3, MMU Fault')).toEqual({
      kind: 'xid',
      pciShort: '0000:3b:00',
      code: 31,
      pid: 1234,
      processName: 'python3',
      detail: 'MMU Fault',
      gpuInstance: 1,
      computeInstance: 0,
    });
    expect(parseNvrmLine('NVRM: Xid (PCI:0000:3b:00 GPU-I:02): 43, detail')).toMatchObject({ code: 43, gpuInstance: 2 });
    expect(parseNvrmLine('NVRM: Xid (PCI:0000:3b:00 junk): 43, detail')).toBeNull();
  });

  it('ignores other NVRM lines and malformed XID lines', () => {
    for (const l of [
      'NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15',
      'NVRM: Xid (PCI:zzzz): 79, x',
      'NVRM: Xid (PCI:0000:2b:00): , x',
      'NVRM: Xid (PCI:0000:2b:00) 79',
      'NVRM: Xid (PCI:0000:2b:00): 79x',
      'NVRM: GPU at PCI:0000:9b:00: not-a-uuid',
      'usb 1-1: new device',
    ]) {
      expect(parseNvrmLine(l), l).toBeNull();
    }
  });
});
