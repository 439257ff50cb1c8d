/**
 * `navarch-agent doctor`: checks the host the way the daemon will use it and prints what to fix.
 * Exit 0 when nothing failed, 1 otherwise. Every check is bounded in time.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { Code, ConnectError } from '@connectrpc/connect';
import type { AgentConfig } from '../config/config.js';
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
    out.push({
      name: 'gpu driver',
      state: 'fail',
      detail: (err as Error).message,
      fix: 'install/load the NVIDIA driver (nvidia-smi must work), or set NAVARCH_NVML_LIBRARY to libnvidia-ml.so.1',
    });
    out.push({ name: 'persistence mode', state: 'skip', detail: 'no GPU backend' });
    return;
  }
  const { backend } = sel;
  try {
    if (backend.kind === 'none') {
      out.push({
        name: 'gpu driver',
        state: 'fail',
        detail: backend.reason,
        fix: 'check "nvidia-smi", "dmesg | grep NVRM" and that the driver and libnvidia-ml versions match; a reboot reloads the driver',
      });
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

/** Read-only: creates nothing (src/agent/state-dir.ts inspectStateDir). */
async function checkStateDir(cfg: AgentConfig, env: NodeJS.ProcessEnv, out: CheckResult[]): Promise<void> {
  const { inspectStateDir, stateDirCandidates } = await import('../agent/state-dir.js');
  const problems: string[] = [];
  for (const dir of stateDirCandidates(cfg.stateDir, env)) {
    const r = await inspectStateDir(dir);
    if (r.ok) {
      out.push({ name: 'state directory', state: problems.length ? 'warn' : 'ok', detail: problems.length ? `${r.detail} (instead of ${problems.join('; ')})` : r.detail });
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
      ? { name: 'transport', state: 'warn', detail: insecure, fix: 'put a TLS proxy in front of the control plane and use https:// (--require-tls refuses plain http://)' }
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
          ? 'the token does not match the control plane\'s NAVARCH_AUTH_TOKEN: fix --auth-token-file'
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

export async function doctorChecks(cfg: AgentConfig, env: NodeJS.ProcessEnv): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  await checkBackend(cfg, env, out);
  await checkKmsg(cfg, out);
  await checkStateDir(cfg, env, out);
  await checkApiPort(cfg, out);
  await checkControlPlane(cfg, out);
  return out;
}

export async function runDoctor(cfg: AgentConfig, opts: { json: boolean; io: CliIo }): Promise<number> {
  const results = await doctorChecks(cfg, opts.io.env);
  const failed = results.some((r) => r.state === 'fail');
  if (opts.json) {
    opts.io.stdout(`${JSON.stringify({ ok: !failed, checks: results }, null, 2)}\n`);
  } else {
    const tag: Record<CheckState, string> = { ok: '[ OK ]', warn: '[WARN]', fail: '[FAIL]', skip: '[SKIP]' };
    const lines: string[] = [];
    for (const r of results) {
      lines.push(`${tag[r.state]} ${r.name}: ${r.detail}`);
      if (r.fix && r.state !== 'ok') lines.push(`       fix: ${r.fix}`);
    }
    lines.push(failed ? 'some checks failed' : 'all checks passed');
    opts.io.stdout(`${lines.join('\n')}\n`);
  }
  return failed ? 1 : 0;
}
