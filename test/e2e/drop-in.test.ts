/**
 * Issue 8, drop-in start: the agent started the way Navarch's docs and bootstrap start the Go node
 * daemon (no command, Go's flags), a token over plain http:// to a non-loopback host *name*
 * (mapped to 127.0.0.1 by test/helpers/resolve-hook.cjs; no traffic leaves the machine), and
 * --require-tls refusing that.
 */
import { spawn } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, MAIN_JS, REPO_ROOT, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

const HOOK = join(REPO_ROOT, 'test', 'helpers', 'resolve-hook.cjs');
const CP_NAME = 'navarch-cp.dropin.test';
const HOOK_ENV = { NAVARCH_TEST_HOSTS: `${CP_NAME}=127.0.0.1` };

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Run the CLI as a process (async: the dev control plane answers from this process meanwhile). */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  const p = spawn(process.execPath, ['--require', HOOK, MAIN_JS, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...HOOK_ENV, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const kill = setTimeout(() => p.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    p.on('close', (code) => {
      clearTimeout(kill);
      resolve({ code, out, err });
    }),
  );
}

describe.skipIf(!DIST_BUILT)('drop-in start (issue 8)', () => {
  it("Go's command line without a command runs the agent; a token over http to a non-loopback name starts, warns once, and /status says so", async () => {
    const cp = await startDevControlPlane({ authToken: 'dropin-token', heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 5 });
    cleanups.push(() => cp.close());
    const server = `http://${CP_NAME}:${cp.port}`;
    const agent: AgentProcess = await startAgent({
      command: null,
      nodeArgs: ['--require', HOOK],
      // Go's flags, in both spellings Go's flag package accepts, then the agent's own.
      args: [
        '--server',
        server,
        '--node-id',
        'go-node',
        '-provider',
        'aws',
        '-region',
        'us-east-1',
        '--zone',
        'us-east-1a',
        '--pool',
        'train',
        '--auth-token',
        'dropin-token',
        '--kmsg-path',
        'none',
      ],
      env: { ...HOOK_ENV, NAVARCH_FAKE_GPU: 'true', NAVARCH_GPU_COUNT: '2' },
    });
    cleanups.push(() => agent.stop('SIGKILL'));
    const node = await waitFor('registration through the mapped name', () => cp.node('go-node'), 60_000);
    expect(node.provider).toBe('aws');
    expect(node.region).toBe('us-east-1');
    expect(node.zone).toBe('us-east-1a');
    expect(node.metadata.labels.pool).toBe('train');
    expect(node.gpus).toHaveLength(2);
    const st = await waitFor('connected', async () => {
      const s = await agent.status();
      return s.controlPlane.state === 'connected' ? s : null;
    });
    expect(st.controlPlane.server).toBe(server);
    expect(st.controlPlane.transportWarning).toMatch(
      new RegExp(`plain http:// to non-loopback host ${CP_NAME.replace(/\./g, '\\.')}: the auth token and every report travel in clear text`),
    );
    const warns = agent.logs.filter((l) => String(l.msg).includes('INSECURE TRANSPORT'));
    expect(warns).toHaveLength(1);
    expect(warns[0]!.level).toBe(40);
    expect(await agent.stop('SIGTERM')).toBe(0);
  });

  it('doctor warns about the clear-text token (and says how to refuse it)', async () => {
    const cp = await startDevControlPlane({ authToken: 'dropin-token' });
    cleanups.push(() => cp.close());
    const state = tempDir('dropin-doctor');
    cleanups.push(() => rmSync(state, { recursive: true, force: true }));
    const r = await cli([
      'doctor',
      '--server',
      `http://${CP_NAME}:${cp.port}`,
      '--auth-token',
      'dropin-token',
      '--gpu-backend',
      'fake',
      '--kmsg-path',
      'none',
      '--state-dir',
      state,
    ]);
    expect(r.out).toMatch(/\[WARN\] transport: plain http:\/\/ to non-loopback host navarch-cp\.dropin\.test: the auth token/);
    expect(r.out).toMatch(/fix: .*--require-tls/);
    expect(r.out).toMatch(/\[ OK \] control plane: .*token accepted/);
  });

  it('--require-tls refuses plain http to a non-loopback host: exit 2, one line', async () => {
    const r = await cli(['--server', `http://${CP_NAME}:1`, '--node-id', 'n', '--require-tls', '--auth-token', 't']);
    expect(r.code).toBe(2);
    expect(r.err.trimEnd().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/^navarch-agent: refusing plain http:\/\/ to non-loopback host navarch-cp\.dropin\.test \(--require-tls\)/);
  });

  it('-h and --help exit 0 with the usage; flags with --help show the run flags', async () => {
    for (const h of ['-h', '--help', '-help']) {
      const r = await cli([h]);
      expect(r.code, h).toBe(0);
      expect(r.out).toMatch(/no command means "run"/);
    }
    const r = await cli(['--server', 'http://127.0.0.1:1', '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/usage: navarch-agent run/);
    expect(r.out).toMatch(/--require-tls/);
  });

  it('no writable state directory (hardened unit): runs on the in-memory store, one warning, DEGRADED durability at the control plane, doctor FAIL', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 1 });
    cleanups.push(() => cp.close());
    const tmp = tempDir('dropin-ro');
    cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
    // Paths below a regular file cannot be created by anyone, root included (ENOTDIR), like
    // ProtectSystem=strict without a StateDirectory= or ReadWritePaths= for the agent.
    writeFileSync(join(tmp, 'file'), 'x');
    const configured = join(tmp, 'file', 'state');
    const systemd = join(tmp, 'file', 'systemd-state');
    const env = { NAVARCH_STATE_DIR: configured, STATE_DIRECTORY: systemd, NAVARCH_FAKE_GPU: 'true', NAVARCH_GPU_COUNT: '2' };
    const agent = await startAgent({ command: null, noStateDirFlag: true, args: ['--server', cp.url, '--node-id', 'ro-node', '--kmsg-path', 'none'], env });
    cleanups.push(() => agent.stop('SIGKILL'));
    const st = await agent.status();
    expect(st.durability?.durable).toBe(false);
    expect(st.durability?.problem).toContain(`${configured}: ENOTDIR`);
    expect(st.durability?.problem).toContain(`${systemd}: ENOTDIR`);
    const warns = agent.logs.filter((l) => String(l.msg).startsWith('NOT DURABLE'));
    expect(warns).toHaveLength(1);
    expect(warns[0]!.level).toBe(40);
    const durability = await waitFor('durability result', () => cp.results('ro-node').find((r) => r.checkName === 'durability'), 60_000);
    expect(durability.status).toBe('degraded');
    expect(durability.message).toMatch(/events are kept in memory only/);
    // The in-memory store still detects and delivers.
    expect((await agent.inject({ kind: 'xid', gpu: 1, xid: 79 })).ok).toBe(true);
    await waitFor('XID 79 delivered', () => cp.events('ro-node').find((e) => e.metrics.xid_code === '79'), 60_000);
    expect(await agent.stop('SIGTERM')).toBe(0);

    const d = await cli(['doctor', '--server', cp.url, '--gpu-backend', 'fake', '--kmsg-path', 'none'], {
      NAVARCH_STATE_DIR: configured,
      STATE_DIRECTORY: systemd,
    });
    expect(d.code).toBe(1);
    expect(d.out).toMatch(/\[FAIL\] state directory: no writable state directory .*in memory only/);
    expect(d.out).toMatch(/fix: .*StateDirectory=navarch-agent/);
  });

  it('doctor creates nothing: a missing state directory under a writable parent is OK and still missing after', async () => {
    const tmp = tempDir('dropin-doctor-nocreate');
    cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
    const state = join(tmp, 'a', 'b');
    const d = await cli(['doctor', '--server', 'http://127.0.0.1:1', '--gpu-backend', 'fake', '--kmsg-path', 'none', '--state-dir', state]);
    expect(d.out).toMatch(/\[ OK \] state directory: .*does not exist yet; the agent creates it/);
    expect(existsSync(join(tmp, 'a'))).toBe(false);
  });
});
