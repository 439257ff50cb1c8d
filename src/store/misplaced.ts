/**
 * A store path holding the wrong kind of thing (a directory where `events.log` or `events.lock`
 * should be, a file where the store directory should be, a FIFO that would block a read) is
 * moved aside, to `<name>.misplaced-<time>`, with a log line, so the agent starts instead of
 * exiting: nothing is deleted, an operator can look at it later.
 */
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { EventStoreError } from './errors.js';

export type Want = 'file' | 'dir';

function kindOf(st: fs.Stats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  if (st.isSymbolicLink()) return 'dangling symbolic link';
  return 'device';
}

/** `<path>.misplaced-<UTC time>` (colons and dots replaced, so the name is portable). */
export function misplacedName(p: string, nowMs: number): string {
  return `${p}.misplaced-${new Date(nowMs).toISOString().replace(/[:.]/g, '-')}`;
}

/**
 * Move `p` aside when it exists and is not a `want` (a symbolic link counts as what it points
 * to). Returns the new name, or null when nothing was moved.
 */
export function moveAsideUnless(p: string, want: Want, log: Logger | undefined, nowMs: number): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    try {
      st = fs.lstatSync(p); // a dangling link: nothing usable behind it
    } catch {
      return null; // missing: created as needed
    }
    if (want === 'file') return null; // O_CREAT writes through a dangling link; leave it be
  }
  if (want === 'file' ? st.isFile() : st.isDirectory()) return null;
  let to = misplacedName(p, nowMs);
  for (let i = 1; fs.existsSync(to); i++) to = `${misplacedName(p, nowMs)}-${i}`;
  try {
    fs.renameSync(p, to);
  } catch (e) {
    throw new EventStoreError(
      `event store: ${p} is a ${kindOf(st)}, not a ${want === 'file' ? 'file' : 'directory'}, and cannot be moved aside: ${(e as Error).message}`,
      'IO',
      { cause: e },
    );
  }
  log?.warn(
    { path: p, found: kindOf(st), movedTo: to },
    `event store: a ${kindOf(st)} was where a ${want === 'file' ? 'file' : 'directory'} belongs; moved aside`,
  );
  return to;
}
