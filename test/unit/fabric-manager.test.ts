/**
 * nvidia-fabricmanager checks: the log line classifier, the bounded rotation-safe tail, the service
 * judge (boot grace, hysteresis, unknown = no verdict), NVSwitch detection over a scratch sysfs/dev
 * tree, `systemctl is-active` through a real child process (deadline, missing binary), and the
 * monitor wiring it together on an injected clock.
 */
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectNvSwitches } from '../../src/host/nvswitch.js';
import { LogTail, parseFabricManagerLine } from '../../src/sources/fabric-manager-log.js';
import {
  FabricManagerMonitor,
  judgeFabricManager,
  serviceStateFrom,
  systemctlIsActive,
  type FabricManagerJudgeState,
  type ServiceState,
} from '../../src/sources/fabric-manager.js';

const dirs: string[] = [];
function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'navarch-fm-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const ERR_NONFATAL =
  '[Feb 27 2025 15:10:02] [ERROR] [tid 12727] detected NVSwitch non-fatal error 12028 on fid 0 on NVSwitch pci bus id 00000000:86:00.0 physical id 3 port 61';
const ERR_FATAL =
  '[Jul 23 2024 07:53:55] [ERROR] [tid 841] detected NVSwitch fatal error 20034 on fid 0 on NVSwitch pci bus id 00000000:86:00.0 physical id 3 port 33';
const INFO = '[Feb 27 2025 14:10:02] [INFO] [tid 1808] multicast group 1 is allocated.';

describe('fabric manager log lines', () => {
  it('ERROR/FATAL lines are errors with the SXid and NVSwitch PCI id picked out; INFO and text are not', () => {
    expect(parseFabricManagerLine(ERR_NONFATAL)).toEqual({
      level: 'ERROR',
      text: ERR_NONFATAL,
      sxid: 12028,
      sxidFatal: false,
      nvswitchPci: '00000000:86:00.0',
    });
    expect(parseFabricManagerLine(ERR_FATAL)).toMatchObject({ sxid: 20034, sxidFatal: true });
    expect(
      parseFabricManagerLine(
        '[Sep 17 2024 06:01:46] [ERROR] [tid 1230079] failed to find the GPU handle 5410063385821516767 in the multicast team request setup 6130285411925746235.',
      ),
    ).toMatchObject({ level: 'ERROR', sxid: null, sxidFatal: null, nvswitchPci: null });
    expect(parseFabricManagerLine('[Jan 01 2025 00:00:00] [FATAL] [tid 1] fabric manager exiting')).toMatchObject({ level: 'FATAL' });
    expect(parseFabricManagerLine(INFO)).toBeNull();
    expect(parseFabricManagerLine('Message payload details: ERROR in text only')).toBeNull();
    expect(parseFabricManagerLine(`[x] [ERROR] ${'y'.repeat(2000)}`)!.text).toHaveLength(512);
  });
});

