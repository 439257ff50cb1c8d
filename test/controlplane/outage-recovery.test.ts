/**
 * After an outage the link learns at once that the control plane is back: a refused connection is
 * retried every 0.2-0.8 s (it costs the control plane's host nothing), and any call that succeeds
 * (a heartbeat, a command poll) ends a report's backoff at once. The backoff here is set to about
 * ten minutes, so delivery within the tests' bounded waits can only come from those two paths.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectError } from '@connectrpc/connect';
import { startDevControlPlane } from '../../src/devcp/dev-server.js';
import { createControlPlaneClient } from '../../src/controlplane/client.js';
import { connectionRefused, REFUSED_RETRY_MS, retryDelayMs } from '../../src/controlplane/retry.js';
import { create } from '@bufbuild/protobuf';
import { RegisterNodeRequestSchema } from '../../src/gen/navarch/control_plane_pb.js';
import { makeLink, waitFor } from './fixtures.js';
import { xidInput } from './memory-store.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A port that nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const TEN_MINUTES = { baseMs: 600_000, capMs: 600_000, configErrorMs: 600_000 };
/** Always the top of every jitter window: the backoff waits its full ten minutes. */
const top = (): number => 0.999;

describe('retry policy', () => {
  it('tells a refused connection (a real one, through the client) from other failures', async () => {
    const port = await closedPort();
    const client = createControlPlaneClient({ url: `http://127.0.0.1:${port}`, timeoutMs: 2000 });
    cleanups.push(() => client.close());
    const err = await client.rpc.registerNode(create(RegisterNodeRequestSchema, { nodeId: 'n' })).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConnectError);
    expect(connectionRefused(err)).toBe(true);
    const r = retryDelayMs(err, 12, { baseMs: 500, capMs: 30_000, random: top });
    expect(r.refused).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(REFUSED_RETRY_MS.min);
    expect(r.ms).toBeLessThanOrEqual(REFUSED_RETRY_MS.max);
    // An answer with an error (the server is there but failing) backs off exponentially.
    const unavailable = new ConnectError('overloaded', 14);
    expect(connectionRefused(unavailable)).toBe(false);
    expect(retryDelayMs(unavailable, 12, { baseMs: 500, capMs: 30_000, random: top })).toEqual({ ms: 29_970, refused: false });
    // Happy-eyeballs connects report an AggregateError whose members carry the code.
    const refusedMember = Object.assign(new Error('connect ECONNREFUSED ::1'), { code: 'ECONNREFUSED' });
    expect(connectionRefused(new ConnectError('x', 14, undefined, undefined, new AggregateError([refusedMember])))).toBe(true);
  });
});

describe('outage recovery', () => {
  it('registers and delivers held events soon after a refusing control plane comes up, despite a ten-minute backoff', async () => {
    const port = await closedPort();
    const { link, store } = makeLink(`http://127.0.0.1:${port}`, { retry: TEN_MINUTES, random: top });
    cleanups.push(() => link.stop({ deadlineMs: 2000 }));
    link.start();
    await store.append(xidInput(0, 79));
    await waitFor(() => link.status().lastError !== null, 20_000, 'a refused registration');
    const cp = await startDevControlPlane({ port, heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
    cleanups.push(() => cp.close());
    await waitFor(() => store.pendingCount() === 0, 20_000, 'the held XID delivered');
    expect(cp.events('node-a').some((e) => e.metrics.xid_code === '79')).toBe(true);
  });

  it('a report backing off after an error answer goes at once when another call (command poll, heartbeat) succeeds', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 3600 });
    cleanups.push(() => cp.close());
    // An HTTP proxy that answers ReportHealth with 503 while `failing` (the server is up, the call fails).
    let failing = true;
    let refusedReports = 0;
    const proxy = http.createServer((req, res) => {
      if (failing && req.url?.endsWith('/ReportHealth')) {
        refusedReports++;
        req.resume();
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"code":"unavailable","message":"busy"}');
        return;
      }
      const up = http.request({ host: '127.0.0.1', port: cp.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          proxy.closeAllConnections();
          proxy.close(() => r());
        }),
    );
    const { link, store } = makeLink(`http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`, { retry: TEN_MINUTES, random: top });
    cleanups.push(() => link.stop({ deadlineMs: 2000 }));
    link.start();
    await link.whenRegistered();
    await store.append(xidInput(1, 79));
    await waitFor(() => refusedReports >= 1 && link.status().lastError?.method === 'ReportHealth', 20_000, 'a failed report');
    failing = false;
    await waitFor(() => store.pendingCount() === 0, 20_000, 'the held XID delivered after another call succeeded');
    expect(cp.events('node-a').some((e) => e.metrics.xid_code === '79')).toBe(true);
  });
});
