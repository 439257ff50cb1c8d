// Every tracked shell script under scripts/, systemd/ and deploy/ passes shellcheck.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { have, repoRoot, run } from './helpers.js';

const hasShellcheck = have('shellcheck');
if (!hasShellcheck) console.warn('[skip] shellcheck: not installed (apt-get install shellcheck)');

function shellScripts(): string[] {
  const ls = run('git', ['ls-files', '-z', '--', 'scripts', 'systemd', 'deploy']);
  if (ls.status !== 0) throw new Error(`git ls-files failed: ${ls.stderr}`);
  return ls.stdout
    .split('\0')
    .filter(Boolean)
    .filter((f) => {
      if (f.endsWith('.sh')) return true;
      const head = readFileSync(join(repoRoot, f), 'utf8').slice(0, 64);
      return /^#!\s*\/(usr\/)?bin\/(env\s+)?(ba)?sh\b/.test(head);
    });
}

describe.skipIf(!hasShellcheck)('shellcheck', { timeout: 180_000 }, () => {
  it('passes on every shell script in scripts/, systemd/, deploy/', () => {
    const files = shellScripts();
    expect(files).toEqual(expect.arrayContaining(['systemd/install.sh', 'systemd/uninstall.sh', 'deploy/ec2/bootstrap.sh']));
    const r = run('shellcheck', ['--format=gcc', '--external-sources', ...files]);
    expect(r.stdout + r.stderr, `shellcheck ${files.join(' ')}`).toBe('');
    expect(r.status).toBe(0);
  });
});
