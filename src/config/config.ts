/**
 * Resolves the agent's configuration from flags, environment and an optional YAML/JSON file
 * (flag > env > file > default), validating everything before anything is opened. Every
 * problem is a UsageError with exactly one line of text naming the source and the key.
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { FILE_LIMITS, readBoundedTextSync } from '../util/bounded-file.js';
import { parseYamlStrict } from '../util/strict-yaml.js';
import { checkControlPlaneUrl, checkTlsFiles, checkTransport, isLoopbackHost } from '../controlplane/url-policy.js';
import { formatDuration, parseDuration } from './duration.js';
import { FaultOverrideError, NO_FAULT_OVERRIDES, faultOverridesJson, parseFaultOverrides, type FaultOverrides } from './fault-overrides.js';
import { OPTIONS, OPTION_BY_KEY, envName, type LogLevel, type OptionSpec } from './options.js';

/** Bad input from the user: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface ListenAddress {
  host: string;
  port: number;
  /** True when the user gave the address (flag, env or file), false for the default. */
  explicit: boolean;
  loopback: boolean;
}

export interface AgentConfig {
  configFile: string | null;
  server: string;
  nodeId: string;
  provider: string;
  region: string;
  zone: string;
  instanceType: string;
  pool: string;
  /** Extra node labels (config file only, like Go's Config.Labels); `pool` is added from --pool. */
  labels: Record<string, string>;
  /** Severity/action overrides and suppressions per XID and fault class (config file only, src/config/fault-overrides.ts). */
  faultOverrides: FaultOverrides;
  authToken: string | null;
  /** Where the token came from ("flag", "env", "file /path", "config"), for logs; never the token. */
  authTokenSource: string | null;
  gpuBackend: 'auto' | 'nvml' | 'fake';
  gpuBackendSource: string;
  scenario: string | null;
  stateDir: string;
  listen: ListenAddress;
  /** null when disabled ("none"). */
  kmsgPath: string | null;
  /** null when disabled ("none"). */
  fabricManagerLog: string | null;
  /** Fabric registration / fabric manager grace after boot. */
  fabricBootGraceMs: number;
  /** auto: the addon's reader thread for /dev/kmsg when it loads; js: reads on the JavaScript thread. */
  kmsgReader: 'auto' | 'js';
  telemetryIntervalMs: number;
  commandPollIntervalMs: number;
  heartbeatIntervalMs: number;
  healthCheckIntervalMs: number;
  shutdownTimeoutMs: number;
  httpVersion: '1.1' | '2';
  caFile: string | null;
  clientCert: string | null;
  clientKey: string | null;
  /** Refuse plain http:// to a non-loopback server (--require-tls). */
  requireTls: boolean;
  logLevel: LogLevel;
  /** Who judges the node (src/controlplane/node-state.ts). */
  verdict: 'agent' | 'policy';
  drainHook: string | null;
  cordonHook: string | null;
  /** Override of the sysfs root for GPU detection (NAVARCH_SYSFS_ROOT), for tests. */
  sysRoot: string | null;
  /** Override of the boot id file (NAVARCH_BOOT_ID_PATH), for tests that simulate a reboot; null = the kernel's. */
  bootIdPath: string | null;
}

type Raw = string | boolean;
type Source = { kind: 'flag' | 'env' | 'file' | 'default'; label: string };

interface Candidate {
  value: unknown;
  source: Source;
}

export interface ResolveInput {
  /** Parsed flags by flag name (without dashes). */
  flags: ReadonlyMap<string, Raw>;
  env: NodeJS.ProcessEnv;
  /** Override for tests; default os.hostname(). */
  hostname?: string;
}

