/**
 * `navarch-agent doctor`: checks the host the way the daemon will use it and prints what to fix.
 * Exit 0 when nothing failed, 1 otherwise. Every check is bounded in time.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { Code, ConnectError } from '@connectrpc/connect';
import type { AgentConfig } from '../config/config.js';
import { detectNvSwitches } from '../host/nvswitch.js';
import { FABRIC_MANAGER_UNIT, systemctlIsActive, type ServiceState } from '../sources/fabric-manager.js';
import type { CliIo } from './io.js';

export type CheckState = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  name: string;
  state: CheckState;
  detail: string;
  fix?: string;
}

const CP_TIMEOUT_MS = 3000;
const API_TIMEOUT_MS = 2000;
/** Allowed clock difference to the control plane (its Date header has 1 s resolution). */
export const MAX_CLOCK_SKEW_MS = 30_000;

/**
 * What to do when NVML does not open, by the failure's code: the one place for these fix lines.
 * A missing native addon is not a driver problem: the driver may be fine.
 */
export function nvmlFix(code: string | undefined): string {
  switch (code) {
    case 'NVML_ADDON_UNAVAILABLE':
      return 'the native addon did not load (the driver may be fine): reinstall so its install hook runs (npm 11 skips install scripts of global installs that allowScripts does not allow: docs/deploy.md), use the release tarball (it carries the prebuild), or run "npm rebuild -g navarch-agent" with a C++ compiler; NAVARCH_NVML_ADDON=/abs/path/to/addon.node loads a given build';
    case 'NVML_LIBRARY_NOT_FOUND':
    case 'NVML_SYMBOL_NOT_FOUND':
      return "libnvidia-ml.so.1 was not found or is too old: install the NVIDIA driver (nvidia-smi must work), or set NAVARCH_NVML_LIBRARY to the library's path";
    case 'NVML_ERROR_NO_PERMISSION':
      return 'no access to the GPUs: run the agent as root or give its user access to /dev/nvidia*';
    case 'NVML_ERROR_DRIVER_NOT_LOADED':
      return 'the NVIDIA kernel module is not loaded: "modprobe nvidia" (or install the driver for this kernel); "dmesg | grep NVRM" says why it failed';
    default:
      return 'check "nvidia-smi", "dmesg | grep NVRM" and that the driver and libnvidia-ml versions match; a reboot reloads the driver';
  }
}

