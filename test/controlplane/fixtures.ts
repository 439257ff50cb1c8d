/** Shared fixtures of the control-plane tests: inventory, metrics, polling, a link factory. */
import pino from 'pino';
import { createControlPlaneClient, type ControlPlaneClientOptions } from '../../src/controlplane/client.js';
import { AgentLink, type AgentLinkOptions } from '../../src/controlplane/agent-link.js';
import type { NodeInventory, NodeMetricsSample } from '../../src/controlplane/model.js';
import { MemoryStore } from './memory-store.js';
import { poll } from '../helpers/wait.js';

export function inventory(nodeId = 'node-a'): NodeInventory {
  return {
    nodeId,
    provider: 'gcp',
    region: 'us-central1',
    zone: 'us-central1-a',
    instanceType: 'a3-highgpu-8g',
    pool: 'training',
    labels: { team: 'ml', rack: 'r12' },
    hostname: `${nodeId}.internal`,
    internalIp: '10.1.2.3',
    externalIp: '34.5.6.7',
    kernelVersion: '6.8.0-45-generic',
    gpus: [0, 1].map((i) => ({
      index: i,
      uuid: `GPU-0000000${i}-aaaa-bbbb-cccc-00000000000${i}`,
      name: 'NVIDIA H100 80GB HBM3',
      pciBusId: `00000000:${(0x41 + i).toString(16).toUpperCase()}:00.0`,
      memoryTotalBytes: 85899345920,
      driverVersion: '550.90.07',
      cudaVersion: '12.4',
    })),
  };
}

export function metrics(): NodeMetricsSample {
  return {
    cpuUsagePercent: 12.5,
    memoryUsagePercent: 40.25,
    gpus: [
      { index: 0, temperatureC: 45, powerW: 300.7, utilizationPercent: 75.5, memoryUsedBytes: 42949672960 },
      { index: 1, temperatureC: 50, powerW: 310, utilizationPercent: 80, memoryUsedBytes: 1024 },
    ],
  };
}

/** Polls cond every 25 ms until true or timeoutMs (generous on a loaded machine). */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  await poll(what, cond, { timeoutMs, everyMs: 25 });
}

export function testLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: 'debug' },
    {
      write(s: string) {
        lines.push(JSON.parse(s) as Record<string, unknown>);
      },
    },
  );
  return { logger, lines };
}

export function makeLink(
  url: string,
  over: Partial<AgentLinkOptions> = {},
  client: Partial<ControlPlaneClientOptions> = {},
): { link: AgentLink; store: MemoryStore } {
  const store = (over.store as MemoryStore | undefined) ?? new MemoryStore();
  const link = new AgentLink({
    client: createControlPlaneClient({ url, timeoutMs: 3000, ...client }),
    store,
    inventory: () => inventory(),
    metrics: () => metrics(),
    checks: () => [
      { name: 'boot', status: 'healthy', message: '2 GPUs' },
      { name: 'nvml', status: 'healthy', message: 'ok' },
    ],
    retry: { baseMs: 50, capMs: 400, configErrorMs: 1500 },
    commandPollIntervalMs: 300,
    ...over,
  });
  return { link, store };
}
