/**
 * Tests of the fake libnvidia-ml.so.1 itself, without the addon: a Python ctypes driver
 * (probe.py) dlopens it, and the test helper injects faults over the control socket.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultDevices, ensureFakeNvmlBuilt, FAKE_NVML_LIB, FakeNvml } from '../helpers/fake-nvml.js';
import { Probe } from './probe.js';
import { poll } from '../helpers/wait.js';

const NVML = {
  SUCCESS: 0,
  UNINITIALIZED: 1,
  INVALID_ARGUMENT: 2,
  NOT_SUPPORTED: 3,
  NOT_FOUND: 6,
  INSUFFICIENT_SIZE: 7,
  DRIVER_NOT_LOADED: 9,
  TIMEOUT: 10,
  GPU_IS_LOST: 15,
  LIB_RM_VERSION_MISMATCH: 18,
  ARGUMENT_VERSION_MISMATCH: 25,
  GPU_NOT_FOUND: 28,
  UNKNOWN: 999,
} as const;
const EV = { SBE: 0x1, DBE: 0x2, PSTATE: 0x4, XID: 0x8, CLOCK: 0x10 } as const;

function havePython(): boolean {
  try {
    execFileSync('python3', ['-c', 'import ctypes'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const PYTHON = havePython();
const READELF = (() => {
  try {
    execFileSync('readelf', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    console.warn('test/fake-nvml: ELF export check skipped, readelf (binutils) is not installed');
    return false;
  }
})();
if (!PYTHON) console.warn('test/fake-nvml: skipped, python3 with ctypes is not available');

describe.skipIf(!PYTHON)('fake libnvidia-ml.so.1', () => {
  const fakes: FakeNvml[] = [];
  const probes: Probe[] = [];
  beforeAll(() => ensureFakeNvmlBuilt());
  afterEach(async () => {
    for (const p of probes.splice(0)) await p.close();
    for (const f of fakes.splice(0)) f.cleanup();
  });

  async function open(config: Parameters<typeof FakeNvml.create>[0] = {}): Promise<{ fake: FakeNvml; p: Probe }> {
    const fake = FakeNvml.create(config);
    fakes.push(fake);
    const p = await Probe.start(fake);
    probes.push(p);
    return { fake, p };
  }

  it.skipIf(!READELF)('has the soname and exports every entry point as an IFUNC', () => {
    const dyn = execFileSync('readelf', ['-dW', FAKE_NVML_LIB], { encoding: 'utf8' });
    expect(dyn).toMatch(/SONAME.*\[libnvidia-ml\.so\.1\]/);
    const syms = execFileSync('readelf', ['--dyn-syms', '-W', FAKE_NVML_LIB], { encoding: 'utf8' });
    for (const name of [
      'nvmlInit_v2',
      'nvmlInitWithFlags',
      'nvmlEventSetWait_v2',
      'nvmlEventSetWait',
      'nvmlDeviceGetPciInfo_v3',
      'nvmlDeviceGetCount_v2',
      'nvmlDeviceGetHandleByIndex_v2',
      'nvmlDeviceGetCurrentClocksEventReasons',
      'nvmlDeviceGetCurrentClocksThrottleReasons',
    ]) {
      expect(syms).toMatch(new RegExp(`IFUNC\\s+GLOBAL\\s+DEFAULT\\s+\\d+\\s+${name}$`, 'm'));
    }
    // nothing but the NVML API leaks out of the library
    const globals = syms.split('\n').filter((l) => / GLOBAL /.test(l) && !/ UND /.test(l));
    expect(globals.every((l) => / nvml\w+$/.test(l))).toBe(true);
  });

  it('returns UNINITIALIZED before init and after the last shutdown; init is reference counted', async () => {
    const { p } = await open();
    expect((await p.call({ call: 'count' })).rc).toBe(NVML.UNINITIALIZED);
    expect((await p.call({ call: 'nvmlInit_v2' })).rc).toBe(NVML.SUCCESS);
    expect((await p.call({ call: 'nvmlInitWithFlags', flags: 0 })).rc).toBe(NVML.SUCCESS);
    expect((await p.call({ call: 'nvmlShutdown' })).rc).toBe(NVML.SUCCESS);
    expect(await p.call({ call: 'count' })).toEqual({ rc: 0, value: 8 });
    expect((await p.call({ call: 'nvmlShutdown' })).rc).toBe(NVML.SUCCESS);
    expect((await p.call({ call: 'count' })).rc).toBe(NVML.UNINITIALIZED);
    expect((await p.call({ call: 'nvmlShutdown' })).rc).toBe(NVML.UNINITIALIZED);
    // the legacy nvmlInit symbol exists too
    expect((await p.call({ call: 'nvmlInit' })).rc).toBe(NVML.SUCCESS);
    expect((await p.call({ call: 'nvmlShutdown' })).rc).toBe(NVML.SUCCESS);
  });

  it('reports the configured system versions and every default device value', async () => {
    const { p } = await open({ driverVersion: '535.54.03', nvmlVersion: '12.535.54.03', cudaDriverVersion: 12020 });
    // NVML and CUDA versions are documented without UNINITIALIZED
    expect((await p.call({ call: 'system' })).cuda).toEqual({ rc: 0, value: 12040 });
    await p.call({ call: 'nvmlInit_v2' });
    const sys = await p.call({ call: 'system' });
    expect(sys.nvmlSystemGetDriverVersion).toEqual({ rc: 0, value: '535.54.03' });
    expect(sys.nvmlSystemGetNVMLVersion).toEqual({ rc: 0, value: '12.535.54.03' });
    expect(sys.cuda).toEqual({ rc: 0, value: 12020 });
    expect((await p.call({ call: 'system', len: 9 })).nvmlSystemGetDriverVersion.rc).toBe(NVML.INSUFFICIENT_SIZE);

    const defs = defaultDevices(8);
    const seen = new Set<string>();
    for (let i = 0; i < 8; i++) {
      expect((await p.call({ call: 'handle', index: i })).rc).toBe(0);
      const info = await p.call({ call: 'info', index: i });
      const d = defs[i]!;
      const t = d.telemetry!;
      expect(info.name.value).toBe(d.name);
      expect(info.uuid.value).toBe(d.uuid);
      expect(info.serial.value).toBe(d.serial);
      expect(info.minorNumber.value).toBe(i);
      expect(info.index.value).toBe(i);
      expect(info.pci.value.pciDeviceId).toBe(0x233010de);
      expect(info.pci.value.busId).toBe(
        `${d.pci!.domain!.toString(16).toUpperCase().padStart(8, '0')}:${d.pci!.bus!.toString(16).toUpperCase().padStart(2, '0')}:00.0`,
      );
      expect(info.pci.value.busIdLegacy).toBe(info.pci.value.busId.slice(4));
      expect(info.memory.value).toEqual({ total: t.memoryTotal, used: t.memoryUsed, free: t.memoryTotal! - t.memoryUsed! });
      expect(info.memory_v2.value.total).toBe(t.memoryTotal);
      expect(info.temperature.value).toBe(t.temperatureC);
      expect(info.temperatureV.value).toBe(t.temperatureC);
      expect(info.power.value).toBe(t.powerUsageMw);
      expect(info.powerLimit.value).toBe(700000);
      expect(info.smClock.value).toBe(t.smClockMhz);
      expect(info.memClock.value).toBe(t.memClockMhz);
      expect(info.eventReasons.value).toBe(1);
      expect(info.throttleReasons.value).toBe(1);
      expect(info.ecc.value).toEqual([1, 1]);
      expect(info.pcieGenMax.value).toBe(5);
      expect(info.pcieWidth.value).toBe(16);
      expect(info.nvlinks.filter((l: { rc: number }) => l.rc === 0)).toHaveLength(18);
      expect(info.nvlinks[18].rc).toBe(NVML.INVALID_ARGUMENT);
      expect(info.supportedEvents.value).toBe(EV.SBE | EV.DBE | EV.PSTATE | EV.XID | EV.CLOCK);
      seen.add(info.uuid.value).add(info.pci.value.busId);
    }
    expect(seen.size).toBe(16);
  });

  it('applies configured telemetry, unsupported getters and identities', async () => {
    const { p } = await open({
      devices: [
        {
          name: 'NVIDIA A100-SXM4-80GB',
          uuid: 'GPU-11111111-2222-3333-4444-555555555555',
          pci: { domain: 0, bus: 0x41, device: 0, pciDeviceId: 0x20b210de },
          telemetry: {
            temperatureC: 91,
            powerUsageMw: 412345,
            eccVolatileUncorrected: 3,
            eccAggregateCorrected: 77,
            retiredPagesDbe: 2,
            retiredPagesPending: true,
            remappedUncorrected: 1,
            remappedPending: 1,
            nvlinkCount: 4,
            nvlinkDown: [2],
            nvlinkCrcData: 9,
            pcieReplay: 12,
            memoryReserved: 1000,
            memoryUsed: 500,
          },
          unsupported: ['fanSpeed', 'serial', 'clockEventReasons'],
        },
      ],
    });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    const info = await p.call({ call: 'info', index: 0 });
    expect(info.name.value).toBe('NVIDIA A100-SXM4-80GB');
    expect(info.pci.value.busId).toBe('00000000:41:00.0');
    expect(info.pci.value.pciDeviceId).toBe(0x20b210de);
    expect(info.temperature.value).toBe(91);
    expect(info.power.value).toBe(412345);
    expect(info.eccVolatileUncorrected.value).toBe(3);
    expect(info.eccAggregateCorrected.value).toBe(77);
    expect(info.dramUncorrected.value).toBe(3);
    expect(info.retiredDbeSize).toEqual({ rc: NVML.INSUFFICIENT_SIZE, value: 2 });
    expect(info.retiredPending.value).toBe(1);
    expect(info.remapped.value).toEqual([0, 1, 1, 0]);
    expect(info.pcieReplay.value).toBe(12);
    expect(info.memory_v2.value).toMatchObject({ reserved: 1000, used: 1000 });
    expect(info.nvlinks.slice(0, 5)).toEqual([
      { link: 0, rc: 0, active: 1, crcData: 9 },
      { link: 1, rc: 0, active: 1, crcData: 9 },
      { link: 2, rc: 0, active: 0, crcData: 9 },
      { link: 3, rc: 0, active: 1, crcData: 9 },
      { link: 4, rc: NVML.INVALID_ARGUMENT },
    ]);
    expect(info.fan.rc).toBe(NVML.NOT_SUPPORTED);
    expect(info.serial.rc).toBe(NVML.NOT_SUPPORTED);
    expect(info.eventReasons.rc).toBe(NVML.NOT_SUPPORTED);
    expect(info.throttleReasons.rc).toBe(NVML.NOT_SUPPORTED);
    expect(info.temperature.rc).toBe(0);
  });

  it('validates arguments like the real library', async () => {
    const { p } = await open({ devices: defaultDevices(2) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    expect(await p.call({ call: 'foreign' })).toEqual({
      foreign: NVML.INVALID_ARGUMENT,
      nullOut: NVML.INVALID_ARGUMENT,
      badIndex: NVML.INVALID_ARGUMENT,
      badClock: NVML.INVALID_ARGUMENT,
      badMemVersion: NVML.ARGUMENT_VERSION_MISMATCH,
      unknownUUID: NVML.NOT_FOUND,
    });
    const uuid = defaultDevices(2)[1]!.uuid!;
    expect(await p.call({ call: 'handleByUUID', key: uuid })).toEqual({ rc: 0, index: 1 });
    expect(await p.call({ call: 'handleByPci', key: '00000000:2A:00.0' })).toEqual({ rc: 0, index: 1 });
    expect(await p.call({ call: 'handleByPci', key: '0000:2a:00.0' })).toEqual({ rc: 0, index: 1 });
    expect((await p.call({ call: 'handleByPci', key: 'garbage' })).rc).toBe(NVML.INVALID_ARGUMENT);
    expect((await p.call({ call: 'str', fn: 'nvmlDeviceGetUUID', index: 0, len: 40 })).rc).toBe(NVML.INSUFFICIENT_SIZE);
    expect((await p.call({ call: 'str', fn: 'nvmlDeviceGetUUID', index: 0, len: 41 })).rc).toBe(0);
    expect((await p.call({ call: 'errorString', rc: 15 })).value).toMatch(/lost/i);
    expect((await p.call({ call: 'errorString', rc: 12345 })).value.length).toBeGreaterThan(0);
  });

  it('hides missingSymbols from dlsym (GNU IFUNC resolving to NULL) and re-reads them per dlsym', async () => {
    const { fake, p } = await open({ missingSymbols: ['nvmlDeviceGetCurrentClocksEventReasons', 'nvmlEventSetWait_v2'] });
    expect((await p.call({ call: 'dlsym', name: 'nvmlDeviceGetCurrentClocksEventReasons' })).found).toBe(false);
    expect((await p.call({ call: 'dlsym', name: 'nvmlEventSetWait_v2' })).found).toBe(false);
    expect((await p.call({ call: 'dlsym', name: 'nvmlDeviceGetCurrentClocksThrottleReasons' })).found).toBe(true);
    expect((await p.call({ call: 'dlsym', name: 'nvmlEventSetWait' })).found).toBe(true);
    expect((await p.call({ call: 'dlsym', name: 'nvmlNoSuchFunction' })).found).toBe(false);
    fake.update({ missingSymbols: [] });
    expect((await p.call({ call: 'dlsym', name: 'nvmlEventSetWait_v2' })).found).toBe(true);
  });

  it('returns the configured initError, and GPU_NOT_FOUND without devices unless NO_GPUS is set', async () => {
    for (const code of [NVML.DRIVER_NOT_LOADED, NVML.LIB_RM_VERSION_MISMATCH, 4, NVML.UNKNOWN]) {
      const { p } = await open({ initError: code });
      expect((await p.call({ call: 'nvmlInit_v2' })).rc).toBe(code);
      expect((await p.call({ call: 'count' })).rc).toBe(NVML.UNINITIALIZED);
      await p.close();
    }
    const { p } = await open({ devices: [] });
    expect((await p.call({ call: 'nvmlInit_v2' })).rc).toBe(NVML.GPU_NOT_FOUND);
    expect((await p.call({ call: 'nvmlInitWithFlags', flags: 1 })).rc).toBe(0);
    expect(await p.call({ call: 'count' })).toEqual({ rc: 0, value: 0 });
  }, 180_000);

  it('rejects an invalid config with one clear line on stderr', async () => {
    const { fake, p } = await open();
    const bad: Array<[object, RegExp]> = [
      [{ devices: [{ telemetry: { temperatureC: -1 } }] }, /devices\[0\]\.telemetry\.temperatureC: expected an integer/],
      [{ devices: [{ telemetry: { bogus: 1 } }] }, /devices\[0\]\.telemetry\.bogus: unknown telemetry key/],
      [{ devices: [{ unsupported: ['nope'] }] }, /devices\[0\]\.unsupported\[0\]: unknown name "nope"/],
      [{ missingSymbols: ['nvmlTypo'] }, /missingSymbols\[0\]: not an entry point/],
      [{ devices: [{ uuid: 'GPU-a' }, { uuid: 'GPU-a' }] }, /same uuid/],
      [{ colour: 'red' }, /unknown key "colour"/],
    ];
    for (const [cfg, re] of bad) {
      fake.update(cfg as never);
      p.stderr = '';
      expect((await p.call({ call: 'nvmlInit_v2' })).rc).toBe(NVML.UNKNOWN);
      // stderr is a separate pipe: poll until the line has arrived
      await poll(`stderr to match ${re}`, () => re.test(p.stderr));
      expect(p.stderr).toMatch(re);
      expect(p.stderr.trim().split('\n')).toHaveLength(1);
    }
  }, 180_000);

  it('delivers injected events in order, only for registered types, with MIG ids 0xFFFFFFFF', async () => {
    const { fake, p } = await open({ devices: defaultDevices(2) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    await p.call({ call: 'handle', index: 1 });
    await p.call({ call: 'setCreate' });
    expect((await p.call({ call: 'register', index: 0, mask: EV.XID | EV.DBE })).rc).toBe(0);
    expect((await p.call({ call: 'register', index: 1, mask: EV.XID })).rc).toBe(0);
    // NOT_SUPPORTED registers nothing: device 1 stays XID-only
    expect((await p.call({ call: 'register', index: 1, mask: EV.XID | 0x4000 })).rc).toBe(NVML.NOT_SUPPORTED);

    const r = await fake.inject({ op: 'xid', device: 0, xid: 79 });
    expect(r).toMatchObject({ ok: true, recorded: 1, dropped: 0 });
    expect(typeof r.enqueuedNs).toBe('number');
    await fake.xid(1, 48);
    await fake.inject({ op: 'event', device: 1, type: 'ecc_dbe' }); // not registered on device 1
    await fake.inject({ op: 'event', device: 0, type: 'ecc_dbe' });
    expect((await fake.stats()).queued).toBe(3);

    expect(await p.call({ call: 'wait', timeoutMs: 1000 })).toMatchObject({ rc: 0, type: EV.XID, data: 79, device: 0, gi: 0xffffffff, ci: 0xffffffff });
    expect(await p.call({ call: 'wait', timeoutMs: 1000 })).toMatchObject({ rc: 0, type: EV.XID, data: 48, device: 1 });
    expect(await p.call({ call: 'wait', timeoutMs: 1000 })).toMatchObject({ rc: 0, type: EV.DBE, data: 0, device: 0 });
    const idle = await p.call({ call: 'wait', timeoutMs: 200 });
    expect(idle.rc).toBe(NVML.TIMEOUT);
    expect(idle.elapsedMs).toBeGreaterThanOrEqual(190);
    expect((await p.call({ call: 'wait', timeoutMs: 0 })).rc).toBe(NVML.TIMEOUT);
    expect((await p.call({ call: 'setFree' })).rc).toBe(0);
    expect((await fake.stats()).eventSets).toBe(0);
  });

  it('wakes a blocked wait as soon as an event is injected (condition variable, no polling)', async () => {
    const { fake, p } = await open({ devices: defaultDevices(1) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    await p.call({ call: 'setCreate' });
    await p.call({ call: 'register', index: 0, mask: EV.XID });
    const waiting = p.call({ call: 'wait', timeoutMs: 30_000 });
    // poll until the wait is really blocked inside the library
    await poll('the wait to block in the library', async () => (await fake.stats()).waits >= 1);
    await fake.xid(0, 31);
    const r = await waiting;
    expect(r).toMatchObject({ rc: 0, data: 31 });
    expect(r.elapsedMs).toBeLessThan(20_000); // far below the 30 s timeout
  });

  it('makes a lost GPU return GPU_IS_LOST from device calls, handles and the wait; recover undoes it', async () => {
    const { fake, p } = await open({ devices: defaultDevices(2) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    await p.call({ call: 'setCreate' });
    await p.call({ call: 'register', index: 0, mask: EV.XID });
    await fake.xid(0, 79);
    await fake.lose(0);
    // the queued event first, then the loss
    expect((await p.call({ call: 'wait', timeoutMs: 1000 })).rc).toBe(0);
    expect((await p.call({ call: 'wait', timeoutMs: 1000 })).rc).toBe(NVML.GPU_IS_LOST);
    expect((await p.call({ call: 'uint', fn: 'nvmlDeviceGetPowerUsage', index: 0 })).rc).toBe(NVML.GPU_IS_LOST);
    expect((await p.call({ call: 'handle', index: 0 })).rc).toBe(NVML.GPU_IS_LOST);
    expect((await p.call({ call: 'handle', index: 1 })).rc).toBe(0);
    await fake.recover(0);
    expect((await p.call({ call: 'uint', fn: 'nvmlDeviceGetPowerUsage', index: 0 })).rc).toBe(0);
    expect((await p.call({ call: 'wait', timeoutMs: 50 })).rc).toBe(NVML.TIMEOUT);
  });

  it('starts with a device lost when configured so', async () => {
    const { p } = await open({ devices: [{ ...defaultDevices(1)[0], lost: true }] });
    await p.call({ call: 'nvmlInit_v2' });
    expect(await p.call({ call: 'count' })).toEqual({ rc: 0, value: 1 });
    expect((await p.call({ call: 'handle', index: 0 })).rc).toBe(NVML.GPU_IS_LOST);
  });

  it('hangs the named call for the configured time, and recover releases it early', async () => {
    const { fake, p } = await open({ devices: [{ ...defaultDevices(1)[0], hang: { function: 'nvmlDeviceGetTemperature', ms: 300 } }] });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    const fast = await p.call({ call: 'timed', inner: { call: 'uint', fn: 'nvmlDeviceGetPowerUsage', index: 0 } });
    expect(fast.rc).toBe(0);
    const slow = await p.call({ call: 'timed', inner: { call: 'uint', fn: 'nvmlDeviceGetTemperature', index: 0, args: [0] } });
    expect(slow.rc).toBe(0);
    expect(slow.elapsedMs).toBeGreaterThanOrEqual(290);

    await fake.inject({ op: 'hang', device: 0, function: '*', ms: 60_000 });
    expect((await fake.stats()).hung).toBe(0);
    const hung = p.call({ call: 'timed', inner: { call: 'uint', fn: 'nvmlDeviceGetPowerUsage', index: 0 } });
    await poll('the call to block in the hang', async () => (await fake.stats()).hung === 1);
    await fake.recover(0);
    const r = await hung;
    expect(r.rc).toBe(0);
    expect((await fake.stats()).hung).toBe(0);
    expect(r.elapsedMs).toBeLessThan(50_000);
    await expect(fake.inject({ op: 'hang', device: 0, function: 'nvmlNope', ms: 1 })).rejects.toThrow(/unknown function/);
  });

  it('changes telemetry and support at run time over the socket', async () => {
    const { fake, p } = await open({ devices: defaultDevices(1) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    await fake.set(0, 'temperatureC', 92);
    await fake.inject({ op: 'set', device: 0, field: 'nvlinkDown', value: [0, 17] });
    await fake.inject({ op: 'unsupported', device: 0, field: 'fanSpeed', value: true });
    const info = await p.call({ call: 'info', index: 0 });
    expect(info.temperature.value).toBe(92);
    expect(info.fan.rc).toBe(NVML.NOT_SUPPORTED);
    expect(info.nvlinks[0].active).toBe(0);
    expect(info.nvlinks[17].active).toBe(0);
    expect(info.nvlinks[1].active).toBe(1);
    await fake.inject({ op: 'unsupported', device: 0, field: 'fanSpeed', value: false });
    expect((await p.call({ call: 'uint', fn: 'nvmlDeviceGetFanSpeed', index: 0 })).rc).toBe(0);
    await expect(fake.set(0, 'bogus', 1)).rejects.toThrow(/unknown field "bogus"/);
    await expect(fake.set(0, 'pstate', 99)).rejects.toThrow(/0\.\.32/);
    await expect(fake.set(5, 'pstate', 1)).rejects.toThrow(/device 5 out of range/);
    await expect(fake.inject({ op: 'nope' })).rejects.toThrow(/unknown op "nope"/);
  });

  it('bounds the queue at 65536: a storm drops and counts the overflow', async () => {
    const { fake, p } = await open({ devices: defaultDevices(1) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    await p.call({ call: 'setCreate' });
    await p.call({ call: 'register', index: 0, mask: EV.XID });
    const r = await fake.inject({ op: 'storm', device: 0, xid: 13, count: 100_000, distinct: 3 });
    expect(r).toMatchObject({ ok: true, recorded: 65536, dropped: 100_000 - 65536 });
    const s = await fake.stats();
    expect(s).toMatchObject({ queued: 65536, dropped: 100_000 - 65536 });
    expect(await p.call({ call: 'drain', count: 65536, timeoutMs: 5000 })).toEqual({ got: 65536, rc: 0 });
    expect((await p.call({ call: 'wait', timeoutMs: 10 })).rc).toBe(NVML.TIMEOUT);
  }, 180_000);

  it('stamps injections with CLOCK_MONOTONIC (the clock of process.hrtime) and paces storms on request', async () => {
    const { fake, p } = await open({ devices: defaultDevices(1) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    await p.call({ call: 'setCreate' });
    await p.call({ call: 'register', index: 0, mask: EV.XID });
    const t0 = process.hrtime.bigint();
    const r = await fake.inject({ op: 'xid', device: 0, xid: 43 });
    const t1 = process.hrtime.bigint();
    const enq = BigInt(r.enqueuedNs as number);
    expect(enq >= t0 && enq <= t1).toBe(true);
    const storm = await fake.inject({ op: 'storm', device: 0, xid: 13, count: 2000, perSecond: 20_000 });
    expect(storm).toMatchObject({ recorded: 2000, dropped: 0 });
    expect(storm.elapsedNs as number).toBeGreaterThanOrEqual(90e6); // 2000 events at 20k/s: >= ~100 ms
    expect(await p.call({ call: 'drain', count: 2001 })).toEqual({ got: 2001, rc: 0 });
  });

  it('serves the control socket only while initialised and removes it at the last shutdown', async () => {
    const { fake, p } = await open({ devices: defaultDevices(1) });
    expect(existsSync(fake.socketPath)).toBe(false);
    await expect(fake.inject({ op: 'stats' }, { connectTimeoutMs: 100 })).rejects.toThrow(/not listening/);
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'nvmlInit_v2' });
    expect((await fake.stats()).waits).toBe(0);
    await p.call({ call: 'nvmlShutdown' });
    expect(existsSync(fake.socketPath)).toBe(true);
    await p.call({ call: 'nvmlShutdown' });
    expect(existsSync(fake.socketPath)).toBe(false);
    // a new session re-reads the config
    fake.update({ devices: defaultDevices(3) });
    await p.call({ call: 'nvmlInit_v2' });
    expect(await p.call({ call: 'count' })).toEqual({ rc: 0, value: 3 });
    expect((await fake.inject({ op: 'stats' })).devices).toBe(3);
  });

  it('leaves a live socket of another process alone, and removes its own at process exit', async () => {
    const { fake, p } = await open({ devices: defaultDevices(1) });
    await p.call({ call: 'nvmlInit_v2' });
    await p.call({ call: 'handle', index: 0 });
    await p.call({ call: 'setCreate' });
    await p.call({ call: 'register', index: 0, mask: EV.XID });
    const second = await Probe.start(fake);
    probes.push(second);
    expect((await second.call({ call: 'nvmlInit_v2' })).rc).toBe(0);
    await poll('the second process to report the socket', () => /served by another process/.test(second.stderr));
    expect(second.stderr).toMatch(/control socket .* is served by another process/);
    expect((await fake.inject({ op: 'xid', device: 0, xid: 94 })).recorded).toBe(1); // reached the first process
    expect(await p.call({ call: 'wait', timeoutMs: 1000 })).toMatchObject({ rc: 0, data: 94 });
    await second.close();
    expect(existsSync(fake.socketPath)).toBe(true);
    await p.close(); // exits without nvmlShutdown: the library's destructor cleans up
    expect(existsSync(fake.socketPath)).toBe(false);
  });

  it('answers bad control requests with ok:false and keeps serving', async () => {
    const { fake, p } = await open({ devices: defaultDevices(1) });
    await p.call({ call: 'nvmlInit_v2' });
    await expect(fake.inject({ op: 'xid', device: 0 })).rejects.toThrow(/missing "xid"/);
    await expect(fake.inject({ op: 'event', device: 0, type: 'nope' })).rejects.toThrow(/unknown event type/);
    await expect(fake.inject({ op: 'storm', device: 0, count: 0 })).rejects.toThrow(/"count" must be/);
    await expect(fake.inject({ nop: 1 })).rejects.toThrow(/"op" must be a string/);
    expect((await fake.stats()).devices).toBe(1);
  });
});

/** ThreadSanitizer build + C stress program (native/fake-nvml/stress.c); skipped where TSan is unavailable. */
const TSAN = (() => {
  const r = spawnSync('sh', ['-c', 'echo "int main(void){return 0;}" | cc -fsanitize=thread -x c -o /dev/null -'], { stdio: 'ignore' });
  if (r.status !== 0) console.warn('test/fake-nvml: ThreadSanitizer stress skipped, cc -fsanitize=thread does not work here');
  return r.status === 0;
})();

describe.skipIf(!TSAN)('fake libnvidia-ml.so.1 under ThreadSanitizer', () => {
  it('has no data race with getters, a waiter, injections and shutdown with calls in flight', () => {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    execFileSync('make', ['-s', '-C', join(root, 'native', 'fake-nvml'), 'tsan'], { stdio: 'inherit', timeout: 300_000 });
    const fake = FakeNvml.create({ devices: defaultDevices(4) });
    try {
      const tsanDir = join(root, 'build', 'fake-nvml', 'tsan');
      const r = spawnSync(join(tsanDir, 'stress'), [join(tsanDir, 'libnvidia-ml.so.1'), fake.socketPath], {
        env: { ...process.env, NAVARCH_FAKE_NVML_CONFIG: fake.configPath, TSAN_OPTIONS: 'halt_on_error=0 exitcode=66' },
        encoding: 'utf8',
        timeout: 300_000,
      });
      expect(r.stderr).not.toMatch(/WARNING: ThreadSanitizer/);
      expect(r.stdout).toMatch(/stress: [1-9]\d* events delivered, 0 failure\(s\)/);
      expect(r.status, r.stdout + r.stderr).toBe(0);
    } finally {
      fake.cleanup();
    }
  }, 600_000);
});