/** Load a config file (YAML or JSON) into a plain object of camelCase keys. */
export function loadConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readBoundedTextSync(path, FILE_LIMITS.config);
  } catch (err) {
    throw new UsageError(`${path}: cannot read config file: ${errText(err)}`);
  }
  let doc: unknown;
  try {
    doc = path.endsWith('.json') ? JSON.parse(text) : parseYamlStrict(text, { prettyErrors: false });
  } catch (err) {
    throw new UsageError(`${path}: malformed ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${firstLine(errText(err))}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new UsageError(`${path}: expected a mapping of settings at the top level`);
  }
  const obj = doc as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (key === 'labels' || key === 'faultOverrides') continue;
    const spec = OPTION_BY_KEY.get(key);
    if (!spec || spec.noFile) {
      throw new UsageError(`${path}: unknown key "${key}"${suggest(key)}`);
    }
  }
  return obj;
}

function suggest(key: string): string {
  const lower = key.toLowerCase().replace(/[-_]/g, '');
  const hit = OPTIONS.find((o) => o.key.toLowerCase() === lower);
  return hit ? ` (did you mean "${hit.key}"?)` : '';
}

function errText(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    const e = err as NodeJS.ErrnoException;
    return e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : (e.code ?? String(err));
  }
  return err instanceof Error ? err.message : String(err);
}

function firstLine(s: string): string {
  return s.split('\n')[0]?.trim() ?? s;
}

function where(spec: OptionSpec, src: Source): string {
  switch (src.kind) {
    case 'flag':
      return `flag --${spec.flag}`;
    case 'env':
      return `env ${src.label}`;
    case 'file':
      return `${src.label}: key "${spec.key}"`;
    default:
      return `default of --${spec.flag}`;
  }
}

/** Pick the winning candidate for a setting: flag > env > file > default. */
function pick(spec: OptionSpec, input: ResolveInput, file: Record<string, unknown> | null, fileLabel: string): Candidate | null {
  const f = input.flags.get(spec.flag);
  if (f !== undefined) return { value: f, source: { kind: 'flag', label: spec.flag } };
  const en = envName(spec.flag);
  const e = input.env[en];
  if (e !== undefined && e !== '') return { value: e, source: { kind: 'env', label: en } };
  if (file && Object.prototype.hasOwnProperty.call(file, spec.key)) {
    return { value: file[spec.key], source: { kind: 'file', label: fileLabel } };
  }
  return null;
}

function asString(spec: OptionSpec, c: Candidate): string {
  if (typeof c.value === 'string') return c.value;
  if (typeof c.value === 'number' && spec.kind === 'string' && c.source.kind === 'file') return String(c.value);
  if (c.value === true && c.source.kind === 'flag') throw new UsageError(`flag --${spec.flag}: needs a value`);
  throw new UsageError(`${where(spec, c.source)}: expected a string`);
}

function parseBool(spec: OptionSpec, c: Candidate): boolean {
  if (typeof c.value === 'boolean') return c.value;
  if (typeof c.value === 'string') {
    const v = c.value.trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(v)) return true;
    if (['false', '0', 'no', 'off'].includes(v)) return false;
  }
  throw new UsageError(`${where(spec, c.source)}: expected true or false`);
}

function parseDurationValue(spec: OptionSpec, c: Candidate, minMs: number, maxMs = 86_400_000): number {
  const s = typeof c.value === 'string' ? c.value : null;
  const ms = s === null ? null : parseDuration(s);
  if (ms === null) {
    const got = s === null ? '' : `, got "${s}"`;
    throw new UsageError(`${where(spec, c.source)}: expected a duration like "30s"${got}`);
  }
  if (ms < minMs) throw new UsageError(`${where(spec, c.source)}: must be at least ${minMs}ms, got "${s}"`);
  if (ms > maxMs) throw new UsageError(`${where(spec, c.source)}: must be at most ${formatDuration(maxMs)}, got "${s}"`);
  return ms;
}

/** Validate a control-plane URL by the shared policy (src/controlplane/url-policy.ts). */
export function parseServerUrl(text: string, label: string): string {
  const c = checkControlPlaneUrl(text);
  if (c.url === null) throw new UsageError(`${label}: ${c.problem}`);
  return text.trim().replace(/\/+$/, '');
}

export { isLoopbackHost };

/** Parse "host:port" / "[::1]:port" / ":port" (the last means loopback). */
export function parseListen(text: string, label: string, explicit: boolean): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) throw new UsageError(`${label}: expected host:port (e.g. "127.0.0.1:19400"), got "${text}"`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`${label}: port ${port} out of range 0-65535`);
  let host = m[1] ?? m[2] ?? '';
  if (host === '') host = '127.0.0.1';
  if (m[1] !== undefined && isIP(host) !== 6) throw new UsageError(`${label}: "${host}" is not an IPv6 address`);
  return { host, port, explicit, loopback: isLoopbackHost(host) };
}

function checkReadable(path: string, label: string): void {
  try {
    accessSync(path, fsConstants.R_OK);
  } catch (err) {
    throw new UsageError(`${label}: cannot read "${path}": ${errText(err)}`);
  }
}

function checkExecutable(path: string, label: string): void {
  try {
    accessSync(path, fsConstants.X_OK);
  } catch (err) {
    throw new UsageError(`${label}: "${path}" is not an executable file: ${errText(err)}`);
  }
}

function readToken(path: string, label: string): string {
  let text: string;
  try {
    text = readBoundedTextSync(path, FILE_LIMITS.token);
  } catch (err) {
    throw new UsageError(`${label}: cannot read token file "${path}": ${errText(err)}`);
  }
  const token = text.trim();
  if (token === '') throw new UsageError(`${label}: token file "${path}" is empty`);
  if (/\s/.test(token)) throw new UsageError(`${label}: token file "${path}" must hold one token without whitespace`);
  return token;
}

/**
 * Resolve and validate the whole configuration. Reads the config file and the token file (both
 * small); opens nothing else. Throws UsageError on the first problem.
 */
export function resolveConfig(input: ResolveInput): AgentConfig {
  const { env, flags } = input;
  const cfgSpec = OPTION_BY_KEY.get('config') as OptionSpec;
  const cfgCand = pick(cfgSpec, input, null, '');
  const configFile = cfgCand ? asString(cfgSpec, cfgCand) : null;
  const file = configFile ? loadConfigFile(configFile) : null;
  const fileLabel = configFile ?? '';

  const str = (key: string): { value: string; source: Source } | null => {
    const spec = OPTION_BY_KEY.get(key) as OptionSpec;
    const c = pick(spec, input, file, fileLabel);
    if (c) {
      const v = asString(spec, c);
      if (spec.choices && !spec.choices.includes(v)) {
        throw new UsageError(`${where(spec, c.source)}: expected one of ${spec.choices.join(', ')}, got "${v}"`);
      }
      if ((spec.kind === 'path' || spec.kind === 'url' || spec.kind === 'listen') && v.trim() === '') {
        throw new UsageError(`${where(spec, c.source)}: must not be empty`);
      }
      return { value: v, source: c.source };
    }
    if (spec.default === undefined) return null;
    return { value: spec.default, source: { kind: 'default', label: '' } };
  };
  const strOr = (key: string, dflt: string): string => str(key)?.value ?? dflt;
  const optPath = (key: string): { value: string; label: string } | null => {
    const spec = OPTION_BY_KEY.get(key) as OptionSpec;
    const s = str(key);
    return s ? { value: s.value, label: where(spec, s.source) } : null;
  };
  const dur = (key: string, minMs: number, maxMs?: number): number => {
    const spec = OPTION_BY_KEY.get(key) as OptionSpec;
    const c = pick(spec, input, file, fileLabel) ?? { value: spec.default, source: { kind: 'default', label: '' } as Source };
    return parseDurationValue(spec, c, minMs, maxMs);
  };
  const bool = (key: string): boolean => {
    const spec = OPTION_BY_KEY.get(key) as OptionSpec;
    const c = pick(spec, input, file, fileLabel) ?? { value: spec.default ?? 'false', source: { kind: 'default', label: '' } as Source };
    return parseBool(spec, c);
  };

  // labels (file only)
  const labels: Record<string, string> = {};
  if (file && file.labels !== undefined) {
    const l = file.labels;
    if (l === null || typeof l !== 'object' || Array.isArray(l)) {
      throw new UsageError(`${fileLabel}: key "labels": expected a mapping of string to string`);
    }
    for (const [k, v] of Object.entries(l as Record<string, unknown>)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
        throw new UsageError(`${fileLabel}: key "labels.${k}": expected a string`);
      }
      labels[k] = String(v);
    }
  }

  // faultOverrides (file only)
  let faultOverrides = NO_FAULT_OVERRIDES;
  if (file && file.faultOverrides !== undefined) {
    try {
      faultOverrides = parseFaultOverrides(file.faultOverrides);
    } catch (err) {
      if (err instanceof FaultOverrideError) throw new UsageError(`${fileLabel}: ${err.message}`);
      throw err;
    }
  }

  const serverS = str('server') as { value: string; source: Source };
  const server = parseServerUrl(serverS.value, where(OPTION_BY_KEY.get('server') as OptionSpec, serverS.source));

  const nodeId = (str('nodeId')?.value ?? '').trim() || input.hostname || hostname();
  const pool = strOr('pool', '');
  if (pool) labels.pool = pool;

  // GPU backend: flag > NAVARCH_GPU_BACKEND > NAVARCH_FAKE_GPU=true > file > default.
  const gbSpec = OPTION_BY_KEY.get('gpuBackend') as OptionSpec;
  let gpuBackend: string;
  let gpuBackendSource: string;
  const gbFlagOrEnv = flags.get('gpu-backend') !== undefined || (env.NAVARCH_GPU_BACKEND ?? '') !== '';
  if (!gbFlagOrEnv && env.NAVARCH_FAKE_GPU === 'true') {
    gpuBackend = 'fake';
    gpuBackendSource = 'NAVARCH_FAKE_GPU=true';
  } else {
    const gb = str('gpuBackend') as { value: string; source: Source };
    gpuBackend = gb.value;
    gpuBackendSource = gb.source.kind === 'default' ? 'default' : where(gbSpec, gb.source);
  }

  const scenario = optPath('scenario');
  if (scenario) {
    checkReadable(scenario.value, scenario.label);
    if (gpuBackend !== 'fake') {
      throw new UsageError(`${scenario.label}: a scenario needs the fake backend (--gpu-backend fake or NAVARCH_FAKE_GPU=true)`);
    }
  }

  // State directory: flag > NAVARCH_STATE_DIR > file > $STATE_DIRECTORY (systemd) > default.
  const sdSpec = OPTION_BY_KEY.get('stateDir') as OptionSpec;
  const sdC = pick(sdSpec, input, file, fileLabel);
  let stateDir: string;
  if (sdC) stateDir = asString(sdSpec, sdC);
  else if (env.STATE_DIRECTORY) stateDir = env.STATE_DIRECTORY.split(':')[0] as string;
  else stateDir = sdSpec.default as string;
  if (stateDir.trim() === '') throw new UsageError(`${where(sdSpec, sdC?.source ?? { kind: 'default', label: '' })}: must not be empty`);

  const lSpec = OPTION_BY_KEY.get('listen') as OptionSpec;
  const lS = str('listen') as { value: string; source: Source };
  const listen = parseListen(lS.value, where(lSpec, lS.source), lS.source.kind !== 'default');

  const kmsg = strOr('kmsgPath', '/dev/kmsg');
  const kmsgPath = kmsg === 'none' ? null : kmsg;
  const kmsgReader = strOr('kmsgReader', 'auto') as AgentConfig['kmsgReader'];

  const fmLog = strOr('fabricManagerLog', '/var/log/fabricmanager.log');
  const fabricManagerLog = fmLog === 'none' ? null : fmLog;
  const fabricBootGraceMs = dur('fabricBootGrace', 0);
  const telemetryIntervalMs = dur('telemetryInterval', 100);
  // The control-plane link takes these in [100ms, 1h] (localInterval in src/controlplane/link/core.ts).
  const commandPollIntervalMs = dur('commandPollInterval', 100, 3_600_000);
  const heartbeatIntervalMs = dur('heartbeatInterval', 100, 3_600_000);
  const healthCheckIntervalMs = dur('healthCheckInterval', 100, 3_600_000);
  const shutdownTimeoutMs = dur('shutdownTimeout', 0);

  const httpVersion = strOr('httpVersion', '1.1') as '1.1' | '2';
  const verdict = strOr('verdict', 'agent') as AgentConfig['verdict'];
  const tls: Record<'caFile' | 'clientCert' | 'clientKey', string | null> = { caFile: null, clientCert: null, clientKey: null };
  for (const key of ['caFile', 'clientCert', 'clientKey'] as const) {
    const p = optPath(key);
    if (p) {
      checkReadable(p.value, p.label);
      tls[key] = p.value;
    }
  }
  if ((tls.clientCert === null) !== (tls.clientKey === null)) {
    throw new UsageError('--client-cert and --client-key must be given together');
  }
  const tlsProblem = checkTlsFiles(new URL(server), tls.caFile !== null || tls.clientCert !== null);
  if (tlsProblem !== null) throw new UsageError(`${tlsProblem} (server "${server}")`);
  bool('allowInsecure'); // validated, no effect
  const requireTls = bool('requireTls');
  const transportProblem = checkTransport(new URL(server), requireTls);
  if (transportProblem !== null) throw new UsageError(transportProblem);
  const logLevel = strOr('logLevel', 'info') as LogLevel;

  const hooks: Record<'drainHook' | 'cordonHook', string | null> = { drainHook: null, cordonHook: null };
  for (const key of ['drainHook', 'cordonHook'] as const) {
    const p = optPath(key);
    if (p) {
      checkExecutable(p.value, p.label);
      hooks[key] = p.value;
    }
  }

  // Token: --auth-token > --auth-token-file > NAVARCH_AUTH_TOKEN > NAVARCH_AUTH_TOKEN_FILE >
  // file authToken > file authTokenFile > $CREDENTIALS_DIRECTORY/auth-token.
  let authToken: string | null = null;
  let authTokenSource: string | null = null;
  const tokSpec = OPTION_BY_KEY.get('authToken') as OptionSpec;
  const tfSpec = OPTION_BY_KEY.get('authTokenFile') as OptionSpec;
  const levels: Array<Source['kind']> = ['flag', 'env', 'file'];
  for (const level of levels) {
    const t = candidateAt(tokSpec, input, file, fileLabel, level);
    if (t) {
      const v = asString(tokSpec, t).trim();
      if (v !== '') {
        authToken = v;
        authTokenSource = level === 'file' ? 'config' : level;
        break;
      }
    }
    const tf = candidateAt(tfSpec, input, file, fileLabel, level);
    if (tf) {
      const p = asString(tfSpec, tf);
      authToken = readToken(p, where(tfSpec, tf.source));
      authTokenSource = `file ${p}`;
      break;
    }
  }
  if (authToken === null && env.CREDENTIALS_DIRECTORY) {
    const p = join(env.CREDENTIALS_DIRECTORY, 'auth-token');
    let exists = true;
    try {
      accessSync(p, fsConstants.F_OK);
    } catch {
      exists = false;
    }
    if (exists) {
      authToken = readToken(p, 'env CREDENTIALS_DIRECTORY');
      authTokenSource = `file ${p}`;
    }
  }

  return {
    configFile,
    server,
    nodeId,
    provider: strOr('provider', 'gcp'),
    region: strOr('region', ''),
    zone: strOr('zone', ''),
    instanceType: strOr('instanceType', ''),
    pool,
    labels,
    faultOverrides,
    authToken,
    authTokenSource,
    gpuBackend: gpuBackend as AgentConfig['gpuBackend'],
    gpuBackendSource,
    scenario: scenario?.value ?? null,
    stateDir,
    listen,
    kmsgPath,
    fabricManagerLog,
    fabricBootGraceMs,
    kmsgReader,
    telemetryIntervalMs,
    commandPollIntervalMs,
    heartbeatIntervalMs,
    healthCheckIntervalMs,
    shutdownTimeoutMs,
    httpVersion,
    caFile: tls.caFile,
    clientCert: tls.clientCert,
    clientKey: tls.clientKey,
    requireTls,
    logLevel,
    verdict,
    drainHook: hooks.drainHook,
    cordonHook: hooks.cordonHook,
    sysRoot: env.NAVARCH_SYSFS_ROOT || null,
    bootIdPath: env.NAVARCH_BOOT_ID_PATH || null,
  };
}

function candidateAt(spec: OptionSpec, input: ResolveInput, file: Record<string, unknown> | null, fileLabel: string, level: Source['kind']): Candidate | null {
  if (level === 'flag') {
    const f = input.flags.get(spec.flag);
    return f === undefined ? null : { value: f, source: { kind: 'flag', label: spec.flag } };
  }
  if (level === 'env') {
    const en = envName(spec.flag);
    const e = input.env[en];
    return e === undefined || e === '' ? null : { value: e, source: { kind: 'env', label: en } };
  }
  if (level === 'file' && file && Object.prototype.hasOwnProperty.call(file, spec.key)) {
    return { value: file[spec.key], source: { kind: 'file', label: fileLabel } };
  }
  return null;
}

/** The configuration with secrets removed, for logs and /status. */
export function redactedConfig(cfg: AgentConfig): Record<string, unknown> {
  return { ...cfg, authToken: cfg.authToken ? '<redacted>' : null, faultOverrides: faultOverridesJson(cfg.faultOverrides) };
}
