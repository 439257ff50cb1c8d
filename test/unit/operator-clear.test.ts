import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../src/api/metrics.js';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import type { AgentStatus, AgentView } from '../../src/api/types.js';
import { FakeBackend } from '../../src/backends/fake.js';
import { runCli } from '../../src/cli/cli.js';
import { faultsTable } from '../../src/cli/status-view.js';
import { ClearRequestError, operatorClearInput, parseClearRequest, selectFaults, type ClearSelector } from '../../src/events/operator-clear.js';
import type { ActiveFault, HealthEventInput } from '../../src/events/types.js';
import { navarchForm } from '../../src/controlplane/vocabulary.js';
import { TelemetrySampler } from '../../src/sources/telemetry.js';
import { EventLedger } from '../../src/store/ledger.js';
import { xidEventInput } from '../../src/xid/catalog.js';

function raise(code: number, gpu: number): HealthEventInput {
  return xidEventInput({ code, gpuIndex: gpu, gpuUuid: `GPU-${gpu}`, timeMs: 1000, source: 'fake' });
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { stdout: (s) => (out += s), stderr: (s) => (err += s), env: {} });
  return { code, out, err };
}

describe('the ledger op: an operator clear is a stored clear event', () => {
  it('ends the active fault and leaves a clear event to send, with the reason', () => {
    let now = 5000;
    const ledger = new EventLedger({ bootId: 'b', now: () => now });
    ledger.append(raise(79, 3));
    ledger.append(raise(48, 3));
    ledger.append(raise(79, 1));
    expect(
      ledger
        .activeFaults()
        .map((f) => f.key)
        .sort(),
    ).toEqual(['gpu1/xid/79', 'gpu3/xid/48', 'gpu3/xid/79']);
    const target = selectFaults(ledger.activeFaults(), { key: 'gpu3/xid/79' });
    expect(target).toHaveLength(1);
    const input = operatorClearInput(target[0]!, 'operator', ++now);
    ledger.append(input);
    expect(
      ledger
        .activeFaults()
        .map((f) => f.key)
        .sort(),
    ).toEqual(['gpu1/xid/79', 'gpu3/xid/48']);
    ledger.startBatch();
    ledger.reveal(1);
    const pending = ledger.pending();
    const clear = pending.find((e) => e.fault === 'clear');
    expect(clear).toMatchObject({
      key: 'gpu3/xid/79',
      type: 'xid',
      system: 'DRIVER',
      gpuIndex: 3,
      gpuUuid: 'GPU-3',
      severity: 'info',
      action: 'none',
      source: 'agent',
      metrics: { reason: 'operator', cleared_by: 'operator' },
    });
    // The raise is still there to send too: the control plane sees both, in order.
    expect(pending.filter((e) => e.key === 'gpu3/xid/79').map((e) => e.fault)).toEqual(['raise', 'clear']);
    // Sent in Navarch's clear vocabulary, like every clear.
    expect(navarchForm(clear!)).toEqual({
      type: 'unknown',
      system: 'UNKNOWN',
      metrics: { fault: 'clear', cleared_event_type: 'xid', cleared_system: 'DCGM_HEALTH_WATCH_DRIVER' },
    });
    // A fault still physically there is raised again by its next detection.
    ledger.append(raise(79, 3));
    expect(ledger.activeFaults().some((f) => f.key === 'gpu3/xid/79')).toBe(true);
  });

  it('the faults table shows the key faults clear takes', () => {
    const f: ActiveFault = {
      key: 'gpu3/xid/79',
      gpuIndex: 3,
      gpuUuid: '',
      type: 'xid',
      system: 'DRIVER',
      severity: 'critical',
      action: 'reboot',
      message: 'lost',
      metrics: {},
      sinceMs: 0,
      lastSeenMs: 0,
      count: 1,
      lastEventId: 'x',
    };
    const lines = faultsTable([f], 5000).split('\n');
    expect(lines[0]).toMatch(/^GPU\s+KEY\s+TYPE\s+SEVERITY/);
    expect(lines[1]).toMatch(/^3\s+gpu3\/xid\/79\s+xid\s+critical\s+reboot/);
  });

  it('selects by key, GPU (-1 = node) or all', () => {
    const f = (key: string, gpuIndex: number): ActiveFault => ({
      key,
      gpuIndex,
      gpuUuid: '',
      type: 'xid',
      system: 'DRIVER',
      severity: 'critical',
      action: 'reboot',
      message: '',
      metrics: {},
      sinceMs: 0,
      lastSeenMs: 0,
      count: 1,
      lastEventId: 'x',
    });
    const all = [f('gpu0/xid/79', 0), f('gpu1/thermal', 1), f('gpu1/xid/48', 1), f('node/gpu_count', -1)];
    const keys = (s: ClearSelector) => selectFaults(all, s).map((x) => x.key);
    expect(keys({ key: 'gpu1/thermal' })).toEqual(['gpu1/thermal']);
    expect(keys({ key: 'gpu9/thermal' })).toEqual([]);
    expect(keys({ gpu: 1 })).toEqual(['gpu1/thermal', 'gpu1/xid/48']);
    expect(keys({ gpu: -1 })).toEqual(['node/gpu_count']);
    expect(keys({ all: true })).toHaveLength(4);
  });
});

