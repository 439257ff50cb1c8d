/**
 * Compiles the store (and what it imports) to plain JS in a temp dir, so child processes can
 * run the real code with plain `node` (crash tests kill them with SIGKILL).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(import.meta.dirname, '../..');

export function compileForChild(entries: string[]): string {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'store-js-'));
  execFileSync(
    process.execPath,
    [
      path.join(root, 'node_modules/typescript/bin/tsc'),
      '--outDir',
      out,
      '--rootDir',
      path.join(root, 'src'),
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--target',
      'ES2022',
      '--skipLibCheck',
      '--types',
      'node',
      '--strict',
      ...entries.map((e) => path.join(root, e)),
    ],
    { stdio: 'pipe', timeout: 180_000 },
  );
  // ESM output needs a package.json saying so
  fs.writeFileSync(path.join(out, 'package.json'), '{"type":"module"}\n');
  return out;
}