async function checkBackend(cfg: AgentConfig, env: NodeJS.ProcessEnv, out: CheckResult[]): Promise<void> {
  const { selectBackend } = await import('../backends/select.js');
  let sel;
  try {
    sel = await selectBackend({
      mode: cfg.gpuBackend,
      env,
      instanceType: cfg.instanceType || undefined,
      ...(cfg.sysRoot ? { sysRoot: cfg.sysRoot } : {}),
      startScenario: false,
    });
  } catch (err) {
    const code = (err as { nvmlError?: { code?: string } }).nvmlError?.code;
    out.push({ name: 'gpu driver', state: 'fail', detail: (err as Error).message, fix: nvmlFix(code) });
    out.push({ name: 'persistence mode', state: 'skip', detail: 'no GPU backend' });
    return;
  }
  const { backend } = sel;
  try {
    if (backend.kind === 'none') {
      out.push({ name: 'gpu driver', state: 'fail', detail: backend.reason, fix: nvmlFix(sel.driverError?.metrics.nvml_error) });
      out.push({ name: 'persistence mode', state: 'skip', detail: 'no GPUs' });
      return;
    }
    const sys = backend.system();
    const devs = backend.devices();
    const broken = devs.filter((d) => d.error);
    out.push({
      name: 'gpu driver',
      state: backend.kind === 'fake' ? 'warn' : broken.length ? 'fail' : 'ok',
      detail:
        `${backend.kind} backend (${backend.reason}): ${devs.length} GPU(s), driver ${sys.driverVersion ?? '?'}` +
        (broken.length ? `; broken: ${broken.map((d) => `GPU ${d.index} ${d.error?.code}`).join(', ')}` : ''),
      ...(backend.kind === 'fake'
        ? { fix: 'fake GPUs: fine for development; on a GPU host use --gpu-backend nvml' }
        : broken.length
          ? { fix: 'a GPU that cannot be opened usually needs a GPU reset or a reboot' }
          : {}),
    });
    if (backend.kind === 'fake') {
      // The fake backend's telemetry says "on"; that is not a fact about this host.
      out.push({ name: 'persistence mode', state: 'skip', detail: 'n/a: fake GPUs have no persistence mode' });
      return;
    }
    const snaps = await backend.snapshot();
    const off: number[] = [];
    const unknown: number[] = [];
    for (const s of snaps) {
      if (!s.ok) continue;
      if (s.telemetry.persistenceMode === false) off.push(s.index);
      else if (s.telemetry.persistenceMode === null) unknown.push(s.index);
    }
    if (devs.length === 0) out.push({ name: 'persistence mode', state: 'skip', detail: 'no GPUs' });
    else if (off.length) {
      out.push({
        name: 'persistence mode',
        state: 'fail',
        detail: `off on GPU ${off.join(', ')}`,
        fix: 'enable nvidia-persistenced (systemctl enable --now nvidia-persistenced) or run "nvidia-smi -pm 1"',
      });
    } else {
      out.push({
        name: 'persistence mode',
        state: 'ok',
        detail: unknown.length ? `on (unknown on GPU ${unknown.join(', ')})` : 'on for every GPU',
      });
    }
  } finally {
    await backend.close().catch(() => undefined);
  }
}