describe('parseClearRequest', () => {
  const bad = (body: unknown): string => {
    try {
      parseClearRequest(body);
    } catch (err) {
      expect(err).toBeInstanceOf(ClearRequestError);
      return (err as Error).message;
    }
    throw new Error('expected a ClearRequestError');
  };
  it('takes exactly one selector and an optional one-line reason', () => {
    expect(parseClearRequest({ key: 'gpu3/xid/79' })).toEqual({ selector: { key: 'gpu3/xid/79' }, reason: 'operator' });
    expect(parseClearRequest({ gpu: 0, reason: ' reset done ' })).toEqual({ selector: { gpu: 0 }, reason: 'reset done' });
    expect(parseClearRequest({ all: true })).toEqual({ selector: { all: true }, reason: 'operator' });
    expect(bad({})).toBe('give exactly one of "key", "gpu" or "all": true');
    expect(bad({ key: 'a', all: true })).toBe('give exactly one of "key", "gpu" or "all": true');
    expect(bad({ gpu: 1.5 })).toContain('"gpu" must be a GPU index');
    expect(bad({ gpu: 5000 })).toContain('"gpu" must be a GPU index');
    expect(bad({ key: 'has space' })).toContain('"key" must be a fault key');
    expect(bad({ key: 'x'.repeat(300) })).toContain('"key" must be a fault key');
    expect(bad({ all: 'yes' })).toBe('"all" must be true');
    expect(bad({ all: true, reason: 'a\nb' })).toContain('"reason" must be');
    expect(bad({ all: true, force: true })).toContain('unknown field "force"');
    expect(bad([1])).toContain('body must be a JSON object');
  });
});

describe('TelemetrySampler.forget: a cleared condition still present is raised again', () => {
  it('raises the thermal fault again on the next sample after forget()', async () => {
    const fake = new FakeBackend({ count: 1 });
    await fake.open();
    const events: HealthEventInput[] = [];
    const sampler = new TelemetrySampler({ backend: fake, onEvents: (e) => void events.push(...e) });
    fake.inject({ kind: 'temperature', gpu: 0, celsius: 97 });
    await sampler.sampleOnce();
    await sampler.sampleOnce();
    expect(events.filter((e) => e.key === 'gpu0/thermal').map((e) => e.fault)).toEqual(['raise']);
    sampler.forget('gpu0/thermal');
    await sampler.sampleOnce();
    expect(events.filter((e) => e.key === 'gpu0/thermal').map((e) => e.fault)).toEqual(['raise', 'raise']);
    await fake.close();
  });
});

