/**
 * ApiListener (src/api/listener.ts): a taken port is retried with backoff and never fatal. Real
 * sockets on 127.0.0.1; the retry timer and the randomness are injected, so no test waits.
 */
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiListener, LISTEN_RETRY, LISTEN_WARN_EVERY, listenErrorText, type ListenTimers } from '../../src/api/listener.js';
import { AgentMetrics } from '../../src/api/metrics.js';
import { startApiServer } from '../../src/api/server.js';
import type { AgentStatus, AgentView } from '../../src/api/types.js';

class ManualTimers implements ListenTimers {
  pending: Array<{ fn: () => void; ms: number; id: number }> = [];
  private next = 1;
  t = 1_000_000;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.pending.push({ fn, ms, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.pending = this.pending.filter((p) => p.id !== h);
  }
  now(): number {
    return this.t;
  }
  /** Run the one pending timer (the listener never has more than one). */
  async fire(): Promise<number> {
    expect(this.pending).toHaveLength(1);
    const p = this.pending.shift()!;
    this.t += p.ms;
    p.fn();
    // let the listen attempt settle
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    return p.ms;
  }
}

const view: AgentView = { alive: () => true, status: () => ({ devices: [] }) as unknown as AgentStatus };

function blocker(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a ? a.port : 0 });
    });
  });
}

interface Line {
  level: 'warn' | 'debug' | 'info';
  obj: Record<string, unknown>;
  msg: string;
}

function recordingLog(lines: Line[]) {
  const rec = (level: Line['level']) => (obj: Record<string, unknown>, msg: string) => lines.push({ level, obj, msg });
  return { warn: rec('warn'), debug: rec('debug'), info: rec('info') } as never;
}

const open: Array<{ close(): Promise<void> | void }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

describe('ApiListener', () => {
  it('a taken port: keeps trying with capped, jittered backoff, then listens once the port frees', async () => {
    const b = await blocker();
    let blocked = true;
    open.push({ close: () => new Promise<void>((r) => (blocked ? b.server.close(() => r()) : r())) });
    const timers = new ManualTimers();
    const lines: Line[] = [];
    const metrics = new AgentMetrics({ view, hostname: 'h', version: '0' });
    const l = new ApiListener({
      host: '127.0.0.1',
      port: b.port,
      listen: () => startApiServer({ host: '127.0.0.1', port: b.port, view, metrics }),
      log: recordingLog(lines),
      random: () => 1, // the top of each jitter window: the exponential steps themselves
      timers,
    });
    open.push(l);
    await l.start(); // resolves although the port is taken
    let s = l.status();
    expect(s).toMatchObject({ address: `127.0.0.1:${b.port}`, state: 'retrying', url: null, failures: 1, lastError: 'address already in use' });
    expect(s.nextTryMs).toBe(timers.t + LISTEN_RETRY.baseMs);
    expect(lines[0]?.level).toBe('warn');
    expect(lines[0]?.msg).toContain(`cannot listen on 127.0.0.1:${b.port}: address already in use; the agent keeps running`);

    const delays: number[] = [];
    for (let i = 0; i < 7; i++) delays.push(await timers.fire());
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    s = l.status();
    expect(s.failures).toBe(8);
    expect(s.state).toBe('retrying');
    // Bounded log volume: only the first failure at warn, the repeats at debug.
    expect(lines.filter((x) => x.level === 'warn')).toHaveLength(1);
    expect(lines.filter((x) => x.level === 'debug')).toHaveLength(7);

    await new Promise<void>((r) => b.server.close(() => r()));
    blocked = false;
    await timers.fire();
    s = l.status();
    expect(s).toMatchObject({ state: 'listening', url: `http://127.0.0.1:${b.port}`, failures: 8, nextTryMs: null });
    expect(timers.pending).toHaveLength(0);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'local API listening', obj: { failedTries: 8 } });
    await l.close();
    expect(l.status().state).toBe('stopped');
  });

  it('warns again every LISTEN_WARN_EVERY failures, and close() cancels the pending try', async () => {
    const timers = new ManualTimers();
    const lines: Line[] = [];
    let tries = 0;
    const l = new ApiListener({
      host: '::1',
      port: 1,
      listen: () => {
        tries++;
        return Promise.reject(Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE' }));
      },
      log: recordingLog(lines),
      random: () => 0,
      timers,
    });
    await l.start();
    expect(l.address).toBe('[::1]:1');
    for (let i = 1; i < LISTEN_WARN_EVERY; i++) await timers.fire();
    expect(tries).toBe(LISTEN_WARN_EVERY);
    expect(lines.filter((x) => x.level === 'warn').map((x) => x.obj.failures)).toEqual([1, LISTEN_WARN_EVERY]);
    // full jitter with random() = 0 still waits the 10 ms floor: never a busy loop
    expect(lines.every((x) => (x.obj.retryInMs as number) >= 10)).toBe(true);
    await l.close();
    expect(timers.pending).toHaveLength(0);
    expect(l.status()).toMatchObject({ state: 'stopped', nextTryMs: null });
  });

  it('a try that succeeds after close() closes its server at once', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let closed = 0;
    const l = new ApiListener({
      host: '127.0.0.1',
      port: 0,
      listen: async () => {
        await gate;
        return { host: '127.0.0.1', port: 5, url: 'http://127.0.0.1:5', close: async () => void closed++ };
      },
      timers: new ManualTimers(),
    });
    const started = l.start();
    await l.close();
    release();
    await started;
    expect(closed).toBe(1);
    expect(l.status()).toMatchObject({ state: 'stopped', url: null });
  });

  it('names the common listen errors in words', () => {
    expect(listenErrorText(Object.assign(new Error('x'), { code: 'EADDRINUSE' }))).toBe('address already in use');
    expect(listenErrorText(Object.assign(new Error('x'), { code: 'EACCES' }))).toMatch(/^permission denied/);
    expect(listenErrorText(Object.assign(new Error('x'), { code: 'EADDRNOTAVAIL' }))).toBe('address not available on this host');
    expect(listenErrorText(new Error('other'))).toBe('other');
  });
});