async function checkKmsg(cfg: AgentConfig, out: CheckResult[]): Promise<void> {
  if (cfg.kmsgPath === null) {
    out.push({ name: 'kernel log', state: 'skip', detail: 'disabled (--kmsg-path none)' });
    return;
  }
  try {
    const fh = await open(cfg.kmsgPath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    await fh.close();
    out.push({ name: 'kernel log', state: 'ok', detail: `${cfg.kmsgPath} readable` });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    out.push({
      name: 'kernel log',
      state: 'fail',
      detail: `${cfg.kmsgPath}: ${code ?? (err as Error).message}`,
      fix:
        code === 'EACCES' || code === 'EPERM'
          ? 'run the agent as root or with CAP_SYSLOG (kernel.dmesg_restrict=1 hides /dev/kmsg from others)'
          : 'check --kmsg-path (or use "none" to rely on NVML events only)',
    });
  }
}

/**
 * On a host with NVSwitches, nvidia-fabricmanager must be active (CUDA cannot use the GPUs
 * otherwise) and its log readable by the agent; no NVSwitch: skipped.
 */
export async function checkFabricManager(
  cfg: Pick<AgentConfig, 'sysRoot' | 'fabricManagerLog'>,
  out: CheckResult[],
  isActive: (unit: string) => Promise<ServiceState> = (u) => systemctlIsActive(u),
): Promise<void> {
  const sw = await detectNvSwitches(cfg.sysRoot ?? '/');
  if (!sw.present) {
    out.push({ name: 'fabric manager', state: 'skip', detail: 'no NVSwitch on this host' });
    return;
  }
  const svc = await isActive(FABRIC_MANAGER_UNIT);
  if (svc.state === 'active') out.push({ name: 'fabric manager', state: 'ok', detail: `${FABRIC_MANAGER_UNIT} active (${sw.summary})` });
  else if (svc.state === 'unknown')
    out.push({
      name: 'fabric manager',
      state: 'warn',
      detail: `${sw.summary}; ${FABRIC_MANAGER_UNIT} state unknown: ${svc.detail}`,
      fix: `check "systemctl status ${FABRIC_MANAGER_UNIT}" by hand`,
    });
  else {
    out.push({
      name: 'fabric manager',
      state: 'fail',
      detail: `${sw.summary}; ${FABRIC_MANAGER_UNIT} is ${svc.state}: CUDA cannot use the GPUs`,
      fix: `"systemctl enable --now ${FABRIC_MANAGER_UNIT}" (its version must match the driver's); "journalctl -u ${FABRIC_MANAGER_UNIT}"${cfg.fabricManagerLog ? ` and ${cfg.fabricManagerLog}` : ''} say why it stopped`,
    });
  }
  if (cfg.fabricManagerLog === null) return;
  try {
    const fh = await open(cfg.fabricManagerLog, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    await fh.close();
    out.push({ name: 'fabric manager log', state: 'ok', detail: `${cfg.fabricManagerLog} readable` });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    out.push({
      name: 'fabric manager log',
      state: 'warn',
      detail: `${cfg.fabricManagerLog}: ${code ?? (err as Error).message}`,
      fix: 'point --fabric-manager-log at the log file named by LOG_FILE_NAME in fabricmanager.cfg, or "none"',
    });
  }
}

/** Read-only: creates nothing (src/agent/state-dir.ts inspectStateDir). */
async function checkStateDir(cfg: AgentConfig, env: NodeJS.ProcessEnv, out: CheckResult[]): Promise<void> {
  const { inspectStateDir, stateDirCandidates } = await import('../agent/state-dir.js');
  const problems: string[] = [];
  for (const dir of stateDirCandidates(cfg.stateDir, env)) {
    const r = await inspectStateDir(dir);
    if (r.ok) {
      out.push({
        name: 'state directory',
        state: problems.length ? 'warn' : 'ok',
        detail: problems.length ? `${r.detail} (instead of ${problems.join('; ')})` : r.detail,
      });
      return;
    }
    problems.push(r.detail);
  }
  out.push({
    name: 'state directory',
    state: 'fail',
    detail: `no writable state directory (${problems.join('; ')}): the agent would run with events in memory only, lost on restart`,
    fix: 'give the agent a writable state directory: systemd StateDirectory=navarch-agent (or ReadWritePaths=/var/lib/navarch-agent under ProtectSystem=strict), or pass --state-dir',
  });
}

async function checkControlPlane(cfg: AgentConfig, out: CheckResult[]): Promise<void> {
  const { createControlPlaneClient } = await import('../controlplane/client.js');
  let client;
  try {
    client = createControlPlaneClient({
      url: cfg.server,
      ...(cfg.authToken ? { token: cfg.authToken } : {}),
      httpVersion: cfg.httpVersion,
      timeoutMs: CP_TIMEOUT_MS,
      ...(cfg.caFile ? { caFile: cfg.caFile } : {}),
      ...(cfg.clientCert ? { certFile: cfg.clientCert } : {}),
      ...(cfg.clientKey ? { keyFile: cfg.clientKey } : {}),
      requireTls: cfg.requireTls,
    });
  } catch (err) {
    out.push({ name: 'control plane', state: 'fail', detail: (err as Error).message, fix: 'fix --server / TLS options' });
    out.push({ name: 'clock', state: 'skip', detail: 'control plane not configured' });
    return;
  }
  const { insecureTransportWarning } = await import('../controlplane/url-policy.js');
  const insecure = insecureTransportWarning(client.url, cfg.authToken !== null);
  out.push(
    insecure
      ? {
          name: 'transport',
          state: 'warn',
          detail: insecure,
          fix: 'put a TLS proxy in front of the control plane and use https:// (--require-tls refuses plain http://)',
        }
      : { name: 'transport', state: 'ok', detail: client.url.protocol === 'https:' ? 'TLS' : 'plain http:// to loopback' },
  );
  let dateHeader: string | null = null;
  const t0 = Date.now();
  try {
    // GetNodeCommands is side-effect free for an unknown node and needs no registration.
    await client.rpc.getNodeCommands(
      { nodeId: cfg.nodeId },
      {
        timeoutMs: CP_TIMEOUT_MS,
        onHeader: (h: Headers) => {
          dateHeader = h.get('date');
        },
      },
    );
    out.push({
      name: 'control plane',
      state: 'ok',
      detail: `${cfg.server} answered GetNodeCommands in ${Date.now() - t0} ms${cfg.authToken ? ' (token accepted)' : ' (no token)'}`,
    });
  } catch (err) {
    const ce = ConnectError.from(err);
    if (ce.code === Code.Unauthenticated) {
      out.push({
        name: 'control plane',
        state: 'fail',
        detail: `${cfg.server}: token rejected (HTTP 401)`,
        fix: cfg.authToken
          ? "the token does not match the control plane's NAVARCH_AUTH_TOKEN: fix --auth-token-file"
          : 'the control plane requires a token: set --auth-token-file or NAVARCH_AUTH_TOKEN',
      });
    } else if (ce.code === Code.Unavailable || ce.code === Code.DeadlineExceeded || ce.code === Code.Unknown) {
      out.push({
        name: 'control plane',
        state: 'fail',
        detail: `${cfg.server} unreachable: ${ce.rawMessage}`,
        fix: 'check --server (scheme, host, port), DNS, firewalls and that the control plane runs',
      });
    } else {
      out.push({ name: 'control plane', state: 'fail', detail: `${cfg.server}: ${ce.code !== undefined ? Code[ce.code] : ''} ${ce.rawMessage}` });
    }
  } finally {
    client.close();
  }
  if (dateHeader === null) {
    try {
      const res = await fetch(`${cfg.server}/healthz`, { signal: AbortSignal.timeout(CP_TIMEOUT_MS) });
      dateHeader = res.headers.get('date');
      await res.arrayBuffer().catch(() => undefined);
    } catch {
      dateHeader = null;
    }
  }
  const t1 = Date.now();
  if (dateHeader === null) {
    out.push({ name: 'clock', state: 'skip', detail: 'no Date header from the control plane' });
    return;
  }
  const serverMs = Date.parse(dateHeader);
  if (!Number.isFinite(serverMs)) {
    out.push({ name: 'clock', state: 'skip', detail: `unparsable Date header "${dateHeader}"` });
    return;
  }
  // The header is truncated to the second: compare with the interval the call spanned.
  const lo = t0 - 1000;
  const hi = t1;
  const skew = serverMs < lo ? serverMs - lo : serverMs > hi ? serverMs - hi : 0;
  if (Math.abs(skew) > MAX_CLOCK_SKEW_MS) {
    out.push({
      name: 'clock',
      state: 'fail',
      detail: `local clock differs from the control plane by about ${Math.round(-skew / 1000)} s`,
      fix: 'enable time sync (systemctl enable --now chronyd or systemd-timesyncd)',
    });
  } else {
    out.push({ name: 'clock', state: 'ok', detail: `within ${Math.max(1, Math.ceil(Math.abs(skew) / 1000))} s of the control plane` });
  }
}

/**
 * The local API's address: free (the agent will bind it), held by a navarch-agent (this one,
 * running), or held by another program. The last is a warning: the agent still runs, detects and
 * delivers, and retries the port with backoff (src/api/listener.ts), but serves no API meanwhile.
 */
async function checkApiPort(cfg: AgentConfig, out: CheckResult[]): Promise<void> {
  const { listenUrl, probeApi } = await import('./agent-api.js');
  const url = listenUrl(cfg.listen);
  const p = await probeApi(url, API_TIMEOUT_MS);
  if (p.kind === 'none') {
    out.push({ name: 'local API port', state: 'ok', detail: `${url} free (no agent running there)` });
  } else if (p.kind === 'agent') {
    const a = p.status.agent;
    out.push({ name: 'local API port', state: 'ok', detail: `${url} served by navarch-agent ${a.version} (pid ${a.pid}, node ${a.nodeId})` });
  } else {
    out.push({
      name: 'local API port',
      state: 'warn',
      detail: `${url} is held by another program (${p.detail}): the agent runs without its local API (/status, /metrics) and retries the port until it frees`,
      fix: `stop the program on port ${cfg.listen.port} ("ss -ltnp 'sport = :${cfg.listen.port}'" names it) or give the agent another port with --listen ${cfg.listen.host.includes(':') ? `[${cfg.listen.host}]` : cfg.listen.host}:<port>`,
    });
  }
}

export interface DoctorProgress {
  /** A check starts; `slow` says what it waits for when it can take seconds. */
  start?: (name: string, slow: string | null) => void;
  /** A result, as soon as it is known. */
  result?: (r: CheckResult) => void;
}

export async function doctorChecks(cfg: AgentConfig, env: NodeJS.ProcessEnv, progress: DoctorProgress = {}): Promise<CheckResult[]> {
  const { listenUrl } = await import('./agent-api.js');
  const steps: Array<{ name: string; slow: string | null; run: (out: CheckResult[]) => Promise<void> }> = [
    { name: 'gpu driver', slow: 'opening the GPU backend', run: (o) => checkBackend(cfg, env, o) },
    { name: 'kernel log', slow: null, run: (o) => checkKmsg(cfg, o) },
    { name: 'fabric manager', slow: null, run: (o) => checkFabricManager(cfg, o) },
    { name: 'state directory', slow: null, run: (o) => checkStateDir(cfg, env, o) },
    { name: 'local API port', slow: `asking ${listenUrl(cfg.listen)} (up to ${API_TIMEOUT_MS / 1000} s)`, run: (o) => checkApiPort(cfg, o) },
    { name: 'control plane', slow: `asking ${cfg.server} (up to ${(2 * CP_TIMEOUT_MS) / 1000} s)`, run: (o) => checkControlPlane(cfg, o) },
  ];
  const out: CheckResult[] = [];
  for (const step of steps) {
    progress.start?.(step.name, step.slow);
    const before = out.length;
    await step.run(out);
    for (const r of out.slice(before)) progress.result?.(r);
  }
  return out;
}

const TAG: Record<CheckState, string> = { ok: '[ OK ]', warn: '[WARN]', fail: '[FAIL]', skip: '[SKIP]' };

/** The text lines of one result. */
export function resultLines(r: CheckResult): string[] {
  const lines = [`${TAG[r.state]} ${r.name}: ${r.detail}`];
  if (r.fix && r.state !== 'ok') lines.push(`       fix: ${r.fix}`);
  return lines;
}

/**
 * Text mode prints each result as soon as it is known. Before a check that can take seconds it
 * says what it waits for: on a terminal as a line the result then overwrites, otherwise on stderr
 * (stdout stays the report). JSON mode prints one document at the end and no progress.
 */
export async function runDoctor(cfg: AgentConfig, opts: { json: boolean; io: CliIo }): Promise<number> {
  const { io } = opts;
  let pendingLine = false;
  const progress: DoctorProgress = opts.json
    ? {}
    : {
        start: (name, slow) => {
          if (slow === null) return;
          if (io.isTTY) {
            io.stdout(`[....] ${name}: ${slow}...`);
            pendingLine = true;
          } else {
            io.stderr(`doctor: ${name}: ${slow}...\n`);
          }
        },
        result: (r) => {
          io.stdout(`${pendingLine ? '\r\x1b[K' : ''}${resultLines(r).join('\n')}\n`);
          pendingLine = false;
        },
      };
  const results = await doctorChecks(cfg, io.env, progress);
  const failed = results.some((r) => r.state === 'fail');
  if (opts.json) io.stdout(`${JSON.stringify({ ok: !failed, checks: results }, null, 2)}\n`);
  else io.stdout(`${failed ? 'some checks failed' : 'all checks passed'}\n`);
  return failed ? 1 : 0;
}
