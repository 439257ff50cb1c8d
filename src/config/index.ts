export { UsageError, resolveConfig, loadConfigFile, parseServerUrl, parseListen, isLoopbackHost, redactedConfig } from './config.js';
export type { AgentConfig, ListenAddress, ResolveInput } from './config.js';
export { parseDuration, formatDuration } from './duration.js';
export { OPTIONS, OPTION_BY_FLAG, OPTION_BY_KEY, LOG_LEVELS, envName } from './options.js';
export type { OptionSpec, OptionKind, LogLevel } from './options.js';
