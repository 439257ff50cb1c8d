/**
 * The event store's lock: one process per store directory, and a lock a dead holder can never
 * keep.
 *
 * Two ways, chosen at open:
 * - `flock` (whenever the native addon loads): `events.lock` is opened and locked with flock(2)
 *   (`tryFlock` in native/flock.cc). The kernel releases the lock when its holder exits or dies,
 *   so whatever pid the file names, a lock nobody holds is free: a pid reused after a crash or a
 *   container restart cannot block the store. The file still names its holder (`pid boot-id
 *   start-time`) for the error message.
 * - `pidfile` (without the addon, e.g. the fake and none backends on a machine without a build):
 *   the file is created with O_EXCL and names `pid boot-id start-time`. A lock is stale when its
 *   boot id is not this boot's, when its pid is dead, or when that pid's start time (field 22 of
 *   /proc/<pid>/stat) differs from the one recorded (the pid was reused). A lock in an older
 *   format (without start time) naming a live pid of this boot still holds.
 *
 * A `flock` opener takes over a file whose flock is free even if it names a live process; a
 * `pidfile` holder never flocks, so the two ways exclude each other only when both processes use
 * the same one (they do when they are the same installation).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { loadAddon } from '../nvml/binding.js';
import { EventStoreError, errCode } from './errors.js';
import { readBootId } from '../host/boot-id.js';

export const LOCK_NAME = 'events.lock';

export type LockKind = 'flock' | 'pidfile';
/** LOCK_EX | LOCK_NB on fd: true when it now holds the lock, false when another file does. */
export type TryFlock = (fd: number) => boolean;

export interface LockOptions {
  /** The flock call; `null` forces the pid-file lock; default: the native addon's, when it loads. */
  tryFlock?: TryFlock | null;
  logger?: Logger;
}

/** Directories (real paths) with a store open in this process. */
const OPEN_DIRS = new Set<string>();

let kernelBoot: string | undefined;
/** This boot's id (the real one: a store's bootId option may be overridden in tests). */
export function kernelBootId(): string {
  kernelBoot ??= readBootId();
  return kernelBoot;
}

/** Start time of a process (clock ticks after boot, /proc/<pid>/stat field 22); null when unknown. */
export function processStartTime(pid: number | 'self'): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const v = rest[19];
    return v !== undefined && /^[0-9]+$/.test(v) ? v : null;
  } catch {
    return null;
  }
}

let addonFlock: TryFlock | null | undefined;
function defaultTryFlock(): TryFlock | null {
  if (addonFlock === undefined) {
    const load = loadAddon();
    const fn = load.ok ? (load.addon as unknown as { tryFlock?: unknown }).tryFlock : undefined;
    addonFlock = typeof fn === 'function' ? (fn as TryFlock) : null;
  }
  return addonFlock;
}

interface Holder {
  pid: number;
  bootId: string | undefined;
  startTime: string | undefined;
}

function parseHolder(text: string): Holder {
  const [pidText, bootId, startTime] = text.trim().split(/\s+/);
  return { pid: Number.parseInt(pidText ?? '', 10), bootId, startTime };
}

function holderLine(): string {
  return `${process.pid} ${kernelBootId()} ${processStartTime('self') ?? '-'}\n`;
}

function readHolder(lockPath: string): Holder {
  try {
    return parseHolder(fs.readFileSync(lockPath, 'utf8').slice(0, 256));
  } catch {
    return { pid: Number.NaN, bootId: undefined, startTime: undefined };
  }
}

/** Whether a pid-file holder may still hold the store. */
function holderAlive(h: Holder): boolean {
  // A lock of another boot is stale whatever its pid: after a reboot that pid may well belong
  // to an unrelated process, which would keep the agent from ever opening its store.
  if (h.bootId !== undefined && h.bootId !== kernelBootId() && kernelBootId() !== 'unknown') return false;
  if (!Number.isInteger(h.pid) || h.pid <= 0 || h.pid === process.pid) return false;
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    if (errCode(e) !== 'EPERM') return false;
  }
  // Alive: the same process only if it started when the holder did (a reused pid did not).
  if (h.startTime !== undefined && h.startTime !== '-') {
    const now = processStartTime(h.pid);
    if (now !== null && now !== h.startTime) return false;
  }
  return true;
}

/**
 * The pid of the live process that holds the store under `dir` (as its lock file names it and
 * holderAlive judges it), else null. Read-only: for `status` when the agent's API does not answer.
 */
export function storeHolderPid(dir: string): number | null {
  const h = readHolder(path.join(dir, LOCK_NAME));
  return holderAlive(h) ? h.pid : null;
}

