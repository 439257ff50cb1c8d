/**
 * The GPU check's comparison pipeline (scripts/gpu-check/), exercised against the fake library:
 * pynvml_dump.py (NVIDIA's pynvml when importable, else the test stand-in in pynvml_shim/, which
 * loads the library by soname the same way) and addon_dump.mjs both read the fake; compare.mjs
 * must find them equal, and must flag any single-field difference.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultDevices, ensureFakeNvmlBuilt, FAKE_NVML_LIB, FakeNvml } from '../helpers/fake-nvml.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPTS = join(ROOT, 'scripts', 'gpu-check');
const SHIM = fileURLToPath(new URL('./pynvml_shim', import.meta.url));

function ok(cmd: string, args: string[]): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}
const PYTHON = ok('python3', ['-c', 'import ctypes']);
const REAL_PYNVML = PYTHON && ok('python3', ['-c', 'import pynvml']);
const ADDON_BUILT =
  existsSync(join(ROOT, 'dist', 'nvml', 'index.js')) &&
  existsSync(join(ROOT, 'build', 'Release')) &&
  readdirSync(join(ROOT, 'build', 'Release')).some((f) => f.endsWith('.node'));
if (!PYTHON) console.warn('gpu-check tests: pynvml dump skipped, python3 is not available');
if (PYTHON && !REAL_PYNVML)
  console.warn('gpu-check tests: nvidia-ml-py is not installed; pynvml_dump.py runs over the test stand-in test/fake-nvml/pynvml_shim');
if (!ADDON_BUILT)
  console.warn('gpu-check tests: addon dump skipped, dist/nvml/index.js or build/Release/*.node is missing (npm run build:ts && npm run build:addon)');

let work: string;
beforeAll(() => {
  ensureFakeNvmlBuilt();
  work = mkdtempSync(join(tmpdir(), 'navarch-gpu-check-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function compare(a: object, b: object): { status: number; out: string } {
  const fa = join(work, `a-${Math.random()}.json`),
    fb = join(work, `b-${Math.random()}.json`);
  writeFileSync(fa, JSON.stringify(a));
  writeFileSync(fb, JSON.stringify(b));
  const r = spawnSync(process.execPath, [join(SCRIPTS, 'compare.mjs'), fa, fb], { encoding: 'utf8' });
  return { status: r.status ?? -1, out: r.stdout + r.stderr };
}

function pynvmlDump(fake: FakeNvml): { status: number; json: any; stderr: string } {
  const out = join(work, `pynvml-${Math.random()}.json`);
  const env = {
    ...process.env,
    NAVARCH_FAKE_NVML_CONFIG: fake.configPath,
    // pynvml dlopens "libnvidia-ml.so.1": the fake's directory comes first on the loader path
    LD_LIBRARY_PATH: [dirname(FAKE_NVML_LIB), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
    ...(REAL_PYNVML ? {} : { PYTHONPATH: SHIM }),
  };
  const r = spawnSync('python3', [join(SCRIPTS, 'pynvml_dump.py'), '--out', out], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status ?? -1, json: r.status === 0 ? JSON.parse(readFileSync(out, 'utf8')) : null, stderr: r.stderr };
}

function addonDump(fake: FakeNvml): { status: number; json: any; stderr: string } {
  const out = join(work, `addon-${Math.random()}.json`);
  const r = spawnSync(process.execPath, [join(SCRIPTS, 'addon_dump.mjs'), '--out', out], {
    env: { ...process.env, ...fake.env() },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status ?? -1, json: r.status === 0 ? JSON.parse(readFileSync(out, 'utf8')) : null, stderr: r.stderr };
}

const sample = {
  source: 'x',
  system: { driverVersion: '550.163.01', nvmlVersion: '12.550.163.01', cudaDriverVersion: '12.4' },
  devices: [
    {
      index: 0,
      uuid: 'GPU-1',
      name: 'NVIDIA H100 80GB HBM3',
      serial: null,
      pciBusId: '00000000:18:00.0',
      minorNumber: 0,
      memoryTotalBytes: 85520809984,
      powerLimitW: 700,
      pcieLinkGenMax: 5,
      pcieLinkWidthMax: 16,
      eccModeCurrent: true,
      eccModePending: true,
      persistenceMode: false,
    },
  ],
};

describe('scripts/gpu-check/compare.mjs', () => {
  it('passes identical dumps and fails on any single-field difference', () => {
    expect(compare({ ...sample, source: 'pynvml' }, { ...sample, source: 'addon' })).toMatchObject({ status: 0 });
    for (const [field, value] of [
      ['uuid', 'GPU-2'],
      ['serial', 'S1'],
      ['powerLimitW', 699],
      ['eccModePending', false],
      ['minorNumber', 1],
      ['memoryTotalBytes', 85520809985],
    ] as const) {
      const other = { ...sample, devices: [{ ...sample.devices[0], [field]: value }] };
      const r = compare(sample, other);
      expect(r.status).toBe(1);
      expect(r.out).toContain(`DIFF device 0 ${field}:`);
    }
    const r = compare(sample, { ...sample, system: { ...sample.system, cudaDriverVersion: '12.2' } });
    expect(r).toMatchObject({ status: 1 });
    expect(r.out).toContain('DIFF system.cudaDriverVersion');
    expect(compare(sample, { ...sample, devices: [] }).out).toContain('DIFF device count: x=1 x=0');
    const missing = { ...sample, devices: [{ ...sample.devices[0], name: undefined }] };
    expect(compare(sample, missing).out).toContain('name: x="NVIDIA H100 80GB HBM3" x=missing');
  });

  it('rejects unreadable input with exit 2 and one line', () => {
    const bad = join(work, 'bad.json');
    writeFileSync(bad, '{"nope":1}');
    const r = spawnSync(process.execPath, [join(SCRIPTS, 'compare.mjs'), bad, bad], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/^compare: .*bad\.json: not a dump/);
  });
});

describe.skipIf(!PYTHON)('scripts/gpu-check/pynvml_dump.py over the fake library', () => {
  it('reads every compared field, null where NVML says NOT_SUPPORTED', () => {
    const devs = defaultDevices(3);
    devs[1] = { ...devs[1], unsupported: ['serial', 'ecc'], telemetry: { ...devs[1]!.telemetry, persistenceMode: 0 } };
    const fake = FakeNvml.create({ devices: devs, cudaDriverVersion: 12020 });
    try {
      const r = pynvmlDump(fake);
      expect(r.status, r.stderr).toBe(0);
      expect(r.json.system).toEqual({ driverVersion: '550.163.01', nvmlVersion: '12.550.163.01', cudaDriverVersion: '12.2' });
      expect(r.json.devices).toHaveLength(3);
      expect(r.json.devices[0]).toEqual({
        index: 0,
        uuid: devs[0]!.uuid,
        name: 'NVIDIA H100 80GB HBM3',
        serial: devs[0]!.serial,
        pciBusId: '00000000:18:00.0',
        minorNumber: 0,
        memoryTotalBytes: 85520809984,
        powerLimitW: 700,
        pcieLinkGenMax: 5,
        pcieLinkWidthMax: 16,
        eccModeCurrent: true,
        eccModePending: true,
        persistenceMode: true,
      });
      expect(r.json.devices[1]).toMatchObject({ serial: null, eccModeCurrent: null, eccModePending: null, persistenceMode: false });
    } finally {
      fake.cleanup();
    }
  });

  it('exits 1 with a message when NVML cannot initialise', () => {
    const fake = FakeNvml.create({ initError: 9 });
    try {
      const r = pynvmlDump(fake);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/nvmlInit failed/);
    } finally {
      fake.cleanup();
    }
  });
});

describe.skipIf(!PYTHON || !ADDON_BUILT)('pynvml vs addon over the fake library (end to end)', () => {
  it('agree on every field, and a changed field is caught', () => {
    const devs = defaultDevices(4);
    devs[2] = { ...devs[2], unsupported: ['serial', 'ecc', 'pcie'] };
    const fake = FakeNvml.create({ devices: devs });
    try {
      const p = pynvmlDump(fake);
      const a = addonDump(fake);
      expect(p.status, p.stderr).toBe(0);
      expect(a.status, a.stderr).toBe(0);
      const r = compare(p.json, a.json);
      expect(r.out).toMatch(/agree on 3 system fields and 12 fields of 4 device/);
      expect(r.status).toBe(0);
      const other = structuredClone(a.json);
      other.devices[3].memoryTotalBytes += 1;
      expect(compare(p.json, other).status).toBe(1);
    } finally {
      fake.cleanup();
    }
  }, 180_000);
});

describe('scripts/gpu-check.sh', () => {
  it.skipIf(!ok('shellcheck', ['--version']))('is shellcheck-clean', () => {
    const r = spawnSync('shellcheck', [join(ROOT, 'scripts', 'gpu-check.sh'), join(ROOT, 'scripts', 'gpu-carry.sh')], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('refuses to run where there is no nvidia-smi, with exit 2', () => {
    const out = join(work, 'gc-out');
    const bin = join(work, 'bin');
    // PATH with node but without nvidia-smi
    execFileSync('mkdir', ['-p', bin]);
    execFileSync('ln', ['-sf', process.execPath, join(bin, 'node')]);
    const r = spawnSync('bash', [join(ROOT, 'scripts', 'gpu-check.sh'), '--out', out], {
      env: { PATH: `${bin}:/usr/bin:/bin`, HOME: work },
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (ok('bash', ['-c', 'PATH=/usr/bin:/bin command -v nvidia-smi'])) return; // a real GPU host
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/nvidia-smi not found/);
  });

  it.skipIf(!PYTHON || !ADDON_BUILT)(
    'runs end to end over the fake library (stand-in nvidia-smi)',
    () => {
      // Everything real except the GPU: the addon dlopens "libnvidia-ml.so.1" and finds the fake
      // through LD_LIBRARY_PATH, as pynvml does; nvidia-smi is a stand-in script printing one line.
      const bin = join(work, 'smi-bin');
      const out = join(work, 'gc-e2e');
      execFileSync('mkdir', ['-p', bin]);
      writeFileSync(
        join(bin, 'nvidia-smi'),
        '#!/bin/sh\nif [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)"; else echo "0, NVIDIA H100 80GB HBM3, 550.163.01"; fi\n',
        { mode: 0o755 },
      );
      const fake = FakeNvml.create({ devices: defaultDevices(2) });
      try {
        const env: Record<string, string> = {
          PATH: `${bin}:${dirname(process.execPath)}:/usr/bin:/bin`,
          HOME: work,
          NAVARCH_FAKE_NVML_CONFIG: fake.configPath,
          NAVARCH_NVML_LIBRARY: '/nonexistent/must-be-unset-by-the-script',
          LD_LIBRARY_PATH: dirname(FAKE_NVML_LIB),
          ...(REAL_PYNVML ? {} : { PYTHONPATH: SHIM }),
        };
        const r = spawnSync('bash', [join(ROOT, 'scripts', 'gpu-check.sh'), '--skip-tests', '--out', out], { env, encoding: 'utf8', timeout: 300_000 });
        expect(r.stdout).toMatch(/PASS benchmark: snapshot via addon vs nvidia-smi/);
        expect(r.stdout).toMatch(/PASS compare pynvml vs addon/);
        expect(r.stdout).toMatch(/addon is \d+x faster/);
        expect(r.status, r.stdout + r.stderr).toBe(0);
        expect(JSON.parse(readFileSync(join(out, 'bench-real.json'), 'utf8')).results.snapshot.devices).toBe(2);
        // the GPU tier skips itself without /dev/nvidiactl: a run where no GPU test passed fails
        const r2 = spawnSync('bash', [join(ROOT, 'scripts', 'gpu-check.sh'), '--skip-bench', '--skip-pynvml', '--out', out], {
          env,
          encoding: 'utf8',
          timeout: 300_000,
        });
        expect(r2.status).toBe(1);
        expect(r2.stdout).toMatch(/FAIL native GPU tests ran no test|FAIL test\/native\/gpu\.test\.ts is missing/);
        // pointed at the fake (the tier's own self-check switch), the GPU tier runs and passes
        if (existsSync(join(ROOT, 'test', 'native', 'gpu.test.ts'))) {
          const r3 = spawnSync('bash', [join(ROOT, 'scripts', 'gpu-check.sh'), '--skip-bench', '--skip-pynvml', '--out', out], {
            env: { ...env, NAVARCH_GPU_TEST_LIBRARY: FAKE_NVML_LIB },
            encoding: 'utf8',
            timeout: 300_000,
          });
          expect(r3.stdout).toMatch(/PASS native GPU tests/);
          expect(r3.stdout).toMatch(/native GPU tests: \d+ passed/);
          expect(r3.status, r3.stdout + r3.stderr).toBe(0);
        }
      } finally {
        fake.cleanup();
      }
    },
    600_000,
  );

  it('rejects unknown arguments', () => {
    const r = spawnSync('bash', [join(ROOT, 'scripts', 'gpu-check.sh'), '--bogus'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('gpu-check: unknown argument: --bogus');
  });
});
