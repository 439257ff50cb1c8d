/**
 * The local API's port is taken by another program when the agent starts: the agent process keeps
 * running, detects a scripted fault and delivers it to the control plane without its API, and
 * serves the API once the port frees (src/api/listener.ts). Real agent process, real sockets.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startDevControlPlane } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, MAIN_JS, startAgent, tempDir, waitFor } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping the busy-port e2e test: ${MAIN_JS} is not built (npm run build)`);

function holdPort(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createServer((sock) => sock.destroy());
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a ? a.port : 0 });
    });
  });
}

describe.skipIf(!DIST_BUILT)('agent whose API port is taken', () => {
  it('runs, delivers a fault without its API, and listens once the port frees', async () => {
    const held = await holdPort();
    const cp = await startDevControlPlane({ healthCheckIntervalSeconds: 3600, heartbeatIntervalSeconds: 3600 });
    const dir = tempDir('busy-port');
    const scen = join(dir, 'scenario.yaml');
    writeFileSync(scen, 'name: busy-port\nevents:\n  - at: 300ms\n    gpu: 1\n    fault: xid\n    xid: 48\n');
    const agent = await startAgent({
      port: held.port,
      waitReady: false,
      stateDir: join(dir, 'state'),
      args: ['--gpu-backend', 'fake', '--scenario', scen, '--server', cp.url, '--node-id', 'e2e-busy-port', '--kmsg-path', 'none'],
    });
    let released = false;
    try {
      // Detection and delivery go on while the port is held.
      await waitFor('XID 48 delivered', () => cp.events('e2e-busy-port').some((e) => e.metrics.xid_code === '48'), 60_000);
      expect(agent.proc.exitCode).toBeNull();
      const warn = agent.logs.find((l) => l.msg.includes(`cannot listen on 127.0.0.1:${held.port}: address already in use`));
      expect(warn?.level).toBe(40);
      expect(warn?.component).toBe('api');
      expect(agent.logs.some((l) => l.msg === 'local API listening')).toBe(false);
      // `status` meanwhile: not live (the port's holder is not an agent), but it names the agent
      // process that holds the state directory, and reads the delivered fault from disk.
      const st0 = spawnSync(process.execPath, [MAIN_JS, 'status', '--json', '--gpu-backend', 'fake', '--state-dir', join(dir, 'state'), '--api', agent.url], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { PATH: process.env.PATH },
      });
      const sj = JSON.parse(st0.stdout) as { live: boolean; source: { apiProblem: string; agentPid: number | null }; activeFaults: Array<{ key: string }> };
      expect(sj.live).toBe(false);
      expect(sj.source.apiProblem).toMatch(/^held by another program: /);
      expect(sj.source.agentPid).toBe(agent.proc.pid);
      expect(sj.activeFaults.map((f) => f.key)).toContain('gpu1/xid/48');
      expect(st0.status).toBe(1);

      await new Promise<void>((r) => held.server.close(() => r()));
      released = true;
      await waitFor('API after the port frees', async () => (await fetch(`${agent.url}/healthz`, { signal: AbortSignal.timeout(2000) })).ok, 90_000, 250);
      const st = await agent.status();
      expect(st.api).toMatchObject({ state: 'listening', url: agent.url, lastError: 'address already in use' });
      expect(st.api?.failures).toBeGreaterThanOrEqual(1);
      expect(st.activeFaults.some((f) => f.key === 'gpu1/xid/48')).toBe(true);
      expect(agent.logs.find((l) => l.msg === 'local API listening')?.failedTries).toBe(st.api?.failures);
    } finally {
      if (!released) held.server.close();
      const code = await agent.stop('SIGTERM');
      await cp.close();
      expect(code).toBe(0);
    }
  }, 150_000);
});
