/**
 * The daemon under a (simulated) systemd Type=notify unit: READY=1 only once the API answers and
 * the backend is open, STATUS= text, watchdog pings, STOPPING=1 on SIGTERM. The datagrams go to
 * a real AF_UNIX socket (python3 receiver from test/deploy) and are sent by the native addon.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NotifyReceiver } from '../deploy/helpers.js';
import { findSystemdNotify } from '../../src/systemd/notify-exec.js';
import { DIST_BUILT, REPO_ROOT, startAgent, tempDir, waitFor } from './agent-helpers.js';

const addon = existsSync(join(REPO_ROOT, 'build', 'Release', 'navarch_nvml.node'));
const python = spawnSync('python3', ['--version']).status === 0;
const ok = DIST_BUILT && addon && python;
if (!ok) console.warn(`skipping the systemd notify e2e test: needs dist/ (${DIST_BUILT}), the addon build (${addon}) and python3 (${python})`);
const systemdNotify = findSystemdNotify();
const okExec = DIST_BUILT && python && systemdNotify !== null;
if (!okExec)
  console.warn(`skipping the no-addon systemd notify e2e test: needs dist/ (${DIST_BUILT}), python3 (${python}) and systemd-notify (${systemdNotify})`);

describe.skipIf(!ok)('agent under systemd notify', () => {
  it('sends READY=1 after the API listens, watchdog pings, and STOPPING=1 on SIGTERM', async () => {
    const sock = join(tempDir('notify'), 'notify.sock');
    const rx = new NotifyReceiver(sock);
    await rx.started();
    try {
      const agent = await startAgent({
        args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-sd', '--kmsg-path', 'none'],
        env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '1000000', NAVARCH_GPU_COUNT: '2' },
      });
      const ready = await waitFor('READY=1', () => rx.messages.find((m) => m.state.split('\n').includes('READY=1')));
      expect(ready.state).toMatch(/STATUS=2 GPU\(s\) via fake/);
      expect(ready.pid === null || ready.pid === agent.proc.pid).toBe(true);
      expect((await fetch(`${agent.url}/healthz`)).status).toBe(200);
      await waitFor('watchdog pings', () => rx.messages.filter((m) => m.state.includes('WATCHDOG=1')).length >= 2, 20_000);
      expect(await agent.stop('SIGTERM')).toBe(0);
      await waitFor('STOPPING=1', () => rx.messages.some((m) => m.state.includes('STOPPING=1')));
    } finally {
      await rx.stop();
    }
  });
});

describe.skipIf(!okExec)('agent under systemd notify without the native addon', () => {
  it('still sends READY=1, STATUS= and watchdog pings (through systemd-notify), and STOPPING=1', async () => {
    const sock = join(tempDir('notify-noaddon'), 'notify.sock');
    const rx = new NotifyReceiver(sock);
    await rx.started();
    try {
      // node-gyp-build looks only in an empty directory (NAVARCH_AGENT_PREBUILD, its override), so no
      // addon loads even where the checkout has prebuilds/ (npm pack's prepack makes them), as after
      // a compiler-less install without a prebuild for the platform.
      const agent = await startAgent({
        args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-sd-noaddon', '--kmsg-path', 'none'],
        env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '2000000', NAVARCH_GPU_COUNT: '2', NAVARCH_AGENT_PREBUILD: tempDir('no-addon') },
      });
      const ready = await waitFor('READY=1', () => rx.messages.find((m) => m.state.split('\n').includes('READY=1')));
      expect(ready.state).toMatch(/STATUS=2 GPU\(s\) via fake/);
      expect(ready.state.split('\n')).toContain(`MAINPID=${agent.proc.pid}`);
      await waitFor('watchdog pings', () => rx.messages.filter((m) => m.state.split('\n').includes('WATCHDOG=1')).length >= 2, 20_000);
      expect(await agent.stop('SIGTERM')).toBe(0);
      await waitFor('STOPPING=1', () => rx.messages.some((m) => m.state.includes('STOPPING=1')));
      expect(agent.logs.find((l) => l.msg === 'navarch-agent ready')?.sdNotify).toBe('systemd-notify');
    } finally {
      await rx.stop();
    }
  });
});