describe('LogTail', () => {
  it('starts at the end, returns appended complete lines, keeps a partial line until its newline', async () => {
    const f = join(scratch(), 'fm.log');
    writeFileSync(f, `${INFO}\n${ERR_FATAL}\n`);
    const t = new LogTail({ path: f });
    expect(await t.poll()).toEqual([]);
    appendFileSync(f, `${ERR_NONFATAL}\npart`);
    expect(await t.poll()).toEqual([ERR_NONFATAL]);
    appendFileSync(f, 'ial\n');
    expect(await t.poll()).toEqual(['partial']);
    await t.close();
  });

  it('rename rotation: drains the old file, then reads the new one from its start; truncation restarts at 0', async () => {
    const d = scratch();
    const f = join(d, 'fm.log');
    writeFileSync(f, '');
    const t = new LogTail({ path: f });
    await t.poll();
    appendFileSync(f, 'a1\n');
    renameSync(f, join(d, 'fm.log.1'));
    appendFileSync(join(d, 'fm.log.1'), 'a2\n'); // written by the old writer after the rename
    expect(await t.poll()).toEqual(['a1', 'a2']); // not recreated yet: the old file is kept
    writeFileSync(f, 'b1\n');
    expect(await t.poll()).toEqual(['b1']);
    expect(t.stats().rotations).toBe(1);
    appendFileSync(f, 'b2\n');
    expect(await t.poll()).toEqual(['b2']);
    truncateSync(f, 0);
    appendFileSync(f, 'c1\n');
    expect(await t.poll()).toEqual(['c1']);
    expect(t.stats().truncations).toBe(1);
    await t.close();
  });

  it('a file created after the start is read from its start; reads are bounded per poll; long lines are cut', async () => {
    const f = join(scratch(), 'fm.log');
    const t = new LogTail({ path: f, maxBytesPerPoll: 10, maxLineBytes: 6 });
    expect(await t.poll()).toEqual([]);
    expect(t.stats().lastError).toBe('ENOENT');
    writeFileSync(f, 'one\ntwo\nthree-long\n');
    expect(await t.poll()).toEqual(['one', 'two']); // 10 bytes this time
    expect(await t.poll()).toEqual(['three-']);
    expect(t.stats()).toMatchObject({ longLines: 1, lines: 3 });
    await t.close();
  });

  it('a FIFO or a directory at the path is refused without blocking', async () => {
    const d = scratch();
    const fifo = join(d, 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const t = new LogTail({ path: fifo });
    expect(await t.poll()).toEqual([]);
    expect(t.stats()).toMatchObject({ open: false, lastError: 'not a regular file' });
    const t2 = new LogTail({ path: d });
    expect(await t2.poll()).toEqual([]);
    expect(t2.stats().open).toBe(false);
  });
});

const active: ServiceState = { state: 'active', detail: 'active' };
const failed: ServiceState = { state: 'failed', detail: 'failed' };
const unknown: ServiceState = { state: 'unknown', detail: 'systemctl not found' };
const cfg = { bootGraceMs: 300_000, clearAfterGood: 2, logQuietMs: 600_000 };

describe('judgeFabricManager', () => {
  function run(steps: Array<{ at: number; service: ServiceState; errors?: string[] }>): string[][] {
    let st: FabricManagerJudgeState | null = null;
    return steps.map((s) => {
      const r = judgeFabricManager(
        st,
        { nowMs: s.at, sinceBootMs: s.at, service: s.service, errors: (s.errors ?? []).map((l) => parseFabricManagerLine(l)!) },
        cfg,
      );
      st = r.state;
      return r.events.map((e) => `${e.fault}:${e.key}:${e.severity}`);
    });
  }

  it('not active after the boot grace is critical; clears after 2 active checks; unknown judges nothing', () => {
    expect(
      run([
        { at: 60_000, service: failed },
        { at: 300_000, service: failed },
        { at: 310_000, service: failed },
        { at: 320_000, service: active },
        { at: 330_000, service: unknown },
        { at: 340_000, service: failed },
        { at: 350_000, service: active },
        { at: 360_000, service: active },
      ]),
    ).toEqual([[], ['raise:node/fabric_manager:critical'], [], [], [], [], [], ['clear:node/fabric_manager:info']]);
    const r = judgeFabricManager(null, { nowMs: 400_000, sinceBootMs: 400_000, service: { state: 'inactive', detail: 'inactive' }, errors: [] }, cfg);
    expect(r.events[0]).toMatchObject({
      gpuIndex: -1,
      type: 'nvlink',
      system: 'NVSWITCH',
      action: 'reboot',
      source: 'agent',
      metrics: { service: 'nvidia-fabricmanager', service_state: 'inactive' },
    });
    expect(r.events[0]!.message).toContain('CUDA cannot use the GPUs');
  });

  it('logged errors raise a warning per check that saw some, and clear after the quiet time', () => {
    let st: FabricManagerJudgeState | null = null;
    const step = (at: number, lines: string[]) => {
      const r = judgeFabricManager(st, { nowMs: at, sinceBootMs: at, service: active, errors: lines.map((l) => parseFabricManagerLine(l)!) }, cfg);
      st = r.state;
      return r.events;
    };
    const a = step(1_000_000, [ERR_FATAL, ERR_NONFATAL]);
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({
      key: 'node/fabric_manager/log',
      fault: 'raise',
      severity: 'warning',
      count: 2,
      metrics: { error_lines: '2', sxid: '12028', sxid_fatal: 'false', nvswitch_pci: '00000000:86:00.0', last_error: ERR_NONFATAL },
    });
    expect(step(1_300_000, [])).toEqual([]);
    expect(step(1_599_999, [])).toEqual([]);
    expect(step(1_600_000, []).map((e) => `${e.fault}:${e.key}`)).toEqual(['clear:node/fabric_manager/log']);
  });

  it('serviceStateFrom reads the first word; anything else is unknown', () => {
    expect(serviceStateFrom('active\n')).toEqual({ state: 'active', detail: 'active' });
    expect(serviceStateFrom('activating\n').state).toBe('activating');
    expect(serviceStateFrom('')).toEqual({ state: 'unknown', detail: 'no answer' });
    expect(serviceStateFrom('offline\n').state).toBe('unknown');
  });
});

describe('systemctlIsActive (a real child process)', () => {
  it('reads the state from stdout whatever the exit code; missing binary and a hang are unknown', async () => {
    const d = scratch();
    const stub = join(d, 'systemctl');
    writeFileSync(stub, '#!/bin/sh\n[ "$1" = is-active ] || exit 9\necho "$STUB_STATE"\nexit 3\n');
    chmodSync(stub, 0o755);
    process.env.STUB_STATE = 'failed';
    try {
      expect(await systemctlIsActive('nvidia-fabricmanager', 5000, stub)).toEqual({ state: 'failed', detail: 'failed' });
    } finally {
      delete process.env.STUB_STATE;
    }
    expect(await systemctlIsActive('nvidia-fabricmanager', 5000, join(d, 'nope'))).toMatchObject({
      state: 'unknown',
      detail: expect.stringContaining('not found'),
    });
    const hang = join(d, 'hang');
    writeFileSync(hang, '#!/bin/sh\nexec sleep 30\n');
    chmodSync(hang, 0o755);
    expect(await systemctlIsActive('x', 200, hang)).toMatchObject({ state: 'unknown', detail: expect.stringContaining('did not answer') });
    const loud = join(d, 'loud');
    writeFileSync(loud, '#!/bin/sh\nhead -c 100000 /dev/zero | tr "\\0" a\n');
    chmodSync(loud, 0o755);
    expect(await systemctlIsActive('x', 5000, loud)).toMatchObject({ state: 'unknown', detail: expect.stringContaining('more than 4096 bytes') });
  });
});

/** A scratch root with NVIDIA GPUs and, optionally, NVSwitches (PCI class 0x068000) and their /dev nodes. */
function sysTree(opts: { switches: number; devNodes: number }): string {
  const root = scratch();
  const add = (addr: string, cls: string) => {
    const p = join(root, 'sys/bus/pci/devices', addr);
    mkdirSync(p, { recursive: true });
    writeFileSync(join(p, 'vendor'), '0x10de\n');
    writeFileSync(join(p, 'class'), `${cls}\n`);
  };
  add('0000:18:00.0', '0x030200');
  for (let i = 0; i < opts.switches; i++) add(`0000:0${5 + i}:00.0`, '0x068000');
  const other = join(root, 'sys/bus/pci/devices/0000:00:01.0');
  mkdirSync(other, { recursive: true });
  writeFileSync(join(other, 'vendor'), '0x8086\n');
  writeFileSync(join(other, 'class'), '0x068000\n');
  mkdirSync(join(root, 'dev'), { recursive: true });
  for (let i = 0; i < opts.devNodes; i++) writeFileSync(join(root, 'dev', `nvidia-nvswitch${i}`), '');
  writeFileSync(join(root, 'dev', 'nvidia-nvswitchctl'), '');
  return root;
}

describe('NVSwitch detection', () => {
  it('NVIDIA class-0x0680 PCI functions and /dev/nvidia-nvswitchN nodes; GPUs, other vendors and the ctl node do not count', async () => {
    expect(await detectNvSwitches(sysTree({ switches: 4, devNodes: 4 }))).toEqual({
      pciDevices: ['0000:05:00.0', '0000:06:00.0', '0000:07:00.0', '0000:08:00.0'],
      deviceNodes: ['nvidia-nvswitch0', 'nvidia-nvswitch1', 'nvidia-nvswitch2', 'nvidia-nvswitch3'],
      present: true,
      summary: '4 NVSwitch PCI devices, 4 /dev/nvidia-nvswitchN nodes',
    });
    expect((await detectNvSwitches(sysTree({ switches: 0, devNodes: 2 }))).present).toBe(true);
    expect(await detectNvSwitches(sysTree({ switches: 0, devNodes: 0 }))).toMatchObject({ present: false, summary: 'no NVSwitch' });
    expect((await detectNvSwitches(join(scratch(), 'missing'))).present).toBe(false);
  });
});

describe('FabricManagerMonitor', () => {
  it('no NVSwitch: no check at all (systemctl never asked)', async () => {
    let asked = 0;
    const m = new FabricManagerMonitor({ sysRoot: sysTree({ switches: 0, devNodes: 0 }), onEvents: () => {}, isActive: async () => (asked++, failed) });
    await m.start();
    expect(m.status().state).toBe('no_nvswitch');
    expect(await m.checkNow()).toEqual([]);
    expect(asked).toBe(0);
    await m.stop();
  });

  it('NVSwitch host: service down and log errors become events on the injected clock, then clear', async () => {
    const root = sysTree({ switches: 2, devNodes: 2 });
    const log = join(root, 'fabricmanager.log');
    writeFileSync(log, `${ERR_FATAL}\n`); // before the start: not reported
    let now = 1_000_000;
    let service: ServiceState = failed;
    const got: string[] = [];
    const m = new FabricManagerMonitor({
      sysRoot: root,
      logPath: log,
      intervalMs: 3_600_000,
      bootTimeMs: 0,
      now: () => now,
      isActive: async (unit) => (expect(unit).toBe('nvidia-fabricmanager'), service),
      onEvents: (evs) => got.push(...evs.map((e) => `${e.fault}:${e.key}:${e.severity}`)),
    });
    await m.start();
    expect(got).toEqual(['raise:node/fabric_manager:critical']);
    // An operator clear (POST /faults/clear) forgets it: still failed, so the next check raises it again.
    m.forget('node/fabric_manager');
    now += 1000;
    await m.checkNow();
    expect(got).toEqual(['raise:node/fabric_manager:critical', 'raise:node/fabric_manager:critical']);
    got.length = 1;
    expect(m.status()).toMatchObject({ state: 'running', nvswitch: '2 NVSwitch PCI devices, 2 /dev/nvidia-nvswitchN nodes', service: failed, checks: 2 });
    service = active;
    appendFileSync(log, `${INFO}\n${ERR_NONFATAL}\n`);
    now += 10_000;
    await m.checkNow();
    now += 10_000;
    await m.checkNow();
    expect(got).toEqual(['raise:node/fabric_manager:critical', 'raise:node/fabric_manager/log:warning', 'clear:node/fabric_manager:info']);
    now += 600_000;
    await m.checkNow();
    expect(got.at(-1)).toBe('clear:node/fabric_manager/log:info');
    await m.stop();
    expect(m.status().state).toBe('stopped');
  });
});
