/**
 * `navarch-agent doctor` as a process: the local API port check (free, held by an agent, held by
 * another program), no side effects, n/a persistence mode on fake GPUs, the fix line for a
 * missing addon, and progress on the slow control-plane check.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, freePort, startAgent, tempDir } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping doctor e2e tests: ${MAIN_JS} is not built (npm run build)`);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr interleaved in arrival order, each chunk tagged. */
  events: Array<{ fd: 'out' | 'err'; text: string }>;
}

function doctor(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [MAIN_JS, 'doctor', ...args], { env: { PATH: process.env.PATH, ...env }, ...(cwd ? { cwd } : {}) });
    const r: Run = { status: null, stdout: '', stderr: '', events: [] };
    p.stdout.on('data', (d: Buffer) => {
      r.stdout += d.toString();
      r.events.push({ fd: 'out', text: d.toString() });
    });
    p.stderr.on('data', (d: Buffer) => {
      r.stderr += d.toString();
      r.events.push({ fd: 'err', text: d.toString() });
    });
    const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('close', (status) => {
      clearTimeout(t);
      r.status = status;
      resolve(r);
    });
  });
}

function listenHttp(handler: Parameters<typeof createHttpServer>[1]): Promise<{ server: HttpServer; port: number }> {
  return new Promise((resolve) => {
    const server = createHttpServer(handler);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a ? a.port : 0 });
    });
  });
}

const base = (dir: string) => ['--gpu-backend', 'fake', '--state-dir', join(dir, 'state'), '--kmsg-path', 'none', '--server', 'http://127.0.0.1:9'];