export class StoreLock {
  private released = false;

  private constructor(
    readonly kind: LockKind,
    private readonly realDir: string,
    private readonly lockPath: string,
    /** The locked open file (flock only). */
    private readonly fd: number | null,
  ) {}

  /** Take the lock of `dir` (which must exist), or throw EventStoreError LOCKED / IO. */
  static acquire(dir: string, opts: LockOptions = {}): StoreLock {
    const lockPath = path.join(dir, LOCK_NAME);
    const real = fs.realpathSync(dir);
    if (OPEN_DIRS.has(real)) throw new EventStoreError(`event store: ${dir} is in use by process ${process.pid} (this process)`, 'LOCKED');
    const tryFlock = opts.tryFlock === undefined ? defaultTryFlock() : opts.tryFlock;
    const lock = tryFlock ? StoreLock.byFlock(dir, real, lockPath, tryFlock, opts.logger) : StoreLock.byPidFile(dir, real, lockPath);
    OPEN_DIRS.add(real);
    return lock;
  }

  private static byFlock(dir: string, real: string, lockPath: string, tryFlock: TryFlock, log: Logger | undefined): StoreLock {
    for (let attempt = 0; attempt < 4; attempt++) {
      let fd: number;
      try {
        fd = fs.openSync(lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
      } catch (e) {
        throw new EventStoreError(`event store: cannot open lock ${lockPath}: ${(e as Error).message}`, 'IO', { cause: e });
      }
      let ok = false;
      try {
        if (!tryFlock(fd)) {
          const h = readHolder(lockPath);
          throw new EventStoreError(`event store: ${dir} is in use by process ${Number.isInteger(h.pid) ? h.pid : 'unknown'}`, 'LOCKED');
        }
        // A holder removes the file while it still holds the lock (release below): the file we
        // locked must still be the one at the path, or another opener may lock a new one.
        let same = false;
        try {
          const a = fs.fstatSync(fd);
          const b = fs.statSync(lockPath);
          same = a.ino === b.ino && a.dev === b.dev;
        } catch (e) {
          if (errCode(e) !== 'ENOENT') throw e;
        }
        if (!same) continue;
        const before = parseHolder(fs.readFileSync(fd, 'utf8').slice(0, 256));
        if (Number.isInteger(before.pid) && before.pid > 0 && before.pid !== process.pid) {
          log?.info({ dir, pid: before.pid, bootId: before.bootId }, 'event store: lock file named a process that no longer holds its lock; taken over');
        }
        const line = Buffer.from(holderLine());
        fs.ftruncateSync(fd, 0);
        fs.writeSync(fd, line, 0, line.length, 0);
        ok = true;
        return new StoreLock('flock', real, lockPath, fd);
      } catch (e) {
        if (e instanceof EventStoreError) throw e;
        throw new EventStoreError(`event store: cannot lock ${lockPath}: ${(e as Error).message}`, 'IO', { cause: e });
      } finally {
        if (!ok) fs.closeSync(fd);
      }
    }
    throw new EventStoreError(`event store: cannot take lock ${lockPath} (it kept being replaced)`, 'LOCKED');
  }

  private static byPidFile(dir: string, real: string, lockPath: string): StoreLock {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(lockPath, holderLine(), { flag: 'wx', mode: 0o600 });
        return new StoreLock('pidfile', real, lockPath, null);
      } catch (e) {
        if (errCode(e) !== 'EEXIST') throw new EventStoreError(`event store: cannot create lock ${lockPath}: ${(e as Error).message}`, 'IO');
        const h = readHolder(lockPath);
        if (holderAlive(h)) throw new EventStoreError(`event store: ${dir} is in use by process ${h.pid}`, 'LOCKED');
        fs.rmSync(lockPath, { force: true });
      }
    }
    throw new EventStoreError(`event store: cannot take lock ${lockPath}`, 'LOCKED');
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    OPEN_DIRS.delete(this.realDir);
    try {
      if (this.fd !== null) {
        // Remove the file while still holding its lock (openers check they locked the file at the path).
        const a = fs.fstatSync(this.fd);
        const b = fs.statSync(this.lockPath);
        if (a.ino === b.ino && a.dev === b.dev) fs.rmSync(this.lockPath, { force: true });
      } else if (Number.parseInt(fs.readFileSync(this.lockPath, 'utf8'), 10) === process.pid) {
        fs.rmSync(this.lockPath, { force: true });
      }
    } catch {
      /* already gone */
    } finally {
      if (this.fd !== null) fs.closeSync(this.fd);
    }
  }
}
