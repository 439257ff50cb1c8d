/**
 * navarch-agent as a library: the daemon, its configuration, the local API and the CLI entry.
 * Lower layers have their own entry points (src/nvml, src/backends, src/store, src/controlplane).
 */
export { Agent, AgentStartError } from './agent/agent.js';
export type { AgentOptions } from './agent/agent.js';
export { runDaemon } from './agent/daemon.js';
export { localSnapshot, storedFaults } from './agent/local.js';
export { runCli } from './cli/cli.js';
export { packageVersion, type CliIo } from './cli/io.js';
export * from './config/index.js';
export * from './api/index.js';
export { createLogger, flushLogs, silentLogger } from './log.js';
export type { Logger, LoggerOptions } from './log.js';
export type * from './events/types.js';
export type { GpuBackend, BackendKind, FakeFault, InjectableBackend } from './backends/types.js';
