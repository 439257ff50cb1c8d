/**
 * What every CLI command is handed: its output streams and environment (`CliIo`), and the
 * package's version. A module of its own so that cli.ts and the commands it loads lazily
 * (demo, doctor, dev control plane) do not import each other.
 */
import { FILE_LIMITS, readBoundedTextSync } from '../util/bounded-file.js';
import { fileURLToPath } from 'node:url';

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: NodeJS.ProcessEnv;
  /** stdout is a terminal (status --watch redraws in place only then). */
  isTTY?: boolean;
}

export const defaultIo: CliIo = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  env: process.env,
  isTTY: process.stdout.isTTY === true,
};

/** The version in the package.json next to dist/ (or src/); "0.0.0" when it cannot be read. */
export function packageVersion(): string {
  try {
    const p = fileURLToPath(new URL('../../package.json', import.meta.url));
    return (JSON.parse(readBoundedTextSync(p, FILE_LIMITS.config)) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}
