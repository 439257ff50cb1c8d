/**
 * `navarch-agent doctor` as a process: the local API port check (free, held by an agent, held by
 * another program), no side effects, n/a persistence mode on fake GPUs, the fix line for a
 * missing addon, and progress on the slow control-plane check.
 */
import { spawn } from 'node:child_process';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
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

function doctor(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [MAIN_JS, 'doctor', ...args], { env: { PATH: process.env.PATH, ...env } });
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
      expect(r2.stdout).toMatch(new RegExp(`\\[ OK \\] local API port: http://127\\.0\\.0\\.1:${agent.port} served by navarch-agent \\S+ \\(pid ${agent.proc.pid}, node e2e-doctor\\)`));
    } finally {
      await agent.stop('SIGTERM');
    }

    const other = await listenHttp((_req, res) => res.end('hello from another exporter\n'));
    try {
      const r3 = await doctor([...base(dir), '--listen', `127.0.0.1:${other.port}`]);
      expect(r3.stdout).toMatch(new RegExp(`\\[WARN\\] local API port: http://127\\.0\\.0\\.1:${other.port} is held by another program \\(HTTP 200 with an unreadable body`));
      expect(r3.stdout).toMatch(new RegExp(`fix: stop the program on port ${other.port} .* --listen 127\\.0\\.0\\.1:<port>`));
      // A warning, not a failure: the agent still runs there (without its API).
      const j = JSON.parse((await doctor([...base(dir), '--listen', `127.0.0.1:${other.port}`, '--json'])).stdout) as { checks: Array<{ name: string; state: string }> };
      expect(j.checks.find((c) => c.name === 'local API port')?.state).toBe('warn');
    } finally {
      other.server.close();
    }
  }, 120_000);
});
