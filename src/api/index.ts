export { startApiServer, createApiHandler, MAX_BODY_BYTES } from './server.js';
export type { ApiServer, ApiServerOptions } from './server.js';
export { AgentMetrics } from './metrics.js';
export type { MetricsOptions } from './metrics.js';
export { parseFakeFault, InjectValidationError, FAULT_KINDS } from './inject.js';
export type * from './types.js';
