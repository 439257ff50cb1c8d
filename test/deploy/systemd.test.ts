// The systemd unit (exposure score, verify) and install.sh/uninstall.sh in a scratch root: as the
// running system (--live, with a recording SYSTEMCTL) and as an image or chroot (the default for
// a --root other than /: no systemctl at all). systemd-analyze runs offline (no systemd as PID 1).
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { have, makeRecorder, repoRoot, run } from './helpers.js';

const unitPath = join(repoRoot, 'systemd/navarch-agent.service');
const installSh = join(repoRoot, 'systemd/install.sh');
const uninstallSh = join(repoRoot, 'systemd/uninstall.sh');
const unitText = readFileSync(unitPath, 'utf8');

const hasAnalyze = have('systemd-analyze');
if (!hasAnalyze) console.warn('[skip] systemd-analyze tests: systemd-analyze is not installed (apt-get install systemd)');
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('[skip] ownership checks in install.sh tests: not running as root');

function directive(name: string): string[] {
  return unitText
    .split('\n')
    .filter((l) => l.startsWith(`${name}=`))
    .map((l) => l.slice(name.length + 1));
}

describe('navarch-agent.service', { timeout: 180_000 }, () => {
  it('is a notify service with a watchdog, a credential token and the network/persistenced ordering', () => {
    expect(directive('Type')).toEqual(['notify']);
    expect(directive('WatchdogSec')).toHaveLength(1);
    expect(directive('Restart')).toEqual(['on-failure']);
    expect(directive('LoadCredential')).toEqual(['auth-token:/etc/navarch-agent/auth-token']);
    expect(directive('EnvironmentFile')).toEqual(['-/etc/navarch-agent/agent.env']);
    expect(directive('StateDirectory')).toEqual(['navarch-agent']);
    expect(directive('After')[0]).toContain('network-online.target');
    expect(directive('After')[0]).toContain('nvidia-persistenced.service');
    expect(directive('Wants')[0]).toContain('network-online.target');
    const exec = directive('ExecStart')[0]!;
    expect(exec).toContain('--auth-token-file %d/auth-token');
    expect(exec).not.toMatch(/--auth-token(\s|=)/);
    expect(directive('User')).toEqual(['navarch-agent']);
    expect(directive('DevicePolicy')).toEqual(['closed']);
    expect(directive('CapabilityBoundingSet')).toEqual(['CAP_SYSLOG']);
    expect(directive('MemoryDenyWriteExecute')).toEqual(['no']);
  });

  it.skipIf(!hasAnalyze)('has an offline exposure score of at most 2.0 and no parse warnings', () => {
    const r = run('systemd-analyze', ['security', '--offline=true', '--no-pager', unitPath]);
    const m = /Overall exposure level for navarch-agent\.service: ([0-9.]+)/.exec(r.stdout + r.stderr);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    const score = Number(m![1]);
    console.log(`systemd-analyze security --offline=true exposure: ${score}`);
    expect(score).toBeLessThanOrEqual(2.0);
    expect(r.stderr).not.toMatch(/Invalid|Unknown|ignoring/i);
  });

  it.skipIf(!hasAnalyze)('passes systemd-analyze verify once installed into a root with its binary', () => {
    const root = mkdtempSync(join(tmpdir(), 'navarch-verify-'));
    try {
      // The unit's dependencies (multi-user.target, network-online.target, ...) come from the host.
      for (const d of ['/usr/lib/systemd/system', '/lib/systemd/system']) {
        if (existsSync(d)) {
          cpSync(d, join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
          break;
        }
      }
      mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
      writeFileSync(join(root, 'usr/local/bin/navarch-agent'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      const log = join(root, 'systemctl.log');
      const rec = makeRecorder(join(root, 'systemctl-rec'), log, 'systemctl');
      const inst = run('bash', [installSh, '--root', root, '--quiet'], { env: { ...process.env, SYSTEMCTL: rec } });
      expect(inst.status, inst.stderr).toBe(0);
      // Without a token the no-token drop-in is verified with the unit.
      expect(existsSync(join(root, 'etc/systemd/system/navarch-agent.service.d/50-no-token.conf'))).toBe(true);
      let r = run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, 'navarch-agent.service']);
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
      const inst2 = run('bash', [installSh, '--root', root, '--quiet', '--token-stdin'], { env: { ...process.env, SYSTEMCTL: rec }, input: 'tok' });
      expect(inst2.status, inst2.stderr).toBe(0);
      r = run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, 'navarch-agent.service']);
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('install.sh / uninstall.sh in a scratch root treated as the running system (--live)', { timeout: 180_000 }, () => {
  let root: string;
  let log: string;
  let env: NodeJS.ProcessEnv;
  const etc = () => join(root, 'etc/navarch-agent');
  const calls = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);
  const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'navarch-install-'));
    const tools = mkdtempSync(join(tmpdir(), 'navarch-tools-'));
    log = join(tools, 'calls.log');
    env = { ...process.env, SYSTEMCTL: makeRecorder(join(tools, 'systemctl'), log, 'systemctl') };
    // A host without systemd-sysusers falls back to useradd; both understand --root.
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('creates the user, directories, env file, token and unit, then reloads, enables and starts', () => {
    const r = run(
      'bash',
      [
        installSh,
        '--root',
        root,
        '--live',
        '--bin',
        '/opt/navarch-agent/current/bin/navarch-agent',
        '--set',
        'NAVARCH_SERVER=http://cp.internal:50051',
        '--set',
        'NAVARCH_POOL=h100-a',
        '--token-stdin',
      ],
      { env, input: 's3cret-token\n' },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).toMatch(/^navarch-agent:x:\d+:\d+:.*:\/var\/lib\/navarch-agent:\/usr\/sbin\/nologin$/m);
    expect(mode(etc())).toBe('750');
    expect(mode(join(root, 'var/lib/navarch-agent'))).toBe('700');
    const envText = readFileSync(join(etc(), 'agent.env'), 'utf8');
    expect(envText).toContain('NAVARCH_SERVER="http://cp.internal:50051"\n');
    expect(envText).toContain('NAVARCH_POOL="h100-a"\n');
    expect(envText).not.toContain('s3cret');
    expect(readFileSync(join(etc(), 'auth-token'), 'utf8')).toBe('s3cret-token');
    expect(mode(join(etc(), 'auth-token'))).toBe('600');
    const unit = readFileSync(join(root, 'etc/systemd/system/navarch-agent.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=\/opt\/navarch-agent\/current\/bin\/navarch-agent run /m);
    expect(calls()).toEqual(['systemctl daemon-reload', 'systemctl enable navarch-agent.service', 'systemctl restart navarch-agent.service']);
    if (isRoot) {
      const uid = Number(/^navarch-agent:x:(\d+):/m.exec(readFileSync(join(root, 'etc/passwd'), 'utf8'))![1]);
      expect(statSync(join(root, 'var/lib/navarch-agent')).uid).toBe(uid);
      expect(statSync(join(etc(), 'auth-token')).uid).toBe(0);
    }
  });

  it('is idempotent: a re-run keeps agent.env and the token and only starts (no restart)', () => {
    rmSync(log, { force: true });
    const before = readFileSync(join(root, 'etc/passwd'), 'utf8');
    const r = run(
      'bash',
      [installSh, '--root', root, '--live', '--bin', '/opt/navarch-agent/current/bin/navarch-agent', '--set', 'NAVARCH_SERVER=http://changed:1'],
      { env },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('kept existing');
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).toBe(before);
    expect(readFileSync(join(etc(), 'agent.env'), 'utf8')).toContain('http://cp.internal:50051');
    expect(readFileSync(join(etc(), 'auth-token'), 'utf8')).toBe('s3cret-token');
    expect(calls()).toEqual(['systemctl daemon-reload', 'systemctl enable navarch-agent.service', 'systemctl start navarch-agent.service']);
  });

  it('--replace-env rewrites the settings, a new token restarts, --no-start only enables', () => {
    rmSync(log, { force: true });
    const r = run(
      'bash',
      [
        installSh,
        '--root',
        root,
        '--live',
        '--bin',
        '/opt/navarch-agent/current/bin/navarch-agent',
        '--replace-env',
        '--set',
        'NAVARCH_SERVER=http://changed:1',
        '--no-start',
      ],
      { env: { ...env, NAVARCH_AUTH_TOKEN: 'rotated' } },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(etc(), 'agent.env'), 'utf8')).toContain('NAVARCH_SERVER="http://changed:1"');
    expect(readFileSync(join(etc(), 'agent.env'), 'utf8')).not.toContain('NAVARCH_POOL');
    expect(readFileSync(join(etc(), 'auth-token'), 'utf8')).toBe('rotated');
    expect(calls()).toEqual(['systemctl daemon-reload', 'systemctl enable navarch-agent.service']);
  });

  it('without a token installs a drop-in that loads no credential; a later token removes it', () => {
    const root2 = mkdtempSync(join(tmpdir(), 'navarch-install-'));
    try {
      rmSync(log, { force: true });
      let r = run('bash', [installSh, '--root', root2, '--live', '--quiet'], { env });
      expect(r.status, r.stderr).toBe(0);
      const dropin = join(root2, 'etc/systemd/system/navarch-agent.service.d/50-no-token.conf');
      const text = readFileSync(dropin, 'utf8');
      expect(text).toMatch(/^LoadCredential=$/m);
      expect(text).toMatch(/^ExecStart=$/m);
      expect(text).toMatch(/^ExecStart=\/usr\/local\/bin\/navarch-agent run --state-dir %S\/navarch-agent$/m);
      expect(existsSync(join(root2, 'etc/navarch-agent/auth-token'))).toBe(false);
      rmSync(log, { force: true });
      r = run('bash', [installSh, '--root', root2, '--live', '--token-stdin'], { env, input: 'abc\n' });
      expect(r.status, r.stderr).toBe(0);
      expect(existsSync(dropin)).toBe(false);
      expect(readFileSync(join(root2, 'etc/navarch-agent/auth-token'), 'utf8')).toBe('abc');
      expect(calls()).toContain('systemctl restart navarch-agent.service');
      r = run('bash', [installSh, '--root', root2, '--token-stdin'], { env, input: '' });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/token is empty/);
    } finally {
      rmSync(root2, { recursive: true, force: true });
    }
  });

  it('rejects bad input with a one-line error before changing anything', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--set', 'SERVER=x'], /NAVARCH_\[A-Z0-9_\]\+/],
      [['--set', 'NAVARCH_SERVER'], /expected NAVARCH_KEY=VALUE/],
      [['--set', 'NAVARCH_AUTH_TOKEN=x'], /--token-file/],
      [['--root', 'relative/dir'], /absolute path/],
      [['--bin', '/usr/bin/navarch agent'], /plain absolute path/],
      [['--frobnicate'], /unknown argument: --frobnicate/],
      [['--token-file', '/nonexistent/token'], /cannot read token file/],
    ];
    for (const [args, re] of cases) {
      const r = run('bash', [installSh, '--root', root, ...args], { env });
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
    expect(readFileSync(join(etc(), 'auth-token'), 'utf8')).toBe('rotated');
  });

  it('a failing systemctl fails the install with the command named', () => {
    const tools = mkdtempSync(join(tmpdir(), 'navarch-tools-'));
    const bad = makeRecorder(join(tools, 'systemctl'), join(tools, 'log'), 'systemctl', 1);
    const r = run('bash', [installSh, '--root', root, '--live', '--quiet'], { env: { ...env, SYSTEMCTL: bad } });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/daemon-reload' failed/);
    rmSync(tools, { recursive: true, force: true });
  });

  it('uninstall.sh removes unit and config but keeps state; --purge removes state and user', () => {
    rmSync(log, { force: true });
    writeFileSync(join(root, 'var/lib/navarch-agent/events.db'), 'x');
    let r = run('bash', [uninstallSh, '--root', root, '--live'], { env });
    expect(r.status, r.stderr).toBe(0);
    expect(existsSync(join(root, 'etc/systemd/system/navarch-agent.service'))).toBe(false);
    expect(existsSync(join(root, 'etc/systemd/system/navarch-agent.service.d'))).toBe(false);
    expect(existsSync(etc())).toBe(false);
    expect(existsSync(join(root, 'var/lib/navarch-agent/events.db'))).toBe(true);
    expect(calls()).toEqual(['systemctl disable --now navarch-agent.service', 'systemctl daemon-reload']);
    // Again: nothing left to do, still success.
    r = run('bash', [uninstallSh, '--root', root], { env });
    expect(r.status, r.stderr).toBe(0);
    if (have('userdel', ['--help'])) {
      r = run('bash', [uninstallSh, '--root', root, '--purge'], { env });
      expect(r.status, r.stderr).toBe(0);
      expect(existsSync(join(root, 'var/lib/navarch-agent'))).toBe(false);
      expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).not.toContain('navarch-agent');
    } else {
      console.warn('[skip] uninstall --purge: userdel is not installed');
    }
  });
});

