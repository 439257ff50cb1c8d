/**
 * A hostile control plane on 127.0.0.1 against the agent process: one streams an endless 200
 * body, one answers every RPC with a 50 MB Connect error, one with a 3 MB error message. The
 * agent's RSS and log bytes stay bounded and /status carries a truncated message.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, startAgent, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping hostile control-plane tests: ${MAIN_JS} not built (run npm run build)`);

const MiB = 1024 * 1024;

async function hostile(handler: (res: ServerResponse) => void): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => handler(res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** Samples the agent's RSS every 200 ms for `ms`; returns the largest. */
async function peakRss(agent: AgentProcess, ms: number): Promise<number> {
  let peak = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    peak = Math.max(peak, rssMiB(agent.proc.pid as number));
    await new Promise((r) => setTimeout(r, 200));
  }
  return peak;
}

function logBytes(agent: AgentProcess): number {
  return agent.logs.reduce((n, l) => n + JSON.stringify(l).length + 1, 0);
}

describe.skipIf(!DIST_BUILT)('hostile control plane (agent process)', () => {
  let agent: AgentProcess | undefined;
  let server: Server | undefined;
  afterEach(async () => {
    await agent?.stop('SIGKILL');
    server?.closeAllConnections();
    server?.close();
    agent = undefined;
    server = undefined;
  });

  const args = (url: string, id: string): string[] => ['--gpu-backend', 'fake', '--server', url, '--node-id', id, '--kmsg-path', 'none'];

  it('an endless 200 body: the RPC fails at the 4 MiB response limit, RSS stays bounded', async () => {
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    let sent = 0;
    const cp = await hostile((res) => {
      res.writeHead(200, { 'Content-Type': 'application/proto' });
      const pump = (): void => {
        while (!res.destroyed && sent < 4096 * MiB) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      res.on('close', () => undefined);
      pump();
    });
    server = cp.server;
    agent = await startAgent({ args: args(cp.url, 'e2e-endless') });
    const peak = await peakRss(agent, 8_000);
    const st = await agent.status();
    expect(st.controlPlane.lastError ?? '').toMatch(/resource_exhausted|ResourceExhausted|readMaxBytes|larger than/i);
    // Before the limit: 1.13 GiB in 14 s. The agent alone is about 100 MiB.
    expect(peak).toBeLessThan(300);
  }, 90_000);

  it('a 50 MB Connect error: bounded RSS and log bytes; a 3 MB message is truncated in logs and /status', async () => {
    let size = 50 * MiB;
    const cp = await hostile((res) => {
      const body = JSON.stringify({ code: 'unavailable', message: 'E'.repeat(size) });
      res.writeHead(503, { 'Content-Type': 'application/json' });
      res.end(body);
    });
    server = cp.server;
    agent = await startAgent({ args: args(cp.url, 'e2e-bigerr') });
    const peak = await peakRss(agent, 6_000);
    expect(peak).toBeLessThan(400);
    expect(logBytes(agent)).toBeLessThan(256 * 1024);
    // Under the response limit, the message itself is cut to a few hundred bytes.
    size = 3 * MiB;
    const st = await waitFor(
      'a 3 MB error in /status',
      async () => {
        const s = await agent!.status();
        return (s.controlPlane.lastError ?? '').includes(`(${3 * MiB} bytes)`) ? s : null;
      },
      30_000,
      250,
    );
    expect((st.controlPlane.lastError ?? '').length).toBeLessThan(600);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(logBytes(agent)).toBeLessThan(256 * 1024);
    const failed = agent.logs.filter((l) => l.msg === 'registration failed');
    expect(failed.length).toBeGreaterThan(0);
    for (const l of failed) expect(JSON.stringify(l).length).toBeLessThan(1500);
  }, 90_000);
});
