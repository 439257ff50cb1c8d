/**
 * `navarch-agent status [--json] [--watch [--interval 2s]]`: the I/O half. Asks the running
 * agent's API; when none answers, takes a local GPU snapshot and reads the faults and the backlog
 * from the state directory (read-only). Rendering and the health rule are in ./status-view.ts.
 */
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import type { AgentConfig } from '../config/config.js';
import { probeApi } from './agent-api.js';
import type { CliIo } from './io.js';
import { exitCodeFor, renderStatus, statusJson, viewHealth, type StatusView } from './status-view.js';

/** Bounds of --interval. */
export const WATCH_INTERVAL = { defaultMs: 2_000, minMs: 200, maxMs: 3_600_000 } as const;

/** The first state directory candidate that exists (the agent may have fallen back to $STATE_DIRECTORY). */
export async function existingStateDir(cfg: AgentConfig, env: NodeJS.ProcessEnv): Promise<string | null> {
  const { stateDirCandidates } = await import('../agent/state-dir.js');
  for (const dir of stateDirCandidates(cfg.stateDir, env)) {
    const st = await stat(dir).catch(() => null);
    if (st?.isDirectory()) return dir;
  }
  return null;
}

export async function gatherStatus(
  cfg: AgentConfig,
  api: string,
  env: NodeJS.ProcessEnv,
  opts: { now?: () => number; signal?: AbortSignal } = {},
): Promise<StatusView> {
  const now = opts.now ?? Date.now;
  const probe = await probeApi(api, undefined, opts.signal);
  if (probe.kind === 'agent') {
    const s = probe.status;
    return {
      source: { live: true, api },
      atMs: now(),
      agent: { version: s.agent.version, nodeId: s.agent.nodeId, pid: s.agent.pid, uptimeS: s.agent.uptimeS },
      nodeId: s.agent.nodeId,
      backend: { kind: s.backend.kind, reason: s.backend.reason, driverError: s.backend.driverError },
      system: s.system,
      devices: s.devices,
      activeFaults: s.activeFaults,
      controlPlane: s.controlPlane,
      backlog: { pending: s.events.pending, oldestPendingMs: null },
      durable: s.durability?.durable ?? null,
      api: s.api ?? null,
      stateProblem: null,
      faultHistory: s.faultHistory ?? null,
    };
  }
  const apiProblem = probe.kind === 'none' ? probe.detail : `held by another program: ${probe.detail}`;
  const { localSnapshot } = await import('../agent/local.js');
  const snap = await localSnapshot(cfg, env);
  const dir = await existingStateDir(cfg, env);
  let stateProblem: string | null = null;
  let backlog: StatusView['backlog'] = null;
  const faults = [...snap.faults];
  if (dir === null) {
    stateProblem = `state directory ${cfg.stateDir} does not exist`;
  } else {
    const { readStoredState } = await import('../store/event-store.js');
    try {
      const st = await readStoredState(join(dir, 'events'));
      backlog = { pending: st.pending, oldestPendingMs: st.oldestPendingMs };
      for (const f of st.activeFaults) if (!faults.some((x) => x.key === f.key)) faults.push(f);
    } catch (err) {
      stateProblem = (err as Error).message;
    }
  }
  const { storeHolderPid } = await import('../store/lock.js');
  const agentPid = dir === null ? null : storeHolderPid(join(dir, 'events'));
  return {
    source: { live: false, api, apiProblem, stateDir: dir, agentPid },
    atMs: now(),
    agent: null,
    nodeId: cfg.nodeId,
    backend: snap.backend,
    system: snap.system,
    devices: snap.devices,
    activeFaults: faults,
    controlPlane: null,
    backlog,
    durable: null,
    api: null,
    stateProblem,
  };
}

export interface WatchOptions {
  intervalMs: number;
  /** One frame: gather and print; resolves to its exit code. */
  frame: (signal: AbortSignal) => Promise<number>;
  /** Aborted on SIGINT/SIGTERM: the loop ends after (or during) the current frame. */
  stop: AbortSignal;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Frames until `stop` aborts; resolves to the exit code of the last complete frame (0 if none). */
export async function watchLoop(o: WatchOptions): Promise<number> {
  const sleep = o.sleep ?? abortableSleep;
  let code = 0;
  const stopped = new Promise<null>((resolve) => {
    if (o.stop.aborted) resolve(null);
    else o.stop.addEventListener('abort', () => resolve(null), { once: true });
  });
  while (!o.stop.aborted) {
    let c: number | null;
    try {
      // A signal ends the loop at once, also during a slow frame (which sees the same signal).
      c = await Promise.race([o.frame(o.stop), stopped]);
    } catch (err) {
      if (o.stop.aborted) break;
      throw err;
    }
    if (c === null) break;
    code = c;
    if (o.stop.aborted) break;
    await sleep(o.intervalMs, o.stop);
  }
  return code;
}

export interface StatusOptions {
  cfg: AgentConfig;
  api: string;
  json: boolean;
  watch: boolean;
  intervalMs: number;
  io: CliIo;
  /** Ends --watch besides SIGINT/SIGTERM (tests). */
  stop?: AbortSignal;
}

const CLEAR = '\x1b[H\x1b[2J';

export async function runStatus(o: StatusOptions): Promise<number> {
  const { io } = o;
  const once = async (signal?: AbortSignal): Promise<number> => {
    const v = await gatherStatus(o.cfg, o.api, io.env, signal ? { signal } : {});
    if (signal?.aborted) return 0; // Ctrl-C during the frame: print nothing half-way
    const verdict = viewHealth(v);
    if (o.json) io.stdout(`${JSON.stringify(statusJson(v), null, o.watch ? undefined : 2)}\n`);
    else if (o.watch && io.isTTY) io.stdout(`${CLEAR}${renderStatus(v)}\nrefresh every ${o.intervalMs / 1000} s; Ctrl-C exits\n`);
    else io.stdout(`${o.watch ? `--- ${new Date(v.atMs).toISOString()}\n` : ''}${renderStatus(v)}`);
    return exitCodeFor(verdict.health);
  };
  if (!o.watch) return once();
  const ac = new AbortController();
  const onSignal = (): void => ac.abort();
  o.stop?.addEventListener('abort', onSignal, { once: true });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await watchLoop({ intervalMs: o.intervalMs, frame: once, stop: ac.signal });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
