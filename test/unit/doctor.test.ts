/**
 * doctor's pure parts (src/cli/doctor.ts): the fix line per NVML failure and the text lines; and
 * runDoctor on a terminal: the progress line is overwritten by the result (in process, fake GPUs).
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkFabricManager, nvmlFix, resultLines, runDoctor, type CheckResult } from '../../src/cli/doctor.js';
import { resolveConfig } from '../../src/config/config.js';

describe('nvmlFix', () => {
  it('a missing addon is not a driver problem', () => {
    expect(nvmlFix('NVML_ADDON_UNAVAILABLE')).toMatch(/^the native addon did not load \(the driver may be fine\)/);
    expect(nvmlFix('NVML_ADDON_UNAVAILABLE')).not.toMatch(/install the NVIDIA driver/);
  });
  it('names the library, permissions, the kernel module, and falls back to the general advice', () => {
    expect(nvmlFix('NVML_LIBRARY_NOT_FOUND')).toMatch(/libnvidia-ml\.so\.1 .*NAVARCH_NVML_LIBRARY/);
    expect(nvmlFix('NVML_ERROR_NO_PERMISSION')).toMatch(/\/dev\/nvidia\*/);
    expect(nvmlFix('NVML_ERROR_DRIVER_NOT_LOADED')).toMatch(/modprobe nvidia/);
    expect(nvmlFix(undefined)).toMatch(/nvidia-smi.*reboot/);
  });
});

describe('resultLines', () => {
  it('a fix line only for a result that is not OK', () => {
    expect(resultLines({ name: 'x', state: 'fail', detail: 'd', fix: 'f' })).toEqual(['[FAIL] x: d', '       fix: f']);
    expect(resultLines({ name: 'x', state: 'ok', detail: 'd', fix: 'f' })).toEqual(['[ OK ] x: d']);
  });
});

describe('runDoctor on a terminal', () => {
  it('writes a progress line before a slow check and overwrites it with the result', async () => {
    const cfg = resolveConfig({
      flags: new Map([
        ['gpu-backend', 'fake'],
        ['kmsg-path', 'none'],
        ['server', 'http://127.0.0.1:9'],
        ['state-dir', '/nonexistent-doctor-unit/state'],
        ['listen', '127.0.0.1:9'],
      ]),
      env: {},
    });
    let out = '';
    let err = '';
    const code = await runDoctor(cfg, {
      json: false,
      io: { stdout: (s) => (out += s), stderr: (s) => (err += s), env: { NAVARCH_GPU_COUNT: '1' }, isTTY: true },
    });
    expect(code).toBe(1);
    expect(err).toBe('');
    expect(out).toContain('[....] control plane: asking http://127.0.0.1:9 (up to 6 s)...\r\x1b[K[ OK ] transport:');
    expect(out).toContain('[....] gpu driver: opening the GPU backend...\r\x1b[K[WARN] gpu driver: fake backend');
    expect(out.endsWith('some checks failed\n')).toBe(true);
  });
});

describe('checkFabricManager', () => {
  it('skips without NVSwitch; on an NVSwitch host fails while nvidia-fabricmanager is down, warns when unknown or the log is unreadable', async () => {
    const root = mkdtempSync(join(tmpdir(), 'navarch-doctor-fm-'));
    try {
      const run = async (state: 'active' | 'failed' | 'unknown', log: string | null) => {
        const out: CheckResult[] = [];
        await checkFabricManager(
          { sysRoot: root, fabricManagerLog: log },
          out,
          async (unit) => (expect(unit).toBe('nvidia-fabricmanager'), { state, detail: state === 'unknown' ? 'systemctl not found' : state }),
        );
        return out.map((r) => `${r.state} ${r.name}: ${r.detail}`);
      };
      expect(await run('failed', null)).toEqual(['skip fabric manager: no NVSwitch on this host']);
      mkdirSync(join(root, 'dev'));
      writeFileSync(join(root, 'dev', 'nvidia-nvswitch0'), '');
      const log = join(root, 'fabricmanager.log');
      writeFileSync(log, '');
      expect(await run('active', log)).toEqual([
        `ok fabric manager: nvidia-fabricmanager active (1 /dev/nvidia-nvswitchN node)`,
        `ok fabric manager log: ${log} readable`,
      ]);
      expect(await run('failed', null)).toEqual([
        'fail fabric manager: 1 /dev/nvidia-nvswitchN node; nvidia-fabricmanager is failed: CUDA cannot use the GPUs',
      ]);
      expect(await run('unknown', join(root, 'none.log'))).toEqual([
        'warn fabric manager: 1 /dev/nvidia-nvswitchN node; nvidia-fabricmanager state unknown: systemctl not found',
        `warn fabric manager log: ${join(root, 'none.log')}: ENOENT`,
      ]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
