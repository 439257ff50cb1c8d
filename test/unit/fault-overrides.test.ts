import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError, resolveConfig } from '../../src/config/config.js';
import { MAX_FAULT_RULES, NO_FAULT_OVERRIDES, parseFaultOverrides, FaultOverrideError } from '../../src/config/fault-overrides.js';
import { FAULT_CLASSES, faultClassOf, isKnownFaultClass } from '../../src/events/fault-class.js';
import { applyFaultOverrides, ruleFor, SuppressionCounts } from '../../src/events/overrides.js';
import type { HealthEventInput } from '../../src/events/types.js';
import type { NvmlEvent, NvmlEventType } from '../../src/nvml/types.js';
import { nvmlEventsToInputs } from '../../src/sources/nvml-events.js';
import { xidEventInput } from '../../src/xid/catalog.js';

const dir = mkdtempSync(join(tmpdir(), 'navarch-overrides-'));
function configWith(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
function resolveFile(path: string) {
  return resolveConfig({ flags: new Map([['config', path]]), env: {}, hostname: 'h' });
}
function usage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected a UsageError');
}
function overrideError(raw: unknown): string {
  try {
    parseFaultOverrides(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(FaultOverrideError);
    expect((err as Error).message).not.toContain('\n');
    return (err as Error).message;
  }
  throw new Error('expected a FaultOverrideError');
}

const xid = (code: number, gpu = 0): HealthEventInput => xidEventInput({ code, gpuIndex: gpu, gpuUuid: `GPU-${gpu}`, timeMs: 1000, source: 'kmsg' });
function telemetryEvent(key: string, fault: HealthEventInput['fault'], severity: HealthEventInput['severity'] = 'warning'): HealthEventInput {
  return {
    type: 'driver_error',
    system: 'DRIVER',
    gpuIndex: 0,
    gpuUuid: 'GPU-0',
    metrics: {},
    message: key,
    timeMs: 2000,
    severity,
    action: 'none',
    citation: 'test',
    source: 'telemetry',
    key,
    fault,
  };
}

describe('fault classes', () => {
  it('strip the location and the numeric parts of a key', () => {
    expect(faultClassOf('gpu0/thermal')).toBe('thermal');
    expect(faultClassOf('gpu12/clock/hw_slowdown')).toBe('clock/hw_slowdown');
    expect(faultClassOf('gpu2/nvlink/5')).toBe('nvlink');
    expect(faultClassOf('gpu2/nvlink/17/errors')).toBe('nvlink/errors');
    expect(faultClassOf('gpu3/xid/79')).toBe('xid');
    expect(faultClassOf('node/xid/13')).toBe('xid');
    expect(faultClassOf('pci/0000:b3:00.0/xid/79')).toBe('xid');
    expect(faultClassOf('nvswitch1/sxid/12028')).toBe('sxid');
    expect(faultClassOf('node/gpu_count')).toBe('gpu_count');
  });

  it('every key in the detection docs and every NVML event maps to a known class', () => {
    const doc = readFileSync(new URL('../../docs/backends-and-detection.md', import.meta.url), 'utf8');
    const keys = [...doc.matchAll(/`((?:gpu<i>|node)\/[a-z_<>/]+)`/g)].map((m) =>
      (m[1] as string).replace('<i>', '0').replace('<l>', '3').replace('<code>', '79'),
    );
    expect(keys.length).toBeGreaterThan(25);
    const types: NvmlEventType[] = [
      'xid',
      'ecc_sbe',
      'ecc_dbe',
      'ecc_storm',
      'dram_retirement_event',
      'dram_retirement_failure',
      'non_fatal_poison',
      'fatal_poison',
      'gpu_unavailable',
      'gpu_recovery_action',
      'gpu_lost',
    ];
    const events: NvmlEvent[] = types.map((type) => ({
      type,
      eventTypeMask: 0,
      data: type === 'xid' ? 79 : 1,
      deviceIndex: 1,
      uuid: 'GPU-1',
      pciBusId: '',
      gpuInstanceId: null,
      computeInstanceId: null,
      monotonicNs: 0n,
      wallTimeMs: 1,
      count: 1,
    }));
    for (const i of nvmlEventsToInputs(events)) keys.push(i.key);
    const unknown = [...new Set(keys.map(faultClassOf))].filter((c) => !isKnownFaultClass(c));
    expect(unknown).toEqual([]);
  });

  it('groups are the part before the first slash', () => {
    expect(isKnownFaultClass('clock')).toBe(true);
    expect(isKnownFaultClass('remapped_rows')).toBe(true);
    expect(isKnownFaultClass('clock/hw_slowdown')).toBe(true);
    expect(isKnownFaultClass('clock/nope')).toBe(false);
    expect(isKnownFaultClass('thermals')).toBe(false);
    expect(Object.keys(FAULT_CLASSES).length).toBeGreaterThan(30);
  });
});

describe('parseFaultOverrides', () => {
  it('reads rules per XID and per class', () => {
    const o = parseFaultOverrides({
      xid: { '43': { severity: 'critical', action: 'reset_gpu' }, 31: { suppress: true } },
      classes: { persistence_mode: { suppress: true }, clock: { severity: 'info' } },
    });
    expect(o.xid.get(43)).toEqual({ rule: 'xid:43', severity: 'critical', action: 'reset_gpu', suppress: false });
    expect(o.xid.get(31)).toEqual({ rule: 'xid:31', suppress: true });
    expect(o.classes.get('clock')).toEqual({ rule: 'class:clock', severity: 'info', suppress: false });
    expect(parseFaultOverrides(undefined)).toBe(NO_FAULT_OVERRIDES);
  });

  it('rejects bad rules with one line naming the key', () => {
    expect(overrideError({ xid: { '0': { suppress: true } } })).toBe('key "faultOverrides.xid.0": an XID code must be a whole number 1..65535');
    expect(overrideError({ xid: { '65536': { suppress: true } } })).toContain('"faultOverrides.xid.65536"');
    expect(overrideError({ xid: { abc: { suppress: true } } })).toContain('"faultOverrides.xid.abc"');
    expect(overrideError({ xid: { '-3': { suppress: true } } })).toContain('"faultOverrides.xid.-3"');
    expect(overrideError({ classes: { thermals: { suppress: true } } })).toContain('key "faultOverrides.classes.thermals": unknown fault class');
    expect(overrideError({ xid: { '13': { severity: 'fatal' } } })).toBe(
      'key "faultOverrides.xid.13.severity": expected one of info, warning, critical, got "fatal"',
    );
    expect(overrideError({ xid: { '13': { action: 'explode' } } })).toContain(
      'key "faultOverrides.xid.13.action": expected one of none, restart_app, reset_gpu, reboot, replace',
    );
    expect(overrideError({ xid: { '13': { suppress: 'yes' } } })).toBe('key "faultOverrides.xid.13.suppress": expected true or false');
    expect(overrideError({ xid: { '13': { severity: 3 } } })).toContain('got 3');
    expect(overrideError({ xid: { '13': { colour: 'red' } } })).toContain('key "faultOverrides.xid.13.colour": unknown field');
    expect(overrideError({ xid: { '13': 'critical' } })).toContain('key "faultOverrides.xid.13": expected a mapping');
    expect(overrideError({ xid: { '13': {} } })).toContain('needs severity, action or suppress: true');
    expect(overrideError({ xid: { '13': { suppress: true, severity: 'info' } } })).toContain('cannot be combined');
    expect(overrideError({ xids: {} })).toBe('key "faultOverrides.xids": unknown key (expected xid or classes)');
    expect(overrideError({ xid: [1, 2] })).toBe('key "faultOverrides.xid": expected a mapping');
    expect(overrideError('all')).toContain('key "faultOverrides"');
    const many: Record<string, unknown> = {};
    for (let i = 1; i <= MAX_FAULT_RULES + 1; i++) many[String(i)] = { suppress: true };
    expect(overrideError({ xid: many })).toContain(`more than ${MAX_FAULT_RULES} override rules`);
  });

  it('the config file: YAML numeric keys, JSON, and exit-2 errors naming the file and key', () => {
    const y = configWith(
      'o.yaml',
      'faultOverrides:\n  xid:\n    43: { severity: critical, action: reset_gpu }\n  classes:\n    persistence_mode: { suppress: true }\n',
    );
    const c = resolveFile(y);
    expect(c.faultOverrides.xid.get(43)?.severity).toBe('critical');
    expect(c.faultOverrides.classes.get('persistence_mode')?.suppress).toBe(true);
    const j = configWith('o.json', JSON.stringify({ faultOverrides: { xid: { '79': { severity: 'warning' } } } }));
    expect(resolveFile(j).faultOverrides.xid.get(79)?.severity).toBe('warning');
    expect(resolveConfig({ flags: new Map(), env: {}, hostname: 'h' }).faultOverrides).toBe(NO_FAULT_OVERRIDES);
    const bad = configWith('bad.yaml', 'faultOverrides:\n  xid:\n    70000: { suppress: true }\n');
    expect(usage(() => resolveFile(bad))).toBe(`${bad}: key "faultOverrides.xid.70000": an XID code must be a whole number 1..65535`);
    const badSev = configWith('bad2.yaml', 'faultOverrides:\n  classes:\n    thermal: { severity: fatal }\n');
    expect(usage(() => resolveFile(badSev))).toContain('key "faultOverrides.classes.thermal.severity"');
  });
});

describe('applyFaultOverrides: the one place a detection meets the operator', () => {
  const o = parseFaultOverrides({
    xid: { '43': { severity: 'critical', action: 'reset_gpu' }, '79': { action: 'none' }, '31': { suppress: true }, '13': { severity: 'info' } },
    classes: { persistence_mode: { suppress: true }, clock: { severity: 'info' }, 'clock/hw_slowdown': { severity: 'critical' }, xid: { severity: 'warning' } },
  });
  const none = () => false;

  it('an XID rule changes severity and action, and the action decides whether it raises', () => {
    const before = xid(43);
    expect(before).toMatchObject({ severity: 'warning', action: 'restart_app', fault: 'none' });
    const r = applyFaultOverrides(before, o, none);
    expect(r.suppressed).toBe(false);
    expect(r.input).toMatchObject({ severity: 'critical', action: 'reset_gpu', fault: 'raise' });
    expect(r.input.metrics.override).toBe('xid:43');
    expect(r.input.citation).toContain('operator override xid:43');
    expect(before.metrics.override).toBeUndefined(); // input not mutated
    const x79 = applyFaultOverrides(xid(79), o, none).input;
    expect(x79).toMatchObject({ severity: 'critical', action: 'none', fault: 'none' });
    expect(applyFaultOverrides(xid(13), o, none).input.severity).toBe('info');
  });

  it('an XID without a rule of its own takes the class rule; the code rule wins', () => {
    expect(ruleFor(xid(48), o)?.rule).toBe('class:xid');
    expect(applyFaultOverrides(xid(48), o, none).input.severity).toBe('warning');
    expect(ruleFor(xid(43), o)?.rule).toBe('xid:43');
  });

  it('the most specific class wins', () => {
    expect(ruleFor(telemetryEvent('gpu1/clock/hw_slowdown', 'raise'), o)?.rule).toBe('class:clock/hw_slowdown');
    expect(ruleFor(telemetryEvent('gpu1/clock/hw_power_brake', 'raise'), o)?.rule).toBe('class:clock');
    expect(ruleFor(telemetryEvent('gpu1/thermal', 'raise'), o)).toBeNull();
    const t = telemetryEvent('gpu1/thermal', 'raise');
    expect(applyFaultOverrides(t, o, none).input).toBe(t);
  });

  it('a suppressed event is held back; its clear too, unless a fault under the key is active', () => {
    expect(applyFaultOverrides(xid(31), o, none)).toMatchObject({ suppressed: true, rule: { rule: 'xid:31' } });
    const raise = telemetryEvent('gpu0/persistence_mode', 'raise');
    expect(applyFaultOverrides(raise, o, none).suppressed).toBe(true);
    const clear = telemetryEvent('gpu0/persistence_mode', 'clear', 'info');
    expect(applyFaultOverrides(clear, o, none).suppressed).toBe(true);
    const passing = applyFaultOverrides(clear, o, (k) => k === 'gpu0/persistence_mode');
    expect(passing.suppressed).toBe(false);
    expect(passing.input).toBe(clear);
  });

  it('clears are never re-rated', () => {
    const clear = telemetryEvent('gpu0/clock/hw_slowdown', 'clear', 'info');
    expect(applyFaultOverrides(clear, o, none).input).toBe(clear);
  });

  it('no rules: the event passes as it is', () => {
    const e = xid(79);
    expect(applyFaultOverrides(e, NO_FAULT_OVERRIDES, none)).toEqual({ suppressed: false, input: e, rule: null });
  });

  it('SuppressionCounts counts per rule (occurrences, by count)', () => {
    const s = new SuppressionCounts();
    const r = o.xid.get(31)!;
    s.record(r, xid(31, 2));
    s.record(r, { ...xid(31, 5), count: 4 });
    s.record(o.classes.get('persistence_mode')!, telemetryEvent('gpu0/persistence_mode', 'raise'));
    expect(s.total).toBe(6);
    expect(s.rules()).toEqual([
      { rule: 'xid:31', count: 5, lastKey: 'gpu5/xid/31', lastMs: 1000 },
      { rule: 'class:persistence_mode', count: 1, lastKey: 'gpu0/persistence_mode', lastMs: 2000 },
    ]);
  });
});
