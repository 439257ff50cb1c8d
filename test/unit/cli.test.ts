import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseArgv } from '../../src/cli/args.js';
import { runCli } from '../../src/cli/cli.js';
import { COMMAND_BY_NAME } from '../../src/cli/commands.js';
import { UsageError } from '../../src/config/config.js';
import { startDevControlPlane } from '../../src/devcp/dev-server.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const mainJs = join(root, 'dist/cli/main.js');
const built = existsSync(mainJs);
if (!built) console.warn(`skipping CLI process tests: ${mainJs} not built (run npm run build)`);
const dir = mkdtempSync(join(tmpdir(), 'navarch-cli-'));

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}) {
  let out = '';
  let err = '';
  const code = await runCli(argv, { stdout: (s) => (out += s), stderr: (s) => (err += s), env });
  return { code, out, err };
}

function expectUsage(r: { code: number; out: string; err: string }, re: RegExp) {
  expect(r.code).toBe(2);
  expect(r.err.endsWith('\n')).toBe(true);
  expect(r.err.trimEnd().split('\n')).toHaveLength(1);
  expect(r.err).toMatch(/^navarch-agent: /);
  expect(r.err).toMatch(re);
}

describe('argv parser', () => {
  const run = COMMAND_BY_NAME.get('run')!;
  it('accepts --x v, --x=v and Go-style -x v', () => {
    const p = parseArgv(['--server', 'http://a:1', '--node-id=n1', '-provider', 'aws', '--allow-insecure'], run);
    expect(p.flags.get('server')).toBe('http://a:1');
    expect(p.flags.get('node-id')).toBe('n1');
    expect(p.flags.get('provider')).toBe('aws');
    expect(p.flags.get('allow-insecure')).toBe(true);
  });
  it('rejects unknown flags, missing values, extra arguments', () => {
    expect(() => parseArgv(['--servr', 'x'], run)).toThrow(UsageError);
    expect(() => parseArgv(['--server'], run)).toThrow(/needs a value/);
    expect(() => parseArgv(['extra'], run)).toThrow(/unexpected argument "extra"/);
    expect(() => parseArgv(['--allow-insecure=yes'], run)).toThrow(/expected true or false/);
  });
});

