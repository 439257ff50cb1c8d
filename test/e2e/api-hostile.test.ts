/**
 * The local API against hostile clients, through the agent process: 140 idle half-open
 * connections do not starve /healthz; a foreign Host or Origin (DNS rebinding) gets 403 on every
 * endpoint but /healthz.
 */
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, startAgent, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping API hostile-client tests: ${MAIN_JS} not built (run npm run build)`);

function get(port: number, path: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers, timeout: 10_000 }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer within 10 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

describe.skipIf(!DIST_BUILT)('local API under hostile clients (agent process)', () => {
  let agent: AgentProcess;
  const idle: Socket[] = [];
  beforeAll(async () => {
    agent = await startAgent({ args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-api-hostile', '--kmsg-path', 'none'] });
  }, 90_000);
  afterAll(async () => {
    for (const s of idle) s.destroy();
    await agent?.stop('SIGKILL');
  });

  it('140 idle half-open connections do not starve /healthz (or /status)', async () => {
    await Promise.all(
      Array.from(
        { length: 140 },
        (_, i) =>
          new Promise<void>((resolve) => {
            const s = connect({ host: '127.0.0.1', port: agent.port }, () => {
              if (i % 2 === 0) s.write('GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // headers never finished
              resolve();
            });
            s.on('error', () => resolve());
            idle.push(s);
          }),
      ),
    );
    const h = await get(agent.port, '/healthz');
    expect(h.status).toBe(200);
    expect(JSON.parse(h.body)).toEqual({ ok: true });
    expect((await get(agent.port, '/status')).status).toBe(200);
    expect((await get(agent.port, '/healthz')).status).toBe(200);
  }, 60_000);

  it('a foreign Host or Origin gets 403 with one clear body; /healthz still answers', async () => {
    const evil = { Host: 'rebind.evil.example:9400' };
    for (const path of ['/status', '/metrics']) {
      const r = await get(agent.port, path, evil);
      expect(r.status, path).toBe(403);
      expect(JSON.parse(r.body)).toEqual({ error: 'Host "rebind.evil.example:9400" is not this agent (use a loopback name or the listen address)' });
    }
    const inj = await get(agent.port, '/inject', { ...evil, 'Content-Type': 'application/json' }, 'POST', JSON.stringify({ kind: 'xid', gpu: 0, xid: 79 }));
    expect(inj.status).toBe(403);
    const o = await get(
      agent.port,
      '/inject',
      { Origin: 'http://rebind.evil.example', 'Content-Type': 'application/json' },
      'POST',
      JSON.stringify({ kind: 'xid', gpu: 0, xid: 79 }),
    );
    expect(o.status).toBe(403);
    expect((JSON.parse(o.body) as { error: string }).error).toMatch(/^Origin "http:\/\/rebind\.evil\.example" is not this agent/);
    expect((await agent.status()).activeFaults.some((f) => f.type === 'xid')).toBe(false);
    expect((await get(agent.port, '/healthz', evil)).status).toBe(200);
    expect((await get(agent.port, '/status', { Host: `localhost:${agent.port}` })).status).toBe(200);
  }, 60_000);
});