describe.skipIf(!DIST_BUILT)('doctor: local API port', () => {
  it('free, held by a navarch-agent, held by another program', async () => {
    const dir = tempDir('doctor-port');
    const free = await freePort();
    const r1 = await doctor([...base(dir), '--listen', `127.0.0.1:${free}`]);
    expect(r1.stdout).toMatch(new RegExp(`\\[ OK \\] local API port: http://127\\.0\\.0\\.1:${free} free`));

    const agent = await startAgent({ args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-doctor', '--kmsg-path', 'none'] });
    try {
      const r2 = await doctor([...base(dir), '--listen', `127.0.0.1:${agent.port}`]);
      expect(r2.stdout).toMatch(
        new RegExp(`\\[ OK \\] local API port: http://127\\.0\\.0\\.1:${agent.port} served by navarch-agent \\S+ \\(pid ${agent.proc.pid}, node e2e-doctor\\)`),
      );
    } finally {
      await agent.stop('SIGTERM');
    }

    const other = await listenHttp((_req, res) => res.end('hello from another exporter\n'));
    try {
      const r3 = await doctor([...base(dir), '--listen', `127.0.0.1:${other.port}`]);
      expect(r3.stdout).toMatch(
        new RegExp(`\\[WARN\\] local API port: http://127\\.0\\.0\\.1:${other.port} is held by another program \\(HTTP 200 with an unreadable body`),
      );
      expect(r3.stdout).toMatch(new RegExp(`fix: stop the program on port ${other.port} .* --listen 127\\.0\\.0\\.1:<port>`));
      // A warning, not a failure: the agent still runs there (without its API).
      const j = JSON.parse((await doctor([...base(dir), '--listen', `127.0.0.1:${other.port}`, '--json'])).stdout) as {
        checks: Array<{ name: string; state: string }>;
      };
      expect(j.checks.find((c) => c.name === 'local API port')?.state).toBe('warn');
    } finally {
      other.server.close();
    }
  }, 120_000);
});

/** Every path under `root` with its size and mtime, to prove nothing was created or changed. */
function tree(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = statSync(p);
      out.push(`${p} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out.sort();
}

describe.skipIf(!DIST_BUILT)('doctor: no side effects, n/a, fix lines, progress', () => {
  it('creates and changes nothing: a missing state dir stays missing, an existing one untouched', async () => {
    const root = tempDir('doctor-se');
    mkdirSync(join(root, 'home'));
    mkdirSync(join(root, 'tmp'));
    mkdirSync(join(root, 'existing-state'));
    writeFileSync(join(root, 'kmsg'), '');
    const env = { HOME: join(root, 'home'), TMPDIR: join(root, 'tmp'), NAVARCH_GPU_COUNT: '2' };
    const before = tree(root);
    for (const stateDir of ['missing-state', 'existing-state']) {
      for (const backend of ['fake', 'auto']) {
        const r = await doctor(
          [
            '--gpu-backend',
            backend,
            '--state-dir',
            join(root, stateDir),
            '--kmsg-path',
            join(root, 'kmsg'),
            '--server',
            'http://127.0.0.1:9',
            '--listen',
            `127.0.0.1:${await freePort()}`,
          ],
          env,
          root,
        );
        expect(r.stdout).toMatch(/\[ OK \] state directory/);
      }
    }
    expect(tree(root)).toEqual(before);
  }, 120_000);

  it('persistence mode on fake GPUs is n/a (SKIP), never OK', async () => {
    const dir = tempDir('doctor-na');
    const r = await doctor(base(dir));
    expect(r.stdout).toContain('[SKIP] persistence mode: n/a: fake GPUs have no persistence mode\n');
    expect(r.stdout).not.toMatch(/\[ OK \] persistence mode/);
    const j = JSON.parse((await doctor([...base(dir), '--json'])).stdout) as { checks: Array<{ name: string; state: string; detail: string }> };
    expect(j.checks.find((c) => c.name === 'persistence mode')).toEqual({
      name: 'persistence mode',
      state: 'skip',
      detail: 'n/a: fake GPUs have no persistence mode',
    });
  });

  it('a missing native addon gets the addon fix, not a driver fix (nvml mode, and auto on a GPU host)', async () => {
    const dir = tempDir('doctor-addon');
    const env = { NAVARCH_NVML_ADDON: join(dir, 'no-such-addon.node') };
    const common = ['--state-dir', join(dir, 'state'), '--kmsg-path', 'none', '--server', 'http://127.0.0.1:9'];
    for (const args of [
      ['--gpu-backend', 'nvml'],
      ['--gpu-backend', 'auto', '--instance-type', 'p5.48xlarge'],
    ]) {
      const r = await doctor([...args, ...common], env);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stdout).toMatch(/\[FAIL\] gpu driver: .*NVML_ADDON_UNAVAILABLE/);
      expect(r.stdout).toMatch(
        /\n {7}fix: the native addon did not load \(the driver may be fine\): reinstall so its install hook runs .*allowScripts.*NAVARCH_NVML_ADDON=/,
      );
      expect(r.stdout).not.toContain('install/load the NVIDIA driver');
      expect(r.stdout).not.toContain('a reboot reloads the driver');
    }
  });

  it('shows progress before the slow control-plane check (stderr when not a terminal) and streams results', async () => {
    // A control plane that accepts the connection and never answers: the check runs into its deadline.
    const socks: Socket[] = [];
    const hole = createTcpServer((s) => void socks.push(s));
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', () => r()));
    const port = (hole.address() as { port: number }).port;
    try {
      const dir = tempDir('doctor-progress');
      const args = [
        '--gpu-backend',
        'fake',
        '--state-dir',
        join(dir, 'state'),
        '--kmsg-path',
        'none',
        '--server',
        `http://127.0.0.1:${port}`,
        '--listen',
        `127.0.0.1:${await freePort()}`,
      ];
      const r = await doctor(args);
      expect(r.status).toBe(1);
      const progressLine = `doctor: control plane: asking http://127.0.0.1:${port} (up to 6 s)...\n`;
      expect(r.stderr).toContain(progressLine);
      expect(r.stderr).toContain('doctor: gpu driver: opening the GPU backend...\n');
      // Order of arrival: earlier results, then the progress line, then the control-plane result.
      const at = (pred: (e: Run['events'][number], text: string) => boolean): number => {
        let acc = { out: '', err: '' };
        for (let i = 0; i < r.events.length; i++) {
          const e = r.events[i]!;
          acc = { ...acc, [e.fd]: acc[e.fd] + e.text };
          if (pred(e, acc[e.fd])) return i;
        }
        return -1;
      };
      const stateDirShown = at((e, t) => e.fd === 'out' && t.includes('[ OK ] state directory'));
      const progressShown = at((e, t) => e.fd === 'err' && t.includes(progressLine));
      const cpShown = at((e, t) => e.fd === 'out' && t.includes('[FAIL] control plane'));
      expect(stateDirShown).toBeGreaterThanOrEqual(0);
      expect(stateDirShown).toBeLessThan(progressShown);
      expect(progressShown).toBeLessThan(cpShown);
      expect(r.stdout).not.toContain('doctor:');
      // JSON mode: one document, no progress.
      const j = await doctor([...args, '--json']);
      expect(j.stderr).toBe('');
      expect((JSON.parse(j.stdout) as { ok: boolean }).ok).toBe(false);
    } finally {
      for (const s of socks) s.destroy();
      hole.close();
    }
  }, 120_000);
});
