/**
 * What `status`, `devices` and `faults` show, with no I/O: the view model (where the data came
 * from, live or read from disk), the one health rule behind their exit codes, and the text
 * rendering. src/cli/status.ts gathers the data; src/cli/cli.ts prints devices and faults.
 *
 * Exit codes (one rule for the three commands): 0 healthy, 1 degraded or unhealthy or a driver
 * error (2, usage errors, is the CLI's).
 */
import type { FaultHistoryStatus } from '../agent/fault-history.js';
import { REBOOT_THRESHOLD } from '../xid/reboot-escalation.js';
import type { ApiListenStatus } from '../api/listener.js';
import type { ControlPlaneStatus, DeviceStatus } from '../api/types.js';
import type { ActiveFault } from '../events/types.js';
import type { SystemInfo } from '../nvml/types.js';
import { ago, fmt, gib, table } from './output.js';

export type Health = 'healthy' | 'degraded' | 'unhealthy';

/** Where an answer came from: a running agent's API, or this machine (local snapshot + state dir). */
export type Source =
  | { live: true; api: string }
  | {
      live: false;
      api: string;
      /** Why the API gave no answer ("connection refused", "held by another program: ..."). */
      apiProblem: string;
      /** The state directory the faults and the backlog were read from; null when none exists. */
      stateDir: string | null;
      /** A live agent process that holds that state directory's store (its API did not answer), else null. */
      agentPid?: number | null;
    };

export interface BackendView {
  kind: string;
  reason: string;
  driverError: string | null;
}

export interface StatusView {
  source: Source;
  /** When the data was gathered (ms since the epoch). */
  atMs: number;
  agent: { version: string; nodeId: string; pid: number; uptimeS: number } | null;
  nodeId: string;
  backend: BackendView;
  system: SystemInfo | null;
  devices: DeviceStatus[];
  activeFaults: ActiveFault[];
  /** Null when read from disk: only a running agent knows its link. */
  controlPlane: ControlPlaneStatus | null;
  /** Events stored but not yet acknowledged; null when nothing could be read. */
  backlog: { pending: number; oldestPendingMs: number | null } | null;
  /** False when the agent keeps events in memory only (live), null when unknown. */
  durable: boolean | null;
  api: ApiListenStatus | null;
  /** Why the state directory could not be read (disk), else null. */
  stateProblem: string | null;
  /** Reboot-aware escalation (live only; src/agent/fault-history.ts). */
  faultHistory?: FaultHistoryStatus | null;
}

export interface HealthVerdict {
  health: Health;
  /** One short phrase per problem, worst first. */
  reasons: string[];
}

/**
 * THE rule. Unhealthy: a driver error, a lost GPU, a critical fault. Degraded: a GPU that cannot
 * be sampled for another reason, a warning fault, events kept in memory only. Info faults and the
 * control-plane link do not count (the link is shown; `doctor` checks it).
 */
export function judgeHealth(input: {
  driverError?: string | null;
  devices?: DeviceStatus[];
  activeFaults: ActiveFault[];
  durable?: boolean | null;
}): HealthVerdict {
  const bad: string[] = [];
  const warn: string[] = [];
  if (input.driverError) bad.push(`driver error: ${input.driverError}`);
  for (const d of input.devices ?? []) {
    const e = d.error ?? d.sampleError;
    if (!e) continue;
    (e.code === 'NVML_ERROR_GPU_IS_LOST' ? bad : warn).push(`GPU ${d.index}: ${e.code}`);
  }
  for (const f of input.activeFaults) {
    if (f.severity === 'info') continue;
    if (input.driverError && f.type === 'driver_error') continue; // the same failure, said once
    (f.severity === 'critical' ? bad : warn).push(`${faultWhere(f)}: ${faultLabel(f)} ${f.severity}`);
  }
  if (input.durable === false) warn.push('events kept in memory only (no writable state directory)');
  return { health: bad.length ? 'unhealthy' : warn.length ? 'degraded' : 'healthy', reasons: [...bad, ...warn] };
}

export function exitCodeFor(h: Health): number {
  return h === 'healthy' ? 0 : 1;
}

export function viewHealth(v: StatusView): HealthVerdict {
  return judgeHealth({ driverError: v.backend.driverError, devices: v.devices, activeFaults: v.activeFaults, durable: v.durable });
}

function faultWhere(f: ActiveFault): string {
  return f.gpuIndex < 0 ? 'node' : `GPU ${f.gpuIndex}`;
}

function faultLabel(f: ActiveFault): string {
  return f.type + (f.metrics.xid_code ? ` ${f.metrics.xid_code}` : '');
}

/** One line saying where the data came from. */
export function sourceLine(s: Source): string {
  if (s.live) return `live from the running agent at ${s.api}`;
  const disk = s.stateDir ? `faults and backlog read from disk (${s.stateDir})` : 'no state directory on disk';
  const running = s.agentPid ? `; an agent process (pid ${s.agentPid}) holds that state directory but its API did not answer` : '';
  return `NOT LIVE: no agent answered at ${s.api} (${s.apiProblem}); GPUs from a local snapshot, ${disk}${running}`;
}

export function deviceRows(devices: DeviceStatus[], faults: ActiveFault[]): string[][] {
  return devices.map((d) => {
    const mine = faults.filter((f) => f.gpuIndex === d.index);
    const worst = mine.some((f) => f.severity === 'critical') ? 'critical' : mine.some((f) => f.severity === 'warning') ? 'warning' : null;
    const err = d.error ?? d.sampleError;
    const health = err ? `error: ${err.code}` : worst ? `${worst}: ${mine.map(faultLabel).join(', ')}` : 'ok';
    const t = err ? null : d.telemetry; // no reading next to an error (a lost GPU has none)
    return [
      String(d.index),
      d.name,
      d.uuid,
      d.pciBusId,
      gib(d.memoryTotalBytes),
      fmt(t?.temperatureC, 'C'),
      fmt(t?.powerUsageW, 'W'),
      fmt(t?.gpuUtilPercent, '%'),
      health,
    ];
  });
}

