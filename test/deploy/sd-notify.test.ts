// sd_notify through the real addon to a real AF_UNIX datagram socket (python3 receiver with
// SO_PASSCRED, as systemd binds it), for filesystem and abstract addresses, plus the watchdog.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSdNotifyBinding, Notifier, watchdogIntervalUsec, type SdNotifyBinding } from '../../src/systemd/notify.js';
import { findSystemdNotify } from '../../src/systemd/notify-exec.js';
import { have, NotifyReceiver, waitFor } from './helpers.js';

let binding: SdNotifyBinding | null = null;
let why = '';
try {
  binding = loadSdNotifyBinding();
} catch (e) {
  why = `native addon not built (${String((e as Error).message).split('\n')[0]}); run npm run build:addon`;
}
if (!why && !have('python3')) why = 'python3 (the datagram receiver) is not installed';
if (why) console.warn(`[skip] sd-notify tests: ${why}`);

describe('watchdogIntervalUsec', () => {
  it('follows sd_watchdog_enabled semantics', () => {
    expect(watchdogIntervalUsec({}, 10)).toBeNull();
    expect(watchdogIntervalUsec({ WATCHDOG_USEC: '30000000' }, 10)).toBe(30_000_000);
    expect(watchdogIntervalUsec({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '10' }, 10)).toBe(30_000_000);
    expect(watchdogIntervalUsec({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '11' }, 10)).toBeNull();
    expect(watchdogIntervalUsec({ WATCHDOG_USEC: '0' }, 10)).toBeNull();
    expect(watchdogIntervalUsec({ WATCHDOG_USEC: '-5' }, 10)).toBeNull();
    expect(watchdogIntervalUsec({ WATCHDOG_USEC: '1e6' }, 10)).toBeNull();
  });
});

describe('notifier without systemd', () => {
  it('is a no-op and never touches the addon when NOTIFY_SOCKET is unset', () => {
    const throwing: SdNotifyBinding = {
      sdNotify() {
        throw new Error('must not be called');
      },
    };
    const n = new Notifier({ env: { WATCHDOG_USEC: '1000000' }, binding: throwing });
    expect(n.enabled).toBe(false);
    expect(n.ready('x')).toBe(false);
    expect(n.status('x')).toBe(false);
    expect(n.startWatchdog()).toBeNull();
  });

  it('is a no-op when neither the addon nor systemd-notify is available, and says so once', () => {
    const errors: Error[] = [];
    const n = new Notifier({ env: { NOTIFY_SOCKET: '/nonexistent/sock' }, binding: null, systemdNotify: null, onError: (e) => errors.push(e) });
    expect(n.enabled).toBe(false);
    expect(n.transport).toBe('none');
    expect(n.ready()).toBe(false);
    expect(n.status('x')).toBe(false);
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/no native addon .* and no systemd-notify binary/)]);
  });

  it('rejects an empty state', () => {
    expect(() => new Notifier({ env: {} }).notify('')).toThrow(/non-empty/);
  });
});

describe.skipIf(binding === null)('sd_notify over a real datagram socket', { timeout: 120_000 }, () => {
  let dir: string;
  let pathRx: NotifyReceiver;
  let abstractRx: NotifyReceiver;
  const abstractName = `@navarch-test-${process.pid}-${Date.now()}`;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'navarch-notify-'));
    pathRx = new NotifyReceiver(join(dir, 'notify.sock'));
    abstractRx = new NotifyReceiver(abstractName);
    await Promise.all([pathRx.started(), abstractRx.started()]);
  });
  afterAll(async () => {
    await pathRx?.stop();
    await abstractRx?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('sends READY=1 and STATUS to a filesystem socket, from this pid', async () => {
    const n = new Notifier({ env: { NOTIFY_SOCKET: pathRx.address } });
    expect(n.enabled).toBe(true);
    expect(n.ready('registered with control plane')).toBe(true);
    const m = await waitFor(() => pathRx.messages.find((x) => x.state.startsWith('READY=1')), 'READY=1');
    expect(m.state).toBe('READY=1\nSTATUS=registered with control plane');
    expect(m.pid).toBe(process.pid);
  });

  it('sends to an abstract-namespace socket (@name)', async () => {
    const n = new Notifier({ env: { NOTIFY_SOCKET: abstractName } });
    expect(n.status('line one\nline two')).toBe(true);
    const m = await waitFor(() => abstractRx.messages.find((x) => x.state.startsWith('STATUS=')), 'STATUS');
    expect(m.state).toBe('STATUS=line one line two');
    expect(n.stopping()).toBe(true);
    await waitFor(() => abstractRx.messages.find((x) => x.state === 'STOPPING=1'), 'STOPPING=1');
  });

  it('the raw export validates its arguments and reports send errors with errno', () => {
    const b = binding!;
    expect(() => (b.sdNotify as unknown as (x: unknown) => boolean)(42)).toThrow(TypeError);
    expect(b.sdNotify('READY=1', '')).toBe(false);
    expect(() => b.sdNotify('READY=1', 'vsock:2:1234')).toThrow(/unsupported NOTIFY_SOCKET address/);
    expect(() => b.sdNotify('READY=1', join(dir, 'nobody-listens'))).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => b.sdNotify('READY=1', '/' + 'x'.repeat(200))).toThrow(/sd_notify/);
    expect(() => b.sdNotify('x'.repeat(70 * 1024), pathRx.address)).toThrow(/EMSGSIZE|too long/i);
  });

  it('a failing socket makes notify() return false and reports the error once', () => {
    const errors: Error[] = [];
    const n = new Notifier({ env: { NOTIFY_SOCKET: join(dir, 'gone.sock') }, onError: (e) => errors.push(e) });
    expect(n.status('a')).toBe(false);
    expect(n.status('b')).toBe(false);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toMatch(/gone\.sock/);
  });

  it("pings WATCHDOG=1 at half of WATCHDOG_USEC from an unref'd timer", async () => {
    const before = pathRx.messages.filter((m) => m.state === 'WATCHDOG=1').length;
    const n = new Notifier({
      env: { NOTIFY_SOCKET: pathRx.address, WATCHDOG_USEC: '100000', WATCHDOG_PID: String(process.pid) },
    });
    const h = n.startWatchdog();
    expect(h).not.toBeNull();
    expect(h!.intervalMs).toBe(50);
    expect(h!.hasRef).toBe(false);
    await waitFor(() => pathRx.messages.filter((m) => m.state === 'WATCHDOG=1').length >= before + 3, '3 pings');
    h!.stop();
    expect(h!.sent).toBeGreaterThanOrEqual(3);
  });

  it("does not start for another process's watchdog, and skips pings while unhealthy", async () => {
    const other = new Notifier({
      env: { NOTIFY_SOCKET: pathRx.address, WATCHDOG_USEC: '100000', WATCHDOG_PID: String(process.pid + 1) },
    });
    expect(other.startWatchdog()).toBeNull();

    let healthy = false;
    const n = new Notifier({ env: { NOTIFY_SOCKET: pathRx.address, WATCHDOG_USEC: '100000' } });
    const h = n.startWatchdog({ healthy: () => healthy })!;
    await new Promise((r) => setTimeout(r, 200));
    expect(h.sent).toBe(0);
    healthy = true;
    await waitFor(() => h.sent >= 2, 'pings after recovery');
    h.stop();
  });
});

