/**
 * The agent's settings: one table drives the flags (`--foo-bar`), the environment
 * (`NAVARCH_FOO_BAR`) and the config file keys (`fooBar`). Precedence: flag > env > file > default.
 */

/**
 * The local API's default port. Not 9400 (dcgm-exporter's, often on the same GPU host) and outside
 * Prometheus's exporter range 9100-9999 (fully allocated: node_exporter 9100, ...), the Linux
 * ephemeral range 32768-60999 and Kubernetes' NodePort range 30000-32767; also clear of DCGM's
 * nv-hostengine 5555, gpud 15132, Fabric Manager 6666, kubelet 10248/10250/10255, kube-proxy
 * 10249/10256, torchrun 29400/29500 and Navarch's control plane 50051 (docs/api-and-metrics.md).
 */
export const DEFAULT_API_PORT = 19400;

export type OptionKind = 'string' | 'bool' | 'duration' | 'url' | 'enum' | 'listen' | 'path';

export interface OptionSpec {
  /** camelCase key (config file key and AgentConfig field). */
  key: string;
  /** Flag name without dashes. */
  flag: string;
  kind: OptionKind;
  /** Default as the user would type it (resolved by the same parser); undefined = unset. */
  default?: string;
  choices?: readonly string[];
  help: string;
  /** Not accepted in the config file (e.g. `config` itself). */
  noFile?: boolean;
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Every setting of `navarch-agent run` (and the read commands, which share them). */
export const OPTIONS: readonly OptionSpec[] = [
  { key: 'config', flag: 'config', kind: 'path', help: 'YAML or JSON file with the same settings in camelCase', noFile: true },
  { key: 'server', flag: 'server', kind: 'url', default: 'http://localhost:50051', help: 'control plane base URL (http:// or https://)' },
  { key: 'nodeId', flag: 'node-id', kind: 'string', help: 'node id (should equal the cloud instance id); default: hostname' },
  { key: 'provider', flag: 'provider', kind: 'string', default: 'gcp', help: 'cloud provider name reported at registration' },
  { key: 'region', flag: 'region', kind: 'string', default: '', help: 'region reported at registration' },
  { key: 'zone', flag: 'zone', kind: 'string', default: '', help: 'zone reported at registration' },
  { key: 'instanceType', flag: 'instance-type', kind: 'string', default: '', help: 'instance type (also tells auto mode whether GPUs are expected)' },
  { key: 'pool', flag: 'pool', kind: 'string', default: '', help: 'pool label (metadata.labels.pool), how the control plane counts pool members' },
  { key: 'authToken', flag: 'auth-token', kind: 'string', help: 'bearer token (prefer --auth-token-file: flags are visible in ps)' },
  { key: 'authTokenFile', flag: 'auth-token-file', kind: 'path', help: 'file holding the bearer token (default $CREDENTIALS_DIRECTORY/auth-token when set)' },
  {
    key: 'gpuBackend',
    flag: 'gpu-backend',
    kind: 'enum',
    choices: ['auto', 'nvml', 'fake'],
    default: 'auto',
    help: 'GPU backend (NAVARCH_FAKE_GPU=true means fake)',
  },
  { key: 'scenario', flag: 'scenario', kind: 'path', help: 'fault script for the fake backend' },
  {
    key: 'stateDir',
    flag: 'state-dir',
    kind: 'path',
    default: '/var/lib/navarch-agent',
    help: 'durable state (event store); default $STATE_DIRECTORY when set by systemd',
  },
  {
    key: 'listen',
    flag: 'listen',
    kind: 'listen',
    default: `127.0.0.1:${DEFAULT_API_PORT}`,
    help: 'local API address host:port (loopback unless given explicitly)',
  },
  { key: 'kmsgPath', flag: 'kmsg-path', kind: 'path', default: '/dev/kmsg', help: 'kernel log device; "none" disables' },
  {
    key: 'fabricManagerLog',
    flag: 'fabric-manager-log',
    kind: 'path',
    default: '/var/log/fabricmanager.log',
    help: 'nvidia-fabricmanager log watched for errors on NVSwitch hosts; "none" disables',
  },
  {
    key: 'fabricBootGrace',
    flag: 'fabric-boot-grace',
    kind: 'duration',
    default: '5m',
    help: 'how long after boot fabric registration and nvidia-fabricmanager may still be starting',
  },
  {
    key: 'kmsgReader',
    flag: 'kmsg-reader',
    kind: 'enum',
    choices: ['auto', 'js'],
    default: 'auto',
    help: 'how /dev/kmsg is read: auto = a thread in the addon when it loads, js = on the JavaScript thread',
  },
  { key: 'telemetryInterval', flag: 'telemetry-interval', kind: 'duration', default: '10s', help: 'GPU telemetry sampling interval' },
  { key: 'commandPollInterval', flag: 'command-poll-interval', kind: 'duration', default: '10s', help: 'GetNodeCommands poll interval' },
  { key: 'heartbeatInterval', flag: 'heartbeat-interval', kind: 'duration', default: '30s', help: 'heartbeat interval until the control plane sends its own' },
  {
    key: 'healthCheckInterval',
    flag: 'health-check-interval',
    kind: 'duration',
    default: '60s',
    help: 'periodic health report interval until the control plane sends its own',
  },
  { key: 'shutdownTimeout', flag: 'shutdown-timeout', kind: 'duration', default: '10s', help: 'deadline to flush pending events on SIGTERM' },
  {
    key: 'httpVersion',
    flag: 'http-version',
    kind: 'enum',
    choices: ['1.1', '2'],
    default: '1.1',
    help: 'HTTP version to the control plane (2 = h2c over http://, ALPN over https://)',
  },
  { key: 'caFile', flag: 'ca-file', kind: 'path', help: 'PEM CA bundle to verify an https:// control plane' },
  { key: 'clientCert', flag: 'client-cert', kind: 'path', help: 'PEM client certificate (mTLS)' },
  { key: 'clientKey', flag: 'client-key', kind: 'path', help: 'PEM client key (mTLS)' },
  {
    key: 'requireTls',
    flag: 'require-tls',
    kind: 'bool',
    default: 'false',
    help: 'refuse plain http:// to a non-loopback server (allowed by default, with a warning: Navarch has no TLS)',
  },
  {
    key: 'allowInsecure',
    flag: 'allow-insecure',
    kind: 'bool',
    default: 'false',
    help: 'no effect, kept for old command lines and config files (plain http:// is allowed; see --require-tls)',
  },
  { key: 'logLevel', flag: 'log-level', kind: 'enum', choices: LOG_LEVELS, default: 'info', help: 'log level' },
  {
    key: 'verdict',
    flag: 'verdict',
    kind: 'enum',
    choices: ['agent', 'policy'],
    default: 'agent',
    help: "who judges the node: agent = every report carries the navarch_agent result (UNHEALTHY on any critical fault); policy = active faults re-sent as events, the control plane's health_policy judges",
  },
  { key: 'drainHook', flag: 'drain-hook', kind: 'path', help: 'executable run on a DRAIN / TERMINATE command' },
  { key: 'cordonHook', flag: 'cordon-hook', kind: 'path', help: 'executable run on a CORDON command' },
];

export const OPTION_BY_FLAG: ReadonlyMap<string, OptionSpec> = new Map(OPTIONS.map((o) => [o.flag, o]));
export const OPTION_BY_KEY: ReadonlyMap<string, OptionSpec> = new Map(OPTIONS.map((o) => [o.key, o]));

/** NAVARCH_FOO_BAR for flag foo-bar. */
export function envName(flag: string): string {
  return `NAVARCH_${flag.toUpperCase().replace(/-/g, '_')}`;
}
