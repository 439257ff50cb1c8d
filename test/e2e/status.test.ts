/**
 * `status`, `devices` and `faults` as processes, next to a real agent process (fake backend):
 * live answers from its API, then, with the agent stopped, answers read from disk; the exit codes
 * (0 healthy, 1 degraded/unhealthy, 2 usage); `status --watch` ends cleanly on SIGINT.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, freePort, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping status e2e tests: ${MAIN_JS} is not built (npm run build)`);

const cli = (args: string[]) =>
  spawnSync(process.execPath, [MAIN_JS, ...args], { encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH, NAVARCH_GPU_COUNT: '4' } });

interface StatusDoc {
  live: boolean;
  source: { live: boolean; api: string; stateDir?: string | null; apiProblem?: string };
  health: string;
  reasons: string[];
  devices: Array<{ index: number; driverVersion: string | null; cudaVersion: string | null }>;
  activeFaults: Array<{ key: string }>;
  controlPlane: { state: string } | null;
  backlog: { pending: number } | null;
  system: { driverVersion: string | null; cudaDriverVersion: string | null } | null;
}

describe.skipIf(!DIST_BUILT)('status, devices, faults: live, then from disk', () => {
  let agent: AgentProcess;
  let dir: string;

  beforeAll(async () => {
    dir = tempDir('status');
    agent = await startAgent({
      stateDir: join(dir, 'state'),
      args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-status', '--kmsg-path', 'none'],
      env: { NAVARCH_GPU_COUNT: '4' },
    });
    // Healthy first: exit 0, live.
    const ok = cli(['status', '--json', '--api', agent.url]);
    expect(ok.status).toBe(0);
    expect((JSON.parse(ok.stdout) as StatusDoc).health).toBe('healthy');
    expect((await agent.inject({ kind: 'xid', gpu: 3, xid: 79 })).status).toBe(200);
    await waitFor('XID 79 active', async () => (await agent.status()).activeFaults.some((f) => f.key === 'gpu3/xid/79'));
  }, 90_000);

  afterAll(async () => {
    await agent?.stop('SIGKILL');
  });

  it('live: status (JSON and text), devices and faults say so and exit 1 on a critical fault', () => {
    const s = cli(['status', '--json', '--api', agent.url]);
    expect(s.stderr).toBe('');
    expect(s.status).toBe(1);
    const j = JSON.parse(s.stdout) as StatusDoc;
    expect(j.live).toBe(true);
    expect(j.source).toEqual({ live: true, api: agent.url });
    expect(j.health).toBe('unhealthy');
    expect(j.reasons).toContain('GPU 3: xid 79 critical');
    expect(j.activeFaults.map((f) => f.key)).toContain('gpu3/xid/79');
    expect(j.devices).toHaveLength(4);
    expect(j.devices[0]).toMatchObject({ driverVersion: j.system?.driverVersion, cudaVersion: j.system?.cudaDriverVersion });
    expect(j.devices[0]?.driverVersion).toMatch(/^\d+\.\d+/);
    expect(j.controlPlane).not.toBeNull();
    expect(j.backlog?.pending).toBeGreaterThanOrEqual(1);

    const t = cli(['status', '--api', agent.url]);
    expect(t.status).toBe(1);
    expect(t.stdout.split('\n')[0]).toBe(`source:        live from the running agent at ${agent.url}`);
    expect(t.stdout).toMatch(/\nversions: +driver \d+\.\S+, CUDA \d+\.\d+, NVML /);
    expect(t.stdout).toMatch(/\ncontrol plane: +(connecting|disconnected) \(http:\/\/127\.0\.0\.1:9\)/);
    expect(t.stdout).toMatch(/\nevent backlog: +\d+ pending\n/);

    const d = cli(['devices', '--json', '--api', agent.url]);
    expect(d.status).toBe(1);
    expect(JSON.parse(d.stdout)).toMatchObject({ source: 'agent', live: true, health: 'unhealthy' });
    const f = cli(['faults', '--api', agent.url]);
    expect(f.status).toBe(1);
    expect(f.stdout.split('\n')[0]).toBe(`source: live from the running agent at ${agent.url}`);
    expect(f.stdout).toMatch(/\n3 +gpu3\/xid\/79 +xid +critical/);
  });

  it('status --watch --json: one line per refresh, SIGINT ends it cleanly with the last frame code', async () => {
    const p = spawn(process.execPath, [MAIN_JS, 'status', '--watch', '--interval', '200ms', '--json', '--api', agent.url], { env: { PATH: process.env.PATH } });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const closed = new Promise<number | null>((r) => p.on('close', (c) => r(c)));
    await waitFor('three frames', () => out.split('\n').filter(Boolean).length >= 3, 30_000, 50);
    p.kill('SIGINT');
    const code = await closed;
    expect(err).toBe('');
    expect(code).toBe(1);
    expect(p.signalCode).toBeNull(); // it exited by itself, not killed by the signal
    const frames = out
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as StatusDoc);
    expect(frames.length).toBeGreaterThanOrEqual(3);
    for (const fr of frames) expect(fr).toMatchObject({ live: true, health: 'unhealthy' });
  });

  it('status --watch as text off a terminal: frames separated by a time line, SIGINT ends it', async () => {
    const p = spawn(process.execPath, [MAIN_JS, 'status', '--watch', '--interval', '200ms', '--api', agent.url], { env: { PATH: process.env.PATH } });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const closed = new Promise<number | null>((r) => p.on('close', (c) => r(c)));
    await waitFor('two frames', () => (out.match(/^--- \d{4}-\d\d-\d\dT[\d:.]+Z$/gm) ?? []).length >= 2, 30_000, 50);
    p.kill('SIGINT');
    expect(await closed).toBe(1);
    expect(out).not.toContain('\x1b[');
    const frames = out.split(/^--- .*\n/m).filter(Boolean);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    for (const f of frames.slice(0, 2)) expect(f.split('\n')[0]).toBe(`source:        live from the running agent at ${agent.url}`);
  });

  it('with the agent stopped: read from disk, NOT LIVE, faults and backlog from the state dir', async () => {
    expect(await agent.stop('SIGTERM')).toBe(0);
    const stateDir = join(dir, 'state');
    const s = cli(['status', '--json', '--gpu-backend', 'fake', '--state-dir', stateDir, '--api', agent.url]);
    expect(s.stderr).toBe('');
    expect(s.status).toBe(1);
    const j = JSON.parse(s.stdout) as StatusDoc;
    expect(j.live).toBe(false);
    // agentPid null: the stopped agent's lock file is left, but names no live process
    expect(j.source).toEqual({ live: false, api: agent.url, apiProblem: 'connection refused', stateDir, agentPid: null });
    expect(j.activeFaults.map((f) => f.key)).toContain('gpu3/xid/79');
    expect(j.backlog?.pending).toBeGreaterThanOrEqual(1);
    expect(j.controlPlane).toBeNull();

    const t = cli(['status', '--gpu-backend', 'fake', '--state-dir', stateDir, '--api', agent.url]);
    expect(t.stdout.split('\n')[0]).toBe(
      `source:        NOT LIVE: no agent answered at ${agent.url} (connection refused); GPUs from a local snapshot, faults and backlog read from disk (${stateDir})`,
    );
    expect(t.stdout).toMatch(/\nevent backlog: +\d+ pending, oldest \d+s ago \(from disk: the agent sends them when it runs\)\n/);

    const f = cli(['faults', '--json', '--state-dir', stateDir, '--api', agent.url]);
    expect(f.status).toBe(1);
    expect(JSON.parse(f.stdout)).toMatchObject({ source: `state dir ${stateDir}`, live: false, health: 'unhealthy' });
    const ft = cli(['faults', '--state-dir', stateDir, '--api', agent.url]);
    expect(ft.stdout.split('\n')[0]).toBe(`source: NOT LIVE: read from disk, state dir ${stateDir} (no agent answered at ${agent.url}: connection refused)`);
  });

  it('faults for a state directory that does not exist is an error, not "no active faults"', async () => {
    const missing = join(dir, 'no-such-state');
    const api = `http://127.0.0.1:${await freePort()}`;
    const f = cli(['faults', '--state-dir', missing, '--api', api]);
    expect(f.status).toBe(1);
    expect(f.stdout).toBe('');
    expect(f.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(f.stderr).toContain(`the state directory ${missing} does not exist: cannot tell the active faults`);
    expect(existsSync(missing)).toBe(false);
    // status still answers (GPUs from a snapshot) and says the backlog is unknown
    const s = cli(['status', '--gpu-backend', 'fake', '--state-dir', missing, '--api', api]);
    expect(s.status).toBe(0);
    expect(s.stdout).toContain(`event backlog: unknown (state directory ${missing} does not exist)`);
    expect(existsSync(missing)).toBe(false);
  });

  it('usage errors exit 2 with one line', () => {
    for (const [args, re] of [
      [['status', '--interval', '1s'], /--interval: only with --watch/],
      [['status', '--watch', '--interval', '10ms'], /--interval: expected a duration from 200ms to 1h/],
      [['status', '--api', 'ftp://x'], /--api: expected an http:\/\/ URL/],
    ] as Array<[string[], RegExp]>) {
      const r = cli(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
  });
});

describe.skipIf(!DIST_BUILT)('a driver error: devices and status exit 1', () => {
  it('a GPU host whose NVML cannot open (the addon is missing): unhealthy, exit 1, says why', async () => {
    const dir = tempDir('status-driver');
    const api = `http://127.0.0.1:${await freePort()}`;
    const run = (args: string[]) =>
      spawnSync(process.execPath, [MAIN_JS, ...args, '--instance-type', 'p5.48xlarge', '--state-dir', join(dir, 'state'), '--api', api], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { PATH: process.env.PATH, NAVARCH_NVML_ADDON: join(dir, 'no-such-addon.node') },
      });
    const d = run(['devices']);
    expect(d.status).toBe(1);
    expect(d.stdout).toMatch(/\ndriver error: NVML failed: NVML_ADDON_UNAVAILABLE on a host with instance type p5\.48xlarge/);
    expect(d.stdout).toContain('\nno GPUs\n');
    const dj = JSON.parse(run(['devices', '--json']).stdout) as { health: string; live: boolean };
    expect(dj).toMatchObject({ health: 'unhealthy', live: false });
    const s = run(['status']);
    expect(s.status).toBe(1);
    expect(s.stdout).toMatch(/\nhealth: +unhealthy: driver error: NVML failed: NVML_ADDON_UNAVAILABLE[^\n]*\n/);
    expect(s.stdout).not.toContain('node: driver_error critical');
  });
});
