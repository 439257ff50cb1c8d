// deploy/ec2: the cloud-config validates, matches bootstrap.sh, and the bootstrap runs end to end
// against a local IMDSv2 server on loopback, in a scratch root, with recorded systemctl/npm.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { FakeImds, have, IMDS_IDENTITY as IDENTITY, makeRecorder, pathWithoutNode, repoRoot, run, runAsync } from './helpers.js';

const bootstrap = join(repoRoot, 'deploy/ec2/bootstrap.sh');
const userData = join(repoRoot, 'deploy/ec2/user-data.yaml');
describe('user-data.yaml', { timeout: 120_000 }, () => {
  it('embeds bootstrap.sh byte for byte (gzip+base64), fits 16 KB and is what render-user-data.sh prints', () => {
    const text = readFileSync(userData, 'utf8');
    const doc = parseYaml(text) as { write_files: Array<{ path: string; content: string; permissions: string; encoding?: string }>; runcmd: unknown[] };
    const script = doc.write_files.find((f) => f.path === '/usr/local/sbin/navarch-bootstrap');
    expect(script?.encoding).toBe('gz+b64');
    const bootstrapBytes = readFileSync(bootstrap);
    expect(gunzipSync(Buffer.from(script!.content, 'base64')).equals(bootstrapBytes)).toBe(true);
    expect(text).toContain(`# deploy/ec2/bootstrap.sh, sha256 ${createHash('sha256').update(bootstrapBytes).digest('hex')}\n`);
    expect(script?.permissions).toBe('0755');
    console.log(`user-data.yaml: ${Buffer.byteLength(text)} bytes of EC2's 16384`);
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(16384);
    const env = doc.write_files.find((f) => f.path === '/etc/navarch-agent/bootstrap.env');
    expect(env?.permissions).toBe('0600');
    expect(doc.runcmd).toEqual([['/usr/local/sbin/navarch-bootstrap', '--config', '/etc/navarch-agent/bootstrap.env']]);
    const rendered = run('bash', [join(repoRoot, 'deploy/ec2/render-user-data.sh')]);
    expect(rendered.status, rendered.stderr).toBe(0);
    expect(rendered.stdout, 'run deploy/ec2/render-user-data.sh > deploy/ec2/user-data.yaml').toBe(readFileSync(userData, 'utf8'));
  });

  it('render-user-data.sh rejects a malformed setting (exit 2, one line)', () => {
    const r = run('bash', [join(repoRoot, 'deploy/ec2/render-user-data.sh'), 'PATH=/tmp']);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/bad setting 'PATH=\/tmp'/);
    expect(r.stdout).toBe('');
  });

  it("render-user-data.sh refuses user-data over EC2's 16 KB limit (exit 2, one line, nothing printed)", () => {
    const render = (pool: string) =>
      run('bash', [join(repoRoot, 'deploy/ec2/render-user-data.sh'), 'NAVARCH_SERVER=https://cp.example', `NAVARCH_POOL=${pool}`]);
    // The size without the pool value, then a pool that lands exactly on the limit and one byte over.
    const base = Buffer.byteLength(render('').stdout);
    const fits = render('p'.repeat(16384 - base));
    expect(fits.status, fits.stderr).toBe(0);
    expect(Buffer.byteLength(fits.stdout)).toBe(16384);
    const over = render('p'.repeat(16384 - base + 1));
    expect(over.status).toBe(2);
    expect(over.stdout).toBe('');
    expect(over.stderr.trim().split('\n')).toHaveLength(1);
    expect(over.stderr).toBe("render-user-data.sh: the rendered user-data is 16385 bytes, over EC2's 16384-byte limit (shorten the settings)\n");
  });

  const hasCloudInit = have('cloud-init', ['--version']);
  if (!hasCloudInit) console.warn('[skip] cloud-init schema: cloud-init is not installed (apt-get install cloud-init)');
  it.skipIf(!hasCloudInit)("cloud-init's own write_files decoder turns the gz+b64 content back into bootstrap.sh", () => {
    // cloud-init's interpreter (its shebang), so its Python modules import.
    const which = run('sh', ['-c', 'command -v cloud-init']).stdout.trim();
    const python = /^#!\s*(\S+)/.exec(readFileSync(which, 'utf8').split('\n')[0]!)![1]!;
    const script = [
      'import sys, yaml',
      'from cloudinit.config import cc_write_files as w',
      'doc = yaml.safe_load(open(sys.argv[1]))',
      "f = [x for x in doc['write_files'] if x['path'] == '/usr/local/sbin/navarch-bootstrap'][0]",
      "sys.stdout.buffer.write(w.extract_contents(f['content'], w.canonicalize_extraction(f['encoding'])))",
    ].join('\n');
    const r = spawnSync(python, ['-c', script, userData], { timeout: 60_000 });
    expect(r.status, String(r.stderr)).toBe(0);
    expect(Buffer.compare(r.stdout, readFileSync(bootstrap))).toBe(0);
  });

  it.skipIf(!hasCloudInit)('passes cloud-init schema validation (committed and custom-rendered)', () => {
    let r = run('cloud-init', ['schema', '--config-file', userData]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Valid cloud-config/);
    const dir = mkdtempSync(join(tmpdir(), 'navarch-ud-'));
    try {
      const custom = run('bash', [
        join(repoRoot, 'deploy/ec2/render-user-data.sh'),
        'NAVARCH_SERVER=http://navarch-cp.internal:50051',
        'BOOTSTRAP_TARBALL_URL=https://artifacts.example/navarch-agent-0.1.0-linux-x64.tar.gz',
        'BOOTSTRAP_TARBALL_SHA256=' + 'a'.repeat(64),
      ]);
      expect(custom.status, custom.stderr).toBe(0);
      writeFileSync(join(dir, 'ud.yaml'), custom.stdout);
      r = run('cloud-init', ['schema', '--config-file', join(dir, 'ud.yaml')]);
      expect(r.status, r.stdout + r.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bootstrap.sh against a loopback IMDSv2', { timeout: 300_000 }, () => {
  const imds = new FakeImds();
  let work: string;
  let tarball: string;
  let tarballSha: string;
  let selfContained: string;
  let wrongArch: string;

  beforeAll(async () => {
    await imds.start();
    work = mkdtempSync(join(tmpdir(), 'navarch-boot-'));
    // A release tarball in the layout scripts/release.sh produces (launcher + systemd/).
    const stage = join(work, 'stage', 'navarch-agent-0.1.0');
    mkdirSync(join(stage, 'bin'), { recursive: true });
    cpSync(join(repoRoot, 'deploy/bin/navarch-agent'), join(stage, 'bin/navarch-agent'));
    cpSync(join(repoRoot, 'systemd'), join(stage, 'systemd'), { recursive: true });
    tarball = join(work, 'navarch-agent-0.1.0-linux-x64.tar.gz');
    const t = run('tar', ['-czf', tarball, '-C', join(work, 'stage'), 'navarch-agent-0.1.0']);
    expect(t.status, t.stderr).toBe(0);
    tarballSha = createHash('sha256').update(readFileSync(tarball)).digest('hex');
    // The self-contained layout: the same plus node/bin/node (here: this test's node).
    mkdirSync(join(stage, 'node/bin'), { recursive: true });
    writeFileSync(join(stage, 'node/bin/node'), `#!/bin/sh\nexec '${process.execPath}' "$@"\n`, { mode: 0o755 });
    selfContained = join(work, 'self-contained', 'navarch-agent-0.1.0-linux-x64.tar.gz');
    mkdirSync(join(work, 'self-contained'));
    expect(run('tar', ['-czf', selfContained, '-C', join(work, 'stage'), 'navarch-agent-0.1.0']).status).toBe(0);
    // A bundled node that cannot run here (another arch's binary fails to exec the same way).
    writeFileSync(join(stage, 'node/bin/node'), '#!/bin/sh\necho "cannot execute binary file: Exec format error" >&2\nexit 126\n', { mode: 0o755 });
    wrongArch = join(work, 'wrong-arch', 'navarch-agent-0.1.0-linux-arm64.tar.gz');
    mkdirSync(join(work, 'wrong-arch'));
    expect(run('tar', ['-czf', wrongArch, '-C', join(work, 'stage'), 'navarch-agent-0.1.0']).status).toBe(0);
  });
  afterAll(async () => {
    await imds.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });
  beforeEach(() => {
    imds.log.length = 0;
    imds.tokens.clear();
    imds.failTokenPuts = 0;
    imds.expireAfterGets = Infinity;
    imds.gets = 0;
  });

  const wantsLink = (root: string) => join(root, 'etc/systemd/system/multi-user.target.wants/navarch-agent.service');

  function scratch(name: string) {
    const root = join(work, name);
    mkdirSync(root, { recursive: true });
    const calls = join(work, `${name}.calls`);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      TMPDIR: work,
      IMDS_ENDPOINT: imds.url,
      IMDS_DEADLINE_S: '60',
      SYSTEMCTL: makeRecorder(join(work, `${name}.systemctl`), calls, 'systemctl'),
      NPM: makeRecorder(join(work, `${name}.npm`), calls, 'npm'),
    };
    const callLines = () => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : []);
    return { root, env, callLines };
  }

  it('installs from the offline tarball: agent.env from IMDS, token, unit, service enabled, marker', async () => {
    const { root, env, callLines } = scratch('tarball');
    const cfg = join(work, 'bootstrap.env');
    writeFileSync(
      cfg,
      [
        '# settings',
        'NAVARCH_SERVER="http://navarch-cp.internal:50051"',
        'NAVARCH_POOL=train-h100',
        `BOOTSTRAP_TARBALL_URL=file://${tarball}`,
        `BOOTSTRAP_TARBALL_SHA256=${tarballSha}`,
        'NAVARCH_LOG_LEVEL=info',
        '',
      ].join('\n'),
    );
    const r = await runAsync('bash', [bootstrap, '--root', root, '--config', cfg], {
      env: { ...env, NAVARCH_AUTH_TOKEN: 'tok-123', NAVARCH_ALLOW_INSECURE: 'true', NAVARCH_LOG_LEVEL: 'debug' },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('instance i-0abc123def4567890 (p5.48xlarge) in us-west-2b');

    // IMDSv2: the token first, then every GET with it; no GET was ever refused.
    expect(imds.log[0]).toEqual({ method: 'PUT', path: '/latest/api/token', status: 200 });
    expect(imds.log.filter((l) => l.method === 'GET').map((l) => [l.path, l.status])).toEqual(Object.keys(IDENTITY).map((p) => [p, 200]));

    expect(readlinkSync(join(root, 'opt/navarch-agent/current'))).toBe('navarch-agent-0.1.0');
    expect(statSync(join(root, 'opt/navarch-agent/current/bin/navarch-agent')).mode & 0o111).not.toBe(0);
    const envText = readFileSync(join(root, 'etc/navarch-agent/agent.env'), 'utf8');
    for (const line of [
      'NAVARCH_SERVER="http://navarch-cp.internal:50051"',
      'NAVARCH_NODE_ID="i-0abc123def4567890"',
      'NAVARCH_PROVIDER="aws"',
      'NAVARCH_REGION="us-west-2"',
      'NAVARCH_ZONE="us-west-2b"',
      'NAVARCH_INSTANCE_TYPE="p5.48xlarge"',
      'NAVARCH_POOL="train-h100"',
      'NAVARCH_ALLOW_INSECURE="true"',
      'NAVARCH_LOG_LEVEL="debug"', // the environment wins over the config file
    ])
      expect(envText).toContain(`${line}\n`);
    expect(envText).not.toMatch(/tok-123|AUTH_TOKEN|BOOTSTRAP_/);
    expect(readFileSync(join(root, 'etc/navarch-agent/auth-token'), 'utf8')).toBe('tok-123');
    expect(statSync(join(root, 'etc/navarch-agent/auth-token')).mode & 0o777).toBe(0o600);
    const unit = readFileSync(join(root, 'etc/systemd/system/navarch-agent.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=\/opt\/navarch-agent\/current\/bin\/navarch-agent run --auth-token-file/m);
    // A scratch root is not the running system: install.sh enables by the WantedBy= link and
    // runs no systemctl (its live sequence is in systemd.test.ts); changed=1 means a restart there.
    expect(readlinkSync(wantsLink(root))).toBe('/etc/systemd/system/navarch-agent.service');
    expect(r.stderr).toContain('install.sh: done (changed=1)');
    expect(callLines()).toEqual([]);
    expect(readFileSync(join(root, 'var/lib/navarch-bootstrap/done'), 'utf8')).toMatch(/^instance-id=i-0abc123def4567890$/m);

    // Reboot: the same instance runs it again; the marker makes it a no-op.
    const again = await runAsync('bash', [bootstrap, '--root', root, '--config', cfg], { env });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain('already bootstrapped');
    expect(again.stderr).not.toContain('install.sh');

    // --force re-runs it; nothing changed, so the service is only started, not restarted.
    const forced = await runAsync('bash', [bootstrap, '--root', root, '--config', cfg, '--force'], {
      env: { ...env, NAVARCH_AUTH_TOKEN: 'tok-123', NAVARCH_ALLOW_INSECURE: 'true', NAVARCH_LOG_LEVEL: 'debug' },
    });
    expect(forced.status, forced.stderr).toBe(0);
    expect(forced.stderr).toContain('install.sh: done (changed=0)');
    expect(callLines()).toEqual([]);
  });

  it('installs the self-contained release on a host without Node.js, fetching no runtime', async () => {
    const { root, env, callLines } = scratch('self');
    const r = await runAsync('bash', [bootstrap, '--root', root], {
      env: { ...env, PATH: pathWithoutNode(join(work, 'self-tools')), NAVARCH_SERVER: 'https://cp.example', BOOTSTRAP_TARBALL_URL: `file://${selfContained}` },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`the release brings its own Node.js (${process.version})`);
    expect(r.stderr).not.toMatch(/installing Node\.js|using .*node/);
    expect(existsSync(join(root, 'opt/navarch-agent/node'))).toBe(false);
    expect(statSync(join(root, 'opt/navarch-agent/current/node/bin/node')).mode & 0o111).not.toBe(0);
    expect(readlinkSync(wantsLink(root))).toBe('/etc/systemd/system/navarch-agent.service');
    expect(callLines()).toEqual([]);
  });

  it('refuses a release whose bundled Node.js does not run here, leaving nothing installed', async () => {
    const { root, env, callLines } = scratch('wrongarch');
    const r = await runAsync('bash', [bootstrap, '--root', root], {
      env: { ...env, NAVARCH_SERVER: 'https://cp.example', BOOTSTRAP_TARBALL_URL: `file://${wrongArch}` },
    });
    expect(r.status).not.toBe(0);
    const host = process.arch === 'arm64' ? 'arm64' : 'x64';
    expect(r.stderr.trim().split('\n').at(-1)).toBe(
      `navarch-bootstrap: error: the release's bundled Node.js (node/bin/node) does not run on this ${process.arch === 'arm64' ? 'aarch64' : 'x86_64'} host: use the linux-${host} release`,
    );
    expect(readdirSync(join(root, 'opt/navarch-agent'))).toEqual([]);
    expect(callLines()).toEqual([]);
  });

  it('needs BOOTSTRAP_TARBALL_URL (or BOOTSTRAP_NPM_SPEC): one line, before any IMDS call', async () => {
    const { root, env, callLines } = scratch('nosource');
    const r = await runAsync('bash', [bootstrap, '--root', root], { env: { ...env, NAVARCH_SERVER: 'https://cp.example' } });
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim()).toBe(
      'navarch-bootstrap: error: BOOTSTRAP_TARBALL_URL is not set (the URL of the self-contained release, navarch-agent-<version>-linux-<arch>.tar.gz; or BOOTSTRAP_NPM_SPEC to install from an npm registry)',
    );
    expect(imds.log).toEqual([]);
    expect(callLines()).toEqual([]);
  });

  it('installs from the npm registry when BOOTSTRAP_NPM_SPEC is given (recorded npm)', async () => {
    const { root, env, callLines } = scratch('npm');
    const r = await runAsync('bash', [bootstrap, '--root', root], {
      env: { ...env, NAVARCH_SERVER: 'https://cp.example', BOOTSTRAP_NPM_SPEC: 'navarch-agent@0.1.0' },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(callLines()[0]).toBe(`npm install --global --prefix ${root}/opt/navarch-agent/npm --no-audit --no-fund --omit=dev navarch-agent@0.1.0`);
    const unit = readFileSync(join(root, 'etc/systemd/system/navarch-agent.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=\/opt\/navarch-agent\/npm\/lib\/node_modules\/navarch-agent\/deploy\/bin\/navarch-agent run/m);
    // No token: the no-token drop-in instead of an empty credential.
    expect(existsSync(join(root, 'etc/systemd/system/navarch-agent.service.d/50-no-token.conf'))).toBe(true);
    expect(readlinkSync(wantsLink(root))).toBe('/etc/systemd/system/navarch-agent.service');
    expect(callLines()).toHaveLength(1);
  });

  it('installs Node.js from BOOTSTRAP_NODE_TARBALL_URL for a release without node/ when no Node >= 20 is on PATH', async () => {
    const { root, env } = scratch('node');
    const tools = pathWithoutNode(join(work, 'node-tools'));
    // A Node.js tarball in nodejs.org's layout whose bin/node runs this test's node.
    const nodeStage = join(work, 'node-stage', 'node-v20.99.0-linux-x64', 'bin');
    mkdirSync(nodeStage, { recursive: true });
    writeFileSync(join(nodeStage, 'node'), `#!/bin/sh\nexec '${process.execPath}' "$@"\n`, { mode: 0o755 });
    const nodeTar = join(work, 'node-v20.99.0-linux-x64.tar.gz');
    expect(run('tar', ['-czf', nodeTar, '-C', join(work, 'node-stage'), 'node-v20.99.0-linux-x64']).status).toBe(0);
    const r = await runAsync('bash', [bootstrap, '--root', root], {
      env: {
        ...env,
        PATH: tools,
        NAVARCH_SERVER: 'https://cp.example',
        BOOTSTRAP_TARBALL_URL: `file://${tarball}`,
        BOOTSTRAP_NODE_TARBALL_URL: `file://${nodeTar}`,
        BOOTSTRAP_NODE_TARBALL_SHA256: createHash('sha256').update(readFileSync(nodeTar)).digest('hex'),
      },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`installing Node.js from file://${nodeTar}`);
    const installed = run(join(root, 'opt/navarch-agent/node/bin/node'), ['-p', 'process.versions.node.split(".")[0]']);
    expect(Number(installed.stdout.trim())).toBeGreaterThanOrEqual(20);
  });

  it('retries through IMDS errors and refreshes an expired token (401)', async () => {
    const { root, env } = scratch('retry');
    imds.failTokenPuts = 2;
    imds.expireAfterGets = 2;
    const r = await runAsync('bash', [bootstrap, '--root', root], {
      env: { ...env, NAVARCH_SERVER: 'https://cp.example', BOOTSTRAP_TARBALL_URL: `file://${tarball}` },
    });
    expect(r.status, r.stderr).toBe(0);
    const puts = imds.log.filter((l) => l.method === 'PUT').map((l) => l.status);
    expect(puts).toEqual([503, 503, 200, 200]);
    expect(imds.log.filter((l) => l.status === 401)).toHaveLength(1);
    expect(readFileSync(join(root, 'etc/navarch-agent/agent.env'), 'utf8')).toContain('NAVARCH_INSTANCE_TYPE="p5.48xlarge"');
  });

  it('fails with a clear message and non-zero exit when IMDS is unreachable, installing nothing', async () => {
    const { root, env, callLines } = scratch('noimds');
    const closed = createServer();
    await new Promise<void>((res) => closed.listen(0, '127.0.0.1', res));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((res) => closed.close(res));
    const r = await runAsync('bash', [bootstrap, '--root', root], {
      env: {
        ...env,
        NAVARCH_SERVER: 'https://cp.example',
        BOOTSTRAP_TARBALL_URL: `file://${tarball}`,
        IMDS_ENDPOINT: `http://127.0.0.1:${port}`,
        IMDS_DEADLINE_S: '3',
      },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(
      /^navarch-bootstrap: error: instance metadata \(IMDSv2 at http:\/\/127\.0\.0\.1:\d+\) unreachable: no answer for \/latest\/meta-data\/instance-id within 3s$/,
    );
    expect(existsSync(join(root, 'etc/systemd/system/navarch-agent.service'))).toBe(false);
    expect(existsSync(join(root, 'var/lib/navarch-bootstrap/done'))).toBe(false);
    expect(callLines()).toEqual([]);
  });

  it('fails before installing on a bad checksum, a missing server or a failing install', async () => {
    const { root, env, callLines } = scratch('bad');
    let r = await runAsync('bash', [bootstrap, '--root', root], {
      env: { ...env, NAVARCH_SERVER: 'https://cp.example', BOOTSTRAP_TARBALL_URL: `file://${tarball}`, BOOTSTRAP_TARBALL_SHA256: '0'.repeat(64) },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/checksum mismatch for file:\/\/.*: expected 0{64}, got [0-9a-f]{64}/);
    expect(existsSync(join(root, 'opt/navarch-agent/current'))).toBe(false);

    r = await runAsync('bash', [bootstrap, '--root', root], { env });
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim()).toBe('navarch-bootstrap: error: NAVARCH_SERVER is not set (the control plane URL, e.g. http://navarch-cp.internal:50051)');

    r = await runAsync('bash', [bootstrap, '--root', root], {
      env: { ...env, NAVARCH_SERVER: 'https://cp.example', BOOTSTRAP_TARBALL_URL: `file://${tarball}`, SYSUSERS: '/bin/false' },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/install\.sh: creating user navarch-agent with \/bin\/false failed/);
    expect(r.stderr, r.stderr).toMatch(/installing the service failed/);
    expect(existsSync(join(root, 'var/lib/navarch-bootstrap/done'))).toBe(false);
    expect(callLines()).toEqual([]);
  });
});
