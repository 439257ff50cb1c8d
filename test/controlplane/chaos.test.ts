/**
 * Delivery under a hostile network: a TCP proxy on loopback between the link and the development
 * control plane that (seeded) cuts connections before the request reaches the server, or after
 * the server processed it but before the answer reaches the client. Every event must arrive at
 * least once, and the first arrivals per GPU must be in append order.
 */
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane } from '../../src/devcp/dev-server.js';
import { prng } from '../../src/util/prng.js';
import { makeLink, waitFor } from './fixtures.js';
import { xidInput } from './memory-store.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function chaosProxy(upstreamPort: number, rnd: () => number, pDropBefore: number, pDropAfter: number) {
  const socks = new Set<net.Socket>();
  const stats = { conns: 0, droppedBefore: 0, droppedAfter: 0 };
  const server = net.createServer((client) => {
    stats.conns++;
    socks.add(client);
    client.on('close', () => socks.delete(client));
    client.on('error', () => client.destroy());
    const up = net.connect(upstreamPort, '127.0.0.1');
    socks.add(up);
    let dropAfter = false;
    up.on('close', () => {
      socks.delete(up);
      client.destroy();
    });
    up.on('error', () => up.destroy());
    client.on('close', () => up.destroy());
    // Per request (each client write): pass it, cut before the server sees it, or cut the answer.
    client.on('data', (chunk: Buffer) => {
      const r = rnd();
      if (r < pDropBefore) {
        stats.droppedBefore++;
        client.destroy();
        up.destroy();
        return;
      }
      dropAfter = r < pDropBefore + pDropAfter;
      up.write(chunk);
    });
    up.on('data', (chunk: Buffer) => {
      if (dropAfter) {
        // The server answered: the request was processed, but the client never hears it.
        stats.droppedAfter++;
        up.destroy();
        client.destroy();
        return;
      }
      client.write(chunk);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    stats,
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('delivery through a lossy network', () => {
  it('every event arrives at least once, first arrivals in per-GPU order', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 2 });
    cleanups.push(() => cp.close());
    const rnd = prng(20261128);
    const proxy = await chaosProxy(cp.port, rnd, 0.2, 0.2);
    cleanups.push(() => proxy.close());
    const { link, store } = makeLink(`http://127.0.0.1:${proxy.port}`, { retry: { baseMs: 20, capMs: 200, configErrorMs: 60_000 }, maxEventsPerReport: 7 });
    cleanups.push(() => link.stop({ deadlineMs: 2000 }));
    link.start();
    await link.whenRegistered();
    const N = 150;
    const seqByGpu = new Map<number, number>();
    for (let i = 0; i < N; i++) {
      const gpu = Math.floor(rnd() * 4);
      const seq = (seqByGpu.get(gpu) ?? 0) + 1;
      seqByGpu.set(gpu, seq);
      // Distinct keys: the store coalesces a pending event under the same key (this test is about delivery).
      await store.append(xidInput(gpu, 13, { fault: 'none', key: `gpu${gpu}/xid/13/${seq}`, metrics: { xid_code: '13', seq: String(seq) } }));
      if (rnd() < 0.3) await new Promise((r) => setTimeout(r, Math.floor(rnd() * 20)));
    }
    await waitFor(() => store.pendingCount() === 0, 60_000, 'all acknowledged');
    const received = cp.events('node-a');
    const firstSeen = new Map<string, (typeof received)[number]>();
    for (const e of received) if (!firstSeen.has(e.metrics.event_id!)) firstSeen.set(e.metrics.event_id!, e);
    expect(firstSeen.size).toBe(N);
    for (const ev of store.appended) expect(firstSeen.has(ev.id), ev.id).toBe(true);
    const last = new Map<number, number>();
    for (const e of firstSeen.values()) {
      const seq = Number(e.metrics.seq);
      expect(seq, `gpu${e.gpuIndex}`).toBe((last.get(e.gpuIndex) ?? 0) + 1);
      last.set(e.gpuIndex, seq);
    }
    // The network really was lossy, including lost answers (which force re-sends).
    expect(proxy.stats.droppedBefore).toBeGreaterThan(0);
    expect(proxy.stats.droppedAfter).toBeGreaterThan(0);
  }, 120_000);
});