export const DEVICE_HEADERS = ['GPU', 'NAME', 'UUID', 'PCI', 'MEMORY', 'TEMP', 'POWER', 'UTIL', 'HEALTH'];

/** The active faults as a table; KEY is what `navarch-agent faults clear <key>` takes. */
export function faultsTable(faults: ActiveFault[], now: number): string {
  const rows = faults.map((f) => [
    f.gpuIndex < 0 ? 'node' : String(f.gpuIndex),
    f.key,
    f.type,
    f.severity,
    f.action,
    String(f.count),
    ago(f.sinceMs, now),
    f.message,
  ]);
  return table(['GPU', 'KEY', 'TYPE', 'SEVERITY', 'ACTION', 'COUNT', 'SINCE', 'MESSAGE'], rows);
}

export function versionsLine(sys: SystemInfo | null): string {
  return `driver ${sys?.driverVersion ?? 'unknown'}, CUDA ${sys?.cudaDriverVersion ?? 'unknown'}, NVML ${sys?.nvmlVersion ?? 'unknown'}`;
}

function linkLine(cp: ControlPlaneStatus | null, now: number): string {
  if (!cp) return 'unknown (no running agent answered; only the agent knows its link)';
  const parts = [`${cp.state} (${cp.server})`];
  if (cp.registered) parts.push('registered');
  if (cp.nodeStatus) parts.push(`node status ${cp.nodeStatus}`);
  if (cp.lastContactMs !== null) parts.push(`last contact ${ago(cp.lastContactMs, now)}`);
  if (cp.lastError && cp.state !== 'connected') parts.push(`last error: ${cp.lastError}`);
  if (cp.transportWarning) parts.push(`WARNING: ${cp.transportWarning}`);
  return parts.join(', ');
}

function backlogLine(v: StatusView, now: number): string {
  if (v.backlog === null) return v.stateProblem ? `unknown (${v.stateProblem})` : 'unknown';
  const b = v.backlog;
  const where = v.source.live ? '' : ' (from disk: the agent sends them when it runs)';
  if (b.pending === 0) return `0 pending${where}`;
  return `${b.pending} pending${b.oldestPendingMs !== null ? `, oldest ${ago(b.oldestPendingMs, now)}` : ''}${where}`;
}

function apiLine(a: ApiListenStatus): string {
  if (a.state === 'listening') return `listening on ${a.url ?? a.address}${a.failures ? ` (after ${a.failures} failed tries: ${a.lastError})` : ''}`;
  return `${a.state}: ${a.address}${a.lastError ? `: ${a.lastError}` : ''}`;
}

/** The text view of `status` (also each frame of `status --watch`). */
export function renderStatus(v: StatusView): string {
  const now = v.atMs;
  const verdict = viewHealth(v);
  const rows: Array<[string, string]> = [
    ['source', sourceLine(v.source)],
    ['health', verdict.health + (verdict.reasons.length ? `: ${verdict.reasons.join('; ')}` : '')],
    ['node', v.nodeId],
  ];
  if (v.agent) rows.push(['agent', `navarch-agent ${v.agent.version}, pid ${v.agent.pid}, up ${uptime(v.agent.uptimeS)}`]);
  rows.push(['backend', `${v.backend.kind} (${v.backend.reason})`]);
  if (v.backend.driverError) rows.push(['driver error', v.backend.driverError]);
  rows.push(['versions', versionsLine(v.system)]);
  rows.push(['control plane', linkLine(v.controlPlane, now)]);
  rows.push(['event backlog', backlogLine(v, now)]);
  if (v.durable === false) rows.push(['durability', 'NOT DURABLE: events are kept in memory only']);
  if (v.api && v.api.state !== 'listening') rows.push(['local API', apiLine(v.api)]);
  const fh = v.faultHistory;
  if (fh && (fh.problem !== null || fh.escalated > 0)) {
    rows.push([
      'reboot escalation',
      fh.problem ?? `${fh.escalated} XID fault(s) escalated to replace: back after ${REBOOT_THRESHOLD} reboots (${fh.boots} boots in the history)`,
    ]);
  }
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  const out = rows.map(([k, val]) => `${`${k}:`.padEnd(w)}${val}`);
  out.push('');
  out.push(v.devices.length ? table(DEVICE_HEADERS, deviceRows(v.devices, v.activeFaults)) : 'no GPUs');
  out.push('');
  out.push(v.activeFaults.length ? faultsTable(v.activeFaults, now) : 'no active faults');
  return `${out.join('\n')}\n`;
}

/** The JSON document of `status --json` (one compact line per frame with --watch). */
export function statusJson(v: StatusView): Record<string, unknown> {
  const verdict = viewHealth(v);
  return {
    live: v.source.live,
    source: v.source,
    atMs: v.atMs,
    health: verdict.health,
    reasons: verdict.reasons,
    nodeId: v.nodeId,
    agent: v.agent,
    backend: v.backend,
    system: v.system,
    devices: v.devices.map((d) => ({ ...d, driverVersion: v.system?.driverVersion ?? null, cudaVersion: v.system?.cudaDriverVersion ?? null })),
    activeFaults: v.activeFaults,
    controlPlane: v.controlPlane,
    backlog: v.backlog,
    durable: v.durable,
    api: v.api,
    stateProblem: v.stateProblem,
    faultHistory: v.faultHistory ?? null,
  };
}

function uptime(s: number): string {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}