describe('runCli bad input: one line on stderr, exit 2', () => {
  it('unknown command and flag', async () => {
    expectUsage(await cli(['frobnicate']), /unknown command "frobnicate"/);
    expectUsage(await cli(['run', '--no-such-flag']), /unknown flag "--no-such-flag" for "run"/);
    expectUsage(await cli(['devices', '--jsn']), /unknown flag "--jsn"/);
    // No command means run (Go node daemon's command line): flags first are run's flags.
    expectUsage(await cli(['--no-such-flag']), /unknown flag "--no-such-flag" for "run"/);
    expectUsage(await cli(['--server', 'localhost:1']), /--server: expected a URL/);
  });
  it('bad URL, duration, config, token file', async () => {
    expectUsage(await cli(['run', '--server', 'localhost:50051']), /--server: expected a URL with http:\/\/ or https:\/\//);
    expectUsage(await cli(['run', '--telemetry-interval', 'fast']), /--telemetry-interval: expected a duration/);
    const cfg = join(dir, 'config.yaml');
    writeFileSync(cfg, 'heartbeatInterval: 30\n');
    expectUsage(await cli(['run', '--config', cfg]), /config\.yaml: key "heartbeatInterval": expected a duration like "30s"/);
    expectUsage(await cli(['run', '--auth-token-file', join(dir, 'missing-token')]), /cannot read token file/);
    expectUsage(await cli(['run'], { NAVARCH_GPU_BACKEND: 'gpu' }), /env NAVARCH_GPU_BACKEND: expected one of auto, nvml, fake/);
  });
  it('bad fake-backend input', async () => {
    const scen = join(dir, 'scenario.yaml');
    writeFileSync(scen, 'name: s\nevents:\n  - at: 1s\n    gpu: 9\n    fault: xid\n    xid: 79\n');
    expectUsage(
      await cli(['run', '--gpu-backend', 'fake', '--scenario', scen], { NAVARCH_GPU_COUNT: '4' }),
      /scenario\.yaml: events\[0\]\.gpu: 9 out of range/,
    );
    expectUsage(await cli(['run', '--gpu-backend', 'fake'], { NAVARCH_GPU_COUNT: 'many' }), /NAVARCH_GPU_COUNT: expected a whole number/);
  });
  it('command arguments', async () => {
    expectUsage(await cli(['xid']), /needs an argument/);
    expectUsage(await cli(['xid', 'abc']), /expected a non-negative integer/);
    expectUsage(await cli(['inject', 'meteor']), /"kind" must be one of/);
    expectUsage(await cli(['inject', 'xid', '--gpu', '1']), /"xid" is required/);
    expectUsage(await cli(['control-plane']), /pass --dev/);
    expectUsage(await cli(['control-plane', '--dev', '--port', '99999']), /--port/);
    expectUsage(await cli(['demo', '--duration', 'forever']), /--duration/);
  });
});

describe('runCli read commands', () => {
  it('explains an XID', async () => {
    const r = await cli(['xid', '79']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^XID 79 /);
    expect(r.out).toMatch(/fatal in the default policy/);
    const j = await cli(['xid', '48', '--json']);
    expect(JSON.parse(j.out)).toMatchObject({ code: 48, navarchFatal: true });
  });
  it("explains every code of NVIDIA's catalog (1-172) and says which codes it does not know", async () => {
    for (let c = 1; c <= 172; c++) {
      const r = await cli(['xid', String(c)]);
      expect(r.code, `xid ${c}`).toBe(0);
      expect(r.out, `xid ${c}`).toMatch(new RegExp(`^XID ${c}  [A-Z0-9_]+\n`));
      expect(r.out).not.toContain('not in the catalog');
      expect(r.out).toMatch(/\n  NVIDIA action: {2}\S/);
      expect(r.out).toMatch(/\n  agent: {10}severity (info|warning|critical), recommended action \w+\n/);
      expect(r.out).toMatch(/\n  others: {9}gpud .+; DCGM .+; EKS (fatal|not fatal)\n/);
      const j = JSON.parse((await cli(['xid', String(c), '--json'])).out) as { code: number; known: boolean };
      expect(j).toMatchObject({ code: c, known: true });
    }
    const e = await cli(['xid', '142']);
    expect(e.out).toMatch(/severity critical, recommended action reset_gpu/);
    expect(e.out).toMatch(/note: .*EKS/);
    expect((await cli(['xid', '173'])).out).toMatch(/not in the catalog/);
  });
  it('prints help and version', async () => {
    const h = await cli(['help', 'run']);
    expect(h.code).toBe(0);
    expect(h.out).toContain('--telemetry-interval');
    expect((await cli(['run', '--help'])).out).toContain('--auth-token-file');
    expect((await cli(['version'])).out).toMatch(/^\d+\.\d+\.\d+\n$/);
  });
  it('lists fake devices locally when no agent answers', async () => {
    const r = await cli(['devices', '--gpu-backend', 'fake', '--api', 'http://127.0.0.1:9', '--json'], { NAVARCH_GPU_COUNT: '2' });
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { source: string; devices: unknown[]; system: unknown };
    expect(j.source).toBe('local');
    expect(j.devices).toHaveLength(2);
    expect(j.system).toEqual({ driverVersion: '550.163.01', nvmlVersion: '12.550.163.01', cudaDriverVersion: '12.4' });
    const t = await cli(['devices', '--gpu-backend', 'fake', '--api', 'http://127.0.0.1:9'], { NAVARCH_GPU_COUNT: '2' });
    expect(t.out).toMatch(/GPU\s+NAME/);
    expect(t.out).toContain('driver: 550.163.01  CUDA: 12.4  NVML: 12.550.163.01\n');
  });
  it('reads faults from an empty state dir; a missing one is an error, not "no active faults"', async () => {
    const missing = await cli(['faults', '--state-dir', join(dir, 'state'), '--api', 'http://127.0.0.1:9']);
    expect(missing.code).toBe(1);
    expect(missing.out).toBe('');
    expect(missing.err).toMatch(/state directory .*state does not exist: cannot tell the active faults/);
    mkdirSync(join(dir, 'state'));
    const r = await cli(['faults', '--state-dir', join(dir, 'state'), '--api', 'http://127.0.0.1:9']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^source: NOT LIVE: read from disk, state dir .*; no events stored there yet\nno active faults\n$/);
  });
});

describe.skipIf(!built)('built CLI process', () => {
  const spawnCli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [mainJs, ...args], { encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH, ...env } });
  it('exits 2 with one line for bad input, before opening anything', () => {
    for (const [args, re] of [
      [['bogus'], /unknown command/],
      [['run', '--bogus'], /unknown flag/],
      [['run', '--server', 'cp:50051', '--state-dir', join(dir, 'never-created')], /expected a URL/],
    ] as Array<[string[], RegExp]>) {
      const r = spawnCli(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
    expect(existsSync(join(dir, 'never-created'))).toBe(false);
  });
  it('runs doctor and reports failures with exit 1', () => {
    const r = spawnCli([
      'doctor',
      '--gpu-backend',
      'fake',
      '--state-dir',
      join(dir, 'doc'),
      '--kmsg-path',
      join(dir, 'no-kmsg'),
      '--server',
      'http://127.0.0.1:9',
    ]);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/\[WARN\] gpu driver: fake backend/);
    expect(r.stdout).toMatch(/\[ OK \] state directory/);
    expect(r.stdout).toMatch(/\[FAIL\] kernel log/);
    expect(r.stdout).toMatch(/\[FAIL\] control plane: .*unreachable/);
  });
});

/** Spawn without blocking the event loop (the dev control plane runs in this process). */
function spawnAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [mainJs, ...args], { env: { PATH: process.env.PATH, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('exit', (status) => {
      clearTimeout(t);
      resolve({ status, stdout, stderr });
    });
  });
}

describe.skipIf(!built)('doctor against the dev control plane', () => {
  it('maps HTTP 401 to "token rejected" and passes with the right token', async () => {
    const cp = await startDevControlPlane({ authToken: 's3cret' });
    try {
      const tokenFile = join(dir, 'good-token');
      writeFileSync(tokenFile, 's3cret\n');
      const common = ['doctor', '--gpu-backend', 'fake', '--state-dir', join(dir, 'doc2'), '--kmsg-path', 'none', '--server', cp.url];
      const bad = await spawnAsync([...common, '--auth-token', 'wrong']);
      expect(bad.status).toBe(1);
      expect(bad.stdout).toMatch(/\[FAIL\] control plane: .*token rejected/);
      expect(bad.stdout).not.toContain('wrong');
      const good = await spawnAsync([...common, '--auth-token-file', tokenFile, '--json']);
      const j = JSON.parse(good.stdout) as { ok: boolean; checks: Array<{ name: string; state: string }> };
      expect(j.checks.find((c) => c.name === 'control plane')?.state).toBe('ok');
      expect(j.checks.find((c) => c.name === 'clock')?.state).toBe('ok');
      // Fake GPUs are a warning, not a failure; kmsg skipped: everything passes.
      expect(good.status).toBe(0);
      expect(j.ok).toBe(true);
    } finally {
      await cp.close();
    }
  });
});
