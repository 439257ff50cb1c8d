// Packaging end to end: prebuild.sh (x64 + cross-compiled arm64), an npm pack tarball that
// installs with no compiler, and release.sh's self-contained tarballs (with their own Node.js),
// run and installed by the EC2 bootstrap on a host without Node.js.
// Slow (compiles the addon twice); everything runs in scratch directories.
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeImds, have, makeRecorder, pathWithoutNode, repoRoot, run, runAsync } from './helpers.js';

const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
const missing = [
  !existsSync(join(repoRoot, 'native/addon.cc')) && 'native/addon.cc',
  !have('aarch64-linux-gnu-g++') && 'aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu)',
  !have('file') && 'file',
  !have('objdump') && 'objdump',
].filter(Boolean);
if (missing.length) console.warn(`[skip] package tests: missing ${missing.join(', ')}`);
const hasDist = existsSync(join(repoRoot, 'dist/cli/main.js'));
if (!hasDist) console.warn('[skip] release tarball test: dist/cli/main.js missing (npm run build:ts)');

/** "2.34" > "2.4": compare dotted versions numerically. */
function versionLe(a: string, b: string): boolean {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x < y;
  }
  return true;
}

function maxVersion(objdump: string, file: string, prefix: string): string {
  const r = run(objdump, ['-T', file]);
  expect(r.status, r.stderr).toBe(0);
  const vs = [...r.stdout.matchAll(new RegExp(`\\b${prefix}_([0-9][0-9.]*)`, 'g'))].map((m) => m[1]!.replace(/\.$/, ''));
  return vs.reduce((hi, v) => (versionLe(hi, v) ? v : hi), '0');
}