// Without the addon: the same datagrams through systemd's own systemd-notify binary.
const systemdNotify = findSystemdNotify();
const execWhy = !have('python3') ? 'python3 (the datagram receiver) is not installed' : systemdNotify === null ? 'no systemd-notify binary on this host' : '';
if (execWhy) console.warn(`[skip] sd-notify fallback tests: ${execWhy}`);

describe.skipIf(execWhy !== '')('sd_notify without the addon (systemd-notify)', { timeout: 120_000 }, () => {
  let dir: string;
  let rx: NotifyReceiver;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'navarch-notify-exec-'));
    rx = new NotifyReceiver(join(dir, 'notify.sock'));
    await rx.started();
  });
  afterAll(async () => {
    await rx?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('falls back to systemd-notify: READY=1 with STATUS and MAINPID reach the socket', async () => {
    const errors: Error[] = [];
    const n = new Notifier({ env: { NOTIFY_SOCKET: rx.address }, binding: null, onError: (e) => errors.push(e) });
    expect(n.enabled).toBe(true);
    expect(n.transport).toBe('systemd-notify');
    expect(n.ready('registered\nwith control plane')).toBe(true);
    const m = await waitFor(() => rx.messages.find((x) => x.state.split('\n').includes('READY=1')), 'READY=1');
    const lines = m.state.split('\n');
    expect(lines).toContain('STATUS=registered with control plane');
    expect(lines).toContain(`MAINPID=${process.pid}`);
    // As root the helper may send with our PID; otherwise it is its own (NotifyAccess=all in the unit).
    expect(m.pid).not.toBeNull();
    expect(errors).toEqual([]);
  });

  it('pings the watchdog through the helper', async () => {
    const before = rx.messages.filter((m) => m.state.split('\n').includes('WATCHDOG=1')).length;
    const n = new Notifier({ env: { NOTIFY_SOCKET: rx.address, WATCHDOG_USEC: '400000' }, binding: null });
    const h = n.startWatchdog()!;
    expect(h).not.toBeNull();
    expect(h.intervalMs).toBe(200);
    await waitFor(() => rx.messages.filter((m) => m.state.split('\n').includes('WATCHDOG=1')).length >= before + 2, '2 pings');
    h.stop();
  });

  it('reports a helper that fails (no listener) and a binary that cannot run, once each', async () => {
    const errors: Error[] = [];
    const n = new Notifier({ env: { NOTIFY_SOCKET: join(dir, 'nobody.sock') }, binding: null, systemdNotify, onError: (e) => errors.push(e) });
    expect(n.status('a')).toBe(true);
    await waitFor(() => errors.length >= 1, 'helper failure');
    expect(errors[0]!.message).toMatch(/systemd-notify exited [1-9]/);

    const missing: Error[] = [];
    const m = new Notifier({ env: { NOTIFY_SOCKET: rx.address }, binding: null, systemdNotify: join(dir, 'no-such-binary'), onError: (e) => missing.push(e) });
    expect(m.status('a')).toBe(true);
    expect(m.status('b')).toBe(true);
    await waitFor(() => missing.length >= 1, 'spawn failure');
    await new Promise((r) => setTimeout(r, 200));
    expect(missing).toHaveLength(1);
    expect(missing[0]!.message).toMatch(/ENOENT/);
  });
});
