/**
 * The `navarch-agent` command line: dispatch, bad-input handling (one line on stderr, exit 2)
 * and the read commands. `runCli()` returns the exit code; src/cli/main.ts calls it.
 */
import { UsageError, resolveConfig, type AgentConfig } from '../config/config.js';
import { parseDuration } from '../config/duration.js';
import { LOG_LEVELS } from '../config/options.js';
import { join } from 'node:path';
import { apiBase, probeApi, type ApiProbe } from './agent-api.js';
import { DEVICE_HEADERS, deviceRows, exitCodeFor, faultsTable, judgeHealth, sourceLine, type BackendView, type Source } from './status-view.js';
import { xidInfo } from '../xid/catalog.js';
import type { DeviceStatus } from '../api/types.js';
import type { ActiveFault } from '../events/types.js';
import type { SystemInfo } from '../nvml/types.js';
import { parseFakeFault, InjectValidationError } from '../api/inject.js';
import { helpText, parseArgv, type ParsedArgs } from './args.js';
import { COMMANDS, COMMAND_BY_NAME } from './commands.js';
import { FAULTS_CLEAR_COMMAND, runFaultsClear } from './faults-clear.js';
import { table } from './output.js';
import { defaultIo, packageVersion, type CliIo } from './io.js';

function usageLine(): string {
  return `usage: navarch-agent [<command>] [flags]   (no command means "run": navarch-agent --server URL --node-id ID)\n\ncommands:\n${COMMANDS.map((c) => `  ${c.name.padEnd(14)}${c.summary.split('. ')[0]?.replace(/\.$/, '')}`).join('\n')}\n\nRun "navarch-agent help <command>" for a command's flags.\n`;
}

/** Run the CLI; resolves to the process exit code. */
export async function runCli(argv: readonly string[], io: CliIo = defaultIo): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`navarch-agent: ${oneLine(err.message)}\n`);
      return 2;
    }
    io.stderr(`navarch-agent: ${oneLine(err instanceof Error ? err.message : String(err))}\n`);
    return 1;
  }
}

const TOP_LEVEL_FLAGS = new Set(['--help', '-h', '-help', '--version', '-v']);

