import { describe, expect, it } from 'vitest';
import { FAULT_CLASSES, faultClassOf } from '../../src/events/fault-class.js';
import { DEFAULT_TELEMETRY_CONFIG, emptyJudgeState, judgeSnapshot } from '../../src/sources/telemetry.js';
import { TELEMETRY_RULES } from '../../src/sources/telemetry-rules.js';

describe('telemetry rule table (src/sources/telemetry-rules.ts)', () => {
  it('one row per class, each a known fault class (fabric: the fabric/* classes fabric.ts decides)', () => {
    const classes = TELEMETRY_RULES.map((r) => r.class);
    expect(new Set(classes).size).toBe(classes.length);
    for (const r of TELEMETRY_RULES) {
      if (r.class === 'fabric') expect(Object.keys(FAULT_CLASSES).some((c) => c.startsWith('fabric/'))).toBe(true);
      else expect(Object.hasOwn(FAULT_CLASSES, r.class), r.class).toBe(true);
      expect(r.citation(DEFAULT_TELEMETRY_CONFIG).length).toBeGreaterThan(0);
    }
  });

  it('every event judgeSnapshot raises from a GPU sample has the class of a row and the row defaults unless the row overrides them', () => {
    const hot = {
      index: 0,
      uuid: 'GPU-t',
      ok: true as const,
      takenAtMs: 1_000_000,
      telemetry: {
        temperatureC: 99,
        powerUsageW: 900,
        powerLimitW: 700,
        clockEventReasons: 0x8,
        persistenceMode: false,
        pcieLinkWidthCurrent: 8,
        pcieLinkWidthMax: 16,
        retiredPagesPending: true,
        remappedRowsPending: true,
        remappedRowsFailure: true,
        eccVolatileUncorrected: 2,
        nvlinks: [{ link: 0, active: false, replayErrors: null, recoveryErrors: null, crcFlitErrors: null, crcDataErrors: null }],
      },
    };
    const { events } = judgeSnapshot(emptyJudgeState(), [hot as never], { ...DEFAULT_TELEMETRY_CONFIG, clockEventRatePerMinute: 0.1 });
    const byClass = new Map(TELEMETRY_RULES.map((r) => [r.class, r]));
    const raised = events.filter((e) => e.fault === 'raise');
    expect(raised.map((e) => e.key)).toEqual([
      'gpu0/thermal',
      'gpu0/clock/hw_slowdown',
      'gpu0/power',
      'gpu0/ecc_dbe',
      'gpu0/retired_pages/pending',
      'gpu0/remapped_rows/pending',
      'gpu0/remapped_rows/failure',
      'gpu0/pcie/link_width',
      'gpu0/nvlink/0',
      'gpu0/persistence_mode',
    ]);
    for (const e of raised) {
      const row = byClass.get(faultClassOf(e.key)) as (typeof TELEMETRY_RULES)[number];
      expect(row, e.key).toBeDefined();
      expect([e.type, e.system, e.action], e.key).toEqual([row.type, row.system, row.action]);
      if (e.key !== 'gpu0/thermal') expect(e.severity, e.key).toBe(row.severity);
    }
    expect(raised[0]?.severity).toBe('critical');
  });
});
