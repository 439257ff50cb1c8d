/**
 * The one way the agent reads an input file (config, token, scenario, PEM bundles, its own
 * markers): opened with O_NONBLOCK so a FIFO without a writer never blocks, checked with fstat to
 * be a regular file (not /dev/zero, a FIFO, a socket or a directory), and read up to a size limit,
 * so /dev/urandom or a 100 MB file cannot take the memory. Every failure is a BoundedFileError with
 * a one-line reason that names no file content.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';

/** Limits per kind of file (bytes). Each is far above a sane file of its kind. */
export const FILE_LIMITS = {
  /** --config (YAML or JSON). */
  config: 1024 * 1024,
  /** --auth-token-file and $CREDENTIALS_DIRECTORY/auth-token. */
  token: 64 * 1024,
  /** --scenario (the fake backend's fault script). */
  scenario: 1024 * 1024,
  /** --ca-file, --client-cert, --client-key (a full system CA bundle is about 220 KiB). */
  pem: 4 * 1024 * 1024,
  /** Small JSON files the agent writes itself into its state directory. */
  state: 64 * 1024,
} as const;

export class BoundedFileError extends Error {
  override name = 'BoundedFileError';
  constructor(
    message: string,
    /** errno code when the failure came from the OS (ENOENT, EACCES, ...). */
    readonly code?: string,
  ) {
    super(message);
  }
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a plain file';
}

function osReason(err: unknown): BoundedFileError {
  const code = (err as NodeJS.ErrnoException).code;
  const text =
    code === 'ENOENT'
      ? 'no such file'
      : code === 'EACCES' || code === 'EPERM'
        ? 'permission denied'
        : code === 'ENOTDIR'
          ? 'a path component is not a directory'
          : code === 'ELOOP'
            ? 'too many symbolic links'
            : (code ?? (err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err)));
  return new BoundedFileError(text, code);
}

/**
 * Reads a whole regular file of at most `maxBytes` bytes. Throws BoundedFileError ("no such file",
 * "a FIFO, not a regular file", "larger than 1048576 bytes") without blocking on a FIFO or reading
 * more than maxBytes + 1 bytes of anything.
 */
export function readBoundedFileSync(path: string, maxBytes: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    throw osReason(err);
  }
  try {
    let st: Stats;
    try {
      st = fstatSync(fd);
    } catch (err) {
      throw osReason(err);
    }
    if (!st.isFile()) throw new BoundedFileError(`${kindOf(st)}, not a regular file`);
    if (st.size > maxBytes) throw new BoundedFileError(`larger than ${maxBytes} bytes (${st.size} bytes)`);
    // The size may change under us (a file being written): read at most maxBytes + 1 to tell.
    const buf = Buffer.allocUnsafe(Math.min(maxBytes + 1, Math.max(st.size + 1, 4096)));
    let out = buf;
    let len = 0;
    for (;;) {
      if (len === out.length) {
        if (out.length > maxBytes) break;
        const bigger = Buffer.allocUnsafe(Math.min(maxBytes + 1, out.length * 2));
        out.copy(bigger, 0, 0, len);
        out = bigger;
      }
      let n: number;
      try {
        n = readSync(fd, out, len, out.length - len, null);
      } catch (err) {
        throw osReason(err);
      }
      if (n === 0) break;
      len += n;
    }
    if (len > maxBytes) throw new BoundedFileError(`larger than ${maxBytes} bytes`);
    return out.subarray(0, len);
  } finally {
    closeSync(fd);
  }
}

/** readBoundedFileSync as UTF-8 text. */
export function readBoundedTextSync(path: string, maxBytes: number): string {
  return readBoundedFileSync(path, maxBytes).toString('utf8');
}