function isFlag(a: string): boolean {
  return a.startsWith('-') && a.length > 1;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

async function dispatch(argv: readonly string[], io: CliIo): Promise<number> {
  // Drop-in for Navarch's Go node daemon: no command, or flags first (`navarch-agent --server URL
  // --node-id ID`), means `run`.
  const implicitRun = argv.length === 0 || (isFlag(argv[0] as string) && !TOP_LEVEL_FLAGS.has(argv[0] as string));
  const [name, ...rest] = implicitRun ? ['run', ...argv] : argv;
  if (name === undefined) throw new UsageError('missing command');
  if (name === '--help' || name === '-h' || name === '-help') {
    io.stdout(usageLine());
    return 0;
  }
  if (name === '--version' || name === '-v') {
    io.stdout(`${packageVersion()}\n`);
    return 0;
  }
  if (name === 'faults' && rest[0] === 'clear') {
    const a = parseArgv(rest.slice(1), FAULTS_CLEAR_COMMAND);
    if (a.flags.get('help') === true) {
      io.stdout(`${helpText(FAULTS_CLEAR_COMMAND)}\n`);
      return 0;
    }
    return runFaultsClear(a, io);
  }
  const cmd = COMMAND_BY_NAME.get(name);
  if (!cmd) {
    throw new UsageError(`unknown command "${name}" (commands: ${COMMANDS.map((c) => c.name).join(', ')})`);
  }
  const args = parseArgv(rest, cmd);
  if (args.flags.get('help') === true) {
    io.stdout(`${helpText(cmd)}\n`);
    return 0;
  }
  switch (cmd.name) {
    case 'help': {
      const target = args.positionals.join(' ');
      if (!target) {
        io.stdout(usageLine());
        return 0;
      }
      const c = target === FAULTS_CLEAR_COMMAND.name ? FAULTS_CLEAR_COMMAND : COMMAND_BY_NAME.get(target);
      if (!c) throw new UsageError(`unknown command "${target}"`);
      io.stdout(`${helpText(c)}\n`);
      return 0;
    }
    case 'version':
      io.stdout(args.flags.get('json') ? `${JSON.stringify({ version: packageVersion(), node: process.version })}\n` : `${packageVersion()}\n`);
      return 0;
    case 'xid':
      return cmdXid(args, io);
    case 'run': {
      const cfg = resolveConfig({ flags: args.flags, env: io.env });
      await validateBackendInput(cfg, io.env);
      const { runDaemon } = await import('../agent/daemon.js');
      return runDaemon(cfg, { version: packageVersion(), env: io.env });
    }
    case 'devices':
      return cmdDevices(args, io);
    case 'faults':
      return cmdFaults(args, io);
    case 'status':
      return cmdStatus(args, io);
    case 'doctor': {
      const cfg = resolveConfig({ flags: args.flags, env: io.env });
      const { runDoctor } = await import('./doctor.js');
      return runDoctor(cfg, { json: args.flags.get('json') === true, io });
    }
    case 'inject':
      return cmdInject(args, io);
    case 'control-plane':
      return cmdControlPlane(args, io);
    case 'demo': {
      const d = args.flags.get('duration');
      let durationMs: number | null = null;
      if (typeof d === 'string') {
        durationMs = parseDuration(d);
        if (durationMs === null || durationMs <= 0) throw new UsageError(`flag --duration: expected a duration like "60s", got "${d}"`);
      }
      const level = strFlag(args, 'log-level') ?? 'warn';
      if (!(LOG_LEVELS as readonly string[]).includes(level)) {
        throw new UsageError(`flag --log-level: expected one of ${LOG_LEVELS.join(', ')}, got "${level}"`);
      }
      const { runDemo } = await import('./demo.js');
      return runDemo({ durationMs, logLevel: level, json: args.flags.get('json') === true, io });
    }
    default:
      throw new UsageError(`unknown command "${name}"`);
  }
}

/** Bad fake-backend input (scenario file, NAVARCH_GPU_COUNT) is a usage error too: check it before starting. */
async function validateBackendInput(cfg: AgentConfig, env: NodeJS.ProcessEnv): Promise<void> {
  if (cfg.gpuBackend !== 'fake' && env.NAVARCH_FAKE_GPU !== 'true') return;
  const { fakeOptionsFromEnv } = await import('../backends/fake.js');
  let count: number;
  try {
    count = fakeOptionsFromEnv(env).count;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (cfg.scenario) {
    const { parseScenario, readScenarioText } = await import('../backends/scenario.js');
    try {
      parseScenario(readScenarioText(cfg.scenario), cfg.scenario, { gpuCount: count });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
}

function strFlag(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

function cmdXid(args: ParsedArgs, io: CliIo): number {
  const raw = args.positionals[0] as string;
  if (!/^\d{1,6}$/.test(raw.trim())) throw new UsageError(`xid: expected a non-negative integer code, got "${raw}"`);
  const info = xidInfo(Number(raw));
  if (args.flags.get('json')) {
    io.stdout(`${JSON.stringify(info, null, 2)}\n`);
    return 0;
  }
  const lines = [
    `XID ${info.code}  ${info.mnemonic}${info.known ? '' : '  (not in the catalog)'}`,
    `  meaning:        ${info.description}`,
    `  NVIDIA action:  ${info.nvidiaAction}${info.nvidiaInvestigation ? ` (then ${info.nvidiaInvestigation})` : ''}`,
    `  agent:          severity ${info.severity}, recommended action ${info.action}`,
    ...(info.known ? [`  others:         gpud ${info.gpud}; DCGM ${info.dcgm}; EKS ${info.eksFatal ? 'fatal' : 'not fatal'}`] : []),
    `  control plane:  ${info.navarchFatal ? 'fatal in the default policy (node becomes UNHEALTHY)' : 'degraded in the default policy'}`,
    `  source:         ${info.citation}`,
  ];
  if (info.note) lines.push(`  note:           ${info.note}`);
  io.stdout(`${lines.join('\n')}\n`);
  return 0;
}

async function cmdDevices(args: ParsedArgs, io: CliIo): Promise<number> {
  const cfg = resolveConfig({ flags: args.flags, env: io.env });
  const json = args.flags.get('json') === true;
  const api = apiBase(strFlag(args, 'api'), cfg.listen);
  const probe = await probeApi(api);
  let devices: DeviceStatus[];
  let faults: ActiveFault[];
  let source: Source;
  let backend: BackendView;
  let system: SystemInfo | null;
  if (probe.kind === 'agent') {
    const status = probe.status;
    devices = status.devices;
    faults = status.activeFaults;
    source = { live: true, api };
    backend = { kind: status.backend.kind, reason: status.backend.reason, driverError: status.backend.driverError };
    system = status.system ?? null;
  } else {
    const { localSnapshot } = await import('../agent/local.js');
    const snap = await localSnapshot(cfg, io.env);
    devices = snap.devices;
    faults = snap.faults;
    source = { live: false, api, apiProblem: apiProblem(probe), stateDir: null };
    backend = snap.backend;
    system = snap.system;
  }
  const versions = {
    driverVersion: system?.driverVersion ?? null,
    nvmlVersion: system?.nvmlVersion ?? null,
    cudaDriverVersion: system?.cudaDriverVersion ?? null,
  };
  const verdict = judgeHealth({ driverError: backend.driverError, devices, activeFaults: faults });
  if (json) {
    const devs = devices.map((d) => ({ ...d, driverVersion: versions.driverVersion, cudaVersion: versions.cudaDriverVersion }));
    const doc = {
      source: source.live ? 'agent' : 'local',
      live: source.live,
      from: source.live ? api : 'local snapshot',
      health: verdict.health,
      reasons: verdict.reasons,
      backend,
      system: versions,
      devices: devs,
      activeFaults: faults,
    };
    io.stdout(`${JSON.stringify(doc, null, 2)}\n`);
    return exitCodeFor(verdict.health);
  }
  io.stdout(`source: ${source.live ? sourceLine(source) : `NOT LIVE: no agent answered at ${api} (${source.apiProblem}); a local snapshot`}\n`);
  io.stdout(`backend: ${backend.kind} (${backend.reason})\n`);
  io.stdout(`driver: ${versions.driverVersion ?? 'unknown'}  CUDA: ${versions.cudaDriverVersion ?? 'unknown'}  NVML: ${versions.nvmlVersion ?? 'unknown'}\n`);
  if (backend.driverError) io.stdout(`driver error: ${backend.driverError}\n`);
  io.stdout(devices.length === 0 ? 'no GPUs\n' : `${table(DEVICE_HEADERS, deviceRows(devices, faults))}\n`);
  return exitCodeFor(verdict.health);
}

function apiProblem(p: ApiProbe): string {
  return p.kind === 'none' ? p.detail : p.kind === 'other' ? `held by another program: ${p.detail}` : '';
}

async function cmdFaults(args: ParsedArgs, io: CliIo): Promise<number> {
  const cfg = resolveConfig({ flags: args.flags, env: io.env });
  const json = args.flags.get('json') === true;
  const api = apiBase(strFlag(args, 'api'), cfg.listen);
  const probe = await probeApi(api);
  let faults: ActiveFault[];
  let source: string;
  let from: string;
  let note = '';
  if (probe.kind === 'agent') {
    faults = probe.status.activeFaults;
    source = 'agent';
    from = `live from the running agent at ${api}`;
  } else {
    const { existingStateDir } = await import('./status.js');
    const dir = await existingStateDir(cfg, io.env);
    if (dir === null) {
      // Not "no active faults": nothing here can tell.
      io.stderr(
        `navarch-agent: faults: no agent answered at ${api} (${apiProblem(probe)}) and the state directory ${cfg.stateDir} does not exist: cannot tell the active faults (pass --state-dir of the agent, or --api of a running agent)\n`,
      );
      return 1;
    }
    const { readStoredState } = await import('../store/event-store.js');
    const st = await readStoredState(join(dir, 'events'));
    faults = st.activeFaults;
    source = `state dir ${dir}`;
    from = `NOT LIVE: read from disk, state dir ${dir} (no agent answered at ${api}: ${apiProblem(probe)})`;
    if (!st.exists) note = '; no events stored there yet';
  }
  const verdict = judgeHealth({ activeFaults: faults });
  if (json) {
    io.stdout(`${JSON.stringify({ source, live: probe.kind === 'agent', from, health: verdict.health, activeFaults: faults }, null, 2)}\n`);
    return exitCodeFor(verdict.health);
  }
  io.stdout(`source: ${from}${note}\n`);
  io.stdout(faults.length === 0 ? 'no active faults\n' : `${faultsTable(faults, Date.now())}\n`);
  return exitCodeFor(verdict.health);
}

async function cmdStatus(args: ParsedArgs, io: CliIo): Promise<number> {
  const cfg = resolveConfig({ flags: args.flags, env: io.env });
  const watch = args.flags.get('watch') === true;
  const iv = strFlag(args, 'interval');
  const { WATCH_INTERVAL, runStatus } = await import('./status.js');
  let intervalMs: number = WATCH_INTERVAL.defaultMs;
  if (iv !== undefined) {
    if (!watch) throw new UsageError('flag --interval: only with --watch');
    const ms = parseDuration(iv);
    if (ms === null || ms < WATCH_INTERVAL.minMs || ms > WATCH_INTERVAL.maxMs) {
      throw new UsageError(`flag --interval: expected a duration from 200ms to 1h, got "${iv}"`);
    }
    intervalMs = ms;
  }
  return runStatus({ cfg, api: apiBase(strFlag(args, 'api'), cfg.listen), json: args.flags.get('json') === true, watch, intervalMs, io });
}

async function cmdInject(args: ParsedArgs, io: CliIo): Promise<number> {
  const kind = args.positionals[0] as string;
  const body: Record<string, unknown> = { kind };
  const keyOf: Record<string, string> = { 'health-mask': 'healthMask', 'health-summary': 'healthSummary' };
  for (const k of [
    'gpu',
    'xid',
    'sbe',
    'dbe',
    'celsius',
    'watts',
    'link',
    'count',
    'mask',
    'uncorrected',
    'message',
    'state',
    'status',
    'health-mask',
    'health-summary',
  ]) {
    const v = strFlag(args, k);
    if (v !== undefined) body[keyOf[k] ?? k] = k === 'message' ? v : Number.isNaN(Number(v)) || v.trim() === '' ? v : Number(v);
  }
  for (const k of ['pending', 'failure']) {
    const v = args.flags.get(k);
    if (typeof v === 'boolean') body[k] = v;
  }
  try {
    parseFakeFault(body);
  } catch (err) {
    if (err instanceof InjectValidationError) throw new UsageError(`inject: ${err.message}`);
    throw err;
  }
  let cfg: AgentConfig | null = null;
  const listen = strFlag(args, 'listen');
  if (listen !== undefined) cfg = resolveConfig({ flags: new Map([['listen', listen]]), env: {} });
  const base = apiBase(strFlag(args, 'api'), cfg?.listen ?? null);
  let res: Response;
  try {
    res = await fetch(`${base}/inject`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
  } catch (err) {
    io.stderr(`navarch-agent: inject: no agent API at ${base} (${(err as Error).message}); start one with "navarch-agent run --gpu-backend fake"\n`);
    return 1;
  }
  const text = await res.text();
  if (res.status === 404) {
    io.stderr(`navarch-agent: inject: the agent at ${base} does not accept injections (it does not use the fake backend)\n`);
    return 1;
  }
  if (!res.ok) {
    let msg = text.trim();
    try {
      msg = (JSON.parse(text) as { error?: string }).error ?? msg;
    } catch {
      // keep text
    }
    io.stderr(`navarch-agent: inject: rejected (HTTP ${res.status}): ${oneLine(msg)}\n`);
    return res.status === 400 ? 2 : 1;
  }
  io.stdout(args.flags.get('json') ? text : `injected ${kind}${body.gpu !== undefined ? ` on GPU ${String(body.gpu)}` : ''}\n`);
  return 0;
}

async function cmdControlPlane(args: ParsedArgs, io: CliIo): Promise<number> {
  if (args.flags.get('dev') !== true) {
    throw new UsageError('control-plane: only the development control plane exists here: pass --dev');
  }
  const portS = strFlag(args, 'port') ?? '50051';
  if (!/^\d{1,5}$/.test(portS) || Number(portS) > 65535) throw new UsageError(`flag --port: expected 0-65535, got "${portS}"`);
  const host = strFlag(args, 'host') ?? '127.0.0.1';
  const token = strFlag(args, 'auth-token') ?? (io.env.NAVARCH_AUTH_TOKEN || undefined);
  const level = strFlag(args, 'log-level') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(`flag --log-level: expected one of ${LOG_LEVELS.join(', ')}, got "${level}"`);
  }
  const policyPath = strFlag(args, 'health-policy');
  const { runDevControlPlane } = await import('./dev-control-plane.js');
  return runDevControlPlane({ host, port: Number(portS), token, logLevel: level, io, ...(policyPath ? { policyPath } : {}) });
}