describe('POST /faults/clear', () => {
  const calls: Array<{ selector: ClearSelector; reason: string }> = [];
  const view: AgentView = {
    alive: () => true,
    status: () => ({ devices: [], activeFaults: [] }) as unknown as AgentStatus,
    clearFaults: async (selector, reason) => {
      calls.push({ selector, reason });
      if ('key' in selector) return { cleared: selector.key === 'gpu3/xid/79' ? ['gpu3/xid/79'] : [] };
      return { cleared: 'gpu' in selector && selector.gpu === 7 ? [] : ['gpu1/thermal', 'gpu1/xid/48'] };
    },
  };
  let api: ApiServer;
  beforeAll(async () => {
    api = await startApiServer({ host: '127.0.0.1', port: 0, view, metrics: new AgentMetrics({ view, hostname: 'h', version: '0' }) });
  });
  afterAll(async () => api.close());
  const post = (body: string, headers: Record<string, string> = { 'Content-Type': 'application/json' }) =>
    fetch(`${api.url}/faults/clear`, { method: 'POST', headers, body });

  it('clears by key, GPU or all; unknown key 404; bad body 400; wrong type 415; wrong method 405', async () => {
    let r = await post('{"key":"gpu3/xid/79"}');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ ok: true, cleared: ['gpu3/xid/79'], reason: 'operator' });
    r = await post('{"key":"gpu9/xid/1"}');
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({ error: 'no active fault "gpu9/xid/1"' });
    r = await post('{"gpu":7}');
    expect(r.status).toBe(200);
    expect(((await r.json()) as { cleared: string[] }).cleared).toEqual([]);
    r = await post('{"all":true,"reason":"GPU reset by hand"}');
    expect(await r.json()).toEqual({ ok: true, cleared: ['gpu1/thermal', 'gpu1/xid/48'], reason: 'GPU reset by hand' });
    expect(calls.at(-1)).toEqual({ selector: { all: true }, reason: 'GPU reset by hand' });
    r = await post('{"key":1}');
    expect(r.status).toBe(400);
    r = await post('not json');
    expect(r.status).toBe(400);
    r = await post('{"all":true}', { 'Content-Type': 'text/plain' });
    expect(r.status).toBe(415);
    r = await fetch(`${api.url}/faults/clear`);
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('POST');
  });

  it('has the Host/Origin check of every endpoint but /healthz', async () => {
    // node:http, not fetch: fetch does not let a caller set Host.
    const raw = (headers: Record<string, string>): Promise<number> =>
      new Promise((resolve, reject) => {
        const u = new URL(api.url);
        const req = request(
          { host: u.hostname, port: Number(u.port), path: '/faults/clear', method: 'POST', headers: { 'Content-Type': 'application/json', ...headers } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end('{"all":true}');
      });
    const before = calls.length;
    expect(await raw({ Host: 'evil.example:9400' })).toBe(403);
    expect(await raw({ Origin: 'http://evil.example' })).toBe(403);
    expect(calls.length).toBe(before);
    expect(await raw({ Host: `localhost:${new URL(api.url).port}` })).toBe(200);
    expect(calls.length).toBe(before + 1);
  });

  it('navarch-agent faults clear: the client of this endpoint', async () => {
    let c = await cli(['faults', 'clear', 'gpu3/xid/79', '--api', api.url]);
    expect(c).toEqual({ code: 0, out: 'cleared gpu3/xid/79\n', err: '' });
    c = await cli(['faults', 'clear', '--gpu', '1', '--api', api.url, '--reason', 'swapped']);
    expect(c.code).toBe(0);
    expect(c.out).toBe('cleared gpu1/thermal\ncleared gpu1/xid/48\n');
    expect(calls.at(-1)).toEqual({ selector: { gpu: 1 }, reason: 'swapped' });
    c = await cli(['faults', 'clear', '--gpu', '7', '--api', api.url]);
    expect(c).toEqual({ code: 0, out: 'no active faults to clear on GPU 7\n', err: '' });
    c = await cli(['faults', 'clear', 'gpu9/xid/1', '--api', api.url]);
    expect(c.code).toBe(1);
    expect(c.err).toBe('navarch-agent: faults clear: no active fault "gpu9/xid/1" (active faults: navarch-agent faults)\n');
    c = await cli(['faults', 'clear', 'gpu3/xid/79', '--listen', `127.0.0.1:${new URL(api.url).port}`]);
    expect(c).toEqual({ code: 0, out: 'cleared gpu3/xid/79\n', err: '' });
    c = await cli(['faults', 'clear', '--all', '--json', '--api', api.url]);
    expect(JSON.parse(c.out)).toMatchObject({ ok: true, cleared: ['gpu1/thermal', 'gpu1/xid/48'] });
  });
});

describe('navarch-agent faults clear: usage and no agent', () => {
  it('bad usage is exit 2 with one line', async () => {
    for (const argv of [
      ['faults', 'clear'],
      ['faults', 'clear', 'gpu0/thermal', '--all'],
      ['faults', 'clear', '--gpu', 'x'],
      ['faults', 'clear', '--gpu', '1', '--all'],
      ['faults', 'clear', 'a', 'b'],
      ['faults', 'clear', '--bogus'],
      ['faults', 'clear', '--all', '--reason', ''],
      ['faults', 'clear', '--all', '--api', 'ftp://x'],
      ['faults', 'clear', '--all', '--listen', 'nope'],
    ]) {
      const c = await cli(argv);
      expect(c.code, argv.join(' ')).toBe(2);
      expect(c.err.trim().split('\n'), argv.join(' ')).toHaveLength(1);
      expect(c.err).toMatch(/^navarch-agent: /);
      expect(c.out).toBe('');
    }
    expect((await cli(['faults', 'clear'])).err).toContain('give exactly one of <key>, --gpu N or --all');
  });

  it('no running agent: one line saying so, exit 1', async () => {
    const free = await startApiServer({
      host: '127.0.0.1',
      port: 0,
      view: { alive: () => true, status: () => ({}) as AgentStatus },
      metrics: new AgentMetrics({ view: { alive: () => true, status: () => ({}) as AgentStatus }, hostname: 'h', version: '0' }),
    });
    const url = free.url;
    await free.close(); // nothing listens there now
    const c = await cli(['faults', 'clear', '--all', '--api', url]);
    expect(c.code).toBe(1);
    expect(c.err).toMatch(
      new RegExp(`^navarch-agent: faults clear: no running agent answers at ${url.replace(/[.]/g, '\\.')} \\(ECONNREFUSED\\); nothing was cleared\\n$`),
    );
  });

  it('help', async () => {
    const c = await cli(['help', 'faults', 'clear']);
    expect(c.code).toBe(0);
    expect(c.out).toContain('usage: navarch-agent faults clear <key> | --gpu N | --all');
    expect((await cli(['faults', 'clear', '--help'])).out).toBe(c.out);
  });
});