describe.skipIf(missing.length > 0)('packaging', { timeout: 600_000 }, () => {
  let work: string;
  let prebuilds: string;
  let prebuildOut = '';

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'navarch-pkg-'));
    prebuilds = join(work, 'prebuilds');
    const r = run('bash', [join(repoRoot, 'scripts/prebuild.sh'), '--out', prebuilds], { timeoutMs: 1_500_000 });
    prebuildOut = r.stdout;
    expect(r.status, r.stderr.slice(-3000)).toBe(0);
  }, 1_600_000);
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('prebuild.sh makes an x86-64 and an aarch64 Node-API build needing glibc <= 2.34, GLIBCXX <= 3.4.29', () => {
    console.log(prebuildOut.trim());
    const cases = [
      { arch: 'x64', elf: /ELF 64-bit LSB shared object, x86-64/, objdump: 'objdump' },
      {
        arch: 'arm64',
        elf: /ELF 64-bit LSB shared object, ARM aarch64/,
        objdump: have('aarch64-linux-gnu-objdump', ['--version']) ? 'aarch64-linux-gnu-objdump' : 'objdump',
      },
    ];
    for (const c of cases) {
      expect(readdirSync(join(prebuilds, `linux-${c.arch}`))).toEqual(['node.napi.glibc.node']);
      const f = join(prebuilds, `linux-${c.arch}/node.napi.glibc.node`);
      expect(run('file', ['-b', f]).stdout).toMatch(c.elf);
      const glibc = maxVersion(c.objdump, f, 'GLIBC');
      const glibcxx = maxVersion(c.objdump, f, 'GLIBCXX');
      console.log(`linux-${c.arch}: GLIBC_${glibc} GLIBCXX_${glibcxx}`);
      expect(versionLe(glibc, '2.34'), `GLIBC_${glibc}`).toBe(true);
      expect(versionLe(glibcxx, '3.4.29'), `GLIBCXX_${glibcxx}`).toBe(true);
      expect(prebuildOut).toContain(`linux-${c.arch}:`);
    }
  });

  /** A scratch copy of the package whose `prepare` (the TypeScript build) is left out. */
  function packSource(name: string): string {
    const pkg = join(work, name);
    mkdirSync(join(pkg, 'native'), { recursive: true });
    const json = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    delete json.scripts.prepare;
    writeFileSync(join(pkg, 'package.json'), JSON.stringify(json, null, 2));
    cpSync(join(repoRoot, 'binding.gyp'), join(pkg, 'binding.gyp'));
    for (const d of ['systemd', 'deploy', 'scripts']) cpSync(join(repoRoot, d), join(pkg, d), { recursive: true });
    for (const f of readdirSync(join(repoRoot, 'native'))) if (/\.(cc|h)$/.test(f)) cpSync(join(repoRoot, 'native', f), join(pkg, 'native', f));
    symlinkSync(join(repoRoot, 'node_modules'), join(pkg, 'node_modules'));
    return pkg;
  }
  /** The prepack lines that are not "ok": the failure, if any. */
  const prepackErrors = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('prepack: ') && !l.endsWith(' ok'));

  it('prepack collects both prebuilds, so `npm pack --dry-run --json` lists them', () => {
    const pkg = packSource('prepack-ok');
    const r = run('npm', ['pack', '--dry-run', '--json'], { cwd: pkg, env: { ...process.env, NAVARCH_PREBUILDS_DIR: prebuilds } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('prepack: prebuilds/linux-x64/node.napi.glibc.node ok');
    expect(r.stderr).toContain('prepack: prebuilds/linux-arm64/node.napi.glibc.node ok');
    const paths = (JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
    expect(paths).toEqual(expect.arrayContaining(['prebuilds/linux-x64/node.napi.glibc.node', 'prebuilds/linux-arm64/node.napi.glibc.node']));
    for (const arch of ['x64', 'arm64']) {
      expect(readFileSync(join(pkg, `prebuilds/linux-${arch}/node.napi.glibc.node`))).toEqual(
        readFileSync(join(prebuilds, `linux-${arch}/node.napi.glibc.node`)),
      );
    }
  });

  it('prepack fails the pack with one line when a prebuild is missing or built for the wrong arch', () => {
    // Only x64 available and no arm64 cross compiler: prebuild.sh cannot make the arm64 one.
    const only = join(work, 'only-x64');
    mkdirSync(join(only, 'linux-x64'), { recursive: true });
    cpSync(join(prebuilds, 'linux-x64/node.napi.glibc.node'), join(only, 'linux-x64/node.napi.glibc.node'));
    let pkg = packSource('prepack-missing');
    let r = run('npm', ['pack', '--dry-run', '--json'], {
      cwd: pkg,
      env: { ...process.env, NAVARCH_PREBUILDS_DIR: only, CROSS_PREFIX_ARM64: 'no-such-cross-' },
    });
    expect(r.status).not.toBe(0);
    let errs = prepackErrors(r.stderr);
    expect(errs, r.stderr).toHaveLength(1);
    expect(errs[0]).toMatch(
      /^prepack: prebuilds\/linux-arm64\/node\.napi\.glibc\.node is missing and scripts\/prebuild\.sh could not build it: .*no-such-cross-g\+\+ not found/,
    );
    expect(existsSync(join(pkg, 'prebuilds/linux-arm64'))).toBe(false);

    // An x86-64 binary where the arm64 one belongs.
    const wrong = join(work, 'wrong-arch');
    for (const arch of ['x64', 'arm64']) {
      mkdirSync(join(wrong, `linux-${arch}`), { recursive: true });
      cpSync(join(prebuilds, 'linux-x64/node.napi.glibc.node'), join(wrong, `linux-${arch}/node.napi.glibc.node`));
    }
    pkg = packSource('prepack-wrong');
    r = run('npm', ['pack', '--dry-run', '--json'], { cwd: pkg, env: { ...process.env, NAVARCH_PREBUILDS_DIR: wrong } });
    expect(r.status).not.toBe(0);
    errs = prepackErrors(r.stderr);
    expect(errs, r.stderr).toEqual([
      'prepack: prebuilds/linux-arm64/node.napi.glibc.node: built for ELF machine 0x3e, not arm64 (rebuild it with scripts/prebuild.sh --arch arm64)',
    ]);
  });

  it('npm pack carries the prebuilds and the package installs on a host without a compiler', () => {
    // A scratch copy of the package (npm pack with scripts off: no prepare/build in the checkout).
    const pkg = join(work, 'pkgsrc');
    mkdirSync(join(pkg, 'native'), { recursive: true });
    for (const f of ['package.json', 'binding.gyp']) cpSync(join(repoRoot, f), join(pkg, f));
    for (const d of ['systemd', 'deploy', 'scripts']) cpSync(join(repoRoot, d), join(pkg, d), { recursive: true });
    for (const f of readdirSync(join(repoRoot, 'native'))) if (/\.(cc|h)$/.test(f)) cpSync(join(repoRoot, 'native', f), join(pkg, 'native', f));
    cpSync(prebuilds, join(pkg, 'prebuilds'), { recursive: true });
    const packed = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: pkg });
    expect(packed.status, packed.stderr).toBe(0);
    const info = (JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>)[0]!;
    const paths = info.files.map((f) => f.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'prebuilds/linux-x64/node.napi.glibc.node',
        'prebuilds/linux-arm64/node.napi.glibc.node',
        'scripts/install-addon.mjs',
        'binding.gyp',
        'native/sd_notify.cc',
        'systemd/navarch-agent.service',
        'systemd/install.sh',
        'deploy/ec2/bootstrap.sh',
        'deploy/bin/navarch-agent',
      ]),
    );

    // "Install" it: unpack as node_modules/navarch-agent with its dependency node-gyp-build, then
    // run the install hook with no compiler on PATH and a node-gyp that cannot run.
    const app = join(work, 'app');
    const dest = join(app, 'node_modules/navarch-agent');
    mkdirSync(dest, { recursive: true });
    expect(run('tar', ['-xzf', join(work, info.filename), '-C', dest, '--strip-components=1']).status).toBe(0);
    symlinkSync(join(repoRoot, 'node_modules/node-gyp-build'), join(app, 'node_modules/node-gyp-build'));
    // The launcher the EC2 bootstrap's unit runs for npm installs keeps its exec bit.
    expect(statSync(join(dest, 'deploy/bin/navarch-agent')).mode & 0o111).not.toBe(0);
    const bin = join(work, 'nocc-bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    const env = { PATH: bin, HOME: work, NAVARCH_REQUIRE_ADDON: '1', npm_config_node_gyp: join(work, 'no-node-gyp.js') };
    let r = run(process.execPath, ['scripts/install-addon.mjs'], { cwd: dest, env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(existsSync(join(dest, 'build'))).toBe(false);
    r = run(process.execPath, ['-e', 'const m = require("node-gyp-build")(process.argv[1]); process.stdout.write(typeof m.sdNotify)', dest], { cwd: app, env });
    expect(r.stdout, r.stderr).toBe('function');

    // A broken prebuild and no compiler: a clear failure under NAVARCH_REQUIRE_ADDON=1.
    writeFileSync(join(dest, 'prebuilds/linux-x64/node.napi.glibc.node'), 'not an ELF');
    r = run(process.execPath, ['scripts/install-addon.mjs'], { cwd: dest, env });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no usable prebuilt addon/);
    expect(r.stderr).toMatch(/building the NVML addon failed; only the fake GPU backend will work \(NAVARCH_REQUIRE_ADDON=1\)/);
  });

  it.skipIf(!hasDist)(
    'release.sh builds self-contained tarballs that run, and the EC2 bootstrap installs, on a host without Node.js',
    async () => {
      const out = join(work, 'release');
      const r = run(
        'bash',
        [join(repoRoot, 'scripts/release.sh'), '--arch', 'x64', '--arch', 'arm64', '--skip-build', '--prebuilds', prebuilds, '--out', out],
        { timeoutMs: 900_000 },
      );
      expect(r.status, r.stderr).toBe(0);
      const pinned = /^release (\S+)$/m.exec(readFileSync(join(repoRoot, 'scripts/node-runtimes.txt'), 'utf8'))![1]!;
      expect(r.stderr).toContain(`smoke test passed (version ${version}, bundled Node.js v${pinned})`);
      const top = `navarch-agent-${version}/`;
      for (const [arch, elf, other] of [
        ['x64', /ELF 64-bit LSB executable, x86-64/, 'arm64'],
        ['arm64', /ELF 64-bit LSB executable, ARM aarch64/, 'x64'],
      ] as const) {
        const name = `navarch-agent-${version}-linux-${arch}.tar.gz`;
        const tarball = join(out, name);
        const sum = createHash('sha256').update(readFileSync(tarball)).digest('hex');
        expect(readFileSync(`${tarball}.sha256`, 'utf8')).toBe(`${sum}  ${name}\n`);
        const list = run('tar', ['-tzf', tarball]).stdout.split('\n');
        expect(list).toEqual(
          expect.arrayContaining([
            `${top}bin/navarch-agent`,
            `${top}node/bin/node`,
            `${top}node/LICENSE`,
            `${top}dist/cli/main.js`,
            `${top}prebuilds/linux-${arch}/node.napi.glibc.node`,
            `${top}node_modules/pino/package.json`,
            `${top}node_modules/node-gyp-build/package.json`,
            `${top}systemd/install.sh`,
            `${top}deploy/ec2/bootstrap.sh`,
            `${top}deploy/navarch/navarch-default-policy.yaml`,
            `${top}package.json`,
          ]),
        );
        expect(list.filter((p) => /node_modules\/(vitest|typescript|@bufbuild\/buf|fast-check|node-gyp)\//.test(p))).toEqual([]);
        expect(list.filter((p) => p.includes(`prebuilds/linux-${other}`))).toEqual([]);
        const unpacked = join(work, `unpacked-${arch}`);
        mkdirSync(unpacked);
        expect(run('tar', ['-xzf', tarball, '-C', unpacked, `${top}node/bin/node`]).status).toBe(0);
        expect(run('file', ['-b', join(unpacked, top, 'node/bin/node')]).stdout).toMatch(elf);
      }

      // Unpacked on a host whose PATH has no node: the launcher runs the bundled one.
      const tarball = join(out, `navarch-agent-${version}-linux-x64.tar.gz`);
      const host = join(work, 'host');
      mkdirSync(host);
      expect(run('tar', ['-xzf', tarball, '-C', host]).status).toBe(0);
      const noNode = { PATH: pathWithoutNode(join(work, 'no-node-bin')), HOME: work, TMPDIR: work };
      expect(run('sh', ['-c', 'command -v node'], { env: noNode }).status).not.toBe(0);
      const agent = join(host, top, 'bin/navarch-agent');
      let v = run(agent, ['--version'], { env: noNode });
      expect(v.status, v.stderr).toBe(0);
      expect(v.stdout.trim()).toBe(version);
      // doctor: every check runs (the fake backend, no kernel log, a closed control-plane port).
      const doctor = run(
        agent,
        ['doctor', '--gpu-backend', 'fake', '--kmsg-path', 'none', '--state-dir', join(work, 'doctor-state'), '--server', 'http://127.0.0.1:9'],
        { env: noNode },
      );
      expect(doctor.status, doctor.stdout + doctor.stderr).toBe(1);
      expect(doctor.stdout).toMatch(/fake backend/);
      expect(doctor.stdout).toMatch(/control plane: http:\/\/127\.0\.0\.1:9 unreachable/);
      // A short run: the demo's control plane and agent over loopback HTTP, then its summary.
      const demo = run(agent, ['demo', '--duration', '3s'], { env: noNode, timeoutMs: 60_000 });
      expect(demo.status, demo.stdout + demo.stderr).toBe(0);
      expect(demo.stdout).toMatch(/demo-node-1 ACTIVE/);

      // The bootstrap installs the real tarball on that host; the installed launcher runs the agent.
      const imds = new FakeImds();
      await imds.start();
      try {
        const root = join(work, 'root');
        mkdirSync(root);
        const calls = join(work, 'calls.log');
        const sum = createHash('sha256').update(readFileSync(tarball)).digest('hex');
        const b = await runAsync('bash', [join(repoRoot, 'deploy/ec2/bootstrap.sh'), '--root', root], {
          env: {
            ...noNode,
            IMDS_ENDPOINT: imds.url,
            IMDS_DEADLINE_S: '60',
            NAVARCH_SERVER: 'https://cp.example',
            BOOTSTRAP_TARBALL_URL: `file://${tarball}`,
            BOOTSTRAP_TARBALL_SHA256: sum,
            SYSTEMCTL: makeRecorder(join(work, 'systemctl'), calls, 'systemctl'),
          },
          timeoutMs: 300_000,
        });
        expect(b.status, b.stderr).toBe(0);
        expect(b.stderr).toContain(`the release brings its own Node.js (v${pinned})`);
        v = run(join(root, 'opt/navarch-agent/current/bin/navarch-agent'), ['--version'], { env: noNode });
        expect(v.status, v.stderr).toBe(0);
        expect(v.stdout.trim()).toBe(version);
        // A scratch root is not the running system: enabled by its WantedBy= link, systemctl never run.
        expect(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/navarch-agent.service'))).toBe('/etc/systemd/system/navarch-agent.service');
        expect(existsSync(calls)).toBe(false);
      } finally {
        await imds.stop();
      }
    },
    900_000,
  );
});
