#!/usr/bin/env node
// npm "prepack" hook: the package must carry both prebuilt addons,
// prebuilds/linux-x64/node.napi.glibc.node and prebuilds/linux-arm64/node.napi.glibc.node, so a
// host without a compiler (and `npm i -g` under npm 11, which skips install scripts that
// `allowScripts` does not cover) still gets the NVML addon. For each arch that is missing it
// copies the file from $NAVARCH_PREBUILDS_DIR (prebuilds made elsewhere, e.g. a CI artifact) or
// builds it with scripts/prebuild.sh (log in build/prepack-<arch>.log). Every file is checked to
// be an ELF shared object for its machine. Anything missing or wrong fails the pack with one line.
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const FILE = 'node.napi.glibc.node';
/** ELF e_machine of each arch's prebuild. */
const MACHINE = { x64: 0x3e, arm64: 0xb7 };

function fail(msg) {
  console.error(`prepack: ${msg}`);
  process.exit(1);
}

/** null when `file` is a 64-bit little-endian ELF shared object for `arch`, else why not. */
function elfProblem(file, arch) {
  const buf = Buffer.alloc(20);
  const fd = openSync(file, 'r');
  let n;
  try {
    n = readSync(fd, buf, 0, buf.length, 0);
  } finally {
    closeSync(fd);
  }
  if (n < 20 || buf.readUInt32BE(0) !== 0x7f454c46) return 'not an ELF file';
  if (buf[4] !== 2 || buf[5] !== 1) return 'not a 64-bit little-endian ELF';
  if (buf.readUInt16LE(16) !== 3) return 'not a shared object';
  const machine = buf.readUInt16LE(18);
  if (machine !== MACHINE[arch]) return `built for ELF machine 0x${machine.toString(16)}, not ${arch}`;
  return null;
}

const fromDir = process.env.NAVARCH_PREBUILDS_DIR;
for (const arch of Object.keys(MACHINE)) {
  const dest = join(root, 'prebuilds', `linux-${arch}`, FILE);
  const rel = relative(root, dest);
  if (!existsSync(dest) && fromDir) {
    const src = join(fromDir, `linux-${arch}`, FILE);
    if (existsSync(src)) {
      mkdirSync(dirname(dest), { recursive: true });
      copyFileSync(src, dest);
    }
  }
  if (!existsSync(dest)) {
    const log = join(root, 'build', `prepack-${arch}.log`);
    mkdirSync(dirname(log), { recursive: true });
    const r = spawnSync('bash', [join(root, 'scripts/prebuild.sh'), '--arch', arch, '--out', join(root, 'prebuilds')], {
      cwd: root,
      encoding: 'utf8',
      timeout: 900_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    writeFileSync(log, `${r.stdout ?? ''}${r.stderr ?? ''}`);
    if (r.status !== 0 || !existsSync(dest)) {
      const why = (r.stderr ?? '').trim().split('\n').at(-1) || (r.error ? r.error.message : `exit ${r.status}`);
      fail(
        `${rel} is missing and scripts/prebuild.sh could not build it: ${why} (log ${relative(root, log)}; or set NAVARCH_PREBUILDS_DIR to a directory with linux-${arch}/${FILE})`,
      );
    }
  }
  const bad = elfProblem(dest, arch);
  if (bad) fail(`${rel}: ${bad} (rebuild it with scripts/prebuild.sh --arch ${arch})`);
  console.error(`prepack: ${rel} ok`);
}