describe('install.sh / uninstall.sh into an image or chroot (--root other than /)', { timeout: 180_000 }, () => {
  const hasSystemctl = have('systemctl', ['--version']);
  if (!hasSystemctl) console.warn('[skip] systemctl --root is-enabled cross-check: systemctl is not installed');
  const link = (root: string) => join(root, 'etc/systemd/system/multi-user.target.wants/navarch-agent.service');

  it('enables by the WantedBy= link, runs no systemctl (not even one on PATH), and systemd agrees it is enabled', () => {
    const root = mkdtempSync(join(tmpdir(), 'navarch-image-'));
    const tools = mkdtempSync(join(tmpdir(), 'navarch-tools-'));
    try {
      // A systemctl first on PATH that records any call: the default SYSTEMCTL would find it.
      const log = join(tools, 'calls.log');
      makeRecorder(join(tools, 'systemctl'), log, 'systemctl');
      const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${tools}:${process.env.PATH}` };
      delete env.SYSTEMCTL;
      let r = run('bash', [installSh, '--root', root, '--token-stdin'], { env, input: 'tok' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`install.sh: enabled: ${link(root)}`);
      expect(r.stdout).toContain(`install.sh: ${root} is not the running system: systemd there starts the service at boot (nothing reloaded or started now)`);
      expect(r.stdout).toMatch(/done \(changed=1\)\n$/);
      expect(lstatSync(link(root)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(link(root))).toBe('/etc/systemd/system/navarch-agent.service');
      expect(readFileSync(join(root, 'etc/navarch-agent/auth-token'), 'utf8')).toBe('tok');
      expect(existsSync(log)).toBe(false);
      if (hasSystemctl) {
        // The real systemctl, offline against the image: the link is what `enable` makes.
        const check = run('systemctl', [`--root=${root}`, 'is-enabled', 'navarch-agent.service']);
        expect(check.stdout.trim(), check.stderr).toBe('enabled');
      }
      // Idempotent: nothing changed, the link stays, still no systemctl.
      r = run('bash', [installSh, '--root', root], { env });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).not.toContain('enabled:');
      expect(r.stdout).toMatch(/done \(changed=0\)\n$/);
      expect(readlinkSync(link(root))).toBe('/etc/systemd/system/navarch-agent.service');
      // uninstall: the link goes with the unit, still without systemctl.
      r = run('bash', [uninstallSh, '--root', root], { env });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`uninstall.sh: disabled: removed ${link(root)}`);
      expect(existsSync(link(root))).toBe(false);
      expect(existsSync(join(root, 'etc/systemd/system/navarch-agent.service'))).toBe(false);
      expect(existsSync(log)).toBe(false);
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(tools, { recursive: true, force: true });
    }
  });

  it('--no-enable leaves it disabled', () => {
    const root = mkdtempSync(join(tmpdir(), 'navarch-image-'));
    try {
      const r = run('bash', [installSh, '--root', root, '--no-enable', '--quiet'], { env: { ...process.env, SYSTEMCTL: '/bin/false' } });
      expect(r.status, r.stderr).toBe(0);
      expect(existsSync(join(root, 'etc/systemd/system/navarch-agent.service'))).toBe(true);
      expect(existsSync(link(root))).toBe(false);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
