/**
 * Atomic small-file write, off the JavaScript thread: write a temp file next to the target, fsync
 * it, rename it over the target, fsync the directory. A crash leaves the old file or the new one,
 * never half of either.
 */
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function writeFileAtomic(file: string, data: string, mode = 0o600): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dh = await open(dirname(file), 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
