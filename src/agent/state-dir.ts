/**
 * Where the agent keeps its state: the configured directory (flag > env > config file >
 * $STATE_DIRECTORY > default, src/config/config.ts), else systemd's $STATE_DIRECTORY when that is
 * another directory. Each is created if missing and probed with a write. When none is writable
 * (e.g. Navarch's hardened unit for its node daemon: ProtectSystem=strict, ReadWritePaths=/var/log),
 * the agent runs on the in-memory store instead of refusing to start: `dir` is null and `problem`
 * says why, for the log, /status and the "durability" check result.
 */
import { mkdir, open as openFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface StateDirChoice {
  /** The writable directory, null when none is (the agent then keeps events in memory only). */
  dir: string | null;
  /** Why each rejected candidate was rejected ("<dir>: EROFS"), joined; null when the first one works. */
  problem: string | null;
}

/** Candidates in order, without duplicates. */
export function stateDirCandidates(configured: string, env: NodeJS.ProcessEnv): string[] {
  const out = [configured];
  const sd = env.STATE_DIRECTORY?.split(':')[0];
  if (sd && !out.includes(sd)) out.push(sd);
  return out;
}

/** Create `dir` if missing and prove it writable; resolves the errno code (or message) when it is not. */
export async function probeWritable(dir: string): Promise<string | null> {
  const probe = join(dir, `.probe-${process.pid}`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const fh = await openFile(probe, 'wx', 0o600);
    await fh.close();
    await unlink(probe);
    return null;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return e.code ?? e.message;
  }
}

export async function chooseStateDir(configured: string, env: NodeJS.ProcessEnv): Promise<StateDirChoice> {
  const problems: string[] = [];
  for (const dir of stateDirCandidates(configured, env)) {
    const p = await probeWritable(dir);
    if (p === null) return { dir, problem: problems.length ? problems.join('; ') : null };
    problems.push(`${dir}: ${p}`);
  }
  return { dir: null, problem: problems.join('; ') };
}

/** The one sentence for "no writable state directory" (log, doctor, /status, check result). */
export function volatileStateText(problem: string): string {
  return `no writable state directory (${problem}): events are kept in memory only and lost on restart; give the agent a state directory (systemd: StateDirectory=navarch-agent, or ReadWritePaths=) or pass --state-dir`;
}

/**
 * What `doctor` says about a candidate, without writing anything (no mkdir, no probe file):
 * an existing directory must be writable (access W_OK|X_OK, which also sees a read-only mount);
 * a missing one needs its nearest existing parent writable, since the agent creates it.
 */
export async function inspectStateDir(dir: string): Promise<{ ok: boolean; detail: string }> {
  const { access, stat } = await import('node:fs/promises');
  const { constants } = await import('node:fs');
  const { dirname } = await import('node:path');
  const writable = async (p: string): Promise<string | null> => {
    try {
      await access(p, constants.W_OK | constants.X_OK);
      return null;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    }
  };
  let cur = dir;
  for (let depth = 0; depth < 64; depth++) {
    let st;
    try {
      st = await stat(cur);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') return { ok: false, detail: `${cur}: ${code ?? (err as Error).message}` };
      const up = dirname(cur);
      if (up === cur) break;
      cur = up;
      continue;
    }
    if (!st.isDirectory()) return { ok: false, detail: `${cur} is not a directory` };
    const w = await writable(cur);
    if (cur === dir) return w === null ? { ok: true, detail: `${dir} writable` } : { ok: false, detail: `${dir}: ${w}` };
    return w === null
      ? { ok: true, detail: `${dir} does not exist yet; the agent creates it (${cur} writable)` }
      : { ok: false, detail: `${dir} does not exist and ${cur} is not writable (${w})` };
  }
  return { ok: false, detail: `${dir}: no existing parent` };
}
